"""``backend = "tinker"``: the official SDK's ``ServiceClient``; the service is the distributed
engine. The key comes only from ``TINKER_API_KEY`` (or the SDK's stored credentials), never
from the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import tinkerplug

if TYPE_CHECKING:
    from tinkerplug_tinker.settings import TinkerSettings


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_tinker.settings import TinkerSettings

    register("tinker", TinkerSettings)


@tinkerplug.hookimpl
def register_backends(register: Any) -> None:
    register("tinker", "the Tinker service through the official SDK (TINKER_API_KEY)")


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
