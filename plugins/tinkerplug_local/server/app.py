"""The ASGI app: the routes, API-key check (the key names the caller's principal), body size
limit, and errors in the service's shape."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tinkerplug_local.server.http import PRINCIPAL, HTTPError, endpoint, error_response, NO_RETRY

DEFAULT_MAX_BODY = 512 * 1024 * 1024
UNSIGNED_PREFIX = "/api/v1/files/"  # download URLs carry their own signature instead of a key
NO_KEY = ("/healthz",)  # a supervisor's probe carries no key
OAI_PREFIX = "/oai/"  # the OpenAI-compatible API: its errors in OpenAI's shape


# Routes of the service that have no meaning on one machine, and why (what the SDK surfaces).
REFUSED = {
    "/api/v1/audit": "there is no organization audit log on one machine",
    "/api/v1/billing/usage/events": "nothing is billed on one machine",
    "/api/v1/auth/token": "it takes plain API keys (--api-key), not JWTs; whoami needs a JWT",
    "/api/v1/auth/apikey/me": "it takes plain API keys (--api-key) and has no accounts",
    "/api/v1/retrieve_futures": "its client config leaves sample_use_retrieve_futures off; results come by retrieve_future",
    "/api/v1/join_sampling_session": "its client config leaves sample_join_sampling_session off",
}
REFUSED_SUFFIXES = {
    "/project": "there are no projects on one machine (every session is in project 'local')",
    "/trace_export": "it records no session traces",
}


async def not_served(request: Request) -> Any:
    path = request.url.path
    why = REFUSED.get(path) or next((w for s, w in REFUSED_SUFFIXES.items() if path.startswith("/api/v1/sessions/") and path.endswith(s)), None)
    raise HTTPError(404, f"{endpoint(request)}: not served by tinkerplug serve: {why or 'no such route on the local backend'}")


async def _http_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, HTTPError)
    if request.url.path.startswith(OAI_PREFIX):
        return oai_error_response(exc.status, exc.detail, getattr(exc, "param", None), getattr(exc, "code", None))
    return error_response(exc.status, exc.detail)


async def _limit_error(request: Request, exc: Exception) -> Any:
    from starlette.responses import JSONResponse

    headers = {"retry-after": str(exc.retry_after_s), **({} if exc.retry else NO_RETRY)}  # type: ignore[attr-defined]
    return JSONResponse({"detail": str(exc)}, status_code=429, headers=headers)


async def _server_error(request: Request, exc: Exception) -> Any:
    detail = f"{endpoint(request)}: {type(exc).__name__}: {exc}"
    if request.url.path.startswith(OAI_PREFIX):
        return oai_error_response(500, detail)
    return error_response(500, detail)


def oai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which its clients read the message from."""
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}.get(status)
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def oai_error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(oai_error_body(status, message, param, code), status_code=status, headers={"x-should-retry": "false"})


def create_app(state: Any, keyring: Any, max_body: int = DEFAULT_MAX_BODY) -> Any:
    """``keyring``: a ``principals.Keyring`` (or a list of keys, each its own principal)."""
    from tinkerplug_local.server import (
        routes_checkpoints, routes_health, routes_losses, routes_oai, routes_rest, routes_sampling, routes_service,
        routes_sessions,
        routes_training,
    )
    from tinkerplug_local.server.principals import Keyring, Limits, load_keyring
    from tinkerplug_local.server.state import LimitError

    if not isinstance(keyring, Keyring):
        keyring = load_keyring(tuple(keyring), "", None, Limits(), "TINKERPLUG_SERVE_KEYS")
    routes = [
        *routes_service.ROUTES, *routes_training.ROUTES, *routes_sampling.ROUTES, *routes_rest.ROUTES,
        *routes_checkpoints.ROUTES, *routes_sessions.ROUTES, *routes_oai.ROUTES, *routes_losses.ROUTES,
        *routes_health.ROUTES,
    ]
    routes.append(Route("/{path:path}", not_served, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]))
    handlers = {HTTPError: _http_error, LimitError: _limit_error, Exception: _server_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.server = state
    return Guard(app, keyring, max_body)


class _TooLarge(HTTPError):
    """Raised while a route reads a body that outgrows the limit: answered 413 by its handler."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body over the server's limit of {limit} bytes")


class Guard:
    """Checks the API key and the body size before any route runs; the key's principal goes
    into the request's scope for the routes' owner checks."""

    def __init__(self, app: Any, keyring: Any, max_body: int):
        self.app = app
        self.keyring = keyring
        self.max_body = max_body

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        oai = scope["path"].startswith(OAI_PREFIX)
        who = self.keyring.identify(request_key(headers))  # the key is never echoed or logged
        if who is None and not scope["path"].startswith(UNSIGNED_PREFIX) and scope["path"] not in NO_KEY:
            return await _send(send, 401, "the API key was not accepted by this tinkerplug serve (set TINKER_API_KEY to one of its --api-key keys)", oai)
        scope[PRINCIPAL] = who
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return await _send(send, 413, f"request body over the server's limit of {self.max_body} bytes", oai)
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _TooLarge(self.max_body)
            return message

        await self._observed(scope, limited, send, who)

    async def _observed(self, scope: dict, receive: Any, send: Any, who: Any) -> None:
        """Run the app; count the answer in ``/metrics`` by key name, endpoint and status."""
        import time

        start, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = getattr(scope.get("endpoint"), "__name__", "not_served")
            self.app.state.server.metrics.observe_http(who.name if who else "-", endpoint, status[0], time.perf_counter() - start)


def request_key(headers: dict[bytes, bytes]) -> bytes:
    """The SDK sends ``X-API-Key``; OpenAI clients ``Authorization: Bearer <key>``."""
    key = headers.get(b"x-api-key", b"")
    bearer = headers.get(b"authorization", b"")
    if not key and bearer[:7].lower() == b"bearer ":
        key = bearer[7:].strip()
    return key


async def _send(send: Any, status: int, detail: str, oai: bool = False) -> None:
    body = json.dumps(oai_error_body(status, detail) if oai else {"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"x-should-retry", b"false")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
