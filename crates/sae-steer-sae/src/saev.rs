//! Reading saev `sae.pt` checkpoints without Python.
//!
//! The file is one UTF-8 JSON line (the header) followed by the bytes of a
//! `torch.save` zip archive whose offsets count from the byte after the line.
//! The zip reader behind [`TorchFile`] detects such prepended data (as it does
//! for self-extracting archives), so the archive is opened on the file itself
//! and tensors are read lazily, one at a time.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use sae_steer_vit::{TensorSource, TorchFile};
use serde_json::{Map, Value};

use crate::checkpoint::{SaeWeights, read_checked};
use crate::config::{Activation, EncodeRule, SaeConfig};
use crate::error::{Result, SaeError};

/// The longest header line we accept; real headers are a few hundred bytes,
/// and the cap keeps a file without a newline from being read whole.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The parsed first line of a saev checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SaevHeader {
    /// `None` for pre-schema (preprint-era) files whose header is the config itself.
    pub schema: Option<i64>,
    pub config: SaeConfig,
    /// Set for saev's BatchTopK: its inference threshold lives in the state
    /// dict (`activation.threshold`), not in the header.
    batch_topk: bool,
}

/// Reads the header line of a saev checkpoint.
pub fn read_saev_header(path: impl AsRef<Path>) -> Result<SaevHeader> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| SaeError::io(path, e))?;
    let mut line = Vec::new();
    BufReader::new(file)
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(|e| SaeError::io(path, e))?;
    if line.last() != Some(&b'\n') {
        return Err(header_error(
            path,
            if line.len() as u64 == MAX_HEADER_BYTES {
                format!(
                    "no newline within the first {MAX_HEADER_BYTES} bytes (saev headers are a \
                     few hundred bytes): not a saev checkpoint"
                )
            } else {
                "no newline-terminated JSON line at the start of the file".to_string()
            },
        ));
    }
    parse_saev_header(path, &line)
}

/// Interprets a header line; `path` is only used in error messages.
pub fn parse_saev_header(path: &Path, line: &[u8]) -> Result<SaevHeader> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| header_error(path, format!("not JSON: {e}")))?;
    let Value::Object(header) = value else {
        return Err(header_error(path, "not a JSON object"));
    };
    let schema = match header.get("schema") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or_else(|| header_error(path, format!("`schema` is {v}, not an integer")))?,
        ),
    };
    // Pre-schema headers are the config itself; later ones nest it in `cfg`.
    let cfg = match schema {
        None => &header,
        Some(1..=5) => header
            .get("cfg")
            .and_then(Value::as_object)
            .ok_or_else(|| header_error(path, "`cfg` object is missing"))?,
        Some(schema) => {
            return Err(SaeError::UnknownSchema {
                path: path.to_path_buf(),
                schema,
            });
        }
    };
    let d_model = dim(path, cfg, &["d_model", "d_vit"])?;
    let d_sae = match cfg.get("d_sae") {
        Some(_) => dim(path, cfg, &["d_sae"])?,
        None => {
            let exp = dim(path, cfg, &["exp_factor"])?;
            d_model
                .checked_mul(exp)
                .ok_or_else(|| header_error(path, "d_model * exp_factor overflows"))?
        }
    };
    if d_model == 0 || d_sae == 0 {
        return Err(header_error(path, "d_model and d_sae must be positive"));
    }

    let (activation, batch_topk) = match schema {
        None => (Activation::Relu, false),
        Some(1) => {
            // Schema 1 has two layouts: `cls` naming the activation (with
            // `top_k` in cfg), or `cls` naming the config class and the
            // activation as `{cls, params}` inside cfg (ReLU when absent).
            let cls = header.get("cls").and_then(Value::as_str).unwrap_or("");
            if matches!(cls, "Relu" | "TopK" | "BatchTopK") {
                activation_from(path, cls, cfg)?
            } else if let Some(act) = cfg.get("activation") {
                activation_payload(path, act)?
            } else {
                (Activation::Relu, false)
            }
        }
        Some(_) => {
            let act = cfg
                .get("activation")
                .ok_or_else(|| header_error(path, "`cfg.activation` is missing"))?;
            activation_payload(path, act)?
        }
    };
    let encode = match schema {
        None | Some(1) => EncodeRule::CentreOnDecoderBias,
        Some(_) => EncodeRule::Plain,
    };
    Ok(SaevHeader {
        schema,
        config: SaeConfig {
            d_model,
            d_sae,
            activation,
            encode,
            vit: None,
            layer: None,
        },
        batch_topk,
    })
}

