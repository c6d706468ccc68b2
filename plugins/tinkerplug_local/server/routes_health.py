"""``/healthz`` (no key needed: for load balancers and supervisors) and ``/metrics`` (admin keys
only; another key gets 404, as for any route it may not see)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from tinkerplug_local.server.http import HTTPError, endpoint, principal

NO_KEY_PATHS = ("/healthz",)


async def healthz(request: Request) -> Any:
    state = request.app.state.server
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Any:
    who = principal(request)
    if who is None or not who.admin:
        raise HTTPError(404, f"{endpoint(request)} is not served to this key (metrics need an admin key)")
    state = request.app.state.server
    return PlainTextResponse(state.metrics.render(state), media_type="text/plain; version=0.0.4")


ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
