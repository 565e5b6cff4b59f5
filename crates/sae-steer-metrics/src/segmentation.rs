//! Pixel predictions from patch logits and the probe's validation scores
//! (reference facts section 7).
//!
//! Layout convention: logits are **patch-major**, `[h * w, classes]`
//! row-major (patch `y * w + x`, then class), which is what a linear probe
//! applied to the `[patches, 768]` patch tokens produces. Upsampled values
//! use the same convention: `[out_h * out_w, classes]`.

use crate::error::{MetricsError, Result};

/// One output coordinate's two source taps along an axis.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    l0: f32,
    l1: f32,
}

/// PyTorch's source indices and weights for `mode="bilinear",
/// align_corners=False` along one axis, in `f32` as its CPU kernel computes
/// them for `f32` input (ATen `compute_source_index_and_lambda`).
fn axis_taps(input: usize, output: usize) -> Vec<Tap> {
    if input == output {
        return (0..output)
            .map(|i| Tap {
                i0: i,
                i1: i,
                l0: 1.0,
                l1: 0.0,
            })
            .collect();
    }
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(input - 1);
            let l1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            Tap {
                i0,
                i1,
                l0: 1.0 - l1,
                l1,
            }
        })
        .collect()
}

/// Bilinear resampling from an `h x w` grid to `out_h x out_w` with the
/// semantics of PyTorch `F.interpolate(mode="bilinear", align_corners=False)`
/// (no antialiasing), precomputed for one pair of sizes so it can be reused
/// for every image of a validation run.
///
/// Values are computed in `f32` in PyTorch's order: first along the width for
/// each of the two source rows, then along the height
/// (`(a*w0 + b*w1)*h0 + (c*w0 + d*w1)*h1`), so results agree with PyTorch to
/// rounding (its compiled kernel may fuse multiply-adds).
///
/// ```
/// use sae_steer_metrics::BilinearUpsampler;
/// let up = BilinearUpsampler::new(2, 2, 4, 4).unwrap();
/// // Two classes on a 2x2 grid: class 1 wins in the right column.
/// let logits = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
/// let mut pred = [0u8; 16];
/// up.argmax(&logits, 2, &mut pred).unwrap();
/// assert_eq!(&pred[..4], &[0, 0, 1, 1]);
/// ```
#[derive(Debug, Clone)]
pub struct BilinearUpsampler {
    h: usize,
    w: usize,
    rows: Vec<Tap>,
    cols: Vec<Tap>,
}

