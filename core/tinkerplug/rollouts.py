"""Sampling from a policy for the objectives that need samples (RL, distillation): prompts of
records, seeded sampling of groups, datums of sampled tokens. Plain helpers over the SDK's
types, shared so that no objective plugin depends on another."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from tinkerplug.backend_calls import await_result
from tinkerplug.errors import DataError


@dataclass
class Sample:
    """One sampled completion of ``prompt``: its tokens, the sampler's logprobs, the reply text."""

    prompt: Any  # types.ModelInput
    tokens: list[int]
    logprobs: list[float]
    text: str
    sequence_id: str | None = None  # the sampler's id for it (stable_reinforce names it in provenance)


def prompt_messages(record: Mapping[str, Any]) -> list[Any]:
    """The conversation up to (not including) its last assistant message: what a policy answers."""
    messages = list(record["messages"])
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
    return messages[:last]


def record_prompt(data: Any, index: int, objective: str) -> list[Any]:
    """``prompt_messages`` of record ``index`` of ``data``; a record that is no chat record
    (a text row in a mixture, any step) is refused naming its file and row."""
    record = data.records[index]
    if not isinstance(record.get("messages"), list):
        raise DataError(
            f"{data.where(index)}: objective {objective!r} answers the prompts of chat records (messages); "
            f"this record has {', '.join(sorted(record)) or 'no keys'}",
            hint="give the objective chat data (a messages list per record); text rows suit objective 'sft'",
        )
    return prompt_messages(record)


def check_prompts(data: Any, start_step: int, objective: str) -> None:
    """``record_prompt`` on the first step's records, before the run dir exists; the records of
    later steps are checked as their steps come."""
    for index in data.batch_indices(start_step):
        record_prompt(data, index, objective)


def reference_reply(record: Mapping[str, Any]) -> str | None:
    """The record's last assistant message (the reference reply), or ``None``."""
    replies = [m for m in record.get("messages", []) if m.get("role") == "assistant"]
    content = replies[-1].get("content") if replies else None
    return content if isinstance(content, str) else None


def sampling_seed(seed: int, step: int, slot: int, what: str = "policy") -> int:
    """A sampling seed fixed by the run's seed, the step and the prompt's slot: a resumed run
    samples exactly what the uninterrupted one did."""
    digest = hashlib.sha256(f"{seed}:{what}:{step}:{slot}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


async def sample_groups(
    sampler: Any, renderer: Any, prompts: Sequence[Any], group_size: int, max_tokens: int,
    temperature: float, seeds: Sequence[int],
) -> list[list[Sample]]:
    """``group_size`` samples of each prompt, all requests sent before any is awaited."""
    from tinker import types

    stop = renderer.get_stop_sequences()
    futures = [
        sampler.sample(prompt, group_size, types.SamplingParams(max_tokens=max_tokens, temperature=temperature, stop=stop, seed=seed))
        for prompt, seed in zip(prompts, seeds, strict=True)
    ]
    responses = await asyncio.gather(*(await_result_later(f) for f in futures))
    return [
        [Sample(prompt, list(s.tokens), list(s.logprobs or []), reply_text(renderer, s.tokens), getattr(s, "sequence_id", None))
         for s in response.sequences]
        for prompt, response in zip(prompts, responses)
    ]


async def await_result_later(future: Any) -> Any:
    return await await_result(future)


def reply_text(renderer: Any, tokens: Sequence[int]) -> str:
    """The reply as the renderer parses it (its content), stripped."""
    message, _ = renderer.parse_response(list(tokens))
    content = message.get("content", "")
    if not isinstance(content, str):  # structured content: its text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return content.strip()


def sampled_datum(sample: Sample, advantages: Sequence[float], provenance: bool = False, sequence_mask: bool = False) -> Any:
    """An RL datum: prompt + sampled tokens, shifted; the sampler's logprobs and per-token
    advantages on the sampled positions, zero on the prompt's (as the cookbook builds them).
    With ``provenance`` it names the sampled sequence behind every position (stable_reinforce
    needs it; the layout of cookbook 0.6.1's ``with_sampled_provenance``); with
    ``sequence_mask``, ``sequence_ratio_mask`` marks the sampled positions (GSPO's sequence
    ratio is over them)."""
    from tinker import types

    tokens = sample.prompt.to_ints() + sample.tokens
    n_prompt = sample.prompt.length - 1
    datum = types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "logprobs": [0.0] * n_prompt + list(sample.logprobs),
            "advantages": [0.0] * n_prompt + list(advantages),
            **({"sequence_ratio_mask": [0.0] * n_prompt + [1.0] * len(sample.tokens)} if sequence_mask else {}),
        },
    )
    return _with_provenance(datum, sample) if provenance else datum


def _with_provenance(datum: Any, sample: Sample) -> Any:
    from tinker import types

    if not sample.sequence_id:
        raise ValueError("stable_reinforce needs the sampler's sequence_id of every sample (sample with record_stability_info=True)")
    sid, n, p = sample.sequence_id, len(sample.tokens), sample.prompt.length
    inputs = [types.PromptProvenanceSpan(sequence_id=sid, length=p if n else p - 1)]
    targets = [types.PromptProvenanceSpan(sequence_id=sid, offset=1, length=p - 1)]
    if n:
        inputs.append(types.SampledProvenanceSpan(sequence_id=sid, length=n - 1))
        targets.append(types.SampledProvenanceSpan(sequence_id=sid, length=n))
    return datum.with_provenance(model_input=inputs, loss_fn_inputs=targets)


def supervised_datum(sample: Sample) -> Any:
    """A ``cross_entropy`` datum that trains on the sampled tokens only (SFT on samples)."""
    from tinker import types

    tokens = sample.prompt.to_ints() + sample.tokens
    n_prompt = sample.prompt.length - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [0.0] * n_prompt + [1.0] * len(sample.tokens)},
    )


async def completion_logprobs(sampler: Any, samples: Sequence[Sample]) -> list[list[float]]:
    """Another model's logprobs of each sample's completion tokens (``compute_logprobs`` on
    prompt + completion: the reference of a KL, a teacher's view)."""
    from tinker import types

    futures = [sampler.compute_logprobs(types.ModelInput.from_ints(s.prompt.to_ints() + s.tokens)) for s in samples]
    results = await asyncio.gather(*(await_result_later(f) for f in futures))
    return [[float(x) for x in lps[s.prompt.length:]] for s, lps in zip(samples, results)]


def learner_logprobs(output: Any, samples: Sequence[Sample]) -> list[Any]:
    """The learner's logprobs of each sample's completion tokens, from the output of a
    ``forward_backward`` on ``sampled_datum``/``supervised_datum`` datums of ``samples``."""
    return [item["logprobs"].to_numpy()[s.prompt.length - 1:] for s, item in zip(samples, output.loss_fn_outputs)]
