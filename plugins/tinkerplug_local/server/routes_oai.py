"""The OpenAI-compatible API under ``/oai/api/v1``: ``/models``, ``/chat/completions``, ``/completions``.

As on the service (Tinker docs, "OpenAI-Compatible API"), ``model`` names a base model, a
``tinker://…/sampler_weights/…`` checkpoint (its LoRA is applied) or ``BASE;PATH``; the key is the
one the rest of serve takes (OpenAI clients send it as ``Authorization: Bearer``). A chat is
rendered with the model's cookbook renderer (the one it was trained with), and the reply parsed
back with it. Sampling runs on the local backend's sampler, the same as ``SamplingClient.sample``:
greedy (``temperature: 0``) answers equal it token for token. A streamed answer is sent as
server-sent events once it is generated (the local sampler does not yield tokens one by one).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from tinkerplug_local.server.http import admit, principal, read_json
from tinkerplug_local.server.oai_models import OAIError, OAIModel, OAIModels, base_models
from tinkerplug_local.server.oai_schema import ChatRequest, CompletionRequest, chat_messages, parse_body

PREFIX = "/oai/api/v1"
FINISH = {"stop": "stop", "length": "length"}


def oai_models(request: Request) -> OAIModels:
    state = request.app.state.server
    if getattr(state, "oai_models", None) is None:
        state.oai_models = OAIModels(state)
    return state.oai_models


async def list_models(request: Request) -> Any:
    state = request.app.state.server
    names = base_models(state) + sorted(_sampler_paths(state, principal(request)))
    return JSONResponse({"object": "list", "data": [_model_object(name) for name in names]})


async def get_model(request: Request) -> Any:
    """One model, as ``GET /models`` lists it; any other name is loaded to check it exists."""
    name = request.path_params["model"]
    state = request.app.state.server
    if name not in base_models(state) + _sampler_paths(state, principal(request)):
        await run_in_threadpool(oai_models(request).get, name, principal(request))  # 404 naming it if it is not there
    return JSONResponse(_model_object(name))


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(time.time()), "owned_by": "tinkerplug"}


def _sampler_paths(state: Any, who: Any) -> list[str]:
    """The sampler checkpoints of the caller's runs (every run's for an admin key)."""
    from tinkerplug_local.server.state import visible

    root = state.paths.root
    return [
        f"tinker://{d.parent.parent.name}/sampler_weights/{d.name}"
        for d in root.glob("*/sampler_weights/*")
        if d.is_dir() and not d.name.startswith(".") and not d.is_symlink()
        and visible(who, state.run_owner(d.parent.parent.name), listing=True)
    ]


async def chat_completions(request: Request) -> Any:
    admit(request)  # as every route that queues work: not while draining, not over the key's queue limit
    body: ChatRequest = parse_body(await read_json(request), ChatRequest)
    model = await run_in_threadpool(oai_models(request).get, body.model, principal(request))
    prompt = render_chat(model, chat_messages(body.messages))
    sequences = (await _sample(model, prompt, body)).sequences
    choices = [_chat_choice(model, i, seq, body) for i, seq in enumerate(sequences)]
    return _answer(request, body, model, "chat.completion", choices, len(prompt), sequences)


async def completions(request: Request) -> Any:
    """One set of ``n`` answers per prompt; choice ``p * n + j`` is answer ``j`` of prompt ``p``."""
    import asyncio

    admit(request)
    body: CompletionRequest = parse_body(await read_json(request), CompletionRequest)
    model = await run_in_threadpool(oai_models(request).get, body.model, principal(request))
    prompts = [_prompt_tokens(model, p) for p in body.prompts()]
    responses = await asyncio.gather(*(_sample(model, tokens, body) for tokens in prompts))  # batched on the worker
    choices, sequences = [], []
    for p, (given, tokens, response) in enumerate(zip(body.prompts(), prompts, responses)):
        for j, sequence in enumerate(response.sequences):
            choices.append(_text_choice(model, p * body.n + j, sequence, body, _Prompt(given, tokens, response)))
            sequences.append(sequence)
    return _answer(request, body, model, "text_completion", choices, sum(map(len, prompts)), sequences)


def _prompt_tokens(model: OAIModel, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        tokens = model.tokenizer.encode(prompt, add_special_tokens=True)
    else:
        tokens = list(prompt)
        if any(t < 0 or t >= len(model.tokenizer) for t in tokens):
            raise OAIError(400, f"prompt: token ids must be in 0..{len(model.tokenizer) - 1}", "prompt")
    if not tokens:
        raise OAIError(400, "prompt: empty after tokenization", "prompt")
    return tokens


def render_chat(model: OAIModel, messages: list[dict[str, str]]) -> list[int]:
    if model.renderer is not None:
        return model.renderer.build_generation_prompt(messages).to_ints()
    if getattr(model.tokenizer, "chat_template", None):
        return list(model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    raise OAIError(400, f"model: {model.base_model!r} has no chat renderer or chat template; use /completions", "model")


async def _sample(model: OAIModel, prompt: list[int], body: Any) -> Any:
    """The sampler's ``SampleResponse``; with ``echo``, prompt logprobs (and top-k) too."""
    import asyncio

    from tinker import types

    user_stops = body.stops()
    stop: Any = None  # the sampler's default: end of sequence
    if isinstance(body, ChatRequest) and model.renderer is not None:
        stop = model.renderer.get_stop_sequences()
    if user_stops:  # strings and token ids do not mix: the renderer's as text, beside the user's
        stop = user_stops + [s if isinstance(s, str) else model.tokenizer.decode([s]) for s in (stop or [])]
    context = model.client.context_length()
    limit = body.token_limit(None if context is None else max(1, context - len(prompt)))
    params = types.SamplingParams(max_tokens=max(1, limit), temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=stop)
    echo = isinstance(body, CompletionRequest) and body.echo and body.logprobs is not None
    options = {"include_prompt_logprobs": True, "topk_prompt_logprobs": body.logprobs} if echo else {}
    try:
        future = model.client.sample(types.ModelInput.from_ints(prompt), body.n, params, **options)
        response = await asyncio.wrap_future(future.future())
    except (ValueError, NotImplementedError) as exc:
        raise OAIError(400, str(exc)) from None
    if limit == 0:  # max_tokens 0 (echo only): the prompt's scores, no answer
        import dataclasses

        empty = [types.SampledSequence(stop_reason="length", tokens=[], logprobs=[]) for _ in response.sequences]
        response = dataclasses.replace(response, sequences=empty)
    return response


