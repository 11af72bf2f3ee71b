//! Shared by the sandbox tests: the env-server binary, tasks, and a τ² oracle episode played
//! through the `Environment` API.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use kiln_environments::{EnvContext, Environment, Evaluation, catalog, default_data_dir};
use kiln_protocol::{ModelSpec, TaskSpec, Termination};
use serde_json::Value;

/// `kiln-env-server` of this build (debug), built on first use: it belongs to kiln-environments,
/// so cargo does not build it for the worker's tests by itself.
pub fn env_server_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "kiln-environments",
                    "--bin",
                    "kiln-env-server",
                ])
                .status()
                .expect("run cargo build for kiln-env-server");
            assert!(status.success(), "building kiln-env-server failed");
            // tests run from target/debug/deps; binaries live in target/debug.
            let exe = std::env::current_exe().unwrap();
            let binary = exe
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("kiln-env-server");
            assert!(binary.is_file(), "{} was not built", binary.display());
            binary
        })
        .clone()
}

pub fn task(run_id: &str, env: &str, task_id: &str, options: Value, timeout_s: u64) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: run_id.into(),
        env: env.into(),
        split: "test".into(),
        task_id: task_id.into(),
        attempt: 0,
        harness_hash: String::new(),
        model: ModelSpec::Oracle,
        env_options: options,
        seed: 0,
        timeout_s,
    }
}

/// Plays the oracle plan and scores with the termination the environment reported.
pub async fn oracle_episode(env: &mut dyn Environment, spec: &TaskSpec) -> Evaluation {
    env.reset(spec)
        .await
        .unwrap_or_else(|error| panic!("reset: {error}"));
    let plan = env.oracle_plan().expect("the reset gives the oracle plan");
    let mut termination = Termination::AgentStop;
    for action in &plan {
        let result = env
            .step(action)
            .await
            .unwrap_or_else(|error| panic!("step: {error}"));
        if result.done {
            termination = result.termination.unwrap_or(Termination::AgentStop);
            break;
        }
    }
    env.evaluate(termination).await.unwrap()
}

/// The same episode in-process.
pub async fn in_process_episode(spec: &TaskSpec) -> Evaluation {
    let context = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    let factory = catalog::open(&spec.env, &context).unwrap_or_else(|error| panic!("{error}"));
    let mut env = factory.create(&spec.env_options).unwrap();
    oracle_episode(env.as_mut(), spec).await
}

/// A worker/run id no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}
