"""The run config: one TOML file, validated by pydantic, with ``--set key.sub=value`` overrides.

Paths inside the file (data, plugin files) are relative to the file; ``run_dir`` is relative
to the current directory. Plugins add their own ``[tables]`` with the
``register_config_sections`` hook.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError, model_validator

from tinkerplug.config_source import (  # noqa: F401 - parse_override, apply_override, find_line: their old home
    SOURCE_FORMS, ConfigOrigin, apply_override, did_you_mean, find_line, format_validation, parse_override,
    reject_secrets,
)
from tinkerplug.data import DataSource, is_spec
from tinkerplug.errors import ConfigError

TRAIN_ON_WHAT = (
    "last_assistant_message",
    "last_assistant_turn",
    "all_assistant_messages",
    "all_messages",
    "all_tokens",
    "all_user_and_system_messages",
    "customized",
)


# Core config keys that decide what a run computes (plugins add theirs: ``result_keys`` in
# ``register_config_sections``). A resumed run must keep them, or it would not
# be the same run (a new batch size reorders the data, a new num_steps moves the LR schedule).
RESULT_KEYS = (
    "backend", "base_model", "renderer", "lora_rank", "train_mlp", "train_attn", "train_unembed",
    "learning_rate", "use_recommended_lr",
    "adam_beta1", "adam_beta2", "adam_eps", "weight_decay", "grad_clip_norm", "batch_size",
    "num_steps", "num_epochs", "max_length", "overlong", "train_on_what", "loss_reduction", "seed",
    "data.train", "data_fingerprint.train", "objective", "init_from",
)


@dataclass
class PluginSchema:
    """What the plugins add to the config: tables (with their owners and the keys that decide
    a result) and backend names (``tinkerplug.assemble.plugin_schema`` asks the plugins)."""

    sections: dict[str, Any] = field(default_factory=dict)  # table -> pydantic model
    owners: dict[str, str] = field(default_factory=dict)  # table -> plugin
    result_keys: list[str] = field(default_factory=list)  # dotted: "local.dtype"
    backends: dict[str, str] = field(default_factory=dict)  # name -> description
    backend_owners: dict[str, str] = field(default_factory=dict)
    moved: dict[str, tuple[str, str]] = field(default_factory=dict)  # old top-level key -> (table, key)
    moved_owners: dict[str, str] = field(default_factory=dict)
    objectives: dict[str, str] = field(default_factory=dict)  # name -> description
    objective_owners: dict[str, str] = field(default_factory=dict)

    def did_you_mean(self, name: str, among: Any = None) -> str:
        close = difflib.get_close_matches(name, list(self.backends if among is None else among), n=1)
        return f"; did you mean {close[0]!r}?" if close else ""


class SourceConfig(BaseModel):
    """One data source written as a table: ``[[data.train]] path = ... weight = ...``."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="A data file, a directory of them, or hf:NAME[:CONFIG].")
    format: str | None = Field(None, description="Record format; default: data.format, else detected.")
    split: str | None = Field(None, description="Split of an hf: data set (default: train / validation or test).")
    weight: float = Field(1.0, gt=0, description="Examples per epoch = records x weight (mixtures).")


def _source_form(value: Any) -> str:
    return "source-list" if isinstance(value, list) else "source-table" if isinstance(value, (dict, SourceConfig)) else "source-path"


