"""``tinkerplug export RUN_DIR --out DIR``: a checkpoint's LoRA adapter as a standard PEFT adapter
dir, or with ``--merge`` the base model with the adapter merged in (a plain HF model dir).

The weights exported are the sampler weights of the checkpoint, which are what the run's
evaluations sampled from. Local checkpoints are directories and are copied; a backend whose
checkpoints live elsewhere fetches them (``fetch_sampler_weights`` hook; ``tinker``
downloads through the SDK). The output is written next to ``--out`` and renamed into place:
an interrupted export leaves no half-written directory, and an existing one is never touched.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import click

from tinkerplug.errors import TinkerplugError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
EXPORT_INFO = "tinkerplug_export.json"


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="New directory to write (must not exist, or be empty).")
@click.option("--step", type=int, default=None, help="Checkpoint step (default: the last checkpoint).")
@click.option("--merge", is_flag=True, help="Write the base model with the adapter merged in, plus its tokenizer.")
def export(run_dir: Path, out: Path, step: int | None, merge: bool) -> None:
    """Export a checkpoint of RUN_DIR as a PEFT adapter (or, with --merge, a merged HF model)."""
    from tinkerplug.run_info import read_run
    from tinkerplug.rundir import pick_checkpoint

    info = read_run(run_dir)
    record = pick_checkpoint(info.checkpoints, step, info.path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TinkerplugError(
            f"--out {out} already exists and is not empty; nothing was written",
            hint="choose a new directory, or remove that one first",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        adapter = tmp / "adapter" if merge else tmp
        adapter.mkdir(exist_ok=True)
        fetch_adapter(record, info.path, adapter)
        base = json.loads((adapter / ADAPTER_FILES[0]).read_text())["base_model_name_or_path"]
        if merge:
            merge_adapter(base, adapter, tmp)
            shutil.rmtree(adapter)
        (tmp / EXPORT_INFO).write_text(
            json.dumps(
                {"run_dir": str(info.path), "step": record["step"], "sampler_path": record["sampler_path"],
                 "state_path": record["state_path"], "base_model": base, "merged": merge},
                indent=2,
            ) + "\n"
        )
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if merge:
        click.echo(f"wrote the step-{record['step']} model (base {base} + LoRA, merged) to {out}")
        click.echo(f"  load with: AutoModelForCausalLM.from_pretrained({str(out)!r})")
    else:
        click.echo(f"wrote the step-{record['step']} LoRA adapter to {out}")
        click.echo(f"  load with: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}), {str(out)!r})")
        if _lora_on_tied_head(base, out):
            click.echo(TIED_HEAD_NOTE)


TIED_HEAD_NOTE = (
    "  note: PEFT will warn that the model has `tie_word_embeddings=True` and a tied layer is part of the\n"
    "  adapter. Expected: the LoRA on lm_head (train_unembed) changes the output layer only, as in\n"
    "  training; the input embeddings stay the base model's and the logits equal the run's sampler's.\n"
    "  Only merging it into the shared weight would change both, so --merge unties lm_head first."
)


def _lora_on_tied_head(base: str, adapter: Path) -> bool:
    """Whether PEFT will warn about a tied layer in the adapter (base config + adapter config)."""
    try:
        config = json.loads((Path(base) / "config.json").read_text())
        targets = json.loads((adapter / ADAPTER_FILES[0]).read_text()).get("target_modules") or []
    except (OSError, ValueError):
        return False  # a hub id or an unreadable config: nothing to say
    tied = config.get("tie_word_embeddings", config.get("text_config", {}).get("tie_word_embeddings", False))
    return bool(tied) and "lm_head" in targets


def fetch_adapter(record: dict[str, Any], run_dir: Path, dest: Path) -> None:
    """Sampler weights into ``dest``: copied when they are a local dir, else fetched by the
    backend's plugin."""
    local = Path(str(record["sampler_path"]).removeprefix("local://")).expanduser()
    if local.is_dir():
        missing = [f for f in ADAPTER_FILES if not (local / f).is_file()]
        if missing:
            raise TinkerplugError(f"sampler weights {local} lack {', '.join(missing)}: not a PEFT adapter dir")
        for name in ADAPTER_FILES:
            shutil.copy2(local / name, dest / name)
        return
    if "://" not in str(record["sampler_path"]):
        raise TinkerplugError(
            f"the step-{record['step']} sampler weights {local} are gone",
            hint=f"{run_dir / 'checkpoints.jsonl'} lists the checkpoints; export another with --step",
        )
    from tinkerplug.hook_types import CheckpointRecord

    from tinkerplug.assemble import load_saved_run

    config, plugins = load_saved_run(run_dir)
    done = plugins.fetch_sampler_weights(CheckpointRecord(**record), config, str(dest))
    if not done:
        raise TinkerplugError(
            f"no plugin can fetch the weights at {record['sampler_path']}",
            hint="`tinkerplug plugins --hook fetch_sampler_weights` lists the plugins that can",
        )
    missing = [f for f in ADAPTER_FILES if not (dest / f).is_file()]
    if missing:
        raise TinkerplugError(f"the fetched weights lack {', '.join(missing)}: not a PEFT adapter")


def merge_adapter(base: str, adapter: Path, dest: Path) -> None:
    """Base model + adapter -> one HF model dir (weights, config, tokenizer) in ``dest``."""
    import os
    import warnings

    from tinkerplug.environ import quiet_openmp

    quiet_openmp(os.environ)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(base)
    except OSError as exc:
        raise TinkerplugError(f"--merge: could not load the base model {base!r}: {exc}") from None
    if getattr(model.config, "tie_word_embeddings", False):
        # LoRA on the unembedding merges into lm_head.weight; when it is tied to the input
        # embeddings the merge would change them too. Give lm_head its own copy first.
        output = model.get_output_embeddings()
        output.weight = type(output.weight)(output.weight.detach().clone(), requires_grad=False)
        model.config.tie_word_embeddings = False
        if hasattr(model.config, "get_text_config"):
            model.config.get_text_config().tie_word_embeddings = False
    with warnings.catch_warnings():
        # lm_head is untied above, so PEFT's tied-layer warning no longer applies to this merge
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*", category=UserWarning)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    meta = Path(base) / "tinkerplug.json"  # the renderer a shipped model was trained with
    if meta.is_file():
        shutil.copy2(meta, dest / meta.name)
