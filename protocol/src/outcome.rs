//! The scored result of one episode: one line of `outcomes.jsonl`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::chat::Usage;

/// Why an episode ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Termination {
    /// The agent ended the conversation (τ² `###STOP###`) or finished its task.
    AgentStop,
    /// The simulated user ended the conversation (`###STOP###`).
    UserStop,
    /// The user or agent transferred to a human (`###TRANSFER###` / `transfer_to_human_agents`).
    Transfer,
    /// The user declared the request out of scope (`###OUT-OF-SCOPE###`).
    OutOfScope,
    /// The environment reached a terminal state (goal met, purchase made).
    EnvDone,
    /// The harness step limit or the environment's own limit was reached.
    MaxSteps,
    /// Too many tool errors (τ²: 10).
    TooManyErrors,
    /// The harness stopped a repeating loop.
    LoopDetected,
    /// The model's output could not be parsed after the allowed retries.
    ParseFailure,
    /// The model backend failed (HTTP error, timeout) after retries.
    ModelError,
    /// The environment failed (crash, protocol error).
    EnvError,
    /// The episode ran past its wall-clock limit.
    Timeout,
    /// A harness processor failed or stopped the episode for safety.
    HarnessError,
}

impl Termination {
    /// Terminations that come from an infrastructure failure rather than agent behaviour.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Termination::ModelError
                | Termination::EnvError
                | Termination::HarnessError
                | Termination::Timeout
        )
    }
}

/// One reward component (τ²: `DB`, `COMMUNICATE`, `NL_ASSERTION`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentScore {
    /// The score in [0, 1]; `None` when the component could not be judged.
    pub value: Option<f64>,
    /// True when no judge was configured for this component: it is excluded from `reward`, and
    /// `success` is false; `success_judged_only` shows what success would be without it.
    #[serde(default)]
    pub unjudged: bool,
    /// Evidence: what was compared, why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The scored result of one (run, task, attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(default = "crate::default_schema")]
    pub schema: u32,
    pub run_id: String,
    pub env: String,
    pub split: String,
    pub task_id: String,
    pub attempt: u32,
    /// Every component judged and the reward is 1 (within 1e-6).
    pub success: bool,
    /// Success counting only judged components (unjudged ones treated as passed); reports show both.
    pub success_judged_only: bool,
    /// Product of judged components (0 when the episode errored or ended without a stop): an
    /// unjudged component is left out, as if passed. [`Outcome::reward_strict`] counts it as not
    /// passed; reports lead with the strict figure.
    pub reward: f64,
    pub components: BTreeMap<String, ComponentScore>,
    pub termination: Termination,
    /// Infrastructure error of this episode, if any (model, environment, harness, timeout).
    pub error: Option<String>,
    pub harness_hash: String,
    /// Model label, e.g. `oracle` or `openai:qwen@http://…`.
    pub model: String,
    pub usage: Usage,
    pub wall_ms: u64,
    /// Agent steps taken (model turns).
    pub steps: u32,
    /// τ²: sha256 of the final DB as tau2 hashes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub started_at: UnixMillis,
    pub finished_at: UnixMillis,
}

impl Outcome {
    /// The reward with every unjudged component counted as not passed (0), as `success` counts
    /// it. `reward` is the judged-only figure.
    pub fn reward_strict(&self) -> f64 {
        if self.components.values().any(|score| score.unjudged) {
            0.0
        } else {
            self.reward
        }
    }

    /// Key outcomes are deduplicated by.
    pub fn key(&self) -> (String, String, u32) {
        (self.run_id.clone(), self.task_id.clone(), self.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(components: &[(&str, Option<f64>, bool)], reward: f64) -> Outcome {
        Outcome {
            schema: 1,
            run_id: "r".into(),
            env: "tau2-retail".into(),
            split: "base".into(),
            task_id: "0".into(),
            attempt: 0,
            success: false,
            success_judged_only: reward == 1.0,
            reward,
            components: components
                .iter()
                .map(|(name, value, unjudged)| {
                    (
                        name.to_string(),
                        ComponentScore {
                            value: *value,
                            unjudged: *unjudged,
                            detail: None,
                        },
                    )
                })
                .collect(),
            termination: Termination::AgentStop,
            error: None,
            harness_hash: "h".into(),
            model: "oracle".into(),
            usage: Usage::default(),
            wall_ms: 0,
            steps: 0,
            db_hash: None,
            worker: None,
            started_at: 0,
            finished_at: 0,
        }
    }

    #[test]
    fn strict_reward_counts_an_unjudged_component_as_not_passed() {
        // Retail without a judge: the DB matches, the NL assertions are unjudged.
        let unjudged = outcome(
            &[("DB", Some(1.0), false), ("NL_ASSERTION", None, true)],
            1.0,
        );
        assert_eq!(unjudged.reward, 1.0);
        assert_eq!(unjudged.reward_strict(), 0.0);
        let judged = outcome(
            &[("DB", Some(1.0), false), ("NL_ASSERTION", Some(0.5), false)],
            0.5,
        );
        assert_eq!(judged.reward_strict(), 0.5);
        assert_eq!(outcome(&[], 0.0).reward_strict(), 0.0);
    }
}
