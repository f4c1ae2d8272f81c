#!/usr/bin/env python3
"""PyTorch side of the reasonlab speed benchmark (CPU, 2 threads by default).

    .venv/bin/python scripts/bench_torch.py [--only generate|train] [--threads 2] [--seed 0]
        [--device cpu|cuda] [--card pci:ADDRESS|N] [--shape tiny|qwen2.5-0.5b|qwen2.5-1.5b] [--dtype f32|bf16|f16] [--batch 8] [--seq 256]
        [--prompt-tokens 0] [--prompts 16] [--prompt-len 32] [--new-tokens 128]

Model (--shape tiny, the default): randomly initialised Qwen2ForCausalLM, f32 — vocab 512,
hidden 256, 4 layers, 4 attention heads / 2 KV heads (head_dim 64), intermediate 688, RMSNorm
eps 1e-6, rope theta 10000, tied embeddings, default (sdpa) attention. --shape qwen2.5-0.5b:
Qwen2.5-0.5B's shapes (vocab 151936, hidden 896, 24 layers, 14 / 2 heads, intermediate 4864,
q/k/v biases, rope theta 1e6, tied embeddings; 494M parameters), random weights; --shape
qwen2.5-1.5b: Qwen2.5-1.5B's (hidden 1536, 28 layers, 12 / 2 heads of dim 128, intermediate
8960; 1.54B parameters).

On --device cuda the timings synchronise the GPU (--card picks the card: reasonlab's own, by
its PCI address), and the JSON line adds the peak GPU memory torch's allocator reserved
(cuda_reserved_mb). --dtype bf16: generation runs the model in bf16 (--dtype f16: f16); the train step keeps f32 weights and AdamW state and runs the forward
under autocast to that type (PyTorch's mixed precision).

(i)  generation: 16 prompts x 32 random token ids (equal length, no padding; --prompts,
     --prompt-len), then 128 new tokens (--new-tokens) sampled at temperature 1
     (do_sample=True, top_k=0, top_p=1.0, min_new_tokens=max_new_tokens=128,
     eos_token_id=None) through HF `generate` with the KV cache, all prompts in one batch.
     Reports new tokens/s = prompts * new tokens / seconds, best of 3 after one warm-up run, and the
     workload (prompts, prompt_len, new_tokens_per_prompt).
(ii) train step: batch 8 x seq 256 random ids, causal-LM loss (labels = input_ids), backward,
     AdamW step (lr 1e-4), zero_grad. Reports seconds/step, best of 5 after one warm-up step.
     --prompt-tokens P: the first P tokens of each row are a prompt, labelled -100 (SFT's
     completion-only loss, as TRL's SFTTrainer masks it; the model still forms their logits).
(iii) peak RSS of the process (VmHWM from /proc/self/status), in MiB. Note: importing torch
     (default CUDA wheel) + transformers alone is ~0.9 GiB of RSS; stderr reports that baseline
     as rss_after_imports_mb together with all timings and the load average.

Prints one JSON line:
{"generate_tokens_per_s": ..., "train_step_s": ..., "peak_rss_mb": ..., "torch": ..., "transformers": ...}
(a section skipped with --only is reported as null).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch


def rss_mb() -> float:
    """Peak RSS of this process image (VmHWM). Not getrusage's ru_maxrss: Linux carries that
    over from the parent across fork + exec, so a child of a 2 GB process would report 2 GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


SHAPES = {
    "tiny": dict(
        vocab_size=512,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=688,
        rope_theta=10000.0,
        max_position_embeddings=512,
    ),
    "qwen2.5-0.5b": dict(
        vocab_size=151936,
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
    ),
    "qwen2.5-1.5b": dict(
        vocab_size=151936,
        hidden_size=1536,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        intermediate_size=8960,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
    ),
}


