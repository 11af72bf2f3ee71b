//! Results for tasks that could not run: one bad task becomes that task's outcome, with `error` set,
//! and never stops the worker.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_protocol::{Outcome, TaskSpec, Termination, Trajectory, UnixMillis, Usage};

use crate::transport::TaskResult;

/// Why a task failed before or outside its episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub termination: Termination,
    pub message: String,
    /// True when running the task again cannot succeed (unknown task, missing harness): the lease
    /// is terminated instead of acked so a JetStream backend does not redeliver it.
    pub deterministic: bool,
}

impl TaskFailure {
    pub fn deterministic(termination: Termination, message: impl Into<String>) -> Self {
        Self {
            termination,
            message: message.into(),
            deterministic: true,
        }
    }

    pub fn transient(termination: Termination, message: impl Into<String>) -> Self {
        Self {
            termination,
            message: message.into(),
            deterministic: false,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as UnixMillis)
        .unwrap_or(0)
}

/// The outcome and (empty) trajectory recorded for a task that failed outside a normal episode.
pub fn failure_result(
    task: &TaskSpec,
    failure: &TaskFailure,
    model_label: &str,
    worker_id: &str,
    started_at: UnixMillis,
) -> TaskResult {
    let finished_at = now_millis().max(started_at);
    let outcome = Outcome {
        schema: kiln_protocol::SCHEMA_VERSION,
        run_id: task.run_id.clone(),
        env: task.env.clone(),
        split: task.split.clone(),
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        success: false,
        success_judged_only: false,
        reward: 0.0,
        components: BTreeMap::new(),
        termination: failure.termination,
        error: Some(failure.message.clone()),
        harness_hash: task.harness_hash.clone(),
        model: model_label.to_string(),
        usage: Usage::default(),
        wall_ms: finished_at - started_at,
        steps: 0,
        db_hash: None,
        worker: Some(worker_id.to_string()),
        started_at,
        finished_at,
    };
    let trajectory = Trajectory {
        schema: kiln_protocol::SCHEMA_VERSION,
        run_id: task.run_id.clone(),
        env: task.env.clone(),
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        harness_hash: task.harness_hash.clone(),
        model: task.model.clone(),
        opening: Vec::new(),
        steps: Vec::new(),
        events: vec![serde_json::json!({ "kind": "task_failed", "error": failure.message })],
    };
    TaskResult {
        outcome,
        trajectory,
    }
}

/// The message of a panic payload (`panic!("...")` carries a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return (*text).to_string();
    }
    if let Some(text) = payload.downcast_ref::<String>() {
        return text.clone();
    }
    "non-string panic payload".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::ModelSpec;

    #[test]
    fn failure_result_keeps_the_task_key_and_marks_the_error() {
        let task = TaskSpec {
            schema: 1,
            run_id: "run-1".into(),
            env: "tau2-airline".into(),
            split: "test".into(),
            task_id: "7".into(),
            attempt: 2,
            harness_hash: "abc".into(),
            model: ModelSpec::Oracle,
            env_options: serde_json::Value::Null,
            seed: 1,
            timeout_s: 0,
        };
        let failure = TaskFailure::deterministic(Termination::EnvError, "no task 7");
        let result = failure_result(&task, &failure, "oracle", "w0", 1_000);
        assert_eq!(result.outcome.key(), task.key());
        assert_eq!(result.outcome.error.as_deref(), Some("no task 7"));
        assert_eq!(result.outcome.termination, Termination::EnvError);
        assert!(!result.outcome.success && !result.outcome.success_judged_only);
        assert_eq!(result.outcome.reward, 0.0);
        assert!(result.outcome.finished_at >= 1_000);
        assert_eq!(result.trajectory.task_id, "7");
        assert_eq!(result.trajectory.attempt, 2);
    }

    #[test]
    fn panic_messages_are_extracted_from_both_payload_types() {
        let static_payload: Box<dyn std::any::Any + Send> = Box::new("boom");
        let owned_payload: Box<dyn std::any::Any + Send> = Box::new(String::from("bang 3"));
        assert_eq!(panic_message(static_payload.as_ref()), "boom");
        assert_eq!(panic_message(owned_payload.as_ref()), "bang 3");
        assert_eq!(panic_message(&42_u8), "non-string panic payload");
    }
}
