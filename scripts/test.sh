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
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# One closing line over all test binaries (cargo prints one "test result" per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
