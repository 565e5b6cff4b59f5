//! The vision transformer every supported family runs on: pre-norm blocks
//! with multi-head self-attention and a two-layer MLP, the pieces where the
//! families differ being optional (LayerScale, registers, a CLS token,
//! learned position embeddings or RoPE, a LayerNorm before the blocks, a
//! LayerNorm after them). Each family's file (`dinov2.rs`, `clip.rs`,
//! `siglip.rs`, `dinov3.rs`) reads its geometry and maps its checkpoint's
//! tensor names onto these pieces.
//!
//! Tokens are ordered `[CLS, reg_0 .. reg_{r-1}, patch_0 .. patch_{n-1}]`
//! (each prefix part only where the family has it), the patches row-major.
//! "Layer i" is the residual stream after block i (0-based), before any
//! final LayerNorm: Hugging Face's `hidden_states[i + 1]`.

use std::collections::HashMap;
use std::sync::Mutex;

use burn::prelude::*;

use crate::config::{Family, HiddenAct, VitConfig};
use crate::error::{Result, VitError};
use crate::kernels;
use crate::resample::resample_grid;
use crate::weights::{HostTensor, TensorSource};

/// A dense layer `y = x W + b`, with `W` stored `[in, out]` (transposed from
/// PyTorch's `[out, in]` once, at load time).
#[derive(Debug, Clone)]
pub(crate) struct Linear<B: Backend> {
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    // x: [b, n, in] -> [b, n, out]
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        kernels::add_bias(self.product(x), self.bias.as_ref())
    }

    // x W without the bias, for the kernels that fuse it with what follows.
    // x: [b, n, in] -> [b, n, out]
    fn product(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let out = self.weight.dims()[1];
        kernels::matmul(x.reshape([b * n, d]), &self.weight).reshape([b, n, out])
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LayerNorm<B: Backend> {
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    // x: [b, n, d] -> [b, n, d]
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// One pre-norm transformer block.
#[derive(Debug, Clone)]
pub(crate) struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    /// q, k and v fused into one `[d, 3d]` product.
    pub qkv: Linear<B>,
    /// The attention's output projection.
    pub proj: Linear<B>,
    /// LayerScale after attention [d]; ones for families without it, which
    /// multiplies exactly and keeps one fused residual kernel.
    pub ls1: Tensor<B, 1>,
    pub norm2: LayerNorm<B>,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    /// LayerScale after the MLP [d] (ones where the family has none).
    pub ls2: Tensor<B, 1>,
    pub heads: usize,
    pub act: HiddenAct,
}

impl<B: Backend> Block<B> {
    // x: [b, n, d] -> [b, n, d]
    fn forward(&self, x: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        // x + attention(norm1(x)) * ls1, the projection's bias fused in.
        let h = self.attention(self.norm1.forward(x.clone()), rope);
        let x = kernels::scaled_residual(x, h, self.proj.bias.as_ref(), &self.ls1);
        // x + fc2(act(fc1(norm2(x)))) * ls2, each bias fused into the pass
        // after its product.
        let h = self.fc1.product(self.norm2.forward(x.clone()));
        let h = self.fc2.product(self.act.apply(h, self.fc1.bias.as_ref()));
        kernels::scaled_residual(x, h, self.fc2.bias.as_ref(), &self.ls2)
    }

    // x: [b, n, d] -> [b, n, d]
    fn attention(&self, x: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        // softmax(q k^T / sqrt(hd)) v for every head, from the fused q, k, v
        // product [b, n, 3d]; the output projection's bias is added with the
        // LayerScale.
        let mut qkv = self.qkv.forward(x);
        if let Some(rope) = rope {
            qkv = rope.rotate_qk(qkv, self.heads);
        }
        let ctx = kernels::attention(qkv, self.heads);
        self.proj.product(ctx)
    }
}

impl HiddenAct {
    /// `act(y + bias)` for y [b, n, m].
    fn apply<B: Backend>(self, y: Tensor<B, 3>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
        match self {
            // The exact GELU has a fused kernel; the others are the families
            // we run less, so plain tensor ops.
            HiddenAct::Gelu => kernels::bias_gelu(y, bias),
            HiddenAct::QuickGelu => {
                // x * sigmoid(1.702 x), OpenAI CLIP's approximation.
                let x = kernels::add_bias(y, bias);
                x.clone() * burn::tensor::activation::sigmoid(x * 1.702)
            }
            HiddenAct::GeluTanh => {
                // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), PyTorch's
                // `gelu(approximate="tanh")`.
                let x = kernels::add_bias(y, bias);
                let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715)
                    * (2.0 / std::f64::consts::PI).sqrt();
                x * (inner.tanh() + 1.0) * 0.5
            }
        }
    }
}

