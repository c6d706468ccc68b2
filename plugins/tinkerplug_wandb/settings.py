"""The ``[wandb]`` table: present (any key set) means on.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tinkerplug.errors import PluginError


def wandb_installed() -> bool:
    return importlib.util.find_spec("wandb") is not None


class WandbSettings(BaseModel):
    """The ``[wandb]`` table."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(None, description="Default: on when the [wandb] table sets any key.")
    project: str | None = Field(None, description="W&B project (default: WANDB_PROJECT, else W&B's own).")
    entity: str | None = None
    name: str | None = Field(None, description="Run name shown in W&B; default: the run dir's name.")
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    notes: str | None = None
    mode: Literal["online", "offline", "disabled"] | None = Field(None, description="Default: WANDB_MODE, else online.")

    @model_validator(mode="after")
    def _installed(self) -> "WandbSettings":
        if self.enabled is None:  # resolved here, so config.json says whether it was on
            self.enabled = bool(self.model_fields_set)
        # Checked when the config loads, so a run without wandb fails before its run dir exists.
        if self.enabled and not wandb_installed():
            raise PluginError(
                "the config has a [wandb] table, but the wandb package is not installed",
                hint="pip install 'tinkerplug[wandb]'  (or remove the [wandb] table, or set [wandb] enabled = false)",
            )
        return self
