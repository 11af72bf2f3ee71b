//! `kiln evolve check` on the planted-hack suite (`evolve/tests/hacks/`, every one rejected with
//! its expected reason, gold literals looked up in the installed environment data) and on honest
//! candidates (`evolve/tests/honest/`, every one accepted).

mod common;

use std::path::{Path, PathBuf};

use common::kiln;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn header(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_else(|| panic!("missing `# {key}:` header"))
        .trim()
        .to_string()
}

fn candidates(dir: &str) -> Vec<PathBuf> {
    let root = workspace().join("evolve/tests").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && !p.to_string_lossy().ends_with(".manifest.toml")
        })
        .collect();
    files.sort();
    files
}

/// Runs the check on one file; returns (exit code, stdout, expected kind).
fn check(file: &Path) -> (Option<i32>, String, String) {
    let text = std::fs::read_to_string(file).unwrap();
    let base = workspace().join("harnesses").join(header(&text, "base"));
    let env = header(&text, "env");
    let mut args = vec![
        "evolve".to_string(),
        "check".to_string(),
        file.display().to_string(),
        "--base".to_string(),
        base.display().to_string(),
        "--env".to_string(),
        env,
    ];
    let manifest = file.with_extension("manifest.toml");
    if manifest.exists() {
        args.push("--manifest".to_string());
        args.push(manifest.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = kiln(&workspace(), &args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(2),
        "{}: input error: {stderr}",
        file.display()
    );
    (output.status.code(), stdout, header(&text, "expect"))
}

#[test]
fn the_planted_hack_suite_is_rejected_with_the_reasons() {
    let hacks = candidates("hacks");
    assert!(hacks.len() >= 20);
    let mut failures = Vec::new();
    for file in &hacks {
        let (code, stdout, expect) = check(file);
        println!("{stdout}");
        if code != Some(1) || !stdout.contains(&format!("[{expect}]")) {
            failures.push(format!(
                "{}: exit {code:?}, expected [{expect}]:\n{stdout}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} of {} planted hacks rejected", hacks.len(), hacks.len());
}

#[test]
fn honest_candidates_go_on_to_the_gate() {
    for file in candidates("honest") {
        let (code, stdout, _) = check(&file);
        assert_eq!(code, Some(0), "{}:\n{stdout}", file.display());
        assert!(stdout.contains("accept (goes on to the gate)"), "{stdout}");
    }
}

#[test]
fn a_real_gold_literal_is_found_in_the_environment_data() {
    // WebShop test goal 3's target ASIN comes from the generated catalog, not from this test.
    let dir = tempfile::tempdir().unwrap();
    let shop = kiln_environments::webshop::Shop::standard();
    let asin = &shop.goals()[3].asin;
    let base = workspace().join("harnesses/react-text.toml");
    let text = std::fs::read_to_string(&base).unwrap().replace(
        "Think briefly, then act.",
        &format!("Buy {asin}. Think briefly, then act."),
    );
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(&candidate, text).unwrap();
    let output = kiln(
        dir.path(),
        &[
            "evolve",
            "check",
            candidate.to_str().unwrap(),
            "--base",
            base.to_str().unwrap(),
            "--env",
            "webshop",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("[gold_literal]") && stdout.contains("target ASIN"),
        "{stdout}"
    );
}
