//! Issue 6: our block motion search against zoomvtools (MVTools ported to Rust).
//!
//! Reads a DEGRADED clip and its CLEAN original as raw 8-bit grey frames; for every frame pair
//! (both directions) estimates motion on the degraded frames with each method, compensates the
//! CLEAN neighbour with the vectors and scores it against the CLEAN centre, so the score is how
//! right the vectors are on damaged input, not how well the damage is reproduced. Also scores
//! the compensated degraded neighbour against the degraded centre, and times each search.
//!
//! ```text
//! motion-compare --size 640x272 --clean clean.gray --degraded degraded.gray [--name bikes]
//!                [--frames N] [--cut-threshold 0.8] [--worse-levels 4] [--repeat 3] [--csv FILE]
//!                [--zoom 0,1,..]
//! ```
//!
//! Prints one Markdown table; progress goes to stderr. See README.md.

mod field;
mod ours;
mod zoom;

use anyhow::{bail, ensure, Context, Result};
use field::{compensate, Field};
use kernels::cut::cut_score;
use kernels::deflicker::{fit_pixel_pairs, ToneCorrection};
use kernels::metrics::psnr;
use kernels::motion::{MotionField, Pyramid};
use kernels::stats::FrameStats;
use kernels::Plane;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use zoomvtools::{DctMode, MvsOutput, Subpel};

/// The zoomvtools rows: MVTools as practitioners run it (pel 1 and 2, overlap 0 and 4), with
/// MVTools' own luma-change-aware cost (`dct=2`), and two settings again with our tone map in
/// front of the search. `--zoom 0,4` picks rows by their index here.
const ZOOM_CONFIGS: [zoom::Config; 7] = [
    zoom::Config {
        pel: Subpel::Full,
        overlap: 0,
        tone: false,
        dct: DctMode::Spatial,
    },
    zoom::Config {
        pel: Subpel::Half,
        overlap: 0,
        tone: false,
        dct: DctMode::Spatial,
    },
    zoom::Config {
        pel: Subpel::Full,
        overlap: 4,
        tone: false,
        dct: DctMode::Spatial,
    },
    zoom::Config {
        pel: Subpel::Half,
        overlap: 4,
        tone: false,
        dct: DctMode::Spatial,
    },
    zoom::Config {
        pel: Subpel::Full,
        overlap: 0,
        tone: false,
        dct: DctMode::MixedSpatialDct,
    },
    zoom::Config {
        pel: Subpel::Full,
        overlap: 0,
        tone: true,
        dct: DctMode::Spatial,
    },
    zoom::Config {
        pel: Subpel::Half,
        overlap: 4,
        tone: true,
        dct: DctMode::Spatial,
    },
];

/// Side of the square tiles compared for "clearly worse".
const TILE: usize = 8;

