//! Per-stage cost of the classic path at 720p and 1080p, GRAY8 and I420: unpack, analyse
//! (statistics + cut detection), deflicker, pack, and one whole restorer step.
//! `cargo bench -p oldfilm-benches --bench stages`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kernels::deflicker::{Deflicker, DeflickerParams};
use kernels::restorer::{RestoreParams, Restorer};
use kernels::stats::FrameStats;
use kernels::{PixelFormat, WorkFrame};
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

criterion_group!(benches, stages);
criterion_main!(benches);
