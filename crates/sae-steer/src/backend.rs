//! Choosing a compute backend at run time among those compiled in.
//!
//! Models and algorithms are generic over burn's `Backend`; a command-line tool
//! picks one from `--device` and hands a [`BackendTask`] to [`run_on`], which
//! monomorphises the task for that backend.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Backend;

/// A device the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU with burn-flex, the default: the fastest CPU backend that
    /// passes every parity test (see docs/performance.md).
    #[default]
    Cpu,
    /// The CPU with burn-ndarray.
    Ndarray,
    /// The n-th CUDA GPU.
    Cuda(usize),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Ndarray => write!(f, "ndarray"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = BackendError;

    /// `cpu` (or `flex`), `ndarray`, `cuda` or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" | "flex" => Ok(Self::Cpu),
            "ndarray" => Ok(Self::Ndarray),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| BackendError::Unknown(s.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown device `{0}`: expected cpu (flex), ndarray, cuda or cuda:N")]
    Unknown(String),
    #[error(
        "device `{device}` needs the `{feature}` feature, which this build lacks; rebuild with `--features {feature}`"
    )]
    NotCompiled {
        device: DeviceChoice,
        feature: &'static str,
    },
    #[error("no usable CUDA device {index}: {message}")]
    NoGpu { index: usize, message: String },
}

/// Work to run on whichever backend the user picked.
pub trait BackendTask {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// The default CPU backend type (burn-flex).
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;

/// Runs `task` on the chosen device, or says why it cannot.
pub fn run_on<T: BackendTask>(choice: DeviceChoice, task: T) -> Result<T::Output, BackendError> {
    match choice {
        DeviceChoice::Cpu => {
            #[cfg(feature = "flex")]
            return Ok(task.run::<Cpu>(Default::default()));
            #[cfg(not(feature = "flex"))]
            {
                let _ = task;
                Err(BackendError::NotCompiled {
                    device: choice,
                    feature: "flex",
                })
            }
        }
        DeviceChoice::Ndarray => {
            #[cfg(feature = "ndarray")]
            return Ok(task.run::<burn::backend::NdArray<f32>>(Default::default()));
            #[cfg(not(feature = "ndarray"))]
            {
                let _ = task;
                Err(BackendError::NotCompiled {
                    device: choice,
                    feature: "ndarray",
                })
            }
        }
        DeviceChoice::Cuda(index) => {
            #[cfg(feature = "cuda")]
            {
                use burn::backend::{Cuda, cuda::CudaDevice};
                let device = CudaDevice::new(index);
                probe_cuda::<Cuda>(&device, index)?;
                return Ok(task.run::<Cuda>(device));
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (task, index);
                Err(BackendError::NotCompiled {
                    device: choice,
                    feature: "cuda",
                })
            }
        }
    }
}

/// CubeCL panics when no driver or device is present; turn that into an error.
#[cfg(feature = "cuda")]
fn probe_cuda<B: Backend>(device: &B::Device, index: usize) -> Result<(), BackendError> {
    let device = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // The device is only read; a failed probe leaves nothing half-updated.
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let t = burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0], &device);
        t.sum().into_scalar().elem::<f32>()
    }));
    std::panic::set_hook(hook);
    use burn::tensor::ElementConversion;
    match probe {
        Ok(v) if (v - 3.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(BackendError::NoGpu {
            index,
            message: format!("probe sum gave {v}, expected 3"),
        }),
        Err(e) => Err(BackendError::NoGpu {
            index,
            message: e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA runtime failed to start".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("flex".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "ndarray".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Ndarray
        );
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert!(matches!(
            "tpu".parse::<DeviceChoice>(),
            Err(BackendError::Unknown(_))
        ));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    struct Sum;
    impl BackendTask for Sum {
        type Output = f32;
        fn run<B: Backend>(self, device: B::Device) -> f32 {
            use burn::tensor::ElementConversion;
            burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.5], &device)
                .sum()
                .into_scalar()
                .elem()
        }
    }

    #[test]
    fn runs_on_cpu_and_refuses_missing_backends() {
        assert_eq!(run_on(DeviceChoice::Cpu, Sum).unwrap(), 3.5);
        assert_eq!(run_on(DeviceChoice::Ndarray, Sum).unwrap(), 3.5);
        #[cfg(not(feature = "cuda"))]
        {
            let err = run_on(DeviceChoice::Cuda(0), Sum).unwrap_err();
            assert!(err.to_string().contains("--features cuda"), "{err}");
        }
    }
}
