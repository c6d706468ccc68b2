"""The REST calls of the SDK's ``RestClient`` on runs and checkpoints, and the file downloads
behind ``get_external_weights_urls`` (signed, expiring URLs served by this server).

A key sees its own runs only (an admin key lists and reads every run, and changes only its
own); another key's run is answered as a missing one (404), and so is a download URL whose
signature does not match."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from tinker import types

from tinkerplug_local.server.http import HTTPError, endpoint, json_response, principal, query_int, read_json
from tinkerplug_local.server.paths import KINDS, PathError, check_segment
from tinkerplug_local.server.routes_checkpoints import remove_checkpoint
from tinkerplug_local.store import STATE_META

URL_TTL_S = 3600


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def _checked(request: Request, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (PathError, ValueError) as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    except (FileNotFoundError, KeyError) as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc.args[0] if exc.args else exc}") from None


def _checkpoints(state: Any, run: str) -> list[types.Checkpoint]:
    state.checkpoint_meta.sweep()
    run_dir = state.paths.run_dir(run)
    found = []
    for kind, kind_type in KINDS.items():
        folder = run_dir / kind
        for item in sorted(folder.iterdir()) if folder.is_dir() else []:
            if item.name.startswith(".") or not item.is_dir() or item.is_symlink():
                continue  # a checkpoint being written, or anything not the backend's
            size = sum(f.stat().st_size for f in item.iterdir() if f.is_file())
            meta = state.checkpoint_meta.get(f"{run}/{kind}/{item.name}")
            expires = meta.get("expires_at")
            found.append(
                types.Checkpoint(
                    checkpoint_id=f"{kind}/{item.name}", checkpoint_type=kind_type, time=_utc(item.stat().st_mtime),
                    tinker_path=f"tinker://{run}/{kind}/{item.name}", size_bytes=size, public=bool(meta.get("public")),
                    expires_at=_utc(expires) if expires is not None else None,
                )
            )
    return sorted(found, key=lambda c: c.time)


def _training_run(state: Any, run: str, who: Any) -> types.TrainingRun:
    """Run ``run`` as ``who`` may see it (``who`` None: the caller checked access already)."""
    if who is not None:
        state.check_run(run, who, listing=True)
    run_dir = state.paths.run_dir(run)
    model = state.models.get(run)
    checkpoints = _checkpoints(state, run) if run_dir.is_dir() else []
    if model is None and not checkpoints:
        raise KeyError(f"unknown training run {run!r}")
    meta: dict[str, Any] = {}
    if model is not None:
        meta = {"base_model": model.base_model, "rank": model.rank, "user_metadata": model.user_metadata}
    else:
        for state_file in sorted(run_dir.glob(f"weights/*/{STATE_META}")):
            meta = json.loads(state_file.read_text())
        if not meta:
            config = next(iter(sorted(run_dir.glob("*/*/adapter_config.json"))), None)
            adapter = json.loads(config.read_text()) if config else {}
            meta = {"base_model": adapter.get("base_model_name_or_path", ""), "rank": adapter.get("r")}
    last = {kind: [c for c in checkpoints if c.checkpoint_type == kind] for kind in ("training", "sampler")}
    last_time = max([c.time for c in checkpoints], default=_utc(model.last_request if model else time.time()))
    return types.TrainingRun(
        training_run_id=run, base_model=meta.get("base_model") or "", model_owner=state.run_owner(run), is_lora=True,
        lora_rank=meta.get("rank"), last_request_time=_utc(model.last_request) if model else last_time,
        last_checkpoint=(last["training"] or [None])[-1], last_sampler_checkpoint=(last["sampler"] or [None])[-1],
        user_metadata={k: str(v) for k, v in (meta.get("user_metadata") or {}).items()} or None,
    )


def _runs(state: Any, who: Any) -> list[str]:
    """The runs ``who`` may list: its own (every run for an admin key)."""
    from tinkerplug_local.server.state import visible

    # A run dir with no checkpoint is no run once its model is gone (a session finished unsaved).
    on_disk = {p.name for p in state.paths.root.iterdir() if p.is_dir() and not p.name.startswith(".") and _saved(p)}
    return sorted(run for run in on_disk | set(state.models) if visible(who, state.run_owner(run), listing=True))


def _saved(run_dir: Any) -> bool:
    return any(kind.is_dir() and any(kind.iterdir()) for kind in run_dir.iterdir())


async def list_training_runs(request: Request) -> Any:
    state = request.app.state.server
    limit, offset = query_int(request, "limit", 20), query_int(request, "offset", 0)
    runs = _runs(state, principal(request))
    page = [_checked(request, _training_run, state, run, principal(request)) for run in runs[offset : offset + limit]]
    cursor = types.Cursor(offset=offset, limit=limit, total_count=len(runs))
    return json_response(types.TrainingRunsResponse(training_runs=page, cursor=cursor))


async def get_training_run(request: Request) -> Any:
    state = request.app.state.server
    return json_response(_checked(request, _training_run, state, request.path_params["run"], principal(request)))


async def list_checkpoints(request: Request) -> Any:
    state = request.app.state.server
    run = request.path_params["run"]
    _checked(request, state.check_run, run, principal(request), True)
    checkpoints = _checked(request, _checkpoints, state, run)
    return json_response(types.CheckpointsListResponse(checkpoints=checkpoints))


async def list_user_checkpoints(request: Request) -> Any:
    state = request.app.state.server
    checkpoints = [c for run in _runs(state, principal(request)) for c in _checkpoints(state, run)]
    return json_response(types.CheckpointsListResponse(checkpoints=checkpoints))


async def delete_checkpoint(request: Request) -> Any:
    state = request.app.state.server
    p = request.path_params
    _checked(request, state.check_run, p["run"], principal(request))
    directory = _checked(request, state.paths.local, p["run"], p["kind"], p["name"])
    remove_checkpoint(state, f"{p['run']}/{p['kind']}/{p['name']}", directory)
    return json_response({})


async def weights_info(request: Request) -> Any:
    state = request.app.state.server
    body = await read_json(request)
    path = body.get("tinker_path") if isinstance(body, dict) else None
    run, _, _ = _checked(request, state.paths.parse, path)
    _checked(request, state.readable_local, path, principal(request))  # its own, or a published checkpoint
    info = _checked(request, _training_run, state, run, None)
    return json_response(types.WeightsInfoResponse(base_model=info.base_model, is_lora=True, lora_rank=info.lora_rank))


def _signature(state: Any, path: str, expires: int) -> str:
    return hmac.new(state.signing_key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


async def external_weights_urls(request: Request) -> Any:
    state = request.app.state.server
    p = request.path_params
    if p["kind"] != "external_weights":
        raise HTTPError(400, f"{endpoint(request)}: only external_weights checkpoints have download URLs")
    _checked(request, state.check_run, p["run"], principal(request))
    directory: Path = _checked(request, state.paths.local, p["run"], p["kind"], p["name"])
    expires = int(time.time()) + URL_TTL_S
    base = str(request.base_url).rstrip("/")
    urls = {}
    for file in sorted(f for f in directory.iterdir() if f.is_file() and not f.is_symlink()):
        path = f"{p['run']}/{p['kind']}/{p['name']}/{file.name}"
        urls[file.name] = f"{base}/api/v1/files/{path}?expires={expires}&signature={_signature(state, path, expires)}"
    return json_response(types.ExternalWeightsUrlsResponse(urls=urls, expires=_utc(expires)))


async def download_file(request: Request) -> Any:
    """A file of an external-weights checkpoint: the URL's signature is the authorization."""
    state = request.app.state.server
    p = request.path_params
    path = f"{p['run']}/{p['kind']}/{p['name']}/{p['file']}"
    try:
        expires = int(request.query_params.get("expires", "0"))
    except ValueError:
        expires = 0
    given = request.query_params.get("signature", "")
    if expires < time.time() or not hmac.compare_digest(given, _signature(state, path, expires)):
        # 404, as for a missing file: a guessed URL learns nothing about what exists.
        raise HTTPError(404, f"{endpoint(request)}: no such file, or the download URL is invalid or expired; ask for new URLs")
    directory: Path = _checked(request, state.paths.local, p["run"], p["kind"], p["name"])
    file = directory / _checked(request, check_segment, p["file"], "file name")
    if file.is_symlink() or not file.is_file():
        raise HTTPError(404, f"{endpoint(request)}: no such file")
    return FileResponse(file)


RUN = "/api/v1/training_runs/{run}"
CHECKPOINT = RUN + "/checkpoints/{kind}/{name}"
ROUTES = [
    Route("/api/v1/training_runs", list_training_runs, methods=["GET"]),
    Route(RUN, get_training_run, methods=["GET"]),
    Route(RUN + "/checkpoints", list_checkpoints, methods=["GET"]),
    Route(CHECKPOINT, delete_checkpoint, methods=["DELETE"]),
    Route(CHECKPOINT + "/external_weights_urls", external_weights_urls, methods=["GET"]),
    Route("/api/v1/checkpoints", list_user_checkpoints, methods=["GET"]),
    Route("/api/v1/weights_info", weights_info, methods=["POST"]),
    Route("/api/v1/files/{run}/{kind}/{name}/{file}", download_file, methods=["GET"]),
]
