"""Loading plugins: entry points, then project files, minus the disabled ones; every
implementation checked against the hookspecs.

Load order is precedence. pluggy calls the last registered plugin first, so for
``firstresult`` hooks a later plugin overrides an earlier one:

1. first-party plugins (entry points of the ``tinkerplug`` distribution), by name;
2. installed third-party plugins (entry points of any other distribution), by name;
3. project files: ``plugins = [...]`` in the config, then ``-p FILE`` on the command line.

So a project file beats an installed plugin, which beats a first-party one. ``-p no:NAME`` /
``disable_plugins`` keep a plugin from being imported at all. Plugin modules are imported
here, at start-up of every command: they must keep heavy imports inside their functions.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Iterable

import pluggy

from tinkerplug.errors import PluginError
from tinkerplug.hook_docs import hook_names
from tinkerplug.hookspecs import UNWRAPPABLE_HOOKS
from tinkerplug.plugins import PluginInfo, Plugins

ENTRY_POINT_GROUP = "tinkerplug"
FIRST_PARTY_DIST = "tinkerplug"
PROJECT_PREFIX = "project:"


def load_entry_points(plugins: Plugins, entry_points: Iterable[importlib.metadata.EntryPoint]) -> None:
    for ep in _load_order(entry_points):
        if ep.name in plugins.disabled or ep.name in plugins.info:
            continue
        dist = _dist_name(ep)
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
            raise PluginError(
                f"plugin {ep.name!r} (distribution {dist or 'unknown'}, {ep.value}) failed to "
                f"import: {type(exc).__name__}: {exc}",
                hint=f"reinstall or fix that package, or skip it with -p no:{ep.name}",
            ) from exc
        kind = "first-party" if dist == FIRST_PARTY_DIST else "third-party"
        version = ep.dist.version if ep.dist else None
        plugins.register(module, PluginInfo(ep.name, kind, dist, version, ep.value))


def load_file(plugins: Plugins, path: str | Path, base_dir: Path | None = None) -> str:
    """Import a project ``.py`` file as plugin ``project:<stem>``; return that name."""
    file = Path(path).expanduser()
    if not file.is_absolute() and base_dir is not None:
        file = base_dir / file
    file = file.resolve()
    name = PROJECT_PREFIX + file.stem
    if name in plugins.disabled:
        return name
    if name in plugins.info and plugins.info[name].source == str(file):
        return name  # named in the config and with -p: load once
    if not file.is_file():
        raise PluginError(
            f"plugin file {path} not found (looked at {file})",
            hint="paths in `plugins` are relative to the config file; -p paths to the current directory",
        )
    module_name = f"tinkerplug_project_{file.stem}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # In sys.modules before it runs, like any import: dataclasses and pickling look it up.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001
        sys.modules.pop(module_name, None)
        raise PluginError(
            f"plugin file {file} failed to import: {type(exc).__name__}: {exc}",
            hint=f"run `python {file}` to see the full error",
        ) from exc
    plugins.register(module, PluginInfo(name, "project", None, None, str(file)))
    return name


def check(plugins: Plugins) -> None:
    """Reject what pluggy would silently accept: a hookimpl that matches no hookspec (a
    typo would never be called), and wrappers on hooks called one plugin at a time."""
    for name in plugins.info:
        plugin = plugins.pm.get_plugin(name)
        for attr in dir(plugin):
            opts = plugins.pm.parse_hookimpl_opts(plugin, attr)
            if opts is None or opts.get("optionalhook"):
                continue
            hook = opts.get("specname") or attr
            if not hasattr(plugins.pm.hook, hook) or getattr(plugins.pm.hook, hook).spec is None:
                close = difflib.get_close_matches(hook, hook_names(), n=1)
                raise PluginError(
                    f"plugin {name!r} ({plugins.info[name].source}) implements unknown hook {hook!r}"
                    + (f"; did you mean {close[0]!r}?" if close else ""),
                    hint="`tinkerplug hooks` lists the hook names and their arguments",
                )
    try:
        plugins.pm.check_pending()  # the same rule, as pluggy states it; kept as a backstop
    except pluggy.PluginValidationError as exc:
        plugin_name = plugins.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
        raise PluginError(f"plugin {plugin_name!r}: {exc}", hint="see `tinkerplug hooks`") from None
    for caller in plugins.pm.hook.__dict__.values():
        if not isinstance(caller, pluggy.HookCaller) or caller.name not in UNWRAPPABLE_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: {caller.name} is called one plugin at a time, "
                    "so it cannot be wrapped (wrapper=True / hookwrapper=True)",
                    hint="implement it as a plain hook; use tryfirst=True / trylast=True to order it",
                )


def _load_order(entry_points: Iterable[importlib.metadata.EntryPoint]) -> list[importlib.metadata.EntryPoint]:
    """First-party first, then third-party, each by name: registration order is precedence."""
    return sorted(entry_points, key=lambda ep: (_dist_name(ep) != FIRST_PARTY_DIST, ep.name))


def _dist_name(ep: importlib.metadata.EntryPoint) -> str | None:
    return ep.dist.name if ep.dist is not None else None


def load_plugins(
    files: Iterable[str] = (),
    disabled: Iterable[str] = (),
    base_dir: Path | None = None,
    cli_files: Iterable[str] = (),
) -> Plugins:
    """Build the plugin manager: entry points, then project files, minus the disabled ones.

    ``files`` come from the config (relative to ``base_dir``); ``cli_files`` from ``-p``
    (relative to the current directory). Raises ``PluginError`` for a plugin that fails to
    import, implements an unknown hook, or a disabled name that matches no plugin.
    """
    plugins = Plugins()
    plugins.disabled = set(disabled)
    entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    load_entry_points(plugins, entry_points)
    file_names = [load_file(plugins, f, base_dir) for f in files]
    file_names += [load_file(plugins, f, Path.cwd()) for f in cli_files]
    known = {ep.name for ep in entry_points} | set(file_names)
    unknown = sorted(plugins.disabled - known)
    if unknown:
        close = {n: difflib.get_close_matches(n, known, n=1) for n in unknown}
        suggestions = "; ".join(f"did you mean no:{c[0]}?" for c in close.values() if c)
        raise PluginError(
            f"cannot disable unknown plugin(s): {', '.join(unknown)}" + (f" ({suggestions})" if suggestions else ""),
            hint=f"plugin names: {', '.join(sorted(known))} (`tinkerplug plugins` lists them)",
        )
    check(plugins)
    return plugins


def load_command_plugins() -> Plugins:
    """The installed plugins, for ``register_commands`` at CLI start-up: entry points only,
    and a plugin that fails to import is left out (so a broken plugin cannot take
    ``tinkerplug --help`` or ``-p no:NAME`` down with it; the commands that load plugins for
    real report it)."""
    plugins = Plugins()
    for ep in _load_order(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
        try:
            load_entry_points(plugins, [ep])
        except PluginError:
            continue
    return plugins


def first_party_implementers() -> dict[str, list[str]]:
    """Hook -> the first-party plugins (entry points of the tinkerplug distribution) that
    implement it, by name."""
    plugins = load_plugins()
    found: dict[str, list[str]] = {}
    for name in sorted(plugins.info):
        if plugins.info[name].distribution == FIRST_PARTY_DIST:
            for hook in plugins.hooks_of(name):
                found.setdefault(hook, []).append(name)
    return found