struct Args {
    name: String,
    width: usize,
    height: usize,
    clean: PathBuf,
    degraded: PathBuf,
    frames: usize,
    cut_threshold: f32,
    worse_levels: f32,
    repeat: usize,
    csv: Option<PathBuf>,
    zoom: Vec<usize>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Args {
            name: String::from("clip"),
            width: 0,
            height: 0,
            clean: PathBuf::new(),
            degraded: PathBuf::new(),
            frames: usize::MAX,
            cut_threshold: 0.8,
            worse_levels: 4.0,
            repeat: 3,
            csv: None,
            zoom: (0..ZOOM_CONFIGS.len()).collect(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--name" => args.name = value()?,
                "--size" => {
                    let v = value()?;
                    let (w, h) = v.split_once('x').with_context(|| format!("--size {v}: want WxH"))?;
                    (args.width, args.height) = (w.parse()?, h.parse()?);
                }
                "--clean" => args.clean = value()?.into(),
                "--degraded" => args.degraded = value()?.into(),
                "--frames" => args.frames = value()?.parse()?,
                "--cut-threshold" => args.cut_threshold = value()?.parse()?,
                "--worse-levels" => args.worse_levels = value()?.parse()?,
                "--csv" => args.csv = Some(value()?.into()),
                "--repeat" => args.repeat = value()?.parse()?,
                "--zoom" => {
                    args.zoom = value()?
                        .split(',')
                        .filter(|v| !v.is_empty())
                        .map(str::parse)
                        .collect::<Result<_, _>>()?;
                    ensure!(
                        args.zoom.iter().all(|&i| i < ZOOM_CONFIGS.len()),
                        "--zoom: indices 0-{}",
                        ZOOM_CONFIGS.len() - 1
                    );
                }
                "-h" | "--help" => {
                    eprintln!(
                        "motion-compare --size WxH --clean CLEAN.gray --degraded DEGRADED.gray [--name NAME] \
                         [--frames N] [--cut-threshold 0.8] [--worse-levels 4] [--repeat 3] [--csv FILE] [--zoom 0,1,..]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other}"),
            }
        }
        ensure!(
            args.width >= 32 && args.height >= 32,
            "--size WxH is required (at least 32x32)"
        );
        ensure!(
            !args.clean.as_os_str().is_empty() && !args.degraded.as_os_str().is_empty(),
            "--clean and --degraded are required"
        );
        Ok(args)
    }
}

/// Raw grey frames of `path`, cropped to `crop` (the top-left corner).
fn load(path: &Path, (w, h): (usize, usize), crop: (usize, usize), limit: usize) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() % (w * h) == 0,
        "{}: {} bytes is not a whole number of {w}x{h} frames",
        path.display(),
        bytes.len()
    );
    Ok(bytes
        .chunks_exact(w * h)
        .take(limit)
        .map(|frame| {
            frame
                .chunks_exact(w)
                .take(crop.1)
                .flat_map(|row| &row[..crop.0])
                .copied()
                .collect()
        })
        .collect())
}

fn to_plane(bytes: &[u8], (w, h): (usize, usize)) -> Plane {
    Plane {
        width: w,
        height: h,
        data: bytes.iter().map(|&v| v as f32 / 255.0).collect(),
    }
}

/// Everything computed once per frame. The pyramid and the super frames are the methods' own
/// per-frame work (timed); the rest is the benchmark's.
struct Prepared {
    frame: usize,
    clean: Plane,
    degraded: Plane,
    degraded_bytes: Vec<u8>,
    stats: FrameStats,
    clean_stats: FrameStats,
    pyramid: Pyramid,
    /// Per zoomvtools configuration: the super frame of the degraded frame, and of the clean
    /// frame (only for MVTools' own compensation of the clean neighbour).
    supers: Vec<Vec<u8>>,
    clean_supers: Vec<Vec<u8>>,
}

/// Per row of the table.
#[derive(Default)]
struct Row {
    label: String,
    psnr_clean: Vec<f64>,
    mae_clean: Vec<f64>,
    psnr_own: Vec<f64>,
    psnr_degraded: Vec<f64>,
    mae_degraded: Vec<f64>,
    /// Tiles where this row is clearly worse than ours, where ours is clearly worse, and tiles.
    worse: [usize; 3],
    /// Estimations MVTools' default scene-change test rejects, and estimations.
    scene_changes: [usize; 2],
    estimate_ms: [Vec<f64>; 2],
    prepare_ms: [Vec<f64>; 2],
}

struct Scores {
    psnr: f64,
    mae: f64,
}