# A path, a table or a list of tables, told apart by the value's type, so an error names the
# form that was written (not all three).
Sources = Annotated[
    Union[Annotated[Path, Tag("source-path")], Annotated[SourceConfig, Tag("source-table")], Annotated[list[SourceConfig], Tag("source-list")]],
    Discriminator(_source_form),
]
OptionalSource = Annotated[
    Union[Annotated[Path, Tag("source-path")], Annotated[SourceConfig, Tag("source-table")]], Discriminator(_source_form)
]


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: Sources = Field(
        description="A data file (JSONL, JSON, Parquet, CSV, Arrow), a directory of them, hf:NAME[:CONFIG], "
        "or a list of weighted sources ([[data.train]] tables)."
    )
    heldout: OptionalSource | None = Field(None, description="Held-out data for evaluators (same forms).")
    format: str | None = Field(
        None, description="Record format of every source: messages, prompt_completion, alpaca, sharegpt, text; default: detected."
    )

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if isinstance(self.train, list) and not self.train:
            raise ValueError("train: give at least one source")
        return self

    def sources(self, role: str) -> list[SourceConfig]:
        """The ``train`` or ``heldout`` sources as tables (a plain path is one, weight 1)."""
        value = self.train if role == "train" else self.heldout
        items = value if isinstance(value, list) else [] if value is None else [value]
        return [s if isinstance(s, SourceConfig) else SourceConfig(path=s) for s in items]

    def train_sources(self) -> list[DataSource]:
        """The training sources as ``load_records`` gets them: one, or a mixture's weighted ones."""
        return [self._data_source(s, "train") for s in self.sources("train")]

    def heldout_source(self) -> DataSource | None:
        sources = self.sources("heldout")
        return self._data_source(sources[0], "heldout") if sources else None

    def _data_source(self, table: SourceConfig, role: str) -> DataSource:
        return DataSource(path=str(table.path), role=role, format=table.format or self.format, split=table.split, weight=table.weight)

    def label(self, role: str = "train") -> str:
        """How messages name the data: the path, or the paths of a mixture."""
        return " + ".join(str(s.path) for s in self.sources(role))


class RunConfig(BaseModel):
    """Top-level keys of the config file."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    base_model: str = Field(description="HF model dir, hub name, or a shipped model (tiny-chat).")
    backend: str | None = Field(
        None,
        description="A registered backend: local (in-process), tinker (remote), or a plugin's; "
        "default: tinker when TINKER_API_KEY is set, else local.",
    )
    renderer: str | None = Field(None, description="Cookbook renderer name; default: from the model name.")
    objective: str = Field(
        "sft", description="What a step trains for: sft, rl ([rl]), dpo ([dpo]), distill ([distill]), or a plugin's."
    )
    init_from: str | None = Field(
        None, description="Start from these weights (fresh optimizer): RUN_DIR, RUN_DIR:STEP, a state or tinker:// path."
    )
    lora_rank: int = Field(16, gt=0)
    train_mlp: bool = True
    train_attn: bool = True
    train_unembed: bool = True

    learning_rate: float = Field(1e-4, gt=0)
    use_recommended_lr: bool = Field(False, description="Use Tinker's LR formula for the model.")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.95, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip_norm: float = Field(0.0, ge=0, description="0 disables clipping.")

    batch_size: int = Field(8, gt=0)
    num_steps: int | None = Field(None, gt=0)
    num_epochs: int | None = Field(None, gt=0, description="Used when num_steps is not set (default 1).")
    max_length: int = Field(2048, gt=1)
    overlong: Literal["drop", "truncate"] = "drop"
    train_on_what: str = "last_assistant_message"
    loss_reduction: Literal["mean", "none"] = Field(
        "mean", description="mean: each example's weights sum to 1; none: token-sum loss."
    )
    seed: int = 0

    run_dir: Path = Path("runs/default")
    resume: bool = False
    data: DataConfig
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0: only at start and end).")
    eval_errors: Literal["warn", "raise"] = "warn"
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only at the end).")
    stall_minutes: float = Field(
        10.0, ge=0, description="Warn (with the resume command) when no step finished for this long; 0: off."
    )

    plugins: list[str] = Field(default_factory=list, description="Project plugin files.")
    disable_plugins: list[str] = Field(default_factory=list)

    _sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    _plugin_result_keys: tuple[str, ...] = PrivateAttr(())
    _source: Path | None = PrivateAttr(None)
    _set_keys: frozenset[str] = PrivateAttr(frozenset())
    _moved: dict[str, str] = PrivateAttr(default_factory=dict)  # "table.key" -> its old top-level key
    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.train_on_what not in TRAIN_ON_WHAT:
            raise ValueError(f"train_on_what must be one of {', '.join(TRAIN_ON_WHAT)}")
        if self.num_steps is not None and self.num_epochs is not None:
            raise ValueError("set num_steps or num_epochs, not both")
        return self

    @property
    def resolved_backend(self) -> str:
        if self.backend:
            return self.backend
        return "tinker" if os.environ.get("TINKER_API_KEY") else "local"

    @property
    def source(self) -> Path | None:
        """The config file this came from (None when built in code)."""
        return self._source

    def resume_command(self) -> str:
        """The command that resumes this run (the CLI passes a better one: the user's own
        command line, with its ``--set`` and ``-p`` options)."""
        import shlex

        src = self._source or Path("CONFIG")
        return shlex.join(["tinkerplug", "run", str(src), "--resume", "--set", f"run_dir={self.run_dir}"])

    def base_dir(self, key: str) -> Path:
        """The folder a relative path at dotted ``key`` (``"inspect.tasks"``) is relative to:
        the current directory when ``--set`` gave it (or for a config built in code), else the
        config file's folder. Plugins resolve the paths in their tables with it."""
        parts = key.split(".")
        from_cli = any(".".join(parts[:end]) in self._set_keys for end in range(1, len(parts) + 1))
        return Path.cwd() if from_cli or self._source is None else self._source.parent

    def moved_keys(self) -> dict[str, str]:
        """``"table.key"`` -> the top-level key older configs (and run dirs) hold it under."""
        return dict(self._moved)

    @property
    def deprecations(self) -> list[str]:
        """What the config file wrote the old way (a key a plugin's table took over)."""
        return list(self._deprecations)

    def section(self, name: str) -> Any:
        """The validated ``[name]`` table of a plugin (its defaults when absent)."""
        return self._sections[name]

    def result_keys(self) -> tuple[str, ...]:
        """The dotted keys that decide what this run computes: the core's and those the
        plugins declared (``register(name, Model, result_keys=...)``). ``--resume`` keeps them."""
        return RESULT_KEYS + self._plugin_result_keys

    def to_json(self) -> dict[str, Any]:
        """The resolved config as written to ``RUN_DIR/config.json`` (no secrets: keys come
        only from the environment and are never part of the config)."""
        data = self.model_dump(mode="json")
        data["backend"] = self.resolved_backend
        if self._source is not None:  # commands on the run dir resolve plugin paths from it
            data["config_file"] = str(self._source)
        for name, section in sorted(self._sections.items()):
            data[name] = section.model_dump(mode="json")
        return data


