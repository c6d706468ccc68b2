"""The prepare phase: read and check every input, and render, before anything is written.

Data, backend, training client (fresh, or loaded from the checkpoint to resume), renderer,
the first step's examples (all of them for small data), executor: a bad input fails here, so
it leaves no half-made run dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinkerplug import rundir
from tinkerplug.backend_calls import backend_call
from tinkerplug.config import RunConfig
from tinkerplug.context import CheckpointRecord, RunContext, StepExecutor
from tinkerplug.data import Records, heldout_source
from tinkerplug.checkpoint_refs import check_base, check_same_base, resolve_checkpoint
from tinkerplug.errors import ConfigError
from tinkerplug.plugins import Plugins
from tinkerplug import rendering
from tinkerplug.record_check import BackgroundCheck, check_records
from tinkerplug.rendering import TrainingData, render_training_data


@dataclass
class Prepared:
    """What the open and steps phases start from."""

    run: RunContext
    data: TrainingData
    executor: StepExecutor
    checkpoint: CheckpointRecord | None  # the one resumed from


async def prepare(
    config: RunConfig, plugins: Plugins, run_dir: Path, resuming: bool, records: Records
) -> Prepared | dict[str, Any]:
    """Everything a run needs, checked; or the summary of a run that already finished.
    ``records``: the training data, read before the resume check (its fingerprint)."""
    checkpoint = resume_point(config, plugins, run_dir, resuming)
    if checkpoint is not None and checkpoint.final:
        plugins.note(config, f"{run_dir} already finished (final checkpoint at step {checkpoint.step}): nothing to do")
        return {"run_dir": str(run_dir), "steps_run": 0, "num_steps": checkpoint.step, "interrupted": False}
    # Every record is parsed in a thread while the model loads; a big file from step 0 on.
    checked = BackgroundCheck(records, start=len(records) <= rendering.WAIT_FOR_CHECK_UP_TO)
    try:
        return await _prepare_checked(config, plugins, run_dir, records, checkpoint, checked)
    except BaseException:
        checked.close()
        raise


async def _prepare_checked(
    config: RunConfig, plugins: Plugins, run_dir: Path, records: Records, checkpoint: CheckpointRecord | None,
    checked: BackgroundCheck,
) -> Prepared:
    heldout = heldout_source(config)
    if heldout is not None:  # evaluators read it later: a bad file must fail now, not at step 0
        check_records(plugins.load_records(heldout, config))
    service = plugins.create_service_client(config, str(run_dir))
    plugins.note(config, f"backend {config.resolved_backend}, base model {config.base_model}")
    training_client = await open_training_client(config, plugins, service, checkpoint, run_dir)
    tokenizer = training_client.get_tokenizer()
    renderer = plugins.resolve_renderer(config, tokenizer)
    checked.wait(len(records) <= rendering.WAIT_FOR_CHECK_UP_TO)
    start_step = checkpoint.step if checkpoint else 0
    data = render_training_data(records, renderer, config, plugins, tokenizer, start_step)
    data.check = checked
    report_counts(data, config, plugins)
    num_steps = config.num_steps or (config.num_epochs or 1) * data.steps_per_epoch
    if start_step > num_steps:
        raise ConfigError(f"--resume: the last checkpoint is at step {start_step}, past num_steps={num_steps}")
    run = RunContext(
        config=config, run_dir=run_dir, plugins=plugins, num_steps=num_steps, start_step=start_step,
        service_client=service, training_client=training_client, tokenizer=tokenizer, renderer=renderer,
        steps_per_epoch=data.steps_per_epoch,
    )
    run.objective = plugins.make_objective(config, run, data)
    return Prepared(run, data, plugins.make_step_executor(config, training_client), checkpoint)


def report_counts(data: TrainingData, config: RunConfig, plugins: Plugins) -> None:
    """The data counts: exact when every record is rendered (small data, or a full cache),
    else where the rest comes from (the counts of what was rendered follow at the end)."""
    stats = data.stats
    if not stats.complete:
        plugins.note(
            config,
            f"data: {stats.total} records; rendering runs ahead of training "
            f"({stats.rendered} in the cache {data.cache.directory}); counts at the end",
        )
        return
    note, warning = stats.describe(config.max_length)
    plugins.note(config, note)
    if warning:
        plugins.warn(config, warning)
    data.counts_reported = True


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
    config: RunConfig, plugins: Plugins, service: Any, checkpoint: CheckpointRecord | None, run_dir: Path
) -> Any:
    """A fresh LoRA training client, the weights of ``init_from`` (fresh optimizer), or the
    one saved in ``checkpoint`` (with its optimizer)."""
    if checkpoint is None and config.init_from:
        return await open_init_from(config, plugins, service)
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


async def open_init_from(config: RunConfig, plugins: Plugins, service: Any) -> Any:
    """A training client on the weights ``init_from`` names, with a fresh optimizer; refused
    when they were trained on another base model or with another LoRA rank."""
    source = resolve_checkpoint(config.init_from, "init_from")
    check_base(source, config.base_model, "init_from")
    client = await backend_call(
        lambda: service.create_training_client_from_state(source.state_path),
        f"init_from {config.init_from!r}: could not load {source.state_path}",
    )
    check_same_base(client, config, f"init_from {config.init_from!r}", source)
    config.set_init_from_path(source.state_path)
    plugins.note(config, f"weights from {source.state_path} (init_from; fresh optimizer)")
    return client
