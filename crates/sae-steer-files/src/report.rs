//! Printing an error with its causes.
//!
//! The toolkit's error types keep a wrapped error (an I/O error, say) as
//! their [`source`](std::error::Error::source) and leave it out of their own
//! message, so a printer that walks the chain shows each cause once.
//! [`ErrorChain`] is that printer for the places that turn an error into
//! text (a log line, a recorded message, an HTTP answer); programs with
//! `anyhow` get the same from its alternate format, `{:#}`.

use std::error::Error;
use std::fmt;

/// Displays an error followed by its causes, `outer: cause: root cause`.
///
/// ```
/// use sae_steer_files::ErrorChain;
///
/// #[derive(Debug)]
/// struct Open(std::io::Error);
/// impl std::fmt::Display for Open {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("cannot open data.bin")
///     }
/// }
/// impl std::error::Error for Open {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let e = Open(std::io::Error::other("disk on fire"));
/// assert_eq!(ErrorChain(&e).to_string(), "cannot open data.bin: disk on fire");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, Option<Box<dyn Error + Send + Sync>>);

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn prints_every_cause_once_in_order() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let inner = Wrap("cannot read a.bin", Some(Box::new(io)));
        let outer = Wrap("cannot load the model", Some(Box::new(inner)));
        assert_eq!(
            ErrorChain(&outer).to_string(),
            "cannot load the model: cannot read a.bin: gone"
        );
        assert_eq!(ErrorChain(&Wrap("alone", None)).to_string(), "alone");
    }
}
