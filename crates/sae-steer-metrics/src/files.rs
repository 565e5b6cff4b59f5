//! Output files are written to a temporary name beside the target and renamed,
//! so a crash never leaves a half-written report that looks complete.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{MetricsError, Result};

/// Writes `data` to `path` through a temporary file in the same folder and a
/// rename, creating the folder if needed.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| MetricsError::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| MetricsError::Invalid(format!("{}: not a file name", path.display())))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(MetricsError::io(path, e));
    }
    Ok(())
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
