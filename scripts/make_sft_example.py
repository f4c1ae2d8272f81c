"""Build examples/data/sft_gsm8k_64.jsonl: the 64 shortest of the first 1000 GSM8K train
problems (MIT licence, ../shared/data/gsm8k_train.jsonl; short so they fit the tiny fixture's
256-token context) as chat SFT records in DeepSeek-R1's format: the calculator
annotations <<...>> removed, the worked solution inside <think>, the answer boxed."""
import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
src = root.parent / "shared" / "data" / "gsm8k_train.jsonl"
dst = root / "examples" / "data" / "sft_gsm8k_64.jsonl"
n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
rows = [json.loads(l) for _, l in zip(range(1000), open(src))]
rows.sort(key=lambda r: (len(r["problem"]) + len(r["solution"]), r["id"]))
with open(dst, "w") as out:
    for r in rows[:n]:
        sol = re.sub(r"<<[^>]*>>", "", r["solution"]).strip()
        out.write(json.dumps({
            "id": r["id"],
            "messages": [
                {"role": "system", "content": "You are a careful math tutor."},
                {"role": "user", "content": r["problem"] + "\nPlease reason step by step, and put your final answer within \\boxed{}."},
                {"role": "assistant", "content": f"<think>\n{sol}\n</think>\n\\boxed{{{r['answer']}}}"},
            ],
        }, ensure_ascii=False) + "\n")
print(dst)

# The 32 shortest problems as plain {id, problem, answer} rows, for examples/distill-tiny.toml.
short = root / "examples" / "data" / "gsm8k_short_32.jsonl"
rows.sort(key=lambda r: (len(r["problem"]), r["id"]))
with open(short, "w") as out:
    for r in rows[:32]:
        out.write(json.dumps({k: r[k] for k in ("id", "problem", "answer")}, ensure_ascii=False) + "\n")
print(short)
