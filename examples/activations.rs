//! Runs DINOv2 on one image and writes every layer's activations.
//!
//! A stable interface other tools call (parity checks, notebooks):
//!
//! ```text
//! cargo run --release --example activations -- \
//!   --vit <HF folder | .pth file | hub id> (--image <file> | --pixel-values <file>) \
//!   --out <file.safetensors>
//! ```
//!
//! Writes float32 tensors: `pixel_values` [3, H, W] (the model input),
//! `layer.{i}` [tokens, d] for every block i (0-based, residual after block i,
//! before the final norm), `x_norm_patchtokens` [patches, d], `x_norm_clstoken` [d].

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer::vit::{HostTensor, SafetensorsFile, TensorSource, write_safetensors};
use sae_steer::{Dinov2, PixelValues, layer_activations, preprocess_path};

#[derive(Parser, Debug)]
#[command(about = "Run DINOv2 on one image and save the activations of every layer")]
struct Args {
    /// The ViT: a Hugging Face folder (config.json + model.safetensors), a
    /// torch-hub .pth checkpoint, or a hub id.
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// An image file, preprocessed like the reference (256 resize, 224 crop).
    #[arg(
        long,
        conflicts_with = "pixel_values",
        required_unless_present = "pixel_values"
    )]
    image: Option<PathBuf>,
    /// A safetensors file with `pixel_values` [3, H, W] float32, used as is.
    #[arg(long)]
    pixel_values: Option<PathBuf>,
    /// Where to write the activations (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// cpu, flex, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

struct Activations {
    args: Args,
    pixels: PixelValues,
}

impl BackendTask for Activations {
    type Output = Result<Vec<(String, HostTensor)>>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let vit = Dinov2::<B>::load(&self.args.vit, &device)?;
        Ok(layer_activations(&vit, &self.pixels)?)
    }
}

fn read_pixel_values(path: &PathBuf) -> Result<PixelValues> {
    let file = SafetensorsFile::open(path)?;
    let shape = file
        .shape("pixel_values")
        .with_context(|| format!("{} holds no tensor `pixel_values`", path.display()))?;
    let [c, h, w] = shape[..] else {
        bail!(
            "{}: `pixel_values` has shape {shape:?}, expected [3, H, W]",
            path.display()
        );
    };
    if c != 3 {
        bail!(
            "{}: `pixel_values` has {c} channels, expected 3",
            path.display()
        );
    }
    Ok(PixelValues {
        height: h,
        width: w,
        data: file.read("pixel_values")?.data,
    })
}

fn main() -> ExitCode {
    sae_steer_examples::report(run(Args::parse()))
}

fn run(args: Args) -> Result<()> {
    let pixels = match (&args.image, &args.pixel_values) {
        (Some(image), _) => preprocess_path(image)?,
        (None, Some(pv)) => read_pixel_values(pv)?,
        (None, None) => bail!("give --image or --pixel-values"),
    };
    let out = args.out.clone();
    let device = args.device;
    let tensors = run_on(device, Activations { args, pixels })??;
    write_safetensors(&out, &tensors, None)?;
    eprintln!("wrote {} tensors to {}", tensors.len(), out.display());
    Ok(())
}
