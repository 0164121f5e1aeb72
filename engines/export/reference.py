#!/usr/bin/env python3
"""Reference implementation of the diffusion prior's per-frame algorithm, in numpy + onnxruntime.

It is the specification the Rust `engines` crate is tested against: `python reference.py --write FIXTURES_DIR`
runs it on the committed tiny bundles and writes inputs, every intermediate step and the expected outputs to
`FIXTURES_DIR/reference/*.safetensors` (parameters in the file's metadata). Needs numpy, onnxruntime, safetensors;
not torch.

Frames here are planar RGB float32 arrays [3, H, W] in [0, 1]. Every formula below has a twin in engines/src, with
the same operation order, so that fp32 results agree to rounding.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import deque
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)

# ----------------------------------------------------------------------------------------------- seeded noise


def splitmix(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, stream: int) -> np.uint64:
    s = splitmix(np.array([stream ^ 0xD1B54A32D192ED03], dtype=np.uint64))
    return splitmix(np.array([seed], dtype=np.uint64) ^ s)[0]


def counter_bits(key: np.uint64, start: int, n: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return splitmix(np.uint64(key) + np.arange(start, start + n, dtype=np.uint64))


def unit_f64(bits: np.ndarray) -> np.ndarray:
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def gaussian(seed: int, stream: int, n: int) -> np.ndarray:
    """n standard normal float32 values, Box-Muller over a counter-based SplitMix64 stream."""
    bits = counter_bits(stream_key(seed, stream), 0, 2 * n)
    u1 = 1.0 - unit_f64(bits[0::2])
    u2 = unit_f64(bits[1::2])
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)).astype(np.float32)


def uniform(seed: int, stream: int, index: int) -> float:
    return float(unit_f64(counter_bits(stream_key(seed, stream), index, 1))[0])


def noise_stream(tile: int, stage: int) -> int:
    return (1 << 32) | (tile << 8) | stage


SSF_STREAM = 2 << 32

# ----------------------------------------------------------------------------------------------- scheduler


def select_timesteps(allowed: list[int], num_train: int, strength: float, k: int) -> list[int]:
    if not allowed:
        allowed = list(range(num_train - 1, -1, -1))
    target = float(np.float32(strength)) * (num_train - 1)
    i0 = min(range(len(allowed)), key=lambda i: (abs(allowed[i] - target), i))
    n = len(allowed)
    return [allowed[i0 + (j * (n - i0)) // k] for j in range(k)]


def coeffs(ac: np.ndarray, t: int) -> tuple[np.float32, np.float32]:
    a = float(ac[t])
    return np.float32(math.sqrt(a)), np.float32(math.sqrt(1.0 - a))


def boundary(sched: dict, t: int) -> tuple[np.float32, np.float32]:
    if sched["boundary"] == "none":
        return np.float32(0.0), np.float32(1.0)
    s = sched["timestep_scaling"] * t
    sd2 = sched["sigma_data"] ** 2
    c_skip = sd2 / (s * s + sd2)
    c_out = s / math.sqrt(s * s + sd2)
    return np.float32(c_skip), np.float32(c_out)


def denoise(sched, ac, t, zt, pred):
    a, b = coeffs(ac, t)
    kind = sched["prediction_type"]
    if kind == "epsilon":
        x0 = (zt - b * pred) / a
    elif kind == "v_prediction":
        x0 = a * zt - b * pred
    else:
        x0 = pred
    c_skip, c_out = boundary(sched, t)
    return (c_out * x0 + c_skip * zt).astype(np.float32)


# ----------------------------------------------------------------------------------------------- images


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    n = -(-(size - overlap) // (tile - overlap))
    return [(i * (size - tile)) // (n - 1) for i in range(n)]


def ramp(length: int, tile: int, lo_interior: bool, hi_interior: bool, overlap: int) -> np.ndarray:
    w = np.ones(length, np.float32)
    for d in range(length):
        v = np.float32(1.0)
        if lo_interior and d < overlap:
            v = min(v, np.float32(d + 1) / np.float32(overlap + 1))
        e = tile - 1 - d
        if hi_interior and e < overlap:
            v = min(v, np.float32(e + 1) / np.float32(overlap + 1))
        w[d] = v
    return w


class Grid:
    def __init__(self, width, height, tile_w, tile_h, overlap):
        self.width, self.height, self.tw, self.th = width, height, tile_w, tile_h
        ox, oy = min(overlap, tile_w - 1), min(overlap, tile_h - 1)
        xs, ys = tile_starts(width, tile_w, ox), tile_starts(height, tile_h, oy)
        self.tiles = [(x, y) for y in ys for x in xs]
        self.weights = []
        for x, y in self.tiles:
            w = min(tile_w, width - x)
            h = min(tile_h, height - y)
            wx = ramp(w, tile_w, x > 0, x + tile_w < width, ox)
            wy = ramp(h, tile_h, y > 0, y + tile_h < height, oy)
            self.weights.append((wy[:, None] * wx[None, :]).astype(np.float32))

    def extract(self, img: np.ndarray) -> np.ndarray:
        out = np.empty((len(self.tiles), img.shape[0], self.th, self.tw), np.float32)
        for i, (x, y) in enumerate(self.tiles):
            yi = np.clip(np.arange(y, y + self.th), 0, self.height - 1)
            xi = np.clip(np.arange(x, x + self.tw), 0, self.width - 1)
            out[i] = img[:, yi][:, :, xi]
        return out

    def blend(self, tiles: np.ndarray) -> np.ndarray:
        c = tiles.shape[1]
        acc = np.zeros((c, self.height, self.width), np.float32)
        wsum = np.zeros((self.height, self.width), np.float32)
        for i, (x, y) in enumerate(self.tiles):
            w = self.weights[i]
            h, ww = w.shape
            acc[:, y:y + h, x:x + ww] += w[None] * tiles[i, :, :h, :ww]
            wsum[y:y + h, x:x + ww] += w
        return (acc / wsum[None]).astype(np.float32)


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3.0 * sigma))
    k = np.array([math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(-r, r + 1)], np.float64)
    return (k / k.sum()).astype(np.float32)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian with replicated borders, accumulated tap by tap in float32 (as in Rust)."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    c, h, w = img.shape
    p = np.pad(img, ((0, 0), (0, 0), (r, r)), mode="edge")
    tmp = np.zeros_like(img)
    for i in range(2 * r + 1):
        tmp = tmp + k[i] * p[:, :, i:i + w]
    p = np.pad(tmp, ((0, 0), (r, r), (0, 0)), mode="edge")
    out = np.zeros_like(img)
    for i in range(2 * r + 1):
        out = out + k[i] * p[:, i:i + h, :]
    return out.astype(np.float32)


def colour_fix(restored: np.ndarray, reference: np.ndarray, sigma: float) -> np.ndarray:
    """Keeps the restored high frequencies, takes the low frequencies (colour, tone) from the reference."""
    if sigma <= 0:
        return np.clip(restored, 0.0, 1.0)
    return np.clip((restored - blur(restored, sigma)) + blur(reference, sigma), 0.0, 1.0).astype(np.float32)


def reuse(last_out: np.ndarray, last_in: np.ndarray, cur: np.ndarray, sigma: float) -> np.ndarray:
    """A skipped frame: the last restored frame, moved by the change of the input's low frequencies since then, so
    a still scene is reused as it was and fades and small changes of tone still show."""
    if sigma <= 0:
        return np.clip(last_out, 0.0, 1.0)
    return np.clip(last_out + blur((cur - last_in).astype(np.float32), sigma), 0.0, 1.0).astype(np.float32)


def ssf_thumbnail(img: np.ndarray) -> np.ndarray:
    c, h, w = img.shape
    f = max(1, -(-max(w, h) // 64))
    tw, th = -(-w // f), -(-h // f)
    out = np.zeros((c, th, tw), np.float32)
    for ty in range(th):
        for tx in range(tw):
            block = img[:, ty * f:min(h, ty * f + f), tx * f:min(w, tx * f + f)]
            s = np.zeros(c, np.float32)
            for yy in range(block.shape[1]):
                for xx in range(block.shape[2]):
                    s = s + (np.float32(2.0) * block[:, yy, xx] - np.float32(1.0))
            out[:, ty, tx] = s / np.float32(block.shape[1] * block.shape[2])
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = math.sqrt(float(a @ a)), math.sqrt(float(b @ b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(a @ b) / (na * nb)


def latent_change(ref: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Mean |change| over channels, then a 3x3 box (replicated border)."""
    c, h, w = ref.shape
    d = np.zeros((h, w), np.float32)
    for ch in range(c):
        d = d + np.abs(ref[ch] - prev[ch])
    d = d / np.float32(c)
    p = np.pad(d, 1, mode="edge")
    s = np.zeros((h, w), np.float32)
    for dy in range(3):
        for dx in range(3):
            s = s + p[dy:dy + h, dx:dx + w]
    return (s / np.float32(9.0)).astype(np.float32)


