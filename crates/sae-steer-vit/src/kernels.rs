//! The transformer block's elementwise glue: LayerNorm, GELU, and the
//! `residual + (h + b) * layer_scale` update.
//!
//! Every function is generic over the backend and is, by default, the plain
//! tensor arithmetic. On burn-flex (the default CPU backend) the glue is what
//! keeps a ViT behind PyTorch: the matmuls run on every core, but flex's
//! elementwise ops run on one, take one pass over memory each, and GELU's
//! `erf` is scalar `libm`. So for an f32 flex tensor that this call owns,
//! the work is done here in place, in one pass, split over rayon's pool (the
//! pool flex's matmuls already use), with an `erf` that vectorises.
//! LayerNorm needs nothing of ours: it goes through burn's `layer_norm` op,
//! which flex implements as one fused, parallel pass.
//!
//! The fast path is picked at run time from the primitive's type (a
//! downcast), not through a trait bound, so every model stays generic over
//! `B: Backend` and the CUDA and ndarray paths are untouched. Each kernel is
//! tested against the generic arithmetic.
//!
//! `SAE_STEER_UNFUSED=1` in the environment turns all of this off (the
//! plain op-by-op arithmetic everywhere), so a benchmark can measure what
//! the kernels win in one binary, one run.

use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::AttentionModuleOptions;

/// Whether the fused paths are on (see the module docs).
fn fused() -> bool {
    static FUSED: OnceLock<bool> = OnceLock::new();
    *FUSED.get_or_init(|| std::env::var_os("SAE_STEER_UNFUSED").is_none_or(|v| v == "0"))
}

/// LayerNorm over the last dimension: [.., d] -> [.., d].
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    if !fused() {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let x = (x - mean) / (var + eps).sqrt();
        return x * weight.clone().unsqueeze::<D>() + bias.clone().unsqueeze::<D>();
    }
    let out = B::layer_norm(
        x.into_primitive().tensor(),
        weight.clone().into_primitive().tensor(),
        Some(bias.clone().into_primitive().tensor()),
        eps,
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The product `x w`: x [m, k], w [k, n] -> [m, n].
pub(crate) fn matmul<B: Backend>(x: Tensor<B, 2>, w: &Tensor<B, 2>) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    let x = match flex::matmul(x, w) {
        Ok(out) => return out,
        Err(x) => x,
    };
    x.matmul(w.clone())
}

/// `y + bias`, `bias` [d] broadcast over the rows of y [b, n, d].
pub(crate) fn add_bias<B: Backend>(y: Tensor<B, 3>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
    let Some(bias) = bias else { return y };
    #[cfg(feature = "flex")]
    let y = match flex::map_rows(y, None, &[bias], |o, _, p| {
        o.iter_mut().zip(p[0]).for_each(|(o, &b)| *o += b)
    }) {
        Ok(out) => return out,
        Err((y, _)) => y,
    };
    y + bias.clone().unsqueeze::<3>()
}

/// Exact (erf) GELU of `y + bias`, as transformers' `gelu`:
/// z * 0.5 * (1 + erf(z / sqrt 2)) with z = y + bias (the MLP's first layer).
pub(crate) fn bias_gelu<B: Backend>(y: Tensor<B, 3>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    let y = {
        let d = y.dims()[2];
        let values = match bias {
            Some(b) => flex::view(b),
            None => Some(vec![0.0; d]),
        };
        match values {
            Some(b) => match flex::map_rows_with(y, None, &[&b], |o, _, p| {
                o.iter_mut()
                    .zip(p[0])
                    .for_each(|(o, &b)| *o = gelu_f32(*o + b))
            }) {
                Ok(out) => return out,
                Err((y, _)) => y,
            },
            None => y,
        }
    };
    burn::tensor::activation::gelu(add_bias(y, bias))
}

