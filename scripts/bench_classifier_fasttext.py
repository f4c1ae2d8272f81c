#!/usr/bin/env python3
"""fastText 0.9 side of `reasonlab bench classifier`: train with DeepSeekMath's settings
(dim 256, lr 0.1, wordNgrams 3, minCount 3, epoch 3; softmax, bucket 2M) on 2 threads, then
report F1 of __label__math on the test file, training seconds, prediction docs/s (the Python
binding predicts one list in one thread) and the model file size, as one JSON line.

usage: .venv/bin/python scripts/bench_classifier_fasttext.py TRAIN TEST OUT.bin [--thread 2]
"""
import json
import os
import sys
import time

import fasttext

train, test, out = sys.argv[1:4]
thread = int(sys.argv[sys.argv.index("--thread") + 1]) if "--thread" in sys.argv else 2
t0 = time.time()
m = fasttext.train_supervised(input=train, dim=256, lr=0.1, wordNgrams=3, minCount=3, epoch=3,
                              thread=thread, verbose=0, seed=0)
train_s = time.time() - t0
m.save_model(out)
gold, texts = [], []
for line in open(test, encoding="utf-8"):
    toks = line.split()
    gold.append([t for t in toks if t.startswith("__label__")])
    texts.append(" ".join(t for t in toks if not t.startswith("__label__")))
t0 = time.time()
labels, _ = m.predict(texts, k=1)
pred_s = time.time() - t0
tp = sum(1 for g, p in zip(gold, labels) if p and p[0] == "__label__math" and "__label__math" in g)
fp = sum(1 for g, p in zip(gold, labels) if p and p[0] == "__label__math" and "__label__math" not in g)
fn = sum(1 for g, p in zip(gold, labels) if "__label__math" in g and not (p and p[0] == "__label__math"))
f1 = 2 * tp / (2 * tp + fp + fn)
print(json.dumps({"tool": "fastText 0.9.2 (python)", "f1_math": round(f1, 5), "train_s": round(train_s, 2),
                  "predict_docs_per_s": round(len(texts) / pred_s), "model_bytes": os.path.getsize(out),
                  "threads_train": thread, "threads_predict": 1}))
