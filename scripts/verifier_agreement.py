#!/usr/bin/env python3
"""Agreement of `reasonlab verify` and math-verify with the per-sample labels that other
projects published next to their completions (the table in docs/verifier.md).

Sources, each a public repository at a fixed commit (copy the files into DIR with the same
relative paths; nothing is downloaded here):

  grade-school-math/example_model_solutions.jsonl
      openai/grade-school-math@3101c7d5 grade_school_math/data/example_model_solutions.jsonl
      (MIT). Four GPT-3 configurations on GSM8K; label `is_correct` per solution.
  ZeroEval/{gsm,math-l5}_<model>.parsed.jsonl
      WildEval/ZeroEval@8c1485ed result_dirs/{gsm,math-l5}/<model>.json (Apache-2.0), with the
      label of the project's own grader (src/evaluation/math_eval.py) added as `correct`; its
      accuracies equal the project's published summaries. Answers are JSON objects
      `{"reasoning": ..., "answer": ...}`.
  zero_shot_cot/<task>.jsonl
      kojima-takeshi188/zero_shot_cot@5ef330fc log/<task>.log turned into JSONL; label is the
      project's own rule (`pred == gt`), whose accuracy equals each log's. AQuA is multiple
      choice.
  MR-GSM8K/mr_gsm8k_graded_subset.jsonl
      dvlab-research/MR-GSM8K@3f666d60 eval_results/gpt4-grading (MIT); human labels
      `model_output_answer_correctness`.
  ToRA/<model>_gsm8k_*.jsonl (+ .metrics)
      microsoft/ToRA@213c1c99 src/outputs/llm-agents (MIT); tool-integrated completions with
      no per-sample label: compared with the published accuracy in the .metrics file.

Usage:
  pip install math-verify==0.9.0
  cargo build --release
  python3 scripts/verifier_agreement.py DIR [--reasonlab target/release/reasonlab]
"""

import argparse
import ast
import json
import pathlib
import subprocess
import sys
import time


def rows_gsm_openai(d):
    out = {}
    p = d / "grade-school-math/example_model_solutions.jsonl"
    for line in p.open():
        r = json.loads(line)
        gold = r["ground_truth"].rsplit("A:", 1)[1].strip()
        for model in ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"]:
            s = r[model]
            out.setdefault(("openai/grade-school-math", f"GPT-3 {model}", "GSM8K", "A: n"), []).append(
                {"gold": gold, "pred": s["solution"], "label": bool(s["is_correct"])})
    return out


def truthy(v):
    return v is True or v == "True" or v == "true"


def rows_zeroeval(d):
    out = {}
    for p in sorted((d / "ZeroEval").glob("*.parsed.jsonl")):
        task, model = p.name.removesuffix(".parsed.jsonl").split("_", 1)
        key = ("WildEval/ZeroEval", model, "GSM8K" if task == "gsm" else "MATH level 5", "JSON")
        for line in p.open():
            r = json.loads(line)
            output = r["output"]
            if isinstance(output, str):
                output = ast.literal_eval(output)
            gold = str(r["answer"]).lstrip("#").strip()
            out.setdefault(key, []).append(
                {"gold": gold, "pred": output[0], "label": truthy(r["correct"]),
                 "problem": r.get("question") or r.get("problem")})
    return out


def rows_zero_shot_cot(d):
    out = {}
    for p in sorted((d / "zero_shot_cot").glob("*.jsonl")):
        task = p.name.removesuffix(".jsonl")
        bench = task.split("_")[0]
        style = "choice" if bench == "aqua" else "answer is"
        key = ("kojima-takeshi188/zero_shot_cot", "text-davinci-002 " + task.split("_", 1)[1], bench, style)
        for line in p.open():
            r = json.loads(line)
            row = {"gold": str(r["gt"]), "pred": r["completion"], "label": truthy(r["correct"])}
            if bench == "aqua":
                row["problem"] = r["question"]
            out.setdefault(key, []).append(row)
    return out


