//! `--device cpu|cuda[:N]|auto`: where an int8 artifact's runs execute.

use anyhow::{bail, Result};
use clap::Args;

/// Where runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// GPU `N` (0 for plain `cuda`).
    Cuda(usize),
    /// The first GPU if there is a usable one, else the CPU (with a warning).
    Auto,
}

fn parse(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        "auto" => Ok(Device::Auto),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => Err(format!("`{s}`: expected cpu, cuda, cuda:N or auto")),
        },
    }
}

#[derive(Args, Debug, Clone, Copy)]
pub struct DeviceArg {
    /// Where an int8 artifact runs: cpu, cuda (the first GPU), cuda:N, or auto (a GPU
    /// if there is one, else the CPU). Model folders run on the CPU.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse)]
    pub device: Device,
}

impl DeviceArg {
    /// Runs `model`'s later inferences on the chosen device. `cuda` without a usable GPU
    /// is an error (the CLI's one line, exit 2); `auto` then warns and stays on the CPU.
    pub fn attach(&self, model: &vlm_host::Model) -> Result<()> {
        let n = match self.device {
            Device::Cpu => return Ok(()),
            Device::Cuda(n) => n,
            Device::Auto => 0,
        };
        match open(n, model) {
            Ok(()) => Ok(()),
            Err(e) if self.device == Device::Auto => {
                eprintln!("vlm: warning: --device auto: {e}; running on the CPU");
                Ok(())
            }
            Err(e) => bail!("--device cuda:{n}: {e}"),
        }
    }

    /// For a model folder (fp32, run by tract on the CPU): `cuda` is an error, `auto`
    /// a warning.
    pub fn folder(&self, what: &std::path::Path) -> Result<()> {
        match self.device {
            Device::Cpu => Ok(()),
            Device::Auto => {
                eprintln!(
                    "vlm: warning: --device auto: {} is a model folder, which runs on the CPU; quantize it (vlm quantize) to run it on a GPU",
                    what.display()
                );
                Ok(())
            }
            Device::Cuda(_) => bail!(
                "--device cuda: {} is a model folder, which runs on the CPU; quantize it (vlm quantize) to run it on a GPU",
                what.display()
            ),
        }
    }
}

#[cfg(feature = "cuda")]
fn open(n: usize, model: &vlm_host::Model) -> Result<()> {
    use std::sync::Arc;
    let gpu = vlm_cuda::Gpu::open(n)?;
    let name = format!("cuda:{n} ({})", gpu.name());
    let on_gpu = vlm_cuda::CudaModel::new(Arc::new(gpu), model.runtime())?;
    model.set_device(
        name,
        Arc::new(move || {
            let b = on_gpu.backend().map_err(|e| e.to_string())?;
            Ok(Box::new(b) as Box<dyn vlm_runtime::Backend>)
        }),
    );
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn open(_: usize, _: &vlm_host::Model) -> Result<()> {
    bail!("this vlm was built without CUDA support (the `cuda` feature)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(parse("cpu"), Ok(Device::Cpu));
        assert_eq!(parse("cuda"), Ok(Device::Cuda(0)));
        assert_eq!(parse("cuda:3"), Ok(Device::Cuda(3)));
        assert_eq!(parse("auto"), Ok(Device::Auto));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
