#!/usr/bin/env bash
# Packs the GPU check for a GPU machine that has no Rust and no network: release binaries, the
# check's scripts, and the Python wheels of the peers the machine lacks, in one .tar.xz.
#
#   scripts/gpu_bundle.sh [--out gpu-bundle.tar.xz] [--backends "vulkan wgpu"] [--no-build]
#                         [--python python3] [--python-version 3.12]
#                         [--wheels "trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19"]
#
# 1. for each backend, `cargo build --release --features BACKEND` and a stripped copy of the
#    binary as reasonlab-BACKEND (--no-build takes the stripped copies from an earlier run);
# 2. `pip download --no-deps` of the --wheels packages as wheels for the GPU machine's
#    --python-version (a CUDA image with torch and transformers often lacks TRL and the
#    pure-Python half of its `datasets` dependency; the default versions are the ones the
#    check has run with, beside transformers 5.17 to 5.25; --wheels "" fetches none);
# 3. scripts/gpu_check.sh, and gpu_parity.py with the bench_torch.py it imports;
# all under a folder reasonlab-gpu/ in the archive (xz: the stripped binaries are about 90 and
# 105 MB, the archive a fifth of that). On the GPU machine, where `xz` may be missing:
#
#   python3 -c 'import tarfile; tarfile.open("gpu-bundle.tar.xz").extractall()'
#   cd reasonlab-gpu && scripts/gpu_check.sh --bin ./reasonlab-vulkan --backend vulkan \
#     --fallback-bin ./reasonlab-wgpu --fallback-backend wgpu --wheels wheels
set -euo pipefail

OUT=gpu-bundle.tar.xz
BACKENDS="vulkan wgpu"
BUILD=1
PY=python3
PY_VERSION=3.12
WHEELS="trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --backends) BACKENDS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --python) PY=$2; shift 2 ;;
    --python-version) PY_VERSION=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac # cargo reads it from $ROOT
BINARIES="$TARGET/gpu-bundle" # stripped copies, kept for --no-build
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/reasonlab-gpu/scripts" "$BINARIES"

for backend in $BACKENDS; do
  if [ "$BUILD" = 1 ]; then
    echo "== cargo build --release --features $backend"
    (cd "$ROOT" && cargo build --release --features "$backend")
    strip -o "$BINARIES/reasonlab-$backend" "$TARGET/release/reasonlab"
  fi
  [ -x "$BINARIES/reasonlab-$backend" ] || {
    echo "no $BINARIES/reasonlab-$backend: run without --no-build first" >&2
    exit 1
  }
  # A hard link where the file system allows one, else a copy.
  ln "$BINARIES/reasonlab-$backend" "$STAGE/reasonlab-gpu/" 2>/dev/null \
    || cp "$BINARIES/reasonlab-$backend" "$STAGE/reasonlab-gpu/"
  echo "reasonlab-$backend: $("$BINARIES/reasonlab-$backend" --version)"
done

if [ -n "$WHEELS" ]; then
  echo "== wheels for Python $PY_VERSION: $WHEELS"
  platforms=()
  for p in manylinux_2_28 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${p}_x86_64")
  done
  # shellcheck disable=SC2086 # the package names split on spaces
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --implementation cp "${platforms[@]}" -d "$STAGE/reasonlab-gpu/wheels" $WHEELS
  ls "$STAGE/reasonlab-gpu/wheels"
fi

for f in gpu_check.sh gpu_parity.py bench_torch.py; do
  cp "$ROOT/scripts/$f" "$STAGE/reasonlab-gpu/scripts/"
done
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
echo "== $OUT"
tar -C "$STAGE" -cf - reasonlab-gpu | xz -T0 -6 > "$OUT.part"
mv "$OUT.part" "$OUT"
du -h "$OUT" | cut -f1
