"""tinker_cookbook.recipes.rl_loop.main, unchanged, on a local task instead of GSM8K.

    python rl_loop_local.py MODEL LOG_PATH STEPS TASK LEARNING_RATE [BATCH GROUP [LOSS_FN]]

LOSS_FN (cookbook 0.6.x only, whose Config has it): importance_sampling, cispo, gspo or
stable_reinforce. TASK is reverse, upper or add; the recipe's GSM8K grader (a \\boxed{} answer) is swapped for
partial credit, as tiny-chat never writes \\boxed{}.
"""
import difflib
import random
import sys

import datasets
from tinker_cookbook.recipes import rl_loop
from tinker_cookbook.recipes.math_rl.math_env import extract_gsm8k_final_answer

model_name, log_path, steps, task = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = random.Random(0)
letters = "abcdefghijklmnopqrstuvwxyz"


def row():
    word = "".join(rng.choice(letters) for _ in range(rng.randint(3, 6)))
    if task == "reverse":
        return {"question": f"Reverse: {word}", "answer": f"#### {word[::-1]}"}
    if task == "upper":
        return {"question": f"Uppercase: {word}", "answer": f"#### {word.upper()}"}
    a, b = rng.randint(10, 49), rng.randint(10, 49)
    return {"question": f"{a}+{b}=", "answer": f"#### {a + b}"}


rows = [row() for _ in range(400)]
load_dataset = datasets.load_dataset


def load_local(path, *args, **kwargs):
    if path != "openai/gsm8k":
        return load_dataset(path, *args, **kwargs)
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)})


def closeness(response: str, answer: str) -> float:
    """Partial credit: how close the reply is to the answer (tiny-chat writes no \\boxed{}, and the
    recipe's few-shot strawberry prefix is far outside what it knows, so exact match is always 0)."""
    return difflib.SequenceMatcher(None, response.strip(), extract_gsm8k_final_answer(answer)).ratio()


datasets.load_dataset = load_local
rl_loop.get_reward = closeness
batch_size, group_size = (int(a) for a in sys.argv[6:8]) if len(sys.argv) > 7 else (8, 8)
loss = {"loss_fn": sys.argv[8]} if len(sys.argv) > 8 else {}
rl_loop.main(rl_loop.Config(log_path=log_path, model_name=model_name, batch_size=batch_size, group_size=group_size,
                            learning_rate=float(sys.argv[5]), lora_rank=8, max_tokens=10, max_steps=steps, save_every=0, **loss))
