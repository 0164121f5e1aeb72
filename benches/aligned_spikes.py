#!/usr/bin/env python3
"""One-frame spike rate with the neighbours aligned first (a check on the real samples).

`oldfilm score`'s spike rate compares each frame with its raw neighbours: on a camera pan every
thin line that moves by more than its width is a "spike" (dark in this frame, bright in both
neighbours), so the measure counts moving picture detail as well as dust, and a filter that
smears motion (tmedian) scores low. This script aligns each neighbour to the frame by its global
shift (phase correlation) before counting, so what it counts is what camera motion does not
explain: dust, dirt and whatever moves on its own. Same threshold as `oldfilm score` (0.08);
a 24-pixel border is left out (it wraps round in the alignment).

    python3 benches/aligned_spikes.py WIDTH HEIGHT CLIP.mkv [CLIP.mkv ...]

Needs ffmpeg and numpy (pip install numpy).
"""
import subprocess
import sys

import numpy as np

THRESHOLD = 0.08
BORDER = 24


def load(path, w, h):
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w).astype(np.float32) / 255


def global_shift(a, b):
    """The (dx, dy) that moves `b` onto `a`, by phase correlation."""
    h, w = a.shape
    cross = np.fft.fft2(a - a.mean()) * np.conj(np.fft.fft2(b - b.mean()))
    r = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    y, x = np.unravel_index(r.argmax(), r.shape)
    return (x - w if x > w // 2 else x), (y - h if y > h // 2 else y)


def aligned_spike_rate(frames):
    rates = []
    inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    for i in range(1, len(frames) - 1):
        c = frames[i]
        a, b = (np.roll(frames[j], global_shift(c, frames[j])[::-1], axis=(0, 1)) for j in (i - 1, i + 1))
        a, b, c = a[inner], b[inner], c[inner]
        t = THRESHOLD
        rates.append((((c - a > t) & (c - b > t)) | ((a - c > t) & (b - c > t))).mean())
    return float(np.mean(rates))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    w, h = int(sys.argv[1]), int(sys.argv[2])
    for path in sys.argv[3:]:
        print(f"{path}: aligned spike rate {aligned_spike_rate(load(path, w, h)):.5f}")


if __name__ == "__main__":
    main()
