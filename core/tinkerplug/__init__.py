"""tinkerplug: plugin-based LoRA fine-tuning with evaluation on the Tinker training API.

Only light imports here: ``import tinkerplug`` must stay fast so the CLI starts quickly.
"""

from tinkerplug.data import DataSource, Records
from tinkerplug.markers import hookimpl, hookspec

__version__ = "0.1.0"
__all__ = ["DataSource", "Records", "hookimpl", "hookspec", "__version__"]
