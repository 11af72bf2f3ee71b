//! The Python log parsers of the official registry (`swebench.harness.log_parsers.python`),
//! line for line. A parser maps a test log to test id → status text; the text is usually one of
//! PASSED, FAILED, SKIPPED, ERROR, XFAIL but, as in the official parsers, whatever token the
//! log had in that place (so `XPASSED` can appear and count as neither pass nor fail).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// The statuses of `swebench.harness.constants.TestStatus`, in its declaration order.
pub const STATUSES: [&str; 5] = ["FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL"];
pub const PASSED: &str = "PASSED";
pub const FAILED: &str = "FAILED";
pub const SKIPPED: &str = "SKIPPED";
pub const ERROR: &str = "ERROR";
pub const XFAIL: &str = "XFAIL";

/// Test id → status, in first-insertion order (a Python dict: re-assigning keeps the position,
/// which matters where the grader takes the first prefix match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusMap {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl StatusMap {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, test: impl Into<String>, status: impl Into<String>) {
        let test = test.into();
        let status = status.into();
        match self.index.get(&test) {
            Some(&position) => self.entries[position].1 = status,
            None => {
                self.index.insert(test.clone(), self.entries.len());
                self.entries.push((test, status));
            }
        }
    }
    pub fn get(&self, test: &str) -> Option<&str> {
        self.index
            .get(test)
            .map(|&position| self.entries[position].1.as_str())
    }
    pub fn contains(&self, test: &str) -> bool {
        self.index.contains_key(test)
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// (test, status) in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|(test, status)| (test.as_str(), status.as_str()))
    }
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(_, status)| status.as_str())
    }
}

/// The Python parsers of the official `PARSER_REGISTRY`, by their registry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parser {
    Pytest,
    PytestOptions,
    Django,
    PytestV2,
    Seaborn,
    Sympy,
    Matplotlib,
    Astroid,
    Flask,
    Marshmallow,
    Pvlib,
    Pyvista,
    Sqlfluff,
    Xarray,
    Pydicom,
    Requests,
    Pylint,
    Astropy,
    Scikit,
    Sphinx,
}

impl Parser {
    pub const ALL: [Parser; 20] = [
        Parser::Pytest,
        Parser::PytestOptions,
        Parser::Django,
        Parser::PytestV2,
        Parser::Seaborn,
        Parser::Sympy,
        Parser::Matplotlib,
        Parser::Astroid,
        Parser::Flask,
        Parser::Marshmallow,
        Parser::Pvlib,
        Parser::Pyvista,
        Parser::Sqlfluff,
        Parser::Xarray,
        Parser::Pydicom,
        Parser::Requests,
        Parser::Pylint,
        Parser::Astropy,
        Parser::Scikit,
        Parser::Sphinx,
    ];

    /// The registry name, e.g. `parse_log_pytest`.
    pub fn name(self) -> &'static str {
        match self {
            Parser::Pytest => "parse_log_pytest",
            Parser::PytestOptions => "parse_log_pytest_options",
            Parser::Django => "parse_log_django",
            Parser::PytestV2 => "parse_log_pytest_v2",
            Parser::Seaborn => "parse_log_seaborn",
            Parser::Sympy => "parse_log_sympy",
            Parser::Matplotlib => "parse_log_matplotlib",
            Parser::Astroid => "parse_log_astroid",
            Parser::Flask => "parse_log_flask",
            Parser::Marshmallow => "parse_log_marshmallow",
            Parser::Pvlib => "parse_log_pvlib",
            Parser::Pyvista => "parse_log_pyvista",
            Parser::Sqlfluff => "parse_log_sqlfluff",
            Parser::Xarray => "parse_log_xarray",
            Parser::Pydicom => "parse_log_pydicom",
            Parser::Requests => "parse_log_requests",
            Parser::Pylint => "parse_log_pylint",
            Parser::Astropy => "parse_log_astropy",
            Parser::Scikit => "parse_log_scikit",
            Parser::Sphinx => "parse_log_sphinx",
        }
    }

    pub fn from_name(name: &str) -> Option<Parser> {
        Parser::ALL.into_iter().find(|parser| parser.name() == name)
    }

    /// Parses a log (the official parsers' `(log, test_spec)`; none of the Python ones reads
    /// the test spec).
    pub fn parse(self, log: &str) -> StatusMap {
        match self {
            Parser::Pytest
            | Parser::Astroid
            | Parser::Flask
            | Parser::Marshmallow
            | Parser::Pvlib
            | Parser::Pyvista
            | Parser::Sqlfluff
            | Parser::Xarray => parse_pytest(log),
            Parser::PytestOptions | Parser::Pydicom | Parser::Requests | Parser::Pylint => {
                parse_pytest_options(log)
            }
            Parser::Django => parse_django(log),
            Parser::PytestV2 | Parser::Astropy | Parser::Scikit | Parser::Sphinx => {
                parse_pytest_v2(log)
            }
            Parser::Seaborn => parse_seaborn(log),
            Parser::Sympy => parse_sympy(log),
            Parser::Matplotlib => parse_matplotlib(log),
        }
    }
}

