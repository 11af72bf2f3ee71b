//! `kiln run --sandbox docker|process`: environments in containers (the real Docker daemon, the
//! `kiln/env-server` image from `ops/images`) or subprocesses. Results equal the in-process run's,
//! an environment crash, a container killed for memory and an episode over its time limit become
//! that task's recorded error, and no container of the run is left afterwards.

mod common;

use std::process::Command;

use common::{assert_success, kiln, outcome_lines, unique_keys};

/// Containers (any state) labelled with this run.
fn containers_of_run(run_id: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=kiln.run={run_id}")])
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker ps failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn run_id(dir: &std::path::Path) -> String {
    outcome_lines(dir)[0].run_id.clone()
}

fn require_image() {
    let version = env!("CARGO_PKG_VERSION");
    let status = Command::new("docker")
        .args(["image", "inspect", &format!("kiln/env-server:{version}")])
        .output()
        .expect("the docker CLI runs");
    assert!(
        status.status.success(),
        "the image kiln/env-server:{version} is missing: run `ops/images` (needs a running Docker daemon)"
    );
}

#[test]
fn tau2_in_containers_and_subprocesses_matches_in_process_and_leaves_nothing() {
    require_image();
    let env_server = std::path::Path::new(common::kiln_binary()).with_file_name("kiln-env-server");
    assert!(
        env_server.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`) or `cargo build -p kiln-environments --bin kiln-env-server`",
        env_server.display()
    );
    let work = tempfile::tempdir().unwrap();
    let mut hashes = Vec::new();
    for sandbox in ["none", "process", "docker"] {
        let out = format!("airline-{sandbox}");
        let output = kiln(
            work.path(),
            &[
                "run",
                "--env",
                "tau2-airline",
                "--split",
                "base",
                "--tasks",
                "6",
                "--model",
                "oracle",
                "--sandbox",
                sandbox,
                "--workers",
                "3",
                "--out",
                &out,
            ],
        );
        assert_success(&output);
        let dir = work.path().join(&out);
        let mut outcomes = outcome_lines(&dir);
        assert_eq!(unique_keys(&outcomes).len(), 6);
        assert!(
            outcomes.iter().all(|outcome| outcome.success),
            "{sandbox}: {outcomes:?}"
        );
        outcomes.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        hashes.push(
            outcomes
                .iter()
                .map(|outcome| outcome.db_hash.clone().unwrap())
                .collect::<Vec<_>>(),
        );
        assert!(
            containers_of_run(&run_id(&dir)).is_empty(),
            "{sandbox}: containers left"
        );
    }
    assert_eq!(
        hashes[0], hashes[1],
        "subprocess DB hashes equal in-process ones"
    );
    assert_eq!(
        hashes[0], hashes[2],
        "container DB hashes equal in-process ones"
    );
}

#[test]
fn crashes_memory_kills_and_time_limits_in_containers_are_recorded_errors() {
    require_image();
    let work = tempfile::tempdir().unwrap();
    let output = kiln(
        work.path(),
        &[
            "run",
            "--env",
            "debug-faults",
            "--model",
            "oracle",
            "--sandbox",
            "docker",
            "--sandbox-memory-mib",
            "64",
            "--timeout-s",
            "3",
            "--workers",
            "4",
            "--out",
            "faults",
        ],
    );
    assert_success(&output);
    let dir = work.path().join("faults");
    let outcomes = outcome_lines(&dir);
    let by_task = |id: &str| {
        outcomes
            .iter()
            .find(|outcome| outcome.task_id == id)
            .unwrap_or_else(|| panic!("no outcome for {id}: {outcomes:?}"))
    };
    assert!(by_task("ok").success, "{:?}", by_task("ok"));
    let crash = by_task("crash").error.clone().unwrap_or_default();
    assert!(crash.contains("exited with code"), "{crash}");
    let oom = by_task("oom").error.clone().unwrap_or_default();
    assert!(oom.contains("killed for memory"), "{oom}");
    let hang = by_task("hang");
    assert!(hang.error.is_some(), "{hang:?}");
    assert_eq!(
        hang.termination,
        kiln_protocol::Termination::Timeout,
        "{hang:?}"
    );
    assert!(
        containers_of_run(&run_id(&dir)).is_empty(),
        "containers left"
    );
}

#[test]
fn alfworld_and_webshop_run_in_containers() {
    require_image();
    let work = tempfile::tempdir().unwrap();
    for env in ["alfworld", "webshop"] {
        let out = format!("{env}-docker");
        let output = kiln(
            work.path(),
            &[
                "run",
                "--env",
                env,
                "--tasks",
                "4",
                "--model",
                "oracle",
                "--sandbox",
                "docker",
                "--warm-pool",
                "2",
                "--workers",
                "2",
                "--out",
                &out,
            ],
        );
        assert_success(&output);
        let dir = work.path().join(&out);
        let outcomes = outcome_lines(&dir);
        assert_eq!(unique_keys(&outcomes).len(), 4, "{env}");
        assert!(
            outcomes.iter().all(|outcome| outcome.success),
            "{env}: {outcomes:?}"
        );
        assert!(
            containers_of_run(&run_id(&dir)).is_empty(),
            "{env}: containers left"
        );
    }
}
