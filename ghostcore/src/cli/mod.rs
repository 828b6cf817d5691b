//! Subcommands of the `ghost` tool, one module each.

pub mod bench;
pub mod calibrate;
pub mod chat;
pub mod inspect;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod sparsity_setup;
pub mod sweep;
pub mod synth;
pub mod tokenize;
pub mod tune;

/// `--device cpu|gpu`, shared by the commands that run the model.
#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where the forward pass runs: `cpu`, or `gpu` (a CUDA GPU; needs a build with the
    /// `cuda` feature and a driver, else falls back to the CPU and says so).
    #[arg(long = "device", default_value = "cpu", value_parser = ["cpu", "gpu"])]
    pub device: String,
}

impl DeviceArgs {
    pub fn device(&self) -> crate::backend::Device {
        match self.device.as_str() {
            "gpu" => crate::backend::Device::Gpu,
            _ => crate::backend::Device::Cpu,
        }
    }
}
