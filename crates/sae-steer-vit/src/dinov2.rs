//! DINOv2 vision transformer (Oquab et al. 2023; registers: Darcet et al. 2024).
//!
//! Written after the checkpoint: every tensor keeps the name it has in the
//! Hugging Face `Dinov2Model` / `Dinov2WithRegistersModel` state dict, and the
//! torch-hub layout (`dinov2_vitb14_reg4_pretrain.pth`) is mapped onto it.
//!
//! Tokens are ordered `[CLS, reg_0 .. reg_{r-1}, patch_0 .. patch_{n-1}]`, the
//! patches row-major. "Layer i" is the residual stream after block i (0-based),
//! before the final LayerNorm.

use std::collections::HashMap;
#[cfg(feature = "random")]
use std::path::Path;
use std::sync::Mutex;

use burn::prelude::*;

use crate::config::Dinov2Config;
use crate::error::{Result, VitError};
use crate::kernels;
use crate::resample::resample_grid;
use crate::weights::{HostTensor, TensorSource};

/// A dense layer `y = x W + b`, with `W` stored `[in, out]` (transposed from
/// PyTorch's `[out, in]` once, at load time).
#[derive(Debug, Clone)]
struct Linear<B: Backend> {
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
        x.reshape([b * n, d])
            .matmul(self.weight.clone())
            .reshape([b, n, out])
    }
}

#[derive(Debug, Clone)]
struct LayerNorm<B: Backend> {
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

/// One pre-norm transformer block with LayerScale.
#[derive(Debug, Clone)]
struct Block<B: Backend> {
    norm1: LayerNorm<B>,
    /// q, k and v fused into one `[d, 3d]` product.
    qkv: Linear<B>,
    /// `attention.output.dense`
    proj: Linear<B>,
    /// `layer_scale1.lambda1` [d]
    ls1: Tensor<B, 1>,
    norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    /// `layer_scale2.lambda1` [d]
    ls2: Tensor<B, 1>,
    heads: usize,
}

impl<B: Backend> Block<B> {
    // x: [b, n, d] -> [b, n, d]
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        // x + attention(norm1(x)) * ls1, the projection's bias fused in.
        let h = self.attention(self.norm1.forward(x.clone()));
        let x = kernels::scaled_residual(x, h, self.proj.bias.as_ref(), &self.ls1);
        // x + fc2(gelu(fc1(norm2(x)))) * ls2, each bias fused into the pass
        // after its product.
        let h = self.fc1.product(self.norm2.forward(x.clone()));
        let h = self
            .fc2
            .product(kernels::bias_gelu(h, self.fc1.bias.as_ref()));
        kernels::scaled_residual(x, h, self.fc2.bias.as_ref(), &self.ls2)
    }

    // x: [b, n, d] -> [b, n, d]
    fn attention(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        // softmax(q k^T / sqrt(hd)) v for every head, from the fused q, k, v
        // product [b, n, 3d]; the output projection's bias is added with the
        // LayerScale.
        let ctx = kernels::attention(self.qkv.forward(x), self.heads);
        self.proj.product(ctx)
    }
}

/// Where a tensor lives in the two checkpoint layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// `Dinov2Model` / `Dinov2WithRegistersModel` state dicts.
    HuggingFace,
    /// `torch.hub.load("facebookresearch/dinov2", ...)` state dicts.
    TorchHub,
}

/// A DINOv2 ViT, frozen (inference only).
///
/// ```no_run
/// use burn::backend::NdArray;
/// use sae_steer_vit::Dinov2;
/// # fn main() -> Result<(), sae_steer_vit::VitError> {
/// let device = Default::default();
/// let vit = Dinov2::<NdArray>::load("facebook/dinov2-with-registers-base", &device)?;
/// let pixels = sae_steer_vit::preprocess_path("cat.jpg")?.to_tensor::<NdArray>(&device);
/// let layer10 = vit.forward_until(pixels, 10)?; // [1, 261, 768]
/// let normed = vit.forward_from(10, layer10)?;   // final LayerNorm output
/// # Ok(()) }
/// ```
pub struct Dinov2<B: Backend> {
    config: Dinov2Config,
    /// `embeddings.cls_token` [1, 1, d]
    cls_token: Tensor<B, 3>,
    /// `embeddings.register_tokens` [1, r, d]
    register_tokens: Option<Tensor<B, 3>>,
    /// `embeddings.position_embeddings` [1, 1 + g*g, d] for the native grid g,
    /// kept on the host: each new input grid resamples it once.
    position_embeddings: HostTensor,
    /// Resampled position embeddings per (rows, cols) patch grid: [1, 1 + rows*cols, d]
    pos_cache: Mutex<HashMap<(usize, usize), Tensor<B, 3>>>,
    /// `embeddings.patch_embeddings.projection` as a linear map over
    /// flattened `[c, p, p]` patches: [c*p*p, d]
    patch_embed: Linear<B>,
    blocks: Vec<Block<B>>,
    /// `layernorm`
    norm: LayerNorm<B>,
    device: B::Device,
}

