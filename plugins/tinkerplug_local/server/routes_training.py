"""Training endpoints: create_model, get_info, forward(_backward), optim_step, weights.

Each submits to the model's local ``TrainingClient`` (its jobs run in order on the base
model's worker) and answers with a request id at once; ``/retrieve_future`` delivers the
result. Loss names and ``loss_fn_config`` go to the local backend as sent: whatever losses it
supports, the server serves.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import Future
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from tinker import types

from tinkerplug_local.server.futures import then
from tinkerplug_local.server.http import HTTPError, admit, call, dump, endpoint, json_response, parse, principal, submitted
from tinkerplug_local.server.wire import WireError, decode_forward_backward, encode_forward_backward_output


def _state(request: Request) -> Any:
    return request.app.state.server


async def create_model(request: Request) -> Any:
    state = _state(request)
    body = await parse(request, types.CreateModelRequest)
    who = _new_model_allowed(request, state, body.session_id)
    _check_base_model(request, state, body.base_model)
    lora = body.lora_config or types.LoraConfig(rank=32)
    model_id = f"{body.session_id}:train:{body.model_seq_id}"
    meta = {k: str(v) for k, v in (body.user_metadata or {}).items()}

    def submit() -> Any:  # loading a base model the first time takes a while: off the event loop
        return state.service.create_lora_training_client(
            body.base_model, rank=lora.rank, seed=lora.seed, train_mlp=lora.train_mlp,
            train_attn=lora.train_attn, train_unembed=lora.train_unembed, user_metadata=meta,
            optimizer=body.optimizer_config,
        )

    def created(client: Any) -> types.CreateModelResponse:
        state.add_model(model_id, client, body.base_model, lora.rank, meta, who.name)
        return types.CreateModelResponse(model_id=model_id)

    return await _create_once(request, model_id, submit, created)


def _check_base_model(request: Request, state: Any, name: str | None) -> None:
    try:
        if name is not None:
            state.check_base_model(name)
    except ValueError as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None


def _new_model_allowed(request: Request, state: Any, session_id: str) -> Any:
    """The caller, when the session is its own (404 otherwise) and it is under its model limit."""
    who = admit(request)
    try:
        state.session(session_id, who)
    except KeyError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None
    state.check_model_limit(who)
    return who


async def _create_once(request: Request, model_id: str, submit: Any, created: Any) -> Any:
    """One model per (session, model_seq_id): a create the SDK sends again (its answer was
    lost on the way) gets the first one's future instead of a second adapter."""
    state = _state(request)
    with state.creating_lock:
        future = state.creating.get(model_id)
        first = future is None
        if first:
            future = state.creating[model_id] = Future()
    if first:
        then(await run_in_threadpool(call, submit), created).add_done_callback(lambda f: _copy(f, future))
    return submitted(request, future, dump, model_id=model_id)


def _copy(source: Future, target: Future) -> None:
    if source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


async def get_info(request: Request) -> Any:
    state = _state(request)
    body = await parse(request, types.GetInfoRequest)
    model = _model(state, body.model_id, request, queued=False)
    info = model.client.get_info()
    # The SDK loads the tokenizer named here: the local model dir, so no hub is needed.
    tokenizer_dir = getattr(model.client.get_tokenizer(), "name_or_path", None) or info.model_data.tokenizer_id
    data = info.model_data.model_copy(update={"tokenizer_id": str(tokenizer_dir)})
    return json_response(info.model_copy(update={"model_id": body.model_id, "model_data": data}))


def _model(state: Any, model_id: str, request: Request, queued: bool = True) -> Any:
    """The caller's model (404 for another key's, as for an unknown one); a request that will be
    queued must also be under the caller's limit of queued requests."""
    try:
        return state.model(model_id, admit(request) if queued else principal(request))
    except KeyError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None


