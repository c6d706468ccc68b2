#!/usr/bin/env python
"""Write preference pairs for the DPO example from the quickstart's subtraction data (stdlib
only): TRL's form, ``{"prompt": "57-23=", "chosen": "34", "rejected": "44"}``, where the
rejected answer is a near miss (off by 1, 2, 9, 10 or 11, the mistakes a model that half knows
subtraction makes). Held-out prompts stay out: the pairs come from the quickstart's train set.

    python examples/dpo/make_data.py            # writes examples/dpo/train.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
OFFSETS = (-11, -10, -9, -2, -1, 1, 2, 9, 10, 11)


def pairs(records: list[dict], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for record in records[:n]:
        prompt, answer = record["messages"][0]["content"], record["messages"][-1]["content"]
        wrong = int(answer) + rng.choice([o for o in OFFSETS if int(answer) + o >= 0])
        out.append({"prompt": prompt, "chosen": answer, "rejected": str(wrong)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE.parent / "quickstart" / "train.jsonl")
    parser.add_argument("--out", type=Path, default=HERE / "train.jsonl")
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = [json.loads(line) for line in args.source.read_text().splitlines() if line.strip()]
    rows = pairs(records, args.n, args.seed)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} pairs to {args.out}")


if __name__ == "__main__":
    main()
