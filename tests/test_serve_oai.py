"""The OpenAI-compatible API of ``tinkerplug serve`` (``/oai/api/v1``), through the ``openai``
package and Inspect's OpenAI-compatible provider, on a checkpoint trained here.

The server runs on a thread of this process (the same app as the command); the answers are
compared with the SDK's own ``SamplingClient.sample`` on the same checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

KEY = "tml-oai-test"
MODEL = "tiny-chat"
CHAT = [{"role": "user", "content": "uppercase: hello world"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A server, and a sampler checkpoint whose LoRA moved away from the base model."""
    import tinker
    from tinker import types

    from tinkerplug_local.server.thread import ThreadServer

    with ThreadServer(tmp_path_factory.mktemp("oai") / "checkpoints", api_keys=[KEY]) as server:
        service = tinker.ServiceClient(base_url=server.url, api_key=KEY)
        training = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
        tokens = list(range(40, 60))
        datum = types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
        )
        for _ in range(5):
            training.forward_backward([datum], "cross_entropy")
            training.optim_step(types.AdamParams(learning_rate=2e-2)).result()
        path = training.save_weights_for_sampler("oai").result().path
        yield server, service, path


def openai_client(server, key: str = KEY):
    import openai

    return openai.OpenAI(base_url=server.url + "/oai/api/v1", api_key=key, max_retries=0)


def sdk_greedy(service, path: str, prompt: list[int], stop, max_tokens: int = 24):
    from tinker import types

    sampler = service.create_sampling_client(model_path=path).result()
    params = types.SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stop)
    return sampler.sample(types.ModelInput.from_ints(prompt), 1, params).result().sequences[0]


def renderer_and_tokenizer():
    from tinker_cookbook import renderers
    from transformers import AutoTokenizer

    from tinkerplug.models import model_metadata, shipped_model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(shipped_model_dir(MODEL)))
    return renderers.get_renderer(model_metadata(MODEL)["renderer"], tokenizer), tokenizer


def test_chat_equals_the_sdk_sampler_streamed_and_not(served) -> None:
    from tinker_cookbook.renderers import get_text_content

    server, service, path = served
    renderer, _ = renderer_and_tokenizer()
    prompt = renderer.build_generation_prompt(CHAT).to_ints()
    expected = sdk_greedy(service, path, prompt, renderer.get_stop_sequences())
    text = get_text_content(renderer.parse_response(list(expected.tokens))[0])

    client = openai_client(server)
    answer = client.chat.completions.create(model=path, messages=CHAT, max_tokens=24, temperature=0, logprobs=True)
    assert answer.choices[0].message.content == text
    assert answer.usage.prompt_tokens == len(prompt) and answer.usage.completion_tokens == len(expected.tokens)
    got = [t.logprob for t in answer.choices[0].logprobs.content]
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(got, expected.logprobs))

    stream = client.chat.completions.create(
        model=path, messages=CHAT, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == len(expected.tokens)

    # The checkpoint's LoRA is applied: the base model scores the same reply differently.
    base = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, temperature=0, logprobs=True)
    base_lp = [t.logprob for t in base.choices[0].logprobs.content]
    assert base.choices[0].message.content != text and any(abs(a - b) > 1e-3 for a, b in zip(got, base_lp))


