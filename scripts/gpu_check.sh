#!/usr/bin/env bash
# The GPU check: reasonlab against its PyTorch peers on one GPU, from a release binary built
# elsewhere. Needs the GPU's Vulkan driver (for --backend wgpu/vulkan) and a Python with torch,
# transformers and trl; no network, no Rust.
#
#   scripts/gpu_check.sh [--bin target/release/reasonlab] [--backend wgpu] [--python python3]
#                        [--shape qwen2.5-0.5b|qwen2.5-1.5b] [--dtype f16] [--out gpu-check]
#                        [--quick]
#                        [--fallback-bin ./reasonlab-wgpu --fallback-backend wgpu] [--wheels DIR]
#                        [--only parity,generate,train-step,grpo,profile,f32,long]
#
# --only runs the named parts below and no others (the first five by default; `f32` and
# `long` only when named): a second run into the same --out can take up parts a first one did not reach, and the
# summary covers both (the fallback below needs the parity part: without it, --bin runs them
# all). The default spends the GPU's minutes on what the goals compare: reduced precision.
# --wheels DIR installs the Python wheels in DIR (the peers' packages the machine lacks, such as
# trl; scripts/gpu_bundle.sh packs them with the binaries) with pip --no-index --no-deps into
# OUT/site-packages, which goes first on PYTHONPATH for every step (a path that names
# site-packages, which dill, under `datasets`, takes for installed code).
# 1. parity: a random checkpoint of the shape (scripts/gpu_parity.py make); log-probs of 64 ids
#    from `reasonlab model logprobs --backend B` against transformers on CUDA (f32); then
#    training: two AdamW steps of the tiny shape on B and on flex (`bench train-step --repeats
#    2`, the same seeded model and batch), their losses within 1e-3 (relative) of each other
#    (`gpu_parity.py losses`), and B's in --dtype mixed precision within 1e-2 of flex's. With
#    --fallback-bin, a backend that fails here (a crash, a time-out, log-probs or a loss out of
#    tolerance) hands the rest of the check to the fallback binary and backend, after the same
#    parity checks (at most 100 s more): a `vulkan` build, whose matmuls can use tensor cores,
#    first, and a `wgpu` build behind it;
# 2. generation: `reasonlab bench generate` (16 prompts x 32 tokens, 128 new at T = 1) against
#    transformers' `generate` on CUDA in the reduced --dtype (f16 by default: wgpu has no bf16;
#    pass --dtype bf16 for a backend that has it), both sides in the same type; the same with
#    REASONLAB_GPU_DECODE_OVERLAP=off against the saved peer line (each step read before the
#    next is queued: what decoding ahead gains); then with DeepSeek-R1's evaluation draw
#    (T = 0.6, top-p 0.95);
# 3. a train step: `reasonlab bench train-step --batch 8 --seq 512` with --mixed-precision DTYPE
#    against PyTorch eager under autocast to the same type, then ours alone against the same
#    peer result twice more: with --activation-checkpointing balanced, and with
#    REASONLAB_GPU_ATTENTION=matmul (attention's scores as matmuls, which burn runs on the
#    tensor cores where it can, in place of flash attention on scalar units);
# 4. a GRPO step: `reasonlab bench grpo` (8 x 8 samples, <= 128 new tokens, one timed step after
#    a warm-up) on the shape, in the reduced --dtype with f32 master weights, against TRL on
#    CUDA with fp16/bf16 to match and gradient checkpointing off on both sides;
# 5. a profile (GPU backends): the device's ceilings (`reasonlab bench device`: launch cost,
#    memory bandwidth, scalar and cooperative-matrix compute), then cubecl's time per kernel
#    over `bench generate --new-tokens 8` in the reduced type, each kernel synchronised (so the
#    total is not the speed), summed by kernel into OUT/profile.txt: where a decode step's time
#    goes; and the same over one mixed-precision train step into OUT/profile-train.txt;
# 6. f32 (only when named): generation and the train step of parts 2 and 3 in f32 on both sides.
# 7. long (only when named): a single stream's generation over a long context, in the reduced
#    --dtype on both sides (1 prompt of 8,192 tokens, 128 new; the decode attention splits its
#    keys across cubes there, 17 chunks of up to 512 per kv head), the same stream with
#    REASONLAB_GPU_DECODE_SPLIT=never against the saved peer line, then 16 streams of 2,048
#    tokens (5 chunks each).
# On --backend flex, parts 2 and 3 run in f32, the CPU's only precision. Every result is a JSON
# file in OUT, and a summary ends the run. Each step has a time limit (together 10 min 40 s by
# default, 12 min 20 s when the fallback runs; part 6 adds 2 min 20 s, part 7 2 min 30 s).
# `--quick` runs the tiny shape with one repetition and three times the limits: a smoke test of
# the script itself, which on a machine without a GPU runs with `--backend flex` (the peers
# then run on the CPU). With REASONLAB_GPU_KERNELS=composed in the environment, reasonlab runs
# burn's composed ops instead of its fused GPU kernels: a second run with it measures what the
# kernels change; with REASONLAB_GPU_ATTENTION=matmul, attention over more than one query
# computes its scores as matmuls instead of flash attention (the rest stays fused). On a
# machine with several GPUs, REASONLAB_GPU=N picks reasonlab's card (`reasonlab devices` lists
# them) and the benchmarks' peers run on the same one.
set -uo pipefail

