"""The local backend as a drop-in ``tinker.ServiceClient``: the SDK's surface, the switch
(``patch()`` and ``tinkerplug local``), and the cookbook's own SFT loop run through it."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import tinker
from tinker import types

from conftest import DATA, ROOT, read_jsonl, run_cli, run_inprocess

MODEL = "tiny-chat"


@pytest.fixture
def patched():
    import tinkerplug_local

    tinkerplug_local.patch()
    yield
    tinkerplug_local.unpatch()


# -- the SDK's surface ------------------------------------------------------------------------

SURFACE = {
    "ServiceClient": [
        "create_lora_training_client", "create_lora_training_client_async",
        "create_training_client_from_state", "create_training_client_from_state_async",
        "create_training_client_from_state_with_optimizer", "create_training_client_from_state_with_optimizer_async",
        "create_sampling_client", "create_sampling_client_async", "get_server_capabilities", "create_rest_client",
    ],
    "TrainingClient": [
        "forward", "forward_async", "forward_backward", "forward_backward_async", "optim_step", "optim_step_async",
        "save_state", "save_state_async", "load_state", "load_state_async", "load_state_with_optimizer",
        "load_state_with_optimizer_async", "save_weights_for_sampler", "save_weights_for_sampler_async",
        "save_weights_and_get_sampling_client", "save_weights_and_get_sampling_client_async",
        "forward_backward_custom", "forward_backward_custom_async",
        "create_sampling_client", "create_sampling_client_async", "get_tokenizer", "get_info", "get_info_async",
    ],
    "SamplingClient": ["sample", "sample_async", "compute_logprobs", "compute_logprobs_async", "get_tokenizer", "get_base_model"],
}


@pytest.mark.parametrize("class_name", sorted(SURFACE))
def test_methods_take_the_sdks_arguments(class_name):
    """Every SDK parameter of these methods exists here with the same name, kind and default,
    so any call written against the SDK binds the same way."""
    import importlib

    module = {"ServiceClient": "service", "TrainingClient": "training_client", "SamplingClient": "sampling"}[class_name]
    ours = getattr(importlib.import_module(f"tinkerplug_local.{module}"), class_name)
    sdk = getattr(tinker, class_name)
    problems = []
    for name in SURFACE[class_name]:
        theirs = inspect.signature(getattr(sdk, name)).parameters
        mine = inspect.signature(getattr(ours, name)).parameters
        for param in theirs.values():
            got = mine.get(param.name)
            if got is None:
                problems.append(f"{name}: no parameter {param.name}")
            elif (got.kind, got.default) != (param.kind, param.default):
                problems.append(f"{name}({param.name}): {got.kind.name}={got.default!r}, SDK {param.kind.name}={param.default!r}")
    assert not problems, "\n".join(problems)


def test_no_api_key_and_capabilities_list_the_shipped_model(tmp_path, monkeypatch):
    from tinkerplug_local import ServiceClient

    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.tinker/credentials.json either
    client = ServiceClient(base_url="https://tinker.invalid", user_metadata={"k": "v"}, checkpoint_dir=tmp_path)
    capabilities = client.get_server_capabilities()
    assert isinstance(capabilities, types.GetServerCapabilitiesResponse)
    assert MODEL in [m.model_name for m in capabilities.supported_models]


def _datum(tokens: list[int]) -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


def test_unsupported_loss_names_the_supported_one(service):
    client = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
    with pytest.raises(NotImplementedError, match="supported: cross_entropy, importance_sampling, ppo"):
        client.forward_backward([_datum([5, 6, 7, 8])], "no_such_loss")


def test_checkpoint_paths_are_accepted_back_plain_or_local_scheme(service):
    client = service.create_lora_training_client(MODEL, rank=4, seed=0, user_metadata={"renderer_name": "qwen3_instruct"})
    data = [_datum([5, 17, 23, 42, 9, 11, 30])]
    client.forward_backward(data, "cross_entropy")
    client.optim_step(types.AdamParams(learning_rate=1e-2))
    state = client.save_state("step1").result().path
    sampler = client.save_weights_for_sampler("step1").result().path
    assert isinstance(state, str) and Path(state).is_dir()
    expected = client.forward(data, "cross_entropy").result().metrics["loss:sum"]

    for path in (state, "local://" + state):
        restored = service.create_training_client_from_state_with_optimizer(path).result()
        assert restored.forward(data, "cross_entropy").result().metrics["loss:sum"] == pytest.approx(expected, rel=1e-6)
    sampling = service.create_sampling_client(model_path="local://" + sampler).result()
    assert len(sampling.compute_logprobs(types.ModelInput.from_ints([5, 17, 23])).result()) == 3
    with pytest.raises(ValueError, match="Tinker service"):
        service.create_training_client_from_state("tinker://run/weights/step1")
    # The cookbook reads the renderer of a checkpoint's run through the REST client.
    from tinker_cookbook import checkpoint_utils

    assert checkpoint_utils.get_renderer_name_from_checkpoint(service, state) == "qwen3_instruct"


def test_patch_routes_the_sdk_and_the_cookbook(patched):
    import tinkerplug_local
    from tinker_cookbook import model_info
    from tinker_cookbook.tokenizer_utils import get_tokenizer
    from tinker import ServiceClient  # after patch(): the local class

    from tinkerplug.models import shipped_model_dir

    assert tinker.ServiceClient is ServiceClient is tinkerplug_local.ServiceClient
    tokenizer = get_tokenizer(MODEL)  # offline: the shipped tokenizer, not the hub
    assert tokenizer.name_or_path == str(shipped_model_dir(MODEL))
    assert model_info.get_recommended_renderer_name(MODEL) == "qwen3_instruct"
    assert model_info.get_recommended_renderer_name("Qwen/Qwen3-8B") == "qwen3"  # the table still answers


def test_patch_replaces_earlier_imports_and_unpatch_restores():
    import types as pytypes

    import tinkerplug_local
    from tinker_cookbook import model_info, tokenizer_utils

    original = tinker.ServiceClient
    registered_before = tokenizer_utils.is_tokenizer_registered(MODEL)
    user_module = pytypes.ModuleType("user_script")
    user_module.ServiceClient = original  # `from tinker import ServiceClient` before patching
    sys.modules["user_script"] = user_module
    try:
        tinkerplug_local.patch()
        assert user_module.ServiceClient is tinkerplug_local.ServiceClient
        tinkerplug_local.unpatch()
        assert tinker.ServiceClient is original and user_module.ServiceClient is original
        assert tokenizer_utils.is_tokenizer_registered(MODEL) == registered_before
        with pytest.raises(ValueError):  # the cookbook's table alone does not know tiny-chat
            model_info.get_recommended_renderer_name(MODEL)
    finally:
        del sys.modules["user_script"]
        tinkerplug_local.unpatch()


# -- the switch: `tinkerplug local -- COMMAND` ------------------------------------------------


def _existing_sitecustomize(tmp_path: Path) -> Path:
    """A sitecustomize the user already had on PYTHONPATH: it must still run."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['EXISTING_SITECUSTOMIZE_RAN'] = '1'\n")
    return site


