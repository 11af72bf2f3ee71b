//! The `docker` sandbox against the REAL Docker daemon and the image from `ops/images`: τ² in a
//! container scores like in-process; containers are locked down and labelled (checked from the
//! settings Docker reports and, by the debug-faults probe, from inside a running episode); a crash, a kill for
//! memory and a hang each become an error (never a panic) and leave no container; the warm pool
//! hands out fresh containers; the reaper removes what a crashed worker left; the worker loop
//! records each fault as its task's error and goes on.
//!
//! These tests fail (never skip) when the daemon is down or the image is missing: run `ops/images`.
//! Needs `ops/setup tau2`.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use kiln_environments::{EnvContext, EnvErrorKind, Environment, default_data_dir};
use kiln_harness::{Harness, default_for_env};
use kiln_protocol::names::{LABEL_RUN, LABEL_WORKER};
use kiln_protocol::{Action, Termination};
use kiln_worker::sandbox::reaper::labelled_containers;
use kiln_worker::sandbox::{
    DockerProvider, DockerSandboxConfig, SandboxEnvResolver, SandboxProvider, SandboxRequest, reap,
    reap_run,
};
use kiln_worker::{
    BackendModelResolver, EnvResolver, HarnessEpisodeRunner, HarnessStore, InMemoryHarnessStore,
    InProcessTransport, Transport, WorkerConfig, WorkerDeps, run_worker,
};
use serde_json::{Value, json};
use support::{in_process_episode, oracle_episode, task, unique};

async fn provider(config: DockerSandboxConfig) -> DockerProvider {
    match DockerProvider::connect(config).await {
        Ok(provider) => provider,
        Err(error) => panic!(
            "the Docker sandbox tests need the Docker daemon and the env-server image: {error} \
             (start Docker, then run ops/images)"
        ),
    }
}

fn config(worker: &str) -> DockerSandboxConfig {
    DockerSandboxConfig::new(worker, default_data_dir())
}

fn resolver(provider: Arc<DockerProvider>, call_timeout: Duration) -> SandboxEnvResolver {
    let context = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    SandboxEnvResolver::new(provider, context).with_call_timeout(call_timeout)
}

/// No container of this worker is left (removal of a dropped lease runs in the background, so
/// give it a moment).
async fn assert_no_containers(docker: &Docker, worker: &str) {
    let label = format!("{LABEL_WORKER}={worker}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = labelled_containers(docker, &label).await.unwrap();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers labelled {label} are left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_tau2_oracle_episode_in_a_container_scores_as_in_process() {
    let worker = unique("w-tau2");
    let provider = Arc::new(provider(config(&worker)).await);
    let spec = task(
        &unique("run"),
        "tau2-retail",
        "7",
        json!({"user": "scripted"}),
        0,
    );
    let factory = resolver(provider.clone(), Duration::from_secs(60))
        .resolve("tau2-retail")
        .unwrap();
    let mut env = factory.create(&spec.env_options).unwrap();
    let served = oracle_episode(env.as_mut(), &spec).await;
    env.close().await.unwrap();
    let local = in_process_episode(&spec).await;
    assert!(local.db_hash.is_some());
    assert_eq!(served.db_hash, local.db_hash);
    assert_eq!(served.reward, local.reward);
    assert_eq!(served.components, local.components);
    assert_no_containers(provider.docker(), &worker).await;
}

#[tokio::test]
async fn containers_are_limited_read_only_unprivileged_labelled_and_offline() {
    let worker = unique("w-spec");
    let run = unique("run");
    let mut config = config(&worker);
    config.limits.memory_mib = 300;
    config.limits.cpus = 0.5;
    config.limits.pids = 64;
    let provider = provider(config).await;
    let request = SandboxRequest {
        run_id: run.clone(),
        task_id: "0".into(),
        env: "tau2-retail".into(),
        network: None,
    };
    let mut sandbox = provider.start_cold(&request).await.unwrap();
    let ids = labelled_containers(provider.docker(), &format!("{LABEL_RUN}={run}"))
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    let inspected = provider
        .docker()
        .inspect_container(
            &ids[0],
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let host = inspected.host_config.unwrap();
    assert_eq!(host.memory, Some(300 * 1024 * 1024));
    assert_eq!(host.memory_swap, Some(300 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()])
    );
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert!(host.tmpfs.unwrap().contains_key("/tmp"));
    let binds = host.binds.unwrap();
    assert!(binds[0].ends_with(":/kiln/data:ro"), "{binds:?}");
    let container = inspected.config.unwrap();
    assert_eq!(container.user.as_deref(), Some("65532:65532"));
    let labels = container.labels.unwrap();
    assert_eq!(labels[LABEL_RUN], run);
    assert_eq!(labels[LABEL_WORKER], worker);
    assert_eq!(labels["kiln.sandbox"], "env-server");
    assert_eq!(inspected.state.unwrap().running, Some(true));

    // The env-server in it works: a debug-faults episode end to end.
    let spec = task(&run, "debug-faults", "ok", Value::Null, 0);
    let evaluation = oracle_episode(&mut sandbox.remote, &spec).await;
    assert_eq!(evaluation.reward, 1.0);
    sandbox.remote.close().await.unwrap();
    sandbox.lease.release(true).await;
    assert_no_containers(provider.docker(), &worker).await;
}

/// Mount points a container gets from the runtime itself (proc, sys and dev trees, and the files
/// Docker bind-mounts for name resolution); anything else must be Kiln's own.
fn runtime_mount(point: &str) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|tree| point == *tree || point.starts_with(&format!("{tree}/")))
        || ["/etc/resolv.conf", "/etc/hostname", "/etc/hosts"].contains(&point)
}

