//! Steering edits of SAE latents with the error term kept (reference facts section 6).
//!
//! At the SAE's layer, in normalized units: `f = encode(x_n)`,
//! `err = x_n - decode(f)`, change the chosen latents to get `f'`, and
//! `x_n' = err + decode(f')`. Decode is linear, so this equals
//! `x' = x + scalar * sum_j (f'_j - f_j(x)) * W_dec[j]`, which needs only the
//! edited latents' encoder columns and decoder rows ([`Edit::apply`]).

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::error::{Result, SaeError};
use crate::sae::Sae;

/// What happens to one latent's activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EditOp {
    /// `f_j' = value` (the preprint's steering: set, not add).
    Set(f32),
    /// `f_j' = factor * f_j`.
    Scale(f32),
    /// `f_j' = f_j + delta`.
    Add(f32),
}

impl EditOp {
    /// The web app's slider: `s` in [-10, 10] sets the latent to `s * max_obs`,
    /// where `max_obs` is its largest activation over the reference images.
    pub fn slider(s: f32, max_obs: f32) -> Self {
        Self::Set(slider_value(s, max_obs))
    }

    /// Applies the op to one value.
    pub fn apply_value(self, f: f32) -> f32 {
        match self {
            Self::Set(v) => v,
            Self::Scale(a) => a * f,
            Self::Add(d) => f + d,
        }
    }

    fn apply_tensor<B: Backend>(self, f: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Set(v) => f.zeros_like().add_scalar(v),
            Self::Scale(a) => f.mul_scalar(a),
            Self::Add(d) => f.add_scalar(d),
        }
    }
}

/// Slider position to latent value: `s * max_obs`.
pub fn slider_value(s: f32, max_obs: f32) -> f32 {
    s * max_obs
}

/// Which rows (tokens) of an `[n, d]` batch an edit touches.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Rows {
    #[default]
    All,
    /// One flag per row; rows with `false` pass through unchanged.
    Mask(Vec<bool>),
}

/// A set of latent edits, and optionally a shift along a direction,
/// applied to some rows. Ops on the same latent compose in the order they
/// were added; the shift is added after them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Edit {
    pub latents: Vec<(usize, EditOp)>,
    pub shift: Option<Shift>,
    pub rows: Rows,
}

/// `x' = x + scale * direction` in model units (no SAE involved).
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    /// `[d]`
    pub direction: Vec<f32>,
    pub scale: f32,
}

