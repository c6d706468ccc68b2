"""Rewards (``[rl.rewards]``): ``exact_match`` (the reply equals the record's last assistant
message, both stripped) and ``math`` (the cookbook's grader: the reply's ``\\boxed{}`` answer,
or the whole reply, is mathematically equal to the reference)."""

from __future__ import annotations

from typing import Any, Mapping

import tinkerplug
from tinkerplug.rollouts import reference_reply


def exact_match(completion: str, record: Mapping[str, Any], config: Any) -> float:
    reference = reference_reply(record)
    if reference is None:
        raise ValueError("the record has no assistant message to compare with")
    return float(completion.strip() == reference.strip())


def math_answer(completion: str, record: Mapping[str, Any], config: Any) -> float:
    from tinker_cookbook.recipes.math_rl.math_grading import extract_boxed, grade_answer

    reference = reference_reply(record)
    if reference is None:
        raise ValueError("the record has no assistant message to compare with")
    try:
        reference = extract_boxed(reference)
    except ValueError:
        pass
    try:
        answer = extract_boxed(completion)
    except ValueError:
        answer = completion
    return float(grade_answer(answer.strip(), reference.strip()))


@tinkerplug.hookimpl
def register_rewards(register: Any) -> None:
    register("exact_match", exact_match)
    register("math", math_answer)