#[tokio::test]
async fn from_inside_an_episode_the_container_is_offline_read_only_unprivileged_and_pid_limited() {
    let worker = unique("w-probe");
    let mut config = config(&worker);
    config.limits.pids = 48;
    let provider = Arc::new(provider(config).await);
    let factory = resolver(provider.clone(), Duration::from_secs(60))
        .resolve("debug-faults")
        .unwrap();
    let mut env = factory.create(&json!({"fault": "probe"})).unwrap();
    let spec = task(&unique("run"), "debug-faults", "ok", Value::Null, 0);
    env.reset(&spec).await.unwrap();
    let result = env
        .step(&Action::Message {
            text: "probe".into(),
        })
        .await
        .unwrap();
    let report = result.info;

    let identity = &report["identity"];
    assert_eq!(identity["uid"], 65532, "non-root: {report}");
    assert_eq!(identity["gid"], 65532, "{report}");
    assert_eq!(
        identity["cap_eff"], "0000000000000000",
        "no capabilities: {report}"
    );
    assert_eq!(identity["no_new_privs"], 1, "{report}");

    const EROFS: i64 = 30;
    assert_eq!(report["root_write"]["ok"], false, "{report}");
    assert_eq!(
        report["root_write"]["errno"], EROFS,
        "the root filesystem is read-only: {report}"
    );
    assert_eq!(report["usr_write"]["ok"], false, "{report}");
    assert_eq!(
        report["tmp_write"]["ok"], true,
        "/tmp is a writable tmpfs: {report}"
    );

    assert_eq!(
        report["interfaces"],
        json!(["lo"]),
        "no network but loopback: {report}"
    );
    assert_eq!(report["outside_connect"]["ok"], false, "{report}");

    let pids = &report["pids"];
    let started = pids["threads_started"].as_u64().unwrap();
    assert!(
        started < 48,
        "the pids limit stops the probe's threads: {report}"
    );
    assert!(!pids["spawn_error"].is_null(), "{report}");
    assert_eq!(pids["pids_max"], "48", "{report}");

    let mounts = report["mounts"].as_array().unwrap();
    let own: BTreeMap<&str, bool> = mounts
        .iter()
        .map(|m| {
            (
                m["point"].as_str().unwrap(),
                m["read_only"].as_bool().unwrap(),
            )
        })
        .filter(|(point, _)| !runtime_mount(point))
        .collect();
    assert_eq!(
        own,
        BTreeMap::from([("/", true), ("/kiln/data", true), ("/tmp", false)]),
        "no mounts but the read-only root and data and the /tmp tmpfs: {report}"
    );
    env.close().await.unwrap();
    assert_no_containers(provider.docker(), &worker).await;
}

