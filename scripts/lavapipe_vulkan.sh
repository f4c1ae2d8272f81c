#!/usr/bin/env bash
# The GPU-path tests through the `vulkan` backend (burn's SPIR-V kernels, with cooperative-matrix
# matmuls) on Mesa's lavapipe 26, a Vulkan driver that runs on the CPU.
#
#   scripts/lavapipe_vulkan.sh [--root DIR] [--all]
#
# The `vulkan` backend needs VK_KHR_workgroup_memory_explicit_layout for valid SPIR-V
# (docs/gpu.md), which Debian 12's lavapipe (Mesa 22.3.6) lacks and lavapipe 26 offers, with
# VK_KHR_cooperative_matrix besides. lavapipe 26 is in Debian 13's backports and needs Debian
# 13's C library, so the tests run in a Debian 13 root that debootstrap makes (kept in --root,
# target/lavapipe-root by default, and reused), from the mirror this machine's apt uses; the
# test binaries are built here (`cargo test --no-run --features reasonlab-train/vulkan`), and
# run in the root under chroot with the repository and the target folder bind-mounted at their
# own paths. Needs root for all but the build (chroot, mount; through sudo when the caller is
# not root), unshare and debootstrap (installed when missing). That part runs in a mount
# namespace of its own, so its mounts end with it however it ends.
#
# The tests in VULKAN_LAVAPIPE_CRASHES below are not run, and the script says so: on lavapipe
# 26 (26.1.6 and 26.2.6 alike) they end in a segmentation fault inside the driver. The cause,
# narrowed to burn alone in gpu_path.rs's `an_upload_into_just_freed_memory_reads_its_own_values`:
# a kernel that reads a tensor uploaded into device memory freed just before sees the freed
# tensor's values (a training step crashes so in burn's select_assign). Debian 12's lavapipe
# runs the same program correctly, and so does lavapipe 26 through the `wgpu` build (WGSL, whose
# kernels take their buffers bound rather than by device address).
#
# The tests in VULKAN_LAVAPIPE_SLOW run only with --all: from an empty shader cache lavapipe 26
# takes minutes to compile their SPIR-V kernels (flash attention's three kernels in each head
# dim, type and bias; the LM head's): 267 s and 210 s on machine Z, where the flash test takes
# 55 s through the `wgpu` build on the same driver, and 18 s through `vulkan` once the cache
# holds its kernels. Both run in CI through `wgpu`.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."

ROOT=target/lavapipe-root
ALL=
bins=()
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="$2"; shift 2 ;;
    --all) ALL=--all; shift ;;
    # The binaries built below, handed to the script's own run in its mount namespace.
    --in-namespace) shift; bins=("$@"); break ;;
    -h|--help) sed -n '2,30p' "$self"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

VULKAN_LAVAPIPE_CRASHES=(
  one_training_step_gives_the_cpu_gradients_and_update
  an_optimiser_step_updates_the_weights_in_place
  a_mixed_precision_step_tracks_the_f32_step
  a_mixed_precision_grpo_step_runs_and_learns
  a_mixed_precision_reward_model_trains_and_evaluates
  an_upload_into_just_freed_memory_reads_its_own_values
)
VULKAN_LAVAPIPE_SLOW=(
  flash_attention_has_the_composed_gradients
  fused_head_logprobs_match_the_composed_ops
)

