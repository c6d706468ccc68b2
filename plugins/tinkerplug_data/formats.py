"""Record formats: what the columns of a data set mean, and how each becomes a chat record.

Every reader hands rows (plain dicts) to ``to_record``, which returns the form the renderers
take: ``{"messages": [...]}``, or ``{"text": "..."}`` for plain text (loss on every token,
rendered by this plugin's ``render_example``). A row that does not fit its format is a
``DataError`` naming where it is and the key at fault.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from tinkerplug.errors import DataError

# Each format and the keys that identify it, in the order detection tries them.
FORMATS: dict[str, tuple[str, ...]] = {
    "preference": ("chosen", "rejected"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "text": ("text",),
}
FORMAT_HINT = (
    'formats: messages {"messages": [{"role": ..., "content": ...}]}, '
    'preference {"prompt": ..., "chosen": ..., "rejected": ...} (or "messages" + chosen/rejected replies), '
    'prompt_completion {"prompt": ..., "completion": ...}, '
    'alpaca {"instruction": ..., "input": ..., "output": ...}, '
    'sharegpt {"conversations": [{"from": "human", "value": ...}]}, text {"text": ...}; '
    "data.format picks one"
)
MESSAGES_HINT = (
    'JSONL is one JSON object per line: {"messages": [{"role": "user", "content": "..."}, ...]}; '
    "other record formats: prompt_completion, alpaca, sharegpt, text (data.format)"
)
# ShareGPT speakers (``from``) as chat roles.
SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system",
    "function_call": "assistant", "observation": "tool", "tool": "tool", "function_response": "tool",
}


def check_format(name: str, where: str) -> str:
    """``name`` if it is a known format, else a ``DataError`` listing them."""
    if name not in FORMATS:
        raise DataError(f"{where}: unknown data format {name!r}", hint=f"data.format is one of {', '.join(FORMATS)}")
    return name


def detect_format(columns: Any, where: str) -> str:
    """The format whose keys ``columns`` (a row or a column list) holds; an error if none."""
    keys = set(columns)
    for name, needed in FORMATS.items():
        if keys.issuperset(needed):
            return name
    shown = ", ".join(sorted(map(str, keys))) or "none"
    half = keys & {"chosen", "rejected"}
    if len(half) == 1:
        missing = ({"chosen", "rejected"} - half).pop()
        raise DataError(
            f"{where}: preference record has {half.pop()!r} but no {missing!r} (its keys: {shown})",
            hint='a preference record needs both "chosen" and "rejected" replies (and a "prompt" or "messages")',
        )
    raise DataError(f"{where}: record fits no data format (its keys: {shown})", hint=FORMAT_HINT)


def to_record(row: Any, fmt: str, where: str) -> dict[str, Any]:
    """Row ``row`` of format ``fmt`` as a checked chat record (or text record)."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: a record must be a JSON object (got {type(row).__name__})", hint=FORMAT_HINT)
    needed = [k for k in FORMATS[fmt] if row.get(k) is None]
    if needed:
        missing = ", ".join(repr(k) for k in needed)
        if fmt == "messages":  # today's JSONL message, kept word for word
            raise DataError(f'{where}: record has no "messages" list', hint=MESSAGES_HINT)
        raise DataError(
            f"{where}: format {fmt!r} needs key {missing}; the record has {', '.join(map(repr, row)) or 'no keys'}",
            hint=FORMAT_HINT,
        )
    if fmt == "text":
        if not isinstance(row["text"], str) or not row["text"]:
            raise DataError(f'{where}: "text" must be a non-empty string')
        return {"text": row["text"]}
    if fmt == "preference":
        record = _preference(row, where)
        check_messages(record["messages"], where)
        check_messages(record["rejected"], where)
        return record
    record = {"messages": CONVERTERS[fmt](row, where)}
    check_messages(record["messages"], where)
    return record


class RecordConverter:
    """``to_record`` in one format for a whole source: the one asked for, else the first
    row's (so a file that mixes formats fails at the first row that differs)."""

    def __init__(self, fmt: str | None, label: str):
        self.format = check_format(fmt, label) if fmt is not None else None

    def __call__(self, row: Any, where: str) -> dict[str, Any]:
        if self.format is None:
            self.format = detect_format(row if isinstance(row, Mapping) else {}, where)
        return to_record(row, self.format, where)


def _messages(row: Mapping[str, Any], where: str) -> Any:
    value = row["messages"]  # not a list: check_messages says so, as for JSONL
    return _maybe_json(value, "messages", where) if isinstance(value, str) else _plain(value)


