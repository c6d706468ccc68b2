"""``backend = "tinker"``: the official SDK's ``ServiceClient``; the service is the distributed
engine. The key comes only from ``TINKER_API_KEY`` (never from the config)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict

import tinkerplug
from tinkerplug.errors import BackendError


class TinkerSettings(BaseModel):
    """The ``[tinker]`` table."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None  # default: TINKER_BASE_URL, else the SDK's


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    register("tinker", TinkerSettings)


def api_key() -> str:
    key = os.environ.get("TINKER_API_KEY", "")
    if not key:
        raise BackendError(
            'backend = "tinker" needs TINKER_API_KEY in the environment',
            hint='export TINKER_API_KEY=tml-...  (or use backend = "local")',
        )
    if not key.startswith("tml-"):
        raise BackendError("TINKER_API_KEY does not look like a Tinker key (it must start with 'tml-')")
    return key


@tinkerplug.hookimpl
def create_service_client(config: Any, run_dir: str) -> Any:
    if config.resolved_backend != "tinker":
        return None
    import tinker

    settings: TinkerSettings = config.section("tinker")
    base_url = settings.base_url or os.environ.get("TINKER_BASE_URL") or None
    return tinker.ServiceClient(base_url=base_url, api_key=api_key())
