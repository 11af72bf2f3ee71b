//! What a run still has to do: the (task, attempt) keys not recorded yet, as [`TaskSpec`]s with
//! seeds derived from (run or seed scope, task, attempt) so a re-run of a key gets the same seed.

use std::collections::BTreeSet;

use kiln_protocol::TaskSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::RunConfig;

/// The seed of one (run, task, attempt): the first 8 bytes of a SHA-256 over the three, so seeds are
/// stable across processes, machines and Kiln versions.
pub fn derive_seed(run_id: &str, task_id: &str, attempt: u32) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(run_id.as_bytes());
    hasher.update([0]);
    hasher.update(task_id.as_bytes());
    hasher.update([0]);
    hasher.update(attempt.to_le_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The tasks to dispatch: every expected key of `config` not in `done`, in dispatch order (all
/// tasks of attempt 0 first, so an interrupted run has the widest coverage).
pub fn pending_tasks(
    config: &RunConfig,
    done: &BTreeSet<(String, u32)>,
    env_options: &Value,
    timeout_s: u64,
) -> Vec<TaskSpec> {
    config
        .expected_keys()
        .into_iter()
        .filter(|key| !done.contains(key))
        .map(|(task_id, attempt)| TaskSpec {
            schema: kiln_protocol::SCHEMA_VERSION,
            run_id: config.run_id.clone(),
            env: config.env.clone(),
            split: config.split.clone(),
            seed: derive_seed(config.seed_basis(), &task_id, attempt),
            task_id,
            attempt,
            harness_hash: config.harness.hash.clone(),
            model: config.model.clone(),
            env_options: env_options.clone(),
            timeout_s,
        })
        .collect()
}

/// A fresh run id: `<env>-<UTC date>-<UTC time>-<4 hex digits>`, sortable by creation time.
pub fn new_run_id(env: &str, now: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now
        .format(&format)
        .unwrap_or_else(|_| "00000000-000000".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("{env}-{stamp}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use serde_json::json;

    #[test]
    fn seeds_depend_on_every_part_of_the_key_and_are_stable() {
        let seed = derive_seed("run", "task", 0);
        assert_eq!(seed, derive_seed("run", "task", 0));
        assert_ne!(seed, derive_seed("run", "task", 1));
        assert_ne!(seed, derive_seed("run", "task2", 0));
        assert_ne!(seed, derive_seed("run2", "task", 0));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(derive_seed("ab", "c", 0), derive_seed("a", "bc", 0));
    }

    #[test]
    fn pending_tasks_skip_done_keys_and_carry_the_run_settings() {
        let config = sample_config();
        let done = BTreeSet::from([("1".to_string(), 0)]);
        let options = json!({"user": "scripted"});
        let tasks = pending_tasks(&config, &done, &options, 30);
        let keys: Vec<_> = tasks
            .iter()
            .map(|task| (task.task_id.as_str(), task.attempt))
            .collect();
        assert_eq!(keys, vec![("0", 0), ("0", 1), ("1", 1)]);
        for task in &tasks {
            assert_eq!(task.run_id, config.run_id);
            assert_eq!(task.harness_hash, config.harness.hash);
            assert_eq!(task.env_options, options);
            assert_eq!(task.timeout_s, 30);
            assert_eq!(
                task.seed,
                derive_seed(&config.run_id, &task.task_id, task.attempt)
            );
        }
    }

    #[test]
    fn runs_of_one_seed_scope_share_seeds() {
        let mut first = sample_config();
        let mut second = sample_config();
        second.run_id = "another-run".into();
        let seeds = |config: &RunConfig| -> Vec<u64> {
            pending_tasks(config, &BTreeSet::new(), &Value::Null, 0)
                .iter()
                .map(|task| task.seed)
                .collect()
        };
        assert_ne!(
            seeds(&first),
            seeds(&second),
            "different runs, different seeds"
        );
        first.seed_scope = Some("gate".into());
        second.seed_scope = Some("gate".into());
        assert_eq!(seeds(&first), seeds(&second), "one scope, the same seeds");
        let all = seeds(&first);
        assert_eq!(all[0], derive_seed("gate", "0", 0));
        assert_ne!(all[0], all[2], "attempts of a task still differ");
    }

    #[test]
    fn run_ids_start_with_the_env_and_the_utc_time() {
        let now = time::macros::datetime!(2025-03-04 05:06:07 UTC);
        let id = new_run_id("tau2-retail", now);
        assert!(id.starts_with("tau2-retail-20250304-050607-"), "{id}");
        assert_eq!(id.len(), "tau2-retail-20250304-050607-".len() + 4);
    }
}
