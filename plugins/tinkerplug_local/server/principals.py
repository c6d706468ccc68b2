"""Who is calling: every API key is a principal (a name, admin or not, its limits).

Keys come from ``--api-key``, ``$TINKERPLUG_SERVE_KEYS`` (``tml-...`` or ``name=tml-...``,
comma or space separated) and ``--keys-file`` (TOML, one table per person)::

    [alice]
    key = "tml-..."
    admin = true          # may list every run and checkpoint
    max_models = 8        # optional: overrides --max-models-per-key

What a principal creates belongs to it (``state.py``); only its *name* is ever stored (run
dirs' ``.owner``) or shown (``/metrics``), never the key. A server without keys (loopback only)
has one principal, ``local``, which owns everything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tinkerplug.errors import TinkerplugError

KEY_PREFIX = "tml-"  # the SDK sends no other key
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Limits:
    """Per-key limits; 0 means none."""

    max_sessions: int = 0
    max_models: int = 0
    max_queued: int = 0


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool = False
    limits: Limits = field(default_factory=Limits)


LOCAL = "local"  # the one principal of a server without keys, and the owner of unowned runs


class Keyring:
    """Maps a key to its principal in constant time per key (no early exit on a near match)."""

    def __init__(self, entries: dict[str, Principal], default_limits: Limits = Limits()):
        self._entries = [(key.encode(), principal) for key, principal in entries.items()]
        self.open = not entries  # no keys: every caller is the ``local`` principal
        self.local = Principal(LOCAL, admin=True, limits=default_limits)

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, key: bytes) -> Principal | None:
        if self.open:
            return self.local
        found = None
        for candidate, principal in self._entries:
            if hmac.compare_digest(key, candidate):
                found = principal
        return found

    def principals(self) -> list[Principal]:
        return [p for _, p in self._entries] or [self.local]


def load_keyring(given: tuple[str, ...], env_value: str, keys_file: str | None, limits: Limits, env_name: str) -> Keyring:
    """Every key from the three sources; refused with one clear message when a key is empty,
    malformed, or given twice (two people with one key could not be told apart)."""
    entries: list[tuple[str, str, Principal]] = []  # (key, where, principal)
    for where, value in [*((f"--api-key #{i + 1}", v) for i, v in enumerate(given)),
                         *((f"${env_name} entry {i + 1}", v) for i, v in enumerate(re.split(r"[,\s]+", env_value)) if v)]:
        name, _, key = value.strip().rpartition("=")
        entries.append((key, where, Principal(name or anonymous_name(key), limits=limits)))
    if keys_file:
        entries += _read_keys_file(Path(keys_file).expanduser(), limits)
    by_key: dict[str, tuple[str, Principal]] = {}
    names: dict[str, str] = {}
    for key, where, principal in entries:
        _check_entry(key, where, principal.name)
        if key in by_key:
            raise TinkerplugError(f"{where} has the same key as {by_key[key][0]}: each person needs their own key",
                                  hint=f"make a new one with: echo tml-$(openssl rand -hex 16)")
        if principal.name in names:
            raise TinkerplugError(f"{where}: the name {principal.name!r} is already used by {by_key[names[principal.name]][0]}",
                                  hint="give each key its own name")
        by_key[key] = (where, principal)
        names[principal.name] = key
    return Keyring({key: principal for key, (_, principal) in by_key.items()}, limits)


def anonymous_name(key: str) -> str:
    """A stable name for a key given without one: a short hash (the key itself is never stored)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:10]


def _check_entry(key: str, where: str, name: str) -> None:
    if not key.strip():
        raise TinkerplugError(f"{where} has an empty key", hint="set key = \"tml-...\" (or remove the entry)")
    if not key.startswith(KEY_PREFIX):
        raise TinkerplugError(f"{where}: an API key for tinkerplug serve must start with 'tml-' (the SDK sends no other)",
                              hint="e.g. tml-$(openssl rand -hex 16)")
    if not _NAME.match(name) or name == LOCAL:
        raise TinkerplugError(f"{where}: invalid key name {name!r}",
                              hint=f"letters, digits, _ . - only; {LOCAL!r} is reserved for a server without keys")


def _read_keys_file(path: Path, limits: Limits) -> list[tuple[str, str, Principal]]:
    import tomllib

    try:
        tables = tomllib.loads(path.read_text())
    except OSError as exc:
        raise TinkerplugError(f"cannot read the keys file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TinkerplugError(f"the keys file {path} is not valid TOML: {exc}") from None
    known = {"key", "admin", *(f.name for f in fields(Limits))}
    out = []
    for name, table in tables.items():
        where = f"keys file {path}, [{name}]"
        if not isinstance(table, dict):
            raise TinkerplugError(f"{where} must be a table with key = \"tml-...\"", hint=f"[{name}]\\nkey = \"tml-...\"")
        unknown = sorted(set(table) - known)
        if unknown:
            raise TinkerplugError(f"{where}: unknown setting {unknown[0]!r}", hint=f"known: {', '.join(sorted(known))}")
        own = {k: v for k, v in table.items() if k in {f.name for f in fields(Limits)}}
        if any(not isinstance(v, int) or v < 0 for v in own.values()):
            raise TinkerplugError(f"{where}: limits are whole numbers >= 0 (0: no limit)")
        key = table.get("key", "")
        out.append((key if isinstance(key, str) else "", where, Principal(name, bool(table.get("admin", False)), replace(limits, **own))))
    return out