impl BilinearUpsampler {
    /// Prepares resampling from `h x w` to `out_h x out_w`; every size must be
    /// at least 1.
    pub fn new(h: usize, w: usize, out_h: usize, out_w: usize) -> Result<Self> {
        if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
            return Err(MetricsError::Invalid(format!(
                "bilinear upsampling from {h}x{w} to {out_h}x{out_w}: sizes must be at least 1"
            )));
        }
        Ok(Self {
            h,
            w,
            rows: axis_taps(h, out_h),
            cols: axis_taps(w, out_w),
        })
    }

    /// Input grid `(h, w)`.
    pub fn input_size(&self) -> (usize, usize) {
        (self.h, self.w)
    }

    /// Output grid `(out_h, out_w)`.
    pub fn output_size(&self) -> (usize, usize) {
        (self.rows.len(), self.cols.len())
    }

    fn check(
        &self,
        input: &[f32],
        channels: usize,
        out_len: usize,
        out_per_pixel: usize,
    ) -> Result<()> {
        if channels == 0 {
            return Err(MetricsError::Invalid(
                "bilinear upsampling of 0 channels".into(),
            ));
        }
        MetricsError::check_len(
            "logits [h*w, classes]",
            self.h * self.w * channels,
            input.len(),
        )?;
        let (oh, ow) = self.output_size();
        MetricsError::check_len("output [out_h*out_w]", oh * ow * out_per_pixel, out_len)
    }

    /// Width-interpolated source row `i`: `[out_w, channels]`.
    fn interpolate_row(&self, input: &[f32], channels: usize, i: usize, row: &mut [f32]) {
        let src = &input[i * self.w * channels..(i + 1) * self.w * channels];
        for (x, tap) in self.cols.iter().enumerate() {
            let a = &src[tap.i0 * channels..(tap.i0 + 1) * channels];
            let b = &src[tap.i1 * channels..(tap.i1 + 1) * channels];
            let dst = &mut row[x * channels..(x + 1) * channels];
            for ((d, &a), &b) in dst.iter_mut().zip(a).zip(b) {
                *d = a * tap.l0 + b * tap.l1;
            }
        }
    }

    /// Calls `emit(y, x, values)` for every output pixel in row-major order,
    /// keeping only the two width-interpolated source rows the current output
    /// row needs (never the whole `[out_h, out_w, channels]` volume).
    fn for_each_pixel(&self, input: &[f32], channels: usize, mut emit: impl FnMut(usize, &[f32])) {
        let ow = self.cols.len();
        let row_len = ow * channels;
        let mut top = vec![0f32; row_len];
        let mut bottom = vec![0f32; row_len];
        let mut loaded: Option<(usize, usize)> = None;
        let mut values = vec![0f32; channels];
        for (y, tap) in self.rows.iter().enumerate() {
            match loaded {
                Some((a, b)) if a == tap.i0 && b == tap.i1 => {}
                Some((_, b)) if b == tap.i0 => {
                    std::mem::swap(&mut top, &mut bottom);
                    self.interpolate_row(input, channels, tap.i1, &mut bottom);
                }
                _ => {
                    self.interpolate_row(input, channels, tap.i0, &mut top);
                    self.interpolate_row(input, channels, tap.i1, &mut bottom);
                }
            }
            loaded = Some((tap.i0, tap.i1));
            for x in 0..ow {
                let t = &top[x * channels..(x + 1) * channels];
                let b = &bottom[x * channels..(x + 1) * channels];
                for ((v, &t), &b) in values.iter_mut().zip(t).zip(b) {
                    *v = t * tap.l0 + b * tap.l1;
                }
                emit(y * ow + x, &values);
            }
        }
    }

    /// Resamples `input` (`[h * w, channels]`) into `out`
    /// (`[out_h * out_w, channels]`).
    pub fn upsample(&self, input: &[f32], channels: usize, out: &mut [f32]) -> Result<()> {
        self.check(input, channels, out.len(), channels)?;
        self.for_each_pixel(input, channels, |p, values| {
            out[p * channels..(p + 1) * channels].copy_from_slice(values);
        });
        Ok(())
    }

    /// Resamples `logits` (`[h * w, classes]`) and writes the argmax over all
    /// classes of every output pixel into `out` (`[out_h * out_w]`), like
    /// `F.interpolate(...).argmax(dim=1)`: ties go to the lowest class index
    /// and a NaN counts as the maximum (both as `torch.argmax`). At most 256
    /// classes.
    pub fn argmax(&self, logits: &[f32], classes: usize, out: &mut [u8]) -> Result<()> {
        if classes > 256 {
            return Err(MetricsError::Invalid(format!(
                "{classes} classes do not fit u8 predictions"
            )));
        }
        self.check(logits, classes, out.len(), 1)?;
        self.for_each_pixel(logits, classes, |p, values| {
            out[p] = argmax_first(values) as u8;
        });
        Ok(())
    }
}

/// Index of the largest value, the first one on ties, the first NaN if any
/// (`torch.argmax` semantics). `values` must not be empty.
fn argmax_first(values: &[f32]) -> usize {
    // Lane-wise maximum (vectorises), then the first index holding it; a NaN
    // anywhere sends us to the scalar scan, which knows the NaN rule.
    const LANES: usize = 8;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut nan = false;
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            nan |= v.is_nan();
            *m = if v > *m { v } else { *m };
        }
    }
    for &v in tail {
        nan |= v.is_nan();
        lanes[0] = if v > lanes[0] { v } else { lanes[0] };
    }
    if nan {
        return argmax_scalar(values);
    }
    let max = lanes
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    values.iter().position(|&v| v == max).unwrap_or(0)
}

/// The plain scan behind [`argmax_first`], NaN rule included.
fn argmax_scalar(values: &[f32]) -> usize {
    let mut best = 0;
    let mut best_value = values[0];
    if best_value.is_nan() {
        return 0;
    }
    for (c, &v) in values.iter().enumerate().skip(1) {
        if v > best_value {
            best = c;
            best_value = v;
        } else if v.is_nan() {
            return c;
        }
    }
    best
}

/// [`BilinearUpsampler::upsample`] for one call: `input` is `[h * w, channels]`,
/// `out` is `[out_h * out_w, channels]`.
///
/// ```
/// use sae_steer_metrics::upsample_bilinear;
/// // One channel, 1x2 -> 1x4: PyTorch gives [0, 0.25, 0.75, 1].
/// let mut out = [0f32; 4];
/// upsample_bilinear(&[0.0, 1.0], 1, 1, 2, 1, 4, &mut out).unwrap();
/// assert_eq!(out, [0.0, 0.25, 0.75, 1.0]);
/// ```
pub fn upsample_bilinear(
    input: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    out: &mut [f32],
) -> Result<()> {
    BilinearUpsampler::new(h, w, out_h, out_w)?.upsample(input, channels, out)
}

