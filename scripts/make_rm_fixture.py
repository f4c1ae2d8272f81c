"""Writes fixtures/tiny-qwen2-rm/: an outcome reward model in transformers' layout
(Qwen2ForSequenceClassification, num_labels = 1, `score.weight`), with the tiny Qwen2 fixture's
backbone and tokenizer, and reference.json: the scores transformers computes for a few
right-padded sequences (read at each row's last non-pad token).

usage: .venv/bin/python scripts/make_rm_fixture.py
"""

import json
import shutil
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "fixtures" / "tiny-qwen2"
OUT = ROOT / "fixtures" / "tiny-qwen2-rm"
PAD = 0


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
    seqs = [[1, 5, 9, 3, 7, 11], [2, 4, 6], [8, 8, 8, 8, 300, 17, 42, 99]]
    t = max(len(s) for s in seqs)
    ids = torch.tensor([s + [PAD] * (t - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (t - len(s)) for s in seqs])
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


if __name__ == "__main__":
    main()