impl<B: Backend> Dinov2<B> {
    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Number of transformer blocks.
    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Builds the model from any tensor source in either key layout.
    pub fn from_source(
        config: Dinov2Config,
        src: &dyn TensorSource,
        layout: KeyLayout,
        device: &B::Device,
    ) -> Result<Self> {
        let d = config.hidden_size;
        let c = config.num_channels;
        let p = config.patch_size;
        let g = config.native_grid();
        let r = config.num_register_tokens;
        let m = config.intermediate_size;
        // Models saved from a task head (e.g. `Dinov2ForImageClassification`)
        // nest the backbone under `dinov2.`.
        let prefix = if layout == KeyLayout::HuggingFace
            && !src.contains("embeddings.cls_token")
            && src.contains("dinov2.embeddings.cls_token")
        {
            "dinov2."
        } else {
            ""
        };
        let get = |name: &str, shape: &[usize]| src.read_shaped(&format!("{prefix}{name}"), shape);
        let up1 = |t: HostTensor| {
            Tensor::<B, 1>::from_data(
                TensorData::new(t.data, [t.shape.iter().product::<usize>()]),
                device,
            )
        };
        let up3 = |t: HostTensor, s: [usize; 3]| {
            Tensor::<B, 3>::from_data(TensorData::new(t.data, s), device)
        };
        // PyTorch [out, in] -> ours [in, out]
        let linear = |w: HostTensor, b: Option<HostTensor>| -> Linear<B> {
            let (out, inp) = (w.shape[0], w.data.len() / w.shape[0]);
            let weight =
                Tensor::<B, 2>::from_data(TensorData::new(w.data, [out, inp]), device).transpose();
            Linear {
                weight,
                bias: b.map(up1),
            }
        };
        let norm = |name: &str| -> Result<LayerNorm<B>> {
            Ok(LayerNorm {
                weight: up1(get(&format!("{name}.weight"), &[d])?),
                bias: up1(get(&format!("{name}.bias"), &[d])?),
                eps: config.layer_norm_eps,
            })
        };
        let dense = |name: &str, out: usize, inp: usize| -> Result<Linear<B>> {
            Ok(linear(
                get(&format!("{name}.weight"), &[out, inp])?,
                Some(get(&format!("{name}.bias"), &[out])?),
            ))
        };

        let hf = layout == KeyLayout::HuggingFace;
        let name = |hf_name: &str, hub_name: &str| {
            if hf {
                hf_name.to_string()
            } else {
                hub_name.to_string()
            }
        };

        let cls_token = up3(
            get(&name("embeddings.cls_token", "cls_token"), &[1, 1, d])?,
            [1, 1, d],
        );
        let register_tokens = if r > 0 {
            Some(up3(
                get(
                    &name("embeddings.register_tokens", "register_tokens"),
                    &[1, r, d],
                )?,
                [1, r, d],
            ))
        } else {
            None
        };
        let position_embeddings = get(
            &name("embeddings.position_embeddings", "pos_embed"),
            &[1, 1 + g * g, d],
        )?;
        let proj = name("embeddings.patch_embeddings.projection", "patch_embed.proj");
        let patch_embed = linear(
            get(&format!("{proj}.weight"), &[d, c, p, p])?,
            Some(get(&format!("{proj}.bias"), &[d])?),
        );

        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let blk = |hf_name: &str, hub_name: &str| {
                if hf {
                    format!("encoder.layer.{i}.{hf_name}")
                } else {
                    format!("blocks.{i}.{hub_name}")
                }
            };
            let qkv = if hf {
                // Fuse q, k, v: rows [q; k; v] of a [3d, d] PyTorch weight.
                let mut w = Vec::with_capacity(3 * d * d);
                let mut b = Vec::with_capacity(3 * d);
                for part in ["query", "key", "value"] {
                    let base = blk(&format!("attention.attention.{part}"), "");
                    w.extend(get(&format!("{base}.weight"), &[d, d])?.data);
                    if config.qkv_bias {
                        b.extend(get(&format!("{base}.bias"), &[d])?.data);
                    }
                }
                let bias = config.qkv_bias.then(|| HostTensor::new(vec![3 * d], b));
                linear(HostTensor::new(vec![3 * d, d], w), bias)
            } else {
                let base = blk("", "attn.qkv");
                let bias = if config.qkv_bias {
                    Some(get(&format!("{base}.bias"), &[3 * d])?)
                } else {
                    None
                };
                linear(get(&format!("{base}.weight"), &[3 * d, d])?, bias)
            };
            blocks.push(Block {
                norm1: norm(&blk("norm1", "norm1"))?,
                qkv,
                proj: dense(&blk("attention.output.dense", "attn.proj"), d, d)?,
                ls1: up1(get(&blk("layer_scale1.lambda1", "ls1.gamma"), &[d])?),
                norm2: norm(&blk("norm2", "norm2"))?,
                fc1: dense(&blk("mlp.fc1", "mlp.fc1"), m, d)?,
                fc2: dense(&blk("mlp.fc2", "mlp.fc2"), d, m)?,
                ls2: up1(get(&blk("layer_scale2.lambda1", "ls2.gamma"), &[d])?),
                heads: config.num_attention_heads,
            });
        }
        let norm = norm(&name("layernorm", "norm"))?;
        Ok(Self {
            config,
            cls_token,
            register_tokens,
            position_embeddings,
            pos_cache: Mutex::new(HashMap::new()),
            patch_embed,
            blocks,
            norm,
            device: device.clone(),
        })
    }

    /// Position embeddings for a `rows x cols` patch grid: [1, 1 + rows*cols, d]
    fn position_embeddings(&self, rows: usize, cols: usize) -> Tensor<B, 3> {
        let mut cache = self.pos_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((rows, cols))
            .or_insert_with(|| {
                let d = self.config.hidden_size;
                let g = self.config.native_grid();
                let pe = &self.position_embeddings.data;
                let mut data = pe[..d].to_vec();
                if rows == g && cols == g {
                    data.extend_from_slice(&pe[d..]);
                } else {
                    data.extend(resample_grid(
                        &pe[d..],
                        g,
                        d,
                        rows,
                        cols,
                        self.config.pos_embed_resample,
                    ));
                }
                Tensor::from_data(TensorData::new(data, [1, 1 + rows * cols, d]), &self.device)
            })
            .clone()
    }

    /// Patch embedding, CLS, position embeddings and registers.
    ///
    /// pixels: [b, c, H, W] (H, W multiples of the patch) -> [b, 1 + r + n, d]
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
        let x = self.patch_embed.forward(patches);
        let cls = self.cls_token.clone().expand([b, 1, d]);
        let x = Tensor::cat(vec![cls, x], 1) + self.position_embeddings(rows, cols);
        // Registers carry no position embedding: they go in after it is added.
        Ok(match &self.register_tokens {
            Some(reg) => {
                let r = reg.dims()[1];
                let n = rows * cols;
                Tensor::cat(
                    vec![
                        x.clone().slice([0..b, 0..1, 0..d]),
                        reg.clone().expand([b, r, d]),
                        x.slice([0..b, 1..1 + n, 0..d]),
                    ],
                    1,
                )
            }
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

    /// Runs blocks `first..=last` on a residual stream, calling `tap` with
    /// each block's output.
    pub fn run_blocks(
        &self,
        mut x: Tensor<B, 3>,
        first: usize,
        last: usize,
        mut tap: impl FnMut(usize, &Tensor<B, 3>),
    ) -> Result<Tensor<B, 3>> {
        if first <= last {
            self.check_layer(last)?;
        }
        for i in first..=last.min(self.blocks.len().saturating_sub(1)) {
            x = self.blocks[i].forward(x);
            tap(i, &x);
        }
        Ok(x)
    }

    /// Runs from the pixels to the residual stream after block `layer`.
    ///
    /// pixels: [b, c, H, W] -> [b, tokens, d]
    pub fn forward_until(&self, pixels: Tensor<B, 4>, layer: usize) -> Result<Tensor<B, 3>> {
        self.check_layer(layer)?;
        let x = self.embed(pixels)?;
        self.run_blocks(x, 0, layer, |_, _| {})
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
        let x = self.embed(pixels)?;
        let x = self.run_blocks(x, 0, layer, |i, x| {
            if taps.contains(&i) {
                kept.push((i, x.clone()));
            }
        })?;
        Ok((x, kept))
    }

    /// Finishes the network from the residual stream after block `layer`:
    /// the remaining blocks and the final LayerNorm.
    ///
    /// `forward_from(l, forward_until(px, l)) == forward(px)`, exactly.
    /// residual: [b, tokens, d] -> normed tokens [b, tokens, d]
    pub fn forward_from(&self, layer: usize, residual: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        self.check_layer(layer)?;
        let x = self.run_blocks(residual, layer + 1, self.blocks.len() - 1, |_, _| {})?;
        Ok(self.norm.forward(x))
    }

    /// The whole network: normed tokens [b, tokens, d].
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let x = self.embed(pixels)?;
        let x = self.run_blocks(x, 0, self.blocks.len() - 1, |_, _| {})?;
        Ok(self.norm.forward(x))
    }

    /// The final LayerNorm alone: [b, tokens, d] -> [b, tokens, d]
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.norm.forward(x)
    }

    /// Splits tokens into CLS [b, d], registers [b, r, d] and patches [b, n, d].
    pub fn split_tokens(&self, x: Tensor<B, 3>) -> Tokens<B> {
        let [b, t, d] = x.dims();
        let r = self.config.num_register_tokens;
        Tokens {
            cls: x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]),
            registers: x.clone().slice([0..b, 1..1 + r, 0..d]),
            patches: x.slice([0..b, 1 + r..t, 0..d]),
        }
    }
}

