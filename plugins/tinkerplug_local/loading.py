"""Finding and loading a base model: a shipped short name, an HF model dir, or a hub name."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinkerplug.errors import BackendError
from tinkerplug.models import shipped_model_dir, shipped_models

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ModelSource:
    name: str  # as the user wrote it
    location: str  # absolute dir, or a hub id


def resolve_model(name: str) -> ModelSource:
    """Map ``base_model`` to where its files are. Checks what can be checked without loading."""
    shipped = shipped_model_dir(name)
    if shipped is not None:
        return ModelSource(name, str(shipped.resolve()))
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not path.is_dir():
            raise BackendError(f"base_model {name!r}: {path} is not a model directory")
        if not (path / "config.json").is_file():
            raise BackendError(f"base_model {name!r}: {path} has no config.json", hint="point base_model at a Hugging Face model directory")
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            raise BackendError(
                f"base_model {name!r}: {path} has no weights ({', '.join(WEIGHT_FILES[:1])} or pytorch_model.bin)",
                hint="a model dir needs config.json, weights and tokenizer files",
            )
        return ModelSource(name, str(path.resolve()))
    if "/" not in name or os.environ.get("HF_HUB_OFFLINE") == "1":
        local = ", ".join(shipped_models()) or "none"
        offline = " (HF_HUB_OFFLINE=1: the hub is not consulted)" if "/" in name else ""
        raise BackendError(
            f"unknown base_model {name!r}{offline}",
            hint=f"use a shipped model ({local}), a local model directory, or a hub id like Qwen/Qwen3-8B",
        )
    return ModelSource(name, name)  # a hub id: transformers downloads it (needs a network)


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} requested but CUDA is not available", hint='set [local] device = "cpu"')
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        # bf16 halves memory on GPUs; CPUs are exact and fast enough in fp32 for small models.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model_and_tokenizer(source: ModelSource, device: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one the user watches
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype)
    except OSError as exc:
        raise BackendError(f"could not load base_model {source.name!r}: {exc}") from exc
    model.to(device)
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
