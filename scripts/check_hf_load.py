#!/usr/bin/env python3
"""Check that a checkpoint directory (e.g. one our Rust code saved) loads in transformers.

    .venv/bin/python scripts/check_hf_load.py DIR [--reference fixtures/<name>/reference.json]
                                                  [--atol 1e-4] [--no-greedy]

Loads DIR with AutoTokenizer and AutoModelForCausalLM (weights upcast to float32), runs a
forward pass on fixed ids and prints PASS or FAIL (exit status 0 / 1).

With --reference, the ids are the reference's `input_ids`; every logit must match the
reference within --atol (default 1e-4), the per-token logprobs likewise, and (unless
--no-greedy) greedy generation must reproduce the reference `greedy` new tokens exactly.
Without --reference it only checks that tokenizer + model load and the logits are finite.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import traceback

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--reference", default=None)
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--no-greedy", action="store_true", help="skip the greedy-generation comparison")
    ap.add_argument("--no-tokenizer", action="store_true", help="do not require tokenizer files")
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    failures: list[str] = []
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"checkpoint: {args.dir}")

    if not args.no_tokenizer:
        try:
            tok = AutoTokenizer.from_pretrained(args.dir)
            print(f"tokenizer: {type(tok).__name__}, {len(tok)} tokens, "
                  f"bos={tok.bos_token!r} eos={tok.eos_token!r} pad={tok.pad_token!r}, "
                  f"chat_template={'yes' if tok.chat_template else 'no'}")
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            failures.append(f"tokenizer failed to load: {e}")

    try:
        model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
        model.eval()
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"FAIL: model failed to load: {e}")
        return 1
    cfg = model.config
    print(f"model: {type(model).__name__}, vocab {cfg.vocab_size}, hidden {cfg.hidden_size}, "
          f"layers {cfg.num_hidden_layers}, rope {getattr(cfg, 'rope_parameters', None)}, "
          f"tied {cfg.tie_word_embeddings}")

    ref = None
    if args.reference:
        with open(args.reference, encoding="utf-8") as f:
            ref = json.load(f)
        seqs = ref["input_ids"]
    else:
        seqs = [[i % cfg.vocab_size for i in range(1, 13)]]

    with torch.no_grad():
        for si, ids in enumerate(seqs):
            logits = model(torch.tensor([ids])).logits[0].float()
            if not torch.isfinite(logits).all():
                failures.append(f"seq {si}: non-finite logits")
                continue
            if ref is None:
                print(f"seq {si}: len {len(ids)}, logits mean {logits.mean():.4f} std {logits.std():.4f}")
                continue
            want = torch.tensor(ref["logits"][si], dtype=torch.float32)
            if want.shape != logits.shape:
                failures.append(f"seq {si}: logits shape {tuple(logits.shape)} != reference {tuple(want.shape)}")
                continue
            diff = (logits - want).abs().max().item()
            ok = diff <= args.atol
            print(f"seq {si}: len {len(ids)}, max |logit - ref| = {diff:.3e} {'ok' if ok else 'TOO LARGE'}")
            if not ok:
                failures.append(f"seq {si}: logits differ by {diff:.3e} > {args.atol}")
            lp = torch.log_softmax(logits, dim=-1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            lp_want = torch.tensor(ref["logprobs"][si], dtype=torch.float32)
            lpd = (lp - lp_want).abs().max().item() if len(ids) > 1 else 0.0
            if not lpd <= args.atol:
                failures.append(f"seq {si}: logprobs differ by {lpd:.3e} > {args.atol}")

    if ref is not None and not args.no_greedy and "greedy" in ref:
        model.generation_config = GenerationConfig()
        s = ref["greedy"]["settings"]
        for ci, case in enumerate(ref["greedy"]["cases"]):
            p = case["prompt"]
            gc = GenerationConfig(do_sample=False, max_new_tokens=s["max_new_tokens"],
                                  min_new_tokens=s["min_new_tokens"], num_beams=1, eos_token_id=None,
                                  pad_token_id=0, use_cache=True)
            with torch.no_grad():
                out = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     generation_config=gc)
            new = out[0, len(p):].tolist()
            same = new == case["new_tokens"]
            print(f"greedy {ci}: {'ok' if same else 'MISMATCH'} ({len(new)} tokens)")
            if not same:
                failures.append(f"greedy {ci}: got {new}, want {case['new_tokens']}")

    if failures:
        for f in failures:
            print(f"  - {f}")
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
