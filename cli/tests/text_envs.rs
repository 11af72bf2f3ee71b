//! ALFWorld and WebShop through `kiln run`: the oracle (the environments' expert plans) solves every
//! task of the default splits, the embedded model runs end to end, and the reports say the tasks
//! are generated / the catalog synthetic.

mod common;

use common::{assert_success, kiln, outcome_lines, stdout, unique_keys};

fn require_alfworld_data() {
    let constants = kiln_environments::default_data_dir().join("data/alfworld/constants.py");
    assert!(
        constants.exists(),
        "missing {}: run `ops/setup alfworld`",
        constants.display()
    );
}

#[test]
fn the_oracle_solves_every_default_split_task_and_reports_say_where_tasks_come_from() {
    require_alfworld_data();
    let work = tempfile::tempdir().unwrap();
    for (env, expected_tasks, provenance) in [
        ("alfworld", 134, "generated ALFWorld-format tasks"),
        ("webshop", 500, "synthetic catalog"),
    ] {
        let out = format!("{env}-oracle");
        let output = kiln(
            work.path(),
            &["run", "--env", env, "--model", "oracle", "--out", &out],
        );
        assert_success(&output);
        let dir = work.path().join(&out);
        let outcomes = outcome_lines(&dir);
        assert_eq!(unique_keys(&outcomes).len(), expected_tasks, "{env}");
        let failed: Vec<_> = outcomes.iter().filter(|outcome| !outcome.success).collect();
        assert!(failed.is_empty(), "{env}: the expert fails {failed:?}");
        let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(report.contains(provenance), "{env}: {report}");
        assert!(stdout(&output).contains("100.0%"), "{}", stdout(&output));
    }
}

#[test]
fn the_embedded_model_runs_alfworld_and_webshop_end_to_end() {
    require_alfworld_data();
    let model =
        kiln_environments::default_data_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "missing {}: run `ops/setup model`",
        model.display()
    );
    let work = tempfile::tempdir().unwrap();
    // The default small-model harness with 3 steps instead of 50, to keep a debug-build test short.
    let builtin = include_str!("../../harnesses/small-model.toml");
    assert!(builtin.contains("max_steps = 50"));
    let harness = work.path().join("small-model-3.toml");
    std::fs::write(&harness, builtin.replace("max_steps = 50", "max_steps = 3")).unwrap();
    let harness = harness.to_str().unwrap();
    for env in ["alfworld", "webshop"] {
        let out = format!("{env}-smol");
        let output = kiln(
            work.path(),
            &[
                "run",
                "--env",
                env,
                "--model",
                "local:smollm2",
                "--tasks",
                "2",
                "--workers",
                "2",
                "--harness",
                harness,
                "--out",
                &out,
            ],
        );
        assert_success(&output);
        let dir = work.path().join(&out);
        let outcomes = outcome_lines(&dir);
        assert_eq!(unique_keys(&outcomes).len(), 2, "{env}");
        for outcome in &outcomes {
            assert!(
                outcome.error.is_none(),
                "{env} task {}: {:?}",
                outcome.task_id,
                outcome.error
            );
            assert!(
                outcome.steps > 0,
                "{env} task {} took no step",
                outcome.task_id
            );
            assert_eq!(outcome.model, "local:smollm2");
        }
        assert!(dir.join("report.md").exists());
    }
}
