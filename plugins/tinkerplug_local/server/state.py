"""What the server holds: one local ``ServiceClient`` (one loaded copy of each base model, a
worker thread each), and the sessions, training models and samplers its clients created.

Each client's model is its own LoRA adapter on the shared base model, with its own optimizer:
requests of different clients interleave on the worker but never touch each other's weights.

Everything belongs to the principal (API key) that made it: sessions, models and samplers
record their owner's name, futures too (``futures.py``), and a run dir on disk says it in
``.owner``. Asked for by another principal, each is answered exactly as an unknown one (404),
so a key cannot learn what other keys hold.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinkerplug_local.server.checkpoint_meta import CheckpointMeta
from tinkerplug_local.server.clock import ModelClock
from tinkerplug_local.server.futures import FutureTable
from tinkerplug_local.server.paths import CheckpointPaths
from tinkerplug_local.server.principals import LOCAL, Principal

OWNER_FILE = ".owner"  # in a run dir: the name of the principal that made it (never a key)


class LimitError(Exception):
    """A principal is at one of its limits: answered 429 with ``Retry-After``."""

    def __init__(self, detail: str, retry_after_s: int, retry: bool):
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.retry = retry  # whether the SDK should retry on its own (a queue drains; a model count does not)

if TYPE_CHECKING:
    from tinkerplug_local.training_client import TrainingClient


@dataclass
class Model:
    client: TrainingClient
    base_model: str
    rank: int
    user_metadata: dict[str, str]
    clock: ModelClock | None
    owner: str = LOCAL
    created: float = field(default_factory=time.time)
    last_request: float = field(default_factory=time.time)


@dataclass
class Sampler:
    client: Any  # tinkerplug_local.sampling.SamplingClient
    base_model: str
    model_path: str | None  # tinker:// path of the weights; None for the base model or an in-memory snapshot
    owner: str = LOCAL


@dataclass
class Session:
    owner: str
    last_heartbeat: float = field(default_factory=time.time)


def visible(principal: Principal, owner: str | None, listing: bool = False) -> bool:
    """Whether ``principal`` may see what ``owner`` made: its own, or anything when listing as admin."""
    return principal.name == (owner or LOCAL) or (listing and principal.admin)


class ServerState:
    def __init__(self, checkpoint_dir: Path, device: str | None, dtype: str = "auto", clock_ms: float = 0.0,
                 base_models: tuple[str, ...] = (), disk_models: bool = True, **backend: Any):
        """``base_models``: the only base models keys may name (empty: any shipped name or hub
        id, and a model dir on this machine's disk when ``disk_models``). ``backend``: further
        ``ServiceClient`` options (gradient_checkpointing, microbatch_tokens, max_adapters,
        mixed_batches: on unless turned off, and compute_threads: chosen for the device unless
        given, as ``tinkerplug serve`` has them)."""
        self.base_models, self.disk_models = tuple(base_models), disk_models
        backend.setdefault("mixed_batches", True)
        backend.setdefault("compute_threads", 0)
        from tinkerplug_local.service import ServiceClient

        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.service = ServiceClient(checkpoint_dir=checkpoint_dir, device=device, dtype=dtype, **backend)
        self.paths = CheckpointPaths(self.service.store.root)
        from tinkerplug_local.server.metrics import Metrics

        self.checkpoint_meta = CheckpointMeta(self.paths.root)  # TTLs and public flags
        self.paths.before_lookup = self.checkpoint_meta.sweep
        self.session_info: dict[str, dict[str, Any]] = {}  # kept after a session finishes, for get/list/search
        self.metrics = Metrics()
        self.futures = FutureTable(observe=self.metrics.observe_work)
        self.draining = False  # set at shutdown: new work is refused with 503, queued work finishes
        self.clock_s = clock_ms / 1000.0
        self.clock_t0 = time.perf_counter()
        self.sessions: dict[str, Session] = {}
        self.models: dict[str, Model] = {}
        self.samplers: dict[str, Sampler] = {}
        self.creating: dict[str, Any] = {}  # model_id -> the Future of its creation
        self.creating_lock = threading.Lock()
        self.signing_key = uuid.uuid4().bytes + uuid.uuid4().bytes  # for download URLs, per process
        self._lock = threading.Lock()

    def new_session(self, principal: Principal) -> str:
        # 128 random bits: session ids name run dirs and tinker:// paths; none is guessable.
        session_id = f"session-{uuid.uuid4().hex}"
        with self._lock:
            limit = principal.limits.max_sessions
            if limit and sum(s.owner == principal.name for s in self.sessions.values()) >= limit:
                raise LimitError(f"key {principal.name!r} has {limit} open sessions, its limit: "
                                 "close one (ServiceClient.close / holder shutdown) or ask the operator to raise it", 60, False)
            self.sessions[session_id] = Session(principal.name)
        return session_id

    def session(self, session_id: str, principal: Principal) -> Session:
        """The session, when ``principal`` made it; KeyError (404) as for an unknown one otherwise."""
        with self._lock:
            session = self.sessions.get(session_id)
        if session is None or not visible(principal, session.owner):
            raise KeyError(f"unknown session {session_id!r} (the server restarted? create a new ServiceClient)")
        return session

    def heartbeat(self, session_id: str, principal: Principal) -> None:
        self.session(session_id, principal).last_heartbeat = time.time()

    def finish_session(self, session_id: str, principal: Principal) -> None:
        """Free what the session made: its models' adapters (after their queued jobs, which run
        first on the worker), its samplers, their stability records and its custom losses. Its
        checkpoints stay on disk."""
        self.session(session_id, principal)
        prefix = f"{session_id}:"
        with self._lock:
            self.sessions.pop(session_id, None)
            models = [self.models.pop(k) for k in [k for k in self.models if k.startswith(prefix)]]
            for key in [k for k in self.creating if k.startswith(prefix)]:
                del self.creating[key]
            for key in [k for k in self.samplers if k.startswith(prefix)]:
                del self.samplers[key]  # the local SamplingClient frees its adapter when dropped
        for model in models:
            model.client.release()
        self.service.stability.drop(session_id)  # its recorded samples and uploaded losses too
        self.service.uploaded_losses.drop(session_id)

    def check_model_limit(self, principal: Principal) -> None:
        limit = principal.limits.max_models
        with self._lock:
            count = sum(m.owner == principal.name for m in self.models.values())
        if limit and count >= limit:
            raise LimitError(f"key {principal.name!r} has {limit} training models, its limit: "
                             "finish a session to free its models, or ask the operator to raise it", 60, False)

    def add_model(self, model_id: str, client: Any, base_model: str, rank: int, user_metadata: dict[str, str] | None,
                  owner: str = LOCAL) -> Model:
        # The local client writes its checkpoints under its model_id: make it the SDK's id,
        # so the tinker:// paths name the run the client knows.
        client.model_id = model_id
        client.lane = owner  # each key's requests take turns with other keys' on the worker
        client.session = session_of(model_id)  # stable_reinforce: it trains on its session's samples
        clock = ModelClock(self.clock_s, self.clock_t0) if self.clock_s > 0 else None
        model = Model(client, base_model, rank, dict(user_metadata or {}), clock, owner)
        self.write_owner(model_id, owner)
        with self._lock:
            open_session = session_of(model_id) in self.sessions
            if open_session:
                self.models[model_id] = model
        if not open_session:  # finished while the model was made: nothing would ever free it
            client.release()
            raise KeyError(f"session {session_of(model_id)!r} finished before model {model_id!r} was made")
        return model

    def model(self, model_id: str, principal: Principal) -> Model:
        with self._lock:
            model = self.models.get(model_id)
        if model is None or not visible(principal, model.owner):
            raise KeyError(f"unknown model_id {model_id!r} (created by another server process? create it again or load its checkpoint)")
        model.last_request = time.time()
        return model

    def add_sampler(self, sampler_id: str, sampler: Sampler) -> None:
        sampler.client.recording(self.service.stability, sampler.client._record, session_of(sampler_id))
        with self._lock:
            if session_of(sampler_id) not in self.sessions:  # finished while the sampler was made
                raise KeyError(f"session {session_of(sampler_id)!r} finished before sampler {sampler_id!r} was made")
            self.samplers[sampler_id] = sampler

    def sampler(self, sampler_id: str, principal: Principal) -> Sampler:
        with self._lock:
            sampler = self.samplers.get(sampler_id)
        if sampler is None or not visible(principal, sampler.owner):
            raise KeyError(f"unknown sampling_session_id {sampler_id!r}")
        return sampler

    # -- runs on disk --------------------------------------------------------------------------

    def write_owner(self, run: str, owner: str) -> None:
        run_dir = self.paths.run_dir(run)
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / OWNER_FILE).exists():
            (run_dir / OWNER_FILE).write_text(owner + "\n")

    def run_owner(self, run: str) -> str:
        """Who made run ``run``: its model's owner, else its ``.owner`` file (``local`` if none:
        runs written before owners existed belong to the key-less server)."""
        with self._lock:
            model = self.models.get(run)
        if model is not None:
            return model.owner
        owner_file = self.paths.run_dir(run) / OWNER_FILE
        return owner_file.read_text().strip() if owner_file.is_file() else LOCAL

    def check_run(self, run: str, principal: Principal, listing: bool = False) -> None:
        """FileNotFoundError (404, as for a missing run) unless ``principal`` may see run ``run``."""
        if not visible(principal, self.run_owner(run), listing):
            raise FileNotFoundError(f"unknown training run {run!r}")

    def readable_local(self, tinker_path: str, principal: Principal) -> Path:
        """The local dir of a ``tinker://`` checkpoint ``principal`` may read (load, sample, ask
        about): its own, or one its owner published (PathError, FileNotFoundError)."""
        run, kind, name = self.paths.parse(tinker_path)
        if not self.is_public(run, kind, name):
            self.check_run(run, principal)
        return self.paths.local(run, kind, name)

    def is_public(self, run: str, kind: str, name: str) -> bool:
        return bool(self.checkpoint_meta.get(f"{run}/{kind}/{name}").get("public"))

    def check_base_model(self, name: str) -> None:
        """ValueError (400) unless keys may have ``name`` loaded: every base model costs its
        size in memory, and a path names whatever is on this machine's disk."""
        if self.base_models:
            if name not in self.base_models:
                raise ValueError(f"base_model {name!r} is not served here; this server serves {', '.join(self.base_models)}")
        elif not self.disk_models and _on_disk(name):
            raise ValueError(f"base_model {name!r} is a path on the server's disk, which a server with API keys loads only "
                             "when its operator lists it (tinkerplug serve --base-model DIR)")

    def release_time(self, model: Model, request: str) -> float | None:
        return model.clock.release_time(request) if model.clock is not None else None

    def close(self) -> None:
        self.checkpoint_meta.close()
        self.service.close()


def _on_disk(name: str) -> bool:
    """Whether the local backend would read ``name`` as a directory of this machine other than a
    shipped model's (by name or by its directory), rather than a hub id."""
    from tinkerplug.models import shipped_model_dir, shipped_models

    path = Path(name).expanduser()
    if shipped_model_dir(name) is not None or not (name.startswith((".", "/", "~")) or path.exists()):
        return False
    return path.resolve() not in {directory.resolve() for directory in shipped_models().values()}


def session_of(client_id: str) -> str:
    """The session in a model or sampler id (``SESSION:train:N``, ``SESSION:sample:N``)."""
    return client_id.split(":", 1)[0]