async def forward_backward(request: Request) -> Any:
    state = _state(request)
    try:
        model_id, _, data, loss_fn, config, forward_only = decode_forward_backward(await request.body())
    except WireError as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    model = _model(state, model_id, request)
    kind = "forward" if forward_only else "forward_backward"
    release = state.release_time(model, kind)
    try:  # the request's own checks (loss, config, datums, provenance) run here: a 400 naming the datum
        future = getattr(model.client, kind)(data, loss_fn, config)
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    return submitted(request, future, encode_forward_backward_output, model_id, release)


async def optim_step(request: Request) -> Any:
    state = _state(request)
    body = await parse(request, types.OptimStepRequest)
    model = _model(state, body.model_id, request)
    release = state.release_time(model, "optim_step")
    return submitted(request, call(model.client.optim_step, body.optim_params), dump, body.model_id, release)


async def save_weights(request: Request) -> Any:
    state = _state(request)
    body = await parse(request, types.SaveWeightsRequest)
    model = _model(state, body.model_id, request)
    name = _checkpoint_name(request, body.path) or f"state-{uuid.uuid4().hex[:8]}"
    saved = _saved(request, state, body.ttl_seconds)
    future = call(model.client.save_state, name, ttl_seconds=body.ttl_seconds, user_metadata=body.user_metadata)
    answer = then(future, lambda r: types.SaveWeightsResponse(path=saved(r.path)))
    return submitted(request, answer, dump, body.model_id, state.release_time(model, "save_weights"))


def _checkpoint_name(request: Request, name: str | None) -> str | None:
    """A name its ``tinker://`` path can later load, publish and delete by (400 otherwise)."""
    from tinkerplug_local.server.paths import PathError, check_segment

    try:
        return None if name is None else check_segment(name, "checkpoint name")
    except PathError as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None


def _saved(request: Request, state: Any, ttl_seconds: int | None) -> Any:
    """``local dir -> tinker:// path`` of a checkpoint just written, its TTL recorded."""
    from tinkerplug_local.server.checkpoint_meta import MAX_TTL_S

    if ttl_seconds is not None and not 0 < ttl_seconds <= MAX_TTL_S:
        raise HTTPError(400, f"{endpoint(request)}: ttl_seconds must be between 1 and {MAX_TTL_S}, or null")

    def convert(local_path: str) -> str:
        tinker_path = state.paths.to_tinker(local_path)
        if ttl_seconds is not None:
            state.checkpoint_meta.set_ttl(tinker_path.removeprefix("tinker://"), ttl_seconds)
        return tinker_path

    return convert


async def save_weights_for_sampler(request: Request) -> Any:
    state = _state(request)
    body = await parse(request, types.SaveWeightsForSamplerRequest)
    model = _model(state, body.model_id, request)
    release = state.release_time(model, "save_weights_for_sampler")
    if body.path is not None:
        saved = _saved(request, state, body.ttl_seconds)
        future = call(model.client.save_weights_for_sampler, _checkpoint_name(request, body.path), ttl_seconds=body.ttl_seconds)
        answer = then(future, lambda r: types.SaveWeightsForSamplerResponseInternal(path=saved(r.path)))
        return submitted(request, answer, dump, body.model_id, release)
    # save_weights_and_get_sampling_client: a snapshot and a sampling session on it.
    sampler_id = f"{body.model_id}:sample:{body.sampling_session_seq_id}"
    future = call(model.client.save_weights_and_get_sampling_client, kind=body.kind)

    def registered(client: Any) -> types.SaveWeightsForSamplerResponseInternal:
        from tinkerplug_local.server.state import Sampler

        path = state.paths.to_tinker(client.model_path) if client.model_path else None  # None: in-memory snapshot
        state.add_sampler(sampler_id, Sampler(client, model.base_model, path, model.owner))
        return types.SaveWeightsForSamplerResponseInternal(sampling_session_id=sampler_id)

    return submitted(request, then(future, registered), dump, body.model_id, release)


