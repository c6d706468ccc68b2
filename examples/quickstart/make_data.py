#!/usr/bin/env python
"""Write seeded chat-format JSONL data for the quickstart fine-tune (stdlib only).

Each line is ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``.
Train and held-out sets are disjoint by construction: the held-out operand pairs (or
words) are drawn first and excluded from the training pool.

Tasks (neither is known to the shipped tiny-chat model before fine-tuning):

- ``subtract``: 2-digit subtraction, user ``"57-23="`` -> assistant ``"34"``
  (10 <= b <= a <= 99).
- ``first_letter``: user ``"First letter: hello"`` -> assistant ``"h"`` (random 3-8 letter
  words). A new instruction the model has never seen (exact match 0.0 before); LoRA learns it in
  ~50 steps, so the tests use it.

Examples::

    python examples/quickstart/make_data.py --task subtract --n-train 4000 --n-heldout 100 \
        --out-dir examples/quickstart
    python examples/quickstart/make_data.py --task first_letter --n-train 1000 --n-heldout 32 \
        --out-dir tests/data --prefix fast_
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path


def _subtract_pool() -> list[tuple[str, str]]:
    return [(f"{a}-{b}=", str(a - b)) for a in range(10, 100) for b in range(10, a + 1)]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8)))


def _first_letter(w: str) -> tuple[str, str]:
    return f"First letter: {w}", w[0]


def make_split(task: str, n_train: int, n_heldout: int, seed: int):
    """Return (train, heldout) lists of (prompt, answer); prompts never overlap."""
    rng = random.Random(seed)
    if task == "subtract":
        pool = _subtract_pool()
        rng.shuffle(pool)
        if n_heldout >= len(pool):
            raise SystemExit(f"--n-heldout must be < {len(pool)}")
        heldout, rest = pool[:n_heldout], pool[n_heldout:]
        train: list[tuple[str, str]] = []
        while len(train) < n_train:  # every pair once per pass, reshuffled each pass
            rng.shuffle(rest)
            train.extend(rest[: n_train - len(train)])
    elif task == "first_letter":
        held_words: list[str] = []
        seen: set[str] = set()
        while len(held_words) < n_heldout:
            w = _word(rng)
            if w not in seen:
                seen.add(w)
                held_words.append(w)
        heldout = [_first_letter(w) for w in held_words]
        train = []
        while len(train) < n_train:
            w = _word(rng)
            if w not in seen:
                train.append(_first_letter(w))
    else:
        raise SystemExit(f"unknown task {task!r}")
    held_prompts = {p for p, _ in heldout}
    assert not any(p in held_prompts for p, _ in train), "train/held-out overlap"
    return train, heldout


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w") as f:
        for prompt, answer in rows:
            msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": msgs}) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["subtract", "first_letter"], default="subtract")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-heldout", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--prefix", default="", help="file name prefix, e.g. 'fast_' -> fast_train.jsonl")
    args = ap.parse_args(argv)

    train, heldout = make_split(args.task, args.n_train, args.n_heldout, args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    tr = args.out_dir / f"{args.prefix}train.jsonl"
    ho = args.out_dir / f"{args.prefix}heldout.jsonl"
    _write(tr, train)
    _write(ho, heldout)
    print(f"wrote {len(train)} -> {tr}, {len(heldout)} -> {ho}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
