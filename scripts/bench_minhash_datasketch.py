#!/usr/bin/env python3
"""datasketch side of `reasonlab bench minhash`: MinHash (112 permutations) of 5-word
shingles + MinHashLSH with 14 bands x 8 rows, over the text of a fastText-format file.

usage: .venv/bin/python scripts/bench_minhash_datasketch.py FILE [N]
"""
import json
import re
import sys
import time

from datasketch import MinHash, MinHashLSH

path = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
texts = []
for line in open(path, encoding="utf-8"):
    texts.append(" ".join(t for t in line.split() if not t.startswith("__label__")))
    if len(texts) >= n:
        break
t0 = time.time()
lsh = MinHashLSH(num_perm=112, params=(14, 8))
for i, t in enumerate(texts):
    w = re.findall(r"\w+", t.lower())
    sh = {" ".join(w[j:j + 5]) for j in range(max(1, len(w) - 4))}
    m = MinHash(num_perm=112)
    m.update_batch([s.encode() for s in sh])
    lsh.insert(str(i), m)
secs = time.time() - t0
print(json.dumps({"tool": "datasketch 2.0", "docs": len(texts), "seconds": round(secs, 2),
                  "docs_per_s": round(len(texts) / secs)}))
