//! SAE weights on the host and our own checkpoint format.
//!
//! Our format is a safetensors file with the f32 tensors `W_enc [d, s]`,
//! `b_enc [s]`, `W_dec [s, d]`, `b_dec [d]`, optionally `threshold [s]`
//! (per-latent JumpReLU thresholds), `norm.mean [d]` and `norm.scalar []`, and the [`SaeConfig`] as JSON under the `config` key of
//! the safetensors `__metadata__` map (`format` = `sae-steer-sae/1`).

use std::collections::HashMap;
use std::path::Path;

use sae_steer_vit::{HostTensor, SafetensorsFile, TensorSource, VitError, write_safetensors};

use crate::config::SaeConfig;
use crate::error::{Result, SaeError};

/// Value of the `format` metadata key in our checkpoints.
pub const FORMAT_TAG: &str = "sae-steer-sae/1";

/// saev's input normalization `x_n = (clamp(x, -1e5, 1e5) - mean) / scalar`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// Per-dimension mean of the training activations, `[d]`.
    pub mean: Vec<f32>,
    /// `mean ||x - mean||_2 / sqrt(d)` over the training activations.
    pub scalar: f32,
}

impl Normalization {
    /// Reads a normalization file: safetensors with `mean [d]` and `scalar`
    /// (shape `[]` or `[1]`). `d` is the SAE width it must match.
    pub fn load(path: impl AsRef<Path>, d: usize) -> Result<Self> {
        let file = SafetensorsFile::open(path.as_ref())?;
        Self::read_from(&file, "mean", "scalar", d, "the SAE width")
    }

    /// Writes a normalization file in the form [`Normalization::load`] reads.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors = vec![
            (
                "mean".to_string(),
                HostTensor::new(vec![self.mean.len()], self.mean.clone()),
            ),
            (
                "scalar".to_string(),
                HostTensor::new(vec![], vec![self.scalar]),
            ),
        ];
        write_safetensors(path, &tensors, None)?;
        Ok(())
    }

    fn read_from(
        src: &dyn TensorSource,
        mean: &str,
        scalar: &str,
        d: usize,
        ctx: &str,
    ) -> Result<Self> {
        let mean = read_checked(src, mean, &[d], ctx)?.data;
        let shape = src.shape(scalar).ok_or_else(|| SaeError::MissingTensor {
            path: src.path().to_path_buf(),
            name: scalar.to_string(),
        })?;
        if !(shape.is_empty() || shape == [1]) {
            return Err(SaeError::Shape {
                path: src.path().to_path_buf(),
                name: scalar.to_string(),
                expected: vec![],
                found: shape,
                context: "a scalar".into(),
            });
        }
        let value = src.read(scalar)?.data.first().copied().unwrap_or(f32::NAN);
        // A zero or non-finite scale would turn every activation into inf/NaN.
        if !(value.is_finite() && value > 0.0) {
            return Err(SaeError::Format {
                path: src.path().to_path_buf(),
                message: format!("normalization scalar is {value}, expected a positive number"),
            });
        }
        Ok(Self {
            mean,
            scalar: value,
        })
    }
}

/// All parameters of an SAE on the host, as read from or written to a file.
#[derive(Debug, Clone, PartialEq)]
pub struct SaeWeights {
    pub config: SaeConfig,
    /// `[d, s]`
    pub w_enc: HostTensor,
    /// `[s]`
    pub b_enc: HostTensor,
    /// `[s, d]`
    pub w_dec: HostTensor,
    /// `[d]`
    pub b_dec: HostTensor,
    /// `[s]`: per-latent JumpReLU thresholds (SAELens), which replace the
    /// config's single one; `None` for every other SAE.
    pub threshold: Option<HostTensor>,
    /// Input normalization; saev files carry none.
    pub norm: Option<Normalization>,
}

impl SaeWeights {
    /// Loads an SAE from a SAELens folder (`cfg.json` + `sae_weights.safetensors`,
    /// or either file in it), a file or a hub id (see [`crate::SaeSource`]):
    /// a saev `sae.pt` or one of our safetensors checkpoints, told apart by
    /// the first byte (`{` starts saev's JSON header line).
    pub fn load(spec: impl AsRef<std::ffi::OsStr>) -> Result<Self> {
        let spec = spec.as_ref();
        if let Some(dir) = crate::saelens::saelens_folder(Path::new(spec)) {
            return crate::saelens::read(dir);
        }
        let path = match spec.to_str() {
            // An absolute or `./`-style path is a file, present or not (its
            // error is the file's); anything else may be a hub id.
            Some(text) if !Path::new(text).is_absolute() && !text.starts_with('.') => {
                crate::hub::resolve_sae(text)?
            }
            // Not UTF-8: no hub id, only a local file.
            _ => std::path::PathBuf::from(spec),
        };
        let path = path.as_path();
        if crate::saev::looks_like_saev(path)? {
            crate::saev::read(path)
        } else {
            Self::load_safetensors(path)
        }
    }

