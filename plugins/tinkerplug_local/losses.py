"""Loss functions, computed exactly as the Tinker service defines them (Tinker docs, "Loss
Functions" pages), and the request checks that go with them.

Every loss is token-wise and a **sum** over the tokens of every datum in the call. Notation: ``lp``
the learner's target logprobs (they carry the gradient), ``q`` the sampler's logprobs
(``loss_fn_inputs["logprobs"]``), ``A`` the advantages, ``r = exp(lp - q)``.

Each loss is a function of one datum (its ``lp`` and its ``loss_fn_inputs`` as tensors) and the
call's ``loss_fn_config``; the training client sums them over datums, microbatch by microbatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

CLIP_DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}  # "fixed to 0.2" in the docs
DRO_DEFAULTS = {"beta": 0.05}  # the docs' example value: they do not state the service's default
# stable_reinforce: the docs do not publish its objective; these bounds are tinkerplug's choice.
STABLE_DEFAULTS = {"mask_low_threshold": 0.5, "mask_high_threshold": 2.0}


def cross_entropy(lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """``sum(-lp * weights)``; with (N, K) targets and weights, a soft (top-K) target."""
    return -(lp * inputs["weights"]).sum()


def importance_sampling(lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """``-sum(r * A)``: REINFORCE corrected for the sampler being a different policy."""
    ratio = (lp - inputs["logprobs"]).exp()
    return -(ratio * inputs["advantages"]).sum()


def ppo(lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """``-sum(min(r * A, clip(r, low, high) * A))``, the bounds absolute ratios."""
    ratio = (lp - inputs["logprobs"]).exp()
    return -_clipped_objective(ratio, inputs, config)


def cispo(lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """``-sum(sg(clip(r, low, high)) * lp * A)``: the clipped ratio only weights the gradient."""
    ratio = (lp - inputs["logprobs"]).exp()
    weight = _clip(ratio, inputs, config).detach()
    return -(weight * lp * inputs["advantages"]).sum()


def dro(lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """``-sum(lp * A - beta/2 * (lp - q)^2)``: a quadratic penalty instead of a clip."""
    penalty = (lp - inputs["logprobs"]) ** 2
    return -(lp * inputs["advantages"] - 0.5 * config["beta"] * penalty).sum()


def gspo(lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """GSPO-token: every token's ratio has the value of the sequence ratio (the geometric mean of
    the token ratios over ``sequence_ratio_mask``) and the gradient of its own logprob; then
    PPO's clipped objective."""
    in_ratio = inputs["sequence_ratio_mask"] != 0
    if not bool(in_ratio.any()):  # nothing sampled (an empty completion): no ratio, no loss
        return (lp * 0).sum()
    log_ratio = (lp.detach() - inputs["logprobs"])[in_ratio].mean()
    ratio = (log_ratio + lp - lp.detach()).exp()
    return -_clipped_objective(ratio, inputs, config)


def stable_reinforce(lp: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """``-sum(keep * sg(r) * A * lp)`` with ``r`` against the *recorded* sampler logprobs
    (``stability.py``), ``keep`` = the target was sampled and ``low <= r <= high``.

    Its gradient is importance_sampling's (``-r * A * grad lp``) on the kept tokens, and
    exactly REINFORCE's when sampler and learner agree; tokens whose ratio left the bounds
    (a stale sampler, different numerics) are dropped rather than clipped. tinkerplug's choice:
    the Tinker docs do not publish the objective.
    """
    ratio = (lp.detach() - inputs["sampler_logprobs"]).exp()
    inside = (ratio >= config["mask_low_threshold"]) & (ratio <= config["mask_high_threshold"])
    keep = inputs["sampled"] * inside.to(ratio.dtype)
    return -(keep * ratio * inputs["advantages"] * lp).sum()


def _clipped_objective(ratio: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    import torch

    advantages = inputs["advantages"]
    return torch.minimum(ratio * advantages, _clip(ratio, inputs, config) * advantages).sum()


def _clip(ratio: Any, inputs: Mapping[str, Any], config: Mapping[str, float]) -> Any:
    """``clamp(ratio, low, high)``: the bounds per token when the datum carries them (the SDK's
    wire format has ``clip_low_threshold`` / ``clip_high_threshold`` inputs), else the config's."""
    import torch

    low, high = (torch.as_tensor(inputs.get(key, config[key]), dtype=ratio.dtype, device=ratio.device)
                 for key in ("clip_low_threshold", "clip_high_threshold"))
    return torch.clamp(ratio, min=low, max=high)


@dataclass(frozen=True)
class LossSpec:
    fn: Callable[[Any, Mapping[str, Any], Mapping[str, float]], Any]
    inputs: tuple[str, ...]  # loss_fn_inputs it reads besides target_tokens
    config: Mapping[str, float]  # the loss_fn_config keys it takes, with the service's defaults
    optional: tuple[str, ...] = ()  # loss_fn_inputs it reads when a datum has them


CLIP_INPUTS = tuple(CLIP_DEFAULTS)  # per-token bounds, as loss_fn_inputs

LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(cross_entropy, ("weights",), {}),
    "importance_sampling": LossSpec(importance_sampling, ("logprobs", "advantages"), {}),
    "ppo": LossSpec(ppo, ("logprobs", "advantages"), CLIP_DEFAULTS, CLIP_INPUTS),
    "cispo": LossSpec(cispo, ("logprobs", "advantages"), CLIP_DEFAULTS, CLIP_INPUTS),
    "dro": LossSpec(dro, ("logprobs", "advantages"), DRO_DEFAULTS),
    "gspo": LossSpec(gspo, ("logprobs", "advantages", "sequence_ratio_mask"), CLIP_DEFAULTS, CLIP_INPUTS),
    # logprobs (the client's copy of the sampler's) are checked when sent, but the recorded ones are used.
    "stable_reinforce": LossSpec(stable_reinforce, ("advantages",), STABLE_DEFAULTS, ("logprobs",)),
}
SUPPORTED = tuple(LOSSES)


def check_loss_fn(loss_fn: str) -> LossSpec:
    if loss_fn not in LOSSES:
        raise NotImplementedError(
            f"loss_fn {loss_fn!r} is not supported, so the local backend does not implement it; "
            f"supported: {', '.join(SUPPORTED)}, and custom (a loss made with create_custom_loss; "
            "forward_backward_custom for any other loss)"
        )
    return LOSSES[loss_fn]


def resolve_config(loss_fn: str, spec: LossSpec, config: Mapping[str, Any] | None) -> dict[str, float]:
    """The call's ``loss_fn_config`` over the service's defaults; unknown keys are an error."""
    given = dict(config or {})
    unknown = sorted(set(given) - set(spec.config))
    if unknown:
        takes = ", ".join(spec.config) or "no keys"
        raise ValueError(f"loss_fn_config key {unknown[0]!r} is not used by {loss_fn!r}; it takes {takes}")
    resolved = {**spec.config}
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"loss_fn_config[{key!r}] must be a finite number, got {value!r}")
        resolved[key] = float(value)
    for low, high in (("clip_low_threshold", "clip_high_threshold"), ("mask_low_threshold", "mask_high_threshold")):
        if low in resolved:
            _check_bounds(resolved, low, high)
    return resolved