/// [`BilinearUpsampler::argmax`] for one call: bilinear upsampling of
/// `logits` (`[h * w, classes]`) fused with the argmax over classes, written
/// to `out` (`[out_h * out_w]`). Prefer a reused [`BilinearUpsampler`] when
/// scoring many images.
pub fn upsample_argmax(
    logits: &[f32],
    classes: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    out: &mut [u8],
) -> Result<()> {
    BilinearUpsampler::new(h, w, out_h, out_w)?.argmax(logits, classes, out)
}

/// Per-row argmax of `logits` (`[rows, classes]`) over the classes
/// `first_class..classes` only, written as class ids into `out` (`[rows]`).
/// Quantify predicts patches with `first_class = 1` (class 0 excluded, reference facts
/// section 8); `first_class = 0` is a plain argmax. Ties go to the lowest
/// class, a NaN counts as the maximum.
///
/// ```
/// use sae_steer_metrics::argmax_rows;
/// let logits = [9.0, 1.0, 2.0, /* row 2 */ 0.0, 5.0, 5.0];
/// let mut pred = [0u8; 2];
/// argmax_rows(&logits, 3, 1, &mut pred).unwrap();
/// assert_eq!(pred, [2, 1]);
/// ```
pub fn argmax_rows(
    logits: &[f32],
    classes: usize,
    first_class: usize,
    out: &mut [u8],
) -> Result<()> {
    if first_class >= classes || classes > 256 {
        return Err(MetricsError::Invalid(format!(
            "argmax over classes {first_class}..{classes}: need first_class < classes <= 256"
        )));
    }
    MetricsError::check_len("logits [rows, classes]", out.len() * classes, logits.len())?;
    for (row, o) in logits.chunks_exact(classes).zip(out.iter_mut()) {
        *o = (first_class + argmax_first(&row[first_class..])) as u8;
    }
    Ok(())
}

/// Validation scores of one probe, accumulated image by image over a whole
/// split (reference facts section 7).
///
/// Intersection and union are counted per class for classes `1..classes`
/// exactly as the reference's one-hot computation with the class-0 column
/// dropped: a pixel labelled 0 still counts, so predicting `c` on it adds to
/// `c`'s union (never to an intersection). Pixel accuracy counts every pixel,
/// label 0 included.
///
/// ```
/// use sae_steer_metrics::SegmentationScores;
/// let mut scores = SegmentationScores::new(4);
/// //            pixel: 0  1  2  3
/// let truth = [0u8, 1, 1, 2];
/// let pred = [1u8, 1, 2, 2];
/// scores.add(&pred, &truth).unwrap();
/// assert_eq!(scores.iou(1), Some(1.0 / 3.0)); // {1} / {0, 1, 2}
/// assert_eq!(scores.iou(2), Some(0.5));       // {3} / {2, 3}
/// assert_eq!(scores.iou(3), None);            // never predicted nor present
/// assert_eq!(scores.empty_classes(), vec![3]);
/// assert_eq!(scores.mean_iou(), Some((1.0 / 3.0 + 0.5) / 2.0));
/// assert_eq!(scores.pixel_accuracy(), Some(50.0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentationScores {
    classes: usize,
    intersection: Vec<u64>,
    union: Vec<u64>,
    correct: u64,
    pixels: u64,
}

