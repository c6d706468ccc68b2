"""Call every public method of the installed tinker SDK's clients against ``tinkerplug serve``.

The methods are found by introspection (``ServiceClient``, ``TrainingClient``,
``SamplingClient``, ``RestClient``; sync and async alike); each is called with valid arguments
against a real server (started in this process on a free loopback port, on the shipped
``tiny-chat`` model) and its outcome recorded:

- ``works``: it returned (a future's result too);
- ``refused``: the server answered "not served by tinkerplug serve: <why>" (the documented
  refusal), and the SDK surfaced it;
- ``fails``: anything else, with the error.

    python scripts/sdk_conformance.py            # print the table
    python scripts/sdk_conformance.py --update   # write docs/reference/sdk-conformance.md
    python scripts/sdk_conformance.py --check    # exit 1 when that page is stale

A method of a newer SDK that this script has no call for is reported as ``fails`` ("no call
written"), so a new release shows at once what changed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import inspect
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "sdk-conformance.md"
KEY = "tml-conformance"
MODEL = "tiny-chat"
REFUSAL = "not served by tinkerplug serve"
TIMEOUT_S = 120.0
# Refusals the SDK itself raises before any request, because of what serve (by design) is not.
CLIENT_REFUSALS = {
    "whoami requires JWT auth": "client-side: whoami reads a JWT's claims; tinkerplug serve takes plain API keys (no JWT auth)",
}
CLASSES = ("ServiceClient", "TrainingClient", "SamplingClient", "RestClient")


def public_methods() -> list[tuple[str, str]]:
    """(class, method) for every public attribute of the SDK's four clients, sorted."""
    import tinker

    found = []
    for cls_name in CLASSES:
        cls = getattr(tinker, cls_name)
        found += [(cls_name, name) for name in sorted(dir(cls)) if not name.startswith("_")]
    return found


# -- calling ----------------------------------------------------------------------------------------


def resolve(value: Any) -> Any:
    """A method's answer, awaited or ``.result()``-ed until it is a plain value."""
    for _ in range(4):
        if inspect.isawaitable(value):
            value = asyncio.run(_wait(value))
        elif type(value).__name__ in ("APIFuture", "AwaitableConcurrentFuture") or hasattr(value, "result_async"):
            value = value.result(timeout=TIMEOUT_S)
        else:
            return value
    return value