/// PSNR (the project's: peak 1, capped) and mean absolute error in 8-bit levels; fills `tiles`
/// with the error of each `TILE x TILE` tile.
fn score(out: &Plane, reference: &Plane, tiles: &mut Vec<f32>) -> Scores {
    let (w, h) = (out.width, out.height);
    let (tx, ty) = (w.div_ceil(TILE), h.div_ceil(TILE));
    tiles.clear();
    tiles.resize(tx * ty, 0.0);
    let mut total = 0.0f64;
    for y in 0..h {
        let (o, r) = (out.row(y), reference.row(y));
        let tile_row = &mut tiles[(y / TILE) * tx..][..tx];
        for (x, (a, b)) in o.iter().zip(r).enumerate() {
            let e = (a - b).abs() * 255.0;
            tile_row[x / TILE] += e;
            total += e as f64;
        }
    }
    for (i, t) in tiles.iter_mut().enumerate() {
        let (cols, rows) = (TILE.min(w - (i % tx) * TILE), TILE.min(h - (i / tx) * TILE));
        *t /= (cols * rows) as f32;
    }
    Scores {
        psnr: psnr(out, reference),
        mae: total / (w * h) as f64,
    }
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        0.5 * (v[mid - 1] + v[mid])
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// `f`'s result and its fastest wall-clock time in ms over `repeat` runs (the fastest: other
/// work on the machine only ever adds time).
fn timed<T>(repeat: usize, mut f: impl FnMut() -> T) -> (T, f64) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        out = Some(f());
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
    }
    (out.expect("ran at least once"), best)
}

struct Bench {
    size: (usize, usize),
    pools: [ThreadPool; 2],
    zooms: Vec<zoom::Zoom>,
    rows: Vec<Row>,
    tiles: [Vec<f32>; 2],
    worse_levels: f32,
    /// Timed runs per measurement (the fastest counts).
    repeat: usize,
    /// Per-estimation scores, when asked for.
    csv: Option<BufWriter<File>>,
}

/// Rows: the zero vector, ours, then the zoomvtools configurations.
const ZERO: usize = 0;
const OURS: usize = 1;
const ZOOM: usize = 2;

impl Bench {
    fn prepare(&mut self, frame: usize, clean: &[u8], degraded: &[u8], timed_run: bool) -> Result<Prepared> {
        let (clean_plane, degraded_plane) = (to_plane(clean, self.size), to_plane(degraded, self.size));
        let mut pyramid = Pyramid::default();
        for (t, pool) in self.pools.iter().enumerate() {
            let ((), ms) = pool.install(|| timed(self.repeat, || ours::prepare(&degraded_plane, &mut pyramid)));
            if timed_run {
                self.rows[OURS].prepare_ms[t].push(ms);
            }
        }
        let mut supers = Vec::new();
        let mut clean_supers = Vec::new();
        for (z, zoom) in self.zooms.iter().enumerate() {
            // zoomvtools runs on the calling thread only: one timing serves both columns.
            let (s, ms) = timed(self.repeat, || zoom.render_super(degraded));
            supers.push(s?);
            clean_supers.push(zoom.render_super(clean)?);
            if timed_run {
                for t in 0..2 {
                    self.rows[ZOOM + z].prepare_ms[t].push(ms);
                }
            }
        }
        Ok(Prepared {
            frame,
            stats: FrameStats::compute(&degraded_plane),
            clean_stats: FrameStats::compute(&clean_plane),
            clean: clean_plane,
            degraded: degraded_plane,
            degraded_bytes: degraded.to_vec(),
            pyramid,
            supers,
            clean_supers,
        })
    }

    /// zoomvtools' search from `c` to `n` with configuration `z`.
    fn zoom_search(&self, z: usize, c: &Prepared, n: &Prepared) -> Result<MvsOutput> {
        let zoom = &self.zooms[z];
        if zoom.config.tone {
            let tone = ours::rough_tone(&c.stats, &n.stats);
            let lut: [u8; 256] =
                std::array::from_fn(|i| (tone.map(i as f32 / 255.0) * 255.0 + 0.5).clamp(0.0, 255.0) as u8);
            let mapped: Vec<u8> = n.degraded_bytes.iter().map(|&v| lut[v as usize]).collect();
            zoom.analyse(&c.supers[z], &zoom.render_super(&mapped)?)
        } else {
            zoom.analyse(&c.supers[z], &n.supers[z])
        }
    }

