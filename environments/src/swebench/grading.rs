//! Grading as `swebench.harness.grading` 5.0.2 does it: the log checks (bad markers, missing
//! markers, the exit-code guard, the suite-ran evidence), F2P / P2P / F2F / P2F with the
//! skipped / xfail rules and truncated parametrized ids, and resolved / partial / no.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

pub use super::parsers::StatusMap;
use super::parsers::{ERROR, FAILED, PASSED, Parser, SKIPPED, XFAIL};
use super::{
    APPLY_PATCH_FAIL, END_TEST_OUTPUT, EvalType, RESET_FAILED, START_TEST_OUTPUT, TEST_EXIT_CODE,
    TESTS_ERROR, TESTS_TIMEOUT,
};

/// Evidence that a (JavaScript) test runner ran, for logs that parse to nothing.
static SUITE_RAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?m)Executed [1-9]\d* of \d+|TOTAL: [1-9]\d* (?:SUCCESS|FAILED)|[1-9]\d* passing|Tests:\s+[1-9]\d*|Test Suites:\s+(?:\d+ \w+, )*[1-9]\d* total|^# tests [1-9]\d*|[1-9]\d* specs?, \d+ failures?|': ok$",
    )
    .unwrap()
});

static TEST_EXIT_CODE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"{}:\s*(-?\d+)", regex::escape(TEST_EXIT_CODE))).unwrap()
});

/// The exit status the eval script recorded (`>>>>> Test Exit Code: N`): `None` when absent,
/// `Some(true)` when it is zero, `Some(false)` otherwise (any size; non-ASCII digits, which no
/// shell prints, count as non-zero).
pub fn recorded_exit_code_is_zero(log: &str) -> Option<bool> {
    let captures = TEST_EXIT_CODE_RE.captures(log)?;
    let digits = captures[1].trim_start_matches('-');
    Some(digits.chars().all(|c| c == '0'))
}

/// The status map of a log and whether the log is a valid test run (`get_logs_eval`).
pub fn logs_eval(parser: Parser, content: &str) -> (StatusMap, bool) {
    let bad = [APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT];
    if bad.iter().any(|marker| content.contains(marker)) {
        return (StatusMap::new(), false);
    }
    if !(content.contains(START_TEST_OUTPUT) && content.contains(END_TEST_OUTPUT)) {
        return (StatusMap::new(), false);
    }
    // Python's content.split(START)[1].split(END)[0].
    let after_start = content.split(START_TEST_OUTPUT).nth(1).unwrap_or("");
    let sliced = after_start.split(END_TEST_OUTPUT).next().unwrap_or("");
    let mut status_map = parser.parse(sliced);
    if status_map.is_empty() {
        status_map = parser.parse(content);
    }
    if status_map.is_empty() && !SUITE_RAN.is_match(content) {
        return (StatusMap::new(), false);
    }
    // A patch can print its own PASSED lines; a non-zero test exit with no failure in the map
    // means the log does not describe the run.
    if recorded_exit_code_is_zero(content) == Some(false)
        && !status_map.is_empty()
        && !status_map
            .values()
            .any(|status| status == FAILED || status == ERROR)
    {
        return (StatusMap::new(), false);
    }
    (status_map, true)
}

/// The key of `case` in the map; a truncated parametrized id (more `[` than `]`) matches by
/// prefix when every candidate agrees on pass versus fail.
fn resolve_case<'a>(case: &'a str, map: &'a StatusMap) -> Option<&'a str> {
    if map.contains(case) {
        return Some(case);
    }
    if case.matches('[').count() > case.matches(']').count() {
        let matches: Vec<(&str, &str)> = map
            .iter()
            .filter(|(test, _)| test.starts_with(case))
            .collect();
        let passing = |status: &str| status == PASSED || status == XFAIL;
        if let Some(first) = matches.first()
            && matches
                .iter()
                .all(|(_, status)| passing(status) == passing(first.1))
        {
            return Some(first.0);
        }
    }
    None
}

