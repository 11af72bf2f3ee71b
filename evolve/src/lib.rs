//! AEGIS: trace-driven harness evolution.
//!
//! One round: digest (trajectories → per-task failure summaries) → plan (a landscape of recurring
//! failures and tried levers) → evolve (K candidates, each a list of substitution-algebra edits
//! with a manifest) → critic (static, deterministic rejection of hacks and fatigued levers) →
//! gate (deterministic: canonical form, smoke, per-task no-regression against round-0 noise, paired
//! test) → ship. Each stage is a plain module whose logic is testable without rollouts.
//!
//! - [`stats`], [`critic`] and [`gate`]: the statistics, the static critic and the deterministic gate.
//! - [`splits`]: the frozen search / gate / held-out splits.
//! - [`traces`]: the trace store, which refuses held-out runs until the [`FinalEvaluation`].
//! - [`digest`]: per-task structured failure summaries with deterministic signatures.
//! - [`plan`]: the landscape (`landscape.md` + `landscape.json`).
//! - [`evolver`] and [`operators`]: the rules and LLM evolvers.
//! - [`artifacts`]: the round directory `R<n>/`, `INDEX.md` and `journal.md`.
//! - [`rollouts`]: how the loop gets rollouts (ordinary runs) and reads them back.
//! - [`driver`]: the loop itself (round 0 calibration, rounds, resume, replay).
//! - [`report`]: the final held-out evaluation and `report.md`.

pub mod artifacts;
pub mod candidate;
pub mod critic;
pub mod digest;
pub mod driver;
pub mod evolver;
pub mod gate;
pub mod operators;
pub mod plan;
pub mod report;
pub mod rng;
pub mod rollouts;
pub mod splits;
pub mod stats;
pub mod traces;

pub use candidate::{
    AttributionSignature, Bucket, Candidate, CapabilityEvidence, EvidencePointer, Manifest,
    PredictedImpact,
};
pub use digest::{FailureCategory, TaskDigest, TaskStatus, digest_tasks};
pub use driver::{Evolution, EvolutionSummary, EvolveConfig, EvolveError, EvolveProgress, Mode};
pub use evolver::{Demonstration, EvolveInput, Evolver, LlmEvolver, Proposals, RulesEvolver};
pub use plan::{EditRecord, EditVerdict, Landscape, PlanInput, plan};
pub use rollouts::{RolloutError, RolloutRequest, Rollouts, StoredRollouts};
pub use splits::{EvolutionSplits, SplitRole, SplitSizes};
pub use traces::{FinalEvaluation, RunTraces, TraceError, TraceErrorKind, TraceStore};
