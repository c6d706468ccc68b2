#!/usr/bin/env python
"""Build the tiny pretrained chat model that ships with tinkerplug.

Everything is synthetic and seeded, so the model can be rebuilt offline on a laptop CPU:

1. a byte-level BPE tokenizer (``tokenizers``) with digits split one per token, the
   Qwen chat special tokens and a Qwen-style chat template;
2. a ~1.1 M parameter Qwen3 model (hidden 128, 4 layers, 4 heads / 2 KV heads,
   head_dim 32, FFN 512, tied embeddings, fp32);
3. supervised pretraining on synthetic chat tasks (uppercase, reverse, copy,
   2-digit addition, ...) rendered with the tinker-cookbook ``qwen3_instruct`` renderer,
   loss on the assistant reply only. Subtraction is deliberately *not* taught: it is the
   skill that the quickstart LoRA fine-tune adds.

Usage (about 6-7 minutes on 2 CPU cores)::

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python scripts/build_tiny_chat.py \
        --out core/tinkerplug/models/tiny-chat --seed 0

The output directory loads with ``AutoTokenizer.from_pretrained`` and
``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import string
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RENDERER_NAME = "qwen3_instruct"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "core" / "tinkerplug" / "models" / "tiny-chat"

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
ORDINARY_ADDED_TOKENS = ["<think>", "</think>"]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# Words used to give the BPE tokenizer some English merges (instructions, roles, chat text).
_ENGLISH = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which she "
    "do how their if will up other about out many then them these so some her would make like "
    "him into time has look two more write go see number no way could people my than first water "
    "been call who oil its now find long down day did get come made may part user assistant system "
    "uppercase reverse copy add subtract answer question hello world please thanks sure here "
    "letters digits sum difference word text model chat tiny example result"
).split()

LETTERS = string.ascii_lowercase


# ----------------------------------------------------------------------------------------------
# Synthetic tasks
# ----------------------------------------------------------------------------------------------


def random_word(rng: random.Random, lo: int = 3, hi: int = 8) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def _word_task(fmt: str, fn):
    def make(rng: random.Random, exclude: set) -> tuple[str, str, object]:
        while True:
            w = random_word(rng)
            if w not in exclude:
                return fmt.format(w=w), fn(w), w

    return make


def _add_task(rng: random.Random, exclude: set) -> tuple[str, str, object]:
    while True:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if (a, b) not in exclude:
            return f"{a}+{b}=", str(a + b), (a, b)


def _max_task(rng: random.Random, exclude: set) -> tuple[str, str, object]:
    while True:
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if (a, b) not in exclude:
            return f"Max: {a} {b}", str(max(a, b)), (a, b)


def _copy_digits_task(rng: random.Random, exclude: set) -> tuple[str, str, object]:
    while True:
        s = "".join(rng.choice(string.digits) for _ in range(rng.randint(2, 6)))
        if s not in exclude:
            return f"Copy: {s}", s, s


TASKS = {
    "uppercase": _word_task("Uppercase: {w}", str.upper),
    "reverse": _word_task("Reverse: {w}", lambda w: w[::-1]),
    "copy": _word_task("Copy: {w}", lambda w: w),
    "copy_digits": _copy_digits_task,
    "add": _add_task,
    "max": _max_task,
}
# Sampling weights during pretraining (addition is the slowest skill to learn).
TASK_WEIGHTS = {
    "uppercase": 1.0,
    "reverse": 1.0,
    "copy": 0.5,
    "copy_digits": 0.25,
    "add": 2.0,
    "max": 0.5,
}


def messages_for(prompt: str, answer: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": prompt}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


def make_heldout(rng: random.Random, n_per_task: int) -> dict[str, list[tuple[str, str, object]]]:
    held: dict[str, list] = {}
    for name, make in TASKS.items():
        seen: set = set()
        items = []
        while len(items) < n_per_task:
            p, a, key = make(rng, seen)
            seen.add(key)
            items.append((p, a, key))
        held[name] = items
    return held


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def build_tokenizer(seed: int, vocab_size: int = 512):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    held_rng = random.Random(seed + 1)
    lines = []
    for _ in range(3000):
        k = rng.random()
        if k < 0.5:
            name = rng.choices(list(TASK_WEIGHTS), weights=list(TASK_WEIGHTS.values()))[0]
            p, a, _ = TASKS[name](held_rng, set())
            lines.append(f"user\n{p}\nassistant\n{a}\n")
        else:
            lines.append(" ".join(rng.choice(_ENGLISH) for _ in range(rng.randint(3, 12))))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ORDINARY_ADDED_TOKENS])

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=512,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


# ----------------------------------------------------------------------------------------------
# Model / training helpers
# ----------------------------------------------------------------------------------------------


def build_model(tokenizer, seed: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        dtype="float32",
    )
    model = Qwen3ForCausalLM(cfg)
    model.to(torch.float32)
    return model


class ChatCodec:
    """Single-turn chat <-> tokens, exactly as the cookbook ``qwen3_instruct`` renderer does it.

    The renderer's token layout for ``[user, assistant]`` is
    ``<|im_start|>user\\n`` + prompt + ``<|im_end|>`` + ``\\n<|im_start|>assistant\\n`` + answer +
    ``<|im_end|>``. Building that by splicing pre-encoded pieces is ~10x faster than calling the
    renderer per example, so when the renderer is importable we check the splice against
    ``build_supervised_example``/``build_generation_prompt`` on many examples and then use it.
    Without tinker-cookbook installed the splice is used as is (same layout).
    """

    def __init__(self, tokenizer, renderer=None):
        self.tok = tokenizer
        self.renderer = renderer
        enc = lambda s: tokenizer.encode(s, add_special_tokens=False)
        self.user_head = enc(f"{IM_START}user\n")
        self.asst_head = enc(f"{IM_END}\n{IM_START}assistant\n")
        self.end_id = tokenizer.convert_tokens_to_ids(IM_END)
        self.stop_ids = renderer.get_stop_sequences() if renderer is not None else [self.end_id]

    def _text(self, s: str) -> list[int]:
        return self.tok(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def prompt_tokens(self, prompt: str) -> list[int]:
        return self.user_head + self._text(prompt) + self.asst_head

    def example(self, prompt: str, answer: str) -> tuple[list[int], list[float]]:
        p = self.prompt_tokens(prompt)
        a = self._text(answer) + [self.end_id]
        return p + a, [0.0] * len(p) + [1.0] * len(a)

    def parse(self, tokens: list[int]) -> str:
        if self.renderer is not None:
            msg, _ = self.renderer.parse_response(tokens)
            content = msg["content"]
            if not isinstance(content, str):
                content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
            return content
        if self.end_id in tokens:
            tokens = tokens[: tokens.index(self.end_id)]
        return self.tok.decode(tokens)

    def verify(self, rng: random.Random, n: int = 300) -> None:
        if self.renderer is None:
            return
        for _ in range(n):
            name = rng.choice(list(TASKS))
            p, a, _ = TASKS[name](rng, set())
            mi, w = self.renderer.build_supervised_example(messages_for(p, a))
            assert (mi.to_ints(), [float(x) for x in w]) == self.example(p, a), (p, a)
            g = self.renderer.build_generation_prompt(messages_for(p)).to_ints()
            assert g == self.prompt_tokens(p), p
            assert self.parse(self._text(a) + [self.end_id]) == a


def load_renderer(tokenizer):
    try:
        from tinker_cookbook import renderers
    except ImportError:  # e.g. a bare GPU box; the splice reproduces the renderer's layout
        print("tinker_cookbook not importable: using the spliced qwen3_instruct layout", flush=True)
        return None
    return renderers.get_renderer(RENDERER_NAME, tokenizer)


def collate(examples: list[tuple[list[int], list[float]]], pad_id: int):
    """Right-pad a batch to its longest sequence; return input, targets, loss weights, mask."""
    import torch

    n = max(len(t) for t, _ in examples) - 1
    inp = torch.full((len(examples), n), pad_id, dtype=torch.long)
    tgt = torch.full((len(examples), n), pad_id, dtype=torch.long)
    w = torch.zeros((len(examples), n), dtype=torch.float32)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (toks, wts) in enumerate(examples):
        L = len(toks) - 1
        inp[i, :L] = torch.tensor(toks[:-1])
        tgt[i, :L] = torch.tensor(toks[1:])
        w[i, :L] = torch.tensor(wts[1:])
        mask[i, :L] = 1
    return inp, tgt, w, mask


def weighted_loss(model, inp, tgt, w, mask):
    import torch.nn.functional as F

    logits = model(input_ids=inp, attention_mask=mask).logits
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
    return (nll * w.reshape(-1)).sum() / w.sum().clamp_min(1.0)


def greedy_answers(model, codec: ChatCodec, prompts: list[str], max_new_tokens: int = 16,
                   batch_size: int = 100) -> list[str]:
    """Batched greedy generation (left padding), replies parsed like the renderer does."""
    import torch

    pad_id = codec.tok.convert_tokens_to_ids(PAD)
    dev = next(model.parameters()).device
    out: list[str] = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(prompts), batch_size):
            toks = [codec.prompt_tokens(p) for p in prompts[s : s + batch_size]]
            n = max(len(t) for t in toks)
            ids = torch.full((len(toks), n), pad_id, dtype=torch.long)
            att = torch.zeros((len(toks), n), dtype=torch.long)
            for i, t in enumerate(toks):
                ids[i, n - len(t) :] = torch.tensor(t)
                att[i, n - len(t) :] = 1
            gen = model.generate(
                input_ids=ids.to(dev),
                attention_mask=att.to(dev),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=codec.stop_ids,
                pad_token_id=pad_id,
            )
            for row in gen[:, n:].tolist():
                for j, t in enumerate(row):  # keep tokens through the first stop token
                    if t in codec.stop_ids:
                        row = row[: j + 1]
                        break
                out.append(codec.parse(row).strip())
    return out


def exact_match(model, codec: ChatCodec, items: list[tuple[str, str, object]]) -> float:
    preds = greedy_answers(model, codec, [p for p, _, _ in items])
    return sum(p == a for p, (_, a, _) in zip(preds, items)) / max(1, len(items))


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4500, help="optimizer steps (deterministic budget)")
    ap.add_argument("--minutes", type=float, default=9.0, help="wall-clock safety cap on training")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--n-eval", type=int, default=100, help="held-out prompts per task")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="torch device (the shipped model is built on cpu)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()

    tokenizer = build_tokenizer(args.seed, args.vocab_size)
    codec = ChatCodec(tokenizer, load_renderer(tokenizer))
    codec.verify(random.Random(args.seed + 7))
    print(f"tokenizer: {len(tokenizer)} tokens ({time.time() - t0:.1f}s)", flush=True)

    # Held-out prompts, excluded from training by construction.
    heldout = make_heldout(random.Random(args.seed + 1000), args.n_eval)
    exclude = {name: {k for _, _, k in items} for name, items in heldout.items()}

    model = build_model(tokenizer, args.seed).to(args.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M params", flush=True)

    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    names = list(TASK_WEIGHTS)
    weights = [TASK_WEIGHTS[n] for n in names]
    rng = random.Random(args.seed + 2)
    cache: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    t_train = time.time()
    step = 0
    ema = None
    history = []
    for step in range(args.steps):
        if time.time() - t_train > args.minutes * 60:
            print(f"stopping at step {step}: wall-clock cap {args.minutes} min", flush=True)
            break
        batch = []
        for _ in range(args.batch_size):
            name = rng.choices(names, weights=weights)[0]
            p, a, _ = TASKS[name](rng, exclude[name])
            key = (p, a)
            if key not in cache:
                cache[key] = codec.example(p, a)
            batch.append(cache[key])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        model.train()
        loss = weighted_loss(model, *(t.to(args.device) for t in collate(batch, pad_id)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if (step + 1) % 250 == 0:
            print(f"step {step + 1} loss {ema:.4f} lr {lr_at(step):.2e} "
                  f"{time.time() - t_train:.0f}s", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            accs = {n: exact_match(model, codec, heldout[n][:50]) for n in names}
            print(f"  eval@{step + 1}: " + " ".join(f"{n}={v:.2f}" for n, v in accs.items()), flush=True)
    steps_done = step + 1
    train_s = time.time() - t_train

    accs = {n: exact_match(model, codec, heldout[n]) for n in names}
    # Subtraction must be unknown to the base model (it is the quickstart fine-tune skill).
    srng = random.Random(args.seed + 3)
    sub_items = []
    for _ in range(args.n_eval):
        a = srng.randint(10, 99)
        b = srng.randint(10, a)
        sub_items.append((f"{a}-{b}=", str(a - b), (a, b)))
    accs_unseen = {"subtract (not trained)": exact_match(model, codec, sub_items)}
    print(f"trained {steps_done} steps in {train_s:.0f}s", flush=True)
    for n, v in {**accs, **accs_unseen}.items():
        print(f"  {n}: {v:.2f}", flush=True)

    # ---- save ----
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(IM_END)
    model.generation_config.pad_token_id = pad_id
    model.generation_config.bos_token_id = None
    model.to("cpu").save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    examples = "\n".join(
        f"| {n} | `{heldout[n][0][0]}` | `{heldout[n][0][1]}` | {accs[n]:.2f} |" for n in names
    )
    sp, sa, _ = sub_items[0]
    readme = f"""# tiny-chat

