//! Position-embedding resampling: PyTorch's bicubic `interpolate`, on the host.
//!
//! DINOv2 stores position embeddings for its native 37x37 grid (518 px) and
//! resamples them to the input's grid. This runs once per grid size at load
//! time, so it is written for clarity and exactness (f64), not speed.

use crate::config::PosEmbedResample;

/// Per output index: the first input index and the weights of the inputs from there.
type Taps = Vec<(usize, Vec<f64>)>;

/// Keys cubic convolution (PyTorch: `cubic_convolution1/2`).
fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Antialiased bicubic (PyTorch `_upsample_bicubic2d_aa`, from PIL): the
/// kernel (a = -0.5) is widened by the scale when shrinking and the weights
/// are normalised per output sample.
fn antialias_taps(input: usize, output: usize, scale: f64) -> Taps {
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            // `as i64` truncates toward zero, as the C++ cast does.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| cubic((j as f64 - center + 0.5) * inv, -0.5))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (lo, w)
        })
        .collect()
}

/// Plain bicubic (PyTorch `upsample_bicubic2d`, a = -0.75, borders clamped).
fn plain_taps(input: usize, output: usize, scale: f64) -> Taps {
    let last = input as i64 - 1;
    (0..output)
        .map(|i| {
            let real = scale * (i as f64 + 0.5) - 0.5;
            let idx = (real.floor() as i64).clamp(0, last);
            let t = (real - idx as f64).clamp(0.0, 1.0);
            let coeffs = [
                cubic(t + 1.0, -0.75),
                cubic(t, -0.75),
                cubic(1.0 - t, -0.75),
                cubic(2.0 - t, -0.75),
            ];
            // Fold the clamped border reads into a dense run of weights.
            let mut w = vec![0.0; input];
            for (k, c) in coeffs.iter().enumerate() {
                let j = (idx - 1 + k as i64).clamp(0, last) as usize;
                w[j] += c;
            }
            (0, w)
        })
        .collect()
}

fn taps(input: usize, output: usize, how: PosEmbedResample) -> Taps {
    // With an offset torch is given a scale factor, and uses its inverse.
    let scale = input as f64 / (output as f64 + how.offset);
    if how.antialias {
        antialias_taps(input, output, scale)
    } else {
        plain_taps(input, output, scale)
    }
}

/// Resamples a `[grid_in, grid_in, dim]` row-major grid of vectors to
/// `[out_h, out_w, dim]`, as `torch.nn.functional.interpolate(mode="bicubic",
/// align_corners=False)` does on the `[1, dim, grid_in, grid_in]` layout.
pub fn resample_grid(
    values: &[f32],
    grid_in: usize,
    dim: usize,
    out_h: usize,
    out_w: usize,
    how: PosEmbedResample,
) -> Vec<f32> {
    let wx = taps(grid_in, out_w, how);
    let wy = taps(grid_in, out_h, how);
    // Horizontal pass first, as PyTorch's separable kernel does.
    let mut rows = vec![0f64; grid_in * out_w * dim];
    for y in 0..grid_in {
        for (x, (lo, w)) in wx.iter().enumerate() {
            let out = &mut rows[(y * out_w + x) * dim..][..dim];
            for (k, wk) in w.iter().enumerate() {
                let src = &values[(y * grid_in + lo + k) * dim..][..dim];
                for (o, s) in out.iter_mut().zip(src) {
                    *o += wk * *s as f64;
                }
            }
        }
    }
    let mut out = vec![0f32; out_h * out_w * dim];
    for (y, (lo, w)) in wy.iter().enumerate() {
        for x in 0..out_w {
            let dst = &mut out[(y * out_w + x) * dim..][..dim];
            for (d, o) in dst.iter_mut().enumerate() {
                let s: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| wk * rows[((lo + k) * out_w + x) * dim + d])
                    .sum();
                *o = s as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const AA: PosEmbedResample = PosEmbedResample {
        antialias: true,
        offset: 0.0,
    };

    #[test]
    fn identity_size_keeps_values() {
        let v: Vec<f32> = (0..5 * 5 * 2).map(|i| i as f32 * 0.37).collect();
        for how in [
            AA,
            PosEmbedResample {
                antialias: false,
                offset: 0.0,
            },
        ] {
            let out = resample_grid(&v, 5, 2, 5, 5, how);
            for (a, b) in v.iter().zip(&out) {
                assert!((a - b).abs() < 1e-5, "{how:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn constant_field_stays_constant_when_shrinking() {
        let v = vec![2.5f32; 37 * 37 * 3];
        let out = resample_grid(&v, 37, 3, 16, 16, AA);
        assert!(out.iter().all(|x| (x - 2.5).abs() < 1e-5));
    }

    #[test]
    fn antialias_kernel_widens_with_scale() {
        // 37 -> 16: each output sample away from the border reads about
        // 4 * 37/16 inputs.
        let t = antialias_taps(37, 16, 37.0 / 16.0);
        assert!(
            t[2..14].iter().all(|(_, w)| w.len() >= 9 && w.len() <= 11),
            "{t:?}"
        );
        let plain = plain_taps(37, 16, 37.0 / 16.0);
        assert!(
            plain
                .iter()
                .all(|(_, w)| w.iter().filter(|x| **x != 0.0).count() <= 4)
        );
    }
}