/// Residual streams kept by [`Dinov2::forward_taps`]: (block index, [b, tokens, d]).
pub type LayerTaps<B> = Vec<(usize, Tensor<B, 3>)>;

/// Tokens of a layer, split by kind.
#[derive(Debug, Clone)]
pub struct Tokens<B: Backend> {
    /// [b, d]
    pub cls: Tensor<B, 2>,
    /// [b, r, d]
    pub registers: Tensor<B, 3>,
    /// [b, n, d], row-major over the patch grid
    pub patches: Tensor<B, 3>,
}

/// Every tensor of a Hugging Face DINOv2 state dict with its shape.
pub fn hf_tensor_shapes(config: &Dinov2Config) -> Vec<(String, Vec<usize>)> {
    let (d, m, c, p) = (
        config.hidden_size,
        config.intermediate_size,
        config.num_channels,
        config.patch_size,
    );
    let g = config.native_grid();
    let mut out = vec![
        ("embeddings.cls_token".into(), vec![1, 1, d]),
        ("embeddings.mask_token".into(), vec![1, d]),
        (
            "embeddings.position_embeddings".into(),
            vec![1, 1 + g * g, d],
        ),
        (
            "embeddings.patch_embeddings.projection.weight".into(),
            vec![d, c, p, p],
        ),
        (
            "embeddings.patch_embeddings.projection.bias".into(),
            vec![d],
        ),
        ("layernorm.weight".into(), vec![d]),
        ("layernorm.bias".into(), vec![d]),
    ];
    if config.num_register_tokens > 0 {
        out.push((
            "embeddings.register_tokens".into(),
            vec![1, config.num_register_tokens, d],
        ));
    }
    for i in 0..config.num_hidden_layers {
        let l = format!("encoder.layer.{i}");
        for (name, shape) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attention.attention.query.weight", vec![d, d]),
            ("attention.attention.query.bias", vec![d]),
            ("attention.attention.key.weight", vec![d, d]),
            ("attention.attention.key.bias", vec![d]),
            ("attention.attention.value.weight", vec![d, d]),
            ("attention.attention.value.bias", vec![d]),
            ("attention.output.dense.weight", vec![d, d]),
            ("attention.output.dense.bias", vec![d]),
            ("layer_scale1.lambda1", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![m, d]),
            ("mlp.fc1.bias", vec![m]),
            ("mlp.fc2.weight", vec![d, m]),
            ("mlp.fc2.bias", vec![d]),
            ("layer_scale2.lambda1", vec![d]),
        ] {
            out.push((format!("{l}.{name}"), shape));
        }
    }
    out
}

