"""Downloading a LoRA adapter from the Tinker service with the SDK.

Sampler weights (``tinker://…/sampler_weights/…``) cannot be downloaded in SDK 0.38; training
states can, the way ``tinker checkpoint download`` does it: load the state into a training
client, ``save_weights_external`` (a Hugging Face / PEFT copy with a TTL), fetch the files
from ``RestClient.get_external_weights_urls``, delete the copy. A state and the sampler
weights saved with it at the same step hold the same LoRA weights.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path
from tinkerplug.errors import BackendError

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def download_adapter(base_url: str, api_key: str, state_path: str, dest: Path, ttl_seconds: int) -> None:
    """Put the LoRA adapter of training state ``state_path`` into ``dest`` (an empty dir)."""
    import tinker

    service = tinker.ServiceClient(base_url=base_url, api_key=api_key)
    status = "errored"
    try:
        training_client = service.create_training_client_from_state(
            state_path, user_metadata={"created_by": "tinkerplug export"}
        ).result()
        export_path = training_client.save_weights_external("tinkerplug-export", ttl_seconds=ttl_seconds).result().path
        rest = tinker.RestClient(base_url=base_url, api_key=api_key)
        try:
            urls = rest.get_external_weights_urls(export_path).result().urls
            _download_all(urls, dest)
        finally:
            try:
                rest.delete_checkpoint_from_tinker_path(export_path).result()
            except Exception:  # noqa: BLE001 - it expires after ttl_seconds anyway
                pass
        status = "success"
    finally:
        service.close(status).result()
    _flatten_adapter(dest)


def _download_all(urls: dict[str, str], dest: Path) -> None:
    base = dest.resolve()
    for name, url in sorted(urls.items()):
        target = (dest / name).resolve()
        if not target.is_relative_to(base):
            raise BackendError(f"the service sent an unsafe file name {name!r}; nothing was kept")
        target.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=120) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)


def _flatten_adapter(dest: Path) -> None:
    """Move the adapter files to the top of ``dest`` when the export nests them."""
    if all((dest / f).is_file() for f in ADAPTER_FILES):
        return
    for config in dest.rglob(ADAPTER_FILES[0]):
        folder = config.parent
        if (folder / ADAPTER_FILES[1]).is_file():
            for item in folder.iterdir():
                shutil.move(str(item), dest / item.name)
            return
    found = ", ".join(sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())) or "nothing"
    raise BackendError(
        f"the service's export is not a PEFT adapter (found: {found})",
        hint=f"the files are left in {dest}",
    )
