#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, builds the
# plugin and the CLI, runs every test (unit, Harness, pipelines, CLI), then format and lint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
[ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"
export CARGO_TERM_COLOR=never
cargo build --locked -p gst-plugin-oldfilm -p oldfilm-cli
cargo test --locked --workspace
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
