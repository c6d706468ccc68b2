"""Loading plugins and calling hooks with errors that name the plugin.

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
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from tinkerplug import hookspecs
from tinkerplug.errors import PluginError
from tinkerplug.markers import PROJECT

ENTRY_POINT_GROUP = "tinkerplug"
FIRST_PARTY_DIST = "tinkerplug"
PROJECT_PREFIX = "project:"

# Hooks a run cannot do without, and what the missing plugin would have done. Checked when a
# run's plugins are loaded, so disabling e.g. the cookbook fails at once, not after the model
# has loaded.
REQUIRED_HOOKS = {
    "create_service_client": "creates the backend client",
    "resolve_renderer": "resolves the chat renderer",
    "render_example": "renders training examples",
    "lr_for_step": "sets the learning rate",
    "make_step_executor": "submits training steps",
}


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
        self.disabled: set[str] = set()

    # -- loading -----------------------------------------------------------------------------

    def register(self, plugin: Any, info: PluginInfo) -> None:
        if info.name in self.info:
            raise PluginError(
                f"two plugins are named {info.name!r} ({self.info[info.name].source} and {info.source})",
                hint="rename one of them, or disable one with -p no:NAME",
            )
        try:
            self.pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:  # e.g. a hookimpl argument the spec lacks
            message, hook = _validation_message(exc)
            spec = dict(hookspec_functions()).get(hook or "")
            raise PluginError(
                f"plugin {info.name!r} ({info.source}): {message}",
                hint=f"the hookspec is {hook_signature(hook, spec)}; an implementation may take any subset of its arguments"
                if spec is not None and hook is not None
                else "`tinkerplug hooks` lists the hooks and their arguments",
            ) from None
        self.info[info.name] = info

    def load_entry_points(self, entry_points: Iterable[importlib.metadata.EntryPoint]) -> None:
        # first-party first, then third-party by name: registration order is precedence
        ordered = sorted(entry_points, key=lambda ep: (_dist_name(ep) != FIRST_PARTY_DIST, ep.name))
        for ep in ordered:
            if ep.name in self.disabled or ep.name in self.info:
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

    def load_file(self, path: str | Path, base_dir: Path | None = None) -> str:
        """Import a project ``.py`` file as plugin ``project:<stem>``; return that name."""
        file = Path(path).expanduser()
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        file = file.resolve()
        name = PROJECT_PREFIX + file.stem
        if name in self.disabled:
            return name
        if name in self.info and self.info[name].source == str(file):
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
        self.register(module, PluginInfo(name, "project", None, None, str(file)))
        return name

    def check(self) -> None:
        """Reject what pluggy would silently accept: a hookimpl that matches no hookspec (a
        typo would never be called), and wrappers on hooks the loop calls one plugin at a time."""
        for name in self.info:
            plugin = self.pm.get_plugin(name)
            for attr in dir(plugin):
                opts = self.pm.parse_hookimpl_opts(plugin, attr)
                if opts is None or opts.get("optionalhook"):
                    continue
                if not hasattr(self.pm.hook, attr) or getattr(self.pm.hook, attr).spec is None:
                    close = difflib.get_close_matches(attr, hook_names(), n=1)
                    raise PluginError(
                        f"plugin {name!r} ({self.info[name].source}) implements unknown hook {attr!r}"
                        + (f"; did you mean {close[0]!r}?" if close else ""),
                        hint="`tinkerplug hooks` lists the hook names and their arguments",
                    )
        try:
            self.pm.check_pending()  # the same rule, as pluggy states it; kept as a backstop
        except pluggy.PluginValidationError as exc:
            plugin_name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            raise PluginError(f"plugin {plugin_name!r}: {exc}", hint="see `tinkerplug hooks`") from None
        for caller in self.pm.hook.__dict__.values():
            if not isinstance(caller, pluggy.HookCaller) or caller.spec is None:
                continue
            if caller.spec.opts.get("firstresult"):
                continue
            for impl in caller.get_hookimpls():
                if impl.hookwrapper or impl.wrapper:
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: {caller.name} is called one plugin at a time, "
                        "so it cannot be wrapped (wrapper=True / hookwrapper=True)",
                        hint="implement it as a plain hook; use tryfirst=True / trylast=True to order it",
                    )

    def check_required(self) -> None:
        """Every hook a run needs has an implementation; if not, say which disabled plugin
        probably provided it."""
        for hook, purpose in REQUIRED_HOOKS.items():
            if not self.impls(hook):
                raise PluginError(
                    f"no plugin {purpose} (hook {hook}){self.disabled_note()}",
                    hint=f"re-enable the plugin that provides it (drop it from -p no:NAME / disable_plugins), "
                    f"or load one that implements {hook}: `tinkerplug hooks {hook}`",
                )

    def disabled_note(self) -> str:
        """`` (disabled: a, b)`` for error messages, or ``""`` when nothing is disabled."""
        return f" (disabled: {', '.join(sorted(self.disabled))})" if self.disabled else ""

    # -- calling -----------------------------------------------------------------------------

    def first(self, hook: str, **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook; a raising plugin is named in the error."""
        caller = getattr(self.pm.hook, hook)
        try:
            value = caller(**kwargs)
        except PluginError:
            raise
        except Exception as exc:
            raise self._attribute(hook, exc) from exc
        if inspect.isawaitable(value):
            _reject_awaitable(self._async_impl_of(hook), hook, value)
        return value

    def each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of a fan-out hook, in call order, one at a time.

        Returns ``(plugin_name, result)`` pairs. A raising plugin is named in the error.
        """
        results = []
        for impl in self.impls(hook):
            try:
                value = call_impl(impl, **kwargs)
            except PluginError:
                raise
            except Exception as exc:
                raise hook_error(impl.plugin_name, hook, exc) from exc
            _reject_awaitable(impl.plugin_name, hook, value)
            results.append((impl.plugin_name, value))
        return results

    def impls(self, hook: str) -> list[pluggy.HookImpl]:
        """Implementations of ``hook`` in call order (the order pluggy calls them: last
        registered first, ``tryfirst`` before and ``trylast`` after the rest)."""
        return list(reversed(getattr(self.pm.hook, hook).get_hookimpls()))

    def call_order(self) -> list[str]:
        """Plugin names, the one whose implementations are called first, first."""
        return list(reversed(self.info))

    def _async_impl_of(self, hook: str) -> str:
        """The plugin whose ``async def`` answered a firstresult hook (for the error only)."""
        return next(
            (impl.plugin_name for impl in self.impls(hook) if inspect.iscoroutinefunction(impl.function)), "?"
        )

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


def call_impl(impl: pluggy.HookImpl, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it asks for (as pluggy does)."""
    return impl.function(**{name: kwargs[name] for name in impl.argnames})


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


