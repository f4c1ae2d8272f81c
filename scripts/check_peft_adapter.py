#!/usr/bin/env python3
"""Check a LoRA checkpoint written by reasonlab against PEFT.

    .venv/bin/python scripts/check_peft_adapter.py BASE_DIR CHECKPOINT_DIR

CHECKPOINT_DIR holds what `reasonlab sft` / `grpo` write with `[*.lora]`: the merged weights
(config.json, model.safetensors) and the adapter in PEFT's layout (adapter_config.json,
adapter_model.safetensors). Loads BASE_DIR with transformers, applies the adapter with
`peft.PeftModel.from_pretrained`, and compares its logits with the merged checkpoint loaded by
transformers. Prints PASS and the largest difference, or FAIL.
"""
import shutil
import sys
import tempfile

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def main() -> None:
    base_dir, ckpt = sys.argv[1], sys.argv[2]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, ckpt).eval()
    # transformers treats a directory with adapter_config.json as a PEFT adapter; read the merged
    # weights from a copy without it.
    plain = tempfile.mkdtemp()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{ckpt}/{f}", plain)
    merged = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32).eval()
    ids = torch.arange(3, 40).unsqueeze(0) % base.config.vocab_size
    with torch.no_grad():
        a = adapted(ids).logits
        m = merged(ids).logits
        b = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()(ids).logits
    diff = (a - m).abs().max().item()
    moved = (a - b).abs().max().item()
    ok = diff < 1e-4 and moved > 1e-3
    print(f"{'PASS' if ok else 'FAIL'}: PEFT-adapted vs merged max |Δlogit| = {diff:.2e}; vs base {moved:.2e}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
