//! SAELens checkpoints: a folder with `cfg.json` and `sae_weights.safetensors`,
//! as `SAE.save_model` writes them and `SAE.load_from_disk` reads them.
//!
//! The tensors are `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`,
//! `b_dec [d_in]` (our own names and layout) and, for JumpReLU, `threshold
//! [d_sae]`. `cfg.json` says the `architecture` (`standard`, `topk` with `k`,
//! `jumprelu`; BatchTopK and Matryoshka SAEs are saved as `jumprelu`),
//! `d_in`, `d_sae` and `apply_b_dec_to_input`. Encoding:
//! ```text
//! h = (x - b_dec * apply_b_dec_to_input) W_enc + b_enc
//! standard: f = relu(h)   topk: f = relu(topk_k(h))   jumprelu: f = relu(h) * (h > threshold)
//! x_hat = f W_dec + b_dec
//! ```
//! Files written before SAELens 6 (`activation_fn_str`, no `architecture`) are
//! read too. SAELens SAEs read raw activations: they carry no normalization,
//! and we write ours with the normalization folded into the weights.

use std::path::{Path, PathBuf};

use sae_steer_vit::{HostTensor, SafetensorsFile, TensorSource, write_atomic, write_safetensors};
use serde_json::{Map, Value, json};

use crate::checkpoint::{SaeWeights, read_checked};
use crate::config::{Activation, EncodeRule, SaeConfig};
use crate::error::{Result, SaeError};

pub const CFG_FILE: &str = "cfg.json";
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";

/// The largest `cfg.json` read (real ones are about 2 KB).
const MAX_CFG_BYTES: u64 = 1 << 20;

/// The SAELens folder `path` names: the folder itself, or the folder of a
/// `cfg.json` / `sae_weights.safetensors` inside it. `None` when `path` is
/// not one.
pub fn saelens_folder(path: &Path) -> Option<PathBuf> {
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        match path.file_name().and_then(|n| n.to_str()) {
            Some(CFG_FILE | WEIGHTS_FILE) => path.parent()?.to_path_buf(),
            _ => return None,
        }
    };
    (dir.join(CFG_FILE).is_file() && dir.join(WEIGHTS_FILE).is_file()).then_some(dir)
}

fn cfg_error(path: &Path, message: impl Into<String>) -> SaeError {
    SaeError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a SAELens folder.
pub fn read(dir: impl AsRef<Path>) -> Result<SaeWeights> {
    let dir = dir.as_ref();
    let cfg_path = dir.join(CFG_FILE);
    let text = sae_steer_files::read_to_string_bounded(&cfg_path, MAX_CFG_BYTES)
        .map_err(|e| SaeError::io(&cfg_path, e))?;
    let cfg: Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(cfg_error(&cfg_path, "not a JSON object")),
        Err(e) => return Err(cfg_error(&cfg_path, format!("not JSON: {e}"))),
    };
    let parsed = parse_cfg(&cfg).map_err(|m| cfg_error(&cfg_path, m))?;
    let file = SafetensorsFile::open(dir.join(WEIGHTS_FILE))?;
    let (d, s) = (parsed.config.d_model, parsed.config.d_sae);
    let ctx = format!("{CFG_FILE} (d_in = {d}, d_sae = {s})");
    let mut w = SaeWeights {
        w_enc: read_checked(&file, "W_enc", &[d, s], &ctx)?,
        b_enc: read_checked(&file, "b_enc", &[s], &ctx)?,
        w_dec: read_checked(&file, "W_dec", &[s, d], &ctx)?,
        b_dec: read_checked(&file, "b_dec", &[d], &ctx)?,
        threshold: None,
        config: parsed.config,
        norm: None,
    };
    if matches!(w.config.activation, Activation::JumpRelu { .. }) {
        let t = read_checked(&file, "threshold", &[s], &ctx)?;
        if t.data.iter().any(|v| !v.is_finite()) {
            return Err(cfg_error(
                file.path(),
                "`threshold` holds a non-finite value",
            ));
        }
        w.threshold = Some(t);
    }
    if parsed.rescale_by_decoder_norm {
        fold_decoder_norms(&mut w);
    }
    Ok(w)
}

