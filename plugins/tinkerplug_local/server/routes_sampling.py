"""Sampling endpoints: sampling sessions, ``/asample`` (prompt logprobs and every sampling
option the local backend takes), and the sampler record the SDK asks for."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from tinker import types

from tinkerplug.errors import TinkerplugError

from tinkerplug_local.sampling import MAX_SAMPLES
from tinkerplug_local.server.http import HTTPError, admit, endpoint, json_response, parse, principal, submitted
from tinkerplug_local.server.state import Sampler
from tinkerplug_local.server.wire import encode_sample_response

# SampleRequest fields passed to the local SamplingClient.sample when set (defaults are left
# out, so a local backend without an option still serves every request that does not use it).
OPTIONS = ("topk_prompt_logprobs", "topk_sample_logprobs", "prompt_alt_tokens_k", "prompt_logprobs_last_n")


async def _open_sampler(request: Request, model_path: str | None, base_model: str | None) -> Sampler:
    state = request.app.state.server
    local = None
    if model_path is not None:
        try:
            local = str(state.readable_local(model_path, principal(request)))  # a published one too
        except (ValueError, FileNotFoundError) as exc:
            raise HTTPError(400 if isinstance(exc, ValueError) else 404, f"{endpoint(request)}: {exc}") from None
    elif base_model is None:
        raise HTTPError(400, f"{endpoint(request)}: needs model_path (tinker://...) or base_model")
    else:
        try:
            state.check_base_model(base_model)
        except ValueError as exc:
            raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    try:
        future = await run_in_threadpool(state.service.create_sampling_client, model_path=local, base_model=base_model)
        client = await asyncio.wrap_future(future.future())
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError, TinkerplugError) as exc:  # e.g. no such base model
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    return Sampler(client, base_model or client.get_base_model(), model_path, principal(request).name)


async def create_sampling_session(request: Request) -> Any:
    state = request.app.state.server
    body = await parse(request, types.CreateSamplingSessionRequest)
    try:
        state.session(body.session_id, principal(request))
    except KeyError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None
    sampler = await _open_sampler(request, body.model_path, body.base_model)
    sampler_id = f"{body.session_id}:sample:{body.sampling_session_seq_id}"
    try:
        state.add_sampler(sampler_id, sampler)
    except KeyError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None
    return json_response(types.CreateSamplingSessionResponse(sampling_session_id=sampler_id))


async def asample(request: Request) -> Any:
    state = request.app.state.server
    body = await parse(request, types.SampleRequest)
    who = admit(request)
    if body.sampling_session_id is not None:
        try:
            sampler = state.sampler(body.sampling_session_id, who)
        except KeyError as exc:
            raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None
    else:
        sampler = await _open_sampler(request, body.model_path, body.base_model)
    options: dict[str, Any] = {name: getattr(body, name) for name in OPTIONS if getattr(body, name)}
    if body.target_prompt_logprobs is not None:
        options["target_prompt_logprobs"] = types.TensorData(**body.target_prompt_logprobs.model_dump())
    if not 1 <= body.num_samples <= MAX_SAMPLES:  # before making its ids
        raise HTTPError(400, f"{endpoint(request)}: num_samples must be between 1 and {MAX_SAMPLES}")
    ids = [uuid.uuid4().hex for _ in range(body.num_samples)]  # fixed at submission, as the SDK expects
    try:  # the request's own checks (prompt tokens, max_tokens, seed) run here: its own 400, not its batch's failure
        future = sampler.client.sample(
            body.prompt, body.num_samples, body.sampling_params,
            include_prompt_logprobs=bool(body.prompt_logprobs), record_stability_info=bool(body.record_stability_info),
            sequence_ids=ids, **options,
        )
    except (ValueError, NotImplementedError) as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    return submitted(request, future, encode_sample_response, sample_sequence_ids=ids)


async def get_sampler(request: Request) -> Any:
    state = request.app.state.server
    sampler_id = request.path_params["sampler_id"]
    try:
        sampler = state.sampler(sampler_id, principal(request))
    except KeyError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None
    return json_response(types.GetSamplerResponse(sampler_id=sampler_id, base_model=_loadable(sampler.base_model), model_path=sampler.model_path))


def _loadable(base_model: str) -> str:
    """A shipped model by its directory: the SDK's ``SamplingClient.get_tokenizer()`` loads the
    tokenizer from the base model this returns, and a shipped name is no hub id."""
    from tinkerplug.models import shipped_model_dir

    directory = shipped_model_dir(base_model)
    return str(directory) if directory is not None else base_model


ROUTES = [
    Route("/api/v1/create_sampling_session", create_sampling_session, methods=["POST"]),
    Route("/api/v1/asample", asample, methods=["POST"]),
    Route("/api/v1/samplers/{sampler_id:path}", get_sampler, methods=["GET"]),
]