/// Reads a saev checkpoint file: header, then the four tensors, checked
/// against it ([`SaeWeights::load`] takes either format, and hub ids).
pub fn read(path: impl AsRef<Path>) -> Result<SaeWeights> {
    let path = path.as_ref();
    let header = read_saev_header(path)?;
    check_zip_tail(path)?;
    let file = TorchFile::open(path)?;
    let mut config = header.config;
    let ctx = format!(
        "the header (d_model = {}, d_sae = {})",
        config.d_model, config.d_sae
    );
    let (d, s) = (config.d_model, config.d_sae);
    let w_enc = read_checked(&file, "W_enc", &[d, s], &ctx)?;
    let b_enc = read_checked(&file, "b_enc", &[s], &ctx)?;
    let w_dec = read_checked(&file, "W_dec", &[s, d], &ctx)?;
    let b_dec = read_checked(&file, "b_dec", &[d], &ctx)?;
    if header.batch_topk {
        let threshold = match file.shape("activation.threshold") {
            Some(_) => {
                let t = file.read("activation.threshold")?;
                match t.data.as_slice() {
                    [v] => *v,
                    _ => {
                        return Err(SaeError::Shape {
                            path: path.to_path_buf(),
                            name: "activation.threshold".into(),
                            expected: vec![],
                            found: t.shape,
                            context: "a BatchTopK threshold".into(),
                        });
                    }
                }
            }
            // Older BatchTopK files had no threshold: saev then uses ReLU.
            None => 0.0,
        };
        config.activation = Activation::JumpRelu { threshold };
    }
    Ok(SaeWeights {
        config,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold: None,
        norm: None,
    })
}

/// Whether a file starts like a saev checkpoint (a JSON line) rather than
/// safetensors (an 8-byte little-endian header length).
pub fn looks_like_saev(path: impl AsRef<Path>) -> Result<bool> {
    let path = path.as_ref();
    let mut first = [0u8; 1];
    let mut f = std::fs::File::open(path).map_err(|e| SaeError::io(path, e))?;
    let n = f.read(&mut first).map_err(|e| SaeError::io(path, e))?;
    Ok(n == 1 && first[0] == b'{')
}

/// Fails unless the file ends with a zip end-of-central-directory record.
///
/// Without it the PyTorch reader falls back to legacy formats and reports a
/// confusing pickle error; a truncated download is by far the likeliest cause.
fn check_zip_tail(path: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    // The record is 22 bytes plus a comment of at most 65,535 bytes.
    const TAIL: u64 = 22 + 65_535;
    let mut f = std::fs::File::open(path).map_err(|e| SaeError::io(path, e))?;
    let len = f.metadata().map_err(|e| SaeError::io(path, e))?.len();
    let start = len.saturating_sub(TAIL);
    f.seek(SeekFrom::Start(start))
        .map_err(|e| SaeError::io(path, e))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)
        .map_err(|e| SaeError::io(path, e))?;
    // A complete record: signature, 18 more bytes, then exactly the comment
    // length it announces up to the end of the file.
    let complete = (0..tail.len().saturating_sub(21)).rev().any(|p| {
        tail[p..p + 4] == *b"PK\x05\x06"
            && p + 22 + usize::from(u16::from_le_bytes([tail[p + 20], tail[p + 21]])) == tail.len()
    });
    if complete {
        Ok(())
    } else {
        Err(SaeError::Format {
            path: path.to_path_buf(),
            message: format!(
                "the torch.save archive after the header line is truncated or not a zip \
                 (no end-of-central-directory record; the file has {len} bytes)"
            ),
        })
    }
}

fn header_error(path: &Path, message: impl Into<String>) -> SaeError {
    SaeError::Header {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The first of `keys` present in `cfg`, as a non-negative integer.
fn dim(path: &Path, cfg: &Map<String, Value>, keys: &[&str]) -> Result<usize> {
    for key in keys {
        if let Some(v) = cfg.get(*key) {
            return v
                .as_u64()
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| header_error(path, format!("`{key}` is {v}, not a size")));
        }
    }
    Err(header_error(
        path,
        format!("none of {keys:?} is in the config"),
    ))
}

/// saev's `{cls, params}` activation payload.
fn activation_payload(path: &Path, act: &Value) -> Result<(Activation, bool)> {
    let cls = act
        .get("cls")
        .and_then(Value::as_str)
        .ok_or_else(|| header_error(path, format!("activation {act} has no `cls`")))?;
    let empty = Map::new();
    let params = act
        .get("params")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    activation_from(path, cls, params)
}

/// An activation by saev class name; `top_k` (default 32, as in saev) from `params`.
fn activation_from(
    path: &Path,
    cls: &str,
    params: &Map<String, Value>,
) -> Result<(Activation, bool)> {
    let top_k = || -> Result<usize> {
        match params.get("top_k") {
            None => Ok(32),
            Some(v) => v
                .as_u64()
                .and_then(|k| usize::try_from(k).ok())
                .filter(|&k| k > 0)
                .ok_or_else(|| {
                    header_error(path, format!("`top_k` is {v}, not a positive integer"))
                }),
        }
    };
    match cls {
        "Relu" => Ok((Activation::Relu, false)),
        "TopK" => Ok((Activation::Topk { k: top_k()? }, false)),
        // The threshold is filled in from the state dict by `read`.
        "BatchTopK" => Ok((Activation::JumpRelu { threshold: 0.0 }, true)),
        other => Err(SaeError::Activation {
            path: path.to_path_buf(),
            name: other.to_string(),
        }),
    }
}
