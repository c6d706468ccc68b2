"""Where a config's values came from, and how messages name them: the TOML text (for
``FILE:LINE``), the ``--set`` overrides (an error in one names the ``--set``), did-you-mean and
the valid keys of a table. ``config.py`` uses it; it holds no config model."""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tinkerplug.errors import ConfigError

# The forms a data source may take (a path, a table, a list of tables): pydantic names them in
# an error's location; messages leave them out.
SOURCE_FORMS = ("source-path", "source-table", "source-list")


@dataclass
class ConfigOrigin:
    """Where a config's values came from, for messages and relative paths: the ``file`` (its
    ``text`` gives line numbers) and the ``--set`` overrides (dotted key -> as typed)."""

    file: Path
    text: str = ""
    overrides: dict[str, str] = field(default_factory=dict)

    def override_of(self, loc: tuple[Any, ...]) -> str | None:
        """The ``--set`` that gave the value at ``loc`` (or a table above it), if one did."""
        keys = [str(p) for p in loc if not isinstance(p, int)]
        for end in range(len(keys), 0, -1):
            if (found := self.overrides.get(".".join(keys[:end]))) is not None:
                return found
        return None

    def where(self, loc: tuple[Any, ...]) -> str:
        """``--set KEY=VALUE`` when an override gave the value, else ``FILE:LINE``."""
        override = self.override_of(loc)
        if override is not None:
            return f"--set {override}"
        line = find_line(self.text, loc)
        return f"{self.file}:{line}" if line else str(self.file)

    def base_dir(self, loc: tuple[Any, ...]) -> Path:
        """What a relative path at ``loc`` is relative to: the current directory when a
        ``--set`` gave it, else the config file's folder."""
        return Path.cwd() if self.override_of(loc) is not None else self.file.parent.resolve()


SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password)", re.I)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is read as TOML, else as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set learning_rate=1e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
        raise ConfigError(f"--set {text!r}: {key!r} is not a config key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a table")
        node = nxt
    node[path[-1]] = value


def find_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line of a dotted key in TOML text (tomllib keeps no positions): the line
    that names the longest prefix of the key."""
    keys = [str(p) for p in loc if not isinstance(p, int)]
    best, best_len, table = None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if header := re.match(r"^\[+([^\[\]]+)\]+", stripped):
            table = [k.strip().strip('"') for k in header.group(1).split(".")]
            full = table
        elif assign := re.match(r'^([\w."-]+)\s*=', stripped):
            full = table + [k.strip().strip('"') for k in assign.group(1).split(".")]
        else:
            continue
        if full == keys[: len(full)] and len(full) > best_len:
            best, best_len = number, len(full)
    return best


def did_you_mean(name: str, known: Any) -> str:
    """``; did you mean 'x'?`` for the closest of ``known``, or ``""``."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def reject_secrets(data: Any, origin: ConfigOrigin, loc: tuple[str, ...] = ()) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if SECRET_KEYS.search(key) and isinstance(value, str) and value:
                raise ConfigError(
                    f"{origin.where(loc + (key,))}: {'.'.join(loc + (key,))} looks like a secret",
                    hint="never put keys in config files; set TINKER_API_KEY in the environment",
                )
            reject_secrets(value, origin, loc + (key,))


def format_validation(
    exc: ValidationError, origin: ConfigOrigin, model: type[BaseModel], prefix: tuple[str, ...], plugin: str | None = None
) -> str:
    """One line per error: where (``FILE:LINE`` or the ``--set``), the key, what is wrong; an
    unknown key gets a did-you-mean and the valid keys of its table."""
    lines = []
    for err in exc.errors():
        inner = tuple(p for p in err["loc"] if p not in SOURCE_FORMS)
        loc = prefix + inner
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            valid = table_keys(model, inner[:-1])
            msg = f"unknown key{did_you_mean(str(loc[-1]), valid)} (valid keys: {', '.join(sorted(valid))})"
        elif err["type"] == "missing":
            msg = "required key is missing"
        got = ""
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            got = f" (got {err['input']!r})"
        owner = f" [plugin {plugin}]" if plugin else ""
        lines.append(f"{origin.where(loc)}: {key}: {msg}{got}{owner}")
    return "invalid config:\n  " + "\n  ".join(lines)


def table_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys of the table at ``loc`` inside ``model`` (``("data",)``: those of ``[data]``)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field_info = model.model_fields.get(str(part))
        inner = _model_in(field_info.annotation) if field_info is not None else None
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's type (``SourceConfig`` in ``list[SourceConfig]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _model_in(arg)) is not None:
            return found
    return None
