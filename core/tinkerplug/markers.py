"""The pluggy markers. Plugins decorate their hook functions with ``@tinkerplug.hookimpl``."""

import pluggy

PROJECT = "tinkerplug"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
