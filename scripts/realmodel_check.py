#!/usr/bin/env python3
"""Real-checkpoint check (outside CI): per-token log-probs of `reasonlab model logprobs` against
transformers on a real Hugging Face model, and greedy generation of both, on a few prompts.

usage: .venv/bin/python scripts/realmodel_check.py MODEL_DIR [--bin target/release/reasonlab]
(MODEL_DIR from ../shared/realmodel/make_realmodel.sh: Qwen2.5-Coder-1.5B-Instruct, bf16)

Both sides run in float32 (the bf16 weights upcast), so differences are summation order only.
Prints one JSON line per prompt and a summary line.
"""
import json
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir = sys.argv[1]
binary = sys.argv[sys.argv.index("--bin") + 1] if "--bin" in sys.argv else "target/release/reasonlab"
torch.set_num_threads(2)
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
model.eval()
prompts = [
    [{"role": "user", "content": "What is 17 * 23? Answer with the number only."}],
    [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"}],
    [{"role": "user", "content": "求解方程 2x + 3 = 11。"}],
]
worst = 0.0
for msgs in prompts:
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float()
    ref = torch.log_softmax(logits[:-1], dim=-1).gather(1, x[0, 1:, None])[:, 0].tolist()
    t0 = time.time()
    out = subprocess.run([binary, "model", "logprobs", "--model", model_dir, "--ids", ",".join(map(str, ids))],
                         capture_output=True, text=True, check=True)
    ours_s = time.time() - t0
    ours = json.loads(out.stdout)["logprobs"]
    diff = max(abs(a - b) for a, b in zip(ours, ref))
    worst = max(worst, diff)
    print(json.dumps({"tokens": len(ids), "max_abs_logprob_diff": diff, "ours_seconds_incl_load": round(ours_s, 2)}))
# Greedy generation: both sides, 48 new tokens per prompt, texts compared.
import os
import tempfile
new = 48
with tempfile.TemporaryDirectory() as d:
    src = os.path.join(d, "p.jsonl")
    with open(src, "w") as f:
        for i, m in enumerate(prompts):
            f.write(json.dumps({"id": str(i), "messages": m}) + "\n")
    dst = os.path.join(d, "o.jsonl")
    t0 = time.time()
    subprocess.run([binary, "generate", "--model", model_dir, "--prompts", src, "--out", dst, "--chat",
                    "--temperature", "0", "--max-new-tokens", str(new)], capture_output=True, text=True, check=True)
    ours_gen_s = time.time() - t0
    ours_text = [json.loads(l)["completion"] for l in open(dst)]
same = 0
t0 = time.time()
for msgs, text in zip(prompts, ours_text):
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    with torch.no_grad():
        g = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False)
    hf_text = tok.decode(g[0, len(ids):], skip_special_tokens=True)
    same += hf_text == text
    print(json.dumps({"greedy_identical": hf_text == text, "ours": text[:80], "hf": hf_text[:80]}, ensure_ascii=False))
hf_gen_s = time.time() - t0
print(json.dumps({"model": model_dir, "prompts": len(prompts), "worst_max_abs_logprob_diff": worst,
                  "greedy_identical": f"{same}/{len(prompts)}", "ours_generate_s_incl_load": round(ours_gen_s, 1),
                  "hf_generate_s": round(hf_gen_s, 1), "pass": worst <= 1e-3 and same == len(prompts)}))
