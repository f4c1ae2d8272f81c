"""Peer of `reasonlab bench sandbox`: the executor of the Qwen2.5-Math and ToRA evaluation
harnesses, re-written from their design — a pebble ProcessPool whose workers `exec` each
program with stdout captured, one timeout per program, a pool per batch call (`batch_apply`;
`apply` is a batch of one) — timed on the snippets reasonlab runs. No isolation beyond the
process boundary and the timeout.

usage: python scripts/bench_sandbox_pool.py --snippets FILE.json [--workers 2] [--latency-runs 200]

FILE.json: {"trivial": code, "gsm8k": code, "batch": N}. Prints one JSON line.
"""

import argparse
import contextlib
import io
import json
import statistics
import sys
import time

try:
    from pebble import ProcessPool
except ImportError:
    sys.exit("the peer needs pebble: pip install pebble")


def execute(code):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {})
    return buf.getvalue()


def batch_apply(codes, workers, timeout):
    out = []
    with ProcessPool(max_workers=min(len(codes), workers)) as pool:
        it = pool.map(execute, codes, timeout=timeout).result()
        while True:
            try:
                out.append(next(it))
            except StopIteration:
                break
            except Exception as e:  # timeouts and errors, as the harnesses record them
                out.append(repr(e))
    return out


def measure(code, n, workers, latency_runs, timeout):
    t = time.perf_counter()
    outs = batch_apply([code] * n, workers, timeout)
    through = n / (time.perf_counter() - t)
    lat = []
    for _ in range(latency_runs):
        t = time.perf_counter()
        batch_apply([code], workers, timeout)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {
        "per_s": through,
        "p50_ms": statistics.median(lat),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "output": outs[0],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--snippets", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--latency-runs", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    s = json.load(open(a.snippets))
    res = {
        "peer": "pebble ProcessPool executor (Qwen2.5-Math / ToRA harness design)",
        "python": sys.version.split()[0],
    }
    for name in ("trivial", "gsm8k"):
        m = measure(s[name], s["batch"], a.workers, a.latency_runs, a.timeout)
        for k, v in m.items():
            res[f"{name}_{k}"] = v
    print(json.dumps(res))


if __name__ == "__main__":
    main()
