"""What an OpenAI-compatible request's ``model`` names: a sampler, its tokenizer and chat renderer.

``model`` is written as the service takes it (Tinker docs, "OpenAI-Compatible API"): a base
model id (``tiny-chat``, a local model dir), a ``tinker://<run>/sampler_weights/<name>`` path
(the LoRA of that checkpoint is applied), or ``BASE;PATH``. Opened samplers are kept in a small
LRU cache, so a client that sends the same ``model`` on every request does not reload the
adapter each time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from tinkerplug_local.server.http import HTTPError

CACHED_SAMPLERS = 8


class OAIError(HTTPError):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(status, message)
        self.param = param
        self.code = code


@dataclass
class OAIModel:
    name: str  # as the client sent it
    base_model: str
    model_path: str | None  # tinker:// sampler path, or None for the base model
    client: Any  # tinkerplug_local.sampling.SamplingClient
    tokenizer: Any
    renderer: Any | None  # a cookbook renderer; None: the tokenizer's chat template (or no chat)


class OAIModels:
    """The samplers opened for OpenAI-compatible requests, by ``model`` string (LRU)."""

    def __init__(self, state: Any):
        self.state = state
        self._cache: OrderedDict[str, OAIModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: Any, who: Any) -> OAIModel:
        """The sampler ``name`` names, for principal ``who``. Runs off the event loop: loading a
        base model or an adapter takes a while."""
        if not isinstance(name, str) or not name.strip():
            raise OAIError(400, "model: give a base model id, a tinker://<run>/sampler_weights/<name> path, or BASE;PATH", "model")
        self._check_owner(name, who)  # before the cache: a sampler one key opened is not another's
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None:
                self._cache.move_to_end(name)
        if cached is not None and (cached.model_path is None or self._still_there(cached)):
            return cached
        model = self._open(name)
        with self._lock:
            self._cache[name] = model
            while len(self._cache) > CACHED_SAMPLERS:
                self._cache.popitem(last=False)  # the local client frees its adapter when dropped
        return model

    def _check_owner(self, name: str, who: Any) -> None:
        """404, as for a missing checkpoint, when the path in ``name`` is another key's run and
        not published."""
        from tinkerplug_local.server.paths import PathError

        path = name.partition(";")[2] if ";" in name else name
        if not path.startswith("tinker://"):
            return  # a base model: shared by every key
        try:
            run, kind, name_ = self.state.paths.parse(path)
            if not self.state.is_public(run, kind, name_):
                self.state.check_run(run, who)
        except PathError as exc:
            raise OAIError(400, f"model: {exc}", "model") from None
        except FileNotFoundError:
            raise OAIError(404, f"model {name!r} is not available on this server", "model", "model_not_found") from None

    def _still_there(self, model: OAIModel) -> bool:
        """False once the checkpoint was deleted or expired (the lookup sweeps expired ones)."""
        try:
            self.state.paths.to_local(model.model_path)
            return True
        except (FileNotFoundError, ValueError):
            with self._lock:
                self._cache.pop(model.name, None)
            return False

    def forget_run(self, run: str) -> None:
        """Drop cached samplers of ``run`` (its checkpoints were deleted or expired)."""
        with self._lock:
            for key in [k for k, m in self._cache.items() if m.model_path and m.model_path.startswith(f"tinker://{run}/")]:
                del self._cache[key]

    def _open(self, name: str) -> OAIModel:
        base, _, path = name.partition(";") if ";" in name else ("", "", name)
        if not path.startswith("tinker://"):
            base, path = base or path, ""
        local = self._sampler_dir(path) if path else None
        from tinkerplug.errors import TinkerplugError

        try:
            if not local:
                self.state.check_base_model(base)
            future = self.state.service.create_sampling_client(model_path=local, base_model=None if local else base)
            client = future.result()
        except (TinkerplugError, ValueError, FileNotFoundError, KeyError, OSError, NotImplementedError) as exc:
            raise OAIError(404, f"model {name!r} is not available on this server: {exc}", "model", "model_not_found") from None
        served_base = client.get_base_model()
        if base and local and base not in (served_base, _short_name(served_base)):
            raise OAIError(400, f"model: {path} was trained on {served_base!r}, not {base!r}", "model")
        tokenizer = client.get_tokenizer()
        return OAIModel(name, base or served_base, path or None, client, tokenizer, chat_renderer(base or served_base, tokenizer))

    def _sampler_dir(self, path: str) -> str:
        from tinkerplug_local.server.paths import PathError

        try:
            run, kind, _ = self.state.paths.parse(path)
            if kind != "sampler_weights":
                raise PathError(f"{path} is a {kind} checkpoint; the OpenAI-compatible API samples from sampler_weights")
            return str(self.state.paths.to_local(path))
        except PathError as exc:
            raise OAIError(400, f"model: {exc}", "model") from None
        except FileNotFoundError as exc:
            raise OAIError(404, f"model: {exc}", "model", "model_not_found") from None


def _short_name(base_model: str) -> str:
    from pathlib import Path

    return Path(base_model).name


def chat_renderer(base_model: str, tokenizer: Any) -> Any | None:
    """The cookbook renderer the model was trained with (its ``tinkerplug.json``, else the
    cookbook's table), or None when neither knows the model."""
    from tinkerplug.models import model_metadata

    name = model_metadata(base_model).get("renderer") or model_metadata(_short_name(base_model)).get("renderer")
    try:
        from tinker_cookbook import model_info, renderers

        name = name or model_info.get_recommended_renderer_name(base_model)
        return renderers.get_renderer(name, tokenizer)
    except Exception:  # noqa: BLE001 - unknown to the cookbook: the tokenizer's template, if any
        return None


def base_models(state: Any) -> list[str]:
    """The base models this server can load (shipped) and has loaded."""
    names = {m.model_name for m in state.service.get_server_capabilities().supported_models}
    names |= {m.base_model for m in list(state.models.values())}
    return sorted(names)
