#!/usr/bin/env python3
"""TRL side of `reasonlab bench grpo` (CPU, 2 threads by default).

    .venv/bin/python scripts/bench_trl_grpo.py --prompts PROMPTS.jsonl [--beta 0.04] [--steps 3]
        [--device cpu|cuda] [--shape tiny|qwen2.5-0.5b|qwen2.5-1.5b] [--precision f32|f16|bf16]
        [--gradient-checkpointing]

The workload: the model-core benchmark's tiny Qwen2 or Qwen2.5-0.5B's (or 1.5B's) shapes
(scripts/bench_torch.py, random init, f32 weights) with the tiny fixture's tokenizer (vocab 512:
ids a larger vocabulary samples beyond it decode to nothing, as on our side), 8 prompts x 8 generations per
step, at most 128 new tokens at temperature 1, one optimiser step per generation batch
(per_device_train_batch_size 64 = 8 x 8), AdamW lr 1e-6, beta as given (0.04 builds a reference
model), loss_type "grpo", no vLLM. Mixed precision and gradient checkpointing are set from
--precision and --gradient-checkpointing to match our side (TRL's GRPOConfig defaults turn
bf16 autocast and gradient checkpointing on; a like-for-like step sets both explicitly). The reward is answer accuracy on GSM8K golds (boxed or last
number), like ours. PROMPTS.jsonl is what `reasonlab bench grpo` writes: `{"prompt", "answer"}`.

Reports the best step time after one warm-up step and the generated tokens per step (TRL's
`num_tokens` log minus prompt tokens is not exposed per step, so the completion lengths are
read from the `completions/mean_length` log).

Prints one JSON line: {"step_s": ..., "gen_tokens_per_step": ..., "peak_rss_mb": ..., "beta": ...}
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_torch import add_training_flags, build_model, rss_mb, training_report

    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    add_training_flags(ap)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import trl
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer


    rows = [json.loads(l) for l in open(args.prompts)]
    ds = datasets.Dataset.from_list(rows * (args.steps + 1))
    root = Path(__file__).resolve().parent.parent
    tok = AutoTokenizer.from_pretrained(root / "fixtures" / "tiny-qwen2")
    tok.padding_side = "left"
    model = build_model(0, args.shape)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    # TRL builds the reference model from the policy's path, so the policy lives in a directory.
    model_dir = tempfile.mkdtemp()
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    def accuracy(completions, answer, **kw):
        out = []
        for c, a in zip(completions, answer):
            m = re.findall(r"\\boxed\{([^}]*)\}", c) or re.findall(r"-?\d+(?:\.\d+)?", c)
            out.append(1.0 if m and m[-1].strip() == str(a) else 0.0)
        return out

    times, lengths = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    with tempfile.TemporaryDirectory() as out:
        cfg = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=64,
            num_generations=8,
            max_completion_length=128,
            temperature=1.0,
            beta=args.beta,
            learning_rate=1e-6,
            loss_type="grpo",
            max_steps=args.steps + 1,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=args.device == "cpu",
            bf16=args.precision == "bf16",
            fp16=args.precision == "f16",
            gradient_checkpointing=args.gradient_checkpointing,
            disable_tqdm=True,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model_dir,
            reward_funcs=accuracy,
            args=cfg,
            train_dataset=ds,
            processing_class=tok,
            callbacks=[Timer()],
        )
        trainer.train()
    best = min(times[1:]) if len(times) > 1 else times[0]
    mean_len = sum(lengths[1:]) / max(1, len(lengths[1:])) if len(lengths) > 1 else lengths[0]
    print(
        json.dumps(
            {
                "step_s": best,
                "step_times": times,
                "gen_tokens_per_step": mean_len * 64,
                "peak_rss_mb": rss_mb(),
                "beta": args.beta,
                "trl": trl.__version__,
                "torch": torch.__version__,
                "threads": args.threads,
                **training_report(args),
            }
        )
    )


if __name__ == "__main__":
    main()
