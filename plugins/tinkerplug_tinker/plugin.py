"""``backend = "tinker"``: the official SDK's ``ServiceClient``; the service is the distributed
engine. The key comes only from ``TINKER_API_KEY`` (or the SDK's stored credentials), never
from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import tinkerplug


class TinkerSettings(BaseModel):
    """The ``[tinker]`` table."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="Tinker API URL; default: TINKER_BASE_URL, else the SDK's.")
    connect_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds for each request of the start-up check (no retries)."
    )
    check_connection: bool = Field(
        True, description="Check URL, key and base model once before training (seconds, not the SDK's 5-minute retries)."
    )
    export_ttl_seconds: int = Field(
        3600, ge=3600, description="Lifetime of the temporary external-weights copy made by `tinkerplug export`."
    )


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    register("tinker", TinkerSettings)


def endpoint(config: Any) -> tuple[str, str]:
    """(base_url, api_key), checked against the service once unless ``check_connection = false``."""
    from tinkerplug_tinker.connect import check_base_model, check_service, resolve_api_key, resolve_base_url

    settings: TinkerSettings = config.section("tinker")
    api_key = resolve_api_key()
    base_url = resolve_base_url(settings.base_url)
    if settings.check_connection:
        check_base_model(config.base_model, check_service(base_url, api_key, settings.connect_timeout))
    return base_url, api_key


@tinkerplug.hookimpl
def create_service_client(config: Any, run_dir: str) -> Any:
    if config.resolved_backend != "tinker":
        return None
    from tinkerplug_tinker.connect import make_service_client

    return make_service_client(*endpoint(config))


@tinkerplug.hookimpl
def fetch_sampler_weights(record: Any, config: Any, dest: str) -> Any:
    if not str(record.state_path).startswith("tinker://"):
        return None
    from tinkerplug_tinker.download import download_adapter

    settings: TinkerSettings = config.section("tinker")
    base_url, api_key = endpoint(config)
    download_adapter(base_url, api_key, record.state_path, Path(dest), settings.export_ttl_seconds)
    return True
