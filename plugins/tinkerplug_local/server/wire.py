"""The SDK's wire format, read and written with its own protobuf module and types.

Training bodies (``/forward_backward``, ``/forward``) arrive as ``tinker_public_pb2``
messages; the results the SDK asks for as protobuf (``ForwardBackwardOutput``,
``SampleResponse``: ``tinker.proto.response_conv.PROTO_SUPPORTED_TYPES``) go back as protobuf,
exactly what ``response_conv`` decodes; everything else is the SDK's pydantic JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tinker import types
from tinker.proto import tinker_public_pb2 as pb
from tinker.proto.response_conv import _tensor_data_from_proto
from tinker.types.topk_logprobs import MASK_LOGPROB

PROTO = "application/x-protobuf"

_NUMPY_TO_PROTO = {np.dtype(np.float32): pb.DTYPE_FLOAT32, np.dtype(np.int64): pb.DTYPE_INT64}
_STOP_REASONS = {"stop": pb.STOP_REASON_STOP, "length": pb.STOP_REASON_LENGTH}


class WireError(ValueError):
    """A body the server cannot read: answered with HTTP 400 and this message."""


# -- requests ------------------------------------------------------------------------------------


def decode_forward_backward(body: bytes) -> tuple[str, int, list[types.Datum], str, dict[str, Any] | None, bool]:
    """(model_id, seq_id, data, loss_fn, loss_fn_config, forward_only) of a protobuf body."""
    message = pb.ForwardBackwardRequest()
    try:
        message.ParseFromString(body)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        raise WireError(f"the body is not a ForwardBackwardRequest protobuf ({type(exc).__name__})") from None
    if not message.model_id:
        raise WireError("ForwardBackwardRequest has no model_id")
    data = [_datum(d, i) for i, d in enumerate(message.data)]
    if not data:
        raise WireError("ForwardBackwardRequest has no data")
    config: dict[str, Any] = {}
    for key, value in message.loss_fn_config_v2.items():  # v2 (numbers and strings) wins
        config[key] = value.text if value.WhichOneof("value") == "text" else value.number
    for key, number in message.loss_fn_config.items():
        config.setdefault(key, number)
    return message.model_id, message.seq_id, data, message.loss_fn, config or None, message.forward_only


def _datum(message: Any, index: int) -> types.Datum:
    tokens: list[int] = []
    for chunk in message.model_input:
        if not chunk.HasField("encoded_text"):
            raise WireError(f"datum {index}: only token chunks are served (no images or audio)")
        raw = chunk.encoded_text.tokens
        if len(raw) % 4:
            raise WireError(f"datum {index}: encoded_text.tokens is {len(raw)} bytes, not a whole number of int32 tokens")
        tokens.extend(np.frombuffer(raw, dtype="<i4").tolist())
    try:
        inputs = {name: _tensor_data_from_proto(t) for name, t in message.loss_fn_inputs.items()}
    except ValueError as exc:
        raise WireError(f"datum {index}: {exc}") from None
    spans = _spans(message.model_input_spans), _spans(message.loss_fn_input_spans)
    if (spans[0] is None) != (spans[1] is None):
        raise WireError(f"datum {index}: provenance comes as a pair: model_input_spans and loss_fn_input_spans, or neither")
    return types.Datum(model_input=types.ModelInput.from_ints(tokens), loss_fn_inputs=inputs,
                       model_input_spans=spans[0], loss_fn_input_spans=spans[1])


def _spans(messages: Any) -> list[Any] | None:
    """The SDK's provenance spans of one repeated ``ProvenanceSpan`` field (None when empty)."""
    spans: list[Any] = []
    for message in messages:
        arm = message.WhichOneof("span")
        if arm is None:
            raise WireError("a provenance span has neither prompt_tokens nor sampled_tokens")
        kind = types.SampledProvenanceSpan if arm == "sampled_tokens" else types.PromptProvenanceSpan
        run = getattr(message, arm)
        try:
            spans.append(kind(sequence_id=run.sequence_id, offset=run.offset, length=run.length))
        except ValueError as exc:
            raise WireError(str(exc)) from None
    return spans or None


