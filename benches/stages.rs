//! Per-stage cost of the classic path at 720p and 1080p, GRAY8 and I420: unpack, analyse
//! (statistics + cut detection), deflicker, motion estimation (one neighbour), pack, and one
//! whole restorer step.
//! `cargo bench -p oldfilm-benches --bench stages`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::deflicker::{Deflicker, DeflickerParams, ToneCorrection};
use kernels::motion::{estimate, MotionField, Pyramid};
use kernels::restorer::{RestoreParams, Restorer};
use kernels::stats::FrameStats;
use kernels::{PixelFormat, Plane, WorkFrame};
use oldfilm_benches::{packed, textured, SIZES};

const FORMATS: [PixelFormat; 2] = [PixelFormat::Gray8, PixelFormat::I420];

fn stages(c: &mut Criterion) {
    let mut group = c.benchmark_group("stage");
    group.sample_size(20);
    for format in FORMATS {
        for (label, w, h) in SIZES {
            let id = |stage: &str| BenchmarkId::new(stage, format!("{}-{label}", format.caps_name()));
            group.throughput(Throughput::Elements(1));
            let image = packed(format, w, h, 1);
            let mut frame = WorkFrame::new(format.geometry(w, h));
            group.bench_function(id("unpack"), |b| {
                b.iter(|| kernels::unpack(format, w, h, &image.plane_refs(), &mut frame).unwrap())
            });
            let mut out = image.clone();
            group.bench_function(id("pack"), |b| {
                b.iter(|| kernels::pack(format, &frame, &mut out.plane_muts()).unwrap())
            });
            group.bench_function(id("analyse"), |b| b.iter(|| FrameStats::compute(&frame.luma)));
            let stats = FrameStats::compute(&frame.luma);
            let deflicker = Deflicker::new();
            let params = DeflickerParams::default();
            let mut target = frame.clone();
            group.bench_function(id("deflicker"), |b| {
                b.iter(|| {
                    let c = deflicker.correction(&params, &stats.quantiles, &[stats.quantiles; 2]);
                    target.copy_from(&frame);
                    kernels::deflicker::ToneCorrection {
                        gain: c.gain * 1.01,
                        ..c
                    }
                    .apply(&mut target.luma);
                })
            });
            if format == PixelFormat::Gray8 {
                motion_bench(&mut group, id("motion"), &frame.luma);
            }
            group.bench_function(id("restorer-step"), |b| {
                let mut restorer: Restorer<u32> = Restorer::new(frame.geometry, 2, 2);
                let params = RestoreParams::default();
                let mut pool: Vec<Box<WorkFrame>> = (0..8).map(|i| Box::new(textured(format, w, h, i))).collect();
                let mut output = WorkFrame::new(frame.geometry);
                b.iter(|| {
                    let input = pool.pop().expect("pool refilled from evictions");
                    restorer.push(input, 0, false, &params);
                    restorer.restore_next(&params, Some(&mut output), false);
                    pool.extend(restorer.take_evicted());
                })
            });
        }
    }
    group.finish();
}

/// Motion from a frame to a copy of it moved by (3, 2) with a slight gain change: the
/// estimator's pyramid build and search, as the restorer runs it once per neighbour.
fn motion_bench(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    id: BenchmarkId,
    luma: &Plane,
) {
    let mut moved = Plane::new(luma.width, luma.height);
    for y in 0..luma.height {
        for x in 0..luma.width {
            moved.set(x, y, 0.9 * luma.get_clamped(x as isize - 3, y as isize - 2));
        }
    }
    let (mut pc, mut pn) = (Pyramid::default(), Pyramid::default());
    pc.build(luma);
    let tone = ToneCorrection { gain: 1.1, offset: 0.0 };
    let mut field = MotionField::default();
    group.bench_function(id, |b| {
        b.iter(|| {
            pn.build(&moved);
            estimate(&pc, &pn, tone, &mut field);
        })
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
