"""A conversation with sampler weights: the run's renderer builds each prompt from the whole
history, the reply is parsed back and appended, so every turn sees the ones before it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Conversation:
    """One model's side of a chat: its sampling client and its own history."""

    label: str
    sampling_client: Any
    renderer: Any
    params: Any
    messages: list[dict[str, Any]] = field(default_factory=list)
    system: str | None = None

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def submit(self, text: str) -> Any:
        """Add the user turn and submit the sample request (not awaited: models run side by side)."""
        if not self.messages and self.system:
            self.messages.append({"role": "system", "content": self.system})
        self.messages.append({"role": "user", "content": text})
        prompt = self.renderer.build_generation_prompt(self.messages)
        return self.sampling_client.sample(prompt, 1, self.params)

    def receive(self, response: Any) -> tuple[str, bool]:
        """Parse the reply, keep it in the history; (text, whether it ended cleanly)."""
        from tinker_cookbook.renderers import get_text_content

        message, ok = self.renderer.parse_response(response.sequences[0].tokens)
        text = get_text_content(message)
        self.messages.append({"role": "assistant", "content": text})
        return text, bool(ok)


def sampling_params(renderer: Any, temperature: float, max_tokens: int, seed: int | None) -> Any:
    from tinker import types

    return types.SamplingParams(
        max_tokens=max_tokens, temperature=temperature, stop=renderer.get_stop_sequences(), seed=seed
    )


def answer(conversations: list[Conversation], text: str) -> list[tuple[str, str, bool]]:
    """One user turn to every conversation; their (label, reply, ended cleanly)."""
    futures = [c.submit(text) for c in conversations]
    results = []
    for conversation, future in zip(conversations, futures):
        response = future.result() if hasattr(future, "result") else future
        reply, ok = conversation.receive(response)
        results.append((conversation.label, reply, ok))
    return results
