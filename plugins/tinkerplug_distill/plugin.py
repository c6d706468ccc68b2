"""``objective = "distill"``: the ``[distill]`` table, the teacher and the objective (see
``objective.py``)."""

from __future__ import annotations

from typing import Any

import tinkerplug
from tinkerplug.errors import ConfigError


def settings_model() -> Any:
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class DistillSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")

        teacher: str | None = Field(None, description="A base model name, a run dir (RUN_DIR[:STEP]) or a sampler/state checkpoint path.")
        mode: Literal["off_policy", "on_policy", "top_k"] = Field(
            "off_policy", description="off_policy: SFT on the teacher's samples; on_policy: the student samples, "
            "the teacher's logprobs give a reverse-KL advantage per token; top_k: the teacher's top-k next-token "
            "distribution on the training records as soft targets."
        )
        top_k: int = Field(8, gt=0, description="top_k: next tokens per position the teacher gives.")
        samples_per_prompt: int = Field(1, gt=0, description="Samples of each prompt per step.")
        max_tokens: int = Field(16, gt=0)
        temperature: float = Field(1.0, gt=0)
        kl_coef: float = Field(1.0, gt=0, description="on_policy: advantage = -kl_coef * (student - teacher logprob).")

    return DistillSettings


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    model = settings_model()
    register("distill", model, result_keys=tuple(model.model_fields))


@tinkerplug.hookimpl
def register_objectives(register: Any) -> None:
    register("distill", "distillation from a teacher: SFT on its samples, or on-policy reverse KL")


@tinkerplug.hookimpl
def make_objective(config: Any, run: Any, data: Any) -> Any:
    if config.objective != "distill":
        return None
    from tinkerplug_distill.objective import DistillObjective
    from tinkerplug_distill.teacher import open_teacher

    settings = config.section("distill")
    if not settings.teacher:
        raise ConfigError(
            "objective 'distill' needs a teacher: [distill] teacher is not set",
            hint='e.g. [distill] teacher = "runs/quickstart" (a run dir), a checkpoint path or a base model name',
        )
    from tinkerplug import rollouts

    rollouts.check_prompts(data, run.start_step, "distill")
    return DistillObjective(run, data, settings, open_teacher(settings.teacher, run))