async def save_weights_external(request: Request) -> Any:
    """A PEFT copy under ``external_weights/`` that ``get_external_weights_urls`` serves."""
    state = _state(request)
    body = await parse(request, types.SaveWeightsExternalRequest)
    model = _model(state, body.model_id, request)
    if body.age_encryption_recipients:
        raise HTTPError(400, f"{endpoint(request)}: age encryption is not served by tinkerplug serve")
    try:
        destination = state.paths.local(body.model_id, "external_weights", body.path, must_exist=False)
    except ValueError as exc:  # PathError: a name that is no plain path segment
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    saved = _saved(request, state, body.ttl_seconds)
    future = call(model.client.save_weights_for_sampler, f"export-{uuid.uuid4().hex[:12]}")

    def moved(result: Any) -> types.SaveWeightsExternalResponseInternal:
        if destination.exists():
            raise FileExistsError(f"external weights {body.path!r} already exist for {body.model_id}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(result.path, destination)
        size = sum(f.stat().st_size for f in destination.iterdir() if f.is_file())
        return types.SaveWeightsExternalResponseInternal(path=saved(destination), size_bytes=size)

    return submitted(request, then(future, moved), dump, body.model_id, state.release_time(model, "save_weights_external"))


async def load_weights(request: Request) -> Any:
    state = _state(request)
    body = await parse(request, types.LoadWeightsRequest)
    try:
        local = str(state.readable_local(body.path, principal(request)))  # a published one too
    except (ValueError, FileNotFoundError) as exc:
        raise HTTPError(400 if isinstance(exc, ValueError) else 404, f"{endpoint(request)}: {exc}") from None
    if body.model_id is not None:  # into an existing model, in order with its other requests
        model = _model(state, body.model_id, request)
        method = model.client.load_state_with_optimizer if body.optimizer else model.client.load_state
        answer = then(call(method, local), lambda r: types.LoadWeightsResponse(path=body.path, model_id=body.model_id))
        return submitted(request, answer, dump, body.model_id, state.release_time(model, "load_weights"))
    if body.session_id is None or body.model_seq_id is None:
        raise HTTPError(400, f"{endpoint(request)}: LoadWeightsRequest needs model_id, or session_id and model_seq_id")
    return await _create_from_state(request, state, body, local)


async def _create_from_state(request: Request, state: Any, body: Any, local: str) -> Any:
    """``create_training_client_from_state[_with_optimizer]``: a new model from a checkpoint."""
    who = _new_model_allowed(request, state, body.session_id)
    _check_base_model(request, state, body.base_model)
    model_id = f"{body.session_id}:train:{body.model_seq_id}"
    meta = {k: str(v) for k, v in (body.user_metadata or {}).items()} if body.user_metadata is not None else None
    method = (
        state.service.create_training_client_from_state_with_optimizer
        if body.optimizer
        else state.service.create_training_client_from_state
    )
    def created(client: Any) -> types.LoadWeightsResponse:
        info = client.get_info()
        state.add_model(model_id, client, info.model_name or "", info.lora_rank or 0, meta, who.name)
        return types.LoadWeightsResponse(path=body.path, model_id=model_id)

    return await _create_once(request, model_id, lambda: method(local, base_model=body.base_model, user_metadata=meta), created)


ROUTES = [
    Route("/api/v1/create_model", create_model, methods=["POST"]),
    Route("/api/v1/get_info", get_info, methods=["POST"]),
    Route("/api/v1/forward_backward", forward_backward, methods=["POST"]),
    Route("/api/v1/optim_step", optim_step, methods=["POST"]),
    Route("/api/v1/save_weights", save_weights, methods=["POST"]),
    Route("/api/v1/save_weights_for_sampler", save_weights_for_sampler, methods=["POST"]),
    Route("/api/v1/save_weights_external", save_weights_external, methods=["POST"]),
    Route("/api/v1/load_weights", load_weights, methods=["POST"]),
]
