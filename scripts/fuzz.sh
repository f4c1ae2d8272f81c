#!/bin/sh
# Build and run the libFuzzer targets in fuzz/ without cargo-fuzz (same flags it passes):
#   scripts/fuzz.sh TARGET SECONDS        TARGET: verify | corpus_readers | fasttext_bin | tool_parse
# Needs a nightly toolchain (AddressSanitizer); without one, the stable toolchain is asked to
# accept the unstable flags (RUSTC_BOOTSTRAP=1). Crashes land in runs/fuzz/TARGET/.
set -eu
target=$1
secs=${2:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Zsanitizer=address -Cdebug-assertions"
export CARGO_TARGET_DIR="$root/target-fuzz"
triple=$(rustc -vV | sed -n 's/^host: //p')
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  (cd "$root/fuzz" && cargo +nightly build --release --target "$triple" --bin "$target")
else
  (cd "$root/fuzz" && RUSTC_BOOTSTRAP=1 cargo build --release --target "$triple" --bin "$target")
fi
mkdir -p "$root/runs/fuzz/$target/corpus"
cd "$root/runs/fuzz/$target"
"$CARGO_TARGET_DIR/$triple/release/$target" corpus -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536