def cache_weight(change: np.ndarray, blend: float, tolerance: float) -> np.ndarray:
    x = change.astype(np.float64) / float(np.float32(tolerance))
    return (float(np.float32(blend)) * np.exp(-(x * x))).astype(np.float32)


# ----------------------------------------------------------------------------------------------- the prior


class Prior:
    def __init__(self, bundle: Path, *, strength=0.5, steps=1, seed=0, overlap=16, sigma=4.0, ssf_threshold=0.98,
                 ssf_max_skip=0, temporal_blend=0.0, cache_tolerance=0.5):
        import onnxruntime as ort
        from safetensors.numpy import load_file

        self.m = tomllib.loads((bundle / "manifest.toml").read_text())
        self.kind = self.m["kind"]
        assert self.kind in ("turbo", "lcm"), "the reference covers the diffusion kinds"
        files, t = self.m["files"], self.m["tensors"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1

        def sess(name):
            return ort.InferenceSession(str(bundle / files[name]), opts, providers=["CPUExecutionProvider"])

        self.enc, self.dec, self.unet = sess("vae_encoder"), sess("vae_decoder"), sess("unet")
        self.t = t
        self.embeds = load_file(str(bundle / files["prompt_embeds"]))[t["prompt_embeds"]].astype(np.float32)
        self.sched = self.m["scheduler"]
        self.ac = np.array(self.sched["alphas_cumprod"], np.float64)
        mdl = self.m["model"]
        self.tw, self.th, self.scale = mdl["width"], mdl["height"], mdl["vae_scale"]
        self.static_batch = mdl["batch"]
        self.k = 1 if self.kind == "turbo" else steps
        self.timesteps = select_timesteps(self.sched["timesteps"], self.sched["num_train_timesteps"], strength,
                                          self.k)
        self.seed, self.overlap, self.sigma = seed, overlap, sigma
        self.ssf_threshold, self.ssf_max_skip = ssf_threshold, ssf_max_skip
        self.blend, self.tol = temporal_blend, cache_tolerance
        self.frame_index = 0
        self.ssf_ref = None
        self.ssf_run = 0
        self.cache = None  # (ref latents, output latents)
        self.inflight = []  # newest first: dicts with stage, latents, record
        self.pending = deque()
        self.last_out = None
        self.last_in = None
        self.outputs = []  # (rgb, skipped)
        self.trace = {}

    # model calls, padded to a static batch when the bundle has one
    def run(self, sess, feeds: dict, out_name: str) -> np.ndarray:
        n = next(iter(feeds.values())).shape[0]
        b = self.static_batch
        if b == 0:
            return sess.run([out_name], feeds)[0]
        outs = []
        for s in range(0, n, b):
            chunk = {}
            for k, v in feeds.items():
                part = v[s:s + b]
                if part.shape[0] < b:
                    part = np.concatenate([part, np.zeros((b - part.shape[0],) + part.shape[1:], part.dtype)])
                chunk[k] = part
            outs.append(sess.run([out_name], chunk)[0][:min(b, n - s)])
        return np.concatenate(outs)

    def encode(self, tiles):
        return self.run(self.enc, {self.t["encoder_input"]: (tiles * np.float32(2.0) - np.float32(1.0))},
                        self.t["encoder_output"])

    def decode(self, lat):
        y = self.run(self.dec, {self.t["decoder_input"]: lat}, self.t["decoder_output"])
        return ((y + np.float32(1.0)) * np.float32(0.5)).astype(np.float32)

    def call_unet(self, lat, ts):
        n = lat.shape[0]
        ehs = np.repeat(self.embeds, n, axis=0)
        return self.run(self.unet, {self.t["unet_sample"]: lat, self.t["unet_timestep"]: np.array(ts, np.float32),
                                    self.t["unet_encoder_hidden_states"]: ehs}, self.t["unet_output"])

    def noise(self, n_tiles, stage):
        c = self.m["model"]["latent_channels"]
        h, w = self.th // self.scale, self.tw // self.scale
        return np.stack([gaussian(self.seed, noise_stream(i, stage), c * h * w).reshape(c, h, w)
                         for i in range(n_tiles)])

    def push(self, rgb: np.ndarray, starts_shot: bool):
        idx = self.frame_index
        self.frame_index += 1
        thumb = ssf_thumbnail(rgb)
        skip = False
        if starts_shot or self.ssf_ref is None or self.ssf_ref.shape != thumb.shape:
            self.ssf_ref, self.ssf_run = None, 0
        elif self.ssf_max_skip > 0 and self.ssf_run < self.ssf_max_skip:
            sim = cosine(thumb, self.ssf_ref)
            p = max(0.0, 1.0 - (1.0 - sim) / (1.0 - self.ssf_threshold))
            skip = uniform(self.seed, SSF_STREAM, idx) < p
        rec = {"rgb": rgb, "skip": skip, "out": None, "starts_shot": starts_shot}
        self.pending.append(rec)
        if skip:
            self.ssf_run += 1
        else:
            self.ssf_run = 0
            self.ssf_ref = thumb
            grid = Grid(rgb.shape[2], rgb.shape[1], self.tw, self.th, self.overlap)
            tiles = grid.extract(rgb)
            z0 = self.encode(tiles)
            a, b = coeffs(self.ac, self.timesteps[0])
            eps = self.noise(len(grid.tiles), 0)
            zt = (a * z0 + b * eps).astype(np.float32)
            rec.update(grid=grid, tiles=tiles, z0=z0)
            if idx == 0:
                self.trace.update(tiles_in=tiles, z0=z0, noise=eps, zt=zt)
            self.inflight.insert(0, {"stage": 0, "lat": zt, "rec": rec})
            self.step()
        self.resolve()

    def step(self):
        lat = np.concatenate([e["lat"] for e in self.inflight])
        ts = []
        for e in self.inflight:
            ts += [float(self.timesteps[e["stage"]])] * e["lat"].shape[0]
        pred = self.call_unet(lat, ts)
        first = "unet_out" not in self.trace
        if first:
            self.trace["unet_out"] = pred
        keep = []
        off = 0
        for e in self.inflight:
            n = e["lat"].shape[0]
            t = self.timesteps[e["stage"]]
            den = denoise(self.sched, self.ac, t, e["lat"], pred[off:off + n])
            off += n
            if e["stage"] == self.k - 1:
                self.finish(e["rec"], den, first)
            else:
                a, b = coeffs(self.ac, self.timesteps[e["stage"] + 1])
                e["lat"] = (a * den + b * self.noise(n, e["stage"] + 1)).astype(np.float32)
                e["stage"] += 1
                keep.append(e)
        self.inflight = keep

    def finish(self, rec, den, first):
        z0 = rec["z0"]
        if rec["starts_shot"] or self.cache is None or self.cache[0].shape != z0.shape:
            self.cache = None
        if self.blend > 0 and self.cache is not None:
            out = np.empty_like(den)
            for i in range(den.shape[0]):
                w = cache_weight(latent_change(z0[i], self.cache[0][i]), self.blend, self.tol)
                out[i] = w[None] * self.cache[1][i] + (np.float32(1.0) - w)[None] * den[i]
            den = out.astype(np.float32)
        self.cache = (z0, den)
        dec = self.decode(den)
        fixed = np.stack([colour_fix(dec[i], rec["tiles"][i], self.sigma) for i in range(dec.shape[0])])
        rec["out"] = rec["grid"].blend(fixed)
        if "den" not in self.trace:
            self.trace.update(den=den, decoded=dec, fixed=fixed, frame_out=rec["out"])

    def resolve(self):
        while self.pending:
            rec = self.pending[0]
            if rec["skip"]:
                rec["out"] = reuse(self.last_out, self.last_in, rec["rgb"], self.sigma)
            elif rec["out"] is None:
                return
            self.pending.popleft()
            self.last_out, self.last_in = rec["out"], rec["rgb"]
            self.outputs.append((rec["out"], rec["skip"]))

    def drain(self):
        while self.inflight:
            self.step()
            self.resolve()


# ----------------------------------------------------------------------------------------------- fixtures


def test_image(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin((x + y) / 7.0)])
    for _ in range(5):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, 15)
        col = rng.uniform(0, 1, 3).astype(np.float32)
        m = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
        img[:, m] = col[:, None]
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def sequence(w, h):
    base = test_image(w, h, 1)
    rng = np.random.default_rng(5)
    other = test_image(w, h, 2)
    frames = [
        (base, True),
        (np.clip(base + rng.normal(0, 0.002, base.shape), 0, 1), False),  # near-static: a skip candidate
        (np.clip(base + rng.normal(0, 0.002, base.shape), 0, 1), False),
        (np.clip(np.roll(base, 2, axis=2) * 1.05, 0, 1), False),  # small motion and a fade
        (other, True),  # a cut
        (np.clip(other + rng.normal(0, 0.002, other.shape), 0, 1), False),
    ]
    return [(f.astype(np.float32), s) for f, s in frames]


