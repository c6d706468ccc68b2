"""The prepare phase: read and check every input, and render, before anything is written.

Run dir, data, resume point, backend, training client (fresh, or loaded from the checkpoint to
resume), renderer, the first step's examples (all of them for small data), executor: a bad
input fails here, so it leaves no half-made run dir. The config is not changed from here on.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinkerplug import rundir, training_data
from tinkerplug.backend_calls import backend_call
from tinkerplug.config import RunConfig
from tinkerplug.checkpoint_refs import CheckpointRef, check_base, check_same_base, pending_pins, resolve_pinned
from tinkerplug.data import BackgroundCheck, Records, check_records
from tinkerplug.errors import ConfigError
from tinkerplug.hook_types import CheckpointRecord, RunContext, StepExecutor
from tinkerplug.mixture import MixtureRecords, describe
from tinkerplug.plugins import Plugins
from tinkerplug.training_data import TrainingData, render_training_data

if TYPE_CHECKING:  # the SDK's clients; a backend plugin provides objects with their methods
    from tinker import ServiceClient, TrainingClient


@dataclass
class Prepared:
    """What the open and steps phases start from: every input checked, nothing written yet
    (a resume holds the run dir's lock)."""

    run: RunContext
    data: TrainingData
    executor: StepExecutor
    checkpoint: CheckpointRecord | None  # the one resumed from
    resuming: bool  # the run dir holds this run already
    run_json: dict[str, Any]  # config.json: the resolved config, data counts and fingerprint


@dataclass
class AlreadyFinished:
    """A ``--resume`` of a run whose final checkpoint exists: nothing to do."""

    summary: dict[str, Any]


async def prepare(config: RunConfig, plugins: Plugins, command: str, held: ExitStack) -> Prepared | AlreadyFinished:
    """Every input a run needs, read and checked before anything is written: the run dir
    (refused when taken), the data (a resume on changed data or settings refused), the
    checkpoint to resume from, backend, training client, renderer, rendered examples,
    executor. A resume's lock on the run dir goes on ``held``. ``command`` resumes the run."""
    run_dir = Path(config.run_dir).resolve()
    pending_pins(run_dir)  # none left from an earlier run of this dir in this process that failed here
    rundir.check_run_dir(run_dir, config.resume, command)
    resuming = config.resume and (run_dir / rundir.CONFIG_JSON).is_file()
    records, counts = open_data(config, plugins)  # indexed, not parsed: fast
    saved = run_json(config, records, counts)
    if resuming:  # checked before the lock, which rewrites .lock: a refused resume touches nothing
        rundir.check_resume_config(run_dir, saved, command, config.result_keys(), config.moved_keys())
        held.callback(rundir.RunDirLock(run_dir).acquire().release)
    checkpoint = resume_point(config, plugins, run_dir, resuming)
    if checkpoint is not None and checkpoint.final:
        plugins.note(config, f"{run_dir} already finished (final checkpoint at step {checkpoint.step}): nothing to do")
        return AlreadyFinished({"run_dir": str(run_dir), "steps_run": 0, "num_steps": checkpoint.step, "interrupted": False})
    init_from = init_from_ref(config) if checkpoint is None else None
    if init_from is not None:
        saved["init_from_path"] = init_from.state_path  # the state init_from resolved to
    # Every record is parsed in a thread while the model loads; a big file from step 0 on.
    checked = BackgroundCheck(records, start=len(records) <= training_data.WAIT_FOR_CHECK_UP_TO)
    try:
        run, data = await _prepare_checked(config, plugins, run_dir, records, checkpoint or init_from, checked)
    except BaseException:
        checked.close()
        raise
    executor = plugins.make_step_executor(config, run.training_client)
    return Prepared(run, data, executor, checkpoint, resuming, saved)


def open_data(config: RunConfig, plugins: Plugins) -> tuple[Records, list[dict[str, Any]]]:
    """The training records (a single source as is, several mixed by weight from ``seed``)
    and per-source counts: path, weight, records, examples. The held-out records are read
    whole now: evaluators read them later, and a bad file must fail now, not at step 0."""
    sources, heldout = config.data.train_sources(), config.data.heldout_source()
    opened = [(source, plugins.load_records(source, config)) for source in sources]
    if heldout is not None:
        check_records(plugins.load_records(heldout, config))
    if len(opened) == 1 and sources[0].weight == 1.0:
        records = opened[0][1]
        return records, [{"path": sources[0].path, "weight": 1.0, "records": len(records), "examples": len(records)}]
    mixture = MixtureRecords(opened, config.seed)
    plugins.note(config, f"data mixture: {describe(mixture.counts)}")
    return mixture, mixture.counts


def run_json(config: RunConfig, records: Records, counts: list[dict[str, Any]]) -> dict[str, Any]:
    """``config.json``: the resolved config, the per-source data counts, and the training
    data's fingerprint (a resume on an edited file is refused like a changed setting:
    ``data_fingerprint.train``)."""
    return {**config.to_json(), "data_counts": counts, "data_fingerprint": {"train": records.fingerprint()}}


async def _prepare_checked(
    config: RunConfig, plugins: Plugins, run_dir: Path, records: Records, start: CheckpointRecord | CheckpointRef | None,
    checked: BackgroundCheck,
) -> tuple[RunContext, TrainingData]:
    """The backend and the model (fresh, resumed from a checkpoint or ``init_from``), the
    renderer, the data rendered, the objective."""
    checkpoint = start if isinstance(start, CheckpointRecord) else None
    service = plugins.create_service_client(config, str(run_dir))
    plugins.note(config, f"backend {config.resolved_backend}, base model {config.base_model}")
    training_client = await open_training_client(config, plugins, service, start, run_dir)
    tokenizer = training_client.get_tokenizer()
    renderer = plugins.resolve_renderer(config, tokenizer)
    start_step = checkpoint.step if checkpoint else 0
    data = render_training_data(records, renderer, config, plugins, tokenizer, start_step, checked)
    steps_per_epoch = data.steps_per_epoch
    num_steps = config.num_steps or (config.num_epochs or 1) * steps_per_epoch
    if start_step > num_steps:
        raise ConfigError(f"--resume: the last checkpoint is at step {start_step}, past num_steps={num_steps}")
    plugins.lr_for_step(start_step, num_steps, config)  # a schedule that refuses its settings fails now
    run = RunContext(
        config=config, run_dir=run_dir, plugins=plugins, num_steps=num_steps, start_step=start_step,
        service_client=service, training_client=training_client, tokenizer=tokenizer, renderer=renderer,
        steps_per_epoch=steps_per_epoch,
    )
    run.objective = plugins.make_objective(config, run, data)
    return run, data


def resume_point(config: RunConfig, plugins: Plugins, run_dir: Path, resuming: bool) -> CheckpointRecord | None:
    """The checkpoint a ``--resume`` starts from, if any (saying so either way)."""
    if not resuming:
        if config.resume:
            plugins.note(config, f"nothing to resume in {run_dir} yet: starting a new run")
        return None
    checkpoint = rundir.last_checkpoint(run_dir)
    if checkpoint is None:
        plugins.note(config, "no complete checkpoint in the run dir yet: starting from step 0")
    return checkpoint


async def open_training_client(
    config: RunConfig, plugins: Plugins, service: ServiceClient, checkpoint: CheckpointRecord | CheckpointRef | None, run_dir: Path
) -> TrainingClient:
    """A fresh LoRA training client, the weights of ``init_from`` (a ``CheckpointRef``; fresh
    optimizer), or the one saved in ``checkpoint`` (with its optimizer)."""
    if isinstance(checkpoint, CheckpointRef):
        return await open_init_from(config, plugins, service, checkpoint)
    if checkpoint is None:
        return await backend_call(
            lambda: service.create_lora_training_client(
                base_model=config.base_model, rank=config.lora_rank, seed=config.seed,
                train_mlp=config.train_mlp, train_attn=config.train_attn, train_unembed=config.train_unembed,
            ),
            f"could not create a LoRA training client for base_model {config.base_model!r}",
        )
    client = await backend_call(
        lambda: service.create_training_client_from_state_with_optimizer(checkpoint.state_path),
        f"could not load the step-{checkpoint.step} checkpoint {checkpoint.state_path}",
        hint=f"{run_dir / rundir.CHECKPOINTS_JSONL} lists the checkpoints; remove its last row "
        "to resume from the one before",
    )
    plugins.note(config, f"resuming from step {checkpoint.step} ({checkpoint.state_path})")
    return client


def init_from_ref(config: RunConfig) -> CheckpointRef | None:
    """The weights ``init_from`` names, if set; refused when a run dir says they were trained
    on another base model (before anything loads)."""
    if not config.init_from:
        return None
    source = resolve_pinned(config, config.init_from, "init_from")
    check_base(source, config.base_model, "init_from")
    return source


async def open_init_from(config: RunConfig, plugins: Plugins, service: ServiceClient, source: CheckpointRef) -> TrainingClient:
    """A training client on the weights ``init_from`` names, with a fresh optimizer; refused
    when they were trained with another base model or LoRA rank."""
    client = await backend_call(
        lambda: service.create_training_client_from_state(source.state_path),
        f"init_from {config.init_from!r}: could not load {source.state_path}",
    )
    check_same_base(client, config, f"init_from {config.init_from!r}", source)
    plugins.note(config, f"weights from {source.state_path} (init_from; fresh optimizer)")
    return client
