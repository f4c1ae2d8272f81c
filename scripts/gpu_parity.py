#!/usr/bin/env python3
"""Reference side of `scripts/gpu_check.sh`: a random checkpoint of a benchmark shape, and
transformers' log-probs of fixed ids on it, compared with `reasonlab model logprobs`.

    python scripts/gpu_parity.py make DIR [--shape qwen2.5-0.5b] [--seed 0]
    python scripts/gpu_parity.py ids [--shape qwen2.5-0.5b] [--len 64] [--seed 1]
    python scripts/gpu_parity.py compare DIR --ours OURS.json --ids 1,2,3 [--device cuda]
                                              [--atol 1e-3]
    python scripts/gpu_parity.py losses GPU.json CPU.json [--rtol 1e-3]

`make` writes DIR (config.json + model.safetensors, f32, HF layout) from the same shapes as
`scripts/bench_torch.py`. `ids` prints comma-separated random token ids below the shape's
vocabulary. `compare` loads DIR in transformers (f32, eager attention) on --device, computes
log p(x_t | x_<t) for t = 1..L-1 and compares them with OURS.json (`{"logprobs": [...]}`, what
`reasonlab model logprobs` prints). Prints one JSON line with the max |difference| and PASS or
FAIL (exit status 0 / 1). `losses` compares the "loss" of two `reasonlab bench train-step
--json` results, the same steps on a GPU backend and on flex (the same seeded model and batch),
and prints one JSON line with the relative difference and PASS or FAIL, as `compare` does.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_torch import SHAPES, build_model  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("dir")
    mk.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    mk.add_argument("--seed", type=int, default=0)
    ids = sub.add_parser("ids")
    ids.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    ids.add_argument("--len", type=int, default=64)
    ids.add_argument("--seed", type=int, default=1)
    cmp = sub.add_parser("compare")
    cmp.add_argument("dir")
    cmp.add_argument("--ours", required=True)
    cmp.add_argument("--ids", required=True)
    cmp.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    cmp.add_argument("--atol", type=float, default=1e-3)
    ls = sub.add_parser("losses")
    ls.add_argument("gpu")
    ls.add_argument("cpu")
    ls.add_argument("--rtol", type=float, default=1e-3)
    args = ap.parse_args()

    if args.cmd == "make":
        model = build_model(args.seed, args.shape)
        model.save_pretrained(args.dir, safe_serialization=True)
        print(json.dumps({"dir": args.dir, "parameters": sum(p.numel() for p in model.parameters())}))
        return 0
    if args.cmd == "ids":
        rng = random.Random(args.seed)
        vocab = SHAPES[args.shape]["vocab_size"]
        print(",".join(str(rng.randrange(vocab)) for _ in range(args.len)))
        return 0

    if args.cmd == "losses":
        gpu, cpu = (json.load(open(p))["loss"] for p in (args.gpu, args.cpu))
        diff = abs(gpu - cpu) / max(abs(cpu), 1.0)
        verdict = "PASS" if diff <= args.rtol else "FAIL"
        print(json.dumps({"loss": gpu, "cpu_loss": cpu, "relative_diff": diff, "rtol": args.rtol, "verdict": verdict}))
        return 0 if verdict == "PASS" else 1

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        args.dir, torch_dtype=torch.float32, attn_implementation="eager"
    ).to(args.device)
    model.eval()
    ids = torch.tensor([[int(x) for x in args.ids.split(",")]], device=args.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    lp = torch.log_softmax(logits[0, :-1], dim=-1).gather(-1, ids[0, 1:, None])[:, 0].cpu()
    ours = torch.tensor(json.load(open(args.ours))["logprobs"], dtype=torch.float32)
    if ours.shape != lp.shape:
        print(json.dumps({"verdict": "FAIL", "why": f"shape {tuple(ours.shape)} vs {tuple(lp.shape)}"}))
        return 1
    diff = (ours - lp).abs().max().item()
    verdict = "PASS" if diff <= args.atol else "FAIL"
    print(json.dumps({"max_abs_diff": diff, "atol": args.atol, "tokens": len(lp), "verdict": verdict}))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
