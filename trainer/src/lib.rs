//! Kiln's trainer: the model half of harness–model co-evolution.
//!
//! - [`llama`]: the differentiable Llama (SmolLM2, any Llama GGUF) in candle, base dequantized once
//!   from the workers' GGUF and frozen; norm, softmax and RoPE from basic ops so gradients flow.
//! - [`lora`]: LoRA adapters (rank, alpha, target projections; `B = 0` so step 0 is the base).
//! - [`grpo`]: cross-harness GRPO — advantages grouped by task id across harness versions and
//!   checkpoints, token-level clipped ratio against cached behaviour logprobs, AdamW.
//! - [`buffer`]: the replay buffer fed from run directories.
//! - [`checkpoint`]: adapter safetensors + `manifest.json` in `<dir>/<id>/`.
//! - [`train`]: offline training from recorded runs (`kiln train`).

pub mod buffer;
pub mod checkpoint;
pub mod grpo;
pub mod llama;
pub mod lora;
pub mod train;

pub use buffer::{ReplayBuffer, load_run};
pub use grpo::{Aggregation, GrpoConfig, GrpoTrainer, Sample, Segment, StepMetrics};
pub use llama::{BaseModel, Llama};
pub use lora::{LoraAdapters, LoraConfig, Target};
pub use train::{TrainError, TrainOptions, TrainReport, train_offline};