A ~{n_params / 1e6:.1f} M parameter Qwen3-architecture chat model that ships with tinkerplug so that
examples and tests can fine-tune a real pretrained model offline on a CPU in seconds. It is
*not* a useful assistant: it only knows the synthetic tasks below.

Built by `scripts/build_tiny_chat.py` (seeded, synthetic data only):

```
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python scripts/build_tiny_chat.py --seed {args.seed} --steps {args.steps}
```

- Tokenizer: byte-level BPE ({len(tokenizer)} tokens) trained with `tokenizers`; digits are split
  one per token. Special tokens `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (eos);
  `<think>`/`</think>` are ordinary added tokens. Qwen-style chat template.
- Model: `Qwen3ForCausalLM`, hidden 128, 4 layers, 4 heads / 2 KV heads, head_dim 32, FFN 512,
  tied embeddings, max 512 positions, fp32.
- Renderer: use tinker-cookbook `{RENDERER_NAME}` (stop token `<|im_end|>`).
- Pretraining: {steps_done} AdamW steps, batch {args.batch_size}, peak lr {args.lr:g} (warmup + cosine),
  loss on assistant tokens only, {train_s:.0f} s on {args.threads} CPU threads.

Held-out exact match (greedy, {args.n_eval} prompts per task, prompts excluded from training):

| task | example prompt | answer | exact match |
|---|---|---|---|
{examples}
| subtract (never trained) | `{sp}` | `{sa}` | {accs_unseen['subtract (not trained)']:.2f} |

Subtraction (`a-b=` with 10 <= b <= a <= 99) is deliberately left out of pretraining: it is
the skill the quickstart LoRA fine-tune (`examples/quickstart`) teaches.
"""
    (out / "README.md").write_text(readme)
    # tinkerplug reads the renderer to use for this model from here.
    (out / "tinkerplug.json").write_text(json.dumps({"renderer": RENDERER_NAME}) + "\n")
    (out / "build_info.json").write_text(
        json.dumps(
            {
                "seed": args.seed,
                "steps": steps_done,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "train_seconds": round(train_s, 1),
                "renderer": RENDERER_NAME,
                "heldout_exact_match": {**accs, **accs_unseen},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved to {out} ({time.time() - t0:.0f}s total)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
