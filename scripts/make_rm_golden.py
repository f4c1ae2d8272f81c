"""Writes fixtures/rm/golden.json: TRL's reward-model losses on fixed inputs, for the Rust tests
to match within 1e-5.

- pairwise: TRL's RewardTrainer (its tokenisation, collator and compute_loss) on
  fixtures/tiny-qwen2-rm, plain and with center_rewards_coefficient = 0.01;
- process: TRL's PRMTrainer tokenisation (tokenize_row, step separator "\\n") and the loss it
  trains with (Qwen2ForTokenClassification's two-class cross-entropy over the labelled tokens)
  on fixtures/tiny-qwen2-prm. TRL 1.x no longer ships PRMTrainer, so it is read from TRL 0.24:

    .venv/bin/pip install --no-deps --target .venv/trl-0.24 trl==0.24.0

usage: .venv/bin/python scripts/make_rm_golden.py [--trl-prm .venv/trl-0.24]
"""

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
)

ROOT = Path(__file__).resolve().parent.parent
RM = ROOT / "fixtures" / "tiny-qwen2-rm"
PRM = ROOT / "fixtures" / "tiny-qwen2-prm"
OUT = ROOT / "fixtures" / "rm" / "golden.json"

PAIRS = [
    {"prompt": "What is 2 + 3?", "chosen": " 2 + 3 = 5. The answer is 5.", "rejected": " The answer is 6."},
    {"prompt": "Tom has 4 apples and eats 1.", "chosen": " 4 - 1 = 3 apples left.", "rejected": " 4 + 1 = 5."},
    {"prompt": "Double 7.", "chosen": " 14", "rejected": " 7 * 2 = 15, so 15."},
]

STEPS = [
    {
        "prompt": "Natalia sold 48 clips in April and half as many in May. How many in all?",
        "completions": ["In May she sold 48 / 2 = 24 clips.", "In all 48 + 24 = 72.", "The answer is 72."],
        "labels": [True, True, True],
    },
    {
        "prompt": "A shirt costs $20 and is 10% off.",
        "completions": ["10% of 20 is 3.", "So it costs 20 - 3 = 17 dollars."],
        "labels": [True, False],
    },
]


def pairwise():
    from trl import RewardConfig, RewardTrainer

    tok = AutoTokenizer.from_pretrained(RM)
    model = Qwen2ForSequenceClassification.from_pretrained(RM, dtype=torch.float32)
    model.eval()
    out = {}
    for name, coef in [("loss", None), ("loss_center_0.01", 0.01)]:
        with tempfile.TemporaryDirectory() as tmp:
            args = RewardConfig(
                output_dir=tmp, report_to=[], center_rewards_coefficient=coef, use_cpu=True, bf16=False
            )
            trainer = RewardTrainer(
                model=model, args=args, train_dataset=Dataset.from_list(PAIRS), processing_class=tok
            )
            rows = [
                {"chosen_ids": r["chosen_ids"], "rejected_ids": r["rejected_ids"]}
                for r in trainer.train_dataset
            ]
            batch = trainer.data_collator(rows)
            model.eval()
            with torch.no_grad():
                loss = trainer.compute_loss(model, batch)
            out[name] = float(loss)
            out["chosen_ids"] = [r["chosen_ids"] for r in rows]
            out["rejected_ids"] = [r["rejected_ids"] for r in rows]
    out["records"] = PAIRS
    return out


def process(trl_prm):
    sys.path.insert(0, str(trl_prm))
    for name in [m for m in sys.modules if m == "trl" or m.startswith("trl.")]:
        del sys.modules[name]
    prm_trainer = importlib.import_module("trl.trainer.prm_trainer")
    trl_version = importlib.import_module("trl").__version__
    tok = AutoTokenizer.from_pretrained(PRM)
    rows = [
        prm_trainer.PRMTrainer.tokenize_row(
            r, tok, "\n", max_length=None, max_prompt_length=None, max_completion_length=None,
            train_on_last_step_only=False, is_eval=False,
        )
        for r in STEPS
    ]
    batch = DataCollatorForTokenClassification(tok)(rows)
    model = Qwen2ForTokenClassification.from_pretrained(PRM, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        loss = model(**batch).loss
    return {
        "trl": trl_version,
        "records": STEPS,
        "input_ids": [r["input_ids"] for r in rows],
        "labels": [r["labels"] for r in rows],
        "loss": float(loss),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trl-prm", default=str(ROOT / ".venv" / "trl-0.24"))
    a = p.parse_args()
    import trl

    golden = {
        "made_by": "scripts/make_rm_golden.py",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "trl": trl.__version__,
        "pairwise": pairwise(),
        "process": process(a.trl_prm),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print(golden["pairwise"]["loss"], golden["pairwise"]["loss_center_0.01"], golden["process"]["loss"])


if __name__ == "__main__":
    main()