def build_model(seed: int, shape: str = "tiny", device: str = "cpu"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    s = dict(SHAPES[shape])
    theta = s.pop("rope_theta")
    cfg = Qwen2Config(
        **s,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_theta": theta, "rope_type": "default"},
        tie_word_embeddings=True,
        use_sliding_window=False,
        initializer_range=0.02,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(cfg).to(torch.float32).to(device)


def pci_key(address: str) -> tuple[int, int, int, int] | None:
    """(domain, bus, device, function) of a PCI address as Vulkan (`0000:1b:00.0`) or
    nvidia-smi (`00000000:1B:00.0`) writes it."""
    try:
        domain, bus, rest = address.strip().split(":")
        device, function = rest.split(".")
        return int(domain, 16), int(bus, 16), int(device, 16), int(function, 16)
    except ValueError:
        return None


class CardAction(argparse.Action):
    """`--card pci:ADDRESS | N`: run on the card reasonlab's side runs on, by narrowing
    CUDA_VISIBLE_DEVICES while parsing the flags, before CUDA starts. A PCI address (what a
    Vulkan device reports) is looked up with nvidia-smi; a number is CUDA's device (within an
    existing CUDA_VISIBLE_DEVICES). Where the card cannot be found the peer stays on CUDA's
    default device and says so on stderr."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if value.startswith("pci:"):
            want = pci_key(value[4:])
            import subprocess

            try:
                rows = subprocess.run(
                    ["nvidia-smi", "--query-gpu=pci.bus_id,uuid", "--format=csv,noheader"],
                    capture_output=True, text=True, timeout=30, check=True,
                ).stdout.splitlines()
            except (OSError, subprocess.SubprocessError) as e:
                print(f"--card {value}: nvidia-smi failed ({e}); staying on CUDA's default device", file=sys.stderr)
                return
            uuids = [u.strip() for bus, u in (r.split(",", 1) for r in rows if "," in r) if pci_key(bus) == want]
            if not uuids:
                print(f"--card {value}: no NVIDIA GPU at that address; staying on CUDA's default device", file=sys.stderr)
                return
            os.environ["CUDA_VISIBLE_DEVICES"] = uuids[0]
        else:
            n = int(value)
            os.environ["CUDA_VISIBLE_DEVICES"] = visible.split(",")[n].strip() if visible else str(n)
        print(f"--card {value}: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}", file=sys.stderr)


def add_device_flags(ap) -> None:
    """Where a peer runs: the CPU, or CUDA on the card `--card` names."""
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--card", action=CardAction, default=None, help="cuda: pci:ADDRESS or a CUDA device number")


def add_training_flags(ap) -> None:
    """The flags the TRL peers of `reasonlab bench sft|rm|grpo` share: where and how to train."""
    add_device_flags(ap)
    ap.add_argument("--shape", choices=list(SHAPES), default="tiny")
    ap.add_argument("--precision", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--gradient-checkpointing", action="store_true")


def warm_up(make_trainer, config, steps: int) -> None:
    """`steps` untimed optimiser steps through a trainer made like the timed one (the same model,
    an optimiser of its own), as reasonlab's side takes them before its timed epoch."""
    if steps > 0:
        import dataclasses

        make_trainer(dataclasses.replace(config, max_steps=steps)).train()


def training_report(args) -> dict:
    """What a TRL peer reports besides its numbers: those flags, the device, and the peak of
    CUDA's reserved memory."""
    cuda = args.device == "cuda"
    return {
        "shape": args.shape,
        "precision": args.precision,
        "gradient_checkpointing": args.gradient_checkpointing,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cuda_reserved_mb": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
    }


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_generate(
    model,
    seed: int,
    device="cpu",
    batch=16,
    prompt_len=32,
    new_tokens=128,
    reps=3,
    temperature=1.0,
    top_k=0,
    top_p=1.0,
):
    from transformers import GenerationConfig

    model.eval()
    model.generation_config = GenerationConfig()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len), generator=g).to(device)
    mask = torch.ones_like(ids)
    gc = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_new_tokens=new_tokens,
        max_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=0,
        use_cache=True,
    )

    def run():
        with torch.no_grad():
            sync(device)
            t0 = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, generation_config=gc)
            sync(device)
            dt = time.perf_counter() - t0
        assert out.shape == (batch, prompt_len + new_tokens), out.shape
        return dt

    run()  # warm-up
    times = [run() for _ in range(reps)]
    best = min(times)
    return batch * new_tokens / best, times


