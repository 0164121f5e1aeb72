//! The similarity filter on the device: the thumbnail of a planar RGB frame and the cosine between two
//! thumbnails, reduced on the device so only three numbers come back. Twins: [`crate::latent::similarity`]'s
//! `thumbnail` and `cosine_sums` / `cosine_from_sums`.

use super::device::grid;
use super::{CudaError, Gpu};
use crate::latent::similarity::{cosine_from_sums, thumbnail_size};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Writes the thumbnail of `rgb` (`[3][h][w]`) into `out` (`3 * tw * th` values, see `thumbnail_size`).
pub fn thumbnail(
    gpu: &Gpu,
    rgb: &CudaSlice<f32>,
    w: usize,
    h: usize,
    out: &mut CudaSlice<f32>,
) -> Result<(), CudaError> {
    let (f, tw, th) = thumbnail_size(w, h);
    if rgb.len() < 3 * w * h || out.len() < 3 * tw * th {
        return Err(CudaError::Shape(format!(
            "thumbnail of {w}x{h}: input or output too small"
        )));
    }
    let dims = [w, h, f, tw, th].map(|v| v as i32);
    let mut b = gpu.stream.launch_builder(&gpu.k.thumbnail);
    b.arg(rgb);
    for d in &dims {
        b.arg(d);
    }
    b.arg(out);
    // SAFETY: arguments match `thumbnail`; sizes checked above.
    unsafe { b.launch(grid(tw * th, 1)) }?;
    Ok(())
}

/// Cosine similarity of the first `n` values of `a` and `b`; `sums` (3 values) is device scratch. Waits for the
/// stream (the skip decision is made on the host).
pub fn cosine(
    gpu: &Gpu,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    n: usize,
    sums: &mut CudaSlice<f64>,
) -> Result<f64, CudaError> {
    if a.len() < n || b.len() < n || sums.len() < 3 {
        return Err(CudaError::Shape(format!(
            "cosine of {n} values: input or scratch too small"
        )));
    }
    let n32 = n as i32;
    let mut l = gpu.stream.launch_builder(&gpu.k.cosine_sums);
    l.arg(a).arg(b).arg(&n32).arg(&mut *sums);
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: arguments match `cosine_sums`; one block of 256 (a power of two) threads, as it needs.
    unsafe { l.launch(cfg) }?;
    let mut host = [0.0f64; 3];
    gpu.stream.memcpy_dtoh(&*sums, &mut host)?;
    gpu.stream.synchronize()?;
    Ok(cosine_from_sums(host[0], host[1], host[2]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::test_util::{gpu, max_diff, random};
    use crate::latent::similarity::{cosine as cpu_cosine, thumbnail as cpu_thumbnail};
    use crate::latent::RgbImage;

    #[test]
    #[ignore = "needs a CUDA GPU"]
    fn thumbnail_and_cosine_match_the_cpu_at_1080p_and_odd_sizes() {
        let gpu = gpu();
        for (i, &(w, h)) in [(1920, 1080), (131, 67), (5, 3)].iter().enumerate() {
            let a = RgbImage::from_planar(w, h, random(3 * w * h, 0.0, 1.0, 300 + i as u64));
            let mut b = a.clone();
            // A second frame: the first plus a little noise.
            for (v, n) in b.data.iter_mut().zip(random(3 * w * h, -0.1, 0.1, 400 + i as u64)) {
                *v += n;
            }
            let (ta, tb) = (cpu_thumbnail(&a), cpu_thumbnail(&b));
            let (mut da, mut db) = (
                gpu.stream.alloc_zeros::<f32>(ta.len()).unwrap(),
                gpu.stream.alloc_zeros(ta.len()).unwrap(),
            );
            thumbnail(&gpu, &gpu.stream.clone_htod(&a.data).unwrap(), w, h, &mut da).unwrap();
            thumbnail(&gpu, &gpu.stream.clone_htod(&b.data).unwrap(), w, h, &mut db).unwrap();
            let got = gpu.stream.clone_dtoh(&da).unwrap();
            assert!(
                max_diff(&got, &ta) <= 1e-6,
                "{w}x{h}: thumbnail off by {}",
                max_diff(&got, &ta)
            );
            let mut sums = gpu.stream.alloc_zeros::<f64>(3).unwrap();
            let sim = cosine(&gpu, &da, &db, ta.len(), &mut sums).unwrap();
            // The reduction adds in another order than the CPU: f64 keeps that far below the filter's resolution.
            assert!(
                (sim - cpu_cosine(&ta, &tb)).abs() < 1e-9,
                "{w}x{h}: {sim} vs {}",
                cpu_cosine(&ta, &tb)
            );
        }
    }
}
