"""The ``RestClient`` checkpoint calls beyond listing: TTL, publish/unpublish, deletion by a
bare checkpoint id, copies, and the storage the checkpoint dir holds.

A published checkpoint is readable by every key, as on Tinker: another key may load it into its
own model, sample from it and ask what it is (``weights_info``); only its owner may change it
(TTL, publish, delete: 404 to anyone else), and unpublishing hides it again. TTLs expire for real
(``checkpoint_meta.py``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tinker import types

from tinkerplug_local.server.checkpoint_meta import MAX_TTL_S
from tinkerplug_local.server.http import HTTPError, endpoint, json_response, parse, principal, read_json
from tinkerplug_local.server.paths import KINDS, PathError

RUN = "/api/v1/training_runs/{run}"
CHECKPOINT = RUN + "/checkpoints/{kind}/{name}"


def _checkpoint(request: Request) -> tuple[str, Path]:
    """("run/kind/name", its directory) of the route's checkpoint; 400 or 404 if none."""
    state = request.app.state.server
    p = request.path_params
    try:
        state.check_run(p["run"], principal(request))
        directory = state.paths.local(p["run"], p["kind"], p["name"])
    except PathError as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    except FileNotFoundError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc}") from None
    return f"{p['run']}/{p['kind']}/{p['name']}", directory


async def set_ttl(request: Request) -> Any:
    key, _ = _checkpoint(request)
    body = await read_json(request)
    ttl = body.get("ttl_seconds") if isinstance(body, dict) else None
    if not isinstance(body, dict) or "ttl_seconds" not in body or not (ttl is None or isinstance(ttl, int)):
        raise HTTPError(400, f"{endpoint(request)}: the body needs ttl_seconds (whole seconds, or null for no expiry)")
    try:
        request.app.state.server.checkpoint_meta.set_ttl(key, ttl)
    except ValueError as exc:
        raise HTTPError(400, f"{endpoint(request)}: ttl_seconds: {exc}") from None
    return JSONResponse({})


async def publish(request: Request) -> Any:
    key, _ = _checkpoint(request)
    await request.body()
    request.app.state.server.checkpoint_meta.set_public(key, request.method == "POST")
    return JSONResponse({})


async def delete_by_id(request: Request) -> Any:
    """``delete_checkpoint(run, name)`` with a bare name: the one checkpoint of that name."""
    state = request.app.state.server
    run, name = request.path_params["run"], request.path_params["name"]
    try:
        state.check_run(run, principal(request))
    except PathError as exc:
        raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
    except FileNotFoundError as exc:
        raise HTTPError(404, f"{endpoint(request)}: {exc}") from None
    found = []
    for kind in KINDS:
        try:
            found.append((kind, state.paths.local(run, kind, name)))
        except PathError as exc:
            raise HTTPError(400, f"{endpoint(request)}: {exc}") from None
        except FileNotFoundError:
            continue
    if len(found) != 1:
        what = "no checkpoint" if not found else f"{len(found)} checkpoints ({', '.join(k for k, _ in found)})"
        raise HTTPError(404 if not found else 400, f"{endpoint(request)}: {what} named {name!r} in run {run!r}; give <kind>/{name}")
    kind, directory = found[0]
    remove_checkpoint(state, f"{run}/{kind}/{name}", directory)
    return JSONResponse({})


def remove_checkpoint(state: Any, key: str, directory: Path) -> None:
    shutil.rmtree(directory)
    state.checkpoint_meta.forget(key)
    models = getattr(state, "oai_models", None)
    if models is not None:
        models.forget_run(key.split("/", 1)[0])


async def copy_weights(request: Request) -> Any:
    """A copy in a new run that cannot be trained on; files are hard links where the disk allows."""
    state = request.app.state.server
    body = await parse(request, types.CopyWeightsRequest)
    try:
        run, kind, name = state.paths.parse(body.source_path)
        state.check_run(run, principal(request))
        source = state.paths.local(run, kind, name)
    except PathError as exc:
        raise HTTPError(400, f"{endpoint(request)}: source_path: {exc}") from None
    except FileNotFoundError as exc:
        raise HTTPError(404, f"{endpoint(request)}: source_path: {exc}") from None
    if body.ttl_seconds is not None and not 0 < body.ttl_seconds <= MAX_TTL_S:  # checked before anything is written
        raise HTTPError(400, f"{endpoint(request)}: ttl_seconds must be between 1 and {MAX_TTL_S}, or null")
    copy_run = f"copy-{uuid.uuid4().hex[:12]}"
    target = state.paths.local(copy_run, kind, name, must_exist=False)
    target.parent.mkdir(parents=True)
    state.write_owner(copy_run, principal(request).name)  # the copy is the caller's
    shutil.copytree(source, target, copy_function=_link_or_copy)
    if body.ttl_seconds is not None:
        state.checkpoint_meta.set_ttl(f"{copy_run}/{kind}/{name}", body.ttl_seconds)
    return json_response(types.CopyWeightsResponse(tinker_path=f"tinker://{copy_run}/{kind}/{name}"))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


async def storage_usage(request: Request) -> Any:
    state = request.app.state.server
    from tinkerplug_local.server.state import visible

    state.checkpoint_meta.sweep()
    who = principal(request)
    dirs = [d for d in state.paths.root.glob("*/*/*") if d.is_dir() and d.parent.name in KINDS and not d.name.startswith(".")
            and visible(who, state.run_owner(d.parent.parent.name), listing=True)]  # the caller's storage (an admin: all)
    size = sum(f.stat().st_size for d in dirs for f in d.iterdir() if f.is_file())
    item = types.CurrentCheckpointStorageUsageItem(
        project_id=request.query_params.get("project_id") or "local", checkpoint_count=len(dirs),
        size_bytes=size, size_gigabytes=size / 1e9, estimated_monthly_cost_usd=0.0,
    )
    return json_response(types.CurrentCheckpointStorageUsageResponse(effective_rate_usd_per_gigabyte_month=0.0, data=[item]))


ROUTES = [
    Route(CHECKPOINT + "/ttl", set_ttl, methods=["PUT"]),
    Route(CHECKPOINT + "/publish", publish, methods=["POST", "DELETE"]),
    Route(RUN + "/checkpoints/{name}", delete_by_id, methods=["DELETE"]),
    Route("/api/v1/copy_weights", copy_weights, methods=["POST"]),
    Route("/api/v1/billing/usage/checkpoints/current", storage_usage, methods=["GET"]),
]