    /// Both directions of the pair (a, b) with every method, timed, then scored.
    fn pair(&mut self, a: &Prepared, b: &Prepared, timed_run: bool) -> Result<()> {
        // Ours, one thread: each estimate alone. Two threads: the two directions at once
        // (`rayon::join`: two independent searches, one per core), each with rayon inside.
        let mut fields = [MotionField::default(), MotionField::default()];
        {
            let [ab, ba] = &mut fields;
            let ((), ms_ab) = self.pools[0].install(|| {
                timed(self.repeat, || {
                    ours::search((&a.pyramid, &a.stats), (&b.pyramid, &b.stats), ab)
                })
            });
            let ((), ms_ba) = self.pools[0].install(|| {
                timed(self.repeat, || {
                    ours::search((&b.pyramid, &b.stats), (&a.pyramid, &a.stats), ba)
                })
            });
            if timed_run {
                self.rows[OURS].estimate_ms[0].extend([ms_ab, ms_ba]);
            }
        }
        let mut joined = [MotionField::default(), MotionField::default()];
        {
            let [ab, ba] = &mut joined;
            let (_, ms_both) = self.pools[1].install(|| {
                timed(self.repeat, || {
                    rayon::join(
                        || ours::search((&a.pyramid, &a.stats), (&b.pyramid, &b.stats), ab),
                        || ours::search((&b.pyramid, &b.stats), (&a.pyramid, &a.stats), ba),
                    )
                })
            });
            if timed_run {
                self.rows[OURS].estimate_ms[1].extend([ms_both / 2.0, ms_both / 2.0]);
            }
        }
        ensure!(
            fields[0].vectors == joined[0].vectors && fields[1].vectors == joined[1].vectors,
            "our vectors differ between 1 and 2 threads"
        );
        // zoomvtools: single-threaded inside. One thread: each estimate alone; two threads: the
        // two directions at once, the same way.
        let mut zoom_vectors = Vec::new();
        for z in 0..self.zooms.len() {
            let (ab, ms_ab) = self.pools[0].install(|| timed(self.repeat, || self.zoom_search(z, a, b)));
            let (ba, ms_ba) = self.pools[0].install(|| timed(self.repeat, || self.zoom_search(z, b, a)));
            let ((ab2, ba2), ms_both) = self.pools[1].install(|| {
                timed(self.repeat, || {
                    rayon::join(|| self.zoom_search(z, a, b), || self.zoom_search(z, b, a))
                })
            });
            let (ab, ba) = (ab?, ba?);
            ensure!(
                ab.block_data == ab2?.block_data && ba.block_data == ba2?.block_data,
                "zoomvtools vectors differ between runs"
            );
            if timed_run {
                self.rows[ZOOM + z].estimate_ms[0].extend([ms_ab, ms_ba]);
                self.rows[ZOOM + z].estimate_ms[1].extend([ms_both / 2.0, ms_both / 2.0]);
            }
            zoom_vectors.push([ab, ba]);
        }
        if !timed_run {
            return Ok(());
        }
        let [ours_ab, ours_ba] = &fields;
        for (d, (c, n, ours_field)) in [(a, b, ours_ab), (b, a, ours_ba)].into_iter().enumerate() {
            let mut candidates: Vec<(Field, Option<Plane>)> = Vec::new();
            candidates.push((Field::zero(c.clean.width, c.clean.height), None));
            let mut own = Plane::new(c.clean.width, c.clean.height);
            kernels::motion::compensate(&n.clean, ours_field, ToneCorrection::IDENTITY, &mut own);
            candidates.push((ours::to_field(ours_field), Some(own)));
            for (z, zoom) in self.zooms.iter().enumerate() {
                let vectors = &zoom_vectors[z][d];
                let r = &mut self.rows[ZOOM + z];
                r.scene_changes[0] += zoom.scene_change(vectors)? as usize;
                r.scene_changes[1] += 1;
                let own = zoom.compensate(&n.clean_supers[z], vectors)?;
                candidates.push((zoom.field(vectors)?, Some(to_plane(&own, self.size))));
            }
            self.score_direction(c, n, &candidates)?;
        }
        Ok(())
    }

