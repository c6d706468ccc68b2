"""Checkpoints on disk. A state is a PEFT adapter dir plus ``optimizer.pt`` and
``tinkerplug_state.json``; sampler weights are a plain PEFT adapter dir. Each is written to a
temporary dir and renamed into place, so a crash never leaves a half-written checkpoint, and an
existing checkpoint is never overwritten."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from tinkerplug.rundir import fsync_dir

STATE_META = "tinkerplug_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEME = "local://"


def to_path(path: str) -> Path:
    """Checkpoint paths are plain directories; ``local://`` in front is accepted too."""
    return Path(path.removeprefix(SCHEME)).expanduser()


class CheckpointStore:
    def __init__(self, root: Path):
        self.root = root

    def new_model_id(self) -> str:
        return f"run-{uuid.uuid4().hex[:10]}"

    def write(self, model_id: str, kind: str, name: str, fill: Callable[[Path], None]) -> str:
        """Create ``root/model_id/kind/name`` atomically with ``fill(tmp_dir)``."""
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"invalid checkpoint name {name!r}")
        final = self.root / model_id / kind / name
        if final.exists():
            raise FileExistsError(f"checkpoint {final} already exists; it is never overwritten")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{name}.tmp-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        try:
            fill(tmp)
            _fsync_dir_files(tmp)
            os.rename(tmp, final)
            fsync_dir(final.parent)  # the rename itself survives a power cut
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return str(final)


def write_adapter(dest: Path, peft_model: Any, adapter: str, base_location: str) -> None:
    """A standard PEFT adapter dir that ``PeftModel.from_pretrained(base, dest)`` loads."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(peft_model, adapter_name=adapter, save_embedding_layers=False)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(dest / "adapter_model.safetensors"))
    config = peft_model.peft_config[adapter].to_dict()
    config["base_model_name_or_path"] = base_location  # absolute: the adapter must find its base
    config["inference_mode"] = True
    config["target_modules"] = sorted(config["target_modules"]) if config.get("target_modules") else None
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")


def read_state_meta(path: str) -> dict[str, Any]:
    meta_file = to_path(path) / STATE_META
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a local training state (no {STATE_META})")
    return json.loads(meta_file.read_text())


def _fsync_dir_files(directory: Path) -> None:
    for file in directory.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
