//! Names that tools outside the code rely on (DESIGN.md, "Settled names").

/// JetStream work-queue stream holding tasks.
pub const TASKS_STREAM: &str = "KILN_TASKS";
/// JetStream stream holding outcomes and trajectories.
pub const OUTCOMES_STREAM: &str = "KILN_OUTCOMES";
/// KV bucket with harness versions, keyed by content hash.
pub const HARNESS_BUCKET: &str = "kiln_harness";
/// Object store with model checkpoints.
pub const CHECKPOINT_STORE: &str = "kiln_checkpoints";
/// Docker label carrying the run id.
pub const LABEL_RUN: &str = "kiln.run";
/// Docker label carrying the worker id.
pub const LABEL_WORKER: &str = "kiln.worker";

/// Subject of a run's tasks.
pub fn task_subject(run_id: &str) -> String {
    format!("kiln.tasks.{run_id}")
}

/// Subject of a run's outcomes.
pub fn outcome_subject(run_id: &str) -> String {
    format!("kiln.outcomes.{run_id}")
}

/// Image name for a Kiln-built image.
pub fn image_name(name: &str, version: &str) -> String {
    format!("kiln/{name}:{version}")
}

/// JetStream stream that keeps the max-deliveries advisories of [`TASKS_STREAM`], so that a task
/// given up while no coordinator was listening still gets its error outcome.
pub const ADVISORIES_STREAM: &str = "KILN_ADVISORIES";
/// KV bucket of submitted runs (their configuration and state), which `kiln coordinator` executes.
pub const RUNS_BUCKET: &str = "kiln_runs";
