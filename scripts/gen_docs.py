"""Write the generated reference pages of the docs site from the code:
``docs/reference/hooks.md`` (``hookspecs.py``, as ``tinkerplug hooks --markdown`` prints it) and
``docs/reference/cli.md`` (every command's ``--help``).

    python scripts/gen_docs.py          # rewrite both pages
    python scripts/gen_docs.py --check  # exit 1 when a page is stale (tests/test_docs.py does this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100  # help text wraps at a fixed width, not the terminal's, so the page is reproducible

HOOKS_INTRO = """\
# Hook reference

Generated from `core/tinkerplug/hookspecs.py` by `python scripts/gen_docs.py` (the same text as
`tinkerplug hooks --markdown`; `tinkerplug hooks NAME` prints one hook in the terminal);
`tests/test_docs.py` fails when this page differs from the code. Implement a hook with
`@tinkerplug.hookimpl` and a function of the same name taking any subset of its arguments.
*firstresult* hooks stop at the first plugin that returns something other than `None`; the others
call every plugin. Plugins are called project files first, then installed plugins, then
first-party ones (see [Use plugins](../how-to/use-plugins.md)).

"""

CLI_INTRO = """\
# CLI reference

Generated from the commands' own `--help` by `python scripts/gen_docs.py`; `tests/test_docs.py`
fails when this page differs from the code. Commands added by installed third-party plugins
(`register_commands`) are not listed here: `tinkerplug --help` shows them.
"""


def hooks_page() -> str:
    from tinkerplug.plugins import hook_reference_markdown

    return HOOKS_INTRO + hook_reference_markdown()


def _help(command: click.Command, name: str, parent: click.Context | None) -> str:
    # The command's context_settings (`-h` for help), as `tinkerplug --help` applies them: click
    # caches the help option of a command once invoked, so without them the page would depend
    # on whether a command ran in this process before.
    ctx = click.Context(
        command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH, **command.context_settings
    )
    return command.get_help(ctx)


def _own(command: click.Command) -> bool:
    """A command of this distribution (core or first-party plugin), not a third-party one."""
    module = getattr(command.callback, "__module__", "") or ""
    return module.split(".")[0].startswith("tinkerplug")


def cli_page() -> str:
    from tinkerplug.cli import cli

    root = click.Context(cli, info_name="tinkerplug", terminal_width=WIDTH, max_content_width=WIDTH, **cli.context_settings)
    parts = [CLI_INTRO, f"## `tinkerplug`\n\n```text\n{_help(cli, 'tinkerplug', None)}\n```\n"]
    for name in sorted(cli.commands):
        command = cli.commands[name]
        if _own(command) and not command.hidden:
            parts.append(f"## `tinkerplug {name}`\n\n```text\n{_help(command, name, root)}\n```\n")
    return "\n".join(parts)


PAGES = {"docs/reference/hooks.md": hooks_page, "docs/reference/cli.md": cli_page}


def stale_pages() -> list[str]:
    """The generated pages whose file differs from what the code generates now."""
    stale = []
    for rel, make in PAGES.items():
        path = ROOT / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != make():
            stale.append(rel)
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale pages (exit 1)")
    args = parser.parse_args()
    if args.check:
        stale = stale_pages()
        for rel in stale:
            print(f"stale: {rel} (run: python scripts/gen_docs.py)", file=sys.stderr)
        sys.exit(1 if stale else 0)
    for rel, make in PAGES.items():
        (ROOT / rel).write_text(make(), encoding="utf-8")
        print(f"wrote {rel}")


if __name__ == "__main__":
    main()
