"""Small helpers shared by the routes: reading bodies into the SDK's types, answering errors in
the service's shape (``{"detail": ...}``, named after the endpoint), and futures."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tinkerplug_local.server.futures import failed

T = TypeVar("T")

# The SDK retries 408, 409, 429 and 5xx for minutes; an answer it must not retry says so.
NO_RETRY = {"x-should-retry": "false"}


class HTTPError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def error_response(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=NO_RETRY)


def endpoint(request: Request) -> str:
    return f"{request.method} {request.url.path}"


async def read_json(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPError(400, f"{endpoint(request)}: the body is not JSON ({exc})") from None


async def parse(request: Request, model_cls: type[T]) -> T:
    """The body as one of the SDK's request types; 400 naming the endpoint and field if not."""
    from pydantic import ValidationError

    data = await read_json(request)
    try:
        return model_cls.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise HTTPError(400, f"{endpoint(request)}: invalid {model_cls.__name__}: {problems}") from None


def dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def json_response(model: Any) -> JSONResponse:
    return JSONResponse(dump(model) if hasattr(model, "model_dump") else model)


PRINCIPAL = "tinkerplug.principal"  # the scope key the app's guard sets


def principal(request: Request) -> Any:
    """The ``Principal`` of the key that sent ``request`` (``principals.py``)."""
    return request.scope[PRINCIPAL]


def query_int(request: Request, name: str, default: int) -> int:
    """A whole number >= 0 from the query string (400 for anything else)."""
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        value = -1
    if value < 0:
        raise HTTPError(400, f"{endpoint(request)}: {name} must be a whole number >= 0")
    return value


def admit(request: Request) -> Any:
    """The caller's principal, once it is under its limit of queued requests (LimitError, 429)."""
    from tinkerplug_local.server.state import LimitError

    who = principal(request)
    if request.app.state.server.draining:
        raise HTTPError(503, f"{endpoint(request)}: tinkerplug serve is shutting down and takes no new work; "
                             "send it again once the server is back (checkpoints saved before are kept)")
    limit = who.limits.max_queued
    if limit and request.app.state.server.futures.queued().get(who.name, 0) >= limit:
        raise LimitError(f"{endpoint(request)}: key {who.name!r} has {limit} requests queued, its limit; "
                         "wait for their results before sending more", 1, True)
    return who


def submitted(request: Request, future: Any, encode: Any, model_id: str | None = None, release_at: float | None = None,
              **extra: Any) -> JSONResponse:
    """Register ``future`` as the caller's and answer with the SDK's ``UntypedAPIFuture``."""
    kind = request.url.path.rsplit("/", 1)[-1]
    request_id = request.app.state.server.futures.add(future, encode, release_at, principal(request).name, kind)
    body = {"request_id": request_id, **({"model_id": model_id} if model_id else {}), **extra}
    return JSONResponse(body)


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(...)``'s future; an error raised while submitting fails the future instead, so it
    reaches the client as a failed request (the service checks inputs when it runs them)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - delivered through the future
        return failed(exc)


def protobuf(data: bytes) -> Response:
    from tinkerplug_local.server.wire import PROTO

    return Response(data, media_type=PROTO)
