#!/usr/bin/env python3
"""fastText 0.9 side of `reasonlab bench classifier`: train with DeepSeekMath's settings
(dim 256, lr 0.1, wordNgrams 3, minCount 3, epoch 3; softmax, bucket 2M) on 2 threads, then
report F1 of __label__math on the test file, training seconds, prediction docs/s (the Python
binding predicts one list in one thread) and the model file size, as one JSON line. With
`--runs N` (default 3) it trains and predicts N times and reports the fastest training, the
fastest prediction and the mean F1, as `reasonlab bench classifier --runs N` does.

usage: .venv/bin/python scripts/bench_classifier_fasttext.py TRAIN TEST OUT.bin [--thread 2] [--runs 3]
"""
import json
import os
import sys
import time

import fasttext

train, test, out = sys.argv[1:4]
thread = int(sys.argv[sys.argv.index("--thread") + 1]) if "--thread" in sys.argv else 2
runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 3
gold, texts = [], []
for line in open(test, encoding="utf-8"):
    toks = line.split()
    gold.append([t for t in toks if t.startswith("__label__")])
    texts.append(" ".join(t for t in toks if not t.startswith("__label__")))
train_s, pred_s, f1s = [], [], []
for _ in range(runs):
    t0 = time.time()
    m = fasttext.train_supervised(input=train, dim=256, lr=0.1, wordNgrams=3, minCount=3, epoch=3,
                                  thread=thread, verbose=0, seed=0)
    train_s.append(time.time() - t0)
    m.save_model(out)
    t0 = time.time()
    labels, _ = m.predict(texts, k=1)
    pred_s.append(time.time() - t0)
    tp = sum(1 for g, p in zip(gold, labels) if p and p[0] == "__label__math" and "__label__math" in g)
    fp = sum(1 for g, p in zip(gold, labels) if p and p[0] == "__label__math" and "__label__math" not in g)
    fn = sum(1 for g, p in zip(gold, labels) if "__label__math" in g and not (p and p[0] == "__label__math"))
    f1s.append(2 * tp / (2 * tp + fp + fn))
    print(json.dumps({"run": len(f1s), "f1_math": round(f1s[-1], 5), "train_s": round(train_s[-1], 2),
                      "predict_docs_per_s": round(len(texts) / pred_s[-1])}), file=sys.stderr)
    del m
print(json.dumps({"tool": "fastText 0.9.2 (python)", "runs": runs, "f1_math": round(sum(f1s) / runs, 5),
                  "train_s": round(min(train_s), 2), "predict_docs_per_s": round(len(texts) / min(pred_s)),
                  "model_bytes": os.path.getsize(out), "threads_train": thread, "threads_predict": 1}))
