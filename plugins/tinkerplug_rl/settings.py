"""The ``[rl]`` table."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The Tinker losses that train on sampled tokens with advantages (stable_reinforce samples with
# record_stability_info=True and sends provenance spans).
RL_LOSSES = ("importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce")


def check_loss(value: str) -> str:
    if value not in RL_LOSSES:
        close = difflib.get_close_matches(value, RL_LOSSES, n=1)
        raise ValueError(f"unknown loss {value!r}" + (f"; did you mean {close[0]!r}?" if close else "") + f" (losses: {', '.join(RL_LOSSES)})")
    return value


class RLSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_size: int = Field(8, description="Samples per prompt; advantages are relative to the group (>= 2).")
    groups_per_batch: int | None = Field(None, gt=0, description="Prompts per step: batch_size (set both alike, or leave this out).")
    max_tokens: int = Field(16, gt=0, description="Longest sampled completion, in tokens.")
    temperature: float = Field(1.0, gt=0)
    loss: str = Field("importance_sampling", description=f"A Tinker loss: {', '.join(RL_LOSSES)}.")
    loss_config: dict[str, float] = Field(default_factory=dict, description="The loss's loss_fn_config (e.g. clip thresholds).")
    normalize_std: bool = Field(False, description="Divide advantages by the group's reward std.")
    kl_coef: float = Field(0.0, ge=0, description="Penalty on the sampled tokens' logprob above the reference (init_from or base).")
    kl_every: int = Field(10, ge=0, description="Log KL to the reference every N steps when kl_coef = 0 (0: never).")
    max_staleness: int = Field(0, ge=0, description="Sample with weights up to this many steps old (refreshed every N+1 steps).")
    rewards: dict[str, float] = Field(default_factory=lambda: {"exact_match": 1.0}, description="Reward name -> weight.")
    env: str | None = Field(None, description="A cookbook environment: FILE.py:NAME or module:NAME, NAME(renderer, config) -> RLDatasetBuilder | RLDataset.")

    @field_validator("group_size")
    @classmethod
    def _group(cls, value: int) -> int:
        if value < 2:
            raise ValueError("group_size must be at least 2: advantages are rewards relative to their group's mean")
        return value

    @field_validator("loss")
    @classmethod
    def _loss(cls, value: str) -> str:
        return check_loss(value)

    @model_validator(mode="after")
    def _env_loss(self) -> "RLSettings":
        if self.env is not None and self.loss == "stable_reinforce":
            raise ValueError("loss = \"stable_reinforce\" needs provenance spans, which the cookbook 0.5.8 environment "
                             "path does not build; use it with [rl] rewards (no env), or another loss with env")
        return self

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("give at least one reward, e.g. rewards = { exact_match = 1.0 }")
        return value


RESULT_KEYS = tuple(k for k in RLSettings.model_fields if k != "kl_every")
