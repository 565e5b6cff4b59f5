//! Crash-safe file output, shared by every crate and by `xtask`.
//!
//! One rule for every file the toolkit writes: the bytes go to a temporary
//! file beside the target, created exclusively (`O_EXCL`) under a name unique
//! to this process and call, are fsynced, renamed over the target, and the
//! folder is fsynced so the rename itself survives a power cut. A reader
//! therefore sees the old file or the new one, never half of one, and two
//! processes writing the same target never write into the same temporary.
//!
//! [`FolderLock`] is the other half: a long job that owns a folder (an
//! activation cache being built) holds an exclusive lock on a lock file in it,
//! so a second process is refused with a message naming the holder instead of
//! interleaving its writes.
//!
//! [`AppendLog`] is the one exception to whole-file rewrites: a progress log
//! that grows by one line per finished unit of a long job, where rewriting
//! the whole state each time would cost the square of its length. Lines are
//! appended and fsynced; a line torn by a crash is cut off when the log is
//! reopened, so the log always holds whole lines.
//!
//! Errors are plain [`std::io::Error`]s: each crate wraps them with the path
//! in its own error type, as that error's `source`; [`ErrorChain`] prints an
//! error with its causes.
//!
//! The crate also holds the one other thing every library crate shares, the
//! [`Progress`] trait through which long jobs report how far they are (the
//! command-line programs draw it; [`NoProgress`] shows nothing).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

mod progress;
mod report;

pub use progress::{NoProgress, Phase, Progress, SharedProgress};
pub use report::ErrorChain;

/// An append-only log of lines (e.g. one JSON object per line).
#[derive(Debug)]
pub struct AppendLog {
    file: File,
    path: PathBuf,
}

impl AppendLog {
    /// Opens (or creates, holding no line) the log at `path` and returns its
    /// complete lines, without their newlines. A last line without its
    /// newline was torn by a crash: it is cut off the file before anything
    /// is appended. `max_bytes` bounds what is read.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<(Self, Vec<Vec<u8>>)> {
        use std::io::Read;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        (&mut file).take(max_bytes + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{} is larger than {max_bytes} bytes", path.display()),
            ));
        }
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            file.set_len(whole as u64)?;
            file.sync_data()?;
        }
        let lines = bytes[..whole]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        // A log just created must survive a power cut as an entry of its folder.
        sync_dir(parent_dir(path))?;
        Ok((
            Self {
                file,
                path: path.to_path_buf(),
            },
            lines,
        ))
    }

    /// Appends one line (which must not contain a newline) and fsyncs it.
    pub fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if line.contains(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a log line cannot contain a newline",
            ));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Marker every temporary name carries, so a folder scan can tell leftovers
/// of an interrupted write from real files ([`is_temp_name`]).
const TEMP_MARKER: &str = ".tmp-";

/// Writes `data` to `path` atomically, creating the parent folder if needed.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(data)?;
    file.commit().map(drop)
}

/// A file being written under a temporary name; [`AtomicFile::commit`]
/// publishes it under the target name, dropping it uncommitted removes it.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Opens an exclusive temporary file beside `target`.
    pub fn create(target: &Path) -> io::Result<Self> {
        let dir = parent_dir(target);
        std::fs::create_dir_all(dir)?;
        let name = target.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file name", target.display()),
            )
        })?;
        // A name no other process or call uses: pid + a per-process counter,
        // and O_EXCL refuses the (stale-leftover) case where it exists anyway.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = dir.join(format!(
                ".{}{TEMP_MARKER}{}-{n}",
                name.to_string_lossy(),
                std::process::id()
            ));
            match OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(file) => {
                    return Ok(Self {
                        target: target.to_path_buf(),
                        temp,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The temporary path the data is going to (for tools that write by path,
    /// e.g. `safetensors::serialize_to_file`; they must open it without
    /// truncating someone else's file, which this name guarantees).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Flushes, fsyncs, renames over the target and fsyncs the folder.
    /// Returns the number of bytes published.
    pub fn commit(mut self) -> io::Result<u64> {
        let file = self
            .file
            .take()
            .expect("an uncommitted AtomicFile holds its file");
        // Reopen: a writer that wrote by path replaced nothing of ours, and the
        // fsync must cover whatever is at the temporary name now.
        drop(file);
        let file = File::open(&self.temp)?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        drop(file);
        std::fs::rename(&self.temp, &self.target)?;
        sync_dir(parent_dir(&self.target))?;
        Ok(bytes)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .as_mut()
            .expect("an uncommitted AtomicFile holds its file")
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .as_mut()
            .expect("an uncommitted AtomicFile holds its file")
            .flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Fsyncs a folder, so renames and new entries in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Folders cannot be opened as files on Windows; NTFS journals renames.
        let _ = dir;
        Ok(())
    }
}

/// Whether a file name is a leftover temporary of [`AtomicFile`] (a process
/// killed before its commit). Such files are safe to delete once the folder's
/// [`FolderLock`] is held.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// The file a leftover temporary was going to become (`.shard-3.st.tmp-12-0`
/// -> `shard-3.st`), so a process owning only some files of a folder removes
/// only its own temporaries.
pub fn temp_target(name: &str) -> Option<&str> {
    if !is_temp_name(name) {
        return None;
    }
    name[1..].rfind(TEMP_MARKER).map(|i| &name[1..1 + i])
}

/// Reads a whole text file of at most `max_bytes`, never more: a file that
/// grows while it is read, or a special file whose length says 0, fails with
/// [`io::ErrorKind::FileTooLarge`] after `max_bytes + 1` bytes instead of
/// being read whole.
pub fn read_to_string_bounded(path: &Path, max_bytes: u64) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    File::open(path)?
        .take(max_bytes.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("more than {max_bytes} bytes"),
        ));
    }
    Ok(text)
}