/// Deterministic random weights with DINOv2's shapes, for benchmarks and the
/// offline demo: no download, same numbers on every machine.
#[cfg(feature = "random")]
struct RandomSource {
    shapes: HashMap<String, Vec<usize>>,
    seed: u64,
}

#[cfg(feature = "random")]
impl TensorSource for RandomSource {
    fn path(&self) -> &std::path::Path {
        std::path::Path::new("<random weights>")
    }
    fn names(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.shapes.get(name).cloned()
    }
    fn read(&self, name: &str) -> Result<HostTensor> {
        let shape = self.shape(name).ok_or_else(|| VitError::MissingTensor {
            path: self.path().to_path_buf(),
            name: name.to_string(),
        })?;
        let n: usize = shape.iter().product();
        // Name-keyed stream: a tensor's values do not depend on load order.
        let mut state = name
            .bytes()
            .fold(self.seed ^ 0x9E37_79B9_7F4A_7C15, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
            });
        let mut next = || {
            // splitmix64 -> uniform in [-1, 1)
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 52) as f32 - 1.0
        };
        let fan_in = if shape.len() >= 2 {
            shape[1..].iter().product::<usize>()
        } else {
            1
        };
        let (center, spread) = if name.ends_with("lambda1") {
            (0.5, 0.4)
        } else if name.contains("norm") && name.ends_with("weight") {
            (1.0, 0.2)
        } else if name.ends_with("bias") {
            (0.0, 0.05)
        } else if shape.len() >= 2 && !name.contains("embeddings.") {
            (0.0, (3.0 / fan_in as f32).sqrt())
        } else {
            (0.0, 0.5)
        };
        Ok(HostTensor::new(
            shape,
            (0..n).map(|_| center + spread * next()).collect(),
        ))
    }
}

