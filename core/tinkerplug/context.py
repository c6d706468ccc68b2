"""Moved to ``tinkerplug.hook_types`` (the objects hooks receive and return); this name stays
for plugins that import it."""

from tinkerplug.hook_types import (
    CheckpointRecord, EvalContext, Objective, RunContext, StepBatch, StepExecutor, StepResult, as_step_batch,
)

__all__ = [
    "CheckpointRecord", "EvalContext", "Objective", "RunContext", "StepBatch", "StepExecutor", "StepResult", "as_step_batch",
]
