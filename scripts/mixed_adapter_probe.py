"""Probe for mixed-adapter batches: does peft's per-row adapter selection (``adapter_names``)
allow backward, and are each adapter's losses and gradients those of running alone?

tiny-chat, two LoRA adapters (r4 on q/v/up projections, random non-zero init), one row each, no
padding. peft refuses ``adapter_names`` in training mode (``get_peft_model`` leaves the model
there), so the model is put in eval mode (LoRA dropout is 0: the same numbers). Prints both
adapters' losses alone and mixed and the largest gradient difference.

    python scripts/mixed_adapter_probe.py
"""
import torch, copy
from peft import LoraConfig, get_peft_model
from tinkerplug.models import shipped_model_dir
from transformers import AutoModelForCausalLM
torch.manual_seed(0)
path = shipped_model_dir("tiny-chat")
model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
print("training mode:", model.training)
cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "up_proj"], lora_dropout=0.0, init_lora_weights=False)
peft = get_peft_model(model, cfg, adapter_name="a")
peft.add_adapter("b", copy.deepcopy(cfg)); print("peft training mode:", peft.training); peft.eval()
x = torch.tensor([[5, 17, 23, 42, 9, 11], [8, 9, 10, 11, 12, 13]])
def loss_of(logits, ids):
    lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return -lp.sum(-1)
def grads(name):
    return {n: p.grad.clone() for n, p in peft.named_parameters() if f".{name}." in n and p.grad is not None}
def zero():
    for p in peft.parameters(): p.grad = None
for n, p in peft.named_parameters():
    if ".a." in n or ".b." in n: p.requires_grad_(True)
# separately
zero(); peft.set_adapter("a"); la = loss_of(peft(input_ids=x[:1]).logits, x[:1]); la.sum().backward(); ga = grads("a")
zero(); peft.set_adapter("b"); lb = loss_of(peft(input_ids=x[1:]).logits, x[1:]); lb.sum().backward(); gb = grads("b")
for n, p in peft.named_parameters():
    if ".a." in n or ".b." in n: p.requires_grad_(True)
# mixed
zero(); out = peft(input_ids=x, adapter_names=["a", "b"]); lm = loss_of(out.logits, x); lm.sum().backward()
ma, mb = grads("a"), grads("b")
print("losses separate", la.tolist(), lb.tolist(), "mixed", lm.tolist())
print("grad keys a", len(ga), len(ma), "b", len(gb), len(mb))
print("max |grad diff| a", max((ga[k]-ma[k]).abs().max().item() for k in ga), "b", max((gb[k]-mb[k]).abs().max().item() for k in gb))
