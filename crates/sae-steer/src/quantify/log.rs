//! The run's resume log, `passes.jsonl`: a settings line, then one line per
//! finished chunk of (method, class) passes, appended (never rewritten), and
//! the output folder's lock.

use std::path::Path;

use sae_steer_files::{AppendLog, FolderLock};
use sae_steer_metrics::ClassPass;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The passes done so far, rebuilt from `passes.jsonl`. Results only: no
/// timings, so an interrupted and resumed run writes the same file as an
/// uninterrupted one.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) passes: Vec<ClassPass>,
    pub(super) skipped: Vec<(String, usize, String)>,
}

/// The first line of `passes.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ProgressHeader {
    /// A fingerprint of the settings; a resumed run must match it.
    key: String,
}

/// Every later line: one finished chunk of classes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct ProgressChunk {
    pub(super) passes: Vec<ClassPass>,
    pub(super) skipped: Vec<(String, usize, String)>,
}

/// File name of the progress log in the output folder.
pub const PROGRESS_FILE: &str = "passes.jsonl";

/// Takes the output folder's lock (creating the folder) and removes the
/// temporaries of writes an interrupted run left: with the lock held, no
/// other process is writing them.
pub(super) fn lock_output(out_dir: &Path) -> Result<FolderLock> {
    // The lock's error names the process holding the folder.
    let lock = FolderLock::acquire(out_dir).map_err(|e| Error::io("lock", out_dir, e))?;
    sae_steer_files::remove_temporaries(out_dir).map_err(|e| Error::io("clean up", out_dir, e))?;
    Ok(lock)
}

/// Opens the progress log (cutting a line torn by a crash) and rebuilds the
/// state from it; a new log starts with the settings' key.
pub(super) fn open_progress(path: &Path, key: &str) -> Result<(AppendLog, Progress)> {
    let fail = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    // A chunk's line is a few MB at most; 600 passes are far below this.
    const MAX_LOG_BYTES: u64 = 4 << 30;
    let (mut log, lines) =
        AppendLog::open(path, MAX_LOG_BYTES).map_err(|e| Error::io("open", path, e))?;
    let mut lines = lines.iter();
    let Some(first) = lines.next() else {
        let header = ProgressHeader {
            key: key.to_string(),
        };
        append_progress(&mut log, &header)?;
        return Ok((log, Progress::default()));
    };
    let header: ProgressHeader = serde_json::from_slice(first)
        .map_err(|e| fail(format!("not a quantify progress log: {e}")))?;
    if header.key != key {
        return Err(fail(format!(
            "these results were made with other settings ({}); this run has ({key}). Use \
             another output folder or delete the file",
            header.key
        )));
    }
    let mut state = Progress::default();
    for (i, line) in lines.enumerate() {
        let chunk: ProgressChunk = serde_json::from_slice(line)
            .map_err(|e| fail(format!("line {}: not a chunk of passes: {e}", i + 2)))?;
        state.passes.extend(chunk.passes);
        state.skipped.extend(chunk.skipped);
    }
    Ok((log, state))
}

pub(super) fn append_progress<T: Serialize>(log: &mut AppendLog, line: &T) -> Result<()> {
    let bytes = serde_json::to_vec(line).map_err(|e| Error::File {
        path: log.path().to_path_buf(),
        message: e.to_string(),
    })?;
    log.append(&bytes)
        .map_err(|e| Error::io("append to", log.path(), e))
}
