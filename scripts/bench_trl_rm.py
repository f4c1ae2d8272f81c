#!/usr/bin/env python3
"""TRL side of `reasonlab bench rm` (CPU, 2 threads by default).

    .venv/bin/python scripts/bench_trl_rm.py --data WORKLOAD.jsonl --objective pairwise [--batch 8]
        [--warmup-steps 0] [--device cpu|cuda] [--shape tiny|qwen2.5-0.5b|qwen2.5-1.5b]
        [--precision f32|f16|bf16] [--gradient-checkpointing]

`reasonlab bench rm` writes WORKLOAD.jsonl, pre-tokenised:

- pairwise: `{"chosen_ids": [...], "rejected_ids": [...]}` per line, trained for one epoch with
  TRL's RewardTrainer (Bradley–Terry loss) on a Qwen2ForSequenceClassification (num_labels 1)
  with the backbone of scripts/bench_torch.py;
- process: `{"input_ids": [...], "labels": [-100 or 0/1 ...]}` per line (TRL's stepwise layout:
  a label at each step's last token), trained for one epoch on a Qwen2ForTokenClassification
  (num_labels 2) the way TRL's PRMTrainer trains: transformers' Trainer with
  DataCollatorForTokenClassification and the model's two-class cross-entropy. (PRMTrainer only
  adds tokenisation on top of that loop, and TRL 1.x no longer ships it.)

Both: AdamW lr 1e-5 constant, no clipping differences (max_grad_norm 1.0), padded batches, no
evaluation, no checkpoints; the backbone is the tiny Qwen2 or Qwen2.5-0.5B's (or 1.5B's) shapes (--shape),
with mixed precision and gradient checkpointing set from --precision and
--gradient-checkpointing to match our side (RewardConfig's defaults would turn on bf16 and
gradient checkpointing). Throughput counts real (non-pad) tokens of the epoch over the wall
seconds of `trainer.train()`, after --warmup-steps N untimed steps through a trainer of its own
on the same model (`reasonlab bench rm` passes its own count, 1 by default).

Prints one JSON line: {"tokens_per_s": ..., "train_seconds": ..., "steps": ..., "peak_rss_mb":
..., "trl": ..., "torch": ...}
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_torch import add_training_flags, build_model, rss_mb, training_report, warm_up

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--objective", choices=["pairwise", "process"], required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--warmup-steps", type=int, default=0, help="untimed optimiser steps before the timed epoch"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    add_training_flags(ap)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import trl
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Qwen2ForSequenceClassification,
        Qwen2ForTokenClassification,
        Trainer,
        TrainingArguments,
    )


    base_rss = rss_mb()
    rows = [json.loads(l) for l in open(args.data)]
    ds = datasets.Dataset.from_list(rows)
    root = Path(__file__).resolve().parent.parent
    tok = AutoTokenizer.from_pretrained(root / "fixtures" / "tiny-qwen2")
    lm = build_model(args.seed, args.shape)
    cfg = lm.config
    cfg.pad_token_id = tok.pad_token_id
    common = dict(
        per_device_train_batch_size=args.batch,
        num_train_epochs=1,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10_000,
        use_cpu=args.device == "cpu",
        # Like ours (RewardConfig would turn on bf16 and gradient checkpointing).
        bf16=args.precision == "bf16",
        fp16=args.precision == "f16",
        gradient_checkpointing=args.gradient_checkpointing,
        dataloader_num_workers=0,
        seed=args.seed,
        disable_tqdm=True,
    )
    with tempfile.TemporaryDirectory() as out:
        if args.objective == "pairwise":
            tokens = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
            cfg.num_labels = 1
            model = Qwen2ForSequenceClassification(cfg).to(torch.float32)
            model.model.load_state_dict(lm.model.state_dict())
            rc = trl.RewardConfig(output_dir=out, max_length=None, **common)

            def make(config):
                return trl.RewardTrainer(model=model, args=config, train_dataset=ds, processing_class=tok)

            warm_up(make, rc, args.warmup_steps)
            trainer = make(rc)
        else:
            tokens = sum(len(r["input_ids"]) for r in rows)
            cfg.num_labels = 2
            model = Qwen2ForTokenClassification(cfg).to(torch.float32)
            model.model.load_state_dict(lm.model.state_dict())
            ta = TrainingArguments(output_dir=out, remove_unused_columns=False, **common)

            def make(config):
                return Trainer(
                    model=model,
                    args=config,
                    train_dataset=ds,
                    data_collator=DataCollatorForTokenClassification(tok),
                )

            warm_up(make, ta, args.warmup_steps)
            trainer = make(ta)
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
