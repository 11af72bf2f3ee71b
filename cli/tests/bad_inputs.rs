//! Bad input exits non-zero with a message naming the input and what was expected, and creates no
//! run directory.

mod common;

use common::{entries, kiln, stderr};

/// Runs `kiln run ARGS` in an empty directory and checks the exit status, the message, and that
/// nothing was written (neither `runs/` nor the `--out` directory).
fn rejects(args: &[&str], expected_fragments: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("bad.toml"), BAD_HARNESS).unwrap();
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let output = kiln(work.path(), &full);
    let message = stderr(&output);
    assert_eq!(
        output.status.code(),
        Some(2),
        "kiln {full:?} should fail as bad input:\n{message}"
    );
    for fragment in expected_fragments {
        assert!(
            message.contains(fragment),
            "kiln {full:?}: `{fragment}` missing from:\n{message}"
        );
    }
    let left = entries(work.path());
    assert_eq!(
        left,
        vec![work.path().join("bad.toml")],
        "kiln {full:?} wrote something: {left:?}"
    );
}

/// A harness whose step limit has a misspelled field on line 7.
const BAD_HARNESS: &str = r#"name = "bad"

[[processor]]
id = "limit"
kind = "step_limit"

config = { max_stepz = 5 }
"#;

#[test]
fn unknown_env_lists_the_known_ones() {
    rejects(
        &["--env", "tau3-retail"],
        &[
            "unknown environment `tau3-retail`",
            "tau2-retail",
            "tau2-airline",
        ],
    );
}

#[test]
fn unknown_split_lists_the_splits() {
    rejects(
        &["--env", "tau2-airline", "--split", "dev"],
        &["unknown split `dev`", "test (20 tasks)", "train (30 tasks)"],
    );
}

#[test]
fn unknown_task_id_is_named() {
    rejects(
        &["--env", "tau2-airline", "--tasks", "2,9999"],
        &["unknown task id `9999`", "split `test`"],
    );
    rejects(
        &["--env", "tau2-airline", "--tasks", "21"],
        &["has only 20 tasks"],
    );
}

#[test]
fn malformed_harness_names_file_line_and_field() {
    rejects(
        &[
            "--env",
            "tau2-airline",
            "--harness",
            "bad.toml",
            "--out",
            "out",
        ],
        &["bad.toml:7:", "config.max_stepz", "max_steps"],
    );
    rejects(
        &["--env", "tau2-airline", "--harness", "missing.toml"],
        &["missing.toml", "cannot read"],
    );
}

#[test]
fn unreachable_endpoint_fails_the_preflight() {
    // Port 9 (discard) is closed on test machines: the connection is refused at once.
    rejects(
        &[
            "--env",
            "tau2-airline",
            "--model",
            "openai:qwen@http://127.0.0.1:9/v1",
            "--out",
            "out",
        ],
        &["--model openai:qwen@http://127.0.0.1:9/v1", "127.0.0.1:9"],
    );
    rejects(
        &[
            "--env",
            "tau2-airline",
            "--judge",
            "openai:judge@http://127.0.0.1:9/v1",
        ],
        &["--judge", "127.0.0.1:9"],
    );
}

#[test]
fn malformed_flags_are_named() {
    rejects(
        &["--env", "tau2-airline", "--model", "gpt4"],
        &["invalid model spec `gpt4`"],
    );
    rejects(
        &["--env", "tau2-airline", "--user", "robot"],
        &["invalid user mode `robot`", "scripted"],
    );
    rejects(
        &["--env", "tau2-airline", "--attempts", "0"],
        &["--attempts 0"],
    );
    rejects(&["--split", "test"], &["missing --env"]);
}

/// A data directory (`KILN_HOME`) holding a copy of the real τ² airline data with one file broken.
fn kiln_home_with_broken(file: &str, contents: &str) -> tempfile::TempDir {
    common::require_tau2_data();
    let home = tempfile::tempdir().unwrap();
    let real = kiln_environments::default_data_dir().join("data/tau2/airline");
    let copy = home.path().join("data/tau2/airline");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    std::fs::write(copy.join(file), contents).unwrap();
    home
}

#[test]
fn corrupt_data_files_are_named_and_nothing_is_written() {
    let truncated_tasks = {
        let real = kiln_environments::default_data_dir().join("data/tau2/airline/tasks.json");
        let text = std::fs::read_to_string(real).unwrap();
        text[..text.len() / 2].to_string()
    };
    let cases = [
        ("tasks.json", truncated_tasks.as_str()),
        ("split_tasks.json", r#"{"train": ["0"], "test": 7}"#),
        ("db.json", "not json at all"),
    ];
    for (file, contents) in cases {
        let home = kiln_home_with_broken(file, contents);
        let work = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(common::kiln_binary())
            .args(["run", "--env", "tau2-airline", "--tasks", "2"])
            .current_dir(work.path())
            .env("KILN_HOME", home.path())
            .env_remove("RUST_LOG")
            .output()
            .expect("the kiln binary runs");
        let message = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "a corrupt {file} should fail as bad input:\n{message}"
        );
        assert!(
            message.contains(file),
            "the error should name {file}:\n{message}"
        );
        assert_eq!(
            entries(work.path()),
            Vec::<std::path::PathBuf>::new(),
            "a run with a corrupt {file} wrote something"
        );
    }
}
