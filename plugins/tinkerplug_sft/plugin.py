"""``objective = "sft"``: each step trains ``cross_entropy`` on the step's rendered examples
(the records ``render_example`` made, batched by the core's plan)."""

from __future__ import annotations

from typing import Any

import tinkerplug
from tinkerplug.hook_types import StepBatch


class SupervisedObjective:
    def __init__(self, data: Any):
        self.data = data

    async def batch(self, step: int) -> StepBatch:
        return StepBatch(self.data.batch(step))


@tinkerplug.hookimpl
def register_objectives(register: Any) -> None:
    register("sft", "supervised: cross_entropy on the rendered examples (default)")


@tinkerplug.hookimpl
def make_objective(config: Any, data: Any) -> Any:
    return SupervisedObjective(data) if config.objective == "sft" else None
