"""tinker_cookbook.preference.train_dpo.main, unchanged, on a small local comparison set: for
"Reverse: WORD", the reversed word is preferred to the word copied back.

    python dpo_local.py MODEL LOG_PATH DATA_DIR STEPS
"""
import json
import random
import sys
from pathlib import Path

from tinker_cookbook.preference import train_dpo
from tinker_cookbook.preference.dpo_datasets import DPODatasetBuilderFromComparisons
from tinker_cookbook.preference.preference_datasets import ComparisonBuilderFromJsonl
from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

model_name, log_path, data_dir, steps = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
rng = random.Random(0)
rows = []
for _ in range(4 * steps):
    word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 7)))
    chosen, rejected = word[::-1], word
    swap = rng.random() < 0.5
    a, b = (rejected, chosen) if swap else (chosen, rejected)
    rows.append({"comparison": {"prompt_conversation": [{"role": "user", "content": f"Reverse: {word}"}],
                                "completion_A": [{"role": "assistant", "content": a}],
                                "completion_B": [{"role": "assistant", "content": b}]},
                 "label": "B" if swap else "A"})
data_dir.mkdir(parents=True, exist_ok=True)
(data_dir / "comparisons.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

builder = DPODatasetBuilderFromComparisons(
    comparison_builder=ComparisonBuilderFromJsonl(train_path=str(data_dir / "comparisons.jsonl")),
    common_config=ChatDatasetBuilderCommonConfig(
        model_name_for_tokenizer=model_name, renderer_name="qwen3_instruct", max_length=64, batch_size=4,
    ),
)
train_dpo.main(train_dpo.Config(
    log_path=log_path, model_name=model_name, dataset_builder=builder, renderer_name="qwen3_instruct", recipe_name="tinkerplug_dpo",
    learning_rate=1e-3, dpo_beta=0.1, lora_rank=8, save_every=0, eval_every=0, max_steps=steps,
))