#[cfg(feature = "random")]
impl<B: Backend> Dinov2<B> {
    /// A model with deterministic random weights (for benchmarks and demos;
    /// the `random` feature).
    pub fn random(config: Dinov2Config, seed: u64, device: &B::Device) -> Result<Self> {
        let src = RandomSource {
            shapes: hf_tensor_shapes(&config).into_iter().collect(),
            seed,
        };
        Self::from_source(config, &src, KeyLayout::HuggingFace, device)
    }
}

/// Writes the weights of [`Dinov2::random`] as a Hugging Face folder
/// (`config.json`, `model.safetensors`), which [`Dinov2::load`] reads back as
/// the same model: programs that take `--vit` can run at a real geometry
/// (ViT-B/14 is 346 MB of f32) with no download. (The `random` feature.)
#[cfg(feature = "random")]
pub fn write_random_hf_folder(config: &Dinov2Config, seed: u64, dir: &Path) -> Result<()> {
    config.validate().map_err(|message| VitError::Config {
        path: dir.join("config.json"),
        message,
    })?;
    let json = config.to_hf_json().ok_or_else(|| VitError::Config {
        path: dir.join("config.json"),
        message: "the torch-hub no-register geometry has no Hugging Face config".into(),
    })?;
    let shapes = hf_tensor_shapes(config);
    let src = RandomSource {
        shapes: shapes.iter().cloned().collect(),
        seed,
    };
    let tensors = shapes
        .into_iter()
        .map(|(name, _)| Ok((name.clone(), src.read(&name)?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(dir).map_err(|e| VitError::io(dir, e))?;
    // Weights first: a folder with a config.json is a complete model.
    crate::weights::write_safetensors(dir.join("model.safetensors"), &tensors, None)?;
    crate::weights::write_atomic(&dir.join("config.json"), json.as_bytes())
}