    fn score_direction(&mut self, c: &Prepared, n: &Prepared, candidates: &[(Field, Option<Plane>)]) -> Result<()> {
        let mut out = Plane::new(c.clean.width, c.clean.height);
        let rough = ours::rough_tone(&c.stats, &n.stats);
        let mut all_tiles = Vec::new();
        for (row, (field, own)) in candidates.iter().enumerate() {
            compensate(&n.clean, field, &mut out);
            let s = score(&out, &c.clean, &mut self.tiles[0]);
            all_tiles.push(self.tiles[0].clone());
            let r = &mut self.rows[row];
            r.psnr_clean.push(s.psnr);
            r.mae_clean.push(s.mae);
            if let Some(own) = own {
                r.psnr_own.push(psnr(own, &c.clean));
            }
            // On the damage itself: the compensated degraded neighbour, brightness-fitted to
            // the degraded centre with the restorer's pixel-pair fit (flicker is no error).
            compensate(&n.degraded, field, &mut out);
            let tone = fit_pixel_pairs(&out, &c.degraded, rough);
            out.data.iter_mut().for_each(|v| *v = tone.map(*v));
            let d = score(&out, &c.degraded, &mut self.tiles[1]);
            r.psnr_degraded.push(d.psnr);
            r.mae_degraded.push(d.mae);
            if let Some(csv) = &mut self.csv {
                let own_psnr = r.psnr_own.last().filter(|_| own.is_some());
                writeln!(
                    csv,
                    "{},{},\"{}\",{:.3},{:.3},{},{:.3},{:.3}",
                    c.frame,
                    n.frame,
                    r.label,
                    s.psnr,
                    s.mae,
                    own_psnr.map_or(String::new(), |v| format!("{v:.3}")),
                    d.psnr,
                    d.mae
                )?;
            }
        }
        let limit = self.worse_levels;
        for (row, tiles) in all_tiles.iter().enumerate() {
            if row == OURS {
                continue;
            }
            let r = &mut self.rows[row];
            for (&e, &o) in tiles.iter().zip(&all_tiles[OURS]) {
                r.worse[0] += (e > o + limit) as usize;
                r.worse[1] += (o > e + limit) as usize;
            }
            r.worse[2] += tiles.len();
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse()?;
    let full = (args.width, args.height);
    // Whole 8x8 blocks for every method (both clips used here already are).
    let size = (args.width / 8 * 8, args.height / 8 * 8);
    let clean = load(&args.clean, full, size, args.frames)?;
    let degraded = load(&args.degraded, full, size, args.frames)?;
    let frames = clean.len().min(degraded.len());
    ensure!(frames >= 3, "need at least 3 frames, have {frames}");
    let pools = [1, 2].map(|t| ThreadPoolBuilder::new().num_threads(t).build());
    let [p1, p2] = pools;
    let zooms = args
        .zoom
        .iter()
        .map(|&i| zoom::Zoom::new(size.0, size.1, frames, ZOOM_CONFIGS[i]))
        .collect::<Result<Vec<_>>>()?;
    let mut rows: Vec<Row> = Vec::new();
    rows.push(Row {
        label: "zero vector (no search)".into(),
        ..Row::default()
    });
    rows.push(Row {
        label: "ours (kernels::motion)".into(),
        ..Row::default()
    });
    for z in &zooms {
        rows.push(Row {
            label: z.config.label(),
            ..Row::default()
        });
    }
    let mut bench = Bench {
        size,
        pools: [p1?, p2?],
        zooms,
        rows,
        tiles: [Vec::new(), Vec::new()],
        worse_levels: args.worse_levels,
        repeat: args.repeat,
        csv: None,
    };

    // Warm-up (untimed, unscored): the first pair once through every method and pool.
    {
        let a = bench.prepare(0, &clean[0], &degraded[0], false)?;
        let b = bench.prepare(1, &clean[1], &degraded[1], false)?;
        bench.pair(&a, &b, false)?;
    }

    if let Some(path) = &args.csv {
        let mut csv = BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
        writeln!(
            csv,
            "centre,neighbour,method,clean_psnr,clean_mae,clean_psnr_own_compensation,degraded_psnr,degraded_mae"
        )?;
        bench.csv = Some(csv);
    }
    let mut cuts = Vec::new();
    let mut prev = bench.prepare(0, &clean[0], &degraded[0], true)?;
    for t in 1..frames {
        let next = bench.prepare(t, &clean[t], &degraded[t], true)?;
        let cut = cut_score(&prev.clean_stats, &next.clean_stats);
        if cut > args.cut_threshold {
            cuts.push(format!("{}|{} ({cut:.2})", t - 1, t));
        } else {
            bench.pair(&prev, &next, true)?;
        }
        if t % 10 == 0 || t == frames - 1 {
            eprintln!("{}: pair {t} of {}", args.name, frames - 1);
        }
        prev = next;
    }

    let pairs = frames - 1 - cuts.len();
    println!(
        "### {} ({}x{}, {} frames: {} frame pairs scored in both directions = {} estimations per method; {} across cuts left out{})",
        args.name,
        size.0,
        size.1,
        frames,
        pairs,
        2 * pairs,
        match cuts.len() {
            1 => "1 pair".to_string(),
            n => format!("{n} pairs"),
        },
        if cuts.is_empty() { String::new() } else { format!(": {}", cuts.join(", ")) }
    );
    println!();
    println!(
        "| method | clean PSNR dB | clean MAE | clean PSNR, method's own compensation dB | degraded PSNR dB | degraded MAE | \
         blocks clearly worse than ours | blocks where ours is clearly worse | ms/estimation 1 thread | \
         ms/estimation 2 threads | ms/frame prep 1 / 2 threads | ms/frame total 1 / 2 threads | MVTools scene-change test fires |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in bench.rows.iter().enumerate() {
        let own = if r.psnr_own.is_empty() {
            "—".into()
        } else {
            format!("{:.2}", mean(&r.psnr_own))
        };
        let worse = |k: usize| {
            if i == OURS {
                "—".into()
            } else {
                format!("{:.1}%", 100.0 * r.worse[k] as f64 / r.worse[2].max(1) as f64)
            }
        };
        let scd = if i >= ZOOM {
            format!(
                "{:.0}%",
                100.0 * r.scene_changes[0] as f64 / r.scene_changes[1].max(1) as f64
            )
        } else {
            "—".to_string()
        };
        let (times, prep, total) = if i == ZERO {
            ("— | —".to_string(), "—".to_string(), "—".to_string())
        } else {
            let est = [median(&r.estimate_ms[0]), median(&r.estimate_ms[1])];
            let prep = [median(&r.prepare_ms[0]), median(&r.prepare_ms[1])];
            (
                format!("{:.2} | {:.2}", est[0], est[1]),
                format!("{:.2} / {:.2}", prep[0], prep[1]),
                format!("{:.1} / {:.1}", prep[0] + 2.0 * est[0], prep[1] + 2.0 * est[1]),
            )
        };
        println!(
            "| {} | {:.2} | {:.2} | {own} | {:.2} | {:.2} | {} | {} | {times} | {prep} | {total} | {scd} |",
            r.label,
            mean(&r.psnr_clean),
            mean(&r.mae_clean),
            mean(&r.psnr_degraded),
            mean(&r.mae_degraded),
            worse(0),
            worse(1),
        );
    }
    println!();
    if let Some(csv) = &mut bench.csv {
        csv.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured 8-bit frame moved by `shift` (content at x goes to x + shift).
    fn scene(w: usize, h: usize, shift: (i32, i32)) -> Vec<u8> {
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let (sx, sy) = (x as f32 - shift.0 as f32, y as f32 - shift.1 as f32);
                let v = 0.5 + 0.2 * (sx * 0.21).sin() * (sy * 0.17).cos() + 0.15 * (sx * 0.05 + sy * 0.09).sin();
                out.push((v * 255.0).clamp(0.0, 255.0) as u8);
            }
        }
        out
    }

    fn interior_share(field: &Field, want: (i32, i32)) -> f64 {
        let mut hits = 0;
        let mut all = 0;
        for by in 3..field.blocks_y - 3 {
            for bx in 3..field.blocks_x - 3 {
                all += 1;
                hits += (field.vectors[by * field.blocks_x + bx] == want) as usize;
            }
        }
        hits as f64 / all as f64
    }

    #[test]
    fn both_searches_find_a_global_shift_with_the_same_sign() {
        let (w, h) = (192, 128);
        let shift = (5, -3);
        let (c, n) = (scene(w, h, (0, 0)), scene(w, h, shift));
        let (cp, np) = (to_plane(&c, (w, h)), to_plane(&n, (w, h)));
        let (mut pc, mut pn) = (Pyramid::default(), Pyramid::default());
        ours::prepare(&cp, &mut pc);
        ours::prepare(&np, &mut pn);
        let (sc, sn) = (FrameStats::compute(&cp), FrameStats::compute(&np));
        let mut mf = MotionField::default();
        ours::search((&pc, &sc), (&pn, &sn), &mut mf);
        let ours_field = ours::to_field(&mf);
        assert!(
            interior_share(&ours_field, shift) > 0.9,
            "{:?}",
            &ours_field.vectors[ours_field.blocks_x * 6..][..ours_field.blocks_x]
        );

        for config in ZOOM_CONFIGS {
            let z = zoom::Zoom::new(w, h, 2, config).unwrap();
            let vectors = z
                .analyse(&z.render_super(&c).unwrap(), &z.render_super(&n).unwrap())
                .unwrap();
            let field = z.field(&vectors).unwrap();
            let pel = field.pel;
            assert!(
                interior_share(&field, (shift.0 * pel, shift.1 * pel)) > 0.9,
                "{}",
                config.label()
            );
            // MVTools' own compensation and the common one agree on whole-pixel moves.
            let own = to_plane(&z.compensate(&z.render_super(&n).unwrap(), &vectors).unwrap(), (w, h));
            let mut common = Plane::new(w, h);
            compensate(&np, &field, &mut common);
            let mut tiles = Vec::new();
            assert!(score(&own, &cp, &mut tiles).mae < 2.0, "{}", config.label());
            assert!(score(&common, &cp, &mut tiles).mae < 2.0, "{}", config.label());
        }
    }

    #[test]
    fn the_score_is_zero_for_identical_frames_and_counts_levels() {
        let a = Plane::filled(16, 8, 0.5);
        let mut b = a.clone();
        let mut tiles = Vec::new();
        assert_eq!(score(&a, &b, &mut tiles).mae, 0.0);
        for y in 0..8 {
            b.row_mut(y)[..8].iter_mut().for_each(|v| *v += 2.0 / 255.0);
        }
        let s = score(&b, &a, &mut tiles);
        assert!((s.mae - 1.0).abs() < 1e-4, "{}", s.mae);
        assert!((tiles[0] - 2.0).abs() < 1e-4 && tiles[1] == 0.0);
    }

    #[test]
    fn the_median_of_an_even_count_is_the_middle_mean() {
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
    }
}
