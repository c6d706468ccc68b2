"""Session and service endpoints, and ``/retrieve_future``, which delivers every result."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tinker import types

from tinkerplug_local.server.futures import error_body
from tinkerplug_local.server.http import HTTPError, admit, endpoint, json_response, parse, principal, protobuf, read_json
from tinkerplug_local.server.routes_sessions import record_created, record_finished

# Flags the SDK reads once per client. Chunks of one forward_backward are sent one after the
# other (not in parallel), so requests reach the worker in the order of their seq_id; custom
# losses are uploaded and run here in one pass (routes_losses.py).
CLIENT_CONFIG = types.ClientConfigResponse(parallel_fwdbwd_chunks=False, use_pyqwest_transport=False, custom_loss_server_side=True)


async def client_config(request: Request) -> Any:
    return json_response(CLIENT_CONFIG)


async def client_dynamic_config(request: Request) -> Any:
    return json_response(types.ClientDynamicConfigResponse())


async def create_session(request: Request) -> Any:
    body = await parse(request, types.CreateSessionRequest)
    session_id = request.app.state.server.new_session(admit(request))
    record_created(request.app.state.server, session_id, body, principal(request).name)
    return json_response(types.CreateSessionResponse(session_id=session_id))


async def session_heartbeat(request: Request) -> Any:
    body = await parse(request, types.SessionHeartbeatRequest)
    try:
        request.app.state.server.heartbeat(body.session_id, principal(request))
    except KeyError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None
    return json_response(types.SessionHeartbeatResponse())


async def finish_session(request: Request) -> Any:
    body = await read_json(request)
    session_id = request.path_params["session_id"]
    try:
        request.app.state.server.finish_session(session_id, principal(request))
    except KeyError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0]}") from None
    record_finished(request.app.state.server, session_id, body)
    return JSONResponse({})


async def get_server_capabilities(request: Request) -> Any:
    state = request.app.state.server
    capabilities = state.service.get_server_capabilities()
    names = {m.model_name for m in capabilities.supported_models}
    loaded = sorted({m.base_model for m in list(state.models.values())} - names)  # base models only: no owner's data
    extra = [types.SupportedModel(model_name=name, trainable=True, sampleable=True) for name in loaded]
    return json_response(types.GetServerCapabilitiesResponse(supported_models=[*capabilities.supported_models, *extra]))


async def healthz(request: Request) -> Any:
    return JSONResponse({"status": "ok"})


async def telemetry(request: Request) -> Any:
    await request.body()  # accepted and dropped: nothing leaves this machine
    return JSONResponse({"status": "accepted"})


async def retrieve_future(request: Request) -> Any:
    state = request.app.state.server
    body = await parse(request, types.FutureRetrieveRequest)
    pending = state.futures.get(body.request_id, principal(request).name)
    if pending is None:
        raise HTTPError(404, f"{endpoint(request)}: unknown request_id {body.request_id!r} (the server restarted, or it expired)")
    if not await state.futures.wait(pending):
        return JSONResponse(
            {"type": "try_again", "request_id": body.request_id, "queue_state": "active"}, status_code=408
        )
    state.futures.mark_retrieved(pending)
    if pending.future.cancelled():
        return JSONResponse({"error": "the request was cancelled (cancel_future)", "category": "user"})
    exception = pending.future.exception()
    if exception is not None:
        return JSONResponse(error_body(exception))
    answer = pending.encode(pending.future.result())
    return protobuf(answer) if isinstance(answer, bytes) else JSONResponse(answer)


async def cancel_future(request: Request) -> Any:
    body = await read_json(request)
    request_id = body.get("request_id") if isinstance(body, dict) else None
    if not isinstance(request_id, str):
        raise HTTPError(400, f"{endpoint(request)}: the body needs request_id")
    if not request.app.state.server.futures.cancel(request_id, principal(request).name):
        pending = request.app.state.server.futures.get(request_id, principal(request).name)
        if pending is None:  # unknown, or another key's: the same answer
            raise HTTPError(404, f"{endpoint(request)}: unknown request_id {request_id!r}")
    return JSONResponse({})  # one already running finishes; its result is dropped later


ROUTES = [
    Route("/api/v1/client/config", client_config, methods=["POST"]),
    Route("/api/v1/client/dynamic_config", client_dynamic_config, methods=["POST"]),
    Route("/api/v1/create_session", create_session, methods=["POST"]),
    Route("/api/v1/session_heartbeat", session_heartbeat, methods=["POST"]),
    Route("/api/v1/sessions/{session_id}/finish", finish_session, methods=["POST"]),
    Route("/api/v1/get_server_capabilities", get_server_capabilities, methods=["GET", "POST"]),
    Route("/api/v1/healthz", healthz, methods=["GET"]),
    Route("/api/v1/telemetry", telemetry, methods=["POST"]),
    Route("/api/v1/retrieve_future", retrieve_future, methods=["POST"]),
    Route("/api/v1/cancel_future", cancel_future, methods=["POST"]),
]