def test_completion_equals_the_sdk_sampler_streamed_and_not(served) -> None:
    import openai

    server, service, path = served
    _, tokenizer = renderer_and_tokenizer()
    prompt_text = "reverse: abc"
    expected = sdk_greedy(service, path, tokenizer.encode(prompt_text), None, max_tokens=12)
    text = tokenizer.decode(list(expected.tokens), skip_special_tokens=True)

    client = openai_client(server)
    for model in (path, f"{MODEL};{path}"):  # both ways the service names a checkpoint
        answer = client.completions.create(model=model, prompt=prompt_text, max_tokens=12, temperature=0, logprobs=0)
        assert answer.choices[0].text == text
        assert answer.usage.completion_tokens == len(expected.tokens)
        assert answer.choices[0].logprobs.token_logprobs == pytest.approx(list(expected.logprobs), abs=1e-5)
    streamed = client.completions.create(model=path, prompt=prompt_text, max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == text

    two = client.completions.create(model=path, prompt=prompt_text, max_tokens=6, temperature=1.0, n=3, seed=7)
    again = client.completions.create(model=path, prompt=prompt_text, max_tokens=6, temperature=1.0, n=3, seed=7)
    assert [c.text for c in two.choices] == [c.text for c in again.choices] and len(two.choices) == 3
    assert [m.id for m in client.models.list().data] == [MODEL, path]
    assert client.models.retrieve(path).id == path
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("tinker://nobody/sampler_weights/none")


@pytest.mark.parametrize(
    "change, status, param",
    [
        ({"n": 17}, 400, "n"),
        ({"max_tokens": 100_000}, 400, "max_tokens"),
        ({"temperature": -1}, 400, "temperature"),
        ({"model": "no-such-model"}, 404, "model"),
        ({"model": "tinker://run/sampler_weights/missing"}, 404, "model"),
        ({"model": "tinker://../sampler_weights/x"}, 400, "model"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"frequency_penalty": 0.5}, 400, "frequency_penalty"),
        ({"top_logprobs": 3, "logprobs": True}, 400, "top_logprobs"),
        ({"response_format": {"type": "json_object"}}, 400, "response_format"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(served, change, status, param) -> None:
    server, _, path = served
    body = {"model": path, "messages": CHAT, "max_tokens": 4, **change}
    answer = httpx.post(server.url + "/oai/api/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and param.split(".")[0] in error["message"]


def test_malformed_json_wrong_key_and_unknown_route(served) -> None:
    import openai

    server, _, path = served
    url = server.url + "/oai/api/v1/chat/completions"
    bad = httpx.post(url, content=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        openai_client(server, "tml-wrong").chat.completions.create(model=path, messages=CHAT, max_tokens=2)
    missing = httpx.get(server.url + "/oai/api/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 404 and "not served by tinkerplug serve" in missing.json()["error"]["message"]
    ok = openai_client(server).chat.completions.create(model=path, messages=CHAT, max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")  # still serving


def test_an_inspect_task_through_the_openai_compatible_provider(served, tmp_path: Path) -> None:
    from inspect_ai import Task, eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import get_model
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    server, _, path = served
    model = get_model(f"openai-api/tinkerplug/{path}", base_url=server.url + "/oai/api/v1", api_key=KEY)
    task = Task(dataset=[Sample(input="uppercase: hello world", target="HELLO WORLD")], solver=generate(), scorer=includes())
    log = inspect_eval(task, model=model, log_dir=str(tmp_path), display="none", max_tokens=24, temperature=0)[0]
    assert log.status == "success", log.error
    expected = openai_client(server).chat.completions.create(model=path, messages=CHAT, max_tokens=24, temperature=0)
    assert log.samples[0].output.completion == expected.choices[0].message.content
    assert log.results.scores[0].metrics["accuracy"].value in (0.0, 1.0)



def test_echo_scores_the_prompt_as_lm_eval_asks(served) -> None:
    """lm-evaluation-harness' log-likelihood request: token-id prompts, ``echo``, ``logprobs: 1``,
    ``max_tokens: 1``; the prompt's scores equal the SDK's ``compute_logprobs``."""
    server, service, path = served
    _, tokenizer = renderer_and_tokenizer()
    prompts = [tokenizer.encode("reverse: abc cba"), tokenizer.encode("uppercase: hi HI")]
    body = {"model": path, "prompt": prompts, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
    answer = httpx.post(server.url + "/oai/api/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    choices = sorted(answer.json()["choices"], key=lambda c: c["index"])
    sampler = service.create_sampling_client(model_path=path).result()
    from tinker import types

    for prompt, choice in zip(prompts, choices):
        scores = sampler.compute_logprobs(types.ModelInput.from_ints(prompt)).result()
        got = choice["logprobs"]["token_logprobs"]
        assert got[0] is None and len(got) == len(prompt) + 1  # the prompt, then the one sampled token
        assert got[1 : len(prompt)] == pytest.approx(scores[1:], abs=1e-5)
        tops = choice["logprobs"]["top_logprobs"][1 : len(prompt)]
        assert all(len(t) == 1 and max(t.values()) >= lp - 1e-6 for t, lp in zip(tops, got[1 : len(prompt)]))
    assert answer.json()["usage"]["prompt_tokens"] == sum(map(len, prompts))
    refused = httpx.post(server.url + "/oai/api/v1/completions", json={**body, "echo": False}, headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "logprobs"


def test_a_deleted_or_expired_checkpoint_stops_answering(served) -> None:
    import time

    import openai
    import tinker

    server, service, _ = served
    training = service.create_lora_training_client(MODEL, rank=4, seed=1).result()
    path = training.save_weights_for_sampler("short").result().path
    client = openai_client(server)
    assert client.completions.create(model=path, prompt="hi", max_tokens=2).choices  # loaded and cached
    rest = tinker.RestClient(base_url=server.url, api_key=KEY)
    rest.set_checkpoint_ttl_from_tinker_path(path, 1).result()
    time.sleep(1.2)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=path, prompt="hi", max_tokens=2)
