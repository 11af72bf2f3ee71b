//! The env-server protocol end to end: `serve` and `RemoteEnvironment` over an in-memory duplex
//! and over a real subprocess of the `kiln-env-server` binary. A τ² oracle episode must score
//! exactly as in-process (same DB hash); a broken, silent, lying or crashing server must become a
//! `Crashed` error naming what happened. Needs `ops/setup tau2`.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use kiln_environments::env_server::{RemoteConfig, RemoteEnvironment, ServeOptions, serve};
use kiln_environments::{
    AuxModel, EnvContext, EnvErrorKind, Environment, Evaluation, catalog, default_data_dir,
};
use kiln_protocol::env_server::{PROTOCOL_VERSION, ServerLine};
use kiln_protocol::{Action, Message, ModelSpec, TaskSpec, Termination};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, DuplexStream};

fn task(env: &str, task_id: &str, options: Value) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "env-server-tests".into(),
        env: env.into(),
        split: "base".into(),
        task_id: task_id.into(),
        attempt: 0,
        harness_hash: String::new(),
        model: ModelSpec::Oracle,
        env_options: options,
        seed: 0,
        timeout_s: 0,
    }
}

fn config() -> RemoteConfig {
    RemoteConfig {
        call_timeout: Duration::from_secs(30),
        ..RemoteConfig::default()
    }
}

/// A served session over an in-memory duplex; the server runs in a background task.
async fn in_memory(config: RemoteConfig) -> RemoteEnvironment {
    let (host_end, server_end) = tokio::io::duplex(1 << 16);
    let (server_read, server_write) = tokio::io::split(server_end);
    tokio::spawn(serve(
        server_read,
        server_write,
        ServeOptions::new(default_data_dir()),
    ));
    let (host_read, host_write) = tokio::io::split(host_end);
    RemoteEnvironment::connect(host_read, host_write, config)
        .await
        .unwrap()
}

/// Plays the oracle plan to its end and scores the episode with the termination the environment
/// reported.
async fn oracle_episode(env: &mut dyn Environment, spec: &TaskSpec) -> (Evaluation, usize) {
    env.reset(spec).await.unwrap();
    let plan = env.oracle_plan().expect("a τ² reset gives the oracle plan");
    let mut termination = Termination::AgentStop;
    let mut steps = 0;
    for action in &plan {
        let result = env.step(action).await.unwrap();
        steps += 1;
        if result.done {
            termination = result.termination.unwrap_or(Termination::AgentStop);
            break;
        }
    }
    let evaluation = env.evaluate(termination).await.unwrap();
    (evaluation, steps)
}

async fn in_process_episode(spec: &TaskSpec) -> (Evaluation, usize) {
    let context = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    let factory = catalog::open(&spec.env, &context).unwrap_or_else(|error| panic!("{error}"));
    let mut env = factory.create(&spec.env_options).unwrap();
    oracle_episode(env.as_mut(), spec).await
}

fn assert_same(remote: &(Evaluation, usize), local: &(Evaluation, usize)) {
    assert_eq!(remote.1, local.1, "step counts differ");
    let (remote, local) = (&remote.0, &local.0);
    assert!(local.db_hash.is_some(), "τ² evaluations carry a DB hash");
    assert_eq!(remote.db_hash, local.db_hash);
    assert_eq!(remote.reward, local.reward);
    assert_eq!(remote.success, local.success);
    assert_eq!(remote.components, local.components);
    assert_eq!(remote.info, local.info);
}

#[tokio::test]
async fn a_tau2_oracle_episode_over_a_duplex_scores_as_in_process() {
    for (env_id, task_id) in [("tau2-retail", "0"), ("tau2-airline", "1")] {
        let spec = task(env_id, task_id, json!({"user": "scripted"}));
        let mut remote = in_memory(config()).await;
        remote.set_options(spec.env_options.clone());
        assert_eq!(remote.server_version(), env!("CARGO_PKG_VERSION"));
        let served = oracle_episode(&mut remote, &spec).await;
        let local = in_process_episode(&spec).await;
        assert_same(&served, &local);
        assert!(served.0.success, "{env_id} task {task_id}: {:?}", served.0);
        remote.close().await.unwrap();
        remote.close().await.unwrap();
    }
}

