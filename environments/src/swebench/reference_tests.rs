//! Kiln's grader against the official `swebench` 5.0.2 package, on the same logs in the same
//! run: per-test status maps, validity, report.json entries and resolved / partial / no must be
//! identical, and so must every Python parser's output on every log.
//!
//! The reference is installed by `ops/setup swebench-ref` into
//! `$KILN_HOME/reference/swebench-5.0.2` (or `KILN_SWEBENCH_REF`). Under `CI=true` a missing
//! reference fails the test; elsewhere it is skipped with a notice.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::grading::GoldTests;
use super::grading::{GradeSpec, eval_report, logs_eval, resolution_status, tests_report};
use super::parsers::Parser;
use super::{
    APPLY_PATCH_FAIL, END_TEST_OUTPUT, EvalType, START_TEST_OUTPUT, TEST_EXIT_CODE, TESTS_TIMEOUT,
};

const DRIVER: &str = include_str!("reference_grade.py");

struct Case {
    name: &'static str,
    parser: Parser,
    eval_type: EvalType,
    f2p: Vec<String>,
    p2p: Vec<String>,
    model_patch: Option<&'static str>,
    log: String,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// A log as the eval script produces it under `set -x`: trace lines, both markers, exit code.
fn run_log(body: &str, exit: i32) -> String {
    format!(
        "+ cd /testbed\n+ git status\nOn branch main\n+ : '{START_TEST_OUTPUT}'\n{body}\n\
         + SWEBENCH_TEST_EXIT_CODE={exit}\n+ : '{END_TEST_OUTPUT}'\n\
         + echo '{TEST_EXIT_CODE}: {exit}'\n{TEST_EXIT_CODE}: {exit}\n+ git checkout abc t.py\n"
    )
}

fn case(name: &'static str, parser: Parser, f2p: &[&str], p2p: &[&str], log: String) -> Case {
    Case {
        name,
        parser,
        eval_type: EvalType::PassAndFail,
        f2p: strings(f2p),
        p2p: strings(p2p),
        model_patch: Some("diff --git a/x b/x\n"),
        log,
    }
}

fn cases() -> Vec<Case> {
    let pytest_f2p = ["tests/test_a.py::test_fix", "tests/test_a.py::test_fix2"];
    let pytest_p2p = ["tests/test_a.py::test_old", "tests/test_b.py::test_other"];
    let session = "============================= test session starts ==============================\n\
                   collected 4 items\n\ntests/test_a.py ...F                                      [100%]\n\
                   =========================== short test summary info ============================";
    let mut all = vec![
        case(
            "pytest gold",
            Parser::Pytest,
            &pytest_f2p,
            &pytest_p2p,
            run_log(
                &format!(
                    "{session}\nPASSED tests/test_a.py::test_fix\nPASSED tests/test_a.py::test_fix2\n\
                     PASSED tests/test_a.py::test_old\nPASSED tests/test_b.py::test_other\n\
                     ============================== 4 passed in 0.02s =============================="
                ),
                0,
            ),
        ),
        case(
            "pytest wrong patch breaks a P2P test",
            Parser::Pytest,
            &pytest_f2p,
            &pytest_p2p,
            run_log(
                "PASSED tests/test_a.py::test_fix\nPASSED tests/test_a.py::test_fix2\n\
                 FAILED tests/test_a.py::test_old - AssertionError: assert 1 == 2 - really\n\
                 PASSED tests/test_b.py::test_other",
                1,
            ),
        ),
        case(
            "pytest empty patch",
            Parser::Pytest,
            &pytest_f2p,
            &pytest_p2p,
            run_log(
                "FAILED tests/test_a.py::test_fix - ValueError\nFAILED tests/test_a.py::test_fix2\n\
                 PASSED tests/test_a.py::test_old\nPASSED tests/test_b.py::test_other",
                1,
            ),
        ),
        case(
            "pytest partial",
            Parser::Pytest,
            &pytest_f2p,
            &pytest_p2p,
            run_log(
                "PASSED tests/test_a.py::test_fix\nFAILED tests/test_a.py::test_fix2 - x\n\
                 PASSED tests/test_a.py::test_old\nPASSED tests/test_b.py::test_other",
                1,
            ),
        ),
        case(
            "collection error",
            Parser::Pytest,
            &pytest_f2p,
            &["tests/test_a.py"],
            run_log(
                "ERROR tests/test_a.py - ImportError: cannot import name 'fix' from 'pkg'\n\
                 !!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection !!!!!!!!!!!!!!!!!!!!",
                2,
            ),
        ),
        case(
            "skipped F2P",
            Parser::Pytest,
            &pytest_f2p,
            &["tests/test_a.py::test_old"],
            run_log(
                "SKIPPED [1] tests/test_a.py:10: unconditional skip\n\
                 SKIPPED tests/test_a.py::test_fix2\nSKIPPED tests/test_a.py::test_old\n\
                 PASSED tests/test_b.py::test_other",
                0,
            ),
        ),
        case(
            "exit-code guard",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            run_log(
                "PASSED tests/test_a.py::test_fix\nPASSED tests/test_a.py::test_fix2",
                1,
            ),
        ),
        case(
            "truncated parametrized ids",
            Parser::Pytest,
            &[
                "tests/test_u.py::test_fail[log(photon",
                "tests/test_u.py::test_mixed[a",
            ],
            &["tests/test_u.py::test_skip[x"],
            run_log(
                "PASSED tests/test_u.py::test_fail[log(photon-1]\n\
                 XFAIL tests/test_u.py::test_fail[log(photon-2] - known\n\
                 PASSED tests/test_u.py::test_mixed[a-1]\nFAILED tests/test_u.py::test_mixed[a-2]\n\
                 FAILED tests/test_u.py::test_skip[x-1]\nSKIPPED tests/test_u.py::test_skip[x-2]",
                1,
            ),
        ),
        case(
            "XPASS line",
            Parser::Pytest,
            &["tests/test_x.py::test_xp"],
            &["tests/test_x.py::test_ok"],
            run_log(
                "XPASS tests/test_x.py::test_xp unexpectedly passing\n\
                 PASSED tests/test_x.py::test_ok",
                0,
            ),
        ),
        case(
            "missing end marker",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            format!(
                "+ : '{START_TEST_OUTPUT}'\nPASSED tests/test_a.py::test_fix\n\
                 PASSED tests/test_a.py::test_fix2\n"
            ),
        ),
        case(
            "no markers at all",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            "PASSED tests/test_a.py::test_fix\nPASSED tests/test_a.py::test_fix2\n".into(),
        ),
        case(
            "apply failure",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            format!(
                "{APPLY_PATCH_FAIL}:\nerror: patch failed: src/a.py:3\nerror: src/a.py: patch does not apply\n"
            ),
        ),
        case(
            "timeout (truncated log)",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            format!(
                "+ : '{START_TEST_OUTPUT}'\nPASSED tests/test_a.py::test_fix\n\n\nTimeout error: 1800 seconds exceeded."
            ),
        ),
        case(
            "timeout marker",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            format!(
                "{}\n{TESTS_TIMEOUT}\n",
                run_log(
                    "PASSED tests/test_a.py::test_fix\nPASSED tests/test_a.py::test_fix2",
                    0
                )
            ),
        ),
        case(
            "no tests collected",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            run_log(
                "collected 0 items\n\n============================ no tests ran in 0.01s =============================",
                5,
            ),
        ),
        case(
            "results outside the markers",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            format!(
                "+ : '{START_TEST_OUTPUT}'\n+ : '{END_TEST_OUTPUT}'\n{TEST_EXIT_CODE}: 0\n\
                 PASSED tests/test_a.py::test_fix\nPASSED tests/test_a.py::test_fix2\n"
            ),
        ),
        case(
            "empty map, suite ran (JS evidence)",
            Parser::Pytest,
            &pytest_f2p,
            &[],
            run_log("  12 passing (3s)", 0),
        ),
        case(
            "django",
            Parser::Django,
            &[
                "test_fix (app.tests.T.test_fix)",
                "test_new (app.tests.T.test_new)",
            ],
            &[
                "test_old (app.tests.T.test_old)",
                "test_skip (app.tests.T.test_skip)",
                "test_noisy (app.tests.T.test_noisy)",
            ],
            run_log(
                "Creating test database for alias 'default'...\n\
                 test_fix (app.tests.T.test_fix) ... ok\ntest_new (app.tests.T.test_new) ... FAIL\n\
                 test_old (app.tests.T.test_old) ... ok\n\
                 test_skip (app.tests.T.test_skip) ... skipped 'needs postgres'\n\
                 test_noisy (app.tests.T.test_noisy) ... Internal Server Error: /admin/x/\nok\n\
                 test_err (app.tests.T.test_err) ... ERROR\n\n\
                 ======================================================================\n\
                 FAIL: test_new (app.tests.T.test_new)\n\
                 ----------------------------------------------------------------------\n\
                 Traceback (most recent call last):\nAssertionError: 1 != 2\n\n\
                 Ran 6 tests in 0.010s\n\nFAILED (failures=1, errors=1, skipped=1)",
                1,
            ),
        ),
        case(
            "django gold",
            Parser::Django,
            &["test_fix (app.tests.T.test_fix)"],
            &["test_old (app.tests.T.test_old)"],
            run_log(
                "test_fix (app.tests.T.test_fix) ... ok\ntest_old (app.tests.T.test_old) ...  OK\n\
                 --version is equivalent to version\nRan 2 tests in 0.001s\n\nOK",
                0,
            ),
        ),
        case(
            "sympy",
            Parser::Sympy,
            &["test_fix", "test_new"],
            &["test_old", "test_err"],
            run_log(
                "============================= test process starts ==============================\n\
                 sympy/core/tests/test_basic.py[4] \ntest_fix ok\ntest_new F\ntest_old ok\ntest_err E\n\
                 ________________________________________________________________________________\n\
                 _____________ sympy/core/tests/test_basic.py:test_new _____________\n\
                 AssertionError\n====== tests finished: 2 passed, 1 failed, 1 exceptions in 0.1 seconds ======",
                1,
            ),
        ),
        case(
            "requests (pytest options)",
            Parser::Requests,
            &["tests/test_requests.py::test_path[/tmp/dir/file.txt]"],
            &["tests/test_requests.py::test_plain"],
            run_log(
                "PASSED tests/test_requests.py::test_path[/var/lib/file.txt]\n\
                 PASSED tests/test_requests.py::test_plain\n\
                 FAILED tests/test_requests.py::test_url[//host/x] - ConnectionError",
                1,
            ),
        ),
        case(
            "sphinx (pytest v2, colours)",
            Parser::Sphinx,
            &["tests/test_build.py::test_html with spaces"],
            &["tests/test_build.py::test_old"],
            run_log(
                "\u{1b}[32mPASSED\u{1b}[0m tests/test_build.py::test_html with spaces\n\
                 tests/test_build.py::test_old PASSED\n\
                 \u{1b}[31mFAILED\u{1b}[0m tests/test_build.py::test_bad - assert 0\n\
                 tests/test_build.py::test_weird XPASSED",
                1,
            ),
        ),
        case(
            "seaborn",
            Parser::Seaborn,
            &["tests/test_core.py::TestX::test_fix"],
            &["tests/test_core.py::TestX::test_old"],
            run_log(
                "tests/test_core.py::TestX::test_fix PASSED [ 50%]\n\
                 tests/test_core.py::TestX::test_old PASSED [100%]\n\
                 FAILED tests/test_core.py::TestX::test_other",
                1,
            ),
        ),
        case(
            "matplotlib",
            Parser::Matplotlib,
            &["lib/matplotlib/tests/test_widgets.py::test_click[1]"],
            &["lib/matplotlib/tests/test_widgets.py::test_old"],
            run_log(
                "PASSED lib/matplotlib/tests/test_widgets.py::test_click[MouseButton.LEFT]\n\
                 PASSED lib/matplotlib/tests/test_widgets.py::test_old\n\
                 SKIPPED [3] lib/matplotlib/testing/decorators.py:1: no inkscape",
                0,
            ),
        ),
    ];
    let mut fail_only = case(
        "fail_only eval type",
        Parser::Pytest,
        &pytest_f2p,
        &["tests/test_a.py::test_absent"],
        run_log(
            "PASSED tests/test_a.py::test_fix\nERROR tests/test_a.py::test_fix2\nFAILED tests/test_b.py::test_x",
            1,
        ),
    );
    fail_only.eval_type = EvalType::FailOnly;
    all.push(fail_only);
    let mut none = case(
        "patch is None",
        Parser::Pytest,
        &pytest_f2p,
        &[],
        run_log("", 0),
    );
    none.model_patch = None;
    all.push(none);
    // Every Python family also reads a log written for another, so the alias parsers are
    // exercised on each family's output below.
    for parser in [
        Parser::Astropy,
        Parser::Pylint,
        Parser::Xarray,
        Parser::PytestV2,
        Parser::PytestOptions,
    ] {
        all.push(case(
            "alias families",
            parser,
            &["tests/test_a.py::test_fix"],
            &["tests/test_a.py::test_old"],
            run_log(
                "PASSED tests/test_a.py::test_fix\nSKIPPED tests/test_a.py::test_old\nFAILED tests/t.py::x - y",
                1,
            ),
        ));
    }
    all
}

fn reference_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KILN_SWEBENCH_REF") {
        return Some(PathBuf::from(dir));
    }
    let dir = crate::default_data_dir().join("reference/swebench-5.0.2");
    dir.join("swebench/harness/grading.py")
        .is_file()
        .then_some(dir)
}

