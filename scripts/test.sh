#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, builds the
# plugin and the CLI, runs every test (unit, Harness, pipelines, CLI, engines), then format and
# lint checks. The last line sums every test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
[ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"
export CARGO_TERM_COLOR=never
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo build --locked -p gst-plugin-oldfilm -p oldfilm-cli
cargo test --locked --workspace 2>&1 | tee "$log"
# The CUDA kernels compiled by NVRTC itself (no GPU needed, only the library from PyPI), so a CUDA-only
# compile error cannot hide behind the CPU emulation of the kernels. Without the download it is skipped.
nvrtc=target/nvrtc
get_nvrtc() {
  python3 -m pip install --quiet --target "$nvrtc" nvidia-cuda-nvrtc==13.5.37 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages --target "$nvrtc" nvidia-cuda-nvrtc==13.5.37 2>/dev/null
}
if [ -f "$nvrtc/nvidia/cu13/lib/libnvrtc.so.13" ] || get_nvrtc; then
  LD_LIBRARY_PATH="$PWD/$nvrtc/nvidia/cu13/lib" cargo test --locked -p oldfilm-kernels --lib -- --ignored nvrtc 2>&1 | tee -a "$log"
else
  echo "NVRTC could not be installed from PyPI: the NVRTC compile test is skipped"
fi
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# One closing line over all test binaries (cargo prints one "test result" per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
