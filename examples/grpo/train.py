"""GRPO with the Tinker SDK: a plain RL script that knows nothing of tinkerplug.

The policy samples a group of answers to "Reverse: WORD"; each answer's reward is the share of
characters it gets right; advantages are rewards centred within their group (GRPO, no critic);
the update is the service's ``importance_sampling`` loss on the sampler's own logprobs. Greedy
accuracy on held-out words is measured before and after.

    # on the Tinker service (needs TINKER_API_KEY)
    python train.py --model Qwen/Qwen3-4B-Instruct-2507
    # on this machine, offline, unmodified
    tinkerplug local -- python examples/grpo/train.py
"""

import argparse
import random
import string

import tinker
from tinker import types


def make_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 7))) for _ in range(n)]


def prompt_of(tokenizer, word: str) -> types.ModelInput:
    messages = [{"role": "user", "content": f"Reverse: {word}"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return types.ModelInput.from_ints(tokenizer.encode(text, add_special_tokens=False))


def reward(tokenizer, tokens: list[int], word: str) -> float:
    """Share of the reversed word's characters in place; nothing for extra characters."""
    answer, expected = tokenizer.decode(tokens, skip_special_tokens=True).strip(), word[::-1]
    hits = sum(a == b for a, b in zip(answer, expected))
    return hits / max(len(answer), len(expected))


def group_datums(prompt: types.ModelInput, sequences, rewards: list[float]) -> list[types.Datum]:
    """One datum per sample: prompt + sampled tokens, the sampler's logprobs, centred rewards."""
    mean = sum(rewards) / len(rewards)
    datums = []
    for seq, r in zip(sequences, rewards):
        tokens = prompt.to_ints() + seq.tokens
        n_prompt = prompt.length - 1  # positions that predict a prompt token carry no advantage
        datums.append(types.Datum(
            model_input=types.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={
                "target_tokens": tokens[1:],
                "logprobs": [0.0] * n_prompt + list(seq.logprobs),
                "advantages": [0.0] * n_prompt + [r - mean] * len(seq.tokens),
            },
        ))
    return datums


def accuracy(sampler, tokenizer, words: list[str], stop: list[str]) -> float:
    params = types.SamplingParams(max_tokens=12, temperature=0.0, stop=stop)
    futures = [sampler.sample(prompt_of(tokenizer, w), 1, params) for w in words]
    answers = [tokenizer.decode(f.result().sequences[0].tokens, skip_special_tokens=True).strip() for f in futures]
    return sum(a == w[::-1] for a, w in zip(answers, words)) / len(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    rng = random.Random(0)
    words = make_words(rng, 2000)
    heldout, train_words = words[:64], words[64:]
    service_client = tinker.ServiceClient()
    training_client = service_client.create_lora_training_client(base_model=args.model, rank=args.rank, seed=0).result()
    tokenizer = training_client.get_tokenizer()
    stop = [tokenizer.eos_token]
    params = types.SamplingParams(max_tokens=12, temperature=1.0, stop=stop)

    sampler = training_client.save_weights_and_get_sampling_client().result()
    print(f"held-out greedy accuracy before: {accuracy(sampler, tokenizer, heldout, stop):.3f}", flush=True)
    for step in range(args.steps):
        batch = rng.sample(train_words, args.batch)
        futures = [sampler.sample(prompt_of(tokenizer, w), args.group, params) for w in batch]  # all at once
        data, rewards = [], []
        for word, future in zip(batch, futures):
            sequences = future.result().sequences
            group = [reward(tokenizer, s.tokens, word) for s in sequences]
            rewards += group
            data += group_datums(prompt_of(tokenizer, word), sequences, group)
        fwd_bwd = training_client.forward_backward(data, loss_fn="importance_sampling")
        optim = training_client.optim_step(types.AdamParams(learning_rate=args.learning_rate))
        fwd_bwd.result(), optim.result()
        sampler = training_client.save_weights_and_get_sampling_client().result()  # the new policy
        print(f"step {step:3d} reward {sum(rewards) / len(rewards):.3f}", flush=True)
    print(f"held-out greedy accuracy after: {accuracy(sampler, tokenizer, heldout, stop):.3f}")


if __name__ == "__main__":
    main()
