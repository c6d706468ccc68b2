"""User-facing errors: the CLI prints these as one message and exits non-zero, no traceback."""

from __future__ import annotations


class TinkerplugError(Exception):
    """An error caused by input the user can fix. ``hint`` says what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TinkerplugError):
    """The config file or a ``--set`` override is invalid."""


class DataError(TinkerplugError):
    """A data file is missing, malformed, or renders to nothing trainable."""


class PluginError(TinkerplugError):
    """A plugin failed to load or a plugin hook raised."""

    exit_code = 3


class BackendError(TinkerplugError):
    """The backend could not be created or reached."""

    exit_code = 4