/// The official `MAP_REPO_TO_PARSER_PY`: the parser of a SWE-bench repository.
pub fn parser_for_repo(repo: &str) -> Option<Parser> {
    Some(match repo {
        "astropy/astropy" => Parser::Astropy,
        "django/django" => Parser::Django,
        "marshmallow-code/marshmallow" => Parser::Marshmallow,
        "matplotlib/matplotlib" => Parser::Matplotlib,
        "mwaskom/seaborn" => Parser::Seaborn,
        "pallets/flask" => Parser::Flask,
        "psf/requests" => Parser::Requests,
        "pvlib/pvlib-python" => Parser::Pvlib,
        "pydata/xarray" => Parser::Xarray,
        "pydicom/pydicom" => Parser::Pydicom,
        "pylint-dev/astroid" => Parser::Astroid,
        "pylint-dev/pylint" => Parser::Pylint,
        "pytest-dev/pytest" => Parser::Pytest,
        "pyvista/pyvista" => Parser::Pyvista,
        "scikit-learn/scikit-learn" => Parser::Scikit,
        "sqlfluff/sqlfluff" => Parser::Sqlfluff,
        "sphinx-doc/sphinx" => Parser::Sphinx,
        "sympy/sympy" => Parser::Sympy,
        _ => return None,
    })
}

/// Python's `str.isspace` (Rust's White_Space plus the ASCII separators 0x1c-0x1f).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no arguments.
pub(crate) fn py_split(line: &str) -> Vec<&str> {
    line.split(py_space)
        .filter(|part| !part.is_empty())
        .collect()
}

/// Python's `str.strip()` with no arguments.
fn py_strip(line: &str) -> &str {
    line.trim_matches(py_space)
}

fn starts_with_status(line: &str) -> bool {
    STATUSES.iter().any(|status| line.starts_with(status))
}

static SKIP_SUMMARY_COUNT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\[\d+\]$").unwrap());

/// pytest's `SKIPPED [N] path:line: reason` summary, where `[N]` is not a test.
fn is_skip_summary(status: &str, name: &str) -> bool {
    status == SKIPPED && SKIP_SUMMARY_COUNT.is_match(name)
}

/// `-rA` summary lines: `STATUS id`, with ` - ` removed from FAILED lines.
fn parse_pytest(log: &str) -> StatusMap {
    parse_pytest_lines(log, |line| line.to_string())
}

fn parse_pytest_lines(log: &str, normalize: impl Fn(&str) -> String) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let mut line = normalize(raw);
        if !starts_with_status(&line) {
            continue;
        }
        if line.starts_with(FAILED) {
            line = line.replace(" - ", " ");
        }
        let parts = py_split(&line);
        if parts.len() <= 1 || is_skip_summary(parts[0], parts[1]) {
            continue;
        }
        map.insert(parts[1], parts[0]);
    }
    map
}

static OPTION_PATTERN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(.*?)\[(.*)\]").unwrap());

/// pytest with parametrized options: a path option keeps only its last component.
fn parse_pytest_options(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        if !starts_with_status(raw) {
            continue;
        }
        let line = if raw.starts_with(FAILED) {
            raw.replace(" - ", " ")
        } else {
            raw.to_string()
        };
        let parts = py_split(&line);
        if parts.len() <= 1 || is_skip_summary(parts[0], parts[1]) {
            continue;
        }
        let name = match OPTION_PATTERN.captures(parts[1]) {
            Some(captures) => {
                let main = &captures[1];
                let mut option = captures[2].to_string();
                if option.starts_with('/') && !option.starts_with("//") && !option.contains('*') {
                    option = format!("/{}", option.rsplit('/').next().unwrap_or(""));
                }
                format!("{main}[{option}]")
            }
            None => parts[1].to_string(),
        };
        map.insert(name, parts[0]);
    }
    map
}

static DJANGO_PATTERNS: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        Regex::new(
            r"(?m)^(.*?)\s\.\.\.\sTesting against Django installed in ((?s:.*?)) silenced\)\.\nok$",
        )
        .unwrap(),
        Regex::new(r"(?m)^(.*?)\s\.\.\.\sInternal Server Error: /(.*)/\nok$").unwrap(),
        Regex::new(r"(?m)^(.*?)\s\.\.\.\sSystem check identified no issues \(0 silenced\)\nok$")
            .unwrap(),
    ]
});

