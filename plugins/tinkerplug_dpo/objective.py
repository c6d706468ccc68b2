"""DPO in one pass per step: each pair's chosen and rejected replies are two datums; the
reference's logprobs of both are computed once per record (a ``compute_logprobs`` on the
reference sampler: ``init_from``'s weights or the base model) and kept; the loss
``-log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))``, averaged over
the pairs, goes to ``forward_backward_custom``, which the local backend runs in the same pass
that computes the policy's logprobs."""

from __future__ import annotations

import asyncio
from typing import Any

from tinkerplug.backend_calls import await_result
from tinkerplug.checkpoint_refs import open_reference_sampler
from tinkerplug.hook_types import StepBatch
from tinkerplug.errors import DataError

METRICS = ("dpo/nll", "dpo/loss", "dpo/accuracy", "dpo/margin", "dpo/chosen_logprob", "dpo/rejected_logprob")


class DPOObjective:
    def __init__(self, run: Any, data: Any, beta: float, nll_coef: float = 0.0):
        self.run, self.data, self.beta, self.nll_coef = run, data, beta, nll_coef
        self.reference: Any = None
        self.reference_sums: dict[int, tuple[float, float]] = {}

    async def batch(self, step: int) -> StepBatch:
        self.data.batch(step)  # keeps the render-ahead thread in step
        indices = self.data.batch_indices(step)
        datums = []
        for index in indices:
            check_pair(self.data, index)
            record = self.data.records[index]
            datums += [self.datum(record["messages"], index, "chosen"), self.datum(record["rejected"], index, "rejected")]
        references = await self.reference_logprob_sums(indices, datums)
        return StepBatch(datums, dpo_loss(self.beta, references, self.nll_coef), summarize=summarize)

    def datum(self, messages: list[Any], index: int, which: str) -> Any:
        """A reply as a datum: its last assistant message weighted 1, the rest 0; held to
        ``max_length`` as SFT examples are (``overlong``: truncate it, or refuse the record:
        the data's own check drops a pair only by its chosen reply)."""
        from tinker import types

        model_input, weights = self.run.renderer.build_supervised_example(messages)
        tokens, weights = model_input.to_ints(), [float(w) for w in weights]
        limit, overlong = self.run.config.max_length, self.run.config.overlong
        if len(tokens) - 1 > limit:
            if overlong == "drop":
                raise DataError(f"{self.data.where(index)}: the {which} reply makes {len(tokens) - 1} tokens, "
                                f"more than max_length = {limit}", hint='raise max_length, set overlong = "truncate", or shorten it')
            tokens, weights = tokens[: limit + 1], weights[: limit + 1]
            if not any(weights[1:]):
                raise DataError(f"{self.data.where(index)}: truncated to max_length = {limit}, the {which} reply keeps no token",
                                hint="raise max_length, or shorten the prompt")
        return types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights[1:]},
        )

    async def reference_logprob_sums(self, indices: list[int], datums: list[Any]) -> list[tuple[float, float]]:
        """(chosen, rejected) summed reference logprobs of each pair; computed once per record."""
        if self.reference is None:
            self.reference = open_reference_sampler(self.run.service_client, self.run.config)
        missing = [(k, i) for k, i in enumerate(indices) if i not in self.reference_sums]
        sums = await asyncio.gather(*(self._pair_sums(datums[2 * k], datums[2 * k + 1]) for k, _ in missing))
        for (_, index), pair in zip(missing, sums):
            self.reference_sums[index] = pair
        return [self.reference_sums[i] for i in indices]

    async def _pair_sums(self, chosen: Any, rejected: Any) -> tuple[float, float]:
        return await self._sum(chosen), await self._sum(rejected)

    async def _sum(self, datum: Any) -> float:
        from tinker import types

        targets = datum.loss_fn_inputs["target_tokens"].to_numpy().tolist()
        tokens = types.ModelInput.from_ints(datum.model_input.to_ints()[:1] + targets)
        logprobs = await await_result(self.reference.compute_logprobs(tokens))
        weights = datum.loss_fn_inputs["weights"].to_numpy().tolist()
        return float(sum(lp * w for lp, w in zip(logprobs[1:], weights) if w))


def check_pair(data: Any, index: int) -> None:
    if "rejected" not in data.records[index]:
        raise DataError(
            f"{data.where(index)}: objective 'dpo' needs preference records; this one has no 'rejected' reply",
            hint='give "prompt"/"chosen"/"rejected" (TRL\'s form) or "messages" with "chosen" and "rejected" replies',
        )


def dpo_loss(beta: float, references: list[tuple[float, float]], nll_coef: float = 0.0) -> Any:
    """The custom loss of one batch (``(data, logprobs_list) -> (loss, metrics)``); with
    ``nll_coef``, plus that times the chosen replies' mean NLL per token (DPO + NLL, as RPO)."""

    def loss_fn(data: list[Any], logprobs_list: list[Any]) -> tuple[Any, dict[str, float]]:
        import torch

        sums = [(lp * d.loss_fn_inputs["weights"].to_torch().to(lp.dtype)).sum() for d, lp in zip(data, logprobs_list)]
        chosen, rejected = torch.stack(sums[0::2]), torch.stack(sums[1::2])
        ref = torch.tensor(references, dtype=chosen.dtype)
        margin = beta * ((chosen - ref[:, 0]) - (rejected - ref[:, 1]))
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        tokens = torch.stack([d.loss_fn_inputs["weights"].to_torch().sum() for d in data[0::2]]).to(chosen.dtype)
        nll = (-chosen / tokens.clamp(min=1)).mean()
        metrics = {"dpo/nll": float(nll.detach())}
        if nll_coef:
            loss = loss + nll_coef * nll
        metrics |= {
            "dpo/loss": float(loss.detach()),
            "dpo/accuracy": float((margin > 0).float().mean()),
            "dpo/margin": float(margin.detach().mean()),
            "dpo/chosen_logprob": float(chosen.detach().mean()),
            "dpo/rejected_logprob": float(rejected.detach().mean()),
        }
        return loss, metrics

    return loss_fn


def summarize(output: Any) -> dict[str, float]:
    """The DPO metrics of the step; ``train/loss`` is the DPO loss."""
    metrics = {key: float(output.metrics[key]) for key in METRICS if key in output.metrics}
    if "dpo/loss" in metrics:
        metrics["train/loss"] = metrics["dpo/loss"]
    return metrics