def test_local_command_costs_nothing_until_tinker_is_imported(tmp_path):
    probe = "import os, sys; print(os.environ.get('EXISTING_SITECUSTOMIZE_RAN'), 'tinker' in sys.modules, 'torch' in sys.modules)"
    result = run_cli("local", "--", sys.executable, "-c", probe, env={"PYTHONPATH": str(_existing_sitecustomize(tmp_path))})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False", "False"]


def test_local_command_reports_a_missing_command():
    result = run_inprocess("local", "--", "no-such-program-xyz")
    assert result.returncode == 2
    assert "command not found: no-such-program-xyz" in result.stderr


@pytest.mark.slow  # a peer script under `tinkerplug local`
def test_example_tinker_script_runs_unmodified(tmp_path):
    script = ROOT / "examples" / "tinker-script" / "train.py"
    imports = [line for line in script.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert imports and not [line for line in imports if "tinkerplug" in line]  # a plain Tinker SDK script
    result = run_cli(
        "local", "--checkpoint-dir", str(tmp_path / "ck"), "--", sys.executable, str(script), "--steps", "20",
        env={"PYTHONPATH": str(_existing_sitecustomize(tmp_path)), "TINKER_API_KEY": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) == 20 and sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
    assert "sample:" in result.stdout
    # save_weights_and_get_sampling_client() is an in-memory snapshot: no disk round trip.
    assert not list((tmp_path / "ck").glob("run-*/sampler_weights/*"))


# -- a real peer client: the cookbook's minimal SFT loop ---------------------------------------

SL_LOOP_DRIVER = '''
"""tinker_cookbook.recipes.sl_loop.main, unchanged, on local JSONL instead of no_robots."""
import json
import sys

import datasets
from tinker_cookbook.recipes import sl_loop
from tinker_cookbook.utils import ml_log

model_name, data_file, log_path = sys.argv[1:4]
max_steps, crash_after = int(sys.argv[4]), int(sys.argv[5])
load_dataset = datasets.load_dataset


def load_local(path, *args, **kwargs):
    if path != "HuggingFaceH4/no_robots":
        return load_dataset(path, *args, **kwargs)
    with open(data_file) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})


datasets.load_dataset = load_local
setup_logging = ml_log.setup_logging


def setup_logging_that_dies(*args, **kwargs):
    """The run is killed right after logging step ``crash_after``."""
    logger = setup_logging(*args, **kwargs)
    log_metrics = logger.log_metrics

    def log_then_die(metrics, step=None):
        log_metrics(metrics, step=step)
        if step == crash_after:
            logger.close()
            sys.exit(17)

    logger.log_metrics = log_then_die
    return logger


if crash_after >= 0:
    ml_log.setup_logging = setup_logging_that_dies

sl_loop.main(
    sl_loop.Config(
        log_path=log_path, model_name=model_name, batch_size=8, learning_rate=3e-3, max_length=64,
        lora_rank=8, save_every=10, max_steps=max_steps,
    )
)
'''


@pytest.mark.slow  # a peer script under `tinkerplug local`
def test_cookbook_sl_loop_trains_and_resumes_through_the_switch(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(SL_LOOP_DRIVER)
    log = tmp_path / "log"

    def sl_loop(max_steps: int, crash_after: int):
        return run_cli(
            "local", "--checkpoint-dir", str(tmp_path / "checkpoints"), "--",
            sys.executable, str(driver), MODEL, str(DATA / "fast_train.jsonl"), str(log), str(max_steps), str(crash_after),
            cwd=tmp_path,
        )

    first = sl_loop(max_steps=20, crash_after=12)  # killed after step 12; checkpoint at step 10
    assert first.returncode == 17, first.stderr[-3000:]
    checkpoints = read_jsonl(log / "checkpoints.jsonl")
    assert [(c["name"], c["batch"]) for c in checkpoints] == [("000010", 10)]
    assert Path(checkpoints[0]["state_path"]).is_dir()

    second = sl_loop(max_steps=20, crash_after=-1)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from batch 10" in second.stderr + second.stdout

    metrics = read_jsonl(log / "metrics.jsonl")
    steps = [m["step"] for m in metrics]
    assert steps == list(range(13)) + list(range(10, 20))
    killed = {m["step"]: m["train_mean_nll"] for m in metrics[:13]}
    resumed = {m["step"]: m["train_mean_nll"] for m in metrics[13:]}
    # Weights and Adam's moments both came back: steps 10-12 repeat exactly. (With weights
    # only, step 11 already differs: the first update of a fresh Adam is a different step.)
    for step in (10, 11, 12):
        assert resumed[step] == pytest.approx(killed[step], abs=1e-5)
    nll = [killed[s] for s in range(10)] + [resumed[s] for s in range(10, 20)]
    assert sum(nll[-5:]) / 5 < 0.8 * sum(nll[:3]) / 3, nll
    final = read_jsonl(log / "checkpoints.jsonl")[-1]
    assert final["name"] == "final" and Path(final["sampler_path"]).is_dir()