def _reject_awaitable(plugin: str, hook: str, value: Any) -> None:
    """Only ``evaluate`` is awaited; an ``async def`` elsewhere would silently never run."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # no "never awaited" warning on top of the error
        raise PluginError(
            f"plugin {plugin!r}: hook {hook!r} returned an awaitable, but it is called synchronously",
            hint=f"define {hook} with `def`, not `async def` (only `evaluate` may be async)",
        )


def _validation_message(exc: pluggy.PluginValidationError) -> tuple[str, str | None]:
    """pluggy's message minus its first line (which names the plugin by its repr), and the hook."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    match = re.search(r"for hook '(\w+)'", lines[0]) if lines else None
    return "; ".join(lines[1:] or lines) or type(exc).__name__, match.group(1) if match else None


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
    plugins.load_entry_points(entry_points)
    file_names = [plugins.load_file(f, base_dir) for f in files]
    file_names += [plugins.load_file(f, Path.cwd()) for f in cli_files]
    known = {ep.name for ep in entry_points} | set(file_names)
    unknown = sorted(plugins.disabled - known)
    if unknown:
        close = {n: difflib.get_close_matches(n, known, n=1) for n in unknown}
        suggestions = "; ".join(f"did you mean no:{c[0]}?" for c in close.values() if c)
        raise PluginError(
            f"cannot disable unknown plugin(s): {', '.join(unknown)}" + (f" ({suggestions})" if suggestions else ""),
            hint=f"plugin names: {', '.join(sorted(known))} (`tinkerplug plugins` lists them)",
        )
    plugins.check()
    return plugins


# -- the hook reference (``tinkerplug hooks``, the README) -------------------------------------


def hookspec_functions() -> list[tuple[str, Callable[..., Any]]]:
    """Every hookspec function, in the order ``hookspecs.py`` defines them."""
    return [
        (name, func)
        for name, func in vars(hookspecs).items()
        if callable(func) and hasattr(func, f"{PROJECT}_spec")
    ]


def hook_names() -> list[str]:
    return [name for name, _ in hookspec_functions()]


def is_firstresult(func: Callable[..., Any]) -> bool:
    return bool(getattr(func, f"{PROJECT}_spec").get("firstresult"))


def hook_signature(name: str, func: Callable[..., Any]) -> str:
    """``name(arg: Type, ...) -> Return``, as written in ``hookspecs.py`` (annotations are
    strings there, so they are printed as written, without quotes)."""
    params = []
    for param in inspect.signature(func).parameters.values():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            params.append(param.name)
        else:
            params.append(f"{param.name}: {annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)}")
    result = inspect.signature(func).return_annotation
    returns = "" if result is inspect.Signature.empty else f" -> {result if isinstance(result, str) else inspect.formatannotation(result)}"
    return f"{name}({', '.join(params)}){returns}"


def hook_reference_markdown() -> str:
    """The README's hook reference, generated from ``hookspecs.py`` (``tinkerplug hooks
    --markdown``); tests/test_docs.py fails when the README lacks a hook or signature."""
    parts = []
    for name, func in hookspec_functions():
        kind = "firstresult: the first non-`None` answer wins" if is_firstresult(func) else "every plugin is called"
        parts.append(f"### `{name}`\n\n```python\n{hook_signature(name, func)}\n```\n\n*{kind}*\n\n{inspect.getdoc(func)}\n")
    return "\n".join(parts)
