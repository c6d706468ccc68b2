"""Step executors: the pipelined one really keeps steps in flight, trains exactly like the
synchronous one, and its mid-pipeline checkpoints hold exactly the steps they record."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import tinkerplug
from conftest import read_jsonl, write_config

NUM_STEPS = 7
SAVE_EVERY = 3
EVAL_EVERY = 2
VARIANTS = {"sync": ("sync", 0, 1), "ahead1": ("pipelined", 1, SAVE_EVERY), "ahead3": ("pipelined", 3, SAVE_EVERY)}


class EventRecorder:
    """A plugin that records, in order, which steps were logged and which checkpointed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    @tinkerplug.hookimpl
    def log_metrics(self, step: int, metrics: Any) -> None:
        if "train/loss" in metrics:
            self.events.append(("step", step))

    @tinkerplug.hookimpl
    def on_checkpoint(self, record: Any) -> None:
        self.events.append(("checkpoint", record.step))


def _train(directory: Path, executor: str, submit_ahead: int, save_every: int) -> list[tuple[str, int]]:
    """A real short run through the training loop, in this process."""
    from tinkerplug.cli import load_run_config
    from tinkerplug.plugins import PluginInfo
    from tinkerplug.training import train

    directory.mkdir()
    path = write_config(
        directory, num_steps=NUM_STEPS, batch_size=4, save_every=save_every, eval_every=EVAL_EVERY,
        executor=executor, submit_ahead=submit_ahead,
    )
    config, plugins = load_run_config(str(path), ("heldout.limit=1", "heldout.max_tokens=4", "terminal.quiet=true"), ())
    recorder = EventRecorder()
    plugins.register(recorder, PluginInfo("test-recorder", "project", None, None, __file__))
    asyncio.run(train(config, plugins))
    return recorder.events


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[tuple[str, int]]]]:
    """The same seeded run with each executor: sync checkpoints every step, the pipelined
    ones every SAVE_EVERY steps (so their checkpoints are taken with steps in flight)."""
    root = tmp_path_factory.mktemp("executors")
    out = {}
    for name, (executor, ahead, save_every) in VARIANTS.items():
        out[name] = (root / name / "run", _train(root / name, executor, ahead, save_every))
    return out


def _adapter(directory: Path | str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "adapter_model.safetensors"))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def _checkpoints(run_dir: Path) -> dict[int, dict[str, Any]]:
    return {c["step"]: c for c in read_jsonl(run_dir / "checkpoints.jsonl")}


def test_pipelined_and_sync_give_identical_losses_and_final_weights(runs):
    losses = {}
    for name, (run_dir, _) in runs.items():
        rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]
        assert [r["step"] for r in rows] == list(range(NUM_STEPS))
        losses[name] = [r["train/loss"] for r in rows]
    assert losses["ahead1"] == losses["sync"] and losses["ahead3"] == losses["sync"]
    assert losses["sync"][-1] < losses["sync"][0]  # it trained
    final = {name: _adapter(_checkpoints(run_dir)[NUM_STEPS]["state_path"]) for name, (run_dir, _) in runs.items()}
    assert _same(final["ahead1"], final["sync"]) and _same(final["ahead3"], final["sync"])


@pytest.mark.parametrize("name", ["ahead1", "ahead3"])
def test_mid_pipeline_checkpoints_hold_exactly_the_steps_they_record(runs, name):
    """Cookbook bug #940: a checkpoint saved while later steps are in flight must not contain
    them. The sync run has the true state after every step to compare with."""
    sync = {step: _adapter(c["state_path"]) for step, c in _checkpoints(runs["sync"][0]).items()}
    piped = _checkpoints(runs[name][0])
    assert sorted(piped) == [3, 6, NUM_STEPS]
    for step in (3, 6):
        state = _adapter(piped[step]["state_path"])
        sampler = _adapter(piped[step]["sampler_path"])
        assert _same(state, sync[step]), f"step-{step} checkpoint differs from the state after {step} steps"
        assert not _same(state, sync[step + 1]) and not _same(state, sync[step - 1])
        assert _same(sampler, sync[step])