/// `residual + (h + bias) * scale`, `bias` and `scale` [d] broadcast over the
/// rows of h [b, n, d]: a block's output projection, its LayerScale and the
/// residual connection in one pass.
pub(crate) fn scaled_residual<B: Backend>(
    residual: Tensor<B, 3>,
    h: Tensor<B, 3>,
    bias: Option<&Tensor<B, 1>>,
    scale: &Tensor<B, 1>,
) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    let (h, residual) = {
        let mapped = match bias {
            Some(bias) => flex::map_rows(h, Some(residual), &[bias, scale], |o, r, p| {
                for (((o, &r), &b), &s) in o.iter_mut().zip(r).zip(p[0]).zip(p[1]) {
                    *o = r + (*o + b) * s;
                }
            }),
            None => flex::map_rows(h, Some(residual), &[scale], |o, r, p| {
                for ((o, &r), &s) in o.iter_mut().zip(r).zip(p[0]) {
                    *o = r + *o * s;
                }
            }),
        };
        match mapped {
            Ok(out) => return out,
            Err((h, residual)) => (h, residual.expect("given back")),
        }
    };
    let h = match bias {
        Some(b) => h + b.clone().unsqueeze::<3>(),
        None => h,
    };
    residual + h * scale.clone().unsqueeze::<3>()
}

/// Multi-head self-attention from the fused q, k, v projection:
/// qkv [b, n, 3d] (q, k and v each `d = heads * hd` wide, heads in order)
/// -> softmax(q k^T / sqrt(hd)) v with the heads side by side, [b, n, d].
pub(crate) fn attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    #[cfg(feature = "flex")]
    let qkv = match flex::attention(qkv, heads) {
        Ok(out) => return out,
        Err(qkv) => qkv,
    };
    let [b, n, d3] = qkv.dims();
    let d = d3 / 3;
    let hd = d / heads;
    // [b, n, 3d] -> [3, b, heads, n, hd]
    let qkv = qkv.reshape([b, n, 3, heads, hd]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| {
        qkv.clone()
            .slice([i..i + 1, 0..b, 0..heads, 0..n, 0..hd])
            .reshape([b, heads, n, hd])
    };
    // burn's attention op is the plain arithmetic on ndarray. The scale is
    // passed explicitly because CubeCL then keeps its unfused path, the one
    // checked against PyTorch on a GPU; its flash kernels are unchecked and
    // autotuned per shape, which adds JIT time short GPU jobs already suffer
    // from.
    let options = AttentionModuleOptions {
        scale: Some(1.0 / (hd as f64).sqrt()),
        ..AttentionModuleOptions::default()
    };
    let ctx = burn::tensor::module::attention(part(0), part(1), part(2), None, None, options);
    // [b, heads, n, hd] -> [b, n, d]
    ctx.swap_dims(1, 2).reshape([b, n, d])
}

/// GELU with erf from Abramowitz & Stegun 7.1.28 (|error| <= 3e-7): only
/// multiplies, adds and one division, so the loop vectorises, where libm's
/// `erff` is a scalar call per element.
#[inline(always)]
pub(crate) fn gelu_f32(x: f32) -> f32 {
    // The published coefficients, digit for digit.
    #[allow(clippy::excessive_precision)]
    const A: [f32; 6] = [
        0.070_523_078_4,
        0.042_282_012_3,
        0.009_270_527_2,
        0.000_152_014_3,
        0.000_276_567_2,
        0.000_043_063_8,
    ];
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let p = 1.0 + z * (A[0] + z * (A[1] + z * (A[2] + z * (A[3] + z * (A[4] + z * A[5])))));
    // p^16 by squaring; it overflows to inf for |z| > ~10, where erf is 1.
    let p2 = p * p;
    let p4 = p2 * p2;
    let p8 = p4 * p4;
    let erf_abs = 1.0 - 1.0 / (p8 * p8);
    let erf = if x < 0.0 { -erf_abs } else { erf_abs };
    0.5 * x * (1.0 + erf)
}

