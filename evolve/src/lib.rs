//! AEGIS: trace-driven harness evolution.
//!
//! One round: digest (trajectories → per-task failure summaries) → plan (a landscape of recurring
//! failures and tried levers) → evolve (K candidates, each a list of substitution-algebra edits
//! with a manifest) → critic (static, deterministic rejection of hacks and fatigued levers) →
//! gate (deterministic: canonical form, smoke, per-task no-regression against round-0 noise, paired
//! test) → ship. Each stage is a plain module whose logic is testable without rollouts.

pub mod candidate;
pub mod critic;
pub mod gate;
pub mod stats;

pub use candidate::{
    AttributionSignature, Bucket, Candidate, CapabilityEvidence, EvidencePointer, Manifest,
    PredictedImpact,
};
