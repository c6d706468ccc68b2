"""Every hook has a test that exercises it (datasette's ``test_plugin_hooks_have_tests``).

What counts, read from the tests' source (``ast``), per test function: a hook H is exercised by
``test_x`` when the code of ``test_x``, or of a module-level function or constant of its module
that it uses (by name or as a fixture, followed transitively), does one of

- calls H through a plugin manager: ``plugins.H(...)``, ``pm.hook.H(...)``, or
  ``plugins.first("H", ...)`` / ``each`` / ``impls`` / ``call_each``;
- implements H for the test: a ``def H`` decorated with ``hookimpl`` (or ``specname="H"``), or
  a string holding ``def H(`` / ``async def H(`` (a plugin file the test writes and loads).

A hook that only runs somewhere inside a whole ``tinkerplug run`` does not count: a test must
name it, so that breaking that hook's contract fails a test that says which hook it is.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tinkerplug.hook_docs import hook_names

TESTS = Path(__file__).resolve().parent
BY_NAME_CALLS = {"first", "each", "impls", "call_each"}  # Plugins methods that take the hook's name
PLUGIN_SOURCE_DEF = re.compile(r"(?:async\s+)?def\s+(\w+)\s*\(")


def exercised_in(node: ast.AST, hooks: set[str]) -> set[str]:
    """The hooks ``node``'s own code calls or implements (see the module docstring)."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            if sub.func.attr in hooks:
                found.add(sub.func.attr)
            elif sub.func.attr in BY_NAME_CALLS and sub.args and isinstance(sub.args[0], ast.Constant):
                found.add(str(sub.args[0].value))
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_hookimpl(sub):
            found.add(_specname(sub) or sub.name)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            found.update(PLUGIN_SOURCE_DEF.findall(sub.value))
    return found & hooks


def _is_hookimpl(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("hookimpl" in ast.unparse(decorator) for decorator in func.decorator_list)


def _specname(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    for decorator in func.decorator_list:
        for keyword in getattr(decorator, "keywords", []):
            if keyword.arg == "specname" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
    return None


def hooks_tested_in(source: str, hooks: set[str]) -> dict[str, set[str]]:
    """hook -> names of the test functions of ``source`` that exercise it."""
    module = ast.parse(source)
    top: dict[str, ast.AST] = {}
    for stmt in module.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top[stmt.name] = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                if isinstance(target, ast.Name):
                    top[target.id] = stmt
    by_hook: dict[str, set[str]] = {}
    for name, node in top.items():
        if name.startswith("test_") and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for hook in _exercised_through(node, top, hooks):
                by_hook.setdefault(hook, set()).add(name)
    return by_hook


def _exercised_through(test: ast.AST, top: dict[str, ast.AST], hooks: set[str]) -> set[str]:
    """What ``test`` exercises itself or through the module-level names it uses (fixtures
    included: they are its arguments)."""
    seen, todo, found = {id(test)}, [test], set()
    while todo:
        node = todo.pop()
        found |= exercised_in(node, hooks)
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        used |= {a.arg for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for a in n.args.args}
        for name in used:
            if name in top and id(top[name]) not in seen:
                seen.add(id(top[name]))
                todo.append(top[name])
    return found


def suite_coverage() -> dict[str, set[str]]:
    """hook -> ``file::test`` ids of the suite that exercise it."""
    hooks, coverage = set(hook_names()), {}
    for file in sorted(TESTS.glob("test_*.py")):
        if file.name == Path(__file__).name:
            continue
        for hook, tests in hooks_tested_in(file.read_text(encoding="utf-8"), hooks).items():
            coverage.setdefault(hook, set()).update(f"{file.name}::{t}" for t in tests)
    return coverage


@pytest.fixture(scope="module")
def coverage() -> dict[str, set[str]]:
    return suite_coverage()


@pytest.mark.parametrize("hook", hook_names())
def test_plugin_hooks_have_tests(hook, coverage):
    assert coverage.get(hook), (
        f"no test exercises hook {hook!r}: add one that calls it through the plugin manager "
        f"(plugins.{hook}(...)) or loads a plugin implementing it (see tests/test_hook_coverage.py)"
    )


def test_the_check_fails_for_a_hook_no_test_names():
    """The rule itself: calls and implementations count, for the test that reaches them; a
    whole run that happens to call a hook, a helper no test uses, or a bare mention do not."""
    source = '''
import tinkerplug
PLUGIN = "import tinkerplug\\n@tinkerplug.hookimpl\\ndef on_checkpoint(record, run):\\n    pass\\n"

@tinkerplug.hookimpl(specname="log_metrics")
def my_logger(step):
    pass

def helper(plugins):
    plugins.on_run_end(None, {})

def test_calls(plugins, config):
    plugins.lr_for_step(0, 10, config)
    plugins.first("resolve_renderer", config=config, tokenizer=None)

def test_writes_a_plugin(tmp_path):
    (tmp_path / "p.py").write_text(PLUGIN)

def test_uses_a_wrapper():
    assert my_logger

def test_only_runs(runner):
    runner.run("config.toml")  # calls every run hook, names none
    assert "evaluate" in "make_step_executor"
'''
    hooks = set(hook_names())
    found = hooks_tested_in(source, hooks)
    assert found == {
        "lr_for_step": {"test_calls"},
        "resolve_renderer": {"test_calls"},
        "on_checkpoint": {"test_writes_a_plugin"},
        "log_metrics": {"test_uses_a_wrapper"},
    }
    assert "on_run_end" not in found and "evaluate" not in found and "make_step_executor" not in found