/// e^x for x <= 88 (every softmax input after the max shift is <= 0), within
/// 2 ulp: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-6
/// polynomial, 2^n through the exponent bits. Only multiplies, adds and a
/// rounding, so the loop around it vectorises, where libm's `expf` is a
/// scalar call per element.
#[inline(always)]
// Cephes' coefficients as published (0.50000001 rounds to 0.5 in f32).
#[allow(clippy::excessive_precision)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // Below -87.3 the result would be subnormal; a softmax term that small
    // is 0 to f32 once summed with the maximum's 1.
    let x = x.clamp(-87.3, 88.0);
    // Round to nearest by adding and removing 1.5 * 2^23 (exact for |v| <
    // 2^22): plain adds, where `round` is a libm call below SSE4.1.
    const ROUND: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    // ln 2 in two parts, so n * C1 is exact.
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// A row of attention scores -> its softmax, in place. Sixteen running
/// maxima and sums, so the loops vectorise (one running sum is a chain of
/// dependent adds the compiler may not reorder).
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) {
    const L: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sums = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for (s, x) in sums.iter_mut().zip(c) {
            *x = exp_f32(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_f32(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// Runs `f` compiled for the widest vectors the CPU has. The crate is built
/// for baseline x86-64 (SSE2, four lanes) so that one binary runs
/// everywhere; the row kernels' loops, inlined into these wrappers, are
/// compiled again for AVX-512 and AVX2 + FMA, and the CPU picks at run time.
#[inline(always)]
pub(crate) fn with_widest_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<u8> = OnceLock::new();
        let level = *LEVEL.get_or_init(|| {
            if std::arch::is_x86_feature_detected!("avx512f") {
                2
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                1
            } else {
                0
            }
        });
        // SAFETY: each wrapper runs only where the CPU has its features.
        match level {
            2 => return unsafe { x86::avx512(f) },
            1 => return unsafe { x86::avx2(f) },
            _ => {}
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

#[cfg(feature = "flex")]
mod flex {
    use std::any::Any;

    use burn::backend::flex::FlexTensor;
    use burn::prelude::*;
    use burn::tensor::{DType, TensorPrimitive};
    use rayon::prelude::*;

    /// What a kernel gives back when it cannot run: its tensor inputs.
    type Declined<B> = (Tensor<B, 3>, Option<Tensor<B, 3>>);

    /// `f(out_row, residual_row, params)` over the rows of `out` [b, n, d],
    /// in place and in parallel, with `params` the f32 values of [d]
    /// vectors. Declines unless every tensor is f32 flex, `out` is owned by
    /// this call, contiguous from offset 0, and the shapes fit.
    pub(super) fn map_rows<B: Backend>(
        out: Tensor<B, 3>,
        residual: Option<Tensor<B, 3>>,
        params: &[&Tensor<B, 1>],
        f: impl Fn(&mut [f32], &[f32], &[&[f32]]) + Sync + Send,
    ) -> Result<Tensor<B, 3>, Declined<B>> {
        let values: Option<Vec<Vec<f32>>> = params.iter().map(|p| view(p)).collect();
        let Some(values) = values else {
            return Err((out, residual));
        };
        let slices: Vec<&[f32]> = values.iter().map(|v| v.as_slice()).collect();
        map_rows_with(out, residual, &slices, f)
    }

    /// [`map_rows`] with the parameters already read.
    pub(super) fn map_rows_with<B: Backend>(
        out: Tensor<B, 3>,
        residual: Option<Tensor<B, 3>>,
        params: &[&[f32]],
        f: impl Fn(&mut [f32], &[f32], &[&[f32]]) + Sync + Send,
    ) -> Result<Tensor<B, 3>, Declined<B>> {
        if !super::fused() {
            return Err((out, residual));
        }
        let dims = out.dims();
        let d = dims[2];
        if params.iter().any(|p| p.len() != d)
            || residual.as_ref().is_some_and(|r| r.dims() != dims)
        {
            return Err((out, residual));
        }
        let res = match &residual {
            Some(r) => match primitive(r.clone()) {
                Some(t) if t.dtype() == DType::F32 && t.as_slice::<f32>().is_some() => Some(t),
                _ => return Err((out, residual)),
            },
            None => None,
        };
        let mut t = match primitive(out.clone()) {
            Some(t) => t,
            None => return Err((out, residual)),
        };
        // `out` itself still holds a reference: drop it so `t` is unique.
        drop(out);
        if !writable(&t) {
            return Err((back(t), residual));
        }
        let n = t.layout().num_elements();
        let res: Option<&[f32]> = res
            .as_ref()
            .map(|r| &r.as_slice::<f32>().expect("checked")[..n]);
        let data = &mut t.storage_mut::<f32>()[..n];
        // Chunks of ~64k elements: large enough that a task outweighs its
        // scheduling, small enough to spread over every core.
        let rows = (65_536 / d.max(1)).max(1);
        data.par_chunks_mut(rows * d)
            .enumerate()
            .for_each(|(i, chunk)| {
                let start = i * rows * d;
                let r = res.map(|r| &r[start..start + chunk.len()]);
                super::with_widest_simd(
                    #[inline(always)]
                    || {
                        for (k, row) in chunk.chunks_exact_mut(d).enumerate() {
                            let r_row = r.map_or(&[][..], |r| &r[k * d..(k + 1) * d]);
                            f(row, r_row, params);
                        }
                    },
                );
            });
        Ok(back(t))
    }

    /// `x w` as one single-threaded gemm call per block of the output,
    /// the blocks spread over rayon's pool. flex hands the whole product to
    /// gemm's own threading, which synchronises its threads at every depth
    /// block; independent blocks ran 5-20% faster on the ViT's shapes
    /// (docs/performance.md). Blocks split the columns first, so each task
    /// packs only its own part of `w`, then the rows if there are more
    /// threads than column blocks worth having.
    pub(super) fn matmul<B: Backend>(
        x: Tensor<B, 2>,
        w: &Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
        let ([m, k], [k2, n]) = (x.dims(), w.dims());
        if !super::fused() || k != k2 || m == 0 || n == 0 || k == 0 {
            return Err(x);
        }
        let (Some(xt), Some(wt)) = (primitive(x.clone()), primitive(w.clone())) else {
            return Err(x);
        };
        if xt.dtype() != DType::F32 || wt.dtype() != DType::F32 {
            return Err(x);
        }
        let (Some(xs), Some(ws)) = (xt.as_slice::<f32>(), wt.as_slice::<f32>()) else {
            return Err(x);
        };
        let (xs, ws) = (&xs[..m * k], &ws[..k * n]);
        let threads = rayon::current_num_threads().max(1);
        // Column blocks of at least 192 (a multiple of the 16-lane vectors),
        // then row blocks of at least 64 for the threads left over.
        let col_blocks = threads.min((n / 192).max(1));
        let row_blocks = threads.div_ceil(col_blocks).min((m / 64).max(1));
        let cols = n.div_ceil(col_blocks).next_multiple_of(16).min(n);
        let rows = m.div_ceil(row_blocks);
        let mut out = Vec::<f32>::with_capacity(m * n);
        let dst = SendPtr(out.as_mut_ptr());
        let block = |task: usize| {
            let (r0, c0) = ((task / col_blocks) * rows, (task % col_blocks) * cols);
            if r0 >= m || c0 >= n {
                return;
            }
            let (mb, nb) = (rows.min(m - r0), cols.min(n - c0));
            // SAFETY: the block reads rows r0..r0+mb of x [m, k] and
            // columns c0..c0+nb of w [k, n], both inside the slices, and
            // writes only its own rows x columns of `out` [m, n] (with
            // capacity m * n), which no other block writes; gemm with
            // read_dst = false never reads the uninitialised destination.
            unsafe {
                single_gemm(
                    [mb, nb, k],
                    (dst.get().add(r0 * n + c0), n),
                    (xs.as_ptr().add(r0 * k), k),
                    (ws.as_ptr().add(c0), n as isize, 1),
                    1.0,
                );
            }
        };
        let tasks = row_blocks * col_blocks;
        if tasks == 1 {
            block(0);
        } else {
            (0..tasks).into_par_iter().for_each(block);
        }
        // SAFETY: the blocks cover every row and column, so all m * n
        // elements are written.
        unsafe { out.set_len(m * n) };
        drop((xt, wt));
        Ok(back(FlexTensor::from_data(burn::tensor::TensorData::new(
            out,
            [m, n],
        ))))
    }

    /// Attention straight from the qkv buffer: one task per (image, head)
    /// on rayon's pool, each two single-threaded gemm calls that read q, k
    /// and v where the projection wrote them (row stride 3d) and write the
    /// head's output where the merged [b, n, d] layout wants it (row stride
    /// d), with the softmax in between. No permuted copies, and every core
    /// busy (flex's own attention op runs the heads one after another).
    pub(super) fn attention<B: Backend>(
        qkv: Tensor<B, 3>,
        heads: usize,
    ) -> Result<Tensor<B, 3>, Tensor<B, 3>> {
        let [b, n, d3] = qkv.dims();
        if !super::fused() || d3 % 3 != 0 || heads == 0 || (d3 / 3) % heads != 0 || n == 0 {
            return Err(qkv);
        }
        let Some(t) = primitive(qkv.clone()) else {
            return Err(qkv);
        };
        if t.dtype() != DType::F32 {
            return Err(qkv);
        }
        let Some(src) = t.as_slice::<f32>() else {
            return Err(qkv);
        };
        let (d, hd) = (d3 / 3, d3 / 3 / heads);
        let src = &src[..b * n * d3];
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = Vec::<f32>::with_capacity(b * n * d);
        let dst = SendPtr(out.as_mut_ptr());
        (0..b * heads).into_par_iter().for_each_init(
            || vec![0f32; n * n],
            |scores, task| {
                let (image, head) = (task / heads, task % heads);
                let base = image * n * d3 + head * hd;
                let (q, k, v) = (&src[base..], &src[base + d..], &src[base + 2 * d..]);
                // SAFETY: the gemm calls read n rows of hd values at row
                // stride 3d from q, k and v, all inside `src` (the last row
                // of v ends at image * n * 3d + (n - 1) * 3d + 2d + (head + 1) * hd
                // <= (image + 1) * n * 3d); `scores` is n x n; each task
                // writes only its own head's hd columns of its own image's n
                // rows of `out`, so no two tasks write the same element, and
                // `out` outlives the parallel loop.
                unsafe {
                    // scores [n, n] = scale * q [n, hd] k^T [hd, n]
                    single_gemm(
                        [n, n, hd],
                        (scores.as_mut_ptr(), n),
                        (q.as_ptr(), d3),
                        (k.as_ptr(), 1, d3 as isize),
                        scale,
                    );
                }
                super::with_widest_simd(
                    #[inline(always)]
                    || {
                        for row in scores.chunks_exact_mut(n) {
                            super::softmax_row(row);
                        }
                    },
                );
                unsafe {
                    // out[image, :, head] [n, hd] = scores [n, n] v [n, hd]
                    single_gemm(
                        [n, hd, n],
                        (dst.get().add(image * n * d + head * hd), d),
                        (scores.as_ptr(), n),
                        (v.as_ptr(), d3 as isize, 1),
                        1.0,
                    );
                }
            },
        );
        // SAFETY: the (image, head) tasks together wrote every element
        // (each its hd columns of its image's n rows; gemm with read_dst =
        // false never reads the uninitialised destination).
        unsafe { out.set_len(b * n * d) };
        drop(t);
        let out = FlexTensor::from_data(burn::tensor::TensorData::new(out, [b, n, d]));
        Ok(back(out))
    }

    /// `dst = scale * lhs rhs` for [m, k] x [k, n] on the calling thread,
    /// `dst` not read first. `dst` and `lhs` are row-major with the given
    /// row strides; `rhs` takes (pointer, row stride, column stride), so a
    /// transposed view (the attention's keys) needs no copy.
    ///
    /// # Safety
    /// Every element the strides address must lie inside its allocation,
    /// and no other thread may touch `dst`'s elements during the call.
    unsafe fn single_gemm(
        [m, n, k]: [usize; 3],
        (dst, dst_rs): (*mut f32, usize),
        (lhs, lhs_rs): (*const f32, usize),
        (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
        scale: f32,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                1,
                dst_rs as isize,
                false,
                lhs,
                1,
                lhs_rs as isize,
                rhs,
                rhs_cs,
                rhs_rs,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    /// A pointer the attention tasks share; each writes a disjoint part.
    #[derive(Clone, Copy)]
    struct SendPtr(*mut f32);

    impl SendPtr {
        // A method, so closures capture the whole (Sync) wrapper rather than
        // its raw-pointer field.
        fn get(self) -> *mut f32 {
            self.0
        }
    }
    // SAFETY: see `attention`: the tasks write disjoint elements.
    unsafe impl Send for SendPtr {}
    unsafe impl Sync for SendPtr {}

    /// The f32 values of a flex [d] parameter (the model keeps its
    /// parameters, so they are read, never written).
    pub(super) fn view<B: Backend>(x: &Tensor<B, 1>) -> Option<Vec<f32>> {
        let t = primitive(x.clone())?;
        if t.dtype() != DType::F32 {
            return None;
        }
        let n = t.layout().num_elements();
        t.as_slice::<f32>().map(|s| s[..n].to_vec())
    }

    /// The flex primitive behind a tensor of backend `B`, if `B` is flex.
    fn primitive<B: Backend, const D: usize>(x: Tensor<B, D>) -> Option<FlexTensor> {
        let boxed: Box<dyn Any> = Box::new(x.into_primitive().tensor());
        boxed.downcast::<FlexTensor>().ok().map(|t| *t)
    }

    fn writable(t: &FlexTensor) -> bool {
        t.dtype() == DType::F32
            && t.is_unique()
            && t.layout().is_contiguous()
            && t.layout().start_offset() == 0
    }

    /// A flex primitive back into a tensor of backend `B` (which is flex:
    /// the primitive came from one of `B`'s tensors).
    fn back<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
        let boxed: Box<dyn Any> = Box::new(t);
        let prim = *boxed
            .downcast::<B::FloatTensorPrimitive>()
            .expect("a flex primitive goes back to the flex backend it came from");
        Tensor::from_primitive(TensorPrimitive::Float(prim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vectorised_erf_gelu_is_exact_gelu_within_5e_7() {
        let mut worst = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4 * 6.0;
            let exact = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            worst = worst.max((gelu_f32(x) as f64 - exact).abs() / (x.abs() as f64).max(1.0));
        }
        // 3e-7 from the approximation, the rest f32 rounding.
        assert!(worst < 5e-7, "worst error {worst:e}");
        assert_eq!(gelu_f32(0.0), 0.0);
        assert_eq!(gelu_f32(50.0), 50.0);
        assert_eq!(gelu_f32(-50.0), 0.0);
    }

    #[test]
    fn the_vectorised_exp_is_within_2_ulp_and_the_softmax_sums_to_one() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let exact = (x as f64).exp();
            worst = worst.max((exp_f32(x) as f64 - exact).abs() / exact);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1e4) < 1e-37);
        // A ragged row (not a multiple of 16 lanes), against f64.
        let mut row: Vec<f32> = (0..261)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 - 12.0)
            .collect();
        let max = row.iter().copied().fold(f32::MIN, f32::max) as f64;
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let exact: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp() / sum).collect();
        with_widest_simd(|| softmax_row(&mut row));
        for (got, want) in row.iter().zip(&exact) {
            assert!(
                (*got as f64 - want).abs() <= 1e-6 * want.max(1e-3),
                "{got} vs {want}"
            );
        }
    }

    /// The fused flex kernels against the plain tensor arithmetic (which
    /// flex runs op by op), on shapes with a ragged last chunk.
    #[cfg(feature = "flex")]
    mod flex {
        use burn::backend::Flex;
        use burn::prelude::*;
        use burn::tensor::Distribution;

        use super::super::{add_bias, bias_gelu, layer_norm, scaled_residual};

        fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Flex, D> {
            Flex::seed(&Default::default(), seed);
            Tensor::random(shape, Distribution::Normal(0.0, 2.0), &Default::default())
        }

        fn assert_close<const D: usize>(
            what: &str,
            a: Tensor<Flex, D>,
            b: Tensor<Flex, D>,
            tolerance: f32,
        ) {
            let (a, b) = (
                a.into_data().to_vec::<f32>().unwrap(),
                b.into_data().to_vec::<f32>().unwrap(),
            );
            assert_eq!(a.len(), b.len(), "{what}");
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
                .fold(0f32, f32::max);
            assert!(
                worst <= tolerance,
                "{what}: worst relative difference {worst:e}"
            );
        }

        #[test]
        fn fused_kernels_match_the_plain_arithmetic() {
            // 2 x 261 rows of 771: the chunks of rows do not divide evenly.
            let (shape, d) = ([2, 261, 771], 771);
            let x = random(shape, 1);
            let h = random(shape, 2);
            let b = random([d], 3);
            let s = random([d], 4);
            let plain_bias = h.clone() + b.clone().unsqueeze::<3>();
            let plain_residual = x.clone() + plain_bias.clone() * s.clone().unsqueeze::<3>();
            let plain_gelu = burn::tensor::activation::gelu(plain_bias.clone());
            // Copies, so the kernels own their inputs and take the fast path.
            let own = |t: &Tensor<Flex, 3>| {
                Tensor::<Flex, 3>::from_data(t.to_data(), &Default::default())
            };
            assert_close("add_bias", add_bias(own(&h), Some(&b)), plain_bias, 1e-6);
            assert_close(
                "bias_gelu",
                bias_gelu(own(&h), Some(&b)),
                plain_gelu.clone(),
                1e-6,
            );
            assert_close(
                "scaled_residual",
                scaled_residual(x.clone(), own(&h), Some(&b), &s),
                plain_residual.clone(),
                1e-6,
            );
            assert_close(
                "scaled_residual without bias",
                scaled_residual(x.clone(), own(&h), None, &s),
                x.clone() + h.clone() * s.clone().unsqueeze::<3>(),
                1e-6,
            );
            // A shared input declines the fast path and gives the same values.
            let shared = own(&h);
            assert_close(
                "shared bias_gelu",
                bias_gelu(shared.clone(), Some(&b)),
                plain_gelu,
                1e-6,
            );
            assert_close("shared input", shared.clone(), own(&h), 0.0);

            let (var, mean) = x.clone().var_mean_bias(2);
            let plain_norm = (x.clone() - mean) / (var + 1e-6).sqrt() * b.clone().unsqueeze::<3>()
                + s.clone().unsqueeze::<3>();
            // flex's fused LayerNorm sums in another order.
            assert_close("layer_norm", layer_norm(x, &b, &s, 1e-6), plain_norm, 1e-5);
        }

        #[test]
        fn attention_from_the_qkv_buffer_matches_burn_s_attention() {
            use burn::backend::NdArray;
            // 2 images, 261 tokens, 4 heads of 16.
            let qkv = random([2, 261, 3 * 64], 5);
            let plain = super::super::attention(
                Tensor::<NdArray<f32>, 3>::from_data(qkv.to_data(), &Default::default()),
                4,
            );
            let fused = super::super::attention(qkv, 4);
            assert_close(
                "attention",
                fused,
                Tensor::from_data(plain.into_data(), &Default::default()),
                1e-5,
            );
        }
    }

    /// erf in double precision, the reference for the f32 approximation.
    fn libm_erf(x: f64) -> f64 {
        // Maclaurin series below 3, the asymptotic complement above.
        let ax = x.abs();
        let v = if ax < 3.0 {
            let mut sum = 0.0;
            let mut term = ax;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -ax * ax / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(x) ~ exp(-x^2) / (x sqrt(pi)) * continued fraction.
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (ax + f);
            }
            1.0 - (-ax * ax).exp() / (std::f64::consts::PI.sqrt() * (ax + f))
        };
        v.copysign(x)
    }
}