def bench_train(
    model, seed: int, device="cpu", autocast=None, batch=8, seq=256, reps=5, prompt_tokens=0
):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g).to(device)
    labels = ids.clone()
    labels[:, :prompt_tokens] = -100

    def step():
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(
            device_type=device, dtype=autocast or torch.bfloat16, enabled=autocast is not None
        ):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        dt = time.perf_counter() - t0
        return dt, loss.detach().item()

    step()  # warm-up
    res = [step() for _ in range(reps)]
    times = [r[0] for r in res]
    return min(times), times, res[-1][1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["generate", "train"], default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    add_device_flags(ap)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--temperature", type=float, default=1.0, help="generate: sampling temperature")
    ap.add_argument("--top-k", type=int, default=0, help="generate: keep the k likeliest (0: all)")
    ap.add_argument("--top-p", type=float, default=1.0, help="generate: nucleus mass (1: all)")
    ap.add_argument("--prompts", type=int, default=16, help="generate: prompts, in one batch")
    ap.add_argument("--prompt-len", type=int, default=32, help="generate: tokens per prompt")
    ap.add_argument("--new-tokens", type=int, default=128, help="generate: new tokens per prompt")
    ap.add_argument("--batch", type=int, default=8, help="train step: sequences")
    ap.add_argument("--seq", type=int, default=256, help="train step: tokens per sequence")
    ap.add_argument(
        "--prompt-tokens", type=int, default=0, help="train step: leading tokens with no loss"
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    import transformers

    load_before = os.getloadavg()
    result = {
        "generate_tokens_per_s": None,
        "train_step_s": None,
        "peak_rss_mb": None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "shape": args.shape,
        "dtype": args.dtype,
    }
    if args.only in (None, "generate"):
        result.update(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            prompts=args.prompts,
            prompt_len=args.prompt_len,
            new_tokens_per_prompt=args.new_tokens,
        )
    detail = {
        "threads": torch.get_num_threads(),
        "loadavg_before": [round(x, 2) for x in load_before],
        # torch's default PyPI wheel maps its CUDA libraries even on CPU: most of the peak RSS
        # is already there after the imports. Subtract this to compare model memory.
        "rss_after_imports_mb": round(rss_mb(), 1),
    }

    if args.only in (None, "generate"):
        model = build_model(args.seed, args.shape, args.device)
        if args.dtype != "f32":
            model = model.to({"bf16": torch.bfloat16, "f16": torch.float16}[args.dtype])
        tps, times = bench_generate(
            model,
            args.seed,
            args.device,
            batch=args.prompts,
            prompt_len=args.prompt_len,
            new_tokens=args.new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
        )
        result["generate_tokens_per_s"] = round(tps, 1)
        detail["generate_times_s"] = [round(t, 3) for t in times]
        del model
    if args.only in (None, "train"):
        model = build_model(args.seed, args.shape, args.device)
        best, times, loss = bench_train(
            model,
            args.seed,
            args.device,
            {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype],
            args.batch,
            args.seq,
            prompt_tokens=args.prompt_tokens,
        )
        result["train_step_s"] = round(best, 4)
        detail["train_times_s"] = [round(t, 4) for t in times]
        detail["last_loss"] = round(loss, 4)
        result["prompt_tokens"] = args.prompt_tokens
        del model

    result["peak_rss_mb"] = round(rss_mb(), 1)
    if args.device == "cuda":
        result["cuda_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    detail["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(detail), file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