impl Edit {
    /// The empty edit: leaves every input unchanged.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn op(mut self, latent: usize, op: EditOp) -> Self {
        self.latents.push((latent, op));
        self
    }

    pub fn set(self, latent: usize, value: f32) -> Self {
        self.op(latent, EditOp::Set(value))
    }

    pub fn scale(self, latent: usize, factor: f32) -> Self {
        self.op(latent, EditOp::Scale(factor))
    }

    pub fn add(self, latent: usize, delta: f32) -> Self {
        self.op(latent, EditOp::Add(delta))
    }

    /// Adds `scale * direction` (`[d]`, model units) to the edited rows.
    pub fn shift(mut self, direction: Vec<f32>, scale: f32) -> Self {
        self.shift = Some(Shift { direction, scale });
        self
    }

    /// Restricts the edit to the rows flagged `true`.
    pub fn on_rows(mut self, mask: Vec<bool>) -> Self {
        self.rows = Rows::Mask(mask);
        self
    }

    /// Whether the edit changes nothing, whatever the input.
    pub fn is_empty(&self) -> bool {
        (self.latents.is_empty() && self.shift.is_none())
            || matches!(&self.rows, Rows::Mask(m) if !m.contains(&true))
    }

    /// The edit through the full encode/decode, `[n, d] -> [n, d]` in model units.
    ///
    /// Costs two `[n, d] x [d, s]`-sized products; it is the reference that
    /// [`Edit::apply`] must match. The result is `x + scalar * (x_n' - x_n)`
    /// rather than `denormalize(x_n')`: the two agree except where saev's clamp
    /// changed `x`, and there the clamped-away part must survive like any other
    /// part of the error term.
    pub fn apply_full<B: Backend>(&self, sae: &Sae<B>, x: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let groups = self.check(sae, &x)?;
        if self.is_empty() {
            return Ok(x);
        }
        let [n, _] = x.dims();
        let device = x.device();
        let x_n = sae.normalize(x.clone());
        let f = sae.encode(x_n.clone()); // [n, s]
        let err = x_n.clone().sub(sae.decode(f.clone()));
        let mask = self.row_mask::<B>(n, &device);
        let mut f_edit = f.clone();
        for (j, ops) in &groups {
            let col = f.clone().narrow(1, *j, 1); // [n, 1]
            let new = edited(col.clone(), ops, mask.clone());
            f_edit = f_edit.slice_assign([0..n, *j..*j + 1], new);
        }
        let x_n_edit = err.add(sae.decode(f_edit));
        let x = x.add(x_n_edit.sub(x_n).mul_scalar(sae.scalar()));
        Ok(self.add_shift(x, mask))
    }

    /// The edit in rank-1 form, `[n, d] -> [n, d]` in model units:
    /// `x' = x + scalar * sum_j (f'_j - f_j(x)) * W_dec[j]`.
    ///
    /// For ReLU and JumpReLU SAEs only the edited latents' encoder columns and
    /// decoder rows are touched. A TopK latent's value depends on all other
    /// latents of its row, so TopK SAEs still compute all pre-activations.
    pub fn apply<B: Backend>(&self, sae: &Sae<B>, x: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let groups = self.check(sae, &x)?;
        if self.is_empty() {
            return Ok(x);
        }
        let [n, _] = x.dims();
        let device = x.device();
        let mask = self.row_mask::<B>(n, &device);
        if groups.is_empty() {
            return Ok(self.add_shift(x, mask));
        }
        let latents: Vec<i64> = groups.iter().map(|(j, _)| *j as i64).collect();
        let m = latents.len();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(latents, [m]), &device);
        let f_sel = sae.encode_latents(sae.normalize(x.clone()), idx.clone()); // [n, m]
        let deltas: Vec<Tensor<B, 2>> = groups
            .iter()
            .enumerate()
            .map(|(k, (_, ops))| {
                let col = f_sel.clone().narrow(1, k, 1);
                edited(col.clone(), ops, mask.clone()).sub(col)
            })
            .collect();
        let delta = Tensor::cat(deltas, 1); // [n, m]
        let rows = sae.w_dec.clone().select(0, idx); // [m, d]
        let x = x.add(delta.matmul(rows).mul_scalar(sae.scalar()));
        Ok(self.add_shift(x, mask))
    }

    /// `x + scale * direction` on the masked rows (`x` without a shift).
    fn add_shift<B: Backend>(&self, x: Tensor<B, 2>, mask: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        let Some(shift) = &self.shift else {
            return x;
        };
        let d = shift.direction.len();
        let v = Tensor::<B, 2>::from_data(
            TensorData::new(shift.direction.clone(), [1, d]),
            &x.device(),
        )
        .mul_scalar(shift.scale);
        match mask {
            None => x.add(v),
            Some(mask) => x.add(mask.matmul(v)),
        }
    }

    /// Validates the edit against the SAE and input; returns the ops grouped
    /// by latent in order of first appearance.
    fn check<B: Backend>(
        &self,
        sae: &Sae<B>,
        x: &Tensor<B, 2>,
    ) -> Result<Vec<(usize, Vec<EditOp>)>> {
        sae.check_input(x)?;
        let [n, _] = x.dims();
        if let Rows::Mask(mask) = &self.rows
            && mask.len() != n
        {
            return Err(SaeError::Edit(format!(
                "row mask has {} entries, the batch has {n} rows",
                mask.len()
            )));
        }
        if let Some(shift) = &self.shift
            && shift.direction.len() != sae.d_model()
        {
            return Err(SaeError::Edit(format!(
                "shift direction has {} entries, the SAE width is {}",
                shift.direction.len(),
                sae.d_model()
            )));
        }
        let mut groups: Vec<(usize, Vec<EditOp>)> = Vec::new();
        for &(j, op) in &self.latents {
            if j >= sae.d_sae() {
                return Err(SaeError::Edit(format!(
                    "latent {j} does not exist: the SAE has {} latents",
                    sae.d_sae()
                )));
            }
            match groups.iter_mut().find(|(g, _)| *g == j) {
                Some((_, ops)) => ops.push(op),
                None => groups.push((j, vec![op])),
            }
        }
        Ok(groups)
    }

    /// `[n, 1]` of 1.0 for edited rows and 0.0 for the others; `None` for all rows.
    fn row_mask<B: Backend>(&self, n: usize, device: &B::Device) -> Option<Tensor<B, 2>> {
        match &self.rows {
            Rows::All => None,
            Rows::Mask(mask) => {
                let flags: Vec<f32> = mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
                Some(Tensor::from_data(TensorData::new(flags, [n, 1]), device))
            }
        }
    }
}

/// A latent's column `[n, 1]` after its ops, on masked rows only.
fn edited<B: Backend>(
    col: Tensor<B, 2>,
    ops: &[EditOp],
    mask: Option<Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let new = ops.iter().fold(col.clone(), |f, op| op.apply_tensor(f));
    match mask {
        None => new,
        Some(mask) => col.clone().add(new.sub(col).mul(mask)),
    }
}