async def _wait(awaitable: Any) -> Any:
    return await asyncio.wait_for(_await(awaitable), TIMEOUT_S)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def outcome(fn: Callable[[], Any]) -> tuple[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resolve(fn())
    except Exception as exc:  # noqa: BLE001 - recorded in the table
        text = " ".join(str(exc).split()) or type(exc).__name__
        for message, why in CLIENT_REFUSALS.items():
            if message in text:
                return "refused", why
        if REFUSAL in text:
            return "refused", text[text.index(REFUSAL):].rstrip("'\"}")[:160]
        return "fails", f"{type(exc).__name__}: {text}"[:160]
    return "works", ""


class Context:
    """The clients and checkpoints the calls need, made once with the SDK itself."""

    def __init__(self, url: str):
        import tinker
        from tinker import types

        self.types = types
        self.url = url
        self.service = tinker.ServiceClient(base_url=url, api_key=KEY)
        self.training = self.service.create_lora_training_client(MODEL, rank=4, seed=0).result()
        self.state_path = self.training.save_state("conf-state").result().path
        self.sampler_path = self.training.save_weights_for_sampler("conf-sampler").result().path
        self.sampler = self.service.create_sampling_client(model_path=self.sampler_path)
        self.rest = self.service.create_rest_client()
        self.run_id = self.state_path.split("/")[2]
        self.session_id = self.service.holder.get_session_id()
        self._names = iter(range(10_000))

    def fresh(self, kind: str = "weights") -> str:
        """A new checkpoint of ``kind`` to delete, publish or expire."""
        name = f"conf-{kind}-{next(self._names)}"
        if kind == "weights":
            return self.training.save_state(name).result().path
        return self.training.save_weights_for_sampler(name).result().path

    def datum(self) -> Any:
        tokens = [5, 17, 23, 42, 9, 11]
        return self.types.Datum(
            model_input=self.types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )

    def prompt(self) -> Any:
        return self.types.ModelInput.from_ints([5, 17, 23])


def calls(c: Context) -> dict[tuple[str, str], Callable[[], Any]]:
    """One call with valid arguments per public method (lambdas: each runs when measured)."""
    return {**service_calls(c), **training_calls(c), **sampling_calls(c), **rest_calls(c)}


def _losses(c: Context) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Two uploadable per-datum losses (the SDK creates one loss per traced graph and session)."""

    def per_datum(logprobs: Any, weights: Any) -> Any:
        loss = -(logprobs * weights).sum()
        return loss, {"custom/nll:sum": loss}

    def half_nll(logprobs: Any, weights: Any) -> Any:
        loss = -(logprobs * weights).sum() * 0.5
        return loss, {"custom/half_nll:sum": loss}

    ranks = {"logprobs": 1, "weights": 1}
    return (lambda: c.service.create_custom_loss(per_datum, ranks)), (lambda: c.service.create_custom_loss(half_nll, ranks))


def service_calls(c: Context) -> dict[tuple[str, str], Callable[[], Any]]:
    s = c.service
    handle, _ = _losses(c)
    return {
        ("ServiceClient", "close"): lambda: __import__("tinker").ServiceClient(base_url=c.url, api_key=KEY).close("success"),
        ("ServiceClient", "copy_weights"): lambda: __import__("tinker").ServiceClient(base_url=c.url, api_key=KEY, project_id="proj-local").copy_weights(c.sampler_path),
        ("ServiceClient", "create_custom_loss"): handle,
        ("ServiceClient", "create_lora_training_client"): lambda: s.create_lora_training_client(MODEL, rank=4),
        ("ServiceClient", "create_lora_training_client_async"): lambda: s.create_lora_training_client_async(MODEL, rank=4),
        ("ServiceClient", "create_rest_client"): s.create_rest_client,
        ("ServiceClient", "create_sampling_client"): lambda: s.create_sampling_client(model_path=c.sampler_path),
        ("ServiceClient", "create_sampling_client_async"): lambda: s.create_sampling_client_async(base_model=MODEL),
        ("ServiceClient", "create_training_client_from_state"): lambda: s.create_training_client_from_state(c.state_path),
        ("ServiceClient", "create_training_client_from_state_async"): lambda: s.create_training_client_from_state_async(c.state_path),
        ("ServiceClient", "create_training_client_from_state_with_optimizer"): lambda: s.create_training_client_from_state_with_optimizer(c.state_path),
        ("ServiceClient", "create_training_client_from_state_with_optimizer_async"): lambda: s.create_training_client_from_state_with_optimizer_async(c.state_path),
        ("ServiceClient", "get_console_url"): s.get_console_url,
        ("ServiceClient", "get_server_capabilities"): s.get_server_capabilities,
        ("ServiceClient", "get_server_capabilities_async"): s.get_server_capabilities_async,
        ("ServiceClient", "get_telemetry"): s.get_telemetry,
        ("ServiceClient", "holder"): lambda: s.holder,
    }


def training_calls(c: Context) -> dict[tuple[str, str], Callable[[], Any]]:
    t, tr = c.types, c.training
    _, handle_again = _losses(c)

    def custom_loss(data: Any, logprobs: Any) -> Any:
        loss = sum(-(lp * d.loss_fn_inputs["weights"].to_torch()).sum() for d, lp in zip(data, logprobs))
        return loss, {}

    return {
        ("TrainingClient", "create_sampling_client"): lambda: tr.create_sampling_client(c.sampler_path),
        ("TrainingClient", "create_sampling_client_async"): lambda: tr.create_sampling_client_async(c.sampler_path),
        ("TrainingClient", "forward"): lambda: tr.forward([c.datum()], "cross_entropy"),
        ("TrainingClient", "forward_async"): lambda: tr.forward_async([c.datum()], "cross_entropy"),
        ("TrainingClient", "forward_backward"): lambda: tr.forward_backward([c.datum()], "cross_entropy"),
        ("TrainingClient", "forward_backward_async"): lambda: tr.forward_backward_async([c.datum()], "cross_entropy"),
        ("TrainingClient", "forward_backward_custom"): lambda: tr.forward_backward_custom([c.datum()], custom_loss),
        ("TrainingClient", "forward_backward_custom_async"): lambda: tr.forward_backward_custom_async([c.datum()], resolve(handle_again())),
        ("TrainingClient", "get_console_url"): tr.get_console_url,
        ("TrainingClient", "get_info"): tr.get_info,
        ("TrainingClient", "get_info_async"): tr.get_info_async,
        ("TrainingClient", "get_telemetry"): tr.get_telemetry,
        ("TrainingClient", "get_tokenizer"): tr.get_tokenizer,
        ("TrainingClient", "load_state"): lambda: tr.load_state(c.state_path),
        ("TrainingClient", "load_state_async"): lambda: tr.load_state_async(c.state_path),
        ("TrainingClient", "load_state_with_optimizer"): lambda: tr.load_state_with_optimizer(c.state_path),
        ("TrainingClient", "load_state_with_optimizer_async"): lambda: tr.load_state_with_optimizer_async(c.state_path),
        ("TrainingClient", "optim_step"): lambda: tr.optim_step(t.AdamParams(learning_rate=1e-4)),
        ("TrainingClient", "optim_step_async"): lambda: tr.optim_step_async(t.AdamParams(learning_rate=1e-4)),
        ("TrainingClient", "save_state"): lambda: tr.save_state("conf-save", ttl_seconds=3600),
        ("TrainingClient", "save_state_async"): lambda: tr.save_state_async("conf-save-async"),
        ("TrainingClient", "save_weights_and_get_sampling_client"): lambda: tr.save_weights_and_get_sampling_client(),
        ("TrainingClient", "save_weights_and_get_sampling_client_async"): lambda: tr.save_weights_and_get_sampling_client_async(),
        ("TrainingClient", "save_weights_external"): lambda: tr.save_weights_external("conf-external"),
        ("TrainingClient", "save_weights_external_async"): lambda: tr.save_weights_external_async("conf-external-async"),
        ("TrainingClient", "save_weights_for_sampler"): lambda: tr.save_weights_for_sampler("conf-sampler-2"),
        ("TrainingClient", "save_weights_for_sampler_async"): lambda: tr.save_weights_for_sampler_async("conf-sampler-3"),
    }


def sampling_calls(c: Context) -> dict[tuple[str, str], Callable[[], Any]]:
    s, sa = c.service, c.sampler
    greedy = c.types.SamplingParams(max_tokens=4, temperature=0.0)
    return {
        ("SamplingClient", "compute_logprobs"): lambda: sa.compute_logprobs(c.prompt()),
        ("SamplingClient", "compute_logprobs_async"): lambda: sa.compute_logprobs_async(c.prompt()),
        ("SamplingClient", "create"): lambda: type(sa).create(s.holder, base_model=MODEL),
        ("SamplingClient", "from_sampler_handle"): lambda: type(sa).from_sampler_handle(sa.get_sampler_handle(), api_key=KEY).sample(c.prompt(), 1, greedy),
        ("SamplingClient", "get_base_model"): sa.get_base_model,
        ("SamplingClient", "get_base_model_async"): sa.get_base_model_async,
        ("SamplingClient", "get_sampler_handle"): sa.get_sampler_handle,
        ("SamplingClient", "get_telemetry"): sa.get_telemetry,
        ("SamplingClient", "get_tokenizer"): sa.get_tokenizer,
        ("SamplingClient", "on_queue_state_change"): lambda: sa.on_queue_state_change(_queue_state("ACTIVE"), None),
        ("SamplingClient", "sample"): lambda: sa.sample(c.prompt(), 2, greedy),
        ("SamplingClient", "sample_async"): lambda: sa.sample_async(c.prompt(), 2, greedy),
    }


def rest_calls(c: Context) -> dict[tuple[str, str], Callable[[], Any]]:
    r, t = c.rest, c.types
    now = datetime.datetime.now(datetime.timezone.utc)
    sampler_id = lambda: c.training.save_weights_and_get_sampling_client().result()._sampling_session_id  # noqa: E731
    calls: dict[str, Callable[[], Any]] = {
        "assign_session_project": lambda: r.assign_session_project(c.session_id, "proj-local"),
        "copy_weights": lambda: r.copy_weights(c.sampler_path, "proj-local"),
        "delete_checkpoint": lambda: r.delete_checkpoint(c.run_id, c.fresh("weights").split("/", 3)[3]),
        "delete_checkpoint_from_tinker_path": lambda: r.delete_checkpoint_from_tinker_path(c.fresh("sampler_weights")),
        "export_session_trace": lambda: r.export_session_trace(c.session_id),
        "get_audit_log": lambda: r.get_audit_log(),
        "get_billing_usage": lambda: r.get_billing_usage(now - datetime.timedelta(days=1), now),
        "get_current_checkpoint_storage_usage": lambda: r.get_current_checkpoint_storage_usage(),
        "get_external_weights_urls": lambda: r.get_external_weights_urls(c.training.save_weights_external(f"conf-ext-{time.time_ns()}").result().path),
        "get_sampler": lambda: r.get_sampler(sampler_id()),
        "get_server_capabilities": r.get_server_capabilities,
        "get_session": lambda: r.get_session(c.session_id),
        "get_telemetry": r.get_telemetry,
        "get_training_run": lambda: r.get_training_run(c.run_id),
        "get_training_run_by_tinker_path": lambda: r.get_training_run_by_tinker_path(c.state_path),
        "get_weights_info_by_tinker_path": lambda: r.get_weights_info_by_tinker_path(c.sampler_path),
        "list_checkpoints": lambda: r.list_checkpoints(c.run_id),
        "list_sessions": lambda: r.list_sessions(),
        "list_training_runs": lambda: r.list_training_runs(),
        "list_user_checkpoints": lambda: r.list_user_checkpoints(),
        "publish_checkpoint_from_tinker_path": lambda: r.publish_checkpoint_from_tinker_path(c.sampler_path),
        "search_sessions": lambda: r.search_sessions(t.SessionSearchRequest()),
        "set_checkpoint_ttl_from_tinker_path": lambda: r.set_checkpoint_ttl_from_tinker_path(c.fresh("weights"), 3600),
        "unpublish_checkpoint_from_tinker_path": lambda: r.unpublish_checkpoint_from_tinker_path(c.sampler_path),
        "whoami": r.whoami,
    }
    table = {("RestClient", name): fn for name, fn in calls.items()}
    for name in list(calls):  # the async variants take the same arguments
        if hasattr(r, name + "_async"):
            table[("RestClient", name + "_async")] = _async_variant(r, name, calls[name])
    return table


def _async_variant(rest: Any, name: str, sync_call: Callable[[], Any]) -> Callable[[], Any]:
    """Call ``<name>_async`` with the arguments the sync lambda would pass to ``<name>``."""

    def run() -> Any:
        captured: dict[str, Any] = {}

        def capture(*args: Any, **kwargs: Any) -> None:
            captured.update(args=args, kwargs=kwargs)

        original = getattr(rest, name)
        setattr(rest, name, capture)
        try:
            sync_call()
        finally:
            setattr(rest, name, original)
        return getattr(rest, name + "_async")(*captured["args"], **captured["kwargs"])

    return run


def _queue_state(name: str) -> Any:
    from tinker.lib.api_future_impl import QueueState

    return QueueState[name]


# -- the table ------------------------------------------------------------------------------------


def measure() -> list[tuple[str, str, str, str]]:
    """(class, method, outcome, detail) for every public method, in a fresh server."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="tinkerplug-conformance-") as tmp:
        from tinkerplug_local.server.thread import ThreadServer

        server = ThreadServer(Path(tmp) / "checkpoints", api_keys=[KEY])
        try:
            context = Context(server.url)
            table = calls(context)
            rows = []
            for cls_name, name in public_methods():
                fn = table.get((cls_name, name))
                result = outcome(fn) if fn else ("fails", "no call written for this method in scripts/sdk_conformance.py")
                rows.append((cls_name, name, *result))
            return rows
        finally:
            server.stop()


def render(rows: list[tuple[str, str, str, str]]) -> str:
    import tinker

    counts = {kind: sum(1 for r in rows if r[2] == kind) for kind in ("works", "refused", "fails")}
    lines = [
        "# SDK conformance of `tinkerplug serve`",
        "",
        f"Every public method of tinker {tinker.__version__}'s `ServiceClient`, `TrainingClient`, "
        "`SamplingClient` and `RestClient` (sync and async), called with valid arguments against "
        "`tinkerplug serve` by `scripts/sdk_conformance.py` (`--update` rewrites this page; "
        "`tests/test_sdk_conformance.py` fails when it is stale).",
        "",
        f"**{counts['works']} work, {counts['refused']} refused** (\"{REFUSAL}: <why>\"), "
        f"**{counts['fails']} fail**, of {len(rows)}.",
        "",
        "| client | method | outcome | detail |",
        "| --- | --- | --- | --- |",
    ]
    for cls_name, name, kind, detail in rows:
        lines.append(f"| {cls_name} | `{name}` | {kind} | {detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--update", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    group.add_argument("--check", action="store_true", help="exit 1 when that page is stale")
    args = parser.parse_args()
    text = render(measure())
    if args.update:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(text)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    elif args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/sdk_conformance.py --update", file=sys.stderr)
            return 1
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
