//! Where embedded inference runs: CUDA when Kiln was built with it and a GPU is present, else the
//! CPU.
//!
//! # Building for NVIDIA GPUs
//!
//! `cargo build --release -p kiln --features kiln-models/cuda` (or `-p kiln-models --features
//! cuda`) compiles candle's CUDA backend and kernels. The build needs the CUDA toolkit: `nvcc` on
//! `PATH` (or `CUDA_ROOT`/`CUDA_PATH` pointing at the toolkit) and the CUDA libraries (cuBLAS,
//! cuRAND, the driver API) to link against. `CUDA_COMPUTE_CAP` picks the GPU architecture the
//! kernels are compiled for (`90` for H100/H200, `89` for L4/RTX 40xx, `80` for A100); without it
//! the build asks `nvidia-smi` for the local GPU's. The same binary still runs on machines without
//! a GPU: [`select_device`] falls back to the CPU.
//!
//! On CUDA, every linear layer goes through candle's quantized matmul (its Q4_1 kernels), and
//! attention through candle ops; the CPU-only kernels ([`super::q4_1`], [`super::attention`]) are
//! not used.

use candle_core::Device;

/// Which device a caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePreference {
    /// CUDA device 0 when built with the `cuda` feature and a GPU answers, else the CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// CUDA device `n`; an error when unavailable.
    Cuda(usize),
}

/// The device for `preference`. `Auto` never fails: a CUDA build without a usable GPU logs why and
/// runs on the CPU.
pub fn select_device(preference: DevicePreference) -> candle_core::Result<Device> {
    match preference {
        DevicePreference::Cpu => Ok(Device::Cpu),
        DevicePreference::Cuda(ordinal) => Device::new_cuda(ordinal),
        DevicePreference::Auto => {
            if !candle_core::utils::cuda_is_available() {
                return Ok(Device::Cpu);
            }
            match Device::new_cuda(0) {
                Ok(device) => Ok(device),
                Err(error) => {
                    tracing::warn!(%error, "built with cuda but no usable gpu; running on the cpu");
                    Ok(Device::Cpu)
                }
            }
        }
    }
}

/// Devices tests run on: the CPU, and CUDA device 0 when built with the `cuda` feature.
pub fn test_devices() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    if candle_core::utils::cuda_is_available() {
        match Device::new_cuda(0) {
            Ok(device) => devices.push(device),
            Err(error) => panic!("built with the cuda feature but cuda device 0 fails: {error}"),
        }
    }
    devices
}

/// A short name for test and log output.
pub fn device_name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// Defines one test per device from a function taking a `&candle_core::Device`, like candle's own
/// `test_device!`: `name_cpu` always, `name_cuda` when built with the `cuda` feature (failing, not
/// skipping, when no GPU answers). The `cuda` feature checked is the calling crate's (for
/// `kiln-models`' own tests: `cargo test -p kiln-models --features cuda`); the caller needs
/// `candle-core` as a dependency.
///
/// ```text
/// fn greedy_is_deterministic(device: &candle_core::Device) { /* … */ }
/// kiln_models::test_device!(greedy_is_deterministic, greedy_is_deterministic_cpu, greedy_is_deterministic_cuda);
/// ```
#[macro_export]
macro_rules! test_device {
    ($function:ident, $cpu_test:ident, $cuda_test:ident) => {
        #[test]
        fn $cpu_test() {
            $function(&candle_core::Device::Cpu)
        }

        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda_test() {
            let device = candle_core::Device::new_cuda(0)
                .expect("built with the cuda feature, but cuda device 0 is not usable");
            $function(&device)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_auto_falls_back_to_it() {
        assert!(select_device(DevicePreference::Cpu).unwrap().is_cpu());
        let auto = select_device(DevicePreference::Auto).unwrap();
        assert_eq!(auto.is_cuda(), candle_core::utils::cuda_is_available());
        assert_eq!(device_name(&Device::Cpu), "cpu");
        assert!(test_devices()[0].is_cpu());
    }
}
