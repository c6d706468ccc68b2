"""The README documents what the code does: every hook with its exact signature, and the
plugin-authoring example works as printed (datasette's approach: docs that drift fail CI)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, write_config
from tinkerplug.hook_docs import hook_signature, hookspec_functions

README = ROOT / "README.md"
REGENERATE = "regenerate the README's hooks section with `tinkerplug hooks --markdown`"


def section(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- section: {name} -->(.*?)<!-- /section: {name} -->", text, re.S)
    assert match, f"README.md has no `{name}` section"
    return match.group(1)


def python_block(text: str, first_line: str) -> str:
    """The ```python block of ``text`` whose first line is ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(found) == 1, f"README: expected one python block starting with {first_line!r}"
    return found[0]


@pytest.mark.parametrize("name, func", hookspec_functions(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_hook_is_documented_with_its_signature(name, func):
    reference = section("hooks")
    assert f"### `{name}`" in reference, f"hook {name} is missing from the README hook reference; {REGENERATE}"
    assert f"\n{hook_signature(name, func)}\n" in reference, (
        f"the README shows another signature for {name} than hookspecs.py "
        f"({hook_signature(name, func)}); {REGENERATE}"
    )


def test_the_reference_documents_no_hook_that_does_not_exist():
    documented = re.findall(r"^### `(\w+)`", section("hooks"), re.M)
    assert documented == [name for name, _ in hookspec_functions()], REGENERATE


def test_the_authoring_example_plugin_runs_and_its_test_passes(tmp_path):
    """The README's plugin and its test, copied verbatim, pass in a fresh directory."""
    guide = section("plugins")
    (tmp_path / "reply_length.py").write_text(python_block(guide, "# reply_length.py"))
    (tmp_path / "test_reply_length.py").write_text(python_block(guide, "# test_reply_length.py"))
    write_config(tmp_path, "enabled = false\n", batch_size=4)  # appended to [heldout]: only this evaluator runs
    bin_dir = str(Path(sys.executable).parent)  # where `tinkerplug` is installed
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_reply_length.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "tinkerplug.cli", "plugins", "--json", "--hook", "evaluate", "-p", "reply_length.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert json.loads(listing.stdout)[0]["name"] == "project:reply_length"
