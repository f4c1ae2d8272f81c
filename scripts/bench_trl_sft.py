#!/usr/bin/env python3
"""TRL side of `reasonlab bench sft` (CPU, 2 threads by default).

    .venv/bin/python scripts/bench_trl_sft.py --data WORKLOAD.jsonl [--batch 8] [--max-length 256]
        [--warmup-steps 0] [--device cpu|cuda] [--shape tiny|qwen2.5-0.5b|qwen2.5-1.5b]
        [--precision f32|f16|bf16] [--gradient-checkpointing]

`reasonlab bench sft` writes WORKLOAD.jsonl: pre-tokenised examples `{"input_ids": [...],
"completion_mask": [0/1 ...]}`. This script trains the benchmark's tiny Qwen2 or Qwen2.5-0.5B's
shapes (the models of scripts/bench_torch.py, random init, f32 weights) on them for one epoch with
TRL's SFTTrainer: completion-only loss, no packing (padded batches), AdamW lr 1e-4 constant,
grad-norm clip 1.0, batch 8, no evaluation, no checkpoints. Mixed precision and gradient
checkpointing are set from --precision and --gradient-checkpointing to match our side
(SFTConfig's defaults would turn on bf16 and gradient checkpointing). It reports target-independent throughput: real (non-pad)
tokens of the epoch / wall seconds of `trainer.train()`, and the process's peak RSS.
--warmup-steps N first trains N untimed steps through a trainer of its own on the same model
(`reasonlab bench sft` passes its own count, 1 by default).

Prints one JSON line: {"tokens_per_s": ..., "train_seconds": ..., "steps": ..., "peak_rss_mb": ...,
"rss_after_imports_mb": ..., "trl": ..., "torch": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_torch import add_training_flags, build_model, rss_mb, training_report, warm_up

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--warmup-steps", type=int, default=0, help="untimed optimiser steps before the timed epoch"
    )
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    add_training_flags(ap)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import trl
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer


    base_rss = rss_mb()
    rows = [json.loads(l) for l in open(args.data)]
    ds = datasets.Dataset.from_list(rows)
    tokens = sum(len(r["input_ids"]) for r in rows)
    root = Path(__file__).resolve().parent.parent
    tok = AutoTokenizer.from_pretrained(root / "fixtures" / "tiny-qwen2")
    model = build_model(args.seed, args.shape)
    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            num_train_epochs=1,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            max_length=args.max_length,
            completion_only_loss=True,
            packing=False,
            report_to="none",
            save_strategy="no",
            eval_strategy="no",
            logging_steps=10_000,
            use_cpu=args.device == "cpu",
            # Like ours (SFTConfig would turn on bf16 and gradient checkpointing).
            bf16=args.precision == "bf16",
            fp16=args.precision == "f16",
            gradient_checkpointing=args.gradient_checkpointing,
            dataloader_num_workers=0,
            seed=args.seed,
            disable_tqdm=True,
        )
        def make(config):
            return SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tok)

        warm_up(make, cfg, args.warmup_steps)
        trainer = make(cfg)
        t = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "tokens_per_s": tokens / seconds,
                "train_seconds": seconds,
                "steps": result.global_step,
                "train_loss": result.training_loss,
                "peak_rss_mb": rss_mb(),
                "rss_after_imports_mb": base_rss,
                "trl": trl.__version__,
                "torch": torch.__version__,
                "threads": args.threads,
                **training_report(args),
            }
        )
    )


if __name__ == "__main__":
    main()
