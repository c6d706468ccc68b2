"""Putting a run together: its plugins, then its config (the plugins add config tables and
backends), and for commands that work on a run dir, the same from ``RUN_DIR/config.json``.

Light at import (the CLI imports it at start-up): pydantic and the config model load inside.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinkerplug.errors import ConfigError, PluginError, TinkerplugError
from tinkerplug.plugins import hook_error

if TYPE_CHECKING:
    from tinkerplug.config import PluginSchema, RunConfig
    from tinkerplug.plugins import Plugins


def plugin_schema(plugins: Plugins) -> PluginSchema:
    """Ask every plugin for its config tables and backends; two may not claim the same name."""
    from tinkerplug.config import PluginSchema

    schema = PluginSchema()
    owner = _CurrentPlugin()

    def register_section(
        name: str, model: Any, result_keys: tuple[str, ...] | list[str] = (), top_level: dict[str, str] | None = None
    ) -> None:
        _claim(schema.owners, name, owner.name, f"config table [{name}]")
        schema.sections[name] = model
        top_level = top_level or {}
        unknown = [k for k in [*result_keys, *top_level.values()] if k not in getattr(model, "model_fields", {})]
        if unknown:
            raise PluginError(f"plugin {owner.name!r}: {unknown} are not keys of [{name}]")
        schema.result_keys += [f"{name}.{key}" for key in result_keys]
        for old, key in top_level.items():
            _claim(schema.moved_owners, old, owner.name, f"the top-level key {old!r}")
            schema.moved[old] = (name, key)

    def register_backend(name: str, description: str = "") -> None:
        _claim(schema.backend_owners, name, owner.name, f"backend {name!r}")
        schema.backends[name] = description

    def register_objective(name: str, description: str = "") -> None:
        _claim(schema.objective_owners, name, owner.name, f"objective {name!r}")
        schema.objectives[name] = description

    hooks = {"register_config_sections": (plugins.register_config_sections(), register_section),
             "register_backends": (plugins.register_backends(), register_backend),
             "register_objectives": (plugins.register_objectives(), register_objective)}
    for hook, (calls, register) in hooks.items():
        for owner.name, call in calls:
            try:
                call(register=register)
            except PluginError:
                raise
            except Exception as exc:  # e.g. its settings module fails to import
                raise hook_error(owner.name, hook, exc) from exc
    return schema


class _CurrentPlugin:
    """Which plugin's ``register`` call is running, so a clash names both plugins."""

    name = "?"


def _claim(owners: dict[str, str], name: str, plugin: str, what: str) -> None:
    if name in owners and owners[name] != plugin:
        raise PluginError(
            f"plugins {owners[name]!r} and {plugin!r} both register {what}",
            hint=f"disable one with -p no:{plugin}",
        )
    owners[name] = plugin


def split_plugin_options(options: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """``-p ./file.py`` loads a file; ``-p no:NAME`` disables a plugin."""
    files = [o for o in options if not o.startswith("no:")]
    return files, [o[3:] for o in options if o.startswith("no:")]


def load_plugins_for(config_path: str | None, overrides: tuple[str, ...], plugin_options: tuple[str, ...]):
    """The plugins a run of CONFIG would use: entry points, the config's ``plugins`` files and
    ``-p`` files, minus ``disable_plugins`` and ``-p no:NAME``. Returns (plugins, raw config)."""
    from tinkerplug.plugin_loader import load_plugins

    raw: dict[str, Any] = {}
    base_dir = None
    if config_path is not None:
        base_dir = Path(config_path).parent.resolve()
        raw = _read_raw(Path(config_path), overrides)
    for key in ("plugins", "disable_plugins"):
        if not isinstance(raw.get(key, []), list) or not all(isinstance(v, str) for v in raw.get(key, [])):
            raise ConfigError(f"{config_path}: {key} must be a list of strings, e.g. {key} = [\"...\"]")
    files, disabled = split_plugin_options(plugin_options)
    config_files = raw.get("plugins", [])
    if any(o.split("=", 1)[0].strip() == "plugins" for o in overrides):  # --set plugins=[...]: like -p
        config_files, files = [], [*config_files, *files]
    plugins = load_plugins(
        files=config_files,
        disabled=[*raw.get("disable_plugins", []), *disabled],
        base_dir=base_dir,
        cli_files=files,
    )
    return plugins, raw


def _read_raw(path: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    """The TOML as written plus ``--set``s (an unreadable file is reported by ``load_config``)."""
    from tinkerplug.config import apply_override, parse_override  # pydantic: only when needed

    if not path.is_file():
        return {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError:
        return {}
    for override in overrides:
        apply_override(raw, *parse_override(override))
    return raw


def load_run_config(config_path: str, overrides: tuple[str, ...], plugin_options: tuple[str, ...]):
    """Config + plugins of a run: the config names plugin files, the plugins add config tables
    and backends. Returns (config, plugins)."""
    from tinkerplug.config import load_config

    plugins, _ = load_plugins_for(config_path, overrides, plugin_options)
    plugins.check_required()
    config = load_config(Path(config_path), list(overrides), plugin_schema(plugins), plugins.disabled)
    for text in config.deprecations:  # old key names: said once, where the file is read
        plugins.warn(config, text)
    return config, plugins


def load_saved_run(
    run_dir: Path, overrides: tuple[str, ...] | list[str] = (), plugin_options: tuple[str, ...] | list[str] = ()
) -> tuple[RunConfig, Plugins]:
    """The ``RunConfig`` a run dir was started with (its ``config.json``, plus ``--set``
    ``overrides``) and the installed plugins (plus ``-p`` files and ``no:NAME``), for commands
    that work on a finished or running run (``export``, ``eval``, ``chat``).

    The project plugin files of the run are not loaded, and tables of plugins no longer
    installed are dropped: such commands need the backend and evaluators, not a project's hooks.
    """
    from tinkerplug.config import ConfigOrigin, RunConfig, apply_override, build_config, parse_override
    from tinkerplug.plugin_loader import load_plugins

    file = run_dir / "config.json"
    if not file.is_file():
        raise TinkerplugError(f"{run_dir} has no config.json: cannot tell which backend wrote its checkpoints")
    text = file.read_text(encoding="utf-8")
    data = json.loads(text)
    original = data.get("config_file")
    files, disabled = split_plugin_options(plugin_options)
    plugins = load_plugins(disabled=[*data.get("disable_plugins", []), *disabled], cli_files=files)
    schema = plugin_schema(plugins)
    # What the run wrote beside its config (data_counts, config_file) and tables of plugins
    # gone are dropped.
    data = {k: v for k, v in data.items() if k in RunConfig.model_fields or k in schema.sections}
    data["plugins"] = []
    origin = ConfigOrigin(file, text)
    for override in overrides:
        key, value = parse_override(override)
        apply_override(data, key, value)
        origin.overrides[".".join(key)] = override.strip()
    config = build_config(data, origin, schema, plugins.disabled)
    if original:  # paths in plugin tables (inspect tasks, [nll] data) are relative to the TOML file
        config._source = Path(original)
    return config, plugins
