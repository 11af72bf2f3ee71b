//! The `process` sandbox: `kiln-env-server` subprocesses behind `SandboxEnvResolver`, exactly as
//! the worker uses them. Needs `ops/setup tau2`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kiln_environments::{EnvContext, EnvErrorKind, default_data_dir};
use kiln_protocol::Action;
use kiln_worker::EnvResolver;
use kiln_worker::sandbox::{ProcessProvider, SandboxEnvResolver, SandboxErrorKind};
use serde_json::{Value, json};
use support::{env_server_binary, in_process_episode, oracle_episode, task};

fn resolver(call_timeout: Duration) -> SandboxEnvResolver {
    let provider = ProcessProvider::new(Some(env_server_binary()), default_data_dir()).unwrap();
    let context = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    SandboxEnvResolver::new(Arc::new(provider), context).with_call_timeout(call_timeout)
}

#[tokio::test]
async fn a_tau2_oracle_episode_in_a_subprocess_scores_as_in_process() {
    let spec = task(
        "process-run",
        "tau2-airline",
        "3",
        json!({"user": "scripted"}),
        0,
    );
    let factory = resolver(Duration::from_secs(60))
        .resolve("tau2-airline")
        .unwrap();
    assert_eq!(factory.id(), "tau2-airline");
    let mut env = factory.create(&spec.env_options).unwrap();
    let served = oracle_episode(env.as_mut(), &spec).await;
    env.close().await.unwrap();
    let local = in_process_episode(&spec).await;
    assert!(local.db_hash.is_some());
    assert_eq!(served.db_hash, local.db_hash);
    assert_eq!(served.reward, local.reward);
    assert_eq!(served.components, local.components);
}

#[tokio::test]
async fn a_crash_names_the_exit_status_and_the_last_stderr_lines() {
    let factory = resolver(Duration::from_secs(60))
        .resolve("debug-faults")
        .unwrap();
    let spec = task("process-run", "debug-faults", "crash", Value::Null, 0);
    let mut env = factory.create(&Value::Null).unwrap();
    env.reset(&spec).await.unwrap();
    let error = env
        .step(&Action::Message { text: "hi".into() })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    let message = error.to_string();
    assert!(message.contains("exited with status 3"), "{message}");
    assert!(
        message.contains("crashing the env-server on purpose"),
        "{message}"
    );
    env.close().await.unwrap();
}

#[tokio::test]
async fn a_hung_step_times_out_as_a_crash_and_close_kills_the_process() {
    let factory = resolver(Duration::from_millis(800))
        .resolve("debug-faults")
        .unwrap();
    let spec = task("process-run", "debug-faults", "hang", Value::Null, 0);
    let mut env = factory.create(&Value::Null).unwrap();
    env.reset(&spec).await.unwrap();
    let started = std::time::Instant::now();
    let error = env
        .step(&Action::Message { text: "hi".into() })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("did not answer `step` within 0.8s"),
        "{error}"
    );
    assert!(error.to_string().contains("still running"), "{error}");
    env.close().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn unknown_environments_and_bad_sandbox_options_fail_before_any_process_starts() {
    let resolver = resolver(Duration::from_secs(5));
    let error = resolver.resolve("tau3-retail").err().unwrap();
    assert_eq!(error.kind(), EnvErrorKind::UnknownEnv);
    let factory = resolver.resolve("debug-faults").unwrap();
    let error = factory
        .create(&json!({"sandbox": {"network": 7}}))
        .err()
        .unwrap();
    assert_eq!(error.kind(), EnvErrorKind::InvalidOptions);

    let missing = ProcessProvider::new(Some("/nonexistent/kiln-env-server".into()), "/tmp")
        .err()
        .unwrap();
    assert_eq!(missing.kind(), SandboxErrorKind::BinaryMissing);
    assert!(missing.to_string().contains("/nonexistent/kiln-env-server"));
}