def _chat_choice(model: OAIModel, index: int, sequence: Any, body: ChatRequest) -> dict[str, Any]:
    text = _cut(_chat_text(model, list(sequence.tokens)), body.stops())
    choice: dict[str, Any] = {
        "index": index, "message": {"role": "assistant", "content": text},
        "finish_reason": _finish(sequence), "logprobs": None,
    }
    if body.logprobs:
        content = [
            {"token": (piece := model.tokenizer.decode([t])), "logprob": float(lp), "bytes": list(piece.encode()), "top_logprobs": []}
            for t, lp in zip(sequence.tokens, sequence.logprobs or [])
        ]
        choice["logprobs"] = {"content": content}
    return choice


def _chat_text(model: OAIModel, tokens: list[int]) -> str:
    if model.renderer is None:
        return model.tokenizer.decode(tokens, skip_special_tokens=True)
    from tinker_cookbook.renderers import get_text_content

    message, _ = model.renderer.parse_response(tokens)
    return get_text_content(message)


@dataclass
class _Prompt:
    given: str | list[int]
    tokens: list[int]
    response: Any  # its SampleResponse: prompt logprobs when echo asked for them


def _text_choice(model: OAIModel, index: int, sequence: Any, body: CompletionRequest, prompt: _Prompt) -> dict[str, Any]:
    decode = model.tokenizer.decode
    text = _cut(decode(list(sequence.tokens), skip_special_tokens=True), body.stops())
    if body.echo:
        text = (prompt.given if isinstance(prompt.given, str) else decode(prompt.tokens)) + text
    logprobs = None
    if body.logprobs is not None:
        tokens = (prompt.tokens if body.echo else []) + list(sequence.tokens)
        values = (list(prompt.response.prompt_logprobs or [None] * len(prompt.tokens)) if body.echo else [])
        values += [float(v) for v in sequence.logprobs or []]
        top = None
        if body.logprobs > 0:  # only with echo: alternatives of the prompt's tokens
            rows = prompt.response.topk_prompt_logprobs or [None] * len(prompt.tokens)
            top = [{decode([t]): float(lp) for t, lp in row} if row else None for row in rows]
            top += [None] * len(sequence.tokens)
        pieces = [decode([t]) for t in tokens]
        offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
        logprobs = {"tokens": pieces, "token_logprobs": values, "top_logprobs": top, "text_offset": offsets}
    return {"index": index, "text": text, "finish_reason": _finish(sequence), "logprobs": logprobs}


