"""Run unmodified Tinker scripts offline: route ``tinker.ServiceClient`` to the local backend."""

from __future__ import annotations

from typing import Any

_original: Any = None


def patch() -> None:
    """Make ``tinker.ServiceClient`` the local one and register shipped tokenizers with the
    cookbook, so ``get_tokenizer("tiny-chat")`` works offline. Idempotent."""
    global _original
    import tinker

    from tinkerplug_local.service import ServiceClient

    if _original is None:
        _original = tinker.ServiceClient
    tinker.ServiceClient = ServiceClient  # type: ignore[misc]
    _register_tokenizers()


def unpatch() -> None:
    global _original
    import tinker

    if _original is not None:
        tinker.ServiceClient = _original  # type: ignore[misc]
        _original = None


def _register_tokenizers() -> None:
    try:
        from tinker_cookbook import tokenizer_utils
    except ImportError:
        return
    from tinkerplug.models import shipped_models

    for name, directory in shipped_models().items():

        def factory(directory: Any = directory) -> Any:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(directory))

        tokenizer_utils.register_tokenizer(name, factory)
