"""The docs site documents what the code does: every hook with its exact signature, the
generated reference pages match the code, the plugin-authoring example works as printed
(datasette's approach: docs that drift fail CI), and `mkdocs build --strict` is clean."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from tinkerplug.hook_docs import hook_signature, hookspec_functions

DOCS = ROOT / "docs"
REGENERATE = "regenerate the reference pages with `python scripts/gen_docs.py`"


def page(rel: str) -> str:
    path = DOCS / rel
    assert path.is_file(), f"docs/{rel} is missing"
    return path.read_text(encoding="utf-8")


def python_block(text: str, first_line: str) -> str:
    """The ```python block of ``text`` whose first line is ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(found) == 1, f"docs: expected one python block starting with {first_line!r}"
    return found[0]


@pytest.mark.parametrize("name, func", hookspec_functions(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_hook_is_documented_with_its_signature(name, func):
    reference = page("reference/hooks.md")
    assert f"### `{name}`" in reference, f"hook {name} is missing from docs/reference/hooks.md; {REGENERATE}"
    assert f"\n{hook_signature(name, func)}\n" in reference, (
        f"docs/reference/hooks.md shows another signature for {name} than hookspecs.py "
        f"({hook_signature(name, func)}); {REGENERATE}"
    )


def test_the_reference_documents_no_hook_that_does_not_exist():
    documented = re.findall(r"^### `(\w+)`", page("reference/hooks.md"), re.M)
    assert documented == [name for name, _ in hookspec_functions()], REGENERATE


@pytest.mark.slow  # a pytest run of its own: the docs' test as a plugin author runs it
def test_the_authoring_example_plugin_runs_and_its_test_passes(tmp_path, tinkerplug_runner):
    """The docs' plugin and its test (on the ``tinkerplug.testing`` harness), copied verbatim,
    pass in a fresh directory."""
    (tmp_path / "reply_length.py").write_text(python_block(page("how-to/write-a-plugin.md"), "# reply_length.py"))
    (tmp_path / "test_reply_length.py").write_text(python_block(page("how-to/test-plugins.md"), "# test_reply_length.py"))
    # -p names the harness as a conftest.py would: a venv installed before its pytest11 entry
    # point existed has no entry point (the same name, so with one it registers once).
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tinkerplug.testing", "test_reply_length.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    listing = tinkerplug_runner.invoke("plugins", "--json", "--hook", "evaluate", "-p", "reply_length.py", cwd=tmp_path)
    assert listing.json()[0]["name"] == "project:reply_length"


def test_generated_reference_pages_match_the_code():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gen_docs import stale_pages
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert stale_pages() == [], REGENERATE


def test_mkdocs_build_is_strictly_clean(tmp_path):
    """Broken links, pages missing from the nav and nav entries without a page all fail."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _quickstart_table():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import quickstart_table
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return quickstart_table


def test_the_quickstart_table_is_what_the_script_prints_for_the_recorded_run():
    qt = _quickstart_table()
    assert qt.docs_block() in page("tutorial/quickstart.md"), (
        "docs/tutorial/quickstart.md's table is not what scripts/quickstart_table.py prints for "
        "examples/quickstart/recorded/; run `python scripts/quickstart_table.py --update-docs`"
    )


@pytest.mark.slow
def test_a_fresh_quickstart_prefix_logs_the_recorded_numbers(tmp_path):
    """The quickstart's first 50 steps (its warmup: the LR does not depend on num_steps there, nor
    the data order) log the recorded run's losses and step-0 evals: exactly on a machine like the
    recorded one (CPU model and flags, cores, threads, torch), to 1e-4 elsewhere (see the quickstart page)."""
    import asyncio

    import torch

    from tinkerplug.cli import load_run_config
    from tinkerplug.training import train

    qt = _quickstart_table()
    recorded = qt.read_metrics(qt.RECORDED)
    machine = json.loads((qt.RECORDED / "machine.json").read_text())
    overrides = (f"run_dir={tmp_path / 'run'}", "num_steps=60", "eval_every=0", "save_every=0", "terminal.quiet=true")
    config, plugins = load_run_config(str(qt.CONFIG), overrides, ())
    asyncio.run(train(config, plugins))
    fresh = {row["step"]: row for row in qt.read_metrics(tmp_path / "run")}
    same_machine = (machine["cpus"] == os.cpu_count() and machine["torch"] == torch.__version__
                    and machine["threads"] == torch.get_num_threads() and machine.get("cpu") == qt.cpu_identity())
    for old in recorded:
        if old["step"] >= config.section("schedule").warmup_steps:
            break
        keys = [k for k in old if k == "train/loss" or k == "lr" or (old["step"] == 0 and k.startswith("eval/"))]
        for key in keys:
            new = fresh[old["step"]][key]
            if same_machine:
                assert new == old[key], f"step {old['step']} {key}: fresh {new!r}, recorded {old[key]!r}"
            else:
                assert new == pytest.approx(old[key], rel=1e-4, abs=1e-6), f"step {old['step']} {key}"


def test_the_readme_stays_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150, "the README is a paragraph, two commands, an example and links: docs go in docs/"
    targets = re.findall(r"\]\(([^)#\s]+)", readme)
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert targets and not missing, f"README links to missing files: {missing}"