def rows_mr_gsm8k(d):
    out = {}
    p = d / "MR-GSM8K/mr_gsm8k_graded_subset.jsonl"
    for line in p.open():
        r = json.loads(line)
        steps = r["model_output_steps"]
        if isinstance(steps, str):
            steps = ast.literal_eval(steps)
        out.setdefault(("dvlab-research/MR-GSM8K", "various (human labels)", "GSM8K", "####"), []).append(
            {"gold": str(r["ground_truth_answer"]), "pred": "\n".join(steps),
             "label": r["model_output_answer_correctness"] == "correct"})
    return out


def rows_tora(d):
    out = {}
    for p in sorted((d / "ToRA").glob("*gsm8k*.jsonl")):
        model = p.name.split("_")[0]
        # "Mean score: [84.3]" in ToRA's .metrics text.
        text = p.with_suffix(".metrics").read_text()
        acc = float(text.split("Mean score:")[1].strip().strip("[]").split(",")[0])
        key = ("microsoft/ToRA", model, "GSM8K", "tool + boxed")
        for line in p.open():
            r = json.loads(line)
            code = r["code"]
            if isinstance(code, str):
                code = ast.literal_eval(code)
            out.setdefault(key, []).append({"gold": str(r["gt"]), "pred": code[0], "label": None,
                                            "published": acc})
    return out


def ours(binary, rows):
    lines = "".join(json.dumps({"gold": r["gold"], "pred": r["pred"],
                                **({"problem": r["problem"]} if r.get("problem") else {})}) + "\n"
                    for r in rows)
    res = subprocess.run([binary, "verify"], input=lines.encode(), capture_output=True, check=True)
    out = [json.loads(l) for l in res.stdout.decode().splitlines()]
    assert len(out) == len(rows)
    return [o.get("correct", False) for o in out], [o.get("method") for o in out]


def math_verify(rows):
    from math_verify import parse, verify
    got = []
    for r in rows:
        try:
            got.append(bool(verify(parse(r["gold"]), parse(r["pred"]))))
        except Exception:
            got.append(False)
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--reasonlab", default="target/release/reasonlab")
    args = ap.parse_args()
    groups = {}
    for f in [rows_gsm_openai, rows_zeroeval, rows_zero_shot_cot, rows_mr_gsm8k, rows_tora]:
        try:
            groups.update(f(args.dir))
        except FileNotFoundError as e:
            print(f"skipping {f.__name__}: {e}", file=sys.stderr)
    print("| source | model | set | answer style | n | published acc | reasonlab acc | reasonlab agreement | math-verify acc | math-verify agreement |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = {"n": 0, "ours": 0, "mv": 0}
    t_ours = t_mv = 0.0
    for key, rows in groups.items():
        t0 = time.perf_counter()
        o, methods = ours(args.reasonlab, rows)
        t_ours += time.perf_counter() - t0
        t0 = time.perf_counter()
        m = math_verify(rows)
        t_mv += time.perf_counter() - t0
        n = len(rows)
        pct = lambda xs: 100.0 * sum(xs) / n
        if rows[0]["label"] is None:
            pub = rows[0]["published"]
            agree_o = agree_m = "—"
        else:
            labels = [r["label"] for r in rows]
            pub = pct(labels)
            ao = sum(a == b for a, b in zip(o, labels))
            am = sum(a == b for a, b in zip(m, labels))
            totals["n"] += n
            totals["ours"] += ao
            totals["mv"] += am
            agree_o = f"{100.0 * ao / n:.1f}"
            agree_m = f"{100.0 * am / n:.1f}"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {n} | {pub:.1f} | {pct(o):.1f} | {agree_o} | {pct(m):.1f} | {agree_m} |")
        fired = {}
        for x in methods:
            fired[x] = fired.get(x, 0) + 1
        print(f"<!-- {key[1]} {key[2]}: rules fired {fired} -->", file=sys.stderr)
    if totals["n"]:
        print(f"\nAll labelled samples: {totals['n']}; agreement reasonlab "
              f"{100.0 * totals['ours'] / totals['n']:.2f}%, math-verify {100.0 * totals['mv'] / totals['n']:.2f}%; "
              f"time reasonlab {t_ours:.1f} s (whole process, all cores), math-verify {t_mv:.1f} s (one core)")


if __name__ == "__main__":
    main()
