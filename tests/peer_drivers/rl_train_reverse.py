"""tinker_cookbook.rl.train.main, unchanged, with a small environment of our own: reverse a word.

    python rl_train_reverse.py MODEL LOG_PATH STEPS LOSS_FN [LEARNING_RATE]
"""
import asyncio
import random
import sys

import chz
from tinker_cookbook import renderers
from tinker_cookbook.rl import train
from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
from tinker_cookbook.rl.types import RLDataset, RLDatasetBuilder
from tinker_cookbook.tokenizer_utils import get_tokenizer

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class ReverseEnv(ProblemEnv):
    def __init__(self, renderer, word: str):
        super().__init__(renderer, format_coef=0.0)
        self.word = word

    def get_question(self) -> str:
        return f"Reverse: {self.word}"

    def check_answer(self, sample_str: str) -> bool:
        return sample_str.strip() == self.word[::-1]

    def check_format(self, sample_str: str) -> bool:
        return True

    def get_reference_answer(self) -> str:
        return self.word[::-1]


class ReverseDataset(RLDataset):
    def __init__(self, renderer, batch_size: int, group_size: int, batches: int, seed: int):
        rng = random.Random(seed)
        self.words = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(4, 7))) for _ in range(batch_size * batches)]
        self.renderer, self.batch_size, self.group_size = renderer, batch_size, group_size

    def get_batch(self, index: int):
        words = self.words[index * self.batch_size : (index + 1) * self.batch_size]
        return [ProblemGroupBuilder(lambda w=w: ReverseEnv(self.renderer, w), self.group_size, "reverse") for w in words]

    def __len__(self) -> int:
        return len(self.words) // self.batch_size


@chz.chz
class ReverseBuilder(RLDatasetBuilder):
    model_name: str
    batch_size: int = 8
    group_size: int = 8
    batches: int = 8

    async def __call__(self):
        renderer = renderers.get_renderer("qwen3_instruct", get_tokenizer(self.model_name))
        return ReverseDataset(renderer, self.batch_size, self.group_size, self.batches, seed=0), None


model_name, log_path, steps, loss_fn = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
learning_rate = float(sys.argv[5]) if len(sys.argv) > 5 else 3e-3
config = train.Config(
    learning_rate=learning_rate, dataset_builder=ReverseBuilder(model_name=model_name, batches=steps), model_name=model_name,
    recipe_name="tinkerplug_reverse", max_tokens=12, log_path=log_path, eval_every=0, save_every=0, lora_rank=8,
    renderer_name="qwen3_instruct", loss_fn=loss_fn, num_groups_to_log=0,
    loss_fn_config={"clip_low_threshold": 0.8, "clip_high_threshold": 1.28} if loss_fn in ("ppo", "cispo") else None,
)
asyncio.run(train.main(config))