/// DINOv3's rotary position embedding for one patch grid: the patch
/// centres, normalised to [-1, 1] per axis, times `head_dim / 4`
/// frequencies per axis; applied to the queries and keys of the patches
/// only (the CLS and register tokens are not rotated).
#[derive(Debug, Clone)]
pub(crate) struct Rope<B: Backend> {
    /// [1, n, 1, hd]
    cos: Tensor<B, 4>,
    /// [1, n, 1, hd]
    sin: Tensor<B, 4>,
    prefix: usize,
}

impl<B: Backend> Rope<B> {
    fn new(
        theta: f64,
        head_dim: usize,
        rows: usize,
        cols: usize,
        prefix: usize,
        device: &B::Device,
    ) -> Self {
        let quarter = head_dim / 4;
        // Computed in f32 as the reference does, so the angles round alike.
        let inv_freq: Vec<f32> = (0..quarter)
            .map(|i| 1.0 / (theta as f32).powf((4 * i) as f32 / head_dim as f32))
            .collect();
        let centre = |i: usize, n: usize| 2.0 * ((i as f32 + 0.5) / n as f32) - 1.0;
        let n = rows * cols;
        let (mut cos, mut sin) = (
            Vec::with_capacity(n * head_dim),
            Vec::with_capacity(n * head_dim),
        );
        for r in 0..rows {
            for c in 0..cols {
                // [y freqs, x freqs] then the same again (`tile(2)`).
                let half: Vec<f32> = [centre(r, rows), centre(c, cols)]
                    .iter()
                    .flat_map(|&p| {
                        inv_freq
                            .iter()
                            .map(move |&f| 2.0 * std::f32::consts::PI * p * f)
                    })
                    .collect();
                for _ in 0..2 {
                    cos.extend(half.iter().map(|a| a.cos()));
                    sin.extend(half.iter().map(|a| a.sin()));
                }
            }
        }
        let shape = [1, n, 1, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
            prefix,
        }
    }

    /// Rotates the q and k thirds of a fused qkv [b, t, 3d] at the patch tokens.
    fn rotate_qk(&self, qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
        let [b, t, d3] = qkv.dims();
        let d = d3 / 3;
        let hd = d / heads;
        let p = self.prefix;
        let rotate = |x: Tensor<B, 3>| -> Tensor<B, 3> {
            // x: [b, t - p, d] -> [b, t - p, heads, hd]
            let x = x.reshape([b, t - p, heads, hd]);
            let x1 = x.clone().slice([0..b, 0..t - p, 0..heads, 0..hd / 2]);
            let x2 = x.clone().slice([0..b, 0..t - p, 0..heads, hd / 2..hd]);
            let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
            (x * self.cos.clone() + rotated * self.sin.clone()).reshape([b, t - p, d])
        };
        let part = |lo: usize, hi: usize| qkv.clone().slice([0..b, 0..t, lo..hi]);
        let q = part(0, d);
        let k = part(d, 2 * d);
        let patches = |x: Tensor<B, 3>| {
            Tensor::cat(
                vec![
                    x.clone().slice([0..b, 0..p, 0..d]),
                    rotate(x.slice([0..b, p..t, 0..d])),
                ],
                1,
            )
        };
        Tensor::cat(vec![patches(q), patches(k), part(2 * d, 3 * d)], 2)
    }
}