/// Django's runner: `name (module.Class) ... ok|FAIL|ERROR|skipped`, `FAIL:` / `ERROR:` headers.
fn parse_django(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    let mut prev_test: Option<String> = None;
    for raw in log.split('\n') {
        let mut line = py_strip(raw).to_string();
        if line.contains("--version is equivalent to version") {
            map.insert("--version is equivalent to version", PASSED);
        }
        if let Some((before, _)) = line.split_once(" ... ") {
            prev_test = Some(before.to_string());
        }
        for suffix in [" ... ok", " ... OK", " ...  OK"] {
            if line.ends_with(suffix) {
                // The official harness's special case for django__django-7188.
                if py_strip(&line)
                    .starts_with("Applying sites.0002_alter_domain_unique...test_no_migrations")
                {
                    line =
                        py_strip(line.split_once("...").map_or("", |(_, rest)| rest)).to_string();
                }
                let test = line.rsplit_once(suffix).map_or("", |(test, _)| test);
                map.insert(test, PASSED);
                break;
            }
        }
        if let Some((test, _)) = line.split_once(" ... skipped") {
            map.insert(test, SKIPPED);
        }
        if line.ends_with(" ... FAIL") {
            map.insert(line.split(" ... FAIL").next().unwrap_or(""), FAILED);
        }
        if line.starts_with("FAIL:") {
            // The official parser raises IndexError on a bare `FAIL:`; Kiln skips it.
            if let Some(test) = py_split(&line).get(1) {
                map.insert(py_strip(test), FAILED);
            }
        }
        if line.ends_with(" ... ERROR") {
            map.insert(line.split(" ... ERROR").next().unwrap_or(""), ERROR);
        }
        if line.starts_with("ERROR:")
            && let Some(test) = py_split(&line).get(1)
        {
            map.insert(py_strip(test), ERROR);
        }
        if line.trim_start_matches(py_space).starts_with("ok")
            && let Some(test) = &prev_test
        {
            map.insert(test.clone(), PASSED);
        }
    }
    for pattern in DJANGO_PATTERNS.iter() {
        for captures in pattern.captures_iter(log) {
            map.insert(&captures[1], PASSED);
        }
    }
    map
}

static ANSI_COLOR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[(\d+)m").unwrap());

/// Later pytest versions: colour codes and control characters removed; ids may hold spaces;
/// lines ending with a status (older pytest) are read too.
fn parse_pytest_v2(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let line: String = ANSI_COLOR
            .replace_all(raw, "")
            .chars()
            .filter(|&c| !('\u{1}'..='\u{1f}').contains(&c))
            .collect();
        if starts_with_status(&line) {
            let kept = if line.starts_with(FAILED) {
                line.split(" - ").next().unwrap_or("")
            } else {
                line.as_str()
            };
            let parts = py_split(kept);
            if parts.len() >= 2 && !is_skip_summary(parts[0], parts[1]) {
                map.insert(parts[1..].join(" "), parts[0]);
            }
        } else if STATUSES.iter().any(|status| line.ends_with(status)) {
            let parts = py_split(&line);
            if parts.len() >= 2 {
                map.insert(parts[..parts.len() - 1].join(" "), parts[parts.len() - 1]);
            }
        }
    }
    map
}

fn parse_seaborn(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for line in log.split('\n') {
        let parts = py_split(line);
        if parts.len() < 2 {
            continue;
        }
        if line.starts_with(FAILED) {
            map.insert(parts[1], FAILED);
        } else if line.contains(" PASSED ") {
            if parts[1] == PASSED {
                map.insert(parts[0], PASSED);
            }
        } else if line.starts_with(PASSED) {
            map.insert(parts[1], PASSED);
        }
    }
    map
}

static SYMPY_FAILURE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(_*) (.*)\.py:(.*) (_*)").unwrap());

/// Sympy's runner: `test_name ok|F|E`, and `___ path.py:name ___` failure headers.
fn parse_sympy(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for captures in SYMPY_FAILURE.captures_iter(log) {
        map.insert(format!("{}.py:{}", &captures[2], &captures[3]), FAILED);
    }
    for raw in log.split('\n') {
        let line = py_strip(raw);
        if !line.starts_with("test_") {
            continue;
        }
        let first = py_split(line).first().copied().unwrap_or("");
        if line.ends_with(" E") {
            map.insert(first, ERROR);
        }
        if line.ends_with(" F") {
            map.insert(first, FAILED);
        }
        if line.ends_with(" ok") {
            map.insert(first, PASSED);
        }
    }
    map
}