def _plain(messages: Any) -> Any:
    """Columnar readers fill a message's absent keys with None (one struct type per column)."""
    if not isinstance(messages, (list, tuple)):
        return messages
    return [{k: v for k, v in m.items() if v is not None or k == "content"} if isinstance(m, Mapping) else m for m in messages]


def _prompt_completion(row: Mapping[str, Any], where: str) -> list[Any]:
    """TRL's prompt/completion: each a string (one user / assistant turn) or a message list."""
    prompt = _maybe_json(row["prompt"], "prompt", where, allow_str=True)
    completion = _maybe_json(row["completion"], "completion", where, allow_str=True)
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    return [*_plain(prompt), *_plain(completion)]


def _preference(row: Mapping[str, Any], where: str) -> dict[str, Any]:
    """TRL's preference forms as ``{"messages": prompt + chosen, "rejected": prompt + rejected}``:
    an explicit ``prompt`` (text or messages) or ``messages`` (the conversation so far) with
    chosen/rejected replies (text, a message or messages); or implicit, where chosen and
    rejected are whole conversations sharing the prompt."""
    prompt = row.get("prompt", row.get("messages"))
    chosen = _maybe_json(row["chosen"], "chosen", where, allow_str=True)
    rejected = _maybe_json(row["rejected"], "rejected", where, allow_str=True)
    if prompt is None:  # implicit prompt: the messages the two conversations share
        chosen, rejected = _plain(_as_replies(chosen)), _plain(_as_replies(rejected))
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        return {"messages": chosen, "rejected": rejected} if shared else _no_prompt(where)
    prompt = _maybe_json(prompt, "prompt", where, allow_str=True)
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _plain(prompt)
    replies = {"chosen": _plain(_as_replies(chosen)), "rejected": _plain(_as_replies(rejected))}
    for key, reply in replies.items():  # an empty reply has nothing to train or compare: a silent 0 margin
        if not isinstance(reply, list) or not any(isinstance(m, Mapping) and m.get("role") == "assistant" for m in reply):
            raise DataError(f'{where}: preference record\'s "{key}" has no assistant reply',
                            hint=f'give "{key}" as the reply text, an assistant message or a list of messages ending in one')
    return {"messages": [*prompt, *replies["chosen"]], "rejected": [*prompt, *replies["rejected"]]}


def _as_replies(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    return [value] if isinstance(value, Mapping) else list(value) if isinstance(value, (list, tuple)) else value


def _no_prompt(where: str) -> Any:
    raise DataError(
        f'{where}: preference record has no "prompt" and its chosen/rejected conversations share no first message',
        hint='give a "prompt" (or "messages") with chosen/rejected replies',
    )


def _alpaca(row: Mapping[str, Any], where: str) -> list[Any]:
    extra = row.get("input")
    user = f"{row['instruction']}\n\n{extra}" if extra else str(row["instruction"])
    system = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return [*system, {"role": "user", "content": user}, {"role": "assistant", "content": str(row["output"])}]


def _sharegpt(row: Mapping[str, Any], where: str) -> list[Any]:
    turns = _maybe_json(row["conversations"], "conversations", where)
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for i, turn in enumerate(turns):
        if isinstance(turn, Mapping) and "role" in turn and "content" in turn:  # already chat form
            messages.append({"role": turn["role"], "content": turn["content"]})
            continue
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise DataError(f'{where}: conversations[{i}] needs "from" and "value"', hint=FORMAT_HINT)
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise DataError(
                f"{where}: conversations[{i}] has unknown speaker {turn['from']!r}",
                hint=f"ShareGPT speakers are {', '.join(SHAREGPT_ROLES)}",
            )
        messages.append({"role": role, "content": turn["value"]})
    return messages


CONVERTERS: dict[str, Callable[[Mapping[str, Any], str], list[Any]]] = {
    "messages": _messages,
    "prompt_completion": _prompt_completion,
    "alpaca": _alpaca,
    "sharegpt": _sharegpt,
}


def _maybe_json(value: Any, key: str, where: str, allow_str: bool = False) -> Any:
    """A list column as stored; CSV cells hold lists as JSON text."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f'{where}: "{key}" is not valid JSON: {exc.msg}') from None
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list) or (allow_str and isinstance(value, str)):
        return value
    kind = "a string or a list of messages" if allow_str else "a list"
    raise DataError(f'{where}: "{key}" must be {kind} (got {type(value).__name__})', hint=FORMAT_HINT)


def check_messages(messages: Any, where: str) -> None:
    """The chat record checks of the JSONL reader (roles, keys, a non-empty list)."""
    from tinkerplug_data.jsonl import check_record

    check_record({"messages": messages}, where)
