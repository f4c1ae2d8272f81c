#!/usr/bin/env python3
"""Golden fixture for GRPO loss parity with TRL: runs TRL's own `GRPOTrainer._compute_loss`
on fixed per-token log-probs (the model call is replaced by a function returning them) for
each aggregation, ratio level and clipping variant, and records the loss, its gradient with
respect to the log-probs, and TRL's clip-ratio and KL metrics.

usage: .venv/bin/python scripts/make_grpo_loss_fixture.py crates/train/tests/data/trl_grpo_loss.json
(trl 1.16, torch 2.15; the fixture is committed, tests need no Python)
"""
import json
import sys
from collections import defaultdict
from types import SimpleNamespace

import torch
import trl
from trl.trainer.grpo_trainer import GRPOTrainer

torch.manual_seed(0)
B, T = 6, 5  # two groups of three completions, up to five tokens
logp = -torch.rand(B, T, dtype=torch.float64) * 3 - 0.05
old = logp + (torch.rand(B, T, dtype=torch.float64) - 0.5) * 0.9  # ratios ~ 0.64 .. 1.57
ref = logp + (torch.rand(B, T, dtype=torch.float64) - 0.5) * 1.2
adv = torch.tensor([1.1, -0.3, -0.8, 0.6, 0.0, -0.6], dtype=torch.float64)
lengths = [5, 3, 1, 4, 5, 2]
mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths], dtype=torch.float64)

CASES = [
    # name, loss_type, importance level, eps_low, eps_high, beta
    ("deepseekmath", "grpo", "token", 0.2, 0.2, 0.04),
    ("grpo_beta0", "grpo", "token", 0.2, 0.2, 0.0),
    ("bnpo", "bnpo", "token", 0.2, 0.2, 0.04),
    ("dr_grpo", "dr_grpo", "token", 0.2, 0.2, 0.0),
    ("dapo_clip_higher", "dapo", "token", 0.2, 0.28, 0.0),
    ("gspo", "grpo", "sequence", 3e-4, 4e-4, 0.0),
    ("gspo_kl", "grpo", "sequence", 0.1, 0.1, 0.04),
    ("bnpo_sequence", "bnpo", "sequence", 0.2, 0.28, 0.04),
]


def trl_loss(loss_type, level, eps_low, eps_high, beta):
    x = logp.clone().float().requires_grad_(True)
    accel = SimpleNamespace(
        num_processes=1,
        gather=lambda t: t,
        gather_for_metrics=lambda t: t,
        reduce=lambda t, reduction="sum": t,
        sync_gradients=True,
    )
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (x, torch.zeros_like(x), None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=level,
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=T,
        accelerator=accel,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask.float(),
        "advantages": adv.float(),
        "old_per_token_logps": old.float(),
        "ref_per_token_logps": ref.float(),
        "num_items_in_batch": mask.sum().float(),
    }
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    loss.backward()
    m = fake._metrics["train"]
    return {
        "loss": loss.item(),
        "grad": x.grad.tolist(),
        "clip_low": m["clip_ratio/low_mean"][0],
        "clip_high": m["clip_ratio/high_mean"][0],
        "kl": m["kl"][0] if beta != 0.0 else 0.0,
    }


out = {
    "generator": f"scripts/make_grpo_loss_fixture.py (trl {trl.__version__}, torch {torch.__version__})",
    "logp": logp.float().tolist(),
    "old_logp": old.float().tolist(),
    "ref_logp": ref.float().tolist(),
    "advantages": adv.float().tolist(),
    "mask": mask.float().tolist(),
    "max_completion_length": T,
    "cases": [],
}
for name, lt, level, lo, hi, beta in CASES:
    r = trl_loss(lt, level, lo, hi, beta)
    out["cases"].append({"name": name, "loss_type": lt, "importance_sampling_level": level,
                         "epsilon_low": lo, "epsilon_high": hi, "beta": beta, **r})
    print(f"{name:18s} loss {r['loss']:+.6f} clip_low {r['clip_low']:.3f} clip_high {r['clip_high']:.3f} kl {r['kl']:.4f}", file=sys.stderr)
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
