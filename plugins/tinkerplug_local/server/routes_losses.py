"""``/api/v1/create_custom_loss``: a traced loss the SDK uploads (``ServiceClient.create_custom_loss``
when the client config says ``custom_loss_server_side``), checked against the whitelist of
``loss_graph.py`` and kept for its session; ``forward_backward(data, "custom", {"loss_id": ...})``
then runs it in one pass (``uploaded.py``). A graph that calls anything else, or whose loss is
not a scalar, is answered 400 naming the node and the operation; nothing is written to disk.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from tinker import types

from tinkerplug_local.server.futures import then
from tinkerplug_local.server.http import HTTPError, dump, endpoint, parse, principal, submitted


async def create_custom_loss(request: Request) -> Any:
    from tinkerplug_local.worker import completed

    state = request.app.state.server
    body = await parse(request, types.CreateCustomLossRequest)
    try:  # the caller's own session only (another key's: 404, as for an unknown one)
        state.heartbeat(body.session_id, principal(request))
    except KeyError:
        raise HTTPError(404, f"{endpoint(request)}: unknown session {body.session_id!r}") from None
    loss_id = f"{body.session_id}:loss:{body.custom_loss_seq_id}"
    try:
        state.service.uploaded_losses.create(body.session_id, loss_id, body.name, body.inputs, body.graph.nodes,
                                             key=principal(request).name)
    except ValueError as exc:  # GraphError included
        raise HTTPError(400, f"{endpoint(request)}: loss {body.name!r}: {exc}") from None
    answer = then(completed(loss_id), lambda i: types.CreateCustomLossResponse(loss_id=i))
    return submitted(request, answer, dump)


ROUTES = [Route("/api/v1/create_custom_loss", create_custom_loss, methods=["POST"])]
