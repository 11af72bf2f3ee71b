//! GAIA (Mialon et al., 2023) in its official format, with the official scorer.
//!
//! - [`scorer`]: the leaderboard's `question_scorer`, rule for rule and quirk for quirk.
//! - [`dataset`]: `metadata.jsonl` / `metadata.parquet` splits, levels and attachments.
//! - [`env`]: the [`Environment`](crate::Environment) (`--env gaia:PATH`), answer extraction
//!   (`submit` tool, else the last `FINAL ANSWER:`), and its factory.
//! - [`submission`]: submission files (`task_id`, `model_answer`, `reasoning_trace`) and scoring a
//!   submission against a dataset (`kiln gaia score`).

pub mod dataset;
pub mod env;
pub mod scorer;
pub mod submission;

pub use dataset::{GaiaDataset, GaiaSplit, GaiaTask};
pub use env::{ENV_PREFIX, GaiaEnvironment, GaiaFactory, answer_of, final_answer_in, is_gaia};
pub use scorer::{Rule, Verdict, question_scorer};