/// pytest with matplotlib's mouse-button names normalized.
fn parse_matplotlib(log: &str) -> StatusMap {
    parse_pytest_lines(log, |line| {
        line.replace("MouseButton.LEFT", "1")
            .replace("MouseButton.RIGHT", "3")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(map: &StatusMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(test, status)| (test.to_string(), status.to_string()))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(test, status)| (test.to_string(), status.to_string()))
            .collect()
    }

    #[test]
    fn swebench_pytest_summary_lines() {
        let log = "tests/a.py::test_x PASSED [ 50%]\nPASSED tests/a.py::test_one\n\
                   FAILED tests/a.py::test_two - AssertionError: 1 - 2\nSKIPPED [2] tests/a.py:9: no\n\
                   SKIPPED tests/a.py::test_s\nXFAIL tests/a.py::test_xf - reason\n\
                   XPASS tests/a.py::test_xp\nERROR tests/b.py - ImportError: boom\nPASSED\n\
                   PASSED tests/a.py::test_one";
        assert_eq!(
            pairs(&Parser::Pytest.parse(log)),
            owned(&[
                ("tests/a.py::test_one", "PASSED"),
                ("tests/a.py::test_two", "FAILED"),
                ("tests/a.py::test_s", "SKIPPED"),
                ("tests/a.py::test_xf", "XFAIL"),
                ("tests/b.py", "ERROR"),
            ])
        );
    }

    #[test]
    fn swebench_pytest_options_keep_the_last_path_component() {
        let log = "PASSED tests/t.py::test_p[/tmp/a/b.txt]\nPASSED tests/t.py::test_q[//net/x]\n\
                   FAILED tests/t.py::test_r[a-b] - boom\nPASSED tests/t.py::test_plain";
        assert_eq!(
            pairs(&Parser::Requests.parse(log)),
            owned(&[
                ("tests/t.py::test_p[/b.txt]", "PASSED"),
                ("tests/t.py::test_q[//net/x]", "PASSED"),
                ("tests/t.py::test_r[a-b]", "FAILED"),
                ("tests/t.py::test_plain", "PASSED"),
            ])
        );
    }

    #[test]
    fn swebench_django_runner_lines() {
        let log = "test_a (m.T.test_a) ... ok\ntest_b (m.T.test_b) ... FAIL\n\
                   test_c (m.T.test_c) ... skipped 'no db'\ntest_d (m.T.test_d) ... ERROR\n\
                   test_e (m.T.test_e) ... some output\nok\nFAIL: test_f (m.T.test_f)\n\
                   test_g (m.T.test_g) ... System check identified no issues (0 silenced)\nok";
        assert_eq!(
            pairs(&Parser::Django.parse(log)),
            owned(&[
                ("test_a (m.T.test_a)", "PASSED"),
                ("test_b (m.T.test_b)", "FAILED"),
                ("test_c (m.T.test_c)", "SKIPPED"),
                ("test_d (m.T.test_d)", "ERROR"),
                ("test_e (m.T.test_e)", "PASSED"),
                ("test_f", "FAILED"),
                ("test_g (m.T.test_g)", "PASSED"),
            ])
        );
    }

    #[test]
    fn swebench_sympy_and_v2_and_seaborn() {
        let sympy = "test_one ok\ntest_two F\ntest_three E\n\
                     ________ sympy/core/tests/test_x.py:test_two ________";
        assert_eq!(
            pairs(&Parser::Sympy.parse(sympy)),
            owned(&[
                ("sympy/core/tests/test_x.py:test_two", "FAILED"),
                ("test_one", "PASSED"),
                ("test_two", "FAILED"),
                ("test_three", "ERROR"),
            ])
        );
        let v2 = "\u{1b}[32mPASSED\u{1b}[0m t.py::test_a\nFAILED t.py::test b - x\n\
                  t.py::test_old PASSED";
        assert_eq!(
            pairs(&Parser::Sphinx.parse(v2)),
            owned(&[
                ("t.py::test_a", "PASSED"),
                ("t.py::test b", "FAILED"),
                ("t.py::test_old", "PASSED"),
            ])
        );
        let seaborn = "t.py::test_a PASSED [10%]\nFAILED t.py::test_b\nPASSED t.py::test_c";
        assert_eq!(
            pairs(&Parser::Seaborn.parse(seaborn)),
            owned(&[
                ("t.py::test_a", "PASSED"),
                ("t.py::test_b", "FAILED"),
                ("t.py::test_c", "PASSED"),
            ])
        );
        let mpl = "PASSED t.py::test_click[MouseButton.LEFT]";
        assert_eq!(
            pairs(&Parser::Matplotlib.parse(mpl)),
            owned(&[("t.py::test_click[1]", "PASSED")])
        );
    }

    #[test]
    fn swebench_registry_names_round_trip() {
        for parser in Parser::ALL {
            assert_eq!(Parser::from_name(parser.name()), Some(parser));
        }
        assert_eq!(parser_for_repo("sympy/sympy"), Some(Parser::Sympy));
        assert_eq!(parser_for_repo("unknown/repo"), None);
    }
}
