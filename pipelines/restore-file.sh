#!/usr/bin/env bash
# Restore a video file to a lossless FFV1/Matroska file (or H.264/MP4 when OUT ends in .mp4).
#   pipelines/restore-file.sh IN OUT [oldfilmrestore properties...]
#   pipelines/restore-file.sh --test     # headless self-check on a generated clip
set -euo pipefail
source "$(dirname "$0")/common.sh"
setup_plugin

encoder_for() {
  case "$1" in
    *.mkv) echo "avenc_ffv1 ! matroskamux" ;;
    *.mp4) echo "x264enc speed-preset=medium pass=quant quantizer=18 ! mp4mux" ;;
    *) echo "error: output '$1' must end in .mkv (lossless FFV1) or .mp4 (H.264)" >&2; return 1 ;;
  esac
}

restore() {
  local in=$1 out=$2; shift 2
  [ -f "$in" ] || { echo "error: input file '$in' does not exist" >&2; exit 1; }
  local enc; enc=$(encoder_for "$out")
  # shellcheck disable=SC2086
  gst-launch-1.0 -q filesrc location="$in" ! decodebin ! videoconvert ! oldfilmrestore "$@" \
    ! videoconvert ! $enc ! filesink location="$out"
}

if [ "${1:-}" = "--test" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  gst-launch-1.0 -q videotestsrc num-buffers=40 pattern=ball ! video/x-raw,format=GRAY8,width=160,height=120,framerate=25/1 \
    ! avenc_ffv1 ! matroskamux ! filesink location="$tmp/in.mkv"
  restore "$tmp/in.mkv" "$tmp/out.mkv" deflicker-strength=0.8
  n=$(gst-launch-1.0 -v filesrc location="$tmp/out.mkv" ! matroskademux ! avdec_ffv1 ! fakesink name=count silent=false 2>&1 | count_frames)
  echo "restore-file: frames: $n (expected 40)"
  [ "$n" = 40 ]
  # With the committed tiny diffusion engine (random weights: checks the plumbing, not the picture).
  engine="$(cd "$(dirname "$0")/.." && pwd)/engines/fixtures/tiny-turbo"
  restore "$tmp/in.mkv" "$tmp/engine.mkv" engine="$engine" device=cpu
  n=$(gst-launch-1.0 -v filesrc location="$tmp/engine.mkv" ! matroskademux ! avdec_ffv1 ! fakesink name=count silent=false 2>&1 | count_frames)
  echo "restore-file: with an engine: frames: $n (expected 40)"
  [ "$n" = 40 ]
  exit
fi

[ $# -ge 2 ] || { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
restore "$@"