/// Resets a debug-faults sandbox for `fault` and steps it once.
async fn step_fault(
    provider: Arc<DockerProvider>,
    fault: &str,
    call_timeout: Duration,
) -> (kiln_environments::EnvError, Box<dyn Environment>) {
    let factory = resolver(provider, call_timeout)
        .resolve("debug-faults")
        .unwrap();
    let spec = task(&unique("run"), "debug-faults", fault, Value::Null, 0);
    let mut env = factory.create(&Value::Null).unwrap();
    env.reset(&spec).await.unwrap();
    let error = env
        .step(&Action::Message { text: "go".into() })
        .await
        .unwrap_err();
    (error, env)
}

#[tokio::test]
async fn a_crash_an_oom_kill_and_a_hang_become_errors_and_leave_no_container() {
    let worker = unique("w-faults");
    let mut config = config(&worker);
    config.limits.memory_mib = 64;
    let provider = Arc::new(provider(config).await);

    let (error, mut env) = step_fault(provider.clone(), "crash", Duration::from_secs(30)).await;
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    let message = error.to_string();
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(
        message.contains("crashing the env-server on purpose"),
        "{message}"
    );
    env.close().await.unwrap();

    let (error, mut env) = step_fault(provider.clone(), "oom", Duration::from_secs(60)).await;
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("killed for memory (limit 64 MiB)"),
        "{error}"
    );
    env.close().await.unwrap();

    let started = Instant::now();
    let (error, env) = step_fault(provider.clone(), "hang", Duration::from_secs(2)).await;
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("did not answer `step` within 2s"),
        "{error}"
    );
    assert!(error.to_string().contains("still running"), "{error}");
    // Dropped without close, as when the worker aborts an episode: the container still goes.
    drop(env);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_no_containers(provider.docker(), &worker).await;
}

#[tokio::test]
async fn the_warm_pool_hands_out_fresh_containers_and_refills() {
    let worker = unique("w-pool");
    let mut config = config(&worker);
    config.warm_pool = 2;
    let provider = Arc::new(provider(config).await);
    assert_eq!(provider.wait_warm(2, Duration::from_secs(60)).await, 2);

    let request = SandboxRequest {
        run_id: "r".into(),
        task_id: "ok".into(),
        env: "debug-faults".into(),
        network: None,
    };
    let handed = Instant::now();
    let mut first = provider.acquire(&request).await.unwrap();
    let hand_out = handed.elapsed();
    assert!(first.lease.describe().starts_with("container "));
    let mut second = provider.acquire(&request).await.unwrap();
    assert_ne!(first.lease.describe(), second.lease.describe());
    for sandbox in [&mut first, &mut second] {
        let spec = task("r", "debug-faults", "ok", Value::Null, 0);
        let evaluation = oracle_episode(&mut sandbox.remote, &spec).await;
        assert_eq!(evaluation.reward, 1.0);
        sandbox.remote.close().await.unwrap();
        sandbox.lease.release(true).await;
    }
    // Refilled in the background with new containers.
    assert_eq!(provider.wait_warm(2, Duration::from_secs(60)).await, 2);
    let label = format!("{LABEL_WORKER}={worker}");
    assert_eq!(
        labelled_containers(provider.docker(), &label)
            .await
            .unwrap()
            .len(),
        2
    );
    provider.shutdown().await;
    assert_no_containers(provider.docker(), &worker).await;
    eprintln!("warm hand-out took {hand_out:?}");
}