def _cut(text: str, stops: list[str]) -> str:
    """OpenAI leaves the stop string out of the answer."""
    cuts = [text.index(s) for s in stops if s in text]
    return text[: min(cuts)] if cuts else text


def _finish(sequence: Any) -> str:
    return FINISH.get(sequence.stop_reason, "stop")


def _usage(prompt_tokens: int, sequences: list[Any]) -> dict[str, int]:
    completion = sum(len(s.tokens) for s in sequences)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def _answer(request: Request, body: Any, model: OAIModel, kind: str, choices: list[dict], prompt_tokens: int, sequences: list[Any]) -> Any:
    head = {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind, "created": int(time.time()), "model": model.name}
    usage = _usage(prompt_tokens, sequences)
    if not body.stream:
        return JSONResponse({**head, "choices": choices, "usage": usage})
    events = _stream(head, kind, choices, model, sequences, usage if body.include_usage() else None)
    return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _stream(head: dict, kind: str, choices: list[dict], model: OAIModel, sequences: list[Any], usage: dict | None) -> Iterator[str]:
    chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else "text_completion"
    for choice, sequence in zip(choices, sequences):
        final = choice["message"]["content"] if "message" in choice else choice["text"]
        pieces = _pieces(model.tokenizer, list(sequence.tokens), final)
        for n, piece in enumerate(pieces):
            delta: dict[str, Any] = {"index": choice["index"], "finish_reason": None, "logprobs": None}
            if kind == "chat.completion":
                delta["delta"] = {"role": "assistant", "content": piece} if n == 0 else {"content": piece}
            else:
                delta["text"] = piece
            yield _event({**head, "object": chunk_kind, "choices": [delta]})
        end: dict[str, Any] = {"index": choice["index"], "finish_reason": choice["finish_reason"], "logprobs": choice["logprobs"]}
        end.update({"delta": {}} if kind == "chat.completion" else {"text": ""})
        yield _event({**head, "object": chunk_kind, "choices": [end]})
    if usage is not None:
        yield _event({**head, "object": chunk_kind, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _pieces(tokenizer: Any, tokens: list[int], final: str) -> list[str]:
    """``final`` split where the tokens decode to a longer prefix of it: one piece per token (per
    few tokens past 256), as a token-by-token stream would send them."""
    pieces, sent = [], ""
    step = max(1, len(tokens) // 256)  # long answers in groups of tokens: each decode is of the whole prefix
    for k in [*range(step, len(tokens), step), len(tokens)]:
        text = tokenizer.decode(tokens[:k], skip_special_tokens=True)
        if len(text) > len(sent) and final.startswith(text):
            pieces.append(text[len(sent):])
            sent = text
    if sent != final:
        pieces.append(final[len(sent):])
    return pieces or [""]


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


ROUTES = [
    Route(PREFIX + "/models", list_models, methods=["GET"]),
    Route(PREFIX + "/models/{model:path}", get_model, methods=["GET"]),
    Route(PREFIX + "/chat/completions", chat_completions, methods=["POST"]),
    Route(PREFIX + "/completions", completions, methods=["POST"]),
]
