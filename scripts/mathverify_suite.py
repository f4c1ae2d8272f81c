#!/usr/bin/env python3
"""Score Hugging Face math-verify on the reasonlab verifier suite, for the side-by-side table in
docs/verifier.md.

    pip install 'math-verify[antlr4_13_2]'
    python3 scripts/mathverify_suite.py [crates/answer/tests/data/suite.jsonl]

Each case is {"gold", "pred", "expected", "source", ...}. Gold and prediction are parsed with
math-verify's default extraction (LaTeX + plain expressions) and compared with `verify`, the
way its README shows. A bare LaTeX answer (no `$`, `\(`, `\[` or `\boxed`) is wrapped in
`$…$` first, as math-verify's own tests write them; without that its LaTeX extractor finds
nothing in `\frac{1}{2}` and the comparison would be unfair to it. A case that raises or exceeds the per-call timeout counts as `false`,
as it would in an RL loop. Prints accuracy, false positives/negatives, throughput and the
slowest case; `--json` prints the same as one JSON object.
"""
import json
import sys
import time


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = args[0] if args else "crates/answer/tests/data/suite.jsonl"
    try:
        from math_verify import parse, verify
    except ImportError:
        print("math-verify is not installed: pip install 'math-verify[antlr4_13_2]'", file=sys.stderr)
        return 2
    cases = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]

    def delimited(s: str) -> str:
        if any(m in s for m in ("$", "\\(", "\\[", "\\boxed")):
            return s
        return f"${s}$"

    fp = fn = 0
    wrong = []
    slowest = (0.0, 0)
    start = time.perf_counter()
    for i, c in enumerate(cases, 1):
        t0 = time.perf_counter()
        try:
            got = bool(verify(parse(delimited(c["gold"])), parse(delimited(c["pred"]))))
        except Exception:  # math-verify raises on some inputs; a crash scores 0 in training
            got = False
        took = time.perf_counter() - t0
        if took > slowest[0]:
            slowest = (took, i)
        if got != c["expected"]:
            wrong.append(i)
            if got:
                fp += 1
            else:
                fn += 1
    secs = time.perf_counter() - start
    report = {
        "suite": path,
        "cases": len(cases),
        "accuracy": 1 - len(wrong) / max(len(cases), 1),
        "false_positives": fp,
        "false_negatives": fn,
        "max_latency_ms": slowest[0] * 1e3,
        "slowest_line": slowest[1],
        "cases_per_sec": len(cases) / secs if secs > 0 else 0.0,
        "threads": 1,
        "wrong_lines": wrong,
    }
    if "--json" in sys.argv:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:16} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
