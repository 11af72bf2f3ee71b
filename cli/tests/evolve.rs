//! `kiln evolve` end to end: two rounds on small WebShop-format splits with a test model whose
//! behaviour depends on the harness (`common::shop_agent`, behind a real OpenAI-compatible HTTP
//! server). The known-good edit (a strategy line that makes it choose options) must ship, the
//! regressing edit (a few-shot example it copies) must be rejected by the per-task gate, and
//! `kiln evolve replay` must re-derive every decision — and notice a tampered rollout. The same
//! evolution on a NATS cluster (`kiln coordinator` and two `kiln worker` processes) must make the
//! same decisions.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::cluster::{coordinator, default_flags, worker};
use common::{kiln_without_data, shop_agent, stderr, stdout};
use kiln_worker::testing::NatsServer;
use serde_json::Value;

/// The test's directory, kept when `KILN_TEST_KEEP` is set (to read the artifacts).
struct Workdir(Option<tempfile::TempDir>);

impl Workdir {
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::env::var_os("KILN_TEST_KEEP").is_some() {
            let _ = self.0.take().map(tempfile::TempDir::keep);
        }
    }
}

fn kiln(cwd: &Path, args: &[String]) -> Output {
    kiln_without_data(cwd, args)
}

/// `kiln ARGS…` off the async runtime (the test model's server runs on it), asserting success.
async fn kiln_succeeds(cwd: &Path, args: Vec<String>, what: &str) -> Output {
    let cwd = cwd.to_path_buf();
    let output = tokio::task::spawn_blocking(move || kiln(&cwd, &args))
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    output
}

fn audit(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .expect("audit.jsonl exists")
        .lines()
        .map(|line| serde_json::from_str(line).expect("audit lines are JSON"))
        .collect()
}

