//! Command-line plumbing shared by the example programs.

use std::process::ExitCode;

/// Prints an error with its chain of causes and returns a failing exit code:
/// examples report bad input as a message, never as a panic.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
