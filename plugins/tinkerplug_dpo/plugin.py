"""``objective = "dpo"``: the ``[dpo]`` table and the objective (see ``objective.py``)."""

from __future__ import annotations

from typing import Any

import tinkerplug


def settings_model() -> Any:
    from pydantic import BaseModel, ConfigDict, Field

    class DPOSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        beta: float = Field(0.1, gt=0, description="How far the policy may move from the reference (DPO's beta).")
        nll_coef: float = Field(0.0, ge=0, description="Add this times the chosen replies' NLL per token (DPO + NLL).")

    return DPOSettings


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    register("dpo", settings_model(), result_keys=("beta", "nll_coef"))


@tinkerplug.hookimpl
def register_objectives(register: Any) -> None:
    register("dpo", "preference tuning: DPO on chosen/rejected pairs against a reference (init_from or base)")


@tinkerplug.hookimpl
def make_objective(config: Any, run: Any, data: Any) -> Any:
    if config.objective != "dpo":
        return None
    from tinkerplug_dpo.objective import DPOObjective, check_pair

    for index in data.batch_indices(run.start_step):
        check_pair(data, index)
    return DPOObjective(run, data, config.section("dpo").beta, config.section("dpo").nll_coef)