#[tokio::test]
async fn environment_errors_keep_their_kind_and_the_session_goes_on() {
    let mut remote = in_memory(config()).await;
    let error = remote
        .reset(&task("tau3-retail", "0", Value::Null))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::UnknownEnv);
    assert!(error.to_string().contains("tau3-retail"), "{error}");

    let mut remote = in_memory(config()).await;
    remote.set_options(json!({"user": "telepathic"}));
    let error = remote
        .reset(&task("tau2-retail", "0", Value::Null))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::InvalidOptions, "{error}");

    let mut remote = in_memory(config()).await;
    let error = remote
        .reset(&task("tau2-retail", "no-such-task", Value::Null))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::UnknownTask, "{error}");
    // The environment is open; a good reset on the same session works.
    remote
        .reset(&task("tau2-retail", "0", Value::Null))
        .await
        .unwrap();
    assert_eq!(remote.actions().await.unwrap(), None);
    let error = remote
        .step(&Action::Message {
            text: "hello".into(),
        })
        .await;
    assert!(error.is_ok(), "{error:?}");
}

/// Answers every completion with a fixed text and counts the calls.
struct CannedUser {
    calls: AtomicUsize,
}

#[async_trait]
impl AuxModel for CannedUser {
    fn label(&self) -> String {
        "canned".into()
    }
    async fn complete(&self, messages: &[Message]) -> Result<String, String> {
        assert!(!messages.is_empty(), "the user simulator sends its prompt");
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok("I want to cancel my order, that is all. ###STOP###".into())
    }
}

#[tokio::test]
async fn the_servers_user_model_is_the_hosts_through_aux_requests() {
    let user = Arc::new(CannedUser {
        calls: AtomicUsize::new(0),
    });
    let mut remote = in_memory(RemoteConfig {
        user_model: Some(user.clone()),
        ..config()
    })
    .await;
    remote.set_options(json!({"user": "model"}));
    let info = remote
        .reset(&task("tau2-retail", "0", Value::Null))
        .await
        .unwrap();
    assert_eq!(user.calls.load(Ordering::SeqCst), 1);
    let opening = info.opening.last().unwrap();
    assert!(opening.content.contains("cancel my order"), "{opening:?}");
    let step = remote
        .step(&Action::Message { text: "ok".into() })
        .await
        .unwrap();
    assert!(step.done);
    assert_eq!(step.termination, Some(Termination::UserStop));

    // Without a host user model, `user = "model"` is refused by the environment itself.
    let mut remote = in_memory(config()).await;
    remote.set_options(json!({"user": "model"}));
    let error = remote
        .reset(&task("tau2-retail", "0", Value::Null))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::InvalidOptions, "{error}");
}

/// A fake server: the host end of a duplex whose server end the test scripts by hand.
async fn scripted_server(lines: &[&str], close: bool) -> (RemoteEnvironment, DuplexStream) {
    let (host_end, mut server_end) = tokio::io::duplex(1 << 16);
    for line in lines {
        server_end.write_all(line.as_bytes()).await.unwrap();
        server_end.write_all(b"\n").await.unwrap();
    }
    let (host_read, host_write) = tokio::io::split(host_end);
    let connect = RemoteEnvironment::connect(
        host_read,
        host_write,
        RemoteConfig {
            call_timeout: Duration::from_millis(300),
            ..RemoteConfig::default()
        },
    );
    if close {
        let (remote, _) = tokio::join!(connect, async { server_end.shutdown().await });
        return (remote.unwrap(), server_end);
    }
    (connect.await.unwrap(), server_end)
}

fn hello() -> String {
    serde_json::to_string(&ServerLine::Hello {
        protocol: PROTOCOL_VERSION,
        server: "test".into(),
        envs: vec![],
    })
    .unwrap()
}

