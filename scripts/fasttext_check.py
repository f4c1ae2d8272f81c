#!/usr/bin/env python3
"""Check that reasonlab's classifier and fastText 0.9 read each other's models and predict
identically (labels equal, probabilities within 1e-4).

Reference only: needs `pip install fasttext-wheel "numpy<2"` (in /work/main/.venv here).

  python scripts/fasttext_check.py [--train F --test F] [--bin CMD]
      1. trains with fastText (python binding), saves .bin and a quantized .ftz,
         runs our `predict` on both and compares with fastText's predictions;
      2. trains with ours, loads our .bin in fastText and compares again.
  python scripts/fasttext_check.py --make-fixture crates/corpus/tests/data
      writes the tiny committed fixture: train.txt, test.txt, model.bin (dim 8,
      bucket 2000, wordNgrams 2), model.ftz, expected.jsonl (fastText's top-2 per test line).

--bin is our CLI prefix; default: the corpus example
  (cargo run --release -p reasonlab-corpus --example classifier --); with the wired CLI use
  `--bin "reasonlab classifier"`.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import fasttext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = (
    f"cargo run -q --release --manifest-path {ROOT}/Cargo.toml -p reasonlab-corpus --example classifier --"
)


def tiny_dataset(train_path, test_path):
    """~200 short lines: GSM8K / MATH problems vs Vim help and Debian descriptions."""
    math = []
    for f, n in (("gsm8k_train", 60), ("math_test", 60)):
        for i, line in enumerate(open(f"/work/shared/data/{f}.jsonl", encoding="utf-8")):
            if i >= n:
                break
            math.append(" ".join(json.loads(line)["problem"].split()[:40]))
    other = []
    text = open("/usr/share/vim/vim90/doc/usr_01.txt", encoding="utf-8").read()
    text += open("/usr/share/vim/vim90/doc/usr_02.txt", encoding="utf-8").read()
    for para in text.split("\n\n"):
        words = para.split()
        if len(words) >= 8:
            other.append(" ".join(words[:40]))
        if len(other) >= 120:
            break
    lines = [f"__label__math {t}" for t in math] + [f"__label__other {t}" for t in other]
    # Deterministic interleave; last 40 lines for test.
    lines = [lines[i] for i in sorted(range(len(lines)), key=lambda i: (i * 7919) % len(lines))]
    with open(train_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[:-40]) + "\n")
    with open(test_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines[-40:]) + "\n")


def ft_predict(model, test_path, k):
    lines = [l.rstrip("\n") for l in open(test_path, encoding="utf-8")]
    labels, probs = model.predict(lines, k=k)
    return [list(zip(l, map(float, p))) for l, p in zip(labels, probs)]


def our_predict(bin_cmd, model_path, test_path, k):
    cmd = shlex.split(bin_cmd) + ["predict", model_path, test_path, str(k), "--prob"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        t = line.split()
        rows.append([(t[i], float(t[i + 1])) for i in range(0, len(t), 2)])
    return rows


def compare(name, a, b, tol=1e-4):
    assert len(a) == len(b), f"{name}: {len(a)} vs {len(b)} lines"
    bad = 0
    for i, (x, y) in enumerate(zip(a, b)):
        if [l for l, _ in x] != [l for l, _ in y] or any(abs(p - q) > tol for (_, p), (_, q) in zip(x, y)):
            bad += 1
            if bad <= 3:
                print(f"  {name} line {i}: fastText {x} vs ours {y}")
    print(f"{name}: {len(a) - bad}/{len(a)} lines identical")
    return bad == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train")
    ap.add_argument("--test")
    ap.add_argument("--bin", default=EXAMPLE)
    ap.add_argument("--make-fixture")
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--bucket", type=int, default=2000)
    ap.add_argument("--word-ngrams", type=int, default=2)
    ap.add_argument("--loss", default="softmax")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    params = dict(dim=a.dim, bucket=a.bucket, wordNgrams=a.word_ngrams, epoch=10, lr=0.5,
                  minCount=1, thread=1, seed=0, loss=a.loss, verbose=0)
    if a.make_fixture:
        d = a.make_fixture
        os.makedirs(d, exist_ok=True)
        train, test = os.path.join(d, "train.txt"), os.path.join(d, "test.txt")
        tiny_dataset(train, test)
        m = fasttext.train_supervised(input=train, **params)
        m.save_model(os.path.join(d, "model.bin"))
        m.quantize(input=train, qnorm=True, retrain=False, cutoff=0, dsub=2)
        m.save_model(os.path.join(d, "model.ftz"))
        full = fasttext.load_model(os.path.join(d, "model.bin"))
        with open(os.path.join(d, "expected.jsonl"), "w") as f:
            for model_name, model in (("model.bin", full), ("model.ftz", m)):
                for i, preds in enumerate(ft_predict(model, test, 2)):
                    f.write(json.dumps({"model": model_name, "line": i, "predictions": preds}) + "\n")
        print("fixture written to", d, "with fastText", getattr(fasttext, "__version__", "0.9.2"))
        return
    train, test = a.train, a.test
    if not train:
        train, test = os.path.join(tmp, "train.txt"), os.path.join(tmp, "test.txt")
        tiny_dataset(train, test)
    ok = True
    m = fasttext.train_supervised(input=train, **params)
    ft_bin = os.path.join(tmp, "ft.bin")
    m.save_model(ft_bin)
    ok &= compare("fastText .bin -> ours", ft_predict(m, test, 2), our_predict(a.bin, ft_bin, test, 2))
    m.quantize(input=train, qnorm=True, retrain=False, cutoff=0, dsub=2)
    ft_ftz = os.path.join(tmp, "ft.ftz")
    m.save_model(ft_ftz)
    ok &= compare("fastText .ftz -> ours", ft_predict(m, test, 2), our_predict(a.bin, ft_ftz, test, 2))
    ours = os.path.join(tmp, "ours.bin")
    cmd = shlex.split(a.bin) + ["train", train, ours, str(a.dim), "0.5", str(a.word_ngrams), "1",
                                "10", str(a.bucket), "1", a.loss]
    subprocess.run(cmd, check=True, capture_output=True)
    theirs = fasttext.load_model(ours)
    ok &= compare("ours .bin -> fastText", ft_predict(theirs, test, 2), our_predict(a.bin, ours, test, 2))
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