fn test_passed(case: &str, map: &StatusMap) -> bool {
    resolve_case(case, map)
        .and_then(|key| map.get(key))
        .is_some_and(|status| status == PASSED || status == XFAIL)
}

/// P2P: a skipped test is not a regression.
fn test_maintained(case: &str, map: &StatusMap) -> bool {
    test_passed(case, map)
        || resolve_case(case, map)
            .and_then(|key| map.get(key))
            .is_some_and(|status| status == SKIPPED)
}

/// Missing, FAILED, ERROR or (for F2P) SKIPPED.
fn test_failed(case: &str, map: &StatusMap) -> bool {
    match resolve_case(case, map).and_then(|key| map.get(key)) {
        None => true,
        Some(status) => status == FAILED || status == ERROR || status == SKIPPED,
    }
}

/// Tests that passed and failed in one category.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SuccessFailure {
    pub success: Vec<String>,
    pub failure: Vec<String>,
}

/// `tests_status` of a report, with the official keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestsReport {
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: SuccessFailure,
    #[serde(rename = "PASS_TO_PASS")]
    pub pass_to_pass: SuccessFailure,
    #[serde(rename = "FAIL_TO_FAIL")]
    pub fail_to_fail: SuccessFailure,
    #[serde(rename = "PASS_TO_FAIL")]
    pub pass_to_fail: SuccessFailure,
}

/// Expected tests of an instance in each category (F2F / P2F are graded only when given).
#[derive(Debug, Clone, Default)]
pub struct GoldTests<'a> {
    pub fail_to_pass: &'a [String],
    pub pass_to_pass: &'a [String],
    pub fail_to_fail: Option<&'a [String]>,
    pub pass_to_fail: Option<&'a [String]>,
}

/// `get_eval_tests_report`.
pub fn tests_report(map: &StatusMap, gold: &GoldTests<'_>, eval_type: EvalType) -> TestsReport {
    let check = |cases: &[String], maintained: bool| {
        let mut result = SuccessFailure::default();
        for case in cases {
            if eval_type == EvalType::FailOnly {
                if map.get(case) == Some(FAILED) {
                    result.failure.push(case.clone());
                } else {
                    result.success.push(case.clone());
                }
                continue;
            }
            let ok = if maintained {
                test_maintained(case, map)
            } else {
                test_passed(case, map)
            };
            if ok {
                result.success.push(case.clone());
            } else if test_failed(case, map) {
                result.failure.push(case.clone());
            }
        }
        result
    };
    TestsReport {
        fail_to_pass: check(gold.fail_to_pass, false),
        pass_to_pass: check(gold.pass_to_pass, true),
        fail_to_fail: gold
            .fail_to_fail
            .map(|cases| check(cases, false))
            .unwrap_or_default(),
        pass_to_fail: gold
            .pass_to_fail
            .map(|cases| check(cases, false))
            .unwrap_or_default(),
    }
}

/// `RESOLVED_FULL`, `RESOLVED_PARTIAL` or `RESOLVED_NO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ResolvedStatus {
    #[serde(rename = "RESOLVED_FULL")]
    Full,
    #[serde(rename = "RESOLVED_PARTIAL")]
    Partial,
    #[serde(rename = "RESOLVED_NO")]
    No,
}

impl ResolvedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "RESOLVED_FULL",
            Self::Partial => "RESOLVED_PARTIAL",
            Self::No => "RESOLVED_NO",
        }
    }
}

/// Share of successes (1 when the category is empty), as `compute_fail_to_pass`.
fn ratio(category: &SuccessFailure) -> f64 {
    let total = category.success.len() + category.failure.len();
    if total == 0 {
        return 1.0;
    }
    category.success.len() as f64 / total as f64
}

/// `get_resolution_status`: full iff F2P = 1 and P2P = 1; partial iff 0 < F2P < 1 and P2P = 1.
pub fn resolution_status(report: &TestsReport) -> ResolvedStatus {
    let f2p = ratio(&report.fail_to_pass);
    let p2p = ratio(&report.pass_to_pass);
    if f2p == 1.0 && p2p == 1.0 {
        ResolvedStatus::Full
    } else if f2p < 1.0 && f2p > 0.0 && p2p == 1.0 {
        ResolvedStatus::Partial
    } else {
        ResolvedStatus::No
    }
}

