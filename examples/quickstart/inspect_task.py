"""An Inspect task on the quickstart's held-out set: each record's conversation up to the last
assistant message is the input, that message is the target.

Two scorers: ``exact()`` (the reply equals the target, whitespace-normalised) and
``abs_error()`` (how far the reply's number is from the target's, so a near miss counts for
something). Run it on its own with any Inspect model::

    inspect eval examples/quickstart/inspect_task.py@subtraction --model <provider/model>
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageUser
from inspect_ai.scorer import Score, Target, exact, mean, scorer, stderr
from inspect_ai.solver import TaskState, generate

HERE = Path(__file__).parent
MESSAGE_TYPES = {"system": ChatMessageSystem, "user": ChatMessageUser, "assistant": ChatMessageAssistant}
MAX_ERROR = 100.0  # a reply with no number counts as this far off
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def chat_samples(path: Path) -> list[Sample]:
    samples = []
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        *history, answer = json.loads(line)["messages"]
        samples.append(
            Sample(
                id=index + 1,
                input=[MESSAGE_TYPES[m["role"]](content=m["content"]) for m in history],
                target=str(answer["content"]).strip(),
            )
        )
    return samples


@scorer(metrics=[mean(), stderr()])
def abs_error():
    """|reply - target| for the first number in the reply, capped at ``MAX_ERROR``."""

    async def score(state: TaskState, target: Target) -> Score:
        found = NUMBER.search(state.output.completion)
        if found is None:
            return Score(value=MAX_ERROR, answer=state.output.completion, explanation="no number in the reply")
        error = min(abs(float(found.group()) - float(target.text)), MAX_ERROR)
        return Score(value=error, answer=found.group())

    return score


@task
def subtraction(data: str = "heldout.jsonl") -> Task:
    """Held-out 2-digit subtraction: exact match and absolute error of the answer."""
    return Task(
        dataset=MemoryDataset(chat_samples(HERE / data), name="quickstart-heldout"),
        solver=generate(),
        scorer=[exact(), abs_error()],
    )