def load_config(
    path: str | Path,
    overrides: list[str] = (),  # type: ignore[assignment]
    schema: PluginSchema | None = None,
    disabled: frozenset[str] | set[str] = frozenset(),
) -> RunConfig:
    """Read, override and validate a config file.

    ``schema`` holds what the plugins add (``tinkerplug.assemble.plugin_schema``): tables, the
    keys of theirs that decide a result, backend names. Tables named after a ``disabled``
    plugin are ignored, so ``-p no:inspect`` works on a config that has an ``[inspect]`` table.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"config file {file} not found",
            hint="pass the path of a TOML file, e.g. `tinkerplug run examples/quickstart/config.toml`",
        )
    text = file.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}", hint="check the line named above") from exc
    origin = ConfigOrigin(file, text)
    for override in overrides:
        key, value = parse_override(override)
        apply_override(data, key, value)
        origin.overrides[".".join(key)] = override.strip()
    return build_config(data, origin, schema or PluginSchema(), disabled)


def build_config(
    data: dict[str, Any],
    origin: ConfigOrigin,
    schema: PluginSchema,
    disabled: frozenset[str] | set[str] = frozenset(),
) -> RunConfig:
    """Validate parsed config ``data`` (``origin``: its file and ``--set`` overrides)."""
    core_fields = set(RunConfig.model_fields)
    deprecations = move_top_level_keys(data, schema, origin)
    core = {k: v for k, v in data.items() if k in core_fields}
    plugin_tables = {
        k: v for k, v in data.items() if k not in core_fields and not (k in disabled and k not in schema.sections)
    }
    reject_secrets(data, origin)
    for name in plugin_tables:
        if name not in schema.sections:
            raise ConfigError(
                f"{origin.where((name,))}: unknown key {name!r}{did_you_mean(name, core_fields | set(schema.sections))}",
                hint=f"known keys and tables: {', '.join(sorted(core_fields | set(schema.sections)))}",
            )
    try:
        config = RunConfig.model_validate(core)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, origin, RunConfig, prefix=())) from None
    _check_backend(config, schema, origin, disabled)
    _check_objective(config, schema, origin)
    config._sections = _validate_sections(plugin_tables, schema, origin)
    config._plugin_result_keys = tuple(schema.result_keys)
    # Paths in the file are relative to it, those of a --set to the current directory; run
    # dirs (run_dir, and init_from's run dir or checkpoint) to the current directory, in the file too.
    config.data.train = _rel_source(config.data.train, origin.base_dir(("data", "train")))
    if config.data.heldout is not None:
        config.data.heldout = _rel_source(config.data.heldout, origin.base_dir(("data", "heldout")))
    config._source = origin.file.resolve()
    config._set_keys = frozenset(origin.overrides)
    config._moved = {f"{table}.{key}": old for old, (table, key) in schema.moved.items()}
    config._deprecations = deprecations
    return config


def move_top_level_keys(data: dict[str, Any], schema: PluginSchema, origin: ConfigOrigin) -> list[str]:
    """Keys a plugin's table took over from the top level (``register(..., top_level=...)``),
    moved into that table where an older config wrote them; returns a note for each."""
    notes = []
    # The old key that names the table itself first (``executor = "sync"``): it becomes the table.
    for old, (table, key) in sorted(schema.moved.items(), key=lambda item: item[0] != item[1][0]):
        if old not in data or (old == table and isinstance(data[old], dict)):
            continue
        value, where = data.pop(old), origin.where((old,))
        target = data.setdefault(table, {})
        given_twice = key in target and origin.override_of((old,)) is None  # a --set wins over the file
        if not isinstance(target, dict) or given_twice:
            raise ConfigError(
                f"{where}: {old} is given twice: at the top level and as [{table}] {key}",
                hint=f"keep [{table}] {key} only (--set {table}.{key}=...)",
            )
        target[key] = value
        notes.append(f"{where}: top-level {old!r} is deprecated; write it as [{table}] {key} = {value!r} (--set {table}.{key}=...)")
    return notes


def _check_backend(config: RunConfig, schema: PluginSchema, origin: ConfigOrigin, disabled: frozenset[str] | set[str]) -> None:
    """``backend`` must be a name some plugin registered (checked only when plugins are known)."""
    if config.backend is None or not schema.backends or config.backend in schema.backends:
        return
    if disabled:  # a plugin problem, as for a disabled renderer: exit 3
        from tinkerplug.errors import PluginError

        raise PluginError(
            f"no plugin provides backend {config.backend!r} (disabled: {', '.join(sorted(disabled))})",
            hint=f"re-enable it, or choose one of the registered backends: {', '.join(sorted(schema.backends))}",
        )
    raise ConfigError(
        f"{origin.where(('backend',))}: backend {config.backend!r} is not a registered backend"
        + schema.did_you_mean(config.backend),
        hint=f"backends: {', '.join(sorted(schema.backends))} "
        "(a plugin adds one with the register_backends hook; `tinkerplug plugins --hook register_backends`)",
    )


def _check_objective(config: RunConfig, schema: PluginSchema, origin: ConfigOrigin) -> None:
    """``objective`` must be a name some plugin registered (checked only when plugins are known)."""
    if not schema.objectives or config.objective in schema.objectives:
        return
    raise ConfigError(
        f"{origin.where(('objective',))}: objective {config.objective!r} is not a registered objective"
        + schema.did_you_mean(config.objective, schema.objectives),
        hint=f"objectives: {', '.join(sorted(schema.objectives))} "
        "(a plugin adds one with the register_objectives hook; `tinkerplug plugins --hook register_objectives`)",
    )


def _validate_sections(tables: dict[str, Any], schema: PluginSchema, origin: ConfigOrigin) -> dict[str, BaseModel]:
    parsed: dict[str, BaseModel] = {}
    for name, model in schema.sections.items():
        raw = tables.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin.where((name,))}: {name!r} must be a table ([{name}])")
        try:
            parsed[name] = model.model_validate(raw)
        except ValidationError as exc:
            plugin = schema.owners.get(name)
            raise ConfigError(format_validation(exc, origin, model, prefix=(name,), plugin=plugin)) from None
    return parsed


def _rel(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else (base / path)


def _rel_source(value: Any, base: Path) -> Any:
    """A data path (or each source's) relative to the config file; specs stay as written,
    except a local ``hf:./dir``, which is made absolute too."""
    if isinstance(value, list):
        return [_rel_source(v, base) for v in value]
    if isinstance(value, SourceConfig):
        return value.model_copy(update={"path": _rel_source(value.path, base)})
    if is_spec(value):
        scheme, _, rest = str(value).partition(":")
        name, sep, option = rest.partition(":")
        if name.startswith((".", "~")):  # hf:./saved_dir: a local directory, relative to the file
            name = str(_rel(Path(name), base).resolve())
        return Path(f"{scheme}:{name}{sep}{option}")
    return _rel(value, base)


