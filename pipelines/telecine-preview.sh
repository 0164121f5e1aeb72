#!/usr/bin/env bash
# Telecine preview: a capture source through oldfilmrestore with compare=split (original left,
# restored right) to a display.
#   pipelines/telecine-preview.sh [--v4l2 DEVICE | --decklink N | FILE] [oldfilmrestore properties...]
#   pipelines/telecine-preview.sh --test     # headless: test source, no display, counts frames
set -euo pipefail
source "$(dirname "$0")/common.sh"
setup_plugin

source_for() {
  case "$1" in
    --v4l2) echo "v4l2src device=$2 ! videoconvert" ;;
    --decklink) echo "decklinksrc device-number=$2 ! videoconvert" ;;
    *) [ -f "$1" ] || { echo "error: '$1' is neither a capture option nor an existing file" >&2; return 1; }
       echo "filesrc location=$1 ! decodebin ! videoconvert" ;;
  esac
}

if [ "${1:-}" = "--test" ]; then
  n=$(gst-launch-1.0 -v videotestsrc num-buffers=50 is-live=true pattern=smpte \
      ! video/x-raw,format=I420,width=320,height=240,framerate=50/1 \
      ! oldfilmrestore compare=split ! videoconvert ! fakesink name=count silent=false sync=true 2>&1 | count_frames)
  echo "telecine-preview: frames: $n (expected 50)"
  [ "$n" = 50 ]
  exit
fi

[ $# -ge 1 ] || { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
if [ "$1" = --v4l2 ] || [ "$1" = --decklink ]; then src=$(source_for "$1" "$2"); shift 2; else src=$(source_for "$1"); shift; fi
# shellcheck disable=SC2086
exec gst-launch-1.0 $src ! oldfilmrestore compare=split "$@" ! videoconvert ! autovideosink sync=false
