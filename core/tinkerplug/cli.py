"""The ``tinkerplug`` command. Imports nothing heavy at start-up: each command imports what it
needs, so ``tinkerplug --help`` and ``tinkerplug plugins`` stay fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tinkerplug.environ import quiet_openmp
from tinkerplug.errors import TinkerplugError

# Re-exported: tests and plugins' own tests assemble runs with these.
from tinkerplug.assemble import load_plugins_for, load_run_config  # noqa: F401

if __name__ == "__main__":
    # `python -m tinkerplug.cli` puts the current directory first on sys.path: a stray
    # tinkerplug_*.py there would be imported in place of an installed plugin (and plugins
    # load below, for their commands). Plugin files load only when named (-p, `plugins =
    # [...]`), so the current directory goes before anything is imported.
    if sys.path and not sys.flags.safe_path and Path(sys.path[0] or ".").resolve() == Path.cwd().resolve():
        del sys.path[0]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tinkerplug")
def cli() -> None:
    """LoRA fine-tuning with evaluation on the Tinker API, built from plugins."""


@cli.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. --set lora_rank=8 --set heldout.limit=20.")
@click.option("--resume", is_flag=True, help="Continue the run in run_dir from its last checkpoint.")
@click.option("-p", "plugin_options", multiple=True, metavar="FILE|no:NAME", help="Load a plugin file, or disable a plugin with no:NAME.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes ([terminal] quiet = true).")
def run(config_path: str, overrides: tuple[str, ...], resume: bool, plugin_options: tuple[str, ...], quiet: bool) -> None:
    """Train (and evaluate) as CONFIG says."""
    import asyncio

    from tinkerplug.training import train

    command = _resume_command(config_path, overrides, plugin_options)
    if resume:
        overrides = (*overrides, "resume=true")
    if quiet:  # the terminal reporter's setting; ignored when it is disabled (-p no:terminal)
        overrides = (*overrides, "terminal.quiet=true")
    config, plugins = load_run_config(config_path, overrides, plugin_options)
    summary = asyncio.run(train(config, plugins, resume_command=command))
    if summary.get("interrupted"):
        sys.exit(130)


def _resume_command(config_path: str, overrides: tuple[str, ...], plugin_options: tuple[str, ...]) -> str:
    """The user's own command line plus ``--resume``: the same config, overrides and plugins."""
    import shlex

    args = ["tinkerplug", "run", config_path, "--resume"]
    for override in overrides:
        args += ["--set", override]
    for option in plugin_options:
        args += ["-p", option]
    return shlex.join(args)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--hook", "hook", default=None, metavar="NAME", help="Only plugins implementing hook NAME, in the order they are called.")
@click.option("-c", "--config", "config_path", default=None, type=click.Path(dir_okay=False), help="Also load the plugin files and disables of this run config.")
@click.option("-p", "plugin_options", multiple=True, metavar="FILE|no:NAME", help="Load a plugin file, or disable a plugin with no:NAME (as for `run`).")
def plugins_cmd(as_json: bool, hook: str | None, config_path: str | None, plugin_options: tuple[str, ...]) -> None:
    """List the registered plugins in call order: distribution, version and hooks.

    Plugins are called last-registered first: project files, then installed third-party
    plugins, then first-party ones. For a firstresult hook the first non-None answer wins.
    """
    import json

    from tinkerplug.errors import ConfigError
    from tinkerplug.hook_docs import hook_names

    if config_path is not None and not Path(config_path).is_file():
        raise ConfigError(f"config file {config_path} not found", hint="-c takes the run's TOML config file")
    plugins, _ = load_plugins_for(config_path, (), plugin_options)
    if hook is not None:
        if hook not in hook_names():
            raise TinkerplugError(f"no hook named {hook!r}", hint="`tinkerplug hooks` lists them")
        names = [impl.plugin_name for impl in plugins.impls(hook)]
    else:
        names = plugins.call_order()
    rows = [
        {
            "name": name,
            "kind": plugins.info[name].kind,
            "distribution": plugins.info[name].distribution,
            "version": plugins.info[name].version,
            "source": plugins.info[name].source,
            "hooks": plugins.hooks_of(name),
        }
        for name in names
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    wide = max([len(r["name"]) for r in rows] + [4])
    origins = [f"{r['distribution']} {r['version']}" if r["distribution"] else r["source"] for r in rows]
    origin_wide = max([len(o) for o in origins] + [12])
    click.echo(f"{'NAME':<{wide}}  {'KIND':<11}  {'DISTRIBUTION':<{origin_wide}}  HOOKS")
    for row, origin in zip(rows, origins):
        click.echo(f"{row['name']:<{wide}}  {row['kind']:<11}  {origin:<{origin_wide}}  {', '.join(row['hooks'])}")
    if plugins.disabled:
        click.echo(f"disabled: {', '.join(sorted(plugins.disabled))}")


@cli.command("hooks")
@click.argument("name", required=False)
@click.option("--markdown", is_flag=True, help="Print the hook reference page (docs/reference/hooks.md).")
@click.option("--table", is_flag=True, help="Print the summary table: hook, phase, firstresult, required, first-party implementers.")
def hooks_cmd(name: str | None, markdown: bool, table: bool) -> None:
    """Print every hookspec (or hook NAME) with its signature and documentation."""
    import inspect

    from tinkerplug.hook_docs import hook_phases, hook_reference_markdown, hook_signature, hookspec_functions, is_firstresult, summary_table
    from tinkerplug.plugin_loader import first_party_implementers

    if markdown or table:
        implementers = first_party_implementers()
        click.echo(hook_reference_markdown(implementers) if markdown else summary_table(implementers) + "\n", nl=False)
        return
    specs = hookspec_functions()
    if name:
        specs = [(n, f) for n, f in specs if n == name]
        if not specs:
            raise TinkerplugError(f"no hook named {name!r}", hint="`tinkerplug hooks` lists them")
    phases, heading = hook_phases(), None
    for hook_name, func in specs:
        if phases.get(hook_name) != heading and not name:
            heading = phases.get(hook_name)
            click.echo(f"== {heading} ==\n")
        first = "  [firstresult]" if is_firstresult(func) else ""
        click.echo(f"{hook_signature(hook_name, func)}{first}")
        click.echo("    " + (inspect.getdoc(func) or "").replace("\n", "\n    ").replace("\n    \n", "\n\n") + "\n")


def _add_plugin_commands() -> None:
    """Commands of installed plugins (``register_commands``): entry points only, since project
    files are named by a config or ``-p`` that is not parsed yet. A plugin that fails to import
    is skipped here; a command that loads plugins reports it."""
    from tinkerplug.plugin_loader import load_command_plugins

    for error in load_command_plugins().register_commands(cli):
        click.echo(f"warning: {error.message}; its commands are missing", err=True)


_add_plugin_commands()


DEBUG_ENV = "TINKERPLUG_DEBUG"


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Errors the user can fix print one message and exit non-zero; anything else
    prints one line and how to see the traceback (``TINKERPLUG_DEBUG=1``, which shows every
    traceback)."""
    quiet_openmp(os.environ)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        cli.main(args=argv, standalone_mode=False)
    except TinkerplugError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug (ours or a plugin's), not bad input
        if debug:
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0]
        click.echo(
            f"error: unexpected {type(exc).__name__}: {first_line}\n"
            f"  rerun with {DEBUG_ENV}=1 for the traceback (and please report it)",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