/// What a family's loader hands over: the model's tensors, named after
/// their role, each already in our layout.
pub(crate) struct Parts<B: Backend> {
    /// [1, 1, d]
    pub cls_token: Option<Tensor<B, 3>>,
    /// [1, r, d]
    pub register_tokens: Option<Tensor<B, 3>>,
    /// Learned position embeddings for the native grid g, CLS row first
    /// where the family has a CLS token: [(cls +) g*g, d], on the host.
    pub position_embeddings: Option<HostTensor>,
    /// The patch convolution as a linear map over flattened `[c, p, p]`
    /// patches: [c*p*p, d]
    pub patch_embed: Linear<B>,
    /// A LayerNorm on the embeddings before the first block (CLIP).
    pub pre_norm: Option<LayerNorm<B>>,
    pub blocks: Vec<Block<B>>,
    /// The LayerNorm that gives `last_hidden_state` (none for CLIP, whose
    /// `post_layernorm` normalises the pooled CLS token only).
    pub norm: Option<LayerNorm<B>>,
}

/// Reads tensors from a checkpoint by name (under a prefix) and uploads
/// them in our layout, with every shape checked against the config.
pub(crate) struct Loader<'a, B: Backend> {
    pub src: &'a dyn TensorSource,
    pub prefix: String,
    pub device: &'a B::Device,
    pub eps: f64,
}

impl<'a, B: Backend> Loader<'a, B> {
    /// Reads `config`'s tensors from `src`, each name under `prefix` (e.g.
    /// `vision_model.` in a multimodal checkpoint).
    pub fn new(
        config: &VitConfig,
        src: &'a dyn TensorSource,
        prefix: impl Into<String>,
        device: &'a B::Device,
    ) -> Self {
        Self {
            src,
            prefix: prefix.into(),
            device,
            eps: config.layer_norm_eps,
        }
    }

    pub fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.src
            .read_shaped(&format!("{}{name}", self.prefix), shape)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.src.contains(&format!("{}{name}", self.prefix))
    }

    pub fn vector(&self, name: &str, d: usize) -> Result<Tensor<B, 1>> {
        Ok(upload1(self.host(name, &[d])?, self.device))
    }

    pub fn tensor3(&self, name: &str, shape: [usize; 3]) -> Result<Tensor<B, 3>> {
        let t = self.host(name, &shape)?;
        Ok(Tensor::from_data(
            TensorData::new(t.data, shape),
            self.device,
        ))
    }

    pub fn ones(&self, d: usize) -> Tensor<B, 1> {
        Tensor::ones([d], self.device)
    }

    pub fn norm(&self, name: &str, d: usize) -> Result<LayerNorm<B>> {
        Ok(LayerNorm {
            weight: self.vector(&format!("{name}.weight"), d)?,
            bias: self.vector(&format!("{name}.bias"), d)?,
            eps: self.eps,
        })
    }

    /// `name.weight` [out, in] and, if `bias`, `name.bias` [out].
    pub fn dense(&self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear<B>> {
        let b = if bias {
            Some(self.host(&format!("{name}.bias"), &[out])?)
        } else {
            None
        };
        Ok(self.linear(self.host(&format!("{name}.weight"), &[out, inp])?, b))
    }

    /// PyTorch [out, in...] -> ours [in, out]
    pub fn linear(&self, w: HostTensor, b: Option<HostTensor>) -> Linear<B> {
        let (out, inp) = (w.shape[0], w.data.len() / w.shape[0].max(1));
        // Transposed in memory here, not as a strided view: the CPU matmul
        // (gemm) packs a weight stored [out, in] element by element on every
        // call, which cost a fifth of a batch-1 forward (docs/performance.md).
        let weight = Tensor::<B, 2>::from_data(
            TensorData::new(transposed(&w.data, out, inp), [inp, out]),
            self.device,
        );
        Linear {
            weight,
            bias: b.map(|b| upload1(b, self.device)),
        }
    }

    /// q, k and v projections `names[0..3]` ([d, d] each) fused into one
    /// [d, 3d] map. A projection whose bias is absent from the file while
    /// another's is present gets a zero bias (DINOv3 has no key bias).
    pub fn fused_qkv(&self, names: [&str; 3], d: usize) -> Result<Linear<B>> {
        let mut w = Vec::with_capacity(3 * d * d);
        for name in names {
            w.extend(self.host(&format!("{name}.weight"), &[d, d])?.data);
        }
        let present: Vec<bool> = names
            .iter()
            .map(|n| self.contains(&format!("{n}.bias")))
            .collect();
        let bias = if present.iter().any(|&p| p) {
            let mut b = Vec::with_capacity(3 * d);
            for (name, present) in names.iter().zip(present) {
                if present {
                    b.extend(self.host(&format!("{name}.bias"), &[d])?.data);
                } else {
                    b.extend(std::iter::repeat_n(0.0, d));
                }
            }
            Some(HostTensor::new(vec![3 * d], b))
        } else {
            None
        };
        Ok(self.linear(HostTensor::new(vec![3 * d, d], w), bias))
    }
}

