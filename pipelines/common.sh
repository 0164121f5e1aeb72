# Shared by the pipeline scripts: finds the built plugin and gst-launch-1.0.
# OLDFILM_PLUGIN_DIR overrides where libgstoldfilm.so is looked for.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

find_plugin_dir() {
  local d newest=""
  if [ -n "${OLDFILM_PLUGIN_DIR:-}" ] && [ -f "$OLDFILM_PLUGIN_DIR/libgstoldfilm.so" ]; then
    echo "$OLDFILM_PLUGIN_DIR"; return 0
  fi
  # The most recently built of release and debug: a stale build must not shadow a fresh one.
  for d in "$repo/target/release" "$repo/target/debug"; do
    if [ -f "$d/libgstoldfilm.so" ] && { [ -z "$newest" ] || [ "$d/libgstoldfilm.so" -nt "$newest/libgstoldfilm.so" ]; }; then
      newest=$d
    fi
  done
  if [ -n "$newest" ]; then echo "$newest"; return 0; fi
  if gst-inspect-1.0 oldfilmrestore >/dev/null 2>&1; then echo ""; return 0; fi
  echo "error: libgstoldfilm.so not found: build it with 'cargo build --release -p gst-plugin-oldfilm' or set OLDFILM_PLUGIN_DIR" >&2
  return 1
}

setup_plugin() {
  local dir
  dir=$(find_plugin_dir) || exit 1
  if [ -n "$dir" ]; then export GST_PLUGIN_PATH="$dir${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"; fi
  command -v gst-launch-1.0 >/dev/null || { echo "error: gst-launch-1.0 not found (apt-get install gstreamer1.0-tools)" >&2; exit 1; }
}

# Counts buffers reaching a fakesink named 'count' in gst-launch -v output.
count_frames() {
  grep -c 'count.*chain   \*' || true
}