/// The operator of a candidate, from its round's stored proposals.
fn operator(dir: &Path, round: u64, candidate: &str) -> String {
    let path = dir.join(format!("R{round}/proposals.json"));
    let proposals: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    proposals["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["manifest"]["candidate_id"] == candidate)
        .map(|c| c["manifest"]["operator"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn evolve_args(model: &str, out: &Path) -> Vec<String> {
    [
        "evolve",
        "--env",
        "webshop",
        "--model",
        model,
        "--rounds",
        "2",
        "--candidates",
        "7",
        "--search",
        "12",
        "--gate",
        "12",
        "--held-out",
        "12",
        "--attempts",
        "1",
        "--final-attempts",
        "1",
        "--patience",
        "2",
        "--workers",
        "4",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolution_ships_the_good_edit_rejects_the_regressing_one_and_replays() {
    let (_server, model) = shop_agent::serve().await;
    let work = tempfile::tempdir().unwrap();
    let out: PathBuf = work.path().join("evo");
    eprintln!("evolution directory: {}", out.display());
    let work = Workdir(Some(work));
    let output = kiln_succeeds(work.path(), evolve_args(&model, &out), "kiln evolve").await;
    let log = stderr(&output);
    assert!(
        log.contains("R1 gate"),
        "progress names round and stage:\n{log}"
    );

    let decisions = audit(&out);
    let gate = |verdict: &str| -> Vec<(u64, String, Value)> {
        decisions
            .iter()
            .filter(|d| d["stage"] == "gate" && d["decision"] == verdict)
            .map(|d| {
                (
                    d["round"].as_u64().unwrap(),
                    d["candidate_id"].as_str().unwrap().to_string(),
                    d["gate"].clone(),
                )
            })
            .collect()
    };
    let shipped = gate("ship");
    assert!(
        shipped
            .iter()
            .any(|(round, id, _)| operator(&out, *round, id) == "strategy_lines"),
        "the options strategy line ships: {shipped:?}"
    );
    let rejected = gate("reject");
    let few_shot: Vec<&(u64, String, Value)> = rejected
        .iter()
        .filter(|(round, id, _)| operator(&out, *round, id) == "few_shot")
        .collect();
    assert!(
        !few_shot.is_empty(),
        "the few-shot example (which the model copies) is proposed and rejected: {rejected:?}"
    );
    for (_, id, decision) in &few_shot {
        assert_eq!(
            decision["verdict"]["stage"], "per_task",
            "{id} is rejected for regressing solved tasks: {decision}"
        );
        assert!(
            !decision["regressions"].as_array().unwrap().is_empty(),
            "{decision}"
        );
    }

    // Artifacts of a round and of the evolution.
    for file in [
        "INDEX.md",
        "journal.md",
        "curves.json",
        "scoreboard.json",
        "report.md",
        "final.json",
        "R0/calibration.json",
        "R1/landscape.md",
        "R1/landscape.json",
        "R1/decision.md",
        "R1/regressions.md",
        "R1/verdicts.json",
        "R1/gate.json",
        "R2/regressions.md",
    ] {
        assert!(out.join(file).exists(), "{file} is written");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("final.json")).unwrap()).unwrap();
    let seed = report["seed"]["summary"]["pass_at_1"].as_f64().unwrap();
    let evolved = report["final_harness"]["summary"]["pass_at_1"]
        .as_f64()
        .unwrap();
    assert!(
        evolved > seed,
        "the evolved harness beats the seed on held-out tasks: {seed} -> {evolved}"
    );
    assert!(report["tasks_lost"].as_array().unwrap().is_empty());

    // Replay re-derives every decision from the stored rollouts.
    let replay = vec![
        "evolve".to_string(),
        "replay".into(),
        out.display().to_string(),
    ];
    let output = kiln_succeeds(work.path(), replay.clone(), "kiln evolve replay").await;
    assert!(
        stdout(&output).contains("all identical"),
        "{}",
        stdout(&output)
    );

    // A tampered rollout changes a decision, and replay says which.
    let (round, id, _) = &shipped[0];
    let outcomes = out.join(format!("R{round}/runs/{id}-gate/outcomes.jsonl"));
    let text = std::fs::read_to_string(&outcomes).unwrap();
    std::fs::write(
        &outcomes,
        text.replace("\"success\":true", "\"success\":false"),
    )
    .unwrap();
    let cwd = work.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || kiln(&cwd, &replay))
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output).contains(id.as_str()),
        "the differing decision is named: {}",
        stdout(&output)
    );
}

#[test]
fn resuming_with_other_settings_is_refused_naming_them() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("evo");
    std::fs::create_dir_all(&out).unwrap();
    let stored = "env = \"webshop\"\nmodel = \"oracle\"\nseed_harness = \"x\"\nrounds = 1\ncandidates = 1\nattempts = 1\nsearch_attempts = 1\nfinal_attempts = 1\npatience = 1\nsearch = 2\ngate = 2\nevolver = \"rules\"\nseed = 0\nbaseline_max_attempts = 2\n[gate_config]\nsolved_threshold = 0.5\nalpha = 0.05\ntest = \"mc_nemar\"\nbootstrap_resamples = 10\nseed = 0\ntarget_false_reject = 0.1\ntarget_false_accept = 0.05\nmax_noise_margin = 0.5\nmax_unprotected_share = 0.2\nmax_attempts = 4\ncalibration_rounds = 10\n";
    std::fs::write(out.join("evolve.toml"), stored).unwrap();
    let output = kiln(
        work.path(),
        &[
            "evolve".into(),
            "--resume".into(),
            out.display().to_string(),
            "--rounds".into(),
            "5".into(),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("rounds"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_evolution_over_nats_with_two_workers_makes_the_same_decisions() {
    let (_server, model) = shop_agent::serve().await;
    let work = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let flags = default_flags(&url);
    let _coordinator = coordinator(work.path(), &flags, "coordinator");
    let workers = [
        worker(work.path(), &flags, "worker-0", 2),
        worker(work.path(), &flags, "worker-1", 2),
    ];

    let embedded = work.path().join("embedded");
    let clustered = work.path().join("clustered");
    let mut on_cluster = evolve_args(&model, &clustered);
    on_cluster.extend(["--nats".to_string(), url.clone()]);
    for (args, label) in [
        (evolve_args(&model, &embedded), "kiln evolve (embedded)"),
        (on_cluster, "kiln evolve --nats"),
    ] {
        kiln_succeeds(work.path(), args, label).await;
    }
    let (a, b) = (audit(&embedded), audit(&clustered));
    assert!(
        a.iter().any(|d| d["decision"] == "ship"),
        "something shipped"
    );
    assert_eq!(a.len(), b.len(), "as many decisions on the cluster");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "the cluster decides as the embedded run does");
    }
    // The episodes really ran on the workers.
    let run = clustered.join("R1/runs/C-R1-01-gate/outcomes.jsonl");
    let text = std::fs::read_to_string(&run).unwrap();
    let ran_on: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|outcome| outcome["worker"].as_str().map(str::to_string))
        .collect();
    assert!(
        ran_on.iter().all(|w| w.starts_with("worker-")) && !ran_on.is_empty(),
        "gate episodes ran on the cluster's workers: {ran_on:?}"
    );
    drop(workers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_model_that_writes_no_patch_gives_rejected_proposals_not_a_crash() {
    // The same server answers the agent and the meta-model: the meta-model's replies are shop
    // actions, not JSON patches.
    let (_server, model) = shop_agent::serve().await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("evo");
    let mut args = evolve_args(&model, &out);
    let rounds = args.iter().position(|a| a == "--rounds").unwrap();
    args[rounds + 1] = "1".into();
    args.extend([
        "--evolver".to_string(),
        "both".into(),
        "--meta-model".into(),
        model.clone(),
    ]);
    kiln_succeeds(work.path(), args, "kiln evolve --evolver both").await;
    let invalid: Vec<Value> = audit(&out)
        .into_iter()
        .filter(|d| d["stage"] == "evolver")
        .collect();
    assert!(
        !invalid.is_empty(),
        "the meta-model's proposals are recorded as rejected"
    );
    for decision in &invalid {
        assert_eq!(decision["evolver"], "llm");
        assert_eq!(decision["decision"], "invalid");
        assert!(!decision["reason"].as_str().unwrap().is_empty());
    }
    let rejected = std::fs::read_to_string(out.join("R1/rejected.md")).unwrap();
    assert!(rejected.contains("llm"), "{rejected}");
}
