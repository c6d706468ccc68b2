"""Run unmodified Tinker scripts offline: route ``tinker.ServiceClient`` to the local backend.

Two ways in:

- ``tinkerplug_local.patch()`` in code, before the script creates its ``ServiceClient``;
- ``tinkerplug local -- python my_script.py``, which puts :data:`SITECUSTOMIZE_DIR` on
  ``PYTHONPATH``; its ``sitecustomize.py`` calls :func:`install_import_hook`, which patches
  ``tinker`` the moment it is first imported. Python processes that never import ``tinker``
  pay nothing (no torch, no SDK import at start-up).

Besides ``tinker.ServiceClient``, :func:`patch` teaches the cookbook about the shipped models:
``tokenizer_utils.get_tokenizer("tiny-chat")`` loads the shipped tokenizer (no hub), and
``model_info.get_recommended_renderer_name("tiny-chat")`` answers the renderer the model was
trained with (from its ``tinkerplug.json``), so recipes that look both up run unchanged.
"""

from __future__ import annotations

import functools
import importlib.abc
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

SITECUSTOMIZE_DIR = Path(__file__).parent / "sitecustomize_dir"
"""A directory holding only ``sitecustomize.py``: put it first on ``PYTHONPATH`` to patch a child."""

# What patch() replaced, to put back on unpatch(): (namespace, attribute, original value).
_replaced: list[tuple[Any, str, Any]] = []


def patch() -> None:
    """Make ``tinker.ServiceClient`` the local one; register the shipped models with the cookbook.

    Also replaces ``ServiceClient`` in modules that already ran ``from tinker import
    ServiceClient``. Idempotent; :func:`unpatch` undoes it.
    """
    _teach_cookbook()
    import tinker

    from tinkerplug_local.service import ServiceClient

    if tinker.ServiceClient is ServiceClient:
        return
    original = tinker.ServiceClient
    _replace(tinker, "ServiceClient", ServiceClient)
    for name, module in list(sys.modules.items()):
        # The SDK's own modules keep the real class: its internals refer to it there.
        if name.startswith("tinker.") or name == "tinker":
            continue
        if getattr(module, "__dict__", {}).get("ServiceClient") is original:
            _replace(module, "ServiceClient", ServiceClient)


def unpatch() -> None:
    """Put back everything :func:`patch` replaced."""
    while _replaced:
        owner, name, value = _replaced.pop()
        setattr(owner, name, value)
    for name in _registered_tokenizers:
        _unregister_tokenizer(name)
    _registered_tokenizers.clear()


def is_patched() -> bool:
    import tinker

    return tinker.ServiceClient.__module__ == "tinkerplug_local.service"


def _replace(owner: Any, name: str, value: Any) -> None:
    _replaced.append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


# -- the cookbook -------------------------------------------------------------------------------

_registered_tokenizers: list[str] = []


def _teach_cookbook() -> None:
    """Shipped tokenizers and renderers for the cookbook. Idempotent; needs no torch."""
    try:
        from tinker_cookbook import model_info, tokenizer_utils
    except ImportError:  # the cookbook is optional
        return
    if hasattr(model_info.get_model_attributes, "tinkerplug_local"):
        return
    from tinkerplug.models import shipped_models

    for name, directory in shipped_models().items():
        if not tokenizer_utils.is_tokenizer_registered(name):
            tokenizer_utils.register_tokenizer(name, functools.partial(_load_tokenizer, str(directory)))
            _registered_tokenizers.append(name)
    _replace(model_info, "get_model_attributes", _model_attributes_with_local(model_info.get_model_attributes))


def _unregister_tokenizer(name: str) -> None:
    from tinker_cookbook import tokenizer_utils

    tokenizer_utils.unregister_tokenizer(name)


@functools.cache
def _load_tokenizer(directory: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def _model_attributes_with_local(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """``get_model_attributes`` that also knows shipped models and local model dirs that carry
    a ``tinkerplug.json`` naming their renderer; everything else goes to the cookbook's table."""

    @functools.wraps(original)
    def get_model_attributes(model_name: str) -> Any:
        from tinker_cookbook.model_info import ModelAttributes

        from tinkerplug.models import model_metadata, shipped_model_dir

        name = model_name.split(":", 1)[0]
        if shipped_model_dir(name) is not None or Path(name).expanduser().is_dir():
            renderer = model_metadata(name).get("renderer")
            if renderer:
                return ModelAttributes(
                    organization="local",
                    version_str=Path(name).name,
                    size_str="local",
                    is_chat=True,
                    recommended_renderers=(renderer,),
                )
        return original(model_name)

    get_model_attributes.tinkerplug_local = True  # type: ignore[attr-defined]
    return get_model_attributes


# -- patching on first import (used by `tinkerplug local`) --------------------------------------


def install_import_hook() -> None:
    """Patch ``tinker`` as soon as it is imported (now, if it already is). Idempotent."""
    if "tinker" in sys.modules:
        patch()
        return
    if not any(isinstance(finder, _PatchTinkerOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchTinkerOnImport())


class _PatchTinkerOnImport(importlib.abc.MetaPathFinder):
    """Finds ``tinker`` with the other finders and runs :func:`patch` right after it loads, so
    even ``from tinker import ServiceClient`` in the script gets the local class."""

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != "tinker":
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        else:
            return None
        if spec.loader is None:
            return None
        spec.loader = _PatchAfterLoad(spec.loader)
        return spec


class _PatchAfterLoad(importlib.abc.Loader):
    def __init__(self, loader: Any):
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PatchTinkerOnImport)]
        if _local_backend_initializing():
            # The backend itself imported tinker (`import tinkerplug_local.service` first): it
            # cannot be imported again before it finishes, so swap the class on first use.
            _teach_cookbook()
            _patch_on_first_access(module)
        else:
            patch()

    def __getattr__(self, name: str) -> Any:  # resource readers and the like
        return getattr(self._loader, name)


def _local_backend_initializing() -> bool:
    return any(
        name.startswith("tinkerplug_local.") and getattr(getattr(module, "__spec__", None), "_initializing", False)
        for name, module in list(sys.modules.items())
    )


def _patch_on_first_access(tinker: ModuleType) -> None:
    """Take ``ServiceClient`` out of ``tinker`` until someone asks for it (``tinker.ServiceClient``
    or ``from tinker import ServiceClient``); that first access runs :func:`patch`."""
    original = tinker.__dict__.pop("ServiceClient")
    previous = tinker.__dict__.get("__getattr__")

    def __getattr__(name: str) -> Any:
        if name != "ServiceClient":
            if previous is not None:
                return previous(name)
            raise AttributeError(f"module 'tinker' has no attribute {name!r}")
        tinker.ServiceClient = original
        if previous is not None:
            tinker.__getattr__ = previous
        else:
            del tinker.__getattr__
        patch()
        return tinker.ServiceClient

    tinker.__getattr__ = __getattr__  # type: ignore[attr-defined]