@pytest.mark.parametrize("name", ["ahead1", "ahead3"])
def test_mid_pipeline_eval_weights_are_those_of_their_step(runs, name):
    def eval_weights(run_dir: Path) -> dict[int, dict[str, Any]]:
        dirs = sorted(run_dir.glob("checkpoints/*/sampler_weights/eval-*"))
        return {int(d.name.split("-")[1]): _adapter(d) for d in dirs}

    sync, piped = eval_weights(runs["sync"][0]), eval_weights(runs[name][0])
    assert sorted(piped) == [0, 2, 4, 6, NUM_STEPS] == sorted(sync)
    for step in piped:
        assert _same(piped[step], sync[step]), f"eval weights at step {step}"


def test_every_step_is_logged_before_the_checkpoint_that_covers_it(runs):
    for name, (_, events) in runs.items():
        logged: list[int] = []
        for kind, step in events:
            if kind == "step":
                logged.append(step)
            else:
                assert logged == list(range(step)), f"{name}: checkpoint {step} after steps {logged}"
        assert logged == list(range(NUM_STEPS))


# -- the pipelined executor on its own ----------------------------------------------------------


class RequestLog:
    """Wraps a real training client and records when requests go out and results are taken."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.log: list[str] = []
        self.count = {"forward_backward": 0, "optim_step": 0}

    def _wrap(self, name: str, future: Any) -> Any:
        index = self.count[name]
        self.count[name] += 1
        self.log.append(f"{name}:{index}")
        log = self.log

        class Logged:
            async def result_async(self, timeout: float | None = None) -> Any:
                log.append(f"await {name}:{index}")
                return await future.result_async(timeout)

        return Logged()

    def forward_backward(self, data: Any, loss_fn: str, loss_fn_config: Any = None) -> Any:
        return self._wrap("forward_backward", self.client.forward_backward(data, loss_fn, loss_fn_config))

    def optim_step(self, adam_params: Any) -> Any:
        return self._wrap("optim_step", self.client.optim_step(adam_params))


def _data(service: Any) -> tuple[Any, list[Any]]:
    from tinker import types

    client = service.create_lora_training_client("tiny-chat", rank=4, seed=3).result()
    data = [
        types.Datum(
            model_input=types.ModelInput.from_ints([5, 17, 23, 42, 9]),
            loss_fn_inputs={"target_tokens": [17, 23, 42, 9, 11], "weights": [0, 1, 1, 1, 1]},
        )
    ]
    return client, data


@pytest.mark.parametrize("ahead", [0, 1, 3])
def test_pipelined_executor_keeps_submit_ahead_steps_in_flight(service, ahead):
    from tinker import types

    from tinkerplug_executors.plugin import PipelinedExecutor

    client, data = _data(service)
    requests = RequestLog(client)
    executor = PipelinedExecutor(requests, submit_ahead=ahead)

    async def run() -> list[list[int]]:
        returned = []
        for step in range(5):
            finished = await executor.submit(step, data, types.AdamParams(learning_rate=1e-3))
            returned.append([r.step for r in finished])
        returned.append([r.step for r in await executor.drain()])
        return returned

    returned = asyncio.run(run())
    # Step n comes back from the submit of step n + ahead (the rest from drain), in order.
    assert returned == [[s - ahead] if s >= ahead else [] for s in range(5)] + [list(range(5 - ahead, 5))]
    log = requests.log
    for step in range(5):
        # Both requests of a step go out together, before anything of that step is awaited,
        # and step + ahead is already submitted when step is first awaited.
        assert log.index(f"optim_step:{step}") == log.index(f"forward_backward:{step}") + 1
        first_await = log.index(f"await forward_backward:{step}")
        assert log.index(f"optim_step:{min(step + ahead, 4)}") < first_await
        if step + ahead + 1 <= 4:
            assert log.index(f"forward_backward:{step + ahead + 1}") > first_await


def test_sync_executor_awaits_each_request_before_the_next(service):
    from tinker import types

    from tinkerplug_executors.plugin import SyncExecutor

    client, data = _data(service)
    requests = RequestLog(client)
    executor = SyncExecutor(requests)

    async def run() -> None:
        for step in range(2):
            assert [r.step for r in await executor.submit(step, data, types.AdamParams(learning_rate=1e-3))] == [step]

    asyncio.run(run())
    assert requests.log == [
        "forward_backward:0", "await forward_backward:0", "optim_step:0", "await optim_step:0",
        "forward_backward:1", "await forward_backward:1", "optim_step:1", "await optim_step:1",
    ]
