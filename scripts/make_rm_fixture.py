"""Writes the reward-model fixtures, each with the tiny Qwen2 fixture's backbone and tokenizer:

- fixtures/tiny-qwen2-rm/: an outcome reward model (Qwen2ForSequenceClassification,
  num_labels = 1, `score.weight`) and reference.json: the scores transformers computes for a few
  right-padded sequences (read at each row's last non-pad token);
- fixtures/tiny-qwen2-prm/: a process reward model (Qwen2ForTokenClassification, num_labels = 2,
  `score.weight` and `score.bias`) and reference.json: P(label 1) at every position of the same
  sequences, and the Math-Shepherd reading of fixtures/tiny-qwen2 (a causal LM): the softmax over
  two chosen token logits at every position.

usage: .venv/bin/python scripts/make_rm_fixture.py
"""

import json
import shutil
from pathlib import Path

import torch
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
)

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "fixtures" / "tiny-qwen2"
OUT = ROOT / "fixtures" / "tiny-qwen2-rm"
PRM_OUT = ROOT / "fixtures" / "tiny-qwen2-prm"
PAD = 0
SEQS = [[1, 5, 9, 3, 7, 11], [2, 4, 6], [8, 8, 8, 8, 300, 17, 42, 99]]
GOOD, BAD = 43, 45  # any two ids: the Math-Shepherd reading of the tiny causal LM


def padded(seqs):
    t = max(len(s) for s in seqs)
    ids = torch.tensor([s + [PAD] * (t - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs])
    return ids, mask


def versions():
    return {
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }


def make_prm():
    cfg = Qwen2Config.from_pretrained(SRC)
    cfg.num_labels = 2
    cfg.pad_token_id = PAD
    cfg.architectures = ["Qwen2ForTokenClassification"]
    torch.manual_seed(1)
    prm = Qwen2ForTokenClassification(cfg).float()
    lm = Qwen2ForCausalLM.from_pretrained(SRC, dtype=torch.float32)
    prm.model.load_state_dict(lm.model.state_dict())
    with torch.no_grad():
        prm.score.weight.normal_(0.0, 0.5)
        prm.score.bias.normal_(0.0, 0.5)
    prm.eval()
    lm.eval()
    PRM_OUT.mkdir(parents=True, exist_ok=True)
    prm.save_pretrained(PRM_OUT, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(SRC / f, PRM_OUT / f)
    ids, mask = padded(SEQS)
    with torch.no_grad():
        good = prm(input_ids=ids, attention_mask=mask).logits.softmax(-1)[:, :, 1]
        lm_logits = lm(input_ids=ids, attention_mask=mask).logits[:, :, [GOOD, BAD]]
        shepherd = lm_logits.softmax(-1)[:, :, 0]
    ref = {
        "made_by": "scripts/make_rm_fixture.py",
        **versions(),
        "pad_token_id": PAD,
        "sequences": SEQS,
        "token_good_probs": [
            [round(float(x), 6) for x in row[: len(s)]] for row, s in zip(good, SEQS)
        ],
        "good_token": GOOD,
        "bad_token": BAD,
        "shepherd_good_probs": [
            [round(float(x), 6) for x in row[: len(s)]] for row, s in zip(shepherd, SEQS)
        ],
    }
    (PRM_OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")


def main():
    cfg = Qwen2Config.from_pretrained(SRC)
    cfg.num_labels = 1
    cfg.pad_token_id = PAD
    cfg.architectures = ["Qwen2ForSequenceClassification"]
    torch.manual_seed(0)
    rm = Qwen2ForSequenceClassification(cfg).float()
    lm = Qwen2ForCausalLM.from_pretrained(SRC, dtype=torch.float32)
    rm.model.load_state_dict(lm.model.state_dict())
    with torch.no_grad():
        rm.score.weight.normal_(0.0, 0.5)
    rm.eval()
    OUT.mkdir(parents=True, exist_ok=True)
    rm.save_pretrained(OUT, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(SRC / f, OUT / f)
    seqs = SEQS
    ids, mask = padded(seqs)
    with torch.no_grad():
        scores = rm(input_ids=ids, attention_mask=mask).logits[:, 0]
    ref = {
        "made_by": "scripts/make_rm_fixture.py",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "pad_token_id": PAD,
        "sequences": seqs,
        "scores": [round(float(x), 6) for x in scores],
    }
    (OUT / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(ref["scores"])
    make_prm()


if __name__ == "__main__":
    main()