# -- responses -----------------------------------------------------------------------------------


def encode_forward_backward_output(output: types.ForwardBackwardOutput) -> bytes:
    """One ``ArrayRecord`` per datum: outputs may differ in trailing shape between datums."""
    message = pb.ForwardBackwardOutput(loss_fn_output_type=output.loss_fn_output_type or "TensorData")
    for key, value in (output.metrics or {}).items():
        message.metrics[key] = float(value)
    for datum in output.loss_fn_outputs:
        record = message.loss_fn_outputs.add(num_datums=1)
        for name, tensor in datum.items():
            array = _array(tensor)
            field = record.fields[name]
            field.dtype = _NUMPY_TO_PROTO[array.dtype]
            field.data = array.tobytes()
            field.offsets = np.array([0, array.nbytes], dtype="<i8").tobytes()
            field.trailing_shape.extend(array.shape[1:])
    return message.SerializeToString()


def _array(tensor: Any) -> np.ndarray:
    array = tensor.to_numpy() if hasattr(tensor, "to_numpy") else np.asarray(tensor)
    if array.ndim == 0:
        array = array.reshape(1)
    return np.ascontiguousarray(array, dtype=np.float32 if array.dtype.kind == "f" else np.int64)


def encode_sample_response(response: types.SampleResponse) -> bytes:
    message = pb.SampleResponse(prompt_cache_hit_tokens=int(response.prompt_cache_hit_tokens or 0))
    for sequence in response.sequences:
        item = message.sequences.add(
            stop_reason=_STOP_REASONS[sequence.stop_reason],
            tokens=np.asarray(sequence.tokens, dtype="<i4").tobytes(),
        )
        if sequence.logprobs is not None:
            item.logprobs = np.asarray(sequence.logprobs, dtype="<f4").tobytes()
        topk = _topk(sequence.topk_logprobs_np, sequence.topk_logprobs)
        if topk is not None:
            item.topk_sampled_logprobs.CopyFrom(topk)
    prompt = response.prompt_logprobs
    if prompt is not None:
        values = [np.nan if v is None else v for v in prompt]  # NaN is the SDK's "not scored"
        message.prompt_logprobs = np.asarray(values, dtype="<f4").tobytes()
    topk = _topk(response.topk_prompt_logprobs_np, response.topk_prompt_logprobs)
    if topk is not None:
        message.topk_prompt_logprobs.CopyFrom(topk)
    if response.target_prompt_logprobs is not None:
        message.target_prompt_logprobs.CopyFrom(_tensor(response.target_prompt_logprobs))
    if response.prompt_alt_tokens is not None:
        message.prompt_alt_tokens.tokens.CopyFrom(_tensor(response.prompt_alt_tokens.tokens))
        message.prompt_alt_tokens.logprobs.CopyFrom(_tensor(response.prompt_alt_tokens.logprobs))
    return message.SerializeToString()


def _topk(matrices: Any, rows: list[list[tuple[int, float]] | None] | None) -> Any:
    """Top-k as the SDK's (length, k) matrices; empty cells hold its sentinel (0, -99999)."""
    if matrices is not None:
        ids, logprobs = np.asarray(matrices.token_ids), np.asarray(matrices.logprobs)
    elif rows is not None:
        k = max((len(r) for r in rows if r), default=0)
        ids = np.zeros((len(rows), k), dtype=np.int32)
        logprobs = np.full((len(rows), k), MASK_LOGPROB, dtype=np.float32)
        for i, row in enumerate(rows):
            for j, (token, logprob) in enumerate(row or []):
                ids[i, j], logprobs[i, j] = token, logprob
    else:
        return None
    if ids.size == 0:
        return None
    return pb.TopkLogprobs(
        token_ids=np.ascontiguousarray(ids, dtype="<i4").tobytes(),
        logprobs=np.ascontiguousarray(logprobs, dtype="<f4").tobytes(),
        length=ids.shape[0],
        k=ids.shape[1],
    )


def _tensor(tensor: types.TensorData) -> Any:
    from tinker.proto.request_conv import _tensor_data_to_proto

    return _tensor_data_to_proto(tensor)
