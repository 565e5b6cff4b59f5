//! The `activations` program; its usage is documented in `examples/activations.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sae_steer::backend::{BackendTask, DeviceChoice, run_on};
use sae_steer::burn::prelude::Backend;
use sae_steer::vit::{HostTensor, SafetensorsFile, TensorSource, write_safetensors};
use sae_steer::{
    NormalizationSource, PixelValues, Sae, SaeTap, Vit, layer_activations,
    layer_activations_with_sae,
};

/// The block the published DINOv2 SAE reads.
const DEFAULT_SAE_LAYER: usize = 10;

#[derive(Parser, Debug)]
#[command(
    about = "Run a ViT (DINOv2, DINOv3, CLIP or SigLIP) on one image and save the activations of every layer"
)]
pub struct Args {
    /// The ViT: a Hugging Face folder (config.json + model.safetensors, and
    /// preprocessor_config.json where the model has one), a DINOv2 torch-hub
    /// .pth checkpoint, or a hub id (DINOv2, DINOv3, CLIP or SigLIP vision towers).
    #[arg(long, default_value = sae_steer::vit::load::DEFAULT_VIT)]
    vit: String,
    /// An image file, preprocessed as the model's processor does (DINOv2: the
    /// reference's 256 resize and 224 crop; others: their preprocessor_config.json).
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
    /// cpu (burn-flex, the default), ndarray, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// An SAE to apply to one layer's patch tokens: a saev sae.pt or one of our
    /// safetensors checkpoints, or a hub id `owner/name[:file]` (file sae.pt by
    /// default), e.g. osunlp/SAE_DINOv2_24K_ViT-B-14_IN1K.
    #[arg(long)]
    sae: Option<String>,
    /// 0-based block whose output the SAE reads (default: the layer our
    /// checkpoints record, else 10); must be below the ViT's depth.
    #[arg(long, requires = "sae")]
    sae_layer: Option<usize>,
    /// Input normalization for the SAE: safetensors with `mean` [d] and `scalar`.
    #[arg(long, requires = "sae")]
    sae_norm: Option<PathBuf>,
    /// Latent to steer (0-based) for `sae.steered`.
    #[arg(long, requires_all = ["sae", "steer_value"])]
    steer_latent: Option<usize>,
    /// Value the steered latent is set to, in the SAE's units.
    #[arg(long, requires = "steer_latent", allow_negative_numbers = true)]
    steer_value: Option<f32>,
}

struct Activations {
    args: Args,
    /// `pixel_values` given as is; `None` to preprocess `--image` the way the
    /// loaded model's own pipeline does (known only once it is loaded).
    pixels: Option<PixelValues>,
}

impl BackendTask for Activations {
    type Output = Result<Vec<(String, HostTensor)>>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = &self.args;
        // The SAE first: its errors are cheaper to find than a ViT load.
        let sae = match &args.sae {
            None => None,
            Some(spec) => {
                let sae = Sae::<B>::load(spec, &device)?;
                let with = match (&args.sae_norm, sae.has_normalization()) {
                    (Some(path), _) => NormalizationSource::File(path.clone()),
                    (None, true) => NormalizationSource::Checkpoint,
                    // saev's own forward takes what it is given: the file's
                    // outputs then match it on raw activations.
                    (None, false) => {
                        eprintln!(
                            "note: {spec} carries no input normalization and none was given \
                             (--sae-norm): the SAE runs on raw activations"
                        );
                        NormalizationSource::None
                    }
                };
                let (sae, _) = sae.resolve(with)?;
                Some(sae)
            }
        };
        let vit = Vit::<B>::load(&args.vit, &device)?;
        let pixels = match (self.pixels, &args.image) {
            (Some(pixels), _) => pixels,
            (None, Some(image)) => vit.preprocess().apply_path(image)?,
            (None, None) => bail!("give --image or --pixel-values"),
        };
        match &sae {
            None => Ok(layer_activations(&vit, &pixels)?),
            Some(sae) => {
                let layer = args
                    .sae_layer
                    .or(sae.config.layer)
                    .unwrap_or(DEFAULT_SAE_LAYER);
                let tap = SaeTap {
                    sae,
                    layer,
                    steer: args.steer_latent.zip(args.steer_value),
                };
                Ok(layer_activations_with_sae(&vit, &pixels, &tap)?)
            }
        }
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

pub fn main() -> ExitCode {
    run_args(Args::parse())
}

/// Runs the program with parsed arguments (the `sae-steer` subcommand).
pub fn run_args(args: Args) -> ExitCode {
    crate::cli::report(run(args))
}

fn run(args: Args) -> Result<()> {
    let pixels = match (&args.image, &args.pixel_values) {
        (Some(_), _) => None,
        (None, Some(pv)) => Some(read_pixel_values(pv)?),
        (None, None) => bail!("give --image or --pixel-values"),
    };
    let out = args.out.clone();
    let device = args.device;
    let tensors = run_on(device, Activations { args, pixels })??;
    write_safetensors(&out, &tensors, None)?;
    eprintln!("wrote {} tensors to {}", tensors.len(), out.display());
    Ok(())
}
