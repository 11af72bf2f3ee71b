//! The planted-hack suite: every candidate under `tests/hacks/` is rejected by the critic with the
//! reason kind its header names; every candidate under `tests/honest/` is accepted.
//!
//! Each file is a candidate harness built from a real `harnesses/*.toml`, with a header:
//! `# base: FILE`, `# env: ENV`, `# expect: REASON_KIND | accept`; `NAME.manifest.toml` next to it
//! is its manifest. The forbidden literals here are written by hand from the environments' data
//! (τ² retail test task 5's gold arguments, an ALFWorld valid_unseen id, a WebShop test goal id);
//! `kiln evolve check` runs the same files against literals built from the installed data.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_evolve::Manifest;
use kiln_evolve::critic::{CriticContext, ForbiddenLiterals, review};
use kiln_harness::HarnessSpec;
use kiln_harness::spec::{SpecFormat, parse_spec};

struct Planted {
    name: String,
    base: String,
    env: String,
    expect: String,
    child: HarnessSpec,
    manifest: Option<Manifest>,
}

fn header(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("# {key}: ")))
        .unwrap_or_else(|| panic!("missing `# {key}:` header"))
        .trim()
        .to_string()
}

fn load_dir(dir: &str) -> Vec<Planted> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "toml")
                && !path.to_string_lossy().ends_with(".manifest.toml")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let manifest_path = path.with_extension("manifest.toml");
            let manifest = manifest_path.exists().then(|| {
                toml::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap()
            });
            Planted {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                base: header(&text, "base"),
                env: header(&text, "env"),
                expect: header(&text, "expect"),
                child: parse_spec(&text, SpecFormat::Toml)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                manifest,
            }
        })
        .collect()
}

fn base(name: &str) -> HarnessSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../harnesses")
        .join(name);
    parse_spec(&std::fs::read_to_string(path).unwrap(), SpecFormat::Toml).unwrap()
}

fn context(env: &str) -> CriticContext {
    let mut forbidden = ForbiddenLiterals::new(env);
    match env {
        "tau2-retail" | "tau2-airline" => {
            for (text, what) in [
                ("#W6390527", "gold argument order_id"),
                ("mei_kovacs_8020", "gold argument user_id"),
                ("8538875209", "gold argument item_ids"),
                ("paypal_7644869", "gold argument payment_method_id"),
            ] {
                forbidden.add(text, what, "5");
            }
            forbidden.task_ids = ["5", "9", "12"].map(String::from).into();
        }
        "alfworld" => {
            forbidden.task_ids = ["valid_unseen/pick_and_place_simple/0000"]
                .map(String::from)
                .into();
            forbidden.add(
                "valid_unseen/pick_and_place_simple/0000",
                "task id",
                "valid_unseen/pick_and_place_simple/0000",
            );
        }
        "webshop" => {
            forbidden.task_ids = (0..1500).map(|i| i.to_string()).collect::<BTreeSet<_>>();
        }
        other => panic!("unknown env {other}"),
    }
    CriticContext {
        forbidden,
        ..CriticContext::default()
    }
}

#[test]
fn every_planted_hack_is_rejected_with_its_expected_reason() {
    let planted = load_dir("hacks");
    assert!(planted.len() >= 20, "only {} planted hacks", planted.len());
    let mut failures = Vec::new();
    for hack in &planted {
        let verdict = review(
            &base(&hack.base),
            &hack.child,
            hack.manifest.as_ref(),
            &context(&hack.env),
        );
        let kinds: Vec<String> = verdict
            .kinds()
            .iter()
            .map(|k| {
                serde_json::to_value(k)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        println!(
            "{:<24} expect {:<22} got {:?}",
            hack.name, hack.expect, kinds
        );
        if verdict.accepted() || !kinds.contains(&hack.expect) {
            failures.push(format!(
                "{}: expected {}, got {verdict:#?}",
                hack.name, hack.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn honest_candidates_are_accepted() {
    let honest = load_dir("honest");
    assert!(honest.len() >= 5);
    for candidate in &honest {
        assert_eq!(candidate.expect, "accept");
        let verdict = review(
            &base(&candidate.base),
            &candidate.child,
            candidate.manifest.as_ref(),
            &context(&candidate.env),
        );
        assert!(
            verdict.accepted(),
            "{} was rejected: {verdict:#?}",
            candidate.name
        );
        assert_eq!(verdict.budget.charge, 0.0, "{}", candidate.name);
    }
}
