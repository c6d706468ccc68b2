"""An Inspect ``ModelAPI`` backed by a Tinker sampling client and a cookbook renderer."""

from __future__ import annotations

import time
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

# The SDK's stop reasons, in Inspect's words.
STOP_REASONS = {"stop": "stop", "length": "max_tokens"}


def to_renderer_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """Inspect chat messages -> the renderer's ``{"role", "content"}`` dicts (text only)."""
    converted = []
    for message in messages:
        if message.role == "tool" or getattr(message, "tool_calls", None):
            raise NotImplementedError("tinkerplug's Inspect model does not support tool calls")
        converted.append({"role": message.role, "content": message.text.strip()})
    return converted


# Registered so Inspect can name the model in its logs: "tinkerplug/<base model>".
@modelapi(name="tinkerplug")
class SamplingClientAPI(ModelAPI):
    """Generates with ``sampling_client``: the chat is rendered by ``renderer``
    (``build_generation_prompt``), sampled with the renderer's stop sequences, and the reply is
    parsed back with ``renderer.parse_response``.

    ``connections`` is how many samples Inspect may have in flight at once; keep it at least
    the eval set's size, so the backend receives every prompt together and batches them.
    """

    def __init__(
        self,
        model_name: str,
        sampling_client: Any,
        renderer: Any,
        connections: int = 1024,
        config: GenerateConfig = GenerateConfig(),
    ):
        super().__init__(model_name=model_name, config=config)
        self.sampling_client = sampling_client
        self.renderer = renderer
        self.connections = connections

    def max_connections(self) -> int:
        return self.connections

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        from tinker import types
        from tinker_cookbook.renderers import get_text_content

        if tools:
            raise NotImplementedError("tinkerplug's Inspect model does not support tools")
        if config.system_message:
            input = [ChatMessageSystem(content=config.system_message), *input]
        prompt = self.renderer.build_generation_prompt(to_renderer_messages(input))
        params = types.SamplingParams(
            max_tokens=config.max_tokens or 256,
            temperature=1.0 if config.temperature is None else config.temperature,
            top_p=1.0 if config.top_p is None else config.top_p,
            top_k=-1 if config.top_k is None else config.top_k,
            seed=config.seed,
            stop=self.renderer.get_stop_sequences(),
        )
        started = time.perf_counter()
        future = self.sampling_client.sample(prompt, config.num_choices or 1, params)
        response = await future.result_async()
        elapsed = time.perf_counter() - started

        choices = []
        for sequence in response.sequences:
            message, _ = self.renderer.parse_response(sequence.tokens)
            choices.append(
                ChatCompletionChoice(
                    message=ChatMessageAssistant(
                        content=get_text_content(message), model=self.model_name, source="generate"
                    ),
                    stop_reason=STOP_REASONS.get(sequence.stop_reason, "unknown"),
                )
            )
        output_tokens = sum(len(s.tokens) for s in response.sequences)
        usage = ModelUsage(
            input_tokens=prompt.length,
            output_tokens=output_tokens,
            total_tokens=prompt.length + output_tokens,
        )
        return ModelOutput(model=self.model_name, choices=choices, usage=usage, time=elapsed)