/// Infrastructure-failure signatures (`swebench.harness.infra_failure`), first match wins.
static INFRA_SIGNATURES: LazyLock<Vec<(&'static str, bool, Regex)>> = LazyLock::new(|| {
    [
        (
            "browser_launch_failed",
            true,
            r"Failed to launch|Failed to connect to the bus",
        ),
        (
            "display_unavailable",
            true,
            r"cannot open display|Missing X server|unable to open X display",
        ),
        (
            "out_of_memory",
            true,
            r"Cannot allocate memory|OutOfMemoryError|^Killed$",
        ),
        (
            "container_unavailable",
            true,
            r"Error response from daemon|Cannot connect to the Docker daemon",
        ),
        (
            "network_unreachable",
            true,
            r"Could not resolve host|Temporary failure in name resolution",
        ),
        (
            "missing_module",
            false,
            r"Cannot find module|MODULE_NOT_FOUND|ModuleNotFoundError",
        ),
        (
            "no_tests_collected",
            false,
            r"no tests ran|collected 0 items",
        ),
        (
            "tests_timed_out",
            false,
            r"Timeout error: \d+ seconds exceeded",
        ),
    ]
    .into_iter()
    .map(|(reason, environment, pattern)| {
        (
            reason,
            environment,
            Regex::new(&format!("(?m){pattern}")).unwrap(),
        )
    })
    .collect()
});

/// (reason, is an environment fault) of the first matching signature.
pub fn classify_infra_failure(text: &str) -> Option<(&'static str, bool)> {
    INFRA_SIGNATURES
        .iter()
        .find(|(_, _, pattern)| pattern.is_match(text))
        .map(|(reason, environment, _)| (*reason, *environment))
}

/// One instance's entry of `report.json` (`get_eval_report` with tests status).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceReport {
    #[serde(rename = "patch_is_None")]
    pub patch_is_none: bool,
    pub patch_exists: bool,
    pub patch_successfully_applied: bool,
    pub resolved: bool,
    pub infra_failure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infra_failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests_status: Option<TestsReport>,
}

/// What grading needs of an instance.
#[derive(Debug, Clone, Copy)]
pub struct GradeSpec<'a> {
    pub parser: Parser,
    pub eval_type: EvalType,
    pub fail_to_pass: &'a [String],
    pub pass_to_pass: &'a [String],
}

