"""The Tinker calls of tinker-cookbook 0.6.1's ``recipes/rl_loop.py``, made by a plain SDK script
on the word-reversal task (0.6.1 itself needs tml-renderers>=0.4.1, which the index here lacks).

Per step, as 0.6.1 does: ``save_weights_and_get_sampling_client(record_stability_info=...)``,
one ``sample`` of ``group`` answers per prompt, groups whose advantages are all zero skipped,
datums ``prompt + sampled[:-1]`` with targets ``[0] * (prompt - 1) + sampled``, padded sampler
logprobs and advantages, provenance attached as its ``with_sampled_provenance`` does, then
``forward_backward`` and ``optim_step`` submitted together. The reward is examples/grpo's: the
share of the reversed word's characters in place.

    tinkerplug local -- python rl_loop_061_calls.py --loss stable_reinforce
    TINKER_BASE_URL=http://127.0.0.1:PORT TINKER_API_KEY=tml-... python rl_loop_061_calls.py
"""

import argparse
import random
import string

import tinker
from tinker import types


def with_sampled_provenance(datum: types.Datum, prompt_length: int, num_sampled: int, sequence_id: str) -> types.Datum:
    """The layout 0.6.1 sends: inputs are the prompt and all but the last sampled token; targets
    are shifted by one, so they cover the prompt from its second token on."""
    return datum.with_provenance(
        model_input=[
            types.PromptProvenanceSpan(sequence_id=sequence_id, length=prompt_length),
            types.SampledProvenanceSpan(sequence_id=sequence_id, length=num_sampled - 1),
        ],
        loss_fn_inputs=[
            types.PromptProvenanceSpan(sequence_id=sequence_id, offset=1, length=prompt_length - 1),
            types.SampledProvenanceSpan(sequence_id=sequence_id, length=num_sampled),
        ],
    )


def prompt_of(tokenizer, word: str) -> types.ModelInput:
    text = tokenizer.apply_chat_template([{"role": "user", "content": f"Reverse: {word}"}], tokenize=False, add_generation_prompt=True)
    return types.ModelInput.from_ints(tokenizer.encode(text, add_special_tokens=False))


def reward(tokenizer, tokens: list[int], word: str) -> float:
    answer, expected = tokenizer.decode(tokens, skip_special_tokens=True).strip(), word[::-1]
    return sum(a == b for a, b in zip(answer, expected)) / max(len(answer), len(expected))


def group_datums(prompt: types.ModelInput, sequences, rewards: list[float], loss_fn: str) -> list[types.Datum]:
    mean = sum(rewards) / len(rewards)
    if all(r - mean == 0.0 for r in rewards):
        return []  # 0.6.1 skips a group whose advantages are all zero
    datums = []
    for sequence, r in zip(sequences, rewards):
        sampled, ob_len = sequence.tokens, prompt.length - 1
        model_input = prompt.append(types.EncodedTextChunk(tokens=sampled[:-1]))
        datum = types.Datum(model_input=model_input, loss_fn_inputs={
            "target_tokens": [0] * ob_len + sampled,
            "logprobs": [0.0] * ob_len + sequence.logprobs,
            "advantages": [0.0] * ob_len + [r - mean] * (model_input.length - ob_len),
        })
        if loss_fn == "stable_reinforce":
            datum = with_sampled_provenance(datum, prompt.length, len(sampled), sequence.sequence_id)
        datums.append(datum)
    return datums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--loss", default="stable_reinforce")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stale", type=int, default=1, help="a new sampler every STALE steps (1: on-policy, as 0.6.1)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 7))) for _ in range(2000)]
    training_client = tinker.ServiceClient().create_lora_training_client(base_model=args.model, rank=8, seed=args.seed).result()
    tokenizer = training_client.get_tokenizer()
    params = types.SamplingParams(max_tokens=12, temperature=1.0, stop=[tokenizer.eos_token], seed=args.seed)
    adam = types.AdamParams(learning_rate=args.learning_rate, beta1=0.9, beta2=0.95, eps=1e-8)
    for step in range(args.steps):
        if step % args.stale == 0:  # with --stale > 1, later steps train on an older policy's samples
            sampler = training_client.save_weights_and_get_sampling_client(
                record_stability_info=args.loss == "stable_reinforce"
            ).result()
        batch = rng.sample(words, args.batch)
        prompts = [prompt_of(tokenizer, w) for w in batch]
        futures = [sampler.sample(prompt=p, num_samples=args.group, sampling_params=params) for p in prompts]
        data, rewards = [], []
        for word, prompt, future in zip(batch, prompts, futures):
            sequences = future.result().sequences
            group = [reward(tokenizer, s.tokens, word) for s in sequences]
            rewards += group
            data += group_datums(prompt, sequences, group, args.loss)
        if data:
            fwd_bwd = training_client.forward_backward(data, loss_fn=args.loss)
            optim = training_client.optim_step(adam)
            fwd_bwd.result(), optim.result()
        print(f"step {step:3d} reward {sum(rewards) / len(rewards):.4f}", flush=True)


if __name__ == "__main__":
    main()
