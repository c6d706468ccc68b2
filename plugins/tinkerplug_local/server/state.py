"""What the server holds: one local ``ServiceClient`` (one loaded copy of each base model, a
worker thread each), and the sessions, training models and samplers its clients created.

Each client's model is its own LoRA adapter on the shared base model, with its own optimizer:
requests of different clients interleave on the worker but never touch each other's weights.
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

if TYPE_CHECKING:
    from tinkerplug_local.training_client import TrainingClient


@dataclass
class Model:
    client: TrainingClient
    base_model: str
    rank: int
    user_metadata: dict[str, str]
    clock: ModelClock | None
    created: float = field(default_factory=time.time)
    last_request: float = field(default_factory=time.time)


@dataclass
class Sampler:
    client: Any  # tinkerplug_local.sampling.SamplingClient
    base_model: str
    model_path: str | None  # tinker:// path of the weights; None for the base model or an in-memory snapshot


class ServerState:
    def __init__(self, checkpoint_dir: Path, device: str | None, dtype: str = "auto", clock_ms: float = 0.0, **backend: Any):
        """``backend``: further ``ServiceClient`` options (gradient_checkpointing, microbatch_tokens)."""
        from tinkerplug_local.service import ServiceClient

        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.service = ServiceClient(checkpoint_dir=checkpoint_dir, device=device, dtype=dtype, **backend)
        self.paths = CheckpointPaths(self.service.store.root)
        self.checkpoint_meta = CheckpointMeta(self.paths.root)  # TTLs and public flags
        self.paths.before_lookup = self.checkpoint_meta.sweep
        self.session_info: dict[str, dict[str, Any]] = {}  # kept after a session finishes, for get/list/search
        self.futures = FutureTable()
        self.clock_s = clock_ms / 1000.0
        self.clock_t0 = time.perf_counter()
        self.sessions: dict[str, float] = {}
        self.models: dict[str, Model] = {}
        self.samplers: dict[str, Sampler] = {}
        self.creating: dict[str, Any] = {}  # model_id -> the Future of its creation
        self.creating_lock = threading.Lock()
        self.signing_key = uuid.uuid4().bytes + uuid.uuid4().bytes  # for download URLs, per process
        self._lock = threading.Lock()

    def new_session(self) -> str:
        session_id = f"session-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.sessions[session_id] = time.time()
        return session_id

    def heartbeat(self, session_id: str) -> bool:
        with self._lock:
            if session_id not in self.sessions:
                return False
            self.sessions[session_id] = time.time()
            return True

    def finish_session(self, session_id: str) -> bool:
        """Free what the session made: its models' adapters (after their queued jobs, which run
        first on the worker) and its samplers. Its checkpoints stay on disk."""
        prefix = f"{session_id}:"
        with self._lock:
            known = self.sessions.pop(session_id, None) is not None
            models = [self.models.pop(k) for k in [k for k in self.models if k.startswith(prefix)]]
            for key in [k for k in self.creating if k.startswith(prefix)]:
                del self.creating[key]
            for key in [k for k in self.samplers if k.startswith(prefix)]:
                del self.samplers[key]  # the local SamplingClient frees its adapter when dropped
        for model in models:
            model.client.release()
        return known

    def add_model(self, model_id: str, client: Any, base_model: str, rank: int, user_metadata: dict[str, str] | None) -> Model:
        # The local client writes its checkpoints under its model_id: make it the SDK's id,
        # so the tinker:// paths name the run the client knows.
        client.model_id = model_id
        client.session = session_of(model_id)  # stable_reinforce: it trains on its session's samples
        clock = ModelClock(self.clock_s, self.clock_t0) if self.clock_s > 0 else None
        model = Model(client, base_model, rank, dict(user_metadata or {}), clock)
        with self._lock:
            self.models[model_id] = model
        return model

    def model(self, model_id: str) -> Model:
        with self._lock:
            model = self.models.get(model_id)
        if model is None:
            raise KeyError(f"unknown model_id {model_id!r} (created by another server process? create it again or load its checkpoint)")
        model.last_request = time.time()
        return model

    def add_sampler(self, sampler_id: str, sampler: Sampler) -> None:
        sampler.client.recording(self.service.stability, sampler.client._record, session_of(sampler_id))
        with self._lock:
            self.samplers[sampler_id] = sampler

    def sampler(self, sampler_id: str) -> Sampler:
        with self._lock:
            sampler = self.samplers.get(sampler_id)
        if sampler is None:
            raise KeyError(f"unknown sampling_session_id {sampler_id!r}")
        return sampler

    def release_time(self, model: Model, request: str) -> float | None:
        return model.clock.release_time(request) if model.clock is not None else None

    def close(self) -> None:
        self.checkpoint_meta.close()
        self.service.close()


def session_of(client_id: str) -> str:
    """The session in a model or sampler id (``SESSION:train:N``, ``SESSION:sample:N``)."""
    return client_id.split(":", 1)[0]
