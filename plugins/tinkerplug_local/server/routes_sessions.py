"""The ``RestClient`` session calls: get, list and search the sessions this server has seen.

A key sees its own sessions (an admin key lists every key's); another key's is answered as an
unknown one (404).

A session is remembered from ``create_session`` until the server stops, finished ones too
(with how they ended), newest first; its training runs are the runs named after it, in memory
or on disk (``<session>:train:<n>``), its samplers the ones still open.
"""

from __future__ import annotations

import datetime
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from tinker import types

from tinkerplug_local.server.http import HTTPError, endpoint, json_response, parse, principal, query_int

MAX_FINISHED = 1000  # finished sessions remembered, newest kept


def record_created(state: Any, session_id: str, body: Any, owner: str) -> None:
    meta = {k: str(v) for k, v in (body.user_metadata or {}).items()} or None
    state.session_info[session_id] = {"owner": owner,
        "created": datetime.datetime.now(datetime.timezone.utc), "user_metadata": meta,
        "display_name": body.display_name, "project_id": body.project_id or "local", "status": {"type": "active"},
    }


MAX_DETAIL = 4000  # characters of a finished session's detail kept


def record_finished(state: Any, session_id: str, body: Any) -> None:
    info = state.session_info.get(session_id)
    if info is None:
        return
    reason = body.get("reason") if isinstance(body, dict) else None
    kind = reason.get("type") if isinstance(reason, dict) else None
    if kind in ("success", "errored", "interrupted"):
        detail = body.get("detail")  # the SDK sends a string; anything else is kept as its text
        info["status"] = {"type": "client_finished", "reason": {"type": kind},
                          "detail": None if detail is None else str(detail)[:MAX_DETAIL]}
    else:
        info["status"] = {"type": "client_finished", "reason": {"type": "success"}}
    finished = [s for s, i in state.session_info.items() if i["status"]["type"] != "active"]
    for old in finished[: max(0, len(finished) - MAX_FINISHED)]:
        del state.session_info[old]


def _visible(request: Request, info: dict[str, Any], listing: bool = True) -> bool:
    from tinkerplug_local.server.state import visible

    return visible(principal(request), info["owner"], listing)


def _info(request: Request, session_id: str) -> dict[str, Any]:
    info = request.app.state.server.session_info.get(session_id)
    if info is None or not _visible(request, info):
        raise HTTPError(404, f"{endpoint(request)}: unknown session {session_id!r} (created by another server process?)")
    return info


def _runs(state: Any, session_id: str) -> list[str]:
    prefix = f"{session_id}:"
    on_disk = {p.name for p in state.paths.root.glob(f"{session_id}:*") if p.is_dir()}
    return sorted({m for m in list(state.models) if m.startswith(prefix)} | on_disk)


def _checkpoint_dirs(state: Any, session_id: str) -> list[Any]:
    return [d for run in _runs(state, session_id) for d in (state.paths.root / run).glob("*/*") if d.is_dir() and not d.name.startswith(".")]


async def get_session(request: Request) -> Any:
    state = request.app.state.server
    session_id = request.path_params["session_id"]
    info = _info(request, session_id)
    samplers = sorted(s for s in list(state.samplers) if s.startswith(f"{session_id}:"))
    return json_response(types.GetSessionResponse(
        training_run_ids=_runs(state, session_id), sampler_ids=samplers,
        user_metadata=info["user_metadata"], display_name=info["display_name"],
    ))


async def list_sessions(request: Request) -> Any:
    state = request.app.state.server
    limit, offset = query_int(request, "limit", 20), query_int(request, "offset", 0)
    mine = {s: i for s, i in list(state.session_info.items()) if _visible(request, i)}
    newest = sorted(mine, key=lambda s: mine[s]["created"], reverse=True)
    return json_response(types.ListSessionsResponse(sessions=newest[offset : offset + limit]))


async def search_sessions(request: Request) -> Any:
    state = request.app.state.server
    body = await parse(request, types.SessionSearchRequest)
    rows = []
    for session_id, info in sorted(state.session_info.items(), key=lambda kv: (kv[1]["created"], kv[0]), reverse=True):
        if _visible(request, info) and _matches(body, session_id, info) and _after_cursor(body, session_id, info):
            rows.append(_summary(state, session_id, info))
    page = rows[: body.limit]
    cursor = None
    if len(rows) > body.limit:
        cursor = types.SessionSearchCursor(last_created_at=page[-1].created_at, last_session_id=page[-1].session_id)
    return json_response(types.SessionSearchResponse(sessions=page, next_cursor=cursor))


def _matches(body: Any, session_id: str, info: dict[str, Any]) -> bool:
    if body.session_id and body.session_id != session_id:
        return False
    if body.project_ids and info["project_id"] not in body.project_ids:
        return False
    if body.display_name and body.display_name != info["display_name"]:
        return False
    meta = info["user_metadata"] or {}
    if any(meta.get(k) != v for k, v in body.user_metadata.items()):
        return False
    return not body.statuses or any(_status_matches(query, info["status"]) for query in body.statuses)


def _status_matches(query: Any, status: dict[str, Any]) -> bool:
    if query.type != status["type"]:
        return False
    reasons = getattr(query, "reasons", None)
    return not reasons or status.get("reason", {}).get("type") in reasons


def _after_cursor(body: Any, session_id: str, info: dict[str, Any]) -> bool:
    if body.cursor is None:
        return True
    return (info["created"], session_id) < (body.cursor.last_created_at, body.cursor.last_session_id)


def _summary(state: Any, session_id: str, info: dict[str, Any]) -> Any:
    dirs = _checkpoint_dirs(state, session_id)
    size = sum(f.stat().st_size for d in dirs for f in d.iterdir() if f.is_file())
    return types.SessionSummary(
        session_id=session_id, created_at=info["created"], owner=info["owner"], project_id=info["project_id"],
        status=info["status"], checkpoints_count=len(dirs), display_name=info["display_name"],
        user_metadata=info["user_metadata"], checkpoint_storage_bytes=size,
    )


ROUTES = [
    Route("/api/v1/sessions", list_sessions, methods=["GET"]),
    Route("/api/v1/sessions/search", search_sessions, methods=["POST"]),
    Route("/api/v1/sessions/{session_id}", get_session, methods=["GET"]),
]

