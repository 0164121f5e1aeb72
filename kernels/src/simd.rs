//! Wider vector instructions for the hot pixel loops, chosen at run time.
//!
//! The crate is built for baseline x86-64 (SSE2: four `f32` lanes) so that it runs on any
//! x86-64 machine. Where the CPU has AVX2, the loops declared with [`avx2_twin!`] run a copy
//! compiled for it (eight lanes). The maths is the same (Rust never fuses a multiply and an
//! add on its own), so the results are bit for bit those of the baseline copy; the tests of
//! each stage run whichever copy the machine picks, and `simd::tests` compares the two.

use std::sync::OnceLock;

/// Whether the AVX2 copies run: the CPU has AVX2 and `OLDFILM_NO_AVX2` is not set (for
/// benchmarking the baseline copy on the same machine).
pub fn avx2() -> bool {
    static AVX2: OnceLock<bool> = OnceLock::new();
    #[cfg(test)]
    if tests::FORCE_BASELINE.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    *AVX2.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("OLDFILM_NO_AVX2").is_none() && std::arch::is_x86_feature_detected!("avx2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Defines `fn NAME(args)` whose body is compiled twice, as built and with AVX2, and runs the
/// AVX2 copy when [`avx2`] says so. Everything the body calls must be `#[inline]` (slice
/// iterators and arithmetic are) to be compiled into the AVX2 copy too.
macro_rules! avx2_twin {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $crate::simd::avx2_twin! { $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn baseline($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn wide($($arg: $ty),*) -> $ret {
                baseline($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::avx2() {
                // SAFETY: the CPU has AVX2 (checked at run time by `avx2`).
                return unsafe { wide($($arg),*) };
            }
            baseline($($arg),*)
        }
    };
}
pub(crate) use avx2_twin;

#[cfg(test)]
pub(crate) mod tests {
    use crate::blotch::{BlotchParams, BlotchRemover, Neighbour};
    use crate::deflicker::{GainField, ToneCorrection};
    use crate::grain::{GrainFilter, GrainParams};
    use crate::motion::{compensate, estimate, MotionField, Pyramid};
    use crate::noise::NoiseProfile;
    use crate::rng::Rng;
    use crate::Plane;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Makes [`super::avx2`] answer false (the other tests give the same results either way,
    /// which is what this module checks, so flipping it under them is harmless).
    pub(crate) static FORCE_BASELINE: AtomicBool = AtomicBool::new(false);

    fn textured(w: usize, h: usize, seed: u64) -> Plane {
        let mut rng = Rng::new(seed);
        let mut p = Plane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let base = 0.5 + 0.3 * (x as f32 * 0.11).sin() * (y as f32 * 0.07).cos();
                p.set(x, y, (base + 0.04 * (rng.next_f32() - 0.5)).clamp(0.0, 1.0));
            }
        }
        // A few dark specks for the blotch stage.
        for k in 0..6 {
            let (cx, cy) = (10 + 17 * k, 9 + 11 * k);
            for y in cy..cy + 3 {
                for x in cx..cx + 4 {
                    p.set(x % w, y % h, 0.05);
                }
            }
        }
        p
    }

    /// Every stage that has an AVX2 copy, run on the same frames; returns all the outputs.
    fn stages() -> Vec<Vec<f32>> {
        let (w, h) = (131, 77);
        let (prev, centre, next) = (textured(w, h, 1), textured(w, h, 2), textured(w, h, 3));
        let pyramid = |p: &Plane| {
            let mut py = Pyramid::default();
            py.build(p);
            py
        };
        let (pp, pc, pn) = (pyramid(&prev), pyramid(&centre), pyramid(&next));
        let tone = ToneCorrection {
            gain: 1.03,
            offset: -0.01,
        };
        let (mut fa, mut fb) = (MotionField::default(), MotionField::default());
        estimate(&pc, &pp, tone, &mut fa);
        estimate(&pc, &pn, tone, &mut fb);
        let (mut ca, mut cb) = (Plane::new(w, h), Plane::new(w, h));
        compensate(&prev, &fa, tone, &mut ca);
        compensate(&next, &fb, tone, &mut cb);
        let view = |compensated, raw, field| Neighbour {
            compensated,
            raw,
            field,
            tone,
        };
        let (a, b) = (view(&ca, &prev, &fa), view(&cb, &next, &fb));
        let mut cleaned = Plane::new(w, h);
        BlotchRemover::new().process(&BlotchParams { strength: 1.0 }, &centre, &a, &b, &mut cleaned);
        let mut grained = centre.clone();
        GrainFilter::new().process(
            &GrainParams {
                strength: 0.8,
                radius: 1,
            },
            &mut grained,
            &[&ca, &cb],
            &NoiseProfile::measure(&centre, &ca, &cb),
        );
        let mut lit = centre.clone();
        GainField {
            coeffs: [0.05, -0.03, 0.02, 0.01, -0.02],
        }
        .apply(&mut lit);
        let vectors = fa
            .vectors
            .iter()
            .chain(&fb.vectors)
            .flat_map(|v| [v.0 as f32, v.1 as f32])
            .collect();
        let levels = pc.levels.iter().flat_map(|l| l.data.clone()).collect();
        vec![vectors, ca.data, cb.data, cleaned.data, grained.data, lit.data, levels]
    }

    #[test]
    fn the_avx2_copies_give_the_baseline_results_bit_for_bit() {
        FORCE_BASELINE.store(true, Ordering::Relaxed);
        let baseline = stages();
        FORCE_BASELINE.store(false, Ordering::Relaxed);
        let wide = stages();
        // Without AVX2 on this machine both runs take the baseline copies and this only checks
        // that the stages are deterministic.
        for (i, (b, w)) in baseline.iter().zip(&wide).enumerate() {
            assert!(!b.is_empty());
            let same = b.iter().zip(w).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same && b.len() == w.len(),
                "output {i} differs between the AVX2 and baseline copies"
            );
        }
    }
}
