//! A wrapped I/O error is the error's `source`, and a printer of the chain
//! shows it once: the message above it names the file, not the cause.

use std::io;
use std::path::Path;

use sae_steer::ErrorChain;
use sae_steer::data::cache::ActivationCache;
use sae_steer::quantify::read_manual_table;
use sae_steer::vit::SafetensorsFile;

/// The first `io::Error` among `e`'s causes.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cause = c.source();
    }
    None
}

/// `e` (a missing `path`) names the file, holds the OS error as a cause, and
/// prints that cause exactly once in its chain.
fn check_missing(e: &sae_steer::Error, path: &Path) {
    let message = e.to_string();
    let io = io_cause(e).unwrap_or_else(|| panic!("no I/O error among the causes of {e:?}"));
    assert_eq!(io.kind(), io::ErrorKind::NotFound, "{e:?}");
    let cause = io.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        !message.contains(&cause),
        "the message repeats its cause: {message}"
    );
    let chain = ErrorChain(e).to_string();
    assert_eq!(chain.matches(&cause).count(), 1, "{chain}");
    assert_eq!(chain, format!("{message}: {cause}"));
}

#[test]
fn a_missing_file_is_the_source_and_printed_once() {
    let tmp = tempfile::tempdir().unwrap();

    // The facade's own I/O error.
    let table = tmp.path().join("manual.toml");
    let e = read_manual_table(&table).unwrap_err();
    assert!(matches!(e, sae_steer::Error::Io { .. }), "{e:?}");
    check_missing(&e, &table);

    // A member crate's I/O error, through the facade's `From`: the wrapper
    // is transparent, so its chain is the member's.
    let weights = tmp.path().join("model.safetensors");
    let e: sae_steer::Error = SafetensorsFile::open(&weights).err().unwrap().into();
    check_missing(&e, &weights);

    // A cache folder whose manifest is missing.
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    let e: sae_steer::Error = ActivationCache::open(&dir).err().unwrap().into();
    check_missing(&e, &dir);
}
