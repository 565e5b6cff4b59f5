//! The `manipulate` program; its usage is documented in `examples/manipulate.rs`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice};
use sae_steer::burn::prelude::Backend;
use sae_steer_app::{DEFAULT_CACHED_IMAGES, ServeOptions, Session, UploadLimits, serve};

#[derive(Parser, Debug)]
#[command(about = "Serve the interactive SAE steering page")]
pub struct Args {
    #[command(flatten)]
    session: crate::cli::SessionArgs,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Largest upload, in MiB.
    #[arg(long, default_value_t = 16)]
    max_upload_mib: usize,
    /// Largest upload, in megapixels.
    #[arg(long, default_value_t = 40)]
    max_upload_mpix: u64,
    /// Images kept at the SAE's layer (each is tokens x width floats).
    #[arg(long, default_value_t = DEFAULT_CACHED_IMAGES)]
    cache_images: usize,
}

struct Serve(Args);

impl BackendTask for Serve {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        let args = self.0;
        let loaded = args.session.load::<B>(&device)?;
        let limits = UploadLimits {
            max_bytes: args.max_upload_mib.saturating_mul(1 << 20),
            max_pixels: args.max_upload_mpix.saturating_mul(1_000_000),
            ..UploadLimits::default()
        };
        let store = Arc::new(loaded.store.with_limits(limits));
        let session = Session::new(loaded.steering, store, args.cache_images);
        if !args.addr.ip().is_loopback() {
            eprintln!(
                "warning: listening on {}, reachable from other machines; the app has no authentication",
                args.addr
            );
        }
        let options = ServeOptions {
            addr: args.addr,
            dataset: loaded.dataset,
            notes: loaded.notes,
            ..ServeOptions::default()
        };
        serve(session, options, |handle| {
            eprintln!("serving on {} (Ctrl-C stops)", handle.url());
        })
        .context("the server failed")
    }
}

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    let device = args.device;
    crate::cli::run_and_report(device, Serve(args))
}
