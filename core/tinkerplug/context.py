"""Moved to ``tinkerplug.hook_types`` (the objects hooks receive and return); this name stays
for plugins that import it."""

from tinkerplug.hook_types import CheckpointRecord, EvalContext, RunContext, StepExecutor, StepResult

__all__ = ["CheckpointRecord", "EvalContext", "RunContext", "StepExecutor", "StepResult"]
