//! Builders of records for the coordinator's unit tests.

use std::collections::BTreeMap;

use kiln_protocol::{ComponentScore, ModelSpec, Outcome, Termination, Trajectory, Usage};
use kiln_worker::TaskResult;

pub(crate) fn outcome(run_id: &str, task_id: &str, attempt: u32, success: bool) -> Outcome {
    let value = if success { 1.0 } else { 0.0 };
    Outcome {
        schema: 1,
        run_id: run_id.into(),
        env: "tau2-airline".into(),
        split: "test".into(),
        task_id: task_id.into(),
        attempt,
        success,
        success_judged_only: success,
        reward: value,
        components: BTreeMap::from([(
            "DB".to_string(),
            ComponentScore {
                value: Some(value),
                unjudged: false,
                detail: None,
            },
        )]),
        termination: Termination::AgentStop,
        error: None,
        harness_hash: "abc123".into(),
        model: "oracle".into(),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            calls: 1,
        },
        wall_ms: 100,
        steps: 3,
        db_hash: Some("0f".into()),
        worker: Some("w0".into()),
        started_at: 1_000,
        finished_at: 1_100,
    }
}

pub(crate) fn result(run_id: &str, task_id: &str, attempt: u32, success: bool) -> TaskResult {
    let outcome = outcome(run_id, task_id, attempt, success);
    let trajectory = Trajectory {
        schema: 1,
        run_id: run_id.into(),
        env: outcome.env.clone(),
        task_id: task_id.into(),
        attempt,
        harness_hash: outcome.harness_hash.clone(),
        model: ModelSpec::Oracle,
        opening: Vec::new(),
        steps: Vec::new(),
        events: Vec::new(),
    };
    TaskResult {
        outcome,
        trajectory,
    }
}
