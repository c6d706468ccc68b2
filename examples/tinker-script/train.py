"""LoRA fine-tuning with the Tinker SDK: a plain script that knows nothing of tinkerplug.

Teaches a chat model to reverse and uppercase a word, then samples an answer for a word it
never saw in training.

    # on the Tinker service (needs TINKER_API_KEY)
    python train.py --model Qwen/Qwen3-4B-Instruct-2507
    # on this machine, offline, unmodified
    tinkerplug local -- python train.py
"""

import argparse
import random
import string

import tinker
from tinker import types


def make_words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 7))) for _ in range(n)]


def prompt_tokens(tokenizer, word: str) -> list[int]:
    messages = [{"role": "user", "content": f"Reverse and uppercase: {word}"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def make_datum(tokenizer, word: str) -> types.Datum:
    """Prompt then answer; the loss counts only the answer's tokens."""
    prompt = prompt_tokens(tokenizer, word)
    answer = tokenizer.encode(word[::-1].upper() + tokenizer.eos_token, add_special_tokens=False)
    tokens = prompt + answer
    weights = [0.0] * len(prompt) + [1.0] * len(answer)
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights[1:]},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    rng = random.Random(0)
    words = make_words(rng, 400)
    train_words, test_word = words[:-1], words[-1]

    service_client = tinker.ServiceClient()
    training_client = service_client.create_lora_training_client(base_model=args.model, rank=args.rank, seed=0).result()
    tokenizer = training_client.get_tokenizer()

    for step in range(args.steps):
        batch = [make_datum(tokenizer, w) for w in rng.sample(train_words, args.batch_size)]
        # Submit both before waiting: they run in order, without a round trip in between.
        fwd_bwd = training_client.forward_backward(batch, loss_fn="cross_entropy")
        optim = training_client.optim_step(types.AdamParams(learning_rate=args.learning_rate))
        loss_sum = fwd_bwd.result().metrics["loss:sum"]
        optim.result()
        trained_tokens = sum(sum(d.loss_fn_inputs["weights"].tolist()) for d in batch)
        print(f"step {step:3d} loss {loss_sum / trained_tokens:.4f}", flush=True)

    sampling_client = training_client.save_weights_and_get_sampling_client().result()
    response = sampling_client.sample(
        prompt=types.ModelInput.from_ints(prompt_tokens(tokenizer, test_word)),
        num_samples=1,
        sampling_params=types.SamplingParams(max_tokens=16, temperature=0.0, stop=[tokenizer.eos_token]),
    ).result()
    answer = tokenizer.decode(response.sequences[0].tokens, skip_special_tokens=True).strip()
    print(f"sample: {test_word} -> {answer} (expected {test_word[::-1].upper()})")


if __name__ == "__main__":
    main()
