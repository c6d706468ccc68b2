"""Request bodies of the OpenAI-compatible API, checked field by field.

Fields OpenAI clients send that change nothing here (``user``, ``frequency_penalty: 0``...) are
accepted and ignored; fields that would change the answer and are not implemented (penalties,
``logit_bias``, tools, ``top_logprobs`` of sampled tokens) are refused with a 400 naming the
field, so a client never gets an answer computed differently from what it asked for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinkerplug_local.server.oai_models import OAIError

MAX_N = 16
MAX_TOKENS = 4096
DEFAULT_MAX_TOKENS = 256
MAX_STOP = 4
MAX_PROMPTS = 64
MAX_TOP_LOGPROBS = 5


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    functions: list[Any] | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise OAIError(400, f"stop: up to {MAX_STOP} non-empty strings", "stop")
        return stops

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=0)
    tools: list[Any] | None = None

    def token_limit(self, room: int | None = None) -> int:
        """The answer's most tokens: as given, else the default, cut to ``room`` (what the
        model's context leaves after the prompt), as OpenAI's default is."""
        given = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return _limit(given, room)


class CompletionRequest(Sampling):
    # A text, a list of texts, a list of token ids, or a list of those (one answer set each).
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    suffix: str | None = None

    def token_limit(self, room: int | None = None) -> int:
        return _limit(self.max_tokens, room)

    def prompts(self) -> list[str | list[int]]:
        prompt = self.prompt
        if isinstance(prompt, str) or (prompt and all(isinstance(t, int) for t in prompt)):
            prompts: list[Any] = [prompt]
        else:
            prompts = list(prompt)
        if not prompts or len(prompts) > MAX_PROMPTS:
            raise OAIError(400, f"prompt: 1 to {MAX_PROMPTS} prompts per request", "prompt")
        if self.logprobs and not self.echo:  # alternatives are computed for prompt tokens only
            raise OAIError(400, "logprobs: above 0 only with echo (alternatives of the prompt's tokens); "
                           "the local sampler returns no alternatives of sampled tokens", "logprobs")
        return prompts


NOT_IMPLEMENTED = {
    "frequency_penalty": lambda v: v not in (0, 0.0, None),
    "presence_penalty": lambda v: v not in (0, 0.0, None),
    "logit_bias": bool,
    "tools": bool,
    "functions": bool,
    "response_format": lambda v: bool(v) and v.get("type") not in (None, "text"),
    "suffix": bool,
}


def parse_body(data: Any, model_cls: type[Sampling]) -> Any:
    """``data`` as ``model_cls``; a 400 in OpenAI's shape naming the first bad field."""
    if not isinstance(data, dict):
        raise OAIError(400, "the body must be a JSON object", None)
    try:
        body = model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"])) or None
        limits = {"n": f" (this server allows 1..{MAX_N})", "max_tokens": f" (this server allows up to {MAX_TOKENS})"}
        raise OAIError(400, f"{field}: {first['msg']}{limits.get(field or '', '')}", field) from None
    for name, is_set in NOT_IMPLEMENTED.items():
        if is_set(getattr(body, name, None)):
            raise OAIError(400, f"{name}: not served by tinkerplug serve (the local sampler does not implement it)", name)
    return body


Role = Literal["system", "user", "assistant", "tool", "developer"]


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OpenAI messages as the renderer's ``{"role", "content"}``: text parts joined."""
    out = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in Role.__args__:  # type: ignore[attr-defined]
            raise OAIError(400, f"messages.{i}.role: one of {', '.join(Role.__args__)}", f"messages.{i}.role")  # type: ignore[attr-defined]
        if isinstance(content, list):
            if any(not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text", ""), str) for p in content):
                raise OAIError(400, f"messages.{i}.content: only text parts are served", f"messages.{i}.content")
            content = "".join(p.get("text", "") for p in content)
        if not isinstance(content, str):
            raise OAIError(400, f"messages.{i}.content: a string or a list of text parts", f"messages.{i}.content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _limit(given: int | None, room: int | None) -> int:
    if given is not None:
        return given  # too long for the context: the sampler answers 400 with the most it takes
    return DEFAULT_MAX_TOKENS if room is None else min(DEFAULT_MAX_TOKENS, room)