fn pairs(map: &super::StatusMap) -> Value {
    Value::Array(
        map.iter()
            .map(|(test, status)| json!([test, status]))
            .collect(),
    )
}

#[test]
fn swebench_grader_matches_the_official_package_in_the_same_run() {
    let Some(reference) = reference_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the official swebench 5.0.2 reference is missing under CI: run ops/setup swebench-ref"
        );
        eprintln!(
            "NOTICE: swebench reference missing (ops/setup swebench-ref); comparison skipped"
        );
        return;
    };
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let driver = dir.path().join("reference_grade.py");
    std::fs::write(&driver, DRIVER).unwrap();
    let input: Vec<Value> = cases
        .iter()
        .map(|case| {
            json!({
                "name": case.name, "parser": case.parser.name(), "log": case.log,
                "instance_id": "owner__repo-1", "f2p": case.f2p, "p2p": case.p2p,
                "eval_type": case.eval_type.as_str(), "model_patch": case.model_patch,
            })
        })
        .collect();
    let cases_path = dir.path().join("cases.json");
    std::fs::write(&cases_path, serde_json::to_string(&input).unwrap()).unwrap();
    let output = Command::new("python3")
        .arg(&driver)
        .arg(&reference)
        .arg(&cases_path)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "reference grading failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let official: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(official.len(), cases.len());
    let mut resolutions = std::collections::BTreeSet::new();
    for (case, official) in cases.iter().zip(&official) {
        let name = case.name;
        let (map, found) = logs_eval(case.parser, &case.log);
        assert_eq!(pairs(&map), official["status_map"], "{name}: status map");
        assert_eq!(json!(found), official["found"], "{name}: log validity");
        let spec = GradeSpec {
            parser: case.parser,
            eval_type: case.eval_type,
            fail_to_pass: &case.f2p,
            pass_to_pass: &case.p2p,
        };
        let report = eval_report(&spec, case.model_patch, &case.log);
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            official["report"],
            "{name}: report.json entry"
        );
        let gold = GoldTests {
            fail_to_pass: &case.f2p,
            pass_to_pass: &case.p2p,
            ..GoldTests::default()
        };
        let resolution = resolution_status(&tests_report(&map, &gold, case.eval_type));
        assert_eq!(
            json!(resolution.as_str()),
            official["resolution"],
            "{name}: resolution"
        );
        resolutions.insert(resolution.as_str());
        for parser in Parser::ALL {
            let expected = &official["parsers"][parser.name()];
            assert!(!expected.is_null(), "{name}: {} crashed", parser.name());
            assert_eq!(
                &pairs(&parser.parse(&case.log)),
                expected,
                "{name}: {} on the whole log",
                parser.name()
            );
        }
    }
    // The cases cover every outcome.
    assert_eq!(
        resolutions.into_iter().collect::<Vec<_>>(),
        ["RESOLVED_FULL", "RESOLVED_NO", "RESOLVED_PARTIAL"]
    );
}