/// `m` [rows, cols] row-major -> [cols, rows] row-major, in tiles that
/// stay in cache on both sides.
fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0f32; m.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    t
}

fn upload1<B: Backend>(t: HostTensor, device: &B::Device) -> Tensor<B, 1> {
    let n = t.data.len();
    Tensor::from_data(TensorData::new(t.data, [n]), device)
}

/// A vision transformer (DINOv2, CLIP, SigLIP / SigLIP 2 or DINOv3),
/// frozen (inference only).
///
/// ```no_run
/// use burn::backend::NdArray;
/// use sae_steer_vit::Vit;
/// # fn main() -> Result<(), sae_steer_vit::VitError> {
/// let device = Default::default();
/// let vit = Vit::<NdArray>::load("facebook/dinov2-with-registers-base", &device)?;
/// let pixels = vit.preprocess().apply_path("cat.jpg")?.to_tensor::<NdArray>(&device);
/// let layer10 = vit.forward_until(pixels, 10)?; // [1, 261, 768]
/// let last = vit.forward_from(10, layer10)?;     // last_hidden_state
/// # Ok(()) }
/// ```
pub struct Vit<B: Backend> {
    config: VitConfig,
    preprocess: crate::Preprocess,
    cls_token: Option<Tensor<B, 3>>,
    register_tokens: Option<Tensor<B, 3>>,
    /// Kept on the host: each new input grid resamples it once.
    position_embeddings: Option<HostTensor>,
    /// Per (rows, cols) patch grid: resampled position embeddings
    /// [1, (cls +) rows*cols, d], or DINOv3's rotary tables.
    grid_cache: Mutex<HashMap<(usize, usize), GridTables<B>>>,
    patch_embed: Linear<B>,
    pre_norm: Option<LayerNorm<B>>,
    blocks: Vec<Block<B>>,
    norm: Option<LayerNorm<B>>,
    device: B::Device,
}

#[derive(Clone)]
enum GridTables<B: Backend> {
    Positions(Tensor<B, 3>),
    Rope(Rope<B>),
    Nothing,
}

