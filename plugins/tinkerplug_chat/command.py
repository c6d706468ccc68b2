"""``tinkerplug chat RUN_DIR [--step N] [--prompt TEXT] [--base] [--temperature T] [--max-tokens N]``.

Interactive: each line is a user turn, answered with the whole conversation so far; ``/reset``
starts over, ``/quit`` or end of input (Ctrl-D) leaves. ``--prompt`` answers once and exits.
Replies go to stdout, prompts and notes to stderr, so ``chat ... < questions.txt > answers``
works as a script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

HELP = "type a message; /reset starts over, /quit (or Ctrl-D) leaves"


@click.command("chat")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None, help="Checkpoint step (default: the last checkpoint).")
@click.option("--prompt", default=None, help="Answer this one message and exit.")
@click.option("--system", default=None, help="A system message at the start of the conversation.")
@click.option("--base", is_flag=True, help="Also answer with the base model, to compare.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--seed", type=int, default=None, help="Sampling seed (default: random).")
def chat_command(
    run_dir: Path, step: int | None, prompt: str | None, system: str | None, base: bool,
    temperature: float, max_tokens: int, seed: int | None,
) -> None:
    """Chat with a checkpoint of RUN_DIR (multi-turn, the run's renderer)."""
    from tinkerplug.saved import open_checkpoint
    from tinkerplug_chat.session import Conversation, sampling_params

    saved = open_checkpoint(run_dir, step)
    params = sampling_params(saved.renderer, temperature, max_tokens, seed)
    conversations = [Conversation(f"step {saved.record.step}", saved.sampling_client, saved.renderer, params, system=system)]
    if base:
        conversations.append(Conversation("base", saved.base_sampling_client(), saved.renderer, params, system=system))
    try:
        if prompt is not None:
            _turn(conversations, prompt)
        else:
            _interactive(conversations, saved)
    finally:
        saved.close()


def _turn(conversations: list, text: str) -> None:
    from tinkerplug_chat.session import answer

    for label, reply, ok in answer(conversations, text):
        prefix = f"[{label}] " if len(conversations) > 1 else ""
        click.echo(f"{prefix}{reply}")
        if not ok:
            click.echo(f"  ({label}: stopped at --max-tokens before the end of its reply)", err=True)


def _interactive(conversations: list, saved: object) -> None:
    tty = sys.stdin.isatty()
    if tty:
        import readline  # noqa: F401 - line editing and history for input()
    click.echo(f"chatting with {saved.run_dir} step {saved.record.step} ({HELP})", err=True)
    while True:
        try:
            text = input("you> " if tty else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            click.echo("", err=True)
            break
        command = text.strip()
        if not command:
            continue
        if command in ("/quit", "/exit"):
            break
        if command == "/reset":
            for conversation in conversations:
                conversation.reset()
            click.echo("(conversation reset)", err=True)
            continue
        _turn(conversations, text)