BIN=target/release/reasonlab
BACKEND=wgpu
PY=python3
SHAPE=qwen2.5-0.5b
OUT=gpu-check

SCALE=1
DTYPE=f16
REPEATS=3
SEQ=512
FALLBACK_BIN=
FALLBACK_BACKEND=wgpu
WHEELS=
ONLY=parity,generate,train-step,grpo,profile
PARTS="parity, generate, train-step, grpo, profile, f32, long"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --shape) SHAPE=$2; shift 2 ;;
    --dtype) DTYPE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --peer-device) PEER_DEVICE=$2; shift 2 ;;
    --fallback-bin) FALLBACK_BIN=$2; shift 2 ;;
    --fallback-backend) FALLBACK_BACKEND=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --quick) SCALE=3; SHAPE=tiny; REPEATS=1; SEQ=128; shift ;;
    -h|--help) sed -n '2,64p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for part in ${ONLY//,/ }; do
  case "$part" in
    parity|generate|train-step|grpo|profile|f32|long) ;;
    *) echo "unknown part $part in --only ($PARTS)" >&2; exit 2 ;;
  esac
done
wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
PEER_DEVICE_ASKED=${PEER_DEVICE:-}
peer_device() { # the peers' device for backend $1: the CPU beside flex, else CUDA
  if [ -n "$PEER_DEVICE_ASKED" ]; then echo "$PEER_DEVICE_ASKED"
  elif [ "$1" = flex ]; then echo cpu
  else echo cuda; fi
}
PEER_DEVICE=$(peer_device "$BACKEND")
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
FAILED=()

step() { # name, seconds, command…
  local name=$1 limit=$2; shift 2
  echo "== $name" | tee -a "$OUT/log.txt"
  local started=$SECONDS
  # stdout straight to its file (whole when the step ends, for the lines read from it below),
  # then shown; stderr (progress, warnings) shown as it comes and logged.
  timeout "$((limit * SCALE))" "$@" > "$OUT/$name.out" 2> >(tee -a "$OUT/log.txt" >&2)
  local rc=$?
  cat "$OUT/$name.out"
  echo "-- $name: exit $rc after $((SECONDS - started)) s" | tee -a "$OUT/log.txt"
  [ $rc -eq 0 ] || FAILED+=("$name")
  return 0
}

echo "binary: $BIN ($("$BIN" --version 2>/dev/null))" | tee "$OUT/log.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader | tee -a "$OUT/log.txt"
case "$BACKEND" in
  wgpu|vulkan)
    # The linker cache read whole (grep -q would stop reading it early: SIGPIPE under pipefail).
    libs=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null)
    case "$libs" in
      *libvulkan.so.1*) ;;
      *) echo "warning: no Vulkan loader (libvulkan.so.1) in the linker cache: --backend $BACKEND needs one (Debian/Ubuntu: libvulkan1)" \
           | tee -a "$OUT/log.txt" ;;
    esac ;;
esac
if [ -n "$WHEELS" ]; then
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$OUT/site-packages" "$WHEELS"/*.whl >>"$OUT/log.txt" 2>&1; then
    echo "the wheels in $WHEELS did not install (see $OUT/log.txt)" >&2
    exit 1
  fi
  export PYTHONPATH="$OUT/site-packages${PYTHONPATH:+:$PYTHONPATH}"
  echo "wheels: $(cd "$WHEELS" && echo *.whl) in $OUT/site-packages" | tee -a "$OUT/log.txt"
fi
# The peers' packages: their versions, or why one does not import (the steps that need it fail).
"$PY" -c 'import torch, transformers, datasets, trl; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__, "datasets", datasets.__version__, "trl", trl.__version__)' \
  2>&1 | tee -a "$OUT/log.txt"