impl<B: Backend> Vit<B> {
    pub(crate) fn from_parts(
        config: VitConfig,
        preprocess: crate::Preprocess,
        parts: Parts<B>,
        device: &B::Device,
    ) -> Self {
        Self {
            config,
            preprocess,
            cls_token: parts.cls_token,
            register_tokens: parts.register_tokens,
            position_embeddings: parts.position_embeddings,
            grid_cache: Mutex::new(HashMap::new()),
            patch_embed: parts.patch_embed,
            pre_norm: parts.pre_norm,
            blocks: parts.blocks,
            norm: parts.norm,
            device: device.clone(),
        }
    }

    /// Builds the model from any tensor source holding a Hugging Face state
    /// dict of `config`'s family (a backbone nested under its task head or
    /// multimodal model, e.g. `vision_model.`, is found too). The model
    /// preprocesses images with its family's default pipeline
    /// ([`crate::Preprocess::for_family`]).
    pub fn from_source(
        config: VitConfig,
        src: &dyn TensorSource,
        device: &B::Device,
    ) -> Result<Self> {
        let preprocess = crate::Preprocess::for_family(&config);
        let parts = match config.family {
            Family::Dinov2 => {
                crate::dinov2::parts(&config, src, crate::dinov2::KeyLayout::HuggingFace, device)?
            }
            Family::Clip => crate::clip::parts(&config, src, device)?,
            Family::Siglip => crate::siglip::parts(&config, src, device)?,
            Family::Dinov3 => crate::dinov3::parts(&config, src, device)?,
        };
        Ok(Self::from_parts(config, preprocess, parts, device))
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// How this model's images are preprocessed: its processor config where
    /// the folder has one, else its family's default (for DINOv2 the
    /// reference's pipeline).
    pub fn preprocess(&self) -> crate::Preprocess {
        self.preprocess
    }

    /// Replaces the preprocessing (e.g. a smaller crop for a quick run).
    pub fn with_preprocess(mut self, preprocess: crate::Preprocess) -> Self {
        self.preprocess = preprocess;
        self
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Number of transformer blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// The position embeddings or rotary tables of a `rows x cols` patch grid.
    fn grid_tables(&self, rows: usize, cols: usize) -> GridTables<B> {
        let mut cache = self.grid_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((rows, cols))
            .or_insert_with(|| {
                let c = &self.config;
                if let Some(theta) = c.rope_theta {
                    return GridTables::Rope(Rope::new(
                        theta,
                        c.head_dim(),
                        rows,
                        cols,
                        c.prefix_tokens(),
                        &self.device,
                    ));
                }
                let Some(pos) = &self.position_embeddings else {
                    return GridTables::Nothing;
                };
                let d = c.hidden_size;
                let g = c.native_grid();
                let lead = usize::from(self.cls_token.is_some());
                let pe = &pos.data;
                let mut data = pe[..lead * d].to_vec();
                if rows == g && cols == g {
                    data.extend_from_slice(&pe[lead * d..]);
                } else {
                    data.extend(resample_grid(
                        &pe[lead * d..],
                        g,
                        d,
                        rows,
                        cols,
                        c.pos_embed_resample,
                    ));
                }
                GridTables::Positions(Tensor::from_data(
                    TensorData::new(data, [1, lead + rows * cols, d]),
                    &self.device,
                ))
            })
            .clone()
    }

    /// Patch embedding, CLS, position embeddings, registers and (CLIP) the
    /// LayerNorm before the blocks.
    ///
    /// pixels: [b, c, H, W] (H, W multiples of the patch) -> [b, prefix + n, d]
    pub fn embed(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let [b, c, h, w] = pixels.dims();
        let p = self.config.patch_size;
        if c != self.config.num_channels {
            return Err(VitError::InputShape {
                channels: self.config.num_channels,
                found: vec![b, c, h, w],
            });
        }
        if h % p != 0 || w % p != 0 || h == 0 || w == 0 {
            return Err(VitError::InputSize {
                height: h,
                width: w,
                patch: p,
            });
        }
        let (rows, cols) = (h / p, w / p);
        let d = self.config.hidden_size;
        // A stride-p convolution is a matmul over flattened patches:
        // [b, c, rows, p, cols, p] -> [b, rows, cols, c, p, p] -> [b, n, c*p*p]
        let patches = pixels
            .reshape([b, c, rows, p, cols, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, rows * cols, c * p * p]);
        let mut x = self.patch_embed.forward(patches);
        if let Some(cls) = &self.cls_token {
            x = Tensor::cat(vec![cls.clone().expand([b, 1, d]), x], 1);
        }
        if let GridTables::Positions(pos) = self.grid_tables(rows, cols) {
            x = x + pos;
        }
        // Registers carry no position embedding: they go in after it is
        // added, right after the CLS token.
        if let Some(reg) = &self.register_tokens {
            let r = reg.dims()[1];
            let [_, t, _] = x.dims();
            let lead = usize::from(self.cls_token.is_some());
            x = Tensor::cat(
                vec![
                    x.clone().slice([0..b, 0..lead, 0..d]),
                    reg.clone().expand([b, r, d]),
                    x.slice([0..b, lead..t, 0..d]),
                ],
                1,
            );
        }
        Ok(match &self.pre_norm {
            Some(norm) => norm.forward(x),
            None => x,
        })
    }

    fn check_layer(&self, layer: usize) -> Result<()> {
        if layer >= self.blocks.len() {
            return Err(VitError::Layer {
                layer,
                depth: self.blocks.len(),
            });
        }
        Ok(())
    }

    /// The patch grid of a residual stream [b, tokens, d], for the rotary
    /// tables: the input is square unless told otherwise, so a stream
    /// whose patch count is not a square is refused for RoPE models.
    fn stream_grid(&self, tokens: usize) -> Result<(usize, usize)> {
        let n = tokens.saturating_sub(self.config.prefix_tokens());
        let g = n.isqrt();
        if g * g != n || n == 0 {
            return Err(VitError::Unsupported {
                path: "<residual stream>".into(),
                message: format!(
                    "{tokens} tokens are not {} prefix tokens and a square patch grid; \
                     run the blocks from the pixels instead",
                    self.config.prefix_tokens()
                ),
            });
        }
        Ok((g, g))
    }

    /// Runs blocks `first..=last` on a residual stream of a `grid` of
    /// patches, calling `tap` with each block's output.
    fn run_grid(
        &self,
        mut x: Tensor<B, 3>,
        grid: (usize, usize),
        first: usize,
        last: usize,
        mut tap: impl FnMut(usize, &Tensor<B, 3>),
    ) -> Result<Tensor<B, 3>> {
        if first <= last {
            self.check_layer(last)?;
        }
        let rope = match self.config.rope_theta {
            Some(_) => match self.grid_tables(grid.0, grid.1) {
                GridTables::Rope(r) => Some(r),
                _ => None,
            },
            None => None,
        };
        for i in first..=last.min(self.blocks.len().saturating_sub(1)) {
            x = self.blocks[i].forward(x, rope.as_ref());
            tap(i, &x);
        }
        Ok(x)
    }

    /// Runs blocks `first..=last` on a residual stream, calling `tap` with
    /// each block's output. For RoPE models (DINOv3) the patch grid is
    /// taken to be square.
    pub fn run_blocks(
        &self,
        x: Tensor<B, 3>,
        first: usize,
        last: usize,
        tap: impl FnMut(usize, &Tensor<B, 3>),
    ) -> Result<Tensor<B, 3>> {
        let grid = if self.config.rope_theta.is_some() && first <= last {
            self.stream_grid(x.dims()[1])?
        } else {
            (0, 0)
        };
        self.run_grid(x, grid, first, last, tap)
    }

    fn pixel_grid(&self, pixels: &Tensor<B, 4>) -> (usize, usize) {
        let [_, _, h, w] = pixels.dims();
        let p = self.config.patch_size.max(1);
        (h / p, w / p)
    }

    /// Runs from the pixels to the residual stream after block `layer`.
    ///
    /// pixels: [b, c, H, W] -> [b, tokens, d]
    pub fn forward_until(&self, pixels: Tensor<B, 4>, layer: usize) -> Result<Tensor<B, 3>> {
        self.check_layer(layer)?;
        let grid = self.pixel_grid(&pixels);
        let x = self.embed(pixels)?;
        self.run_grid(x, grid, 0, layer, |_, _| {})
    }

    /// Like [`Self::forward_until`], also returning the residual stream after
    /// each block in `taps` (every tap must be `<= layer`).
    pub fn forward_taps(
        &self,
        pixels: Tensor<B, 4>,
        layer: usize,
        taps: &[usize],
    ) -> Result<(Tensor<B, 3>, LayerTaps<B>)> {
        self.check_layer(layer)?;
        if let Some(&bad) = taps.iter().find(|&&t| t > layer) {
            return Err(VitError::Layer {
                layer: bad,
                depth: layer + 1,
            });
        }
        let mut kept = Vec::with_capacity(taps.len());
        let grid = self.pixel_grid(&pixels);
        let x = self.embed(pixels)?;
        let x = self.run_grid(x, grid, 0, layer, |i, x| {
            if taps.contains(&i) {
                kept.push((i, x.clone()));
            }
        })?;
        Ok((x, kept))
    }

    /// Finishes the network from the residual stream after block `layer`:
    /// the remaining blocks and the final LayerNorm, giving what transformers
    /// calls `last_hidden_state`.
    ///
    /// `forward_from(l, forward_until(px, l)) == forward(px)`, exactly.
    /// residual: [b, tokens, d] -> [b, tokens, d]
    pub fn forward_from(&self, layer: usize, residual: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        self.check_layer(layer)?;
        let x = self.run_blocks(residual, layer + 1, self.blocks.len() - 1, |_, _| {})?;
        Ok(self.final_norm(x))
    }

    /// The whole network: `last_hidden_state` [b, tokens, d].
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let grid = self.pixel_grid(&pixels);
        let x = self.embed(pixels)?;
        let x = self.run_grid(x, grid, 0, self.blocks.len() - 1, |_, _| {})?;
        Ok(self.final_norm(x))
    }

    /// The LayerNorm after the last block (the identity for CLIP, whose
    /// `last_hidden_state` is not normalised): [b, tokens, d] -> [b, tokens, d]
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// Splits tokens into CLS [b, d] (where the family has one), registers
    /// [b, r, d] and patches [b, n, d].
    pub fn split_tokens(&self, x: Tensor<B, 3>) -> Tokens<B> {
        let [b, t, d] = x.dims();
        let lead = usize::from(self.cls_token.is_some());
        let r = self.config.num_register_tokens;
        Tokens {
            cls: (lead == 1).then(|| x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d])),
            registers: x.clone().slice([0..b, lead..lead + r, 0..d]),
            patches: x.slice([0..b, lead + r..t, 0..d]),
        }
    }
}

/// Residual streams kept by [`Vit::forward_taps`]: (block index, [b, tokens, d]).
pub type LayerTaps<B> = Vec<(usize, Tensor<B, 3>)>;

/// Tokens of a layer, split by kind.
#[derive(Debug, Clone)]
pub struct Tokens<B: Backend> {
    /// [b, d]; `None` for families without a CLS token (SigLIP).
    pub cls: Option<Tensor<B, 2>>,
    /// [b, r, d]
    pub registers: Tensor<B, 3>,
    /// [b, n, d], row-major over the patch grid
    pub patches: Tensor<B, 3>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn transposed_moves_every_element_across_ragged_tiles() {
        // 37 x 70: neither side a multiple of the tile.
        let (rows, cols) = (37, 70);
        let m: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let t = super::transposed(&m, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], m[r * cols + c]);
            }
        }
    }
}