#[tokio::test]
async fn garbage_eof_silence_and_version_mismatch_are_crashes_naming_the_cause() {
    let spec = task("tau2-retail", "0", Value::Null);

    let (mut remote, _server) = scripted_server(&[&hello(), "Segmentation fault"], false).await;
    let error = remote.reset(&spec).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error.to_string().contains("not an env-server message")
            && error.to_string().contains("Segmentation fault"),
        "{error}"
    );
    // Once broken, every call fails the same way, and close releases quietly.
    let again = remote
        .step(&Action::Message { text: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(again.to_string(), error.to_string());
    remote.close().await.unwrap();

    let (mut remote, server) = scripted_server(&[&hello()], false).await;
    drop(server);
    let error = remote.reset(&spec).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error.to_string().contains("cannot send `open`")
            || error
                .to_string()
                .contains("closed its output during `open`"),
        "{error}"
    );

    let (mut remote, _server) = scripted_server(&[&hello()], false).await;
    let error = remote.reset(&spec).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("did not answer `open` within 0.3s"),
        "{error}"
    );

    let (host_end, mut server_end) = tokio::io::duplex(1 << 16);
    let old = hello().replace(
        &format!("\"protocol\":{PROTOCOL_VERSION}"),
        "\"protocol\":999",
    );
    server_end
        .write_all(format!("{old}\n").as_bytes())
        .await
        .unwrap();
    let (host_read, host_write) = tokio::io::split(host_end);
    let error = RemoteEnvironment::connect(host_read, host_write, config())
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(error.to_string().contains("protocol 999"), "{error}");
}

/// The real binary as a subprocess, as the `process` sandbox runs it.
fn spawn_binary() -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kiln-env-server"))
        .arg("--data-dir")
        .arg(default_data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kiln-env-server")
}

async fn connect_child(child: &mut tokio::process::Child) -> RemoteEnvironment {
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    RemoteEnvironment::connect(stdout, stdin, config())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_binary_serves_a_tau2_oracle_episode_like_in_process_and_exits_on_close() {
    let spec = task("tau2-retail", "5", json!({"user": "scripted"}));
    let mut child = spawn_binary();
    let mut remote = connect_child(&mut child).await;
    remote.set_options(spec.env_options.clone());
    let served = oracle_episode(&mut remote, &spec).await;
    let local = in_process_episode(&spec).await;
    assert_same(&served, &local);
    remote.close().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the server exits after close")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_binary_exits_cleanly_at_the_end_of_its_input() {
    let mut child = spawn_binary();
    let remote = connect_child(&mut child).await;
    drop(remote);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the server exits at EOF")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_crashing_server_process_is_a_crashed_error() {
    let mut child = spawn_binary();
    let mut remote = connect_child(&mut child).await;
    remote.set_options(json!({"fault": "crash"}));
    remote
        .reset(&task("debug-faults", "ok", Value::Null))
        .await
        .unwrap();
    let error = remote
        .step(&Action::Message { text: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("closed its output during `step`"),
        "{error}"
    );
    let status = child.wait().await.unwrap();
    assert_eq!(
        status.code(),
        Some(kiln_environments::faults::CRASH_EXIT_CODE)
    );
}

#[tokio::test]
async fn a_cancelled_call_poisons_the_session_instead_of_desynchronising_it() {
    let mut remote = in_memory(config()).await;
    remote.set_options(json!({"fault": "hang"}));
    remote
        .reset(&task("debug-faults", "ok", Value::Null))
        .await
        .unwrap();
    let hung = tokio::time::timeout(
        Duration::from_millis(200),
        remote.step(&Action::Message { text: "x".into() }),
    )
    .await;
    assert!(hung.is_err(), "hang answered");
    let error = remote.evaluate(Termination::Timeout).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("previous `step` call was abandoned"),
        "{error}"
    );
    remote.close().await.unwrap();
}