struct ParsedCfg {
    config: SaeConfig,
    /// TopK's `rescale_acts_by_decoder_norm`, folded into the weights on load.
    rescale_by_decoder_norm: bool,
}

fn size(cfg: &Map<String, Value>, key: &str) -> std::result::Result<usize, String> {
    let v = cfg.get(key).ok_or_else(|| format!("no `{key}`"))?;
    v.as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{key}` is {v}, not a positive size"))
}

fn parse_cfg(cfg: &Map<String, Value>) -> std::result::Result<ParsedCfg, String> {
    let d_model = size(cfg, "d_in")?;
    let d_sae = size(cfg, "d_sae")?;
    if d_model
        .checked_mul(d_sae)
        .is_none_or(|n| n > isize::MAX as usize / 4)
    {
        return Err(format!(
            "d_in {d_model} x d_sae {d_sae} is too large to address"
        ));
    }
    // Before SAELens 6 the architecture was implied by `activation_fn(_str)`.
    let legacy_fn = cfg
        .get("activation_fn")
        .or_else(|| cfg.get("activation_fn_str"))
        .and_then(Value::as_str);
    let architecture = match cfg.get("architecture").and_then(Value::as_str) {
        Some(a) => a.to_string(),
        None if legacy_fn == Some("topk") => "topk".into(),
        None => "standard".into(),
    };
    let k = || -> std::result::Result<usize, String> {
        if cfg.contains_key("k") {
            return size(cfg, "k");
        }
        match cfg.get("activation_fn_kwargs").and_then(|a| a.as_object()) {
            Some(kwargs) => size(kwargs, "k"),
            None => Err("a topk SAE without `k`".into()),
        }
    };
    let activation = match architecture.as_str() {
        "standard" => {
            if let Some(f) = legacy_fn.filter(|f| *f != "relu") {
                return Err(format!(
                    "activation_fn `{f}` is not supported (relu or topk)"
                ));
            }
            Activation::Relu
        }
        "topk" => {
            let k = k()?;
            if k > d_sae {
                return Err(format!("k = {k} is more than d_sae = {d_sae}"));
            }
            Activation::TopkRelu { k }
        }
        "jumprelu" => Activation::JumpRelu { threshold: 0.0 },
        other => {
            return Err(format!(
                "architecture `{other}` is not supported (standard, topk, jumprelu; \
                 BatchTopK and Matryoshka SAEs are saved as jumprelu)"
            ));
        }
    };
    match cfg.get("normalize_activations") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        // A training-time scale that SAELens folds into the weights before
        // saving; at inference it does nothing.
        Some(Value::Bool(true)) => {}
        Some(Value::String(n)) if n == "none" || n == "expected_average_only_in" => {}
        Some(other) => {
            return Err(format!(
                "normalize_activations {other} (a per-token normalization) is not supported"
            ));
        }
    }
    if let Some(r) = cfg
        .get("reshape_activations")
        .and_then(Value::as_str)
        .filter(|r| *r != "none")
    {
        return Err(format!(
            "reshape_activations `{r}` (attention-head outputs) is not supported"
        ));
    }
    let apply_b_dec = match cfg.get("apply_b_dec_to_input") {
        None | Some(Value::Null) => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("`apply_b_dec_to_input` is {v}, not true or false"))?,
    };
    let rescale_by_decoder_norm = cfg
        .get("rescale_acts_by_decoder_norm")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Where the activations came from, for reports: SAELens 6 keeps it in
    // `metadata`, earlier files at the top level.
    let meta = cfg
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(cfg);
    let vit = meta
        .get("model_name")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(ParsedCfg {
        config: SaeConfig {
            d_model,
            d_sae,
            activation,
            encode: if apply_b_dec {
                EncodeRule::CentreOnDecoderBias
            } else {
                EncodeRule::Plain
            },
            vit,
            layer: None,
        },
        rescale_by_decoder_norm,
    })
}

/// `rescale_acts_by_decoder_norm`: SAELens scales each pre-activation by its
/// decoder row's norm before the TopK and divides it out before decoding.
/// The same SAE with `h_j` scaled in the encoder and unit decoder rows.
fn fold_decoder_norms(w: &mut SaeWeights) {
    let (d, s) = (w.config.d_model, w.config.d_sae);
    let norms: Vec<f32> = w
        .w_dec
        .data
        .chunks(d)
        .map(|row| row.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    for (j, row) in w.w_dec.data.chunks_mut(d).enumerate() {
        let n = norms[j];
        if n > 0.0 {
            row.iter_mut().for_each(|v| *v /= n);
        }
    }
    for row in w.w_enc.data.chunks_mut(s) {
        row.iter_mut().zip(&norms).for_each(|(v, n)| *v *= n);
    }
    for (b, n) in w.b_enc.data.iter_mut().zip(&norms) {
        *b *= n;
    }
}

/// Writes `w` as a SAELens folder (`cfg.json`, `sae_weights.safetensors`),
/// each file atomically. SAELens SAEs read raw activations, so our input
/// normalization `x_n = (x - mean) / scalar` is folded into the weights:
/// ```text
/// W_enc' = W_enc / scalar     W_dec' = scalar W_dec     b_dec' = scalar b_dec + mean
/// b_enc' = b_enc                              (centred on b_dec: apply_b_dec_to_input)
/// b_enc' = b_enc - (mean / scalar) W_enc      (plain encoder)
/// ```
/// which computes the same latents and reconstructions (saev's clamp at
/// +-1e5 aside). `hook_name` and `model_name` go into `metadata`.
///
/// Our TopK (saev's) keeps a selected pre-activation even when it is
/// negative; SAELens's zeroes it. Exported TopK SAEs therefore agree
/// wherever the k largest pre-activations are positive, which is what a
/// trained TopK SAE produces; [`Activation::TopkRelu`] exports exactly.
pub fn write(
    w: &SaeWeights,
    dir: impl AsRef<Path>,
    model_name: Option<&str>,
    hook_name: Option<&str>,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| SaeError::io(dir, e))?;
    let (d, s) = (w.config.d_model, w.config.d_sae);
    let (mut w_enc, mut b_enc, mut w_dec, mut b_dec) = (
        w.w_enc.clone(),
        w.b_enc.clone(),
        w.w_dec.clone(),
        w.b_dec.clone(),
    );
    if let Some(norm) = &w.norm {
        let sc = norm.scalar;
        if w.config.encode == EncodeRule::Plain {
            // b_enc -= (mean / scalar) W_enc
            for (i, m) in norm.mean.iter().enumerate() {
                let row = &w.w_enc.data[i * s..(i + 1) * s];
                for (b, we) in b_enc.data.iter_mut().zip(row) {
                    *b -= m / sc * we;
                }
            }
        }
        w_enc.data.iter_mut().for_each(|v| *v /= sc);
        w_dec.data.iter_mut().for_each(|v| *v *= sc);
        for (b, m) in b_dec.data.iter_mut().zip(&norm.mean) {
            *b = *b * sc + m;
        }
    }
    let mut cfg = json!({
        "d_in": d,
        "d_sae": s,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": w.config.encode == EncodeRule::CentreOnDecoderBias,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            // SAELens reads configs without a version >= 6 as legacy ones.
            "sae_lens_version": "6.0.0",
            "sae_lens_training_version": "6.0.0",
            "model_name": model_name.or(w.config.vit.as_deref()),
            "hook_name": hook_name,
            "exported_by": concat!("sae-steer ", env!("CARGO_PKG_VERSION")),
        },
    });
    let mut tensors = vec![
        ("W_enc".to_string(), w_enc),
        ("b_enc".to_string(), b_enc),
        ("W_dec".to_string(), w_dec),
        ("b_dec".to_string(), b_dec),
    ];
    match w.config.activation {
        Activation::Relu => cfg["architecture"] = json!("standard"),
        Activation::Topk { k } | Activation::TopkRelu { k } => {
            cfg["architecture"] = json!("topk");
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(false);
        }
        Activation::JumpRelu { threshold } => {
            cfg["architecture"] = json!("jumprelu");
            let t = match &w.threshold {
                Some(t) => t.clone(),
                None => HostTensor::new(vec![s], vec![threshold; s]),
            };
            tensors.push(("threshold".to_string(), t));
        }
    }
    write_safetensors(dir.join(WEIGHTS_FILE), &tensors, None)?;
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| cfg_error(dir, e.to_string()))?;
    write_atomic(&dir.join(CFG_FILE), text.as_bytes())?;
    Ok(())
}
