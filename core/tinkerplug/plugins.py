"""Loading plugins, and calling hooks with errors that name the plugin.

``Plugins`` has one method per hook (``plugins.lr_for_step(step, num_steps, config)``), so
call sites are checked names: fan-out hooks go through pluggy (wrappers work), required
``firstresult`` hooks raise a ``PluginError`` when no plugin answers, and the hooks called
one plugin at a time (``UNWRAPPABLE_HOOKS``) hand out one call per plugin.

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
import functools
import importlib.metadata
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import pluggy

from tinkerplug import hookspecs
from tinkerplug.errors import ConfigError, DataError, PluginError
from tinkerplug.markers import PROJECT

if TYPE_CHECKING:
    import click

    from tinkerplug.config import RunConfig
    from tinkerplug.context import CheckpointRecord, Objective, RunContext, StepExecutor
    from tinkerplug.data import DataSource, Records

ENTRY_POINT_GROUP = "tinkerplug"
FIRST_PARTY_DIST = "tinkerplug"
PROJECT_PREFIX = "project:"

# Hooks a run cannot do without, and what the missing plugin would have done. Checked when a
# run's plugins are loaded, so disabling e.g. the cookbook fails at once, not after the model
# has loaded.
REQUIRED_HOOKS = {
    "create_service_client": "creates the backend client",
    "resolve_renderer": "resolves the chat renderer",
    "load_records": "reads the data files",
    "render_example": "renders training examples",
    "lr_for_step": "sets the learning rate",
    "make_step_executor": "submits training steps",
    "make_objective": "makes the training objective",
}


# Called one implementation at a time, so a wrapper would see no hook call to wrap: each
# evaluator on its own (one failure does not stop the others), the registering hooks (two
# plugins claiming one name are both named), and the commands (a broken plugin cannot take
# the CLI down).
UNWRAPPABLE_HOOKS = (
    "register_config_sections", "register_backends", "register_objectives", "register_rewards", "evaluate",
    "register_commands",
)


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
        for ep in _load_order(entry_points):
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
        typo would never be called), and wrappers on hooks called one plugin at a time."""
        for name in self.info:
            plugin = self.pm.get_plugin(name)
            for attr in dir(plugin):
                opts = self.pm.parse_hookimpl_opts(plugin, attr)
                if opts is None or opts.get("optionalhook"):
                    continue
                hook = opts.get("specname") or attr
                if not hasattr(self.pm.hook, hook) or getattr(self.pm.hook, hook).spec is None:
                    close = difflib.get_close_matches(hook, hook_names(), n=1)
                    raise PluginError(
                        f"plugin {name!r} ({self.info[name].source}) implements unknown hook {hook!r}"
                        + (f"; did you mean {close[0]!r}?" if close else ""),
                        hint="`tinkerplug hooks` lists the hook names and their arguments",
                    )
        try:
            self.pm.check_pending()  # the same rule, as pluggy states it; kept as a backstop
        except pluggy.PluginValidationError as exc:
            plugin_name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            raise PluginError(f"plugin {plugin_name!r}: {exc}", hint="see `tinkerplug hooks`") from None
        for caller in self.pm.hook.__dict__.values():
            if not isinstance(caller, pluggy.HookCaller) or caller.name not in UNWRAPPABLE_HOOKS:
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

    # -- calling: one typed method per hook, in hookspecs.py's order ---------------------------

    def register_config_sections(self) -> list[tuple[str, Callable[..., None]]]:
        """``(plugin_name, call)`` per implementation: call with ``register=``
        (``loading.plugin_schema`` gives each plugin a ``register`` that knows its name)."""
        return self.one_by_one("register_config_sections")

    def register_backends(self) -> list[tuple[str, Callable[..., None]]]:
        """As ``register_config_sections``."""
        return self.one_by_one("register_backends")

    def register_objectives(self) -> list[tuple[str, Callable[..., None]]]:
        """As ``register_config_sections``."""
        return self.one_by_one("register_objectives")

    def create_service_client(self, config: RunConfig, run_dir: str) -> Any:
        service = self.first("create_service_client", config=config, run_dir=run_dir)
        if service is None:  # a plugin problem (disabled or missing), like a missing renderer: exit 3
            raise PluginError(
                f"no plugin provides backend {config.resolved_backend!r}{self.disabled_note()}",
                hint="`tinkerplug plugins --hook register_backends` lists the backends",
            )
        return service

    def load_records(self, source: DataSource, config: RunConfig) -> Records:
        # A reader's DataError already names the file and line: it stays a data error (exit 2).
        records = self._call("load_records", {"source": source, "config": config}, keep=(DataError,))
        if records is None:
            raise PluginError(
                f"no plugin reads {source.what} {source.path}"
                + (f" (format {source.format!r})" if source.format else "")
                + self.disabled_note(),
                hint="`tinkerplug plugins --hook load_records` lists the data readers",
            )
        return records

    def resolve_renderer(self, config: RunConfig, tokenizer: Any) -> Any:
        renderer = self.first("resolve_renderer", config=config, tokenizer=tokenizer)
        if renderer is None:
            raise PluginError(f"no plugin resolved a renderer{self.disabled_note()}", hint="is the cookbook plugin disabled?")
        return renderer

    def render_example(self, example: Mapping[str, Any], renderer: Any, config: RunConfig) -> Any:
        datum = self.first("render_example", example=example, renderer=renderer, config=config)
        if datum is None:
            raise PluginError("no plugin rendered the example (render_example)")
        return datum

    def make_objective(self, config: RunConfig, run: RunContext, data: Any) -> Objective:
        # A plugin's refusal of bad records or settings stays a data/config error (exit 2).
        objective = self._call("make_objective", {"config": config, "run": run, "data": data}, keep=(DataError, ConfigError))
        if objective is None:
            raise PluginError(
                f"no plugin provides objective {config.objective!r}{self.disabled_note()}",
                hint="`tinkerplug plugins --hook register_objectives` lists the objectives",
            )
        return objective

    def register_rewards(self) -> dict[str, tuple[str, Callable[..., Any]]]:
        """Every registered reward: ``{name: (plugin_name, function)}``; two plugins may not
        register the same name."""
        rewards: dict[str, tuple[str, Callable[..., Any]]] = {}
        for plugin, call in self.one_by_one("register_rewards"):
            def register(name: str, function: Callable[..., Any], plugin: str = plugin) -> None:
                if name in rewards:
                    raise PluginError(f"reward {name!r} is registered by plugins {rewards[name][0]!r} and {plugin!r}")
                rewards[name] = (plugin, function)

            try:
                call(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise hook_error(plugin, "register_rewards", exc) from exc
        return rewards

    def make_step_executor(self, config: RunConfig, training_client: Any) -> StepExecutor:
        executor = self.first("make_step_executor", config=config, training_client=training_client)
        if executor is None:
            raise PluginError(
                f"no plugin provides executor {config.executor!r}{self.disabled_note()}",
                hint="executors: sync, pipelined; check `tinkerplug plugins --hook make_step_executor`",
            )
        return executor

    def lr_for_step(self, step: int, num_steps: int, config: RunConfig) -> float:
        lr = self.first("lr_for_step", step=step, num_steps=num_steps, config=config)
        if lr is None:
            raise PluginError("no plugin returned a learning rate (lr_for_step)")
        return float(lr)

    def evaluators(self) -> list[tuple[str, Callable[..., Any]]]:
        """``(plugin_name, call)`` per ``evaluate`` implementation (call with ``context=``):
        evaluators are called one by one, so one that fails is reported and the others run."""
        return self.one_by_one("evaluate")

    def on_checkpoint(self, record: CheckpointRecord, run: RunContext) -> None:
        self.each("on_checkpoint", record=record, run=run)

    def fetch_sampler_weights(self, record: CheckpointRecord, config: RunConfig, dest: str) -> bool:
        return bool(self.first("fetch_sampler_weights", record=record, config=config, dest=dest))

    def on_message(self, text: str, level: str, config: RunConfig) -> None:
        self.each("on_message", text=text, level=level, config=config)

    def note(self, config: RunConfig, text: str) -> None:
        self.on_message(text, "note", config)

    def warn(self, config: RunConfig, text: str) -> None:
        self.on_message(text, "warning", config)

    def on_run_start(self, run: RunContext) -> None:
        self.each("on_run_start", run=run)

    def log_metrics(self, step: int, metrics: Mapping[str, float], run: RunContext) -> None:
        self.each("log_metrics", step=step, metrics=metrics, run=run)

    def on_run_end(self, run: RunContext, summary: Mapping[str, Any]) -> None:
        self.each("on_run_end", run=run, summary=summary)

    def register_commands(self, cli: click.Group) -> list[PluginError]:
        """Let every plugin add its commands; return the errors of those that failed."""
        errors = []
        for name, call in self.one_by_one("register_commands"):
            try:
                call(cli=cli)
            except Exception as exc:  # noqa: BLE001 - reported by plugin name, the others go on
                errors.append(hook_error(name, "register_commands", exc))
        return errors

    # -- how hooks are called: through pluggy, or one plugin at a time (UNWRAPPABLE_HOOKS) -----

    def one_by_one(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """``(plugin_name, call)`` per implementation of ``hook``, in call order."""
        assert hook in UNWRAPPABLE_HOOKS, hook
        return [(impl.plugin_name, functools.partial(call_impl, impl)) for impl in self.impls(hook)]

    def first(self, hook: str, **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook; a raising plugin is named in the error."""
        value = self._call(hook, kwargs)
        if inspect.isawaitable(value):
            _reject_awaitable(self._async_impl_of(hook), hook, value)
        return value

    def each(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of a fan-out hook (through pluggy, so wrappers apply);
        return their results in call order. A raising plugin is named in the error."""
        results = self._call(hook, kwargs)
        for value in results:
            if inspect.isawaitable(value):
                _reject_awaitable(self._async_impl_of(hook), hook, value)
        return results

    def _call(self, hook: str, kwargs: dict[str, Any], keep: tuple[type[Exception], ...] = ()) -> Any:
        try:
            return getattr(self.pm.hook, hook)(**kwargs)
        except (PluginError, *keep):
            raise
        except Exception as exc:
            raise self._attribute(hook, exc) from exc

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


def load_command_plugins() -> Plugins:
    """The installed plugins, for ``register_commands`` at CLI start-up: entry points only,
    and a plugin that fails to import is left out (so a broken plugin cannot take
    ``tinkerplug --help`` or ``-p no:NAME`` down with it; the commands that load plugins for
    real report it)."""
    plugins = Plugins()
    for ep in _load_order(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
        try:
            plugins.load_entry_points([ep])
        except PluginError:
            continue
    return plugins


# -- the hook reference (``tinkerplug hooks``, the README) -------------------------------------


def hookspec_functions() -> list[tuple[str, Callable[..., Any]]]:
    """Every hookspec function, in the order ``hookspecs.py`` defines them."""
    return [
        (name, func)
        for name, func in vars(hookspecs).items()
        if callable(func) and hasattr(func, f"{PROJECT}_spec")
    ]


def hook_groups() -> dict[str, str]:
    """Hook name -> the heading of its group in ``hookspecs.py`` (the ``# -- group: when it
    runs ---`` line above it), e.g. ``"configuration: when a run's config is loaded ..."``."""
    groups, heading = {}, ""
    for line in inspect.getsource(hookspecs).splitlines():
        if match := re.match(r"# -- (.+?) -+$", line):
            heading = match.group(1)
        elif match := re.match(r"def (\w+)\(", line):
            groups[match.group(1)] = heading
    return groups


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
    parts, groups, heading = [], hook_groups(), None
    for name, func in hookspec_functions():
        if groups.get(name) != heading:
            heading = groups.get(name)
            parts.append(f"**{heading[0].upper()}{heading[1:]}**\n")  # one line per phase
        kind = "firstresult: the first non-`None` answer wins" if is_firstresult(func) else "every plugin is called"
        parts.append(f"### `{name}`\n\n```python\n{hook_signature(name, func)}\n```\n\n*{kind}*\n\n{inspect.getdoc(func)}\n")
    return "\n".join(parts)
