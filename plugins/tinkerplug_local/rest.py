"""The part of ``tinker.RestClient`` that training scripts call on their own checkpoints.

The cookbook asks it for a checkpoint's training run (to compare renderer names on resume) and
deletes rolling checkpoints with it. Anything else raises ``NotImplementedError``.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

from tinker import types

from tinkerplug_local.worker import completed
from tinkerplug_local.store import read_state_meta, to_path


class RestClient:
    def __init__(self, root: Path):
        self._root = root

    def get_training_run_by_tinker_path(self, tinker_path: str, access_scope: str = "owned") -> Any:
        """The run that wrote checkpoint ``tinker_path`` (a state or sampler-weights dir)."""
        directory = to_path(tinker_path)
        state = directory if directory.parent.name == "weights" else directory.parent.parent / "weights" / directory.name
        try:
            meta = read_state_meta(str(state))
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from exc  # what the SDK raises for a path it cannot read
        run = types.TrainingRun(
            training_run_id=directory.parent.parent.name,
            base_model=meta["base_model"],
            model_owner="local",
            is_lora=True,
            lora_rank=meta.get("rank"),
            last_request_time=datetime.datetime.fromtimestamp(state.stat().st_mtime, datetime.timezone.utc),
            user_metadata=meta.get("user_metadata") or None,
        )
        return completed(run)

    async def get_training_run_by_tinker_path_async(self, tinker_path: str, access_scope: str = "owned") -> Any:
        return self.get_training_run_by_tinker_path(tinker_path, access_scope).result()

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> Any:
        """Remove a checkpoint this backend wrote; refuses paths outside its checkpoint dir."""
        directory = to_path(tinker_path).resolve()
        if self._root not in directory.parents or directory.parent.name not in ("weights", "sampler_weights"):
            raise ValueError(f"{tinker_path} is not a checkpoint under {self._root}")
        shutil.rmtree(directory)
        return completed(None)

    async def delete_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return self.delete_checkpoint_from_tinker_path(tinker_path).result()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotImplementedError(
            f"RestClient.{name} is not available on the local backend "
            "(it answers get_training_run_by_tinker_path and delete_checkpoint_from_tinker_path)"
        )