def _check_bounds(resolved: dict[str, float], low: str, high: str) -> None:
    if not 0 <= resolved[low] <= resolved[high]:
        raise ValueError(
            f"loss_fn_config needs 0 <= {low} <= {high} (absolute bounds on the "
            f"ratio, e.g. 0.8 and 1.2), got {resolved[low]} and {resolved[high]}"
        )


def check_datums(loss_fn: str, spec: LossSpec, data: list[Any], vocab_size: int | None = None) -> None:
    """Every datum has the inputs ``loss_fn`` reads, shaped like its model input, finite, and
    token ids the model has (below ``vocab_size``).

    Raised when the request is made, naming the datum and the key, so nothing reaches the worker.
    """
    for index, datum in enumerate(data):
        if vocab_size is not None:
            _check_token_ids(index, "model_input", datum.model_input.to_ints(), vocab_size)
            _check_token_ids(index, "target_tokens", _input(loss_fn, datum, index, "target_tokens").to_numpy(), vocab_size)
        n = datum.model_input.length
        if n == 0:
            raise ValueError(f"datum {index}: model_input is empty")
        targets = _input(loss_fn, datum, index, "target_tokens")
        shape = tuple(targets.shape or (len(targets.data),))
        if shape[0] != n or len(shape) > 2:
            raise ValueError(f"datum {index}: target_tokens has shape {list(shape)}, model_input has {n} tokens "
                             f"(expected [{n}] or [{n}, K])")
        if len(shape) == 2 and loss_fn not in ("cross_entropy", "forward_backward_custom", "custom"):
            raise ValueError(f"datum {index}: {loss_fn} takes one target per position; target_tokens has shape {list(shape)}")
        for key in spec.inputs + tuple(k for k in spec.optional if k in datum.loss_fn_inputs):
            _check_values(loss_fn, datum, index, key, shape)


def _check_token_ids(index: int, key: str, ids: Any, vocab_size: int) -> None:
    import numpy as np

    ids = np.asarray(ids).reshape(-1)
    bad = np.flatnonzero((ids < 0) | (ids >= vocab_size))
    if bad.size:
        raise ValueError(f"datum {index}: {key} has token id {int(ids[bad[0]])} at position {int(bad[0])}; "
                         f"the model's vocabulary is 0..{vocab_size - 1}")


def _input(loss_fn: str, datum: Any, index: int, key: str) -> Any:
    if key not in datum.loss_fn_inputs:
        raise ValueError(f"datum {index}: {loss_fn} needs loss_fn_inputs[{key!r}]")
    return datum.loss_fn_inputs[key]


def _check_values(loss_fn: str, datum: Any, index: int, key: str, shape: tuple[int, ...]) -> None:
    import numpy as np

    values = _input(loss_fn, datum, index, key).to_numpy()
    if tuple(values.shape) != shape:
        raise ValueError(f"datum {index}: loss_fn_inputs[{key!r}] has shape {list(values.shape)}, "
                         f"target_tokens has {list(shape)}")
    if not np.isfinite(values).all():
        at = int(np.flatnonzero(~np.isfinite(values.reshape(-1)))[0])
        raise ValueError(f"datum {index}: loss_fn_inputs[{key!r}] is not finite at position {at}")
    if key == "sequence_ratio_mask" and not values.any():
        raise ValueError(f"datum {index}: loss_fn_inputs['sequence_ratio_mask'] marks no token")


def datum_inputs(spec: LossSpec, datum: Any, device: Any) -> dict[str, Any]:
    """The loss's inputs of one datum as float tensors on ``device``."""
    keys = spec.inputs + tuple(k for k in spec.optional if k in datum.loss_fn_inputs)
    return {key: datum.loss_fn_inputs[key].to_torch().float().to(device) for key in keys}
