//! Output files go through `sae_steer_files::write_atomic` (a temporary
//! beside the target, fsync, rename, folder fsync), so a crash never leaves a
//! half-written report that looks complete.

use std::path::Path;

use crate::error::{MetricsError, Result};

/// Writes `data` to `path` atomically, creating the folder if needed.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    sae_steer_files::write_atomic(path, data).map_err(|e| MetricsError::io(path, e))
}

/// Builds a CSV file in memory with `fill` and writes it atomically.
pub(crate) fn write_csv(
    path: &Path,
    fill: impl FnOnce(&mut csv::Writer<Vec<u8>>) -> csv::Result<()>,
) -> Result<()> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    fill(&mut writer).map_err(|e| MetricsError::csv(path, e))?;
    let bytes = writer
        .into_inner()
        .map_err(|e| MetricsError::io(path, e.into_error()))?;
    write_atomic(path, &bytes)
}

/// How a number that may be undefined is written in our CSV files: pandas
/// and numpy read "nan" back as NaN.
pub(crate) fn fmt_opt(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => v.to_string(),
        _ => "nan".to_string(),
    }
}

/// A class's name for reports: `class_names[c - 1]`, "other" for class 0,
/// "class c" past the end of the names.
pub(crate) fn class_name(class_names: &[String], class: usize) -> String {
    match class {
        0 => "other".to_string(),
        c => class_names
            .get(c - 1)
            .cloned()
            .unwrap_or_else(|| format!("class {c}")),
    }
}