# 1. parity
if wanted parity; then
CKPT="$OUT/ckpt-$SHAPE"
[ -f "$CKPT/config.json" ] || step make-checkpoint 40 "$PY" "$HERE/gpu_parity.py" make "$CKPT" --shape "$SHAPE"
IDS=$("$PY" "$HERE/gpu_parity.py" ids --shape "$SHAPE" --len 64)
PARITY_FROM=${#FAILED[@]} # the backend's parity steps' failures follow
step logprobs 30 "$BIN" model logprobs --model "$CKPT" --ids "$IDS" --backend "$BACKEND"
step parity 30 "$PY" "$HERE/gpu_parity.py" compare "$CKPT" --ours "$OUT/logprobs.out" --ids "$IDS" \
  --device "$PEER_DEVICE"
# Training: two AdamW steps of the tiny shape (the same seeded model and batch) on the backend
# and on flex, whose losses before a third step agree unless a gradient or an update differs;
# then the same steps in mixed precision, whose loss stays within 1% of flex's f32 one.
train_parity() { # $1: the steps' name suffix
  [ "$BACKEND" = flex ] && return 0 # nothing to compare with
  local tiny=(--shape tiny --batch 2 --seq 64 --repeats 2)
  # flex's result once per run (the fallback reuses it); without it, nothing to compare with.
  [ -n "$1" ] || step train-flex 20 "$BIN" bench train-step --backend flex "${tiny[@]}" \
    --json "$OUT/train-flex.json"
  [ -s "$OUT/train-flex.json" ] || return 0
  rm -f "$OUT/train-$BACKEND.json" "$OUT/train-$BACKEND-$DTYPE.json" # no earlier run's
  step train-$BACKEND 20 "$BIN" bench train-step --backend "$BACKEND" "${tiny[@]}" \
    --json "$OUT/train-$BACKEND.json"
  step train-parity$1 10 "$PY" "$HERE/gpu_parity.py" losses "$OUT/train-$BACKEND.json" \
    "$OUT/train-flex.json"
  step train-$BACKEND-$DTYPE 20 "$BIN" bench train-step --backend "$BACKEND" "${tiny[@]}" \
    --mixed-precision "$DTYPE" --json "$OUT/train-$BACKEND-$DTYPE.json"
  step train-parity-$DTYPE$1 10 "$PY" "$HERE/gpu_parity.py" losses \
    "$OUT/train-$BACKEND-$DTYPE.json" "$OUT/train-flex.json" --rtol 1e-2
}
rm -f "$OUT/train-flex.json"
train_parity ""
# The backend's own failures among them (flex's step is not the backend's).
backend_failed=()
for i in "${!FAILED[@]}"; do
  [ "$i" -ge "$PARITY_FROM" ] && [ "${FAILED[$i]}" != train-flex ] && backend_failed+=("$i")
done
if [ -n "$FALLBACK_BIN" ] && [ ${#backend_failed[@]} -gt 0 ]; then
  echo "== $BACKEND failed parity: the rest runs on $FALLBACK_BIN --backend $FALLBACK_BACKEND" \
    | tee -a "$OUT/log.txt"
  for i in "${backend_failed[@]}"; do # tagged with the backend's name where they lack it
    [[ ${FAILED[$i]} == *"$BACKEND"* ]] || FAILED[$i]="${FAILED[$i]} ($BACKEND)"
  done
  BIN=$FALLBACK_BIN
  BACKEND=$FALLBACK_BACKEND
  PEER_DEVICE=$(peer_device "$BACKEND")
  echo "binary: $BIN ($("$BIN" --version 2>/dev/null))" | tee -a "$OUT/log.txt"
  step logprobs-$BACKEND 20 "$BIN" model logprobs --model "$CKPT" --ids "$IDS" --backend "$BACKEND"
  step parity-$BACKEND 20 "$PY" "$HERE/gpu_parity.py" compare "$CKPT" \
    --ours "$OUT/logprobs-$BACKEND.out" --ids "$IDS" --device "$PEER_DEVICE"
  train_parity "-$BACKEND"
fi
fi

# 2-4. speed against the peers on the same card
# Each side's f32 runs: on flex (its only precision) in parts 2 and 3, on a GPU backend in part 6.
F32_GENERATE=0; F32_TRAIN=0
if [ "$BACKEND" = flex ]; then
  wanted generate && F32_GENERATE=1
  wanted train-step && F32_TRAIN=1
elif wanted f32; then
  F32_GENERATE=1; F32_TRAIN=1
fi
if [ $F32_GENERATE = 1 ]; then
  step generate 60 "$BIN" bench generate --backend "$BACKEND" --shape "$SHAPE" --repeats "$REPEATS" \
    --peer-python "$PY" --json "$OUT/generate.json"
fi
if wanted generate && [ "$BACKEND" != flex ]; then
  step generate-$DTYPE 60 "$BIN" bench generate --backend "$BACKEND" --shape "$SHAPE" --dtype "$DTYPE" \
    --repeats "$REPEATS" --peer-python "$PY" --json "$OUT/generate-$DTYPE.json"
  # Each step read before the next is queued, against the peer's saved line: what decoding
  # ahead gains.
  PEER_GEN="$OUT/peer-generate-$DTYPE.json"
  sed -n 's/^pytorch: *//p' "$OUT/generate-$DTYPE.out" > "$PEER_GEN"
  GEN_PEER=(--peer-json "$PEER_GEN")
  [ -s "$PEER_GEN" ] || GEN_PEER=() # the peer failed above: ours alone
  step generate-$DTYPE-serial 20 env REASONLAB_GPU_DECODE_OVERLAP=off "$BIN" bench generate \
    --backend "$BACKEND" --shape "$SHAPE" --dtype "$DTYPE" --repeats 1 \
    ${GEN_PEER[@]+"${GEN_PEER[@]}"} --json "$OUT/generate-$DTYPE-serial.json"
  step generate-$DTYPE-top-p 30 "$BIN" bench generate --backend "$BACKEND" --shape "$SHAPE" \
    --dtype "$DTYPE" --temperature 0.6 --top-p 0.95 --repeats 1 --peer-python "$PY" \
    --json "$OUT/generate-$DTYPE-top-p.json"
fi
if [ $F32_TRAIN = 1 ]; then
  step train-step 80 "$BIN" bench train-step --backend "$BACKEND" --shape "$SHAPE" --batch 8 \
    --seq "$SEQ" --repeats "$REPEATS" --peer-python "$PY" --json "$OUT/train-step.json"
fi
# The peer's line of the mixed-precision step, for the runs of ours alone against it.
PEER_STEP="$OUT/peer-train-step-$DTYPE.json"
peer_step() { # PEER_ARGS: the flags that give `bench train-step` the peer's result, saved or run
  if [ -s "$PEER_STEP" ]; then PEER_ARGS=(--peer-json "$PEER_STEP"); else PEER_ARGS=(--peer-python "$PY"); fi
}
if wanted train-step && [ "$BACKEND" != flex ]; then
  step train-step-$DTYPE 60 "$BIN" bench train-step --backend "$BACKEND" --shape "$SHAPE" --batch 8 \
    --seq "$SEQ" --mixed-precision "$DTYPE" --repeats "$REPEATS" --peer-python "$PY" \
    --json "$OUT/train-step-$DTYPE.json"
  sed -n 's/^pytorch: *//p' "$OUT/train-step-$DTYPE.out" > "$PEER_STEP"
  peer_step
  # With activation checkpointing (the LM head's logits in chunks, recomputed in the backward
  # pass): what it saves in memory and costs in time.
  step train-step-$DTYPE-checkpointing 40 "$BIN" bench train-step --backend "$BACKEND" \
    --shape "$SHAPE" --batch 8 --seq "$SEQ" --mixed-precision "$DTYPE" \
    --activation-checkpointing balanced --repeats 1 "${PEER_ARGS[@]}" \
    --json "$OUT/train-step-$DTYPE-checkpointing.json"
  # Attention's scores as matmuls: flash attention on scalar units against burn's matmuls.
  step train-step-$DTYPE-matmul-attention 45 env REASONLAB_GPU_ATTENTION=matmul "$BIN" bench \
    train-step --backend "$BACKEND" --shape "$SHAPE" --batch 8 --seq "$SEQ" \
    --mixed-precision "$DTYPE" --repeats 1 "${PEER_ARGS[@]}" \
    --json "$OUT/train-step-$DTYPE-matmul-attention.json"
fi
if wanted grpo; then
GRPO_PRECISION=$DTYPE
[ "$BACKEND" = flex ] && GRPO_PRECISION=f32 # flex trains in f32
step grpo 100 "$BIN" bench grpo --backend "$BACKEND" --shape "$SHAPE" \
  --mixed-precision "$GRPO_PRECISION" --steps 1 --peer-python "$PY" --json "$OUT/grpo.json"
fi

# 5. where a decode step's time goes, and the device's ceilings to hold the steps against
if wanted profile && [ "$BACKEND" != flex ]; then
  step device 30 "$BIN" bench device --backend "$BACKEND" --json "$OUT/device.json"
  # Lines `| 12.3µs | Kernel_hash` of cubecl's log $1: time summed per kernel (hash dropped),
  # largest first, into $2.
  per_kernel() {
    awk -F'|' '/^\| / {
        t = $2; n = $3; gsub(/ /, "", t); gsub(/ /, "", n); sub(/_[0-9a-f]+$/, "", n)
        v = t + 0
        if (t ~ /ns$/) v /= 1000; else if (t ~ /ms$/) v *= 1000; else if (t ~ /[0-9]s$/) v *= 1e6
        sum[n] += v; count[n]++; total += v
      }
      END {
        for (k in sum) printf "%10.2f ms %6.1f%% %8d  %s\n", sum[k] / 1000, 100 * sum[k] / total, count[k], k
      }' "$1" 2>/dev/null | sort -rn | head -30 > "$2"
  }
  rm -f "$OUT/cubecl.log" "$OUT/cubecl-train.log"
  step profile 30 env CUBECL_DEBUG_LOG="$OUT/cubecl.log" CUBECL_DEBUG_OPTION=profile \
    "$BIN" bench generate --backend "$BACKEND" --shape "$SHAPE" --dtype "$DTYPE" --new-tokens 8 \
    --repeats 1
  per_kernel "$OUT/cubecl.log" "$OUT/profile.txt"
  echo "== profile: time per kernel, largest first ($OUT/profile.txt)"
  head -15 "$OUT/profile.txt"
  # One mixed-precision train step (after its warm-up step), kernel by kernel.
  peer_step
  step profile-train 45 env CUBECL_DEBUG_LOG="$OUT/cubecl-train.log" CUBECL_DEBUG_OPTION=profile \
    "$BIN" bench train-step --backend "$BACKEND" --shape "$SHAPE" --batch 8 --seq "$SEQ" \
    --mixed-precision "$DTYPE" --repeats 1 "${PEER_ARGS[@]}"
  per_kernel "$OUT/cubecl-train.log" "$OUT/profile-train.txt"
  echo "== profile of a train step: time per kernel, largest first ($OUT/profile-train.txt)"
  head -15 "$OUT/profile-train.txt"
fi

# 7. long contexts: a single stream (split-K decode attention) and a batch of them
if wanted long; then
  LONG=8192; LONG_BATCH=2048
  [ "$SHAPE" = tiny ] && { LONG=384; LONG_BATCH=256; } # the tiny shape has 512 positions
  LONG_DTYPE=$DTYPE
  [ "$BACKEND" = flex ] && LONG_DTYPE=f32
  step generate-long 60 "$BIN" bench generate --backend "$BACKEND" --shape "$SHAPE" \
    --dtype "$LONG_DTYPE" --prompts 1 --prompt-len "$LONG" --repeats 2 --peer-python "$PY" \
    --json "$OUT/generate-long.json"
  # The same stream with its keys in one cube per kv head, against the peer's saved line:
  # what the split gains.
  PEER_LONG="$OUT/peer-generate-long.json"
  sed -n 's/^pytorch: *//p' "$OUT/generate-long.out" > "$PEER_LONG"
  LONG_PEER=(--peer-json "$PEER_LONG")
  [ -s "$PEER_LONG" ] || LONG_PEER=() # the peer failed above: ours alone
  step generate-long-unsplit 30 env REASONLAB_GPU_DECODE_SPLIT=never "$BIN" bench generate \
    --backend "$BACKEND" --shape "$SHAPE" --dtype "$LONG_DTYPE" --prompts 1 \
    --prompt-len "$LONG" --repeats 2 ${LONG_PEER[@]+"${LONG_PEER[@]}"} \
    --json "$OUT/generate-long-unsplit.json"
  step generate-long-batch 60 "$BIN" bench generate --backend "$BACKEND" --shape "$SHAPE" \
    --dtype "$LONG_DTYPE" --prompts 16 --prompt-len "$LONG_BATCH" --repeats 1 \
    --peer-python "$PY" --json "$OUT/generate-long-batch.json"
fi

echo "== summary ($OUT)"
grep -H -E '^(speed-up|peak RSS|device memory|round|reasonlab|pytorch|ceiling)|verdict' "$OUT"/*.out 2>/dev/null \
  | sed "s|^$OUT/||"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAILED: ${FAILED[*]} (see $OUT/log.txt)"
  exit 1
fi
echo "all steps ran"