def write(fixtures: Path) -> None:
    from safetensors.numpy import save_file

    out_dir = fixtures / "reference"
    out_dir.mkdir(parents=True, exist_ok=True)
    w, h = 99, 71

    # 1. tiny turbo, one frame, every step.
    params = dict(strength=0.5, seed=7, overlap=16, sigma=4.0)
    p = Prior(fixtures / "tiny-turbo", **params)
    frame = test_image(w, h, 1)
    p.push(frame, True)
    assert len(p.outputs) == 1
    tensors = {"frame_in": frame, **{k: np.ascontiguousarray(v) for k, v in p.trace.items() if k != "tiles_in"}}
    meta = {k: str(v) for k, v in params.items()}
    meta["timesteps"] = ",".join(str(t) for t in p.timesteps)
    save_file(tensors, str(out_dir / "turbo_frame.safetensors"), metadata=meta)
    print("turbo_frame:", {k: v.shape for k, v in tensors.items()}, "timesteps", p.timesteps)

    # 2. tiny turbo, a sequence with the similarity filter and the latent cache.
    params = dict(strength=0.5, seed=7, overlap=16, sigma=4.0, ssf_threshold=0.95, ssf_max_skip=1,
                  temporal_blend=0.6, cache_tolerance=0.5)
    p = Prior(fixtures / "tiny-turbo", **params)
    seq = sequence(77, 67)
    for f, s in seq:
        p.push(f, s)
    p.drain()
    assert len(p.outputs) == len(seq)
    skipped = [float(s) for _, s in p.outputs]
    print("turbo_sequence: skipped", skipped)
    save_file({"frames_in": np.stack([f for f, _ in seq]),
               "starts_shot": np.array([float(s) for _, s in seq], np.float32),
               "skipped": np.array(skipped, np.float32),
               "frames_out": np.stack([o for o, _ in p.outputs])},
              str(out_dir / "turbo_sequence.safetensors"), metadata={k: str(v) for k, v in params.items()})

    # 3. tiny LCM, a stream batch of 3 steps: latency 2, drained at the end (same input as 2).
    params = dict(strength=1.0, steps=3, seed=11, overlap=16, sigma=4.0, temporal_blend=0.5, cache_tolerance=0.5)
    p = Prior(fixtures / "tiny-lcm", **params)
    counts = []
    for f, s in seq:
        p.push(f, s)
        counts.append(len(p.outputs))
    p.drain()
    assert len(p.outputs) == len(seq)
    print("lcm_stream: outputs after each push", counts, "timesteps", p.timesteps)
    meta = {k: str(v) for k, v in params.items()}
    meta["timesteps"] = ",".join(str(t) for t in p.timesteps)
    save_file({"outputs_after_push": np.array(counts, np.float32),
               "frames_out": np.stack([o for o, _ in p.outputs])},
              str(out_dir / "lcm_stream.safetensors"), metadata=meta)

    # 4. seeded noise and uniforms, so the generator itself is pinned.
    save_file({"gaussian_s7_t0": gaussian(7, noise_stream(0, 0), 1000),
               "gaussian_s123_t3_2": gaussian(123, noise_stream(3, 2), 1000),
               "uniform_s7_ssf": np.array([uniform(7, SSF_STREAM, i) for i in range(64)], np.float64)},
              str(out_dir / "noise.safetensors"))
    print(f"wrote {out_dir}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", type=Path, metavar="FIXTURES_DIR", required=True,
                    help="folder holding tiny-turbo/ and tiny-lcm/; writes reference/ inside it")
    args = ap.parse_args(argv)
    write(args.write)


if __name__ == "__main__":
    sys.exit(main())
