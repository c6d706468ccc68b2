"""Every extension point of tinkerplug. This module is the reference manual.

Each hook is a typed function; its docstring says when it is called, what it receives and what
it returns. Implement a hook in a plugin with ``@tinkerplug.hookimpl`` and a function of the
same name that takes any subset of the arguments listed here. The hooks are listed in the
order a run calls them, grouped by phase: configuration, backend, data, optimisation,
evaluation, checkpoints, logging, and the commands the CLI offers.

A run goes through four phases. *prepare* reads and checks every input (config, data, backend,
renderer, rendered examples) and writes nothing; *open* creates the run dir and calls
``on_run_start``; *steps* submits and finishes the training steps, with evals and checkpoints
when due; *finish* runs the last evals, saves the final checkpoint and calls ``on_run_end``,
which is called for every run that opened, whatever stopped it.

``firstresult`` hooks pick one answer: they stop at the first plugin that returns something
other than ``None`` (return ``None`` to pass the question on). The other hooks fan out: every
plugin is called, in order, and an error names the plugin that raised.

Plugins are called last-registered first, so precedence is: project files (``plugins =
["./my_hooks.py"]`` in the config, then ``-p ./my_hooks.py``) > installed third-party plugins
(by entry-point name) > first-party plugins. ``@tinkerplug.hookimpl(tryfirst=True)`` or
``trylast=True`` moves one implementation to the front or the back; ``tinkerplug plugins
--hook NAME`` prints the order. Wrappers (``wrapper=True``) work on every hook but four
whose implementations are called one plugin at a time: ``evaluate`` (one failing evaluator
does not stop the others), ``register_config_sections``, ``register_backends``,
``register_objectives`` and ``register_rewards`` (a name two plugins claim is reported with
both plugins) and ``register_commands`` (a broken plugin
cannot take the CLI down).

A run needs one implementation each of ``create_service_client``, ``load_records``,
``resolve_renderer``, ``render_example``, ``make_objective``, ``lr_for_step`` and
``make_step_executor``; disabling the plugin that provides one (``-p no:NAME``) fails when the plugins load, naming
what was disabled.

Only ``evaluate`` may be ``async`` (or return an awaitable); the other hooks are called
synchronously and must return plain values. Plugin modules are imported at start-up of every
command: import heavy packages (torch, tinker, the cookbook, pydantic models) inside hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from tinkerplug.markers import hookspec

if TYPE_CHECKING:
    import click
    from tinker import types
    from tinker_cookbook.renderers import Renderer

    from tinkerplug.config import RunConfig
    from tinkerplug.context import CheckpointRecord, EvalContext, Objective, RunContext, StepExecutor
    from tinkerplug.data import DataSource, Records
    from tinkerplug.rendering import TrainingData


# -- configuration: when a run's config is loaded (`run`, `export`, `eval`) ---------------------


@hookspec
def register_config_sections(register: Callable[..., None]) -> None:
    """Add a table to the config file schema.

    Call ``register(name, Model, result_keys=())`` with a pydantic model: the ``[name]`` table
    of the config file is validated against it together with the rest of the config, and
    errors name the table and the plugin. The validated section is ``config.section(name)``.

    ``result_keys`` names the keys of the table that change what a run computes (for the
    local backend, ``("dtype",)``): ``--resume`` with one of them changed is refused, as it
    is for the core keys (``lora_rank``, ``batch_size``, ...). Keys that only change how a
    run goes (a device, a log directory) are left out.

    Called once, when a run's config is loaded (not by ``tinkerplug plugins``). Use it for a
    plugin's own settings (the ``[heldout]`` evaluator and ``[local]`` backend tables are
    registered this way); import the model inside the hook, since building pydantic models
    at import time slows every command. Two plugins may not register the same table.
    """


@hookspec
def register_objectives(register: Callable[[str, str], None]) -> None:
    """Add training objectives that ``objective = "NAME"`` in a config may choose.

    Call ``register(name, description)`` once per objective; a config naming an objective no
    plugin registered is refused with the registered names (and a did-you-mean). The
    objective itself is made by ``make_objective``, which the same plugin implements. Called
    when a run's config is loaded. Two plugins may not register the same name.

    First-party: ``sft`` (supervised, the default), ``rl`` (sampled groups, rewards,
    group-relative advantages), ``dpo`` (preference pairs) and ``distill`` (a teacher's
    samples or logprobs).
    """


# -- backend: registered when the config is loaded, created in the prepare phase ---------------


@hookspec
def register_backends(register: Callable[[str, str], None]) -> None:
    """Add backend names that ``backend = "NAME"`` in a config may choose.

    Call ``register(name, description)`` once per backend; a config naming a backend no
    plugin registered is refused with the registered names (and a did-you-mean). The
    backend itself is created by ``create_service_client``, which the same plugin
    implements. Called when a run's config is loaded. Two plugins may not register the
    same name.

    First-party: ``local`` (in-process torch + peft) and ``tinker`` (the remote service).
    """


@hookspec(firstresult=True)
def create_service_client(config: RunConfig, run_dir: str) -> Any | None:
    """Create the service client that trains and samples: the Tinker SDK surface.

    Return an object with the ``tinker.ServiceClient`` methods the loop uses
    (``create_lora_training_client``, ``create_training_client_from_state_with_optimizer``,
    ``create_sampling_client``, and ``create_rest_client`` for deleting checkpoints) whose
    futures have ``result()`` and ``result_async()``, or ``None`` when
    ``config.resolved_backend`` names another backend.

    ``run_dir`` is where the run keeps its files; a backend that stores checkpoints locally
    keeps them under ``run_dir/checkpoints``. Called once per run, in the prepare phase,
    before anything else touches the backend. Stops at first non-None result; a run fails
    when every plugin returns ``None``.

    First-party: ``local`` (in-process torch + peft) and ``tinker`` (the remote service).
    """


# -- data: records opened in the prepare phase, examples rendered ahead of the steps (cached) ----


@hookspec(firstresult=True)
def load_records(source: DataSource, config: RunConfig) -> Records | None:
    """Open the records of one data source: ``config.data.train`` (each source of a
    mixture: the core mixes them by ``source.weight``) or ``data.heldout``.

    ``source.path`` is an absolute file or directory path (or a spec such as
    ``hf:NAME[:CONFIG]``, as written), ``source.role`` is ``"train"`` or ``"heldout"``,
    ``source.format`` the record format asked for (``data.format``; ``None``: detect it from
    the columns), ``source.split`` the split of a data set. Return a
    ``tinkerplug.data.Records``: ``len()``, ``records[i]`` (a chat record,
    ``{"messages": [...]}``, or a text record, ``{"text": "..."}``), ``where(i)``
    (``"FILE:LINE"`` or ``"FILE row N"`` for messages) and
    ``fingerprint()`` (a hash of the content). Raise ``tinkerplug.errors.DataError`` naming
    the file and line for bad input; return ``None`` for a source this plugin does not read.

    Called in the prepare phase for the training data and the held-out data (a bad file
    fails before anything is written), and by evaluators that read a data set. Stops at
    first non-None result.

    First-party: ``data`` (JSONL, JSON, CSV, Parquet and Arrow files, directories of them,
    ``hf:`` data sets; chat, prompt/completion, Alpaca, ShareGPT and text records).
    """


@hookspec(firstresult=True)
def resolve_renderer(config: RunConfig, tokenizer: Any) -> Renderer | None:
    """Pick the chat renderer that turns messages into tokens for ``config.base_model``.

    Use ``config.renderer`` when set; otherwise choose from the model name. Raise
    ``tinkerplug.errors.ConfigError`` for an unknown renderer or one that does not fit the
    tokenizer. Called in the prepare phase, once the training client (and with it the
    tokenizer) exists. Stops at first non-None result.

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
    ``overlong`` and reports counts. Called once per record, as the steps need it, from a
    thread that renders ahead of training (small data: all records before step 0). Results
    are cached on disk (``$TINKERPLUG_CACHE_DIR``, default ``~/.cache/tinkerplug``) under a
    key of the data's fingerprint, the renderer, the tokenizer, the settings above and the
    names of the plugins implementing this hook: a plugin whose output changes for the same
    inputs should change its name or ask users to clear that cache. Stops at first non-None
    result.

    First-party: ``cookbook`` (``Renderer.build_supervised_example``) and, for text records
    (``{"text": ...}``: loss on every token), ``data``.
    """


# -- objective: made in the prepare phase, asked for every step's batch ------------------------


@hookspec(firstresult=True)
def make_objective(config: RunConfig, run: RunContext, data: TrainingData) -> Objective | None:
    """Create the objective ``config.objective`` names: what each step sends to the backend.

    Return a ``tinkerplug.context.Objective`` (``await batch(step)`` returns a
    ``StepBatch``: the datums, the loss (a Tinker loss name, or a callable for
    ``forward_backward_custom``), its ``loss_fn_config`` and metrics for that step's row),
    or ``None`` for an objective this plugin does not provide. ``run`` holds the service
    and training clients, tokenizer and renderer (``run.start_step`` is the step a resumed
    run starts at); ``data`` the training records (``data.records``) and each step's
    records (``data.batch_indices(step)``), rendered as supervised examples
    (``data.batch(step)``). Check the records and settings here: raise
    ``tinkerplug.errors.DataError`` / ``ConfigError`` naming the record or key.

    The phases around the steps (evals, checkpoints, resume, loggers) are the core's: an
    objective must make ``batch(step)`` a function of the weights at ``step``, the records
    and the run's seed (seed any sampling from ``config.seed`` and ``step``), so that a
    resumed run computes what an uninterrupted one did. Called once, in the prepare phase,
    after the data is rendered. Stops at first non-None result.

    First-party: ``sft``, ``rl``, ``dpo``, ``distill``.
    """


@hookspec
def register_rewards(register: Callable[..., None]) -> None:
    """Add reward functions that ``[rl.rewards] NAME = weight`` may use.

    Call ``register(name, function)``; ``function(completion, record, config)`` gets the
    sampled reply (text, as the renderer parsed it), the training record it answers
    (``{"messages": [...]}``) and the run config, and returns a number. The ``rl``
    objective adds the rewards a config names, each times its weight; each is logged on
    its own (``rl/reward/NAME``). A reward that raises or returns a non-number or NaN
    stops the run with an error naming it and the record (checkpoints stay as they are).

    Called by the ``rl`` objective when it is made (prepare phase). A project file
    (``plugins = ["./my_reward.py"]``) is the simplest place for a reward of one's own.

    First-party: ``rewards`` (``exact_match`` against the record's last assistant message,
    ``math``: the cookbook's math grader on a ``\\boxed{}`` or plain answer).
    """


# -- optimisation: the executor is made in the prepare phase, the LR asked for every step -------


@hookspec(firstresult=True)
def make_step_executor(config: RunConfig, training_client: Any) -> StepExecutor | None:
    """Create the object that submits training steps to ``training_client``.

    Return a ``tinkerplug.context.StepExecutor``: ``await submit(step, batch, adam_params)``
    sends the objective's ``StepBatch`` (``forward_backward`` with its loss, or
    ``forward_backward_custom`` for a callable loss, then ``optim_step``) and returns the
    steps that finished, ``await drain()`` waits for the rest. An executor may keep several
    steps in flight (request latency overlaps) but must finish them in order.
    Called once, in the prepare phase. Stops at first non-None result.

    First-party: ``executors`` (``executor = "sync"`` or ``"pipelined"`` with
    ``submit_ahead``).
    """


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


# -- evaluation: at step 0, every `eval_every` steps and after the last step --------------------


@hookspec
def evaluate(context: EvalContext) -> Mapping[str, float] | Awaitable[Mapping[str, float]] | None:
    """Evaluate the weights at ``context.step``.

    Called at step 0, every ``eval_every`` steps and after the last step (and by
    ``tinkerplug eval`` on a saved checkpoint). ``context.sampling_client`` is a sampling
    client on the weights of that step: the weights are saved and the client opened on first
    access, once per step, so an evaluator that does not sample costs nothing;
    ``context.training_client`` is the training client, for loss-based evaluators that call
    ``forward``. Return metrics as ``{"<name>/<metric>": value}`` (for example
    ``{"heldout/exact_match": 0.9}``); they are logged as ``eval/<name>/<metric>``. Return
    ``None`` to skip (e.g. when disabled), before touching ``sampling_client``.

    Each evaluator runs on its own: one that raises is reported by plugin name and, unless
    ``eval_errors = "raise"``, training goes on (so this hook cannot be wrapped). May be
    ``async``: evaluators run one after another, each awaited before the next.

    First-party: ``heldout`` (exact match on the held-out set), ``nll`` (held-out loss by
    ``forward``), ``inspect`` (Inspect tasks).
    """


# -- checkpoints: every `save_every` steps, on a clean stop, and after the last step -----------


@hookspec
def on_checkpoint(record: CheckpointRecord, run: RunContext) -> None:
    """Called after a checkpoint is complete and recorded in ``checkpoints.jsonl``.

    ``record`` holds the step, epoch, batch, ``state_path`` (``save_state``) and
    ``sampler_path`` (``save_weights_for_sampler``): local directories on the local
    backend, ``tinker://`` paths on Tinker. Use it to copy, upload or prune checkpoints;
    never remove the latest one, which ``--resume`` starts from, nor the final one.

    First-party: ``retention`` (``[retention] keep_last`` / ``keep_every``: deletes older
    checkpoints through the backend's REST client and marks their rows ``removed``).
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


# -- logging: what a run reports, from the prepare phase to its end ----------------------------


@hookspec
def on_message(text: str, level: str, config: RunConfig) -> None:
    """Report a message about the run to the user: ``level`` is ``"note"`` (what the run is
    doing: backend, resume point, data counts) or ``"warning"`` (something the user should
    act on: dropped examples, a failed evaluator, a stalled backend).

    Called from every phase, before the run dir exists too, and from the stall watchdog's
    thread. Errors that stop the run are not messages: they end it, reach ``on_run_end`` as
    ``summary["error"]`` and are printed by the CLI.

    First-party: ``terminal`` (the progress bar, eval lines and the summary table; ``[terminal]
    quiet = true`` or ``tinkerplug run -q`` keeps only warnings; ``-p no:terminal`` silences
    it).
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

    First-party: ``jsonl`` (``RUN_DIR/metrics.jsonl``, always on), ``tensorboard``
    (``RUN_DIR/tensorboard``, with ``[tensorboard] enabled = true``), ``wandb`` (Weights &
    Biases, with a ``[wandb]`` table: W&B cannot replace a point, so it skips the steps it
    already has) and ``terminal``.
    """


@hookspec
def on_run_end(run: RunContext, summary: Mapping[str, Any]) -> None:
    """Called once for every run that reached ``on_run_start``, however it ended: after the
    last step, after a clean stop on Ctrl-C (``summary["interrupted"]`` is true, and
    ``summary["resume_command"]`` says how to go on), or after an error in the backend, a
    plugin or a second Ctrl-C (``summary["error"]`` holds the message). The summary also
    holds ``steps_run``, ``num_steps`` and first/last train loss and evals. Close files and
    flush writers here; it is called from a ``finally``, so keep it quick and do not raise.
    """


# -- commands: when the `tinkerplug` command starts ---------------------------------------------


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to ``tinkerplug``: ``cli.add_command(my_command)`` with a ``click``
    command.

    Called when the CLI starts, for every installed plugin (entry points; project files
    are not loaded yet, so they cannot add commands), so a plugin's command shows in
    ``tinkerplug --help``. Keep the module that defines the command light (click only):
    import heavy packages inside the command function, since this runs for every command
    and ``--help`` must stay fast.

    ``run``, ``plugins`` and ``hooks`` are the core itself. The commands that read a run
    dir (``runs``, ``show``, ``plot``, ``export``) are the first-party ``commands`` plugin
    in the core package: the run dir's files (``config.json``, ``checkpoints.jsonl``,
    ``metrics.jsonl``) are the core's contract, and they reach backends only through hooks
    (``fetch_sampler_weights``), so they stay with the core, yet can be disabled or replaced
    like any plugin. A backend's own tools come with the backend: ``local`` adds
    ``tinkerplug local`` (run an unmodified Tinker script on the local backend).
    """
