#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12 (bookworm): GStreamer 1.22
# development files and plugins, FFmpeg (for the quality benchmark), Python's pip, and a Rust
# toolchain if none is present. Safe to run again; does nothing that is already done.
set -euo pipefail
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
packages=(
  pkg-config build-essential curl ca-certificates python3 python3-pip unzip
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  ffmpeg
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  source "$HOME/.cargo/env"
fi
# ONNX Runtime (CPU) for the diffusion-prior engines: the Rust crate loads its shared library
# at run time (ort's load-dynamic), found in this package's onnxruntime/capi/ folder.
ORT_VERSION=1.32.0
installed=$(python3 -m pip show onnxruntime 2>/dev/null || true)
if ! grep -qx "Version: $ORT_VERSION" <<<"$installed"; then
  echo "setup: installing onnxruntime==$ORT_VERSION (pip)"
  python3 -m pip install --quiet "onnxruntime==$ORT_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages "onnxruntime==$ORT_VERSION"
fi
echo "setup: $(gst-launch-1.0 --version | sed -n 2p), $(cargo --version), onnxruntime $ORT_VERSION"