/// `get_eval_report`: the report of `model_patch` given the test log `log`.
pub fn eval_report(spec: &GradeSpec<'_>, model_patch: Option<&str>, log: &str) -> InstanceReport {
    let mut report = InstanceReport {
        patch_is_none: false,
        patch_exists: false,
        patch_successfully_applied: false,
        resolved: false,
        infra_failure: false,
        infra_failure_reason: None,
        tests_status: None,
    };
    if model_patch.is_none() {
        report.patch_is_none = true;
        return report;
    }
    report.patch_exists = true;
    let (map, found) = logs_eval(spec.parser, log);
    if !found {
        if let Some((reason, environment)) = classify_infra_failure(log) {
            report.infra_failure = environment;
            report.infra_failure_reason = Some(reason.to_string());
        }
        return report;
    }
    report.patch_successfully_applied = true;
    let gold = GoldTests {
        fail_to_pass: spec.fail_to_pass,
        pass_to_pass: spec.pass_to_pass,
        ..GoldTests::default()
    };
    let tests = tests_report(&map, &gold, spec.eval_type);
    report.resolved = resolution_status(&tests) == ResolvedStatus::Full;
    report.tests_status = Some(tests);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    fn wrap(body: &str, exit: i32) -> String {
        format!(
            "+ : '{START_TEST_OUTPUT}'\n{body}\n+ : '{END_TEST_OUTPUT}'\n{TEST_EXIT_CODE}: {exit}\n"
        )
    }

    #[test]
    fn swebench_grading_resolved_partial_no() {
        let f2p = strings(&["t.py::a", "t.py::b"]);
        let p2p = strings(&["t.py::c", "t.py::s"]);
        let spec = GradeSpec {
            parser: Parser::Pytest,
            eval_type: EvalType::PassAndFail,
            fail_to_pass: &f2p,
            pass_to_pass: &p2p,
        };
        let all = wrap(
            "PASSED t.py::a\nXFAIL t.py::b\nPASSED t.py::c\nSKIPPED t.py::s",
            0,
        );
        let report = eval_report(&spec, Some("diff"), &all);
        assert!(report.resolved && report.patch_successfully_applied);
        let partial = wrap(
            "PASSED t.py::a\nFAILED t.py::b\nPASSED t.py::c\nPASSED t.py::s",
            1,
        );
        let report = eval_report(&spec, Some("diff"), &partial);
        let tests = report.tests_status.clone().unwrap();
        assert_eq!(resolution_status(&tests), ResolvedStatus::Partial);
        assert!(!report.resolved);
        assert_eq!(tests.fail_to_pass.failure, ["t.py::b"]);
        // A skipped F2P test is a failure; a missing P2P test is a failure.
        let skipped = wrap("SKIPPED t.py::a\nPASSED t.py::b\nPASSED t.py::c", 0);
        let tests = eval_report(&spec, Some("d"), &skipped)
            .tests_status
            .unwrap();
        assert_eq!(tests.fail_to_pass.failure, ["t.py::a"]);
        assert_eq!(tests.pass_to_pass.failure, ["t.py::s"]);
        assert_eq!(resolution_status(&tests), ResolvedStatus::No);
        // No patch at all.
        assert!(eval_report(&spec, None, &all).patch_is_none);
    }

    #[test]
    fn swebench_invalid_logs() {
        let f2p = strings(&["t.py::a"]);
        let spec = GradeSpec {
            parser: Parser::Pytest,
            eval_type: EvalType::PassAndFail,
            fail_to_pass: &f2p,
            pass_to_pass: &[],
        };
        // Exit-code guard: non-zero exit with only PASSED lines.
        let (_, found) = logs_eval(spec.parser, &wrap("PASSED t.py::a", 2));
        assert!(!found);
        assert!(logs_eval(spec.parser, &wrap("PASSED t.py::a\nFAILED t.py::z", 1)).1);
        // Missing end marker; apply failure; empty map.
        assert!(!logs_eval(spec.parser, &format!("{START_TEST_OUTPUT}\nPASSED t.py::a")).1);
        assert!(!logs_eval(spec.parser, &format!("{APPLY_PATCH_FAIL}\n")).1);
        assert!(!logs_eval(spec.parser, &wrap("collected 0 items", 5)).1);
        let report = eval_report(&spec, Some("d"), &wrap("no tests ran", 5));
        assert_eq!(
            report.infra_failure_reason.as_deref(),
            Some("no_tests_collected")
        );
        assert!(!report.infra_failure && !report.patch_successfully_applied);
        // The recorded exit code.
        assert_eq!(recorded_exit_code_is_zero("x"), None);
        assert_eq!(
            recorded_exit_code_is_zero(">>>>> Test Exit Code: -0"),
            Some(true)
        );
        assert_eq!(
            recorded_exit_code_is_zero(">>>>> Test Exit Code: 99999999999999999999999"),
            Some(false)
        );
    }

    #[test]
    fn swebench_truncated_parametrized_ids_prefix_match() {
        let mut map = StatusMap::new();
        map.insert("t.py::f[log(photon-1]", PASSED);
        map.insert("t.py::f[log(photon-2]", XFAIL);
        map.insert("t.py::g[a-1]", PASSED);
        map.insert("t.py::g[a-2]", FAILED);
        assert!(test_passed("t.py::f[log(photon", &map));
        // Candidates disagree: no match, so it counts as failed.
        assert!(!test_passed("t.py::g[a", &map));
        assert!(test_failed("t.py::g[a", &map));
        // Balanced brackets never prefix-match.
        assert!(!test_passed("t.py::f[log(photon-]", &map));
    }
}
