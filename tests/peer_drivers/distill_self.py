"""tinker_cookbook.distillation.train_on_policy.main, unchanged, with tiny-chat as its own
teacher and local prompts in place of DeepMath.

    python distill_self.py MODEL LOG_PATH STEPS
"""
import asyncio
import random
import sys

from tinker_cookbook.distillation import datasets as distill_datasets
from tinker_cookbook.distillation import train_on_policy

model_name, log_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(0)
tasks = ["Reverse: {w}", "Uppercase: {w}", "Copy: {w}"]
prompts = [rng.choice(tasks).format(w="".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 6))))
           for _ in range(4 * steps)]
distill_datasets.load_deepmath_prompts = lambda split="train": prompts if split == "train" else None

builder = distill_datasets.PromptOnlyDatasetBuilder(
    dataset_name="deepmath", groups_per_batch=4, group_size=4, model_name_for_tokenizer=model_name,
    renderer_name="qwen3_instruct",
)
config = train_on_policy.Config(
    recipe_name="tinkerplug_self_distillation", learning_rate=1e-3, model_name=model_name,
    renderer_name="qwen3_instruct", lora_rank=8, max_tokens=10, kl_penalty_coef=1.0, log_path=log_path,
    eval_every=0, save_every=0, max_steps=steps,
    dataset_configs=[distill_datasets.DistillationDatasetConfig(
        dataset_builder=builder, teacher_config=distill_datasets.TeacherConfig(base_model=model_name), groups_per_batch=4,
    )],
)
asyncio.run(train_on_policy.main(config))