if [ ${#bins[@]} -eq 0 ]; then
  # 1. The test binaries, built here as the caller; then the rest as root (sudo when the caller
  # is not) in a mount namespace of its own.
  json=$(cargo test --workspace --features reasonlab-train/vulkan \
    --test gpu_path --test gpu_precision --test gpu_kernels --no-run --message-format=json)
  mapfile -t bins < <(grep -oE '"executable":"[^"]+"' <<< "$json" | cut -d'"' -f4)
  [ "${#bins[@]}" -eq 3 ] || { echo "expected 3 test binaries, got: ${bins[*]}" >&2; exit 1; }
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  exec ${as_root[@]+"${as_root[@]}"} unshare --mount --propagation private "$self" --root "$ROOT" \
    $ALL --in-namespace "${bins[@]}"
fi
# Refused unless unshare gave this run a mount namespace other than its caller's.
ns=$(readlink /proc/self/ns/mnt || true)
caller_ns=$(readlink "/proc/$PPID/ns/mnt" || true)
if [ -z "$ns" ] || [ -z "$caller_ns" ] || [ "$ns" = "$caller_ns" ]; then
  echo "--in-namespace is the script's own: its mounts need a mount namespace of their own" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive

# 2. The Debian 13 root with lavapipe 26 from backports.
if [ ! -e "$ROOT/usr/share/vulkan/icd.d/lvp_icd.x86_64.json" ]; then
  command -v debootstrap > /dev/null || { apt-get update -qq; apt-get install -y -qq debootstrap; }
  # The mirror this machine's apt reads Debian from (debootstrap's own default otherwise).
  mirror=$(grep -rhoE '^(URIs:|deb) +[a-z]+://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
    /etc/apt/sources.list.d/ 2> /dev/null | awk '{print $2}' | head -1 || true)
  rm -rf "$ROOT.partial"
  mkdir -p "$(dirname "$ROOT")"
  echo "making a Debian 13 root in $ROOT (debootstrap trixie ${mirror:-})"
  debootstrap --variant=minbase trixie "$ROOT.partial" ${mirror:+"$mirror"} > "$ROOT.log" 2>&1 \
    || { tail -20 "$ROOT.log" >&2; exit 1; }
  sed -n 's/^deb \([^ ]*\) trixie main/deb \1 trixie-backports main/p' \
    "$ROOT.partial/etc/apt/sources.list" > "$ROOT.partial/etc/apt/sources.list.d/backports.list"
  chroot "$ROOT.partial" apt-get update -qq
  chroot "$ROOT.partial" apt-get install -y -qq --no-install-recommends -t trixie-backports \
    mesa-vulkan-drivers libvulkan1 >> "$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
  chroot "$ROOT.partial" apt-get clean
  rm -rf "$ROOT"
  mv -T "$ROOT.partial" "$ROOT"
fi
echo "lavapipe: $(chroot "$ROOT" dpkg-query -W -f '${Version}' mesa-vulkan-drivers)"

# 3. The repository and the target folder at their own paths in the root.
repo=$(pwd -P)
target=$(cd "$(dirname "${bins[0]}")/../.." && pwd -P)
bind() { # PATH MOUNT-ARGS…: mounts at PATH in the root
  mkdir -p "$ROOT$1"
  mount "${@:2}" "$ROOT$1"
}
bind /proc -t proc proc
bind /dev --rbind /dev
bind "$repo" --bind "$repo"
case "$target/" in "$repo"/*) ;; *) bind "$target" --bind "$target" ;; esac

# 4. Each binary in the root, from the crate's folder as cargo runs it.
skip() { for t in "$@"; do printf -- '--skip\n%s\n' "$t"; done; }
status=0
for bin in "${bins[@]}"; do
  args=()
  case "$(basename "$bin")" in
    gpu_path-*) mapfile -t args < <(skip "${VULKAN_LAVAPIPE_CRASHES[@]}") ;;
    gpu_kernels-*) [ -n "$ALL" ] || mapfile -t args < <(skip "${VULKAN_LAVAPIPE_SLOW[@]}") ;;
  esac
  echo "== $(basename "$bin") through vulkan on lavapipe"
  timeout 1800 chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root XDG_RUNTIME_DIR=/tmp \
    REASONLAB_GPU_BACKEND=vulkan sh -c 'cd "$1" && shift && exec "$@"' sh \
    "$repo/crates/train" "$bin" "${args[@]}" || status=$?
done
echo "NOT RUN through vulkan on lavapipe 26 (a segmentation fault inside the driver; the comment"
echo "at the top of scripts/lavapipe_vulkan.sh and docs/gpu.md say why):"
printf '  gpu_path::%s\n' "${VULKAN_LAVAPIPE_CRASHES[@]}"
if [ -z "$ALL" ]; then
  echo "NOT RUN through vulkan on lavapipe 26 without --all (minutes of shader compilation each):"
  printf '  gpu_kernels::%s\n' "${VULKAN_LAVAPIPE_SLOW[@]}"
fi
exit $status