#[tokio::test]
async fn the_reaper_removes_what_a_crashed_worker_left_behind() {
    let worker = unique("w-crashed");
    let run = unique("run-crashed");
    let provider = provider(config(&worker)).await;
    for task_id in ["0", "1"] {
        let request = SandboxRequest {
            run_id: run.clone(),
            task_id: task_id.into(),
            env: "tau2-retail".into(),
            network: None,
        };
        let sandbox = provider.start_cold(&request).await.unwrap();
        // A crashed worker runs no destructors.
        std::mem::forget(sandbox);
    }
    let label = format!("{LABEL_WORKER}={worker}");
    assert_eq!(
        labelled_containers(provider.docker(), &label)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(reap(provider.docker(), &worker).await.unwrap(), 2);
    assert_no_containers(provider.docker(), &worker).await;

    // By run, too.
    let request = SandboxRequest {
        run_id: run.clone(),
        task_id: "2".into(),
        env: "tau2-retail".into(),
        network: None,
    };
    std::mem::forget(provider.start_cold(&request).await.unwrap());
    assert_eq!(reap_run(provider.docker(), &run).await.unwrap(), 1);
    assert_no_containers(provider.docker(), &worker).await;
}

#[tokio::test]
async fn the_worker_loop_records_each_fault_as_its_tasks_error_and_goes_on() {
    let worker = unique("w-loop");
    let run = unique("run-loop");
    let mut config = config(&worker);
    config.limits.memory_mib = 64;
    let provider = Arc::new(provider(config).await);
    let transport = InProcessTransport::new();
    let harnesses = InMemoryHarnessStore::new();
    let mut results = transport.subscribe(&run).await.unwrap();

    let mut tasks = Vec::new();
    for (env, task_id, timeout_s) in [
        ("debug-faults", "ok", 0),
        ("debug-faults", "crash", 0),
        ("debug-faults", "oom", 0),
        ("debug-faults", "hang", 3),
        ("tau2-retail", "11", 0),
    ] {
        let spec = default_for_env(env);
        let hash = Harness::new(&spec).unwrap().hash().to_string();
        harnesses.put(&hash, &spec).await.unwrap();
        let options = if env == "tau2-retail" {
            json!({"user": "scripted"})
        } else {
            Value::Null
        };
        let mut spec = task(&run, env, task_id, options, timeout_s);
        spec.harness_hash = hash;
        tasks.push(spec);
    }
    for spec in &tasks {
        transport.enqueue(spec.clone()).await.unwrap();
    }
    let mut worker_config = WorkerConfig::new(worker.clone(), 2);
    worker_config.timeout_grace = Duration::from_secs(20);
    let deps = WorkerDeps {
        transport: Arc::new(transport.clone()),
        harnesses: Arc::new(harnesses),
        environments: Arc::new(resolver(provider.clone(), Duration::from_secs(60))),
        models: Arc::new(BackendModelResolver::new()),
        runner: Arc::new(HarnessEpisodeRunner::new()),
    };
    let running = tokio::spawn(run_worker(worker_config, deps));
    let mut outcomes = BTreeMap::new();
    while outcomes.len() < tasks.len() {
        let result = tokio::time::timeout(Duration::from_secs(120), results.recv())
            .await
            .expect("every task finishes")
            .unwrap();
        outcomes.insert(result.outcome.task_id.clone(), result.outcome);
    }
    transport.close().await;
    running.await.unwrap();

    let ok = &outcomes["ok"];
    assert!(ok.success && ok.error.is_none(), "{ok:?}");
    let tau2 = &outcomes["11"];
    assert!(tau2.error.is_none(), "{tau2:?}");
    assert!(tau2.db_hash.is_some(), "{tau2:?}");
    let expect = |task_id: &str, termination: Termination, fragment: &str| {
        let outcome = &outcomes[task_id];
        assert_eq!(outcome.termination, termination, "{task_id}: {outcome:?}");
        let error = outcome.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(fragment),
            "{task_id}: `{error}` should mention `{fragment}`"
        );
        assert!(!outcome.success);
    };
    expect("crash", Termination::EnvError, "exited with code 3");
    expect(
        "oom",
        Termination::EnvError,
        "killed for memory (limit 64 MiB)",
    );
    expect("hang", Termination::Timeout, "ran past its limit of 3s");
    assert_no_containers(provider.docker(), &worker).await;
}
