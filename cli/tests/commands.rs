//! `kiln envs`, `kiln harness validate|show|diff`, `kiln report`, and JSON logs.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_success, kiln, stderr, stdout};

fn shipped_harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../harnesses/tau2.toml")
}

#[test]
fn envs_lists_both_tau2_domains_with_their_split_sizes() {
    let work = tempfile::tempdir().unwrap();
    let output = kiln(work.path(), &["envs"]);
    assert_success(&output);
    let listing = stdout(&output);
    let row = |env: &str| {
        listing
            .lines()
            .find(|line| line.starts_with(env))
            .unwrap_or_else(|| panic!("{listing}"))
    };
    let airline = row("tau2-airline");
    assert!(
        airline.contains("installed") && airline.contains("base 50") && airline.contains("test 20"),
        "{airline}"
    );
    let retail = row("tau2-retail");
    assert!(
        retail.contains("base 114") && retail.contains("train 74") && retail.contains("test 40"),
        "{retail}"
    );
}

#[test]
fn harness_subcommands_validate_show_and_diff_files() {
    let work = tempfile::tempdir().unwrap();
    let original = shipped_harness();
    let text = std::fs::read_to_string(&original).unwrap();
    assert!(
        text.contains("max_steps = 200"),
        "the shipped harness changed; update this test"
    );
    let edited = work.path().join("edited.toml");
    std::fs::write(&edited, text.replace("max_steps = 200", "max_steps = 30")).unwrap();

    let output = kiln(
        work.path(),
        &[
            "harness",
            "validate",
            original.to_str().unwrap(),
            "edited.toml",
        ],
    );
    assert_success(&output);
    let validated = stdout(&output);
    let hashes: Vec<&str> = validated
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .collect();
    assert_eq!(hashes.len(), 2, "{validated}");
    assert_ne!(hashes[0], hashes[1], "an edit changes the content hash");

    let output = kiln(work.path(), &["harness", "show", "edited.toml"]);
    assert_success(&output);
    assert!(
        stdout(&output).contains(&format!("# hash {}", hashes[1])),
        "{}",
        stdout(&output)
    );

    let output = kiln(
        work.path(),
        &["harness", "diff", original.to_str().unwrap(), "edited.toml"],
    );
    assert_success(&output);
    assert!(
        stdout(&output).contains("limit"),
        "the diff names the changed processor:\n{}",
        stdout(&output)
    );

    std::fs::write(
        work.path().join("broken.toml"),
        "name = \"x\"\n[[processor]]\nid = \"p\"\nkind = \"no_such_kind\"\n",
    )
    .unwrap();
    let output = kiln(
        work.path(),
        &["harness", "validate", "edited.toml", "broken.toml"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stdout(&output).contains("edited.toml"),
        "valid files are still reported"
    );
    assert!(
        stderr(&output).contains("broken.toml") && stderr(&output).contains("no_such_kind"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn report_regenerates_the_same_report_and_json_logs_are_json() {
    let work = tempfile::tempdir().unwrap();
    let output = kiln(
        work.path(),
        &[
            "--log-format",
            "json",
            "--log-level",
            "info",
            "run",
            "--env",
            "tau2-airline",
            "--tasks",
            "2",
            "--out",
            "run",
        ],
    );
    assert_success(&output);
    let json_lines: Vec<serde_json::Value> = stderr(&output)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let starting = json_lines
        .iter()
        .find(|line| line["message"] == "run starting")
        .unwrap_or_else(|| panic!("no JSON `run starting` event in:\n{}", stderr(&output)));
    assert_eq!(starting["level"], "INFO");
    assert!(
        starting["run_id"]
            .as_str()
            .unwrap()
            .starts_with("tau2-airline-"),
        "{starting}"
    );

    let report_path = work.path().join("run").join("report.md");
    let written = std::fs::read_to_string(&report_path).unwrap();
    std::fs::remove_file(&report_path).unwrap();
    let output = kiln(work.path(), &["report", "run"]);
    assert_success(&output);
    assert_eq!(std::fs::read_to_string(&report_path).unwrap(), written);
    assert!(
        stdout(&output).contains("2/2 recorded"),
        "{}",
        stdout(&output)
    );

    let output = kiln(work.path(), &["report", "nowhere"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("nowhere is not a run directory"),
        "{}",
        stderr(&output)
    );
}
