//! Seeded, counter-based randomness: the same `(seed, stream, index)` gives the same value on every machine, in
//! Rust and in the Python reference (`engines/export/reference.py`), whatever the order values are asked for.

/// SplitMix64: a well-mixed 64-bit hash of a counter.
#[inline]
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one stream of values.
#[inline]
pub fn stream_key(seed: u64, stream: u64) -> u64 {
    splitmix(seed ^ splitmix(stream ^ 0xD1B5_4A32_D192_ED03))
}

#[inline]
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// Uniform in `[0, 1)`: value `index` of `stream`.
pub fn uniform(seed: u64, stream: u64, index: u64) -> f64 {
    unit(splitmix(stream_key(seed, stream).wrapping_add(index)))
}

/// `n` standard normal values (Box-Muller over pairs of counters).
pub fn gaussian(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    let key = stream_key(seed, stream);
    (0..n as u64)
        .map(|j| {
            let u1 = 1.0 - unit(splitmix(key.wrapping_add(2 * j)));
            let u2 = unit(splitmix(key.wrapping_add(2 * j + 1)));
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// The stream of the fixed noise of one tile at one denoising stage: the same noise every frame is what keeps
/// one-step diffusion temporally consistent.
pub fn noise_stream(tile: usize, stage: usize) -> u64 {
    (1u64 << 32) | ((tile as u64) << 8) | stage as u64
}

/// The stream the similarity filter draws its skip decisions from.
pub const SSF_STREAM: u64 = 2 << 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_has_unit_moments_and_is_deterministic() {
        let v = gaussian(3, noise_stream(0, 0), 20000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        assert_eq!(v, gaussian(3, noise_stream(0, 0), 20000));
        assert_ne!(v[..10], gaussian(4, noise_stream(0, 0), 10)[..]);
        assert_ne!(v[..10], gaussian(3, noise_stream(1, 0), 10)[..]);
    }

    #[test]
    fn uniform_is_in_range() {
        for i in 0..1000 {
            let u = uniform(9, SSF_STREAM, i);
            assert!((0.0..1.0).contains(&u));
        }
    }
}
