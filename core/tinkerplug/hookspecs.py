"""Every extension point of tinkerplug. This module is the reference manual.

Each hook is a typed function; its docstring says when it is called, what it receives and what
it returns. Implement a hook in a plugin with ``@tinkerplug.hookimpl`` and a function of the
same name that takes any subset of the arguments listed here.

``firstresult`` hooks pick one answer: they stop at the first plugin that returns something
other than ``None`` (return ``None`` to pass the question on). The other hooks fan out: every
plugin is called, one at a time, and an error names the plugin that raised.

Plugins are called last-registered first, so precedence is: project files (``plugins =
["./my_hooks.py"]`` in the config, then ``-p ./my_hooks.py``) > installed third-party plugins
(by entry-point name) > first-party plugins. ``@tinkerplug.hookimpl(tryfirst=True)`` or
``trylast=True`` moves one implementation to the front or the back; ``tinkerplug plugins
--hook NAME`` prints the order. Wrappers (``wrapper=True``) work on ``firstresult`` hooks only.

A run needs one implementation each of ``create_service_client``, ``resolve_renderer``,
``render_example``, ``lr_for_step`` and ``make_step_executor``; disabling the plugin that
provides one (``-p no:NAME``) fails when the plugins load, naming what was disabled.

Only ``evaluate`` may be ``async`` (or return an awaitable); the other hooks are called
synchronously and must return plain values. Plugin modules are imported at start-up of every
command: import heavy packages (torch, tinker, the cookbook, pydantic models) inside hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from tinkerplug.markers import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel
    from tinker import types
    from tinker_cookbook.renderers import Renderer

    from tinkerplug.config import RunConfig
    from tinkerplug.context import CheckpointRecord, EvalContext, RunContext, StepExecutor


# -- configuration -------------------------------------------------------------------------


@hookspec
def register_config_sections(register: Callable[[str, type[BaseModel]], None]) -> None:
    """Add a table to the config file schema.

    Call ``register(name, Model)`` with a pydantic model: the ``[name]`` table of the config
    file is validated against it together with the rest of the config, and errors name the
    table and the plugin. The validated section is ``config.section(name)``.

    Called once, when a run's config is loaded (not by ``tinkerplug plugins``). Use it for a
    plugin's own settings (the ``[heldout]`` evaluator and ``[local]`` backend tables are
    registered this way); import the model inside the hook, since building pydantic models
    at import time slows every command. Two plugins may not register the same table.
    """


# -- backend ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
def create_service_client(config: RunConfig, run_dir: str) -> Any | None:
    """Create the service client that trains and samples: the Tinker SDK surface.

    Return an object with the ``tinker.ServiceClient`` methods the loop uses
    (``create_lora_training_client``, ``create_training_client_from_state_with_optimizer``,
    ``create_sampling_client``) whose futures have ``result()`` and ``result_async()``, or
    ``None`` when ``config.backend`` names another backend.

    ``run_dir`` is where the run keeps its files; a backend that stores checkpoints locally
    keeps them under ``run_dir/checkpoints``. Called once per run, before anything else
    touches the backend. Stops at first non-None result; a run fails when every plugin
    returns ``None``.

    First-party: ``local`` (in-process torch + peft) and ``tinker`` (the remote service).
    """


# -- data -------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def resolve_renderer(config: RunConfig, tokenizer: Any) -> Renderer | None:
    """Pick the chat renderer that turns messages into tokens for ``config.base_model``.

    Use ``config.renderer`` when set; otherwise choose from the model name. Raise
    ``tinkerplug.errors.ConfigError`` for an unknown renderer or one that does not fit the
    tokenizer. Stops at first non-None result.

    First-party: ``cookbook`` (``tinker_cookbook.renderers``).
    """


@hookspec(firstresult=True)
def render_example(
    example: Mapping[str, Any], renderer: Renderer, config: RunConfig
) -> types.Datum | None:
    """Render one training record (``{"messages": [...]}``) into a ``tinker.types.Datum``.

    The datum's ``loss_fn_inputs`` hold ``target_tokens`` and ``weights`` of the same length
    as ``model_input``; weights are non-zero only on tokens to learn (by default the assistant
    reply, per ``config.train_on_what``). Do not truncate: the loop applies ``max_length`` and
    ``overlong`` and reports counts. Stops at first non-None result.

    First-party: ``cookbook`` (``Renderer.build_supervised_example``).
    """


# -- optimisation ------------------------------------------------------------------------------


@hookspec(firstresult=True)
def lr_for_step(step: int, num_steps: int, config: RunConfig) -> float | None:
    """Return the learning rate for optimizer step ``step`` (0-based) of ``num_steps``.

    The value is sent in that step's ``AdamParams`` and logged as ``lr`` in
    ``metrics.jsonl``. Must depend only on its arguments, so a resumed run gets the same
    schedule. Called once per step, before the step is submitted. Stops at first non-None
    result.

    First-party: ``schedule`` (base LR from the config or Tinker's recommended formula;
    linear warmup, then cosine, linear or constant decay to ``min_lr``).
    """


@hookspec(firstresult=True)
def make_step_executor(config: RunConfig, training_client: Any) -> StepExecutor | None:
    """Create the object that submits training steps to ``training_client``.

    Return a ``tinkerplug.context.StepExecutor``: ``await submit(step, data, adam_params)``
    returns the steps that finished, ``await drain()`` waits for the rest. An executor may
    keep several steps in flight (request latency overlaps) but must finish them in order.
    Stops at first non-None result.

    First-party: ``executors`` (``executor = "sync"`` or ``"pipelined"`` with
    ``submit_ahead``).
    """


# -- evaluation, checkpoints, logging ----------------------------------------------------------


@hookspec
def evaluate(context: EvalContext) -> Mapping[str, float] | Awaitable[Mapping[str, float]] | None:
    """Evaluate the sampler weights saved at ``context.step``.

    Called at step 0, every ``eval_every`` steps and after the last step, with
    ``context.sampling_client`` opened on weights saved by ``save_weights_for_sampler``.
    Return metrics as ``{"<name>/<metric>": value}`` (for example
    ``{"heldout/exact_match": 0.9}``); they are logged as ``eval/<name>/<metric>``. Each
    evaluator runs on its own: one that raises is reported by plugin name and, unless
    ``eval_errors = "raise"``, training goes on. May be ``async``: evaluators run one after
    another, each awaited before the next. Return ``None`` to skip (e.g. when disabled).

    First-party: ``heldout`` (exact match on the held-out set).
    """


@hookspec
def on_checkpoint(record: CheckpointRecord, run: RunContext) -> None:
    """Called after a checkpoint is complete and recorded in ``checkpoints.jsonl``.

    ``record`` holds the step, epoch, batch, ``state_path`` (``save_state``) and
    ``sampler_path`` (``save_weights_for_sampler``): local directories on the local
    backend, ``tinker://`` paths on Tinker. Use it to copy, upload or prune checkpoints;
    never remove the latest one, which ``--resume`` starts from.
    """


@hookspec(firstresult=True)
def fetch_sampler_weights(record: CheckpointRecord, config: RunConfig, dest: str) -> bool | None:
    """Copy the weights of checkpoint ``record`` into the empty directory ``dest`` as a PEFT
    adapter (``adapter_config.json`` + ``adapter_model.safetensors``).

    Called by ``tinkerplug export`` for checkpoints whose paths are not local directories.
    Return ``True`` when done, ``None`` when the paths are not this backend's. Stops at first
    non-None result.

    First-party: ``tinker`` (the SDK's external-weights export and signed download URLs).
    """


@hookspec
def on_run_start(run: RunContext) -> None:
    """Called once the run directory, training client and data are ready, before step
    ``run.start_step`` (0, or the checkpoint step when resuming).

    Open files and writers here (``log_metrics`` follows); ``run.run_dir`` is the run's
    directory and ``run.config`` its validated config.
    """


@hookspec
def log_metrics(step: int, metrics: Mapping[str, float], run: RunContext) -> None:
    """Record one row of metrics for ``step``.

    Called once per optimizer step, in step order, with ``train/loss`` (mean NLL per trained
    token), ``lr``, token counts, timing and, when evals ran at that step, ``eval/...``
    metrics. After the last step one more row carries the final evals. On resume, rows from
    the checkpoint step on are logged again: loggers replace, never duplicate, them.
    Values are floats (``NaN`` possible); ``step`` and ``epoch`` are ints.

    First-party: ``jsonl`` (``RUN_DIR/metrics.jsonl``, always on) and ``tensorboard``
    (``RUN_DIR/tensorboard``, with ``[tensorboard] enabled = true``).
    """


@hookspec
def on_run_end(run: RunContext, summary: Mapping[str, Any]) -> None:
    """Called once after the last step (or after a clean stop on Ctrl-C), with the final
    summary (``steps_run``, ``interrupted``, first/last train loss and evals). Close files and
    flush writers here."""
