//! The default [`EpisodeRunner`]: kiln-harness's episode loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_harness::{Harness, run_episode};
use kiln_protocol::{HarnessSpec, Termination};

use crate::failure::TaskFailure;
use crate::transport::TaskResult;
use crate::worker::{Episode, EpisodeRunner};

/// Runs episodes with [`kiln_harness::run_episode`], validating each harness version once.
#[derive(Default)]
pub struct HarnessEpisodeRunner {
    validated: Mutex<HashMap<String, Arc<Harness>>>,
}

impl HarnessEpisodeRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The validated harness stored under `hash`. A spec that does not validate, or whose content
    /// hash is not `hash`, fails the task: every redelivery would fail the same way.
    fn harness(&self, hash: &str, spec: &HarnessSpec) -> Result<Arc<Harness>, TaskFailure> {
        let mut validated = self
            .validated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(harness) = validated.get(hash) {
            return Ok(harness.clone());
        }
        let harness = Harness::new(spec).map_err(|error| {
            TaskFailure::deterministic(
                Termination::HarnessError,
                format!("harness {hash} is invalid: {error}"),
            )
        })?;
        if harness.hash() != hash {
            return Err(TaskFailure::deterministic(
                Termination::HarnessError,
                format!(
                    "harness stored as {hash} hashes to {}; the harness store is inconsistent",
                    harness.hash()
                ),
            ));
        }
        let harness = Arc::new(harness);
        validated.insert(hash.to_string(), harness.clone());
        Ok(harness)
    }
}

#[async_trait]
impl EpisodeRunner for HarnessEpisodeRunner {
    async fn run(&self, episode: Episode) -> Result<TaskResult, TaskFailure> {
        let harness = self.harness(&episode.harness_hash, &episode.harness)?;
        let Episode {
            task,
            models,
            mut env,
            worker_id,
            ..
        } = episode;
        let result = run_episode(
            &harness,
            models.as_ref(),
            env.as_mut(),
            &task,
            Some(&worker_id),
        )
        .await;
        if let Err(error) = env.close().await {
            tracing::warn!(%error, "closing the environment failed");
        }
        Ok(TaskResult {
            outcome: result.outcome,
            trajectory: result.trajectory,
        })
    }
}
