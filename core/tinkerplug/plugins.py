"""Loading plugins and calling hooks with errors that name the plugin.

Load order (later wins for ``firstresult`` hooks, since pluggy calls the last registered
first): first-party plugins (entry points of the ``tinkerplug`` distribution), then installed
third-party plugins (entry points of other distributions, by name), then project files named
in the config or with ``-p``. ``-p no:NAME`` / ``disable_plugins`` skip a plugin.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pluggy

from tinkerplug import hookspecs
from tinkerplug.errors import PluginError
from tinkerplug.markers import PROJECT

ENTRY_POINT_GROUP = "tinkerplug"
FIRST_PARTY_DIST = "tinkerplug"


@dataclass
class PluginInfo:
    name: str
    kind: str  # "first-party" | "third-party" | "project"
    distribution: str | None
    version: str | None
    source: str  # module name or file path


class Plugins:
    """A pluggy ``PluginManager`` plus what the CLI and loop need around it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}

    # -- loading -----------------------------------------------------------------------------

    def register(self, plugin: Any, info: PluginInfo) -> None:
        if info.name in self.info:
            raise PluginError(
                f"two plugins are named {info.name!r} ({self.info[info.name].source} and {info.source})",
                hint="rename one of them, or disable one with -p no:NAME",
            )
        self.pm.register(plugin, name=info.name)
        self.info[info.name] = info

    def load_entry_points(self, disabled: set[str]) -> None:
        eps = sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
            # first-party first, then third-party by name: registration order is precedence
            key=lambda ep: (_dist_name(ep) != FIRST_PARTY_DIST, ep.name),
        )
        for ep in eps:
            if ep.name in disabled or ep.name in self.info:
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
            self.register(module, PluginInfo(ep.name, kind, dist, version, ep.value))

    def load_file(self, path: str | Path, base_dir: Path | None = None) -> None:
        file = Path(path).expanduser()
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        file = file.resolve()
        if not file.is_file():
            raise PluginError(
                f"plugin file {path} not found (looked at {file})",
                hint="paths in `plugins` are relative to the config file; -p paths to the current directory",
            )
        name = f"project:{file.stem}"
        spec = importlib.util.spec_from_file_location(f"tinkerplug_project_{file.stem}", file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001
            raise PluginError(
                f"plugin file {file} failed to import: {type(exc).__name__}: {exc}",
                hint="run `python " + str(file) + "` to see the full error",
            ) from exc
        self.register(module, PluginInfo(name, "project", None, None, str(file)))

    def check(self) -> None:
        """Reject hook implementations that match no hookspec (a typo would be ignored)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin_name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            raise PluginError(
                f"plugin {plugin_name!r}: {exc}",
                hint="see `tinkerplug hooks` for the hook names and their arguments",
            ) from exc

    # -- calling -----------------------------------------------------------------------------

    def first(self, hook: str, **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook; a raising plugin is named in the error."""
        caller = getattr(self.pm.hook, hook)
        try:
            return caller(**kwargs)
        except PluginError:
            raise
        except Exception as exc:
            raise self._attribute(hook, exc) from exc

    def each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of a fan-out hook, in call order, one at a time.

        Returns ``(plugin_name, result)`` pairs. A raising plugin is named in the error.
        """
        results = []
        for impl in self.impls(hook):
            args = {k: kwargs[k] for k in impl.argnames}
            try:
                results.append((impl.plugin_name, impl.function(**args)))
            except PluginError:
                raise
            except Exception as exc:
                raise hook_error(impl.plugin_name, hook, exc) from exc
        return results

    async def each_async(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Like ``each`` but awaits results that are awaitable."""
        results = []
        for impl in self.impls(hook):
            args = {k: kwargs[k] for k in impl.argnames}
            try:
                value = impl.function(**args)
                if inspect.isawaitable(value):
                    value = await value
                results.append((impl.plugin_name, value))
            except PluginError:
                raise
            except Exception as exc:
                raise hook_error(impl.plugin_name, hook, exc) from exc
        return results

    def impls(self, hook: str) -> list[pluggy.HookImpl]:
        """Implementations of ``hook`` in call order (the order pluggy calls them)."""
        return list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))

    def _attribute(self, hook: str, exc: BaseException) -> PluginError:
        codes = {impl.function.__code__: impl.plugin_name for impl in self.impls(hook)}
        tb = exc.__traceback__
        culprit = None
        while tb is not None:  # the innermost hook function on the stack raised (or called what did)
            culprit = codes.get(tb.tb_frame.f_code, culprit)
            tb = tb.tb_next
        return hook_error(culprit or "?", hook, exc)

    def hooks_of(self, plugin_name: str) -> list[str]:
        plugin = self.pm.get_plugin(plugin_name)
        return sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])


def hook_error(plugin: str, hook: str, exc: BaseException) -> PluginError:
    if isinstance(exc, PluginError):
        return exc
    from tinkerplug.errors import TinkerplugError

    if isinstance(exc, TinkerplugError):  # the plugin already said what is wrong
        return PluginError(f"plugin {plugin!r}, hook {hook!r}: {exc.message}", exc.hint)
    return PluginError(
        f"plugin {plugin!r} raised in hook {hook!r}: {type(exc).__name__}: {exc}",
        hint=f"fix the plugin, or disable it with -p no:{plugin}",
    )


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
    (relative to the current directory).
    """
    disabled = set(disabled)
    plugins = Plugins()
    plugins.load_entry_points(disabled)
    for file in files:
        plugins.load_file(file, base_dir)
    for file in cli_files:
        plugins.load_file(file, Path.cwd())
    unknown = disabled - {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if unknown:
        raise PluginError(
            f"cannot disable unknown plugin(s): {', '.join(sorted(unknown))}",
            hint="`tinkerplug plugins` lists the installed plugin names",
        )
    plugins.check()
    return plugins