/// Removes the leftover temporaries ([`is_temp_name`]) directly inside
/// `dir`; a missing folder has none. Call it with the folder's
/// [`FolderLock`] held, so no live writer's temporary is removed.
pub fn remove_temporaries(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if is_temp_name(&entry.file_name().to_string_lossy()) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// An exclusive lock on a folder, held until dropped.
///
/// The lock is an OS file lock (`flock`) on `<folder>/.lock`, so it is released
/// by the kernel when the process dies, even by `kill -9`: a crashed run never
/// leaves a stale lock behind. The file records the holder's pid for the
/// message the next process gets.
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    _file: File,
}

/// File name of a [`FolderLock`] inside its folder.
pub const LOCK_FILE: &str = ".lock";

impl FolderLock {
    /// Takes the lock on `folder` (created if missing), or fails at once with
    /// [`io::ErrorKind::WouldBlock`] and a message naming the holder's pid.
    pub fn acquire(folder: &Path) -> io::Result<Self> {
        Self::lock(folder, LOCK_FILE, false)
    }

    /// Shares the folder's lock with other sharing holders: each of them
    /// works on its own part of the folder (under [`Self::acquire_file`]),
    /// and no exclusive holder ([`Self::acquire`]) can run beside them.
    pub fn acquire_shared(folder: &Path) -> io::Result<Self> {
        Self::lock(folder, LOCK_FILE, true)
    }

    /// An exclusive lock on `<folder>/<name>`: one of several independent
    /// locks in one folder (e.g. one per part of a sharded cache).
    pub fn acquire_file(folder: &Path, name: &str) -> io::Result<Self> {
        Self::lock(folder, name, false)
    }

    fn lock(folder: &Path, name: &str, shared: bool) -> io::Result<Self> {
        std::fs::create_dir_all(folder)?;
        let path = folder.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let taken = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match taken {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is in use by another process{} (lock file {})",
                        folder.display(),
                        if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" ({holder})")
                        },
                        path.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        // Only a sole holder may say who it is: sharers would overwrite
        // each other.
        if !shared {
            file.set_len(0)?;
            write!(file, "pid {}", std::process::id())?;
            file.flush()?;
        }
        Ok(Self { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["out.txt"]);
    }

    #[test]
    fn uncommitted_file_is_removed_and_target_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"half").unwrap();
            assert!(is_temp_name(
                f.temp_path().file_name().unwrap().to_str().unwrap()
            ));
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temp_names_are_unique_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let a = AtomicFile::create(&path).unwrap();
        let b = AtomicFile::create(&path).unwrap();
        assert_ne!(a.temp_path(), b.temp_path());
        assert_eq!(b.commit().unwrap(), 0);
        drop(a);
        assert!(path.exists());
    }

    #[test]
    fn folder_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = FolderLock::acquire(dir.path()).unwrap();
        let err = FolderLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains(LOCK_FILE), "{msg}");
        drop(lock);
        FolderLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn append_log_keeps_whole_lines_and_cuts_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let (mut log, lines) = AppendLog::open(&path, 1 << 20).unwrap();
        assert!(lines.is_empty());
        log.append(b"{\"a\":1}").unwrap();
        log.append(b"{\"b\":2}").unwrap();
        assert!(log.append(b"two\nlines").is_err());
        drop(log);
        // A crash in the middle of the third append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"c\":").unwrap();
        drop(f);
        let (mut log, lines) = AppendLog::open(&path, 1 << 20).unwrap();
        assert_eq!(lines, [b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        log.append(b"{\"c\":3}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
        );
        assert!(AppendLog::open(&path, 4).is_err());
    }

    #[test]
    fn shared_holders_exclude_an_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = FolderLock::acquire_shared(dir.path()).unwrap();
        let b = FolderLock::acquire_shared(dir.path()).unwrap();
        let part = FolderLock::acquire_file(dir.path(), ".lock-part-1").unwrap();
        assert!(FolderLock::acquire_file(dir.path(), ".lock-part-1").is_err());
        FolderLock::acquire_file(dir.path(), ".lock-part-2").unwrap();
        let err = FolderLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        drop((a, b, part));
        let sole = FolderLock::acquire(dir.path()).unwrap();
        assert!(FolderLock::acquire_shared(dir.path()).is_err());
        drop(sole);
    }

    #[test]
    fn remove_temporaries_keeps_real_files() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("keep.bin"), b"x").unwrap();
        std::fs::write(dir.path().join(".keep.bin.tmp-1-0"), b"half").unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), b"").unwrap();
        remove_temporaries(dir.path()).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [LOCK_FILE, "keep.bin"]);
        remove_temporaries(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn bounded_reads_stop_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(read_to_string_bounded(&path, 5).unwrap(), "12345");
        let err = read_to_string_bounded(&path, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn temp_name_recognition() {
        assert!(is_temp_name(".shard-0.safetensors.tmp-12-0"));
        assert_eq!(
            temp_target(".shard-0.safetensors.tmp-12-0"),
            Some("shard-0.safetensors")
        );
        assert_eq!(temp_target("shard-0.safetensors"), None);
        assert!(!is_temp_name("shard-0.safetensors"));
        assert!(!is_temp_name(".lock"));
    }
}