impl SegmentationScores {
    /// An empty accumulator for labels `0..classes` (151 for ADE20K: class 0 =
    /// unlabelled plus 150 classes). `classes` must be in `1..=256`.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            intersection: vec![0; classes],
            union: vec![0; classes],
            correct: 0,
            pixels: 0,
        }
    }

    /// Number of labels including 0.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Adds one image's (or any batch's) pixel predictions and labels, both
    /// flat and of equal length. Errors on a length mismatch or a class id
    /// `>= classes`, leaving the accumulator unchanged.
    pub fn add(&mut self, pred: &[u8], truth: &[u8]) -> Result<()> {
        MetricsError::check_len(
            "predicted pixels (same count as labels)",
            truth.len(),
            pred.len(),
        )?;
        for (what, values) in [("prediction", pred), ("label", truth)] {
            if let Some(position) = values.iter().position(|&v| v as usize >= self.classes) {
                return Err(MetricsError::ClassOutOfRange {
                    what: what.into(),
                    class: values[position] as usize,
                    position,
                    classes: self.classes,
                });
            }
        }
        for (&p, &t) in pred.iter().zip(truth) {
            let (p, t) = (p as usize, t as usize);
            if p == t {
                self.correct += 1;
                self.intersection[p] += 1;
                self.union[p] += 1;
            } else {
                self.union[p] += 1;
                self.union[t] += 1;
            }
        }
        self.pixels += pred.len() as u64;
        Ok(())
    }

    /// Adds another accumulator's counts (e.g. from another thread).
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.classes != self.classes {
            return Err(MetricsError::Mismatch {
                what: "segmentation scores",
                ours: format!("{} classes", self.classes),
                theirs: format!("{} classes", other.classes),
            });
        }
        for (a, b) in self.intersection.iter_mut().zip(&other.intersection) {
            *a += b;
        }
        for (a, b) in self.union.iter_mut().zip(&other.union) {
            *a += b;
        }
        self.correct += other.correct;
        self.pixels += other.pixels;
        Ok(())
    }

    /// Pixels of `class` both predicted and labelled so (0 for class 0, which
    /// is ignored, and for classes out of range).
    pub fn intersection(&self, class: usize) -> u64 {
        if class == 0 {
            0
        } else {
            self.intersection.get(class).copied().unwrap_or(0)
        }
    }

    /// Pixels of `class` predicted or labelled so (0 for class 0 and classes
    /// out of range).
    pub fn union(&self, class: usize) -> u64 {
        if class == 0 {
            0
        } else {
            self.union.get(class).copied().unwrap_or(0)
        }
    }

    /// IoU of `class` as a fraction; `None` for class 0 and for a class with
    /// an empty union (never predicted and never present).
    pub fn iou(&self, class: usize) -> Option<f64> {
        let union = self.union(class);
        (union > 0).then(|| self.intersection(class) as f64 / union as f64)
    }

    /// IoU of classes `1..classes` in order (index 0 = class 1).
    pub fn ious(&self) -> Vec<Option<f64>> {
        (1..self.classes).map(|c| self.iou(c)).collect()
    }

    /// Mean IoU (fraction) over the classes with a non-empty union; `None` if
    /// there is none.
    pub fn mean_iou(&self) -> Option<f64> {
        let present: Vec<f64> = self.ious().into_iter().flatten().collect();
        (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64)
    }

    /// Classes in `1..classes` with an empty union, left out of the mean.
    pub fn empty_classes(&self) -> Vec<usize> {
        (1..self.classes).filter(|&c| self.union[c] == 0).collect()
    }

    /// Share of all pixels (label 0 included) predicted correctly, in percent;
    /// `None` before any pixel was added.
    pub fn pixel_accuracy(&self) -> Option<f64> {
        (self.pixels > 0).then(|| self.correct as f64 / self.pixels as f64 * 100.0)
    }

    /// Pixels added so far.
    pub fn pixels(&self) -> u64 {
        self.pixels
    }

    /// Pixels predicted correctly so far.
    pub fn correct(&self) -> u64 {
        self.correct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_copies() {
        let input: Vec<f32> = (0..12).map(|v| v as f32 * 0.37).collect();
        let mut out = vec![0f32; 12];
        upsample_bilinear(&input, 3, 2, 2, 2, 2, &mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn taps_match_hand_computed_torch_values() {
        // 2 -> 4: source positions -0.25 (clamped 0), 0.25, 0.75, 1.25 (clamped index 1).
        let taps = axis_taps(2, 4);
        let got: Vec<(usize, usize, f32)> = taps.iter().map(|t| (t.i0, t.i1, t.l1)).collect();
        assert_eq!(
            got,
            vec![(0, 1, 0.0), (0, 1, 0.25), (0, 1, 0.75), (1, 1, 0.25)]
        );
    }

    #[test]
    fn argmax_ties_and_nan() {
        assert_eq!(argmax_first(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax_first(&[1.0, f32::NAN, 5.0, f32::NAN]), 1);
        assert_eq!(argmax_first(&[f32::NAN, 5.0]), 0);
        assert_eq!(argmax_first(&[-1.0]), 0);
        // Long enough for the lane-wise path: ties in different lanes and in
        // the tail, NaN inside a chunk, all -inf.
        let mut v = vec![0.0f32; 151];
        v[150] = 2.0;
        v[9] = 2.0;
        v[3] = 1.0;
        assert_eq!(argmax_first(&v), 9);
        v[20] = f32::NAN;
        assert_eq!(argmax_first(&v), 20);
        assert_eq!(argmax_first(&[f32::NEG_INFINITY; 20]), 0);
        let mut rng = 12345u32;
        for _ in 0..200 {
            let v: Vec<f32> = (0..37)
                .map(|_| {
                    rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    ((rng >> 16) % 5) as f32
                })
                .collect();
            assert_eq!(argmax_first(&v), argmax_scalar(&v), "{v:?}");
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        let up = BilinearUpsampler::new(2, 2, 3, 3).unwrap();
        let mut out = [0u8; 9];
        assert!(up.argmax(&[0.0; 7], 2, &mut out).is_err());
        assert!(up.argmax(&[0.0; 8], 2, &mut out[..8]).is_err());
        assert!(up.argmax(&[0.0; 4 * 300], 300, &mut out).is_err());
        assert!(BilinearUpsampler::new(0, 2, 3, 3).is_err());
    }
}
