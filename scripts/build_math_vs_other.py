#!/usr/bin/env python3
"""Build the math-vs-other benchmark for `reasonlab bench classifier` from documents found
offline on this machine, recording where every document came from.

Positives (__label__math): problems and worked solutions of the benchmark JSONL files in DATA_DIR (GSM8K train
and test, MATH test, AIME 2024, AMC 2023, CMATH, MGSM-zh; MATH-500 is skipped, it is a subset
of MATH test).
Negatives (__label__other): real general text in many languages and registers —
  * man pages in 30 languages under /usr/share/man (troff stripped, one paragraph a document),
  * Vim's help files /usr/share/vim/vim90/doc/*.txt (English technical prose, per section),
  * Debian package descriptions from /var/lib/dpkg/status (English, short prose),
  * copyright / licence files under /usr/share/doc/*/copyright (legal register),
  * translated UI messages from /usr/share/locale/*/LC_MESSAGES/*.mo (many languages,
    grouped into documents of ~40 words).

Writes OUT/train.txt, OUT/test.txt (fastText format, one document a line, 80/20 split by a
seeded shuffle) and OUT/provenance.json (counts per source and language).

usage: python3 scripts/build_math_vs_other.py OUT_DIR --data DATA_DIR [--seed 0]
"""
import glob
import gettext
import gzip
import json
import os
import random
import re
import sys

DATA = None  # set from --data in main()


def clean(t):
    return " ".join(t.split())


def positives():
    files = ["gsm8k_train", "gsm8k_test", "math_test", "aime24", "amc23", "cmath_test",
             "cmath_dev", "mgsm_zh"]
    for f in files:
        for line in open(os.path.join(DATA, f + ".jsonl"), encoding="utf-8"):
            r = json.loads(line)
            text = r["problem"]
            if r.get("solution"):
                text += " " + r["solution"]
            yield f, clean(text)


TROFF_ESC = re.compile(r"\\f[BIRP1-4]|\\f\(..|\\f\[[^]]*\]|\\s[+-]?\d|\\\*\(..|\\\*.|\\\(..|\\\[[^]]*\]|\\[&|^%:c]")


def man_paragraphs(path):
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="strict") as f:
            text = f.read()
    except (UnicodeDecodeError, OSError, EOFError):
        return
    para = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            macro = line.split(" ", 1)
            if macro[0] in (".PP", ".SH", ".SS", ".TP", ".P", ".LP", ".IP", ".sp", ".br") and para:
                yield " ".join(para)
                para = []
            if macro[0] in (".B", ".I", ".BR", ".IR", ".RB", ".BI", ".IB", ".RI") and len(macro) > 1:
                para.append(macro[1].replace('"', ""))
            continue
        line = TROFF_ESC.sub("", line).replace("\\-", "-").replace("\\e", "\\")
        if line.strip():
            para.append(line.strip())
    if para:
        yield " ".join(para)


def negatives():
    for path in sorted(glob.glob("/usr/share/man/*/man*/*.gz")):
        lang = path.split("/")[4]
        for p in man_paragraphs(path):
            if len(p.split()) >= 12 or (lang in ("ja", "ko", "zh_CN", "zh_TW") and len(p) >= 40):
                yield "man:" + lang, clean(p)
    for path in sorted(glob.glob("/usr/share/man/man*/*.gz")):
        for p in man_paragraphs(path):
            if len(p.split()) >= 12:
                yield "man:en", clean(p)
    for path in sorted(glob.glob("/usr/share/vim/vim90/doc/*.txt")):
        text = open(path, encoding="utf-8", errors="replace").read()
        for sec in re.split(r"\n={10,}\n|\n-{10,}\n|\n\n", text):
            if len(sec.split()) >= 15:
                yield "vimdoc:en", clean(sec)
    desc = []
    for line in open("/var/lib/dpkg/status", encoding="utf-8", errors="replace"):
        if line.startswith("Description:"):
            desc = [line[len("Description:"):].strip()]
        elif line.startswith(" ") and desc:
            desc.append(line.strip().lstrip("."))
        elif desc:
            if len(" ".join(desc).split()) >= 10:
                yield "dpkg-description:en", clean(" ".join(desc))
            desc = []
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        text = open(path, encoding="utf-8", errors="replace").read()
        for para in text.split("\n\n"):
            if len(para.split()) >= 20:
                yield "copyright:en", clean(para)
    for path in sorted(glob.glob("/usr/share/locale/*/LC_MESSAGES/*.mo")):
        lang = path.split("/")[4]
        try:
            cat = gettext.GNUTranslations(open(path, "rb"))._catalog
        except Exception:
            continue
        buf = []
        for k, v in sorted(cat.items(), key=lambda kv: str(kv[0])):
            if not isinstance(v, str) or not v.strip() or k == "":
                continue
            buf.append(clean(v))
            if len(" ".join(buf)) >= 250:
                yield "locale:" + lang, " ".join(buf)
                buf = []


def main():
    global DATA
    out = sys.argv[1]
    if "--data" not in sys.argv:
        sys.exit("usage: python3 scripts/build_math_vs_other.py OUT_DIR --data DATA_DIR [--seed 0]")
    DATA = sys.argv[sys.argv.index("--data") + 1]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    pos = [(s, t) for s, t in positives() if t]
    neg_by_src = {}
    for s, t in negatives():
        neg_by_src.setdefault(s, []).append(t)
    # Cap each source so no single one dominates, then cap negatives near the positive count.
    neg = []
    for s in sorted(neg_by_src):
        items = neg_by_src[s]
        rng.shuffle(items)
        cap = 2500 if s.startswith(("vimdoc", "dpkg", "copyright", "man:en")) else (150 if s.startswith("locale") else 600)
        neg.extend((s, t) for t in items[:cap])
    rng.shuffle(neg)
    neg = neg[: max(len(pos), 20000)]
    docs = [("math", s, t) for s, t in pos] + [("other", s, t) for s, t in neg]
    seen = set()
    uniq = []
    for d in docs:
        if d[2] not in seen:
            seen.add(d[2])
            uniq.append(d)
    rng.shuffle(uniq)
    n_test = len(uniq) // 5
    splits = {"test": uniq[:n_test], "train": uniq[n_test:]}
    prov = {"seed": seed, "documents": len(uniq), "sources": {}}
    for name, items in splits.items():
        with open(os.path.join(out, name + ".txt"), "w", encoding="utf-8") as f:
            for label, src, text in items:
                f.write(f"__label__{label} {text}\n")
                key = f"{label}/{src}"
                prov["sources"].setdefault(key, {"train": 0, "test": 0})[name] += 1
    json.dump(prov, open(os.path.join(out, "provenance.json"), "w"), indent=1, sort_keys=True)
    print(json.dumps({k: len(v) for k, v in splits.items()}), "documents;",
          len({k.split("/")[1] for k in prov["sources"] if k.startswith("other")}), "negative sources")


if __name__ == "__main__":
    main()
