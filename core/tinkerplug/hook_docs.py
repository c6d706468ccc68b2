"""The hook reference, from ``hookspecs.py`` itself: every hookspec function in definition
order, its signature as written, its docstring, and its phase (``hookspecs.PHASES``), for
``tinkerplug hooks`` and the docs (``tinkerplug hooks --markdown``)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from tinkerplug import hookspecs
from tinkerplug.markers import PROJECT


def hookspec_functions() -> list[tuple[str, Callable[..., Any]]]:
    """Every hookspec function, in the order ``hookspecs.py`` defines them."""
    return [
        (name, func)
        for name, func in vars(hookspecs).items()
        if callable(func) and hasattr(func, f"{PROJECT}_spec")
    ]


def hook_phases() -> dict[str, str]:
    """Hook name -> ``"phase: when"`` (``hookspecs.PHASES``), e.g. ``"open: the run dir exists"``."""
    return {hook: f"{phase}: {when}" for phase, when, hooks in hookspecs.PHASES for hook in hooks}


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


def hook_reference_markdown(implementers: dict[str, list[str]]) -> str:
    """The hook reference page, generated from ``hookspecs.py`` (``tinkerplug hooks
    --markdown``): the summary table, then each hook by phase; tests/test_docs.py fails when
    the docs lack a hook or signature. ``implementers``: hook -> first-party plugins
    (``plugin_loader.first_party_implementers()``)."""
    parts, phases, heading = [summary_table(implementers) + "\n"], hook_phases(), None
    for name, func in hookspec_functions():
        if phases.get(name) != heading:
            heading = phases.get(name)
            parts.append(f"**{heading[0].upper()}{heading[1:]}**\n")  # one line per phase
        kind = "firstresult: the first non-`None` answer wins" if is_firstresult(func) else "every plugin is called"
        parts.append(f"### `{name}`\n\n```python\n{hook_signature(name, func)}\n```\n\n*{kind}*\n\n{inspect.getdoc(func)}\n")
    return "\n".join(parts)


def summary_table(implementers: dict[str, list[str]]) -> str:
    """Markdown: hook, phase, firstresult, required, first-party implementers (in call order)."""
    rows = ["| hook | phase | firstresult | required | first-party implementers |", "|---|---|---|---|---|"]
    for phase, _, hooks in hookspecs.PHASES:
        for hook in hooks:
            func = getattr(hookspecs, hook)
            rows.append(
                f"| `{hook}` | {phase} | {'yes' if is_firstresult(func) else 'no'} | "
                f"{'yes' if hook in hookspecs.REQUIRED_HOOKS else 'no'} | {', '.join(implementers.get(hook, [])) or '-'} |"
            )
    return "\n".join(rows)
