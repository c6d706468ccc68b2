"""The embedded local backend: the Tinker client surface, in process, on torch + transformers + peft.

``tinkerplug_local.ServiceClient`` is a drop-in for ``tinker.ServiceClient``;
``tinkerplug_local.patch()`` routes ``tinker.ServiceClient`` to it for unmodified scripts.
Imports here stay lazy: the plugin entry point must not pull in torch.
"""

import os
from typing import Any

from tinkerplug.environ import quiet_openmp

# Before torch loads (~50x measured when cores are shared), so on import of this package.
quiet_openmp(os.environ)

__all__ = ["ServiceClient", "patch", "unpatch"]


def __getattr__(name: str) -> Any:
    if name == "ServiceClient":
        from tinkerplug_local.service import ServiceClient

        return ServiceClient
    if name in ("patch", "unpatch"):
        from tinkerplug_local import dropin

        return getattr(dropin, name)
    raise AttributeError(name)
