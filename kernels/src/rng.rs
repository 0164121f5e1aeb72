//! Seeded randomness. Every random choice in the project goes through here, so that a run is
//! reproducible from its seed alone and any frame can be regenerated without replaying the ones
//! before it (seed a fresh [`Rng`] from [`hash64`] of the seed, the frame index and a purpose tag).

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser: a bijection that spreads every input bit over the whole output.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes several integers into one well-spread seed, e.g. `hash64(&[seed, frame, PURPOSE])`.
///
/// Order matters (`[a, b]` and `[b, a]` differ), and so does length, so `[x]` and `[x, 0]` differ.
pub fn hash64(parts: &[u64]) -> u64 {
    let mut h = mix64(parts.len() as u64 ^ 0x6F6C_6466_696C_6D00);
    for &p in parts {
        h = mix64(h.wrapping_add(GOLDEN_GAMMA) ^ mix64(p.wrapping_add(GOLDEN_GAMMA)));
    }
    h
}

/// xoshiro256**: fast, small state, and statistically sound for simulation (not cryptography).
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Expands `seed` with SplitMix64, which never yields the all-zero state xoshiro cannot leave.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(GOLDEN_GAMMA);
            mix64(x)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// A generator for one purpose of one frame: shorthand for `Rng::new(hash64(parts))`.
    pub fn from_parts(parts: &[u64]) -> Self {
        Self::new(hash64(parts))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`; uses the top 24 bits so every value is exactly representable.
    #[inline]
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[0, 1)` with 53 bits, for when `f32` steps are too coarse.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)` (or exactly `lo` when the range is empty).
    #[inline]
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// Uniform in `0..n` without modulo bias (Lemire's multiply-shift); `below(0)` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// `true` with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }

    /// Standard normal (mean 0, variance 1) by Box–Muller; one value per call keeps the state
    /// trivially reproducible (no cached spare).
    pub fn normal(&mut self) -> f32 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Poisson-distributed count. Knuth's product method for small means; above 30 a rounded
    /// normal approximation, which is plenty for damage counts.
    pub fn poisson(&mut self, lambda: f32) -> u32 {
        if lambda.is_nan() || lambda <= 0.0 {
            return 0;
        }
        if lambda > 30.0 {
            let v = lambda + lambda.sqrt() * self.normal();
            return v.round().max(0.0) as u32;
        }
        let limit = (-lambda as f64).exp();
        let mut product = self.next_f64();
        let mut count = 0;
        while product > limit {
            product *= self.next_f64();
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn different_seeds_differ() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(2);
        let same = (0..100).filter(|_| a.next_u64() == b.next_u64()).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn hash_depends_on_every_part_and_order() {
        let base = hash64(&[7, 3, 1]);
        assert_ne!(base, hash64(&[7, 3, 2]));
        assert_ne!(base, hash64(&[8, 3, 1]));
        assert_ne!(base, hash64(&[3, 7, 1]));
        assert_ne!(hash64(&[5]), hash64(&[5, 0]));
        assert_eq!(base, hash64(&[7, 3, 1]));
    }

    #[test]
    fn uniform_is_in_range_with_right_moments() {
        let mut r = Rng::new(9);
        let xs: Vec<f64> = (0..100_000).map(|_| r.next_f32() as f64).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let (mean, var) = mean_var(&xs);
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.003, "var {var}");
        for _ in 0..10_000 {
            let v = r.range_f32(-3.0, 5.0);
            assert!((-3.0..5.0).contains(&v));
        }
    }

    #[test]
    fn below_covers_range_without_escaping() {
        let mut r = Rng::new(5);
        let mut seen = [0usize; 7];
        for _ in 0..70_000 {
            seen[r.below(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (9_000..11_000).contains(&c)), "{seen:?}");
        assert_eq!(r.below(0), 0);
        assert_eq!(r.below(1), 0);
    }

    #[test]
    fn normal_has_zero_mean_unit_variance() {
        let mut r = Rng::new(11);
        let xs: Vec<f64> = (0..200_000).map(|_| r.normal() as f64).collect();
        assert!(xs.iter().all(|x| x.is_finite()));
        let (mean, var) = mean_var(&xs);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn poisson_mean_matches_lambda() {
        let mut r = Rng::new(13);
        for &lambda in &[0.3f32, 2.0, 10.0, 50.0] {
            let xs: Vec<f64> = (0..50_000).map(|_| r.poisson(lambda) as f64).collect();
            let (mean, var) = mean_var(&xs);
            let tol = 0.03 * lambda as f64 + 0.02;
            assert!((mean - lambda as f64).abs() < tol, "lambda {lambda}: mean {mean}");
            assert!((var - lambda as f64).abs() < 5.0 * tol, "lambda {lambda}: var {var}");
        }
        assert_eq!(r.poisson(0.0), 0);
        assert_eq!(r.poisson(-1.0), 0);
    }
}