    /// Loads one of our safetensors checkpoints.
    pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = SafetensorsFile::open(path)?;
        let format_error = |message: String| SaeError::Format {
            path: path.to_path_buf(),
            message,
        };
        let meta = file
            .metadata()
            .ok_or_else(|| format_error("no __metadata__ with the SAE config".into()))?;
        match meta.get("format") {
            Some(tag) if tag == FORMAT_TAG => {}
            Some(tag) => {
                return Err(format_error(format!(
                    "format tag is `{tag}`, this reader knows `{FORMAT_TAG}`"
                )));
            }
            None => return Err(format_error("no `format` key in __metadata__".into())),
        }
        let config: SaeConfig = meta
            .get("config")
            .ok_or_else(|| format_error("no `config` key in __metadata__".into()))
            .and_then(|c| {
                serde_json::from_str(c).map_err(|e| format_error(format!("config JSON: {e}")))
            })?;
        let (d, s) = (config.d_model, config.d_sae);
        if d == 0
            || s == 0
            || matches!(
                config.activation,
                crate::config::Activation::Topk { k: 0 }
                    | crate::config::Activation::TopkRelu { k: 0 }
            )
        {
            return Err(format_error(format!(
                "config has d_model = {d}, d_sae = {s}, activation {:?}: sizes and k must be positive",
                config.activation
            )));
        }
        let ctx = format!("the config (d_model = {d}, d_sae = {s})");
        let norm = if file.contains("norm.mean") || file.contains("norm.scalar") {
            Some(Normalization::read_from(
                &file,
                "norm.mean",
                "norm.scalar",
                d,
                &ctx,
            )?)
        } else {
            None
        };
        let threshold = if file.contains("threshold") {
            Some(read_checked(&file, "threshold", &[s], &ctx)?)
        } else {
            None
        };
        Ok(Self {
            w_enc: read_checked(&file, "W_enc", &[d, s], &ctx)?,
            b_enc: read_checked(&file, "b_enc", &[s], &ctx)?,
            w_dec: read_checked(&file, "W_dec", &[s, d], &ctx)?,
            b_dec: read_checked(&file, "b_dec", &[d], &ctx)?,
            threshold,
            config,
            norm,
        })
    }

    /// Writes our safetensors checkpoint, atomically (temporary file + rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with_metadata(path, [])
    }

    /// [`Self::save`] with more `__metadata__` entries (e.g. how it was trained).
    pub fn save_with_metadata(
        &self,
        path: impl AsRef<Path>,
        extra: impl IntoIterator<Item = (String, String)>,
    ) -> Result<()> {
        let path = path.as_ref();
        let config = serde_json::to_string(&self.config).map_err(|e| SaeError::Format {
            path: path.to_path_buf(),
            message: format!("cannot serialise the config: {e}"),
        })?;
        let mut tensors = vec![
            ("W_enc".to_string(), self.w_enc.clone()),
            ("b_enc".to_string(), self.b_enc.clone()),
            ("W_dec".to_string(), self.w_dec.clone()),
            ("b_dec".to_string(), self.b_dec.clone()),
        ];
        if let Some(t) = &self.threshold {
            tensors.push(("threshold".to_string(), t.clone()));
        }
        if let Some(norm) = &self.norm {
            tensors.push((
                "norm.mean".to_string(),
                HostTensor::new(vec![norm.mean.len()], norm.mean.clone()),
            ));
            tensors.push((
                "norm.scalar".to_string(),
                HostTensor::new(vec![], vec![norm.scalar]),
            ));
        }
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT_TAG.to_string()),
            ("config".to_string(), config),
        ]);
        metadata.extend(extra);
        write_safetensors(path, &tensors, Some(metadata))?;
        Ok(())
    }
}

/// Converts a saev `sae.pt` into our format, attaching the normalization
/// (from a file with `mean` and `scalar`) and the backbone it belongs to.
pub fn convert_saev(
    sae_pt: impl AsRef<Path>,
    norm: Option<&Path>,
    vit: Option<String>,
    layer: Option<usize>,
    out: impl AsRef<Path>,
) -> Result<SaeWeights> {
    let mut weights = crate::saev::read(sae_pt)?;
    if let Some(norm) = norm {
        weights.norm = Some(Normalization::load(norm, weights.config.d_model)?);
    }
    weights.config.vit = vit;
    weights.config.layer = layer;
    weights.save(out)?;
    Ok(weights)
}

/// Reads a tensor whose shape is implied by `context` (a header or config),
/// naming both on a disagreement. The check itself is
/// [`TensorSource::read_shaped`]'s; this only adds where the shape came from.
pub(crate) fn read_checked(
    src: &dyn TensorSource,
    name: &str,
    expected: &[usize],
    context: &str,
) -> Result<HostTensor> {
    src.read_shaped(name, expected).map_err(|e| match e {
        VitError::MissingTensor { path, name } => SaeError::MissingTensor { path, name },
        VitError::ShapeMismatch {
            path,
            name,
            expected,
            found,
        } => SaeError::Shape {
            path,
            name,
            expected,
            found,
            context: context.to_string(),
        },
        other => other.into(),
    })
}
