#!/usr/bin/env python3
"""Write the Parquet fixtures the tests read (pyarrow, snappy compression as datasets writes):

- fixtures/data/sft_chat.parquet: the first 8 records of examples/data/sft_gsm8k_64.jsonl
  (`messages`: a list of {role, content} structs), the shape of Hugging Face chat datasets;
- fixtures/data/problems.parquet: examples/data/gsm8k_short_32.jsonl (id, problem, answer).
"""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

root = Path(__file__).resolve().parent.parent
out = root / "fixtures" / "data"
out.mkdir(parents=True, exist_ok=True)
chat = [json.loads(l) for l in open(root / "examples/data/sft_gsm8k_64.jsonl")][:8]
pq.write_table(pa.Table.from_pylist(chat), out / "sft_chat.parquet", compression="snappy")
probs = [json.loads(l) for l in open(root / "examples/data/gsm8k_short_32.jsonl")]
pq.write_table(pa.Table.from_pylist(probs), out / "problems.parquet", compression="zstd")
print(out)
