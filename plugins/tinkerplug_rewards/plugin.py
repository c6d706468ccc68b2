"""Rewards (``[rl.rewards]``): ``exact_match`` (the reply equals the record's last assistant
message, both stripped) and ``math`` (the cookbook's grader: the reply's ``\\boxed{}`` answer,
or the whole reply, is mathematically equal to the reference)."""

from __future__ import annotations

from typing import Any, Mapping

import tinkerplug


def reference(record: Mapping[str, Any]) -> str:
    """The record's last assistant message: what both rewards compare with."""
    from tinkerplug.rollouts import reference_reply  # not at import: plugin modules load with every command

    reply = reference_reply(record)
    if reply is None:
        raise ValueError("the record has no assistant message to compare with")
    return reply


def exact_match(completion: str, record: Mapping[str, Any], config: Any) -> float:
    return float(completion.strip() == reference(record).strip())


def math_answer(completion: str, record: Mapping[str, Any], config: Any) -> float:
    from tinker_cookbook.recipes.math_rl.math_grading import extract_boxed, grade_answer

    expected = reference(record)
    try:
        expected = extract_boxed(expected)
    except ValueError:
        pass
    try:
        answer = extract_boxed(completion)
    except ValueError:
        answer = completion
    return float(grade_answer(answer.strip(), expected.strip()))


@tinkerplug.hookimpl
def register_rewards(register: Any) -> None:
    register("exact_match", exact_match)
    register("math", math_answer)
