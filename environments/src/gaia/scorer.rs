//! The official GAIA scorer, rule for rule and quirk for quirk.
//!
//! A port of `question_scorer` from the leaderboard's `scorer.py` (gaia-benchmark/leaderboard,
//! Apache-2.0, as copied into `inspect_evals/gaia/scorer.py`). The ground truth's shape picks the
//! rule:
//! 1. it parses as a Python `float` → **number**: remove `$`, `%` and `,` from the answer, parse it
//!    as a Python `float` (failure gives `inf`), correct iff exactly equal;
//! 2. it contains `,` or `;` → **list**: split both on `[,;]`, lengths must match, compare in order;
//!    a ground-truth element that parses as a float uses the number rule, others compare after
//!    removing whitespace and lowercasing (punctuation kept);
//! 3. otherwise → **string**: remove whitespace, lowercase, remove ASCII punctuation, compare.
//!
//! Quirks kept on purpose, because results must equal the leaderboard's:
//! - "1,000" is not a float, so as a ground truth it is the list ["1", "000"];
//! - list elements are tested raw, so " 2" is numeric (Python's `float` strips whitespace);
//! - an unparseable answer is `inf`, so it equals a ground truth of "inf" or "1e999";
//! - "nan" equals nothing; `_` between digits is accepted ("1_000" = 1000); any Unicode decimal
//!   digit counts ("١٢" = 12), as does Unicode whitespace around a number;
//! - punctuation removal is ASCII only (an en dash survives); lowercasing is full Unicode.

use std::fmt;

/// Which of the three rules judged an answer (decided by the ground truth alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Number,
    List,
    String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Number => "number",
            Rule::List => "list",
            Rule::String => "string",
        })
    }
}

/// The scorer's judgement of one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub correct: bool,
    pub rule: Rule,
    /// One sentence saying how the answer was read and, when wrong, why.
    pub explanation: String,
}

/// Scores `model_answer` against `ground_truth` exactly as the official `question_scorer` does.
pub fn question_scorer(model_answer: &str, ground_truth: &str) -> Verdict {
    if let Some(truth) = python_float(ground_truth) {
        let answer = normalize_number_str(model_answer);
        return Verdict {
            correct: answer == truth,
            rule: Rule::Number,
            explanation: format!("evaluated {model_answer:?} as a number ({answer} vs {truth})"),
        };
    }
    if ground_truth.contains([',', ';']) {
        return score_list(model_answer, ground_truth);
    }
    let correct = normalize_str(model_answer, true) == normalize_str(ground_truth, true);
    Verdict {
        correct,
        rule: Rule::String,
        explanation: format!("evaluated {model_answer:?} as a string"),
    }
}

fn score_list(model_answer: &str, ground_truth: &str) -> Verdict {
    let truths = split_string(ground_truth);
    let answers = split_string(model_answer);
    if truths.len() != answers.len() {
        return Verdict {
            correct: false,
            rule: Rule::List,
            explanation: format!(
                "evaluated {model_answer:?} as a list of {} elements; the ground truth has {}",
                answers.len(),
                truths.len()
            ),
        };
    }
    // The official scorer compares every element (no short cut); the result is the same.
    let wrong: Vec<usize> = answers
        .iter()
        .zip(&truths)
        .enumerate()
        .filter(|(_, (answer, truth))| !list_element_matches(answer, truth))
        .map(|(index, _)| index)
        .collect();
    Verdict {
        correct: wrong.is_empty(),
        rule: Rule::List,
        explanation: if wrong.is_empty() {
            format!("evaluated {model_answer:?} as a list; every element matches")
        } else {
            format!("evaluated {model_answer:?} as a list; elements {wrong:?} (0-based) differ")
        },
    }
}

fn list_element_matches(answer: &str, truth: &str) -> bool {
    match python_float(truth) {
        Some(truth) => normalize_number_str(answer) == truth,
        None => normalize_str(answer, false) == normalize_str(truth, false),
    }
}

/// `normalize_number_str`: drops `$`, `%` and `,`, then parses as Python's `float`; a failure is
/// `inf` (which is why an unparseable answer equals an infinite ground truth).
pub fn normalize_number_str(text: &str) -> f64 {
    let cleaned: String = text
        .chars()
        .filter(|c| !matches!(c, '$' | '%' | ','))
        .collect();
    python_float(&cleaned).unwrap_or(f64::INFINITY)
}

/// `split_string`: `re.split("[,;]", text)` (empty pieces kept).
pub fn split_string(text: &str) -> Vec<&str> {
    text.split([',', ';']).collect()
}

/// `normalize_str`: removes every (Unicode) whitespace character, lowercases (full Unicode
/// mapping), and with `remove_punct` removes ASCII punctuation (`string.punctuation`) only.
pub fn normalize_str(text: &str, remove_punct: bool) -> String {
    let no_spaces: String = text.chars().filter(|c| !python_isspace(*c)).collect();
    let lower = no_spaces.to_lowercase();
    if remove_punct {
        lower
            .chars()
            .filter(|c| !c.is_ascii_punctuation())
            .collect()
    } else {
        lower
    }
}

/// Python's `str.isspace` / `re`'s `\s` on one character: Unicode White_Space plus the ASCII
/// separators U+001C..U+001F.
pub fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `float(text)` on a `str`: `None` where Python raises `ValueError`.
///
/// Follows CPython: non-ASCII whitespace becomes a space and non-ASCII decimal digits their ASCII
/// digit (anything else non-ASCII fails); `_` is allowed only between digits; surrounding ASCII
/// whitespace (`\t\n\v\f\r` and space) is stripped; then the decimal / `inf` / `infinity` / `nan`
/// grammar with an optional sign, correctly rounded, overflowing to ±inf.
pub fn python_float(text: &str) -> Option<f64> {
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if (c as u32) < 127 {
            ascii.push(c);
        } else if python_isspace(c) {
            ascii.push(' ');
        } else {
            ascii.push(char::from(b'0' + unicode_decimal(c)?));
        }
    }
    if ascii.contains('\0') {
        return None;
    }
    let ascii = if ascii.contains('_') {
        remove_underscores(&ascii)?
    } else {
        ascii
    };
    let body = ascii.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'));
    if !is_python_float_literal(body) {
        return None;
    }
    body.parse::<f64>().ok()
}

/// CPython's `_Py_string_to_number_with_underscores`: each `_` must follow and precede a digit.
fn remove_underscores(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut prev = '\0';
    for c in text.chars() {
        if c == '_' {
            if !prev.is_ascii_digit() {
                return None;
            }
        } else {
            if prev == '_' && !c.is_ascii_digit() {
                return None;
            }
            out.push(c);
        }
        prev = c;
    }
    (prev != '_').then_some(out)
}

/// The grammar CPython's `PyOS_string_to_double` accepts in full: `[sign] (inf | infinity | nan |
/// digits [. digits] [e [sign] digits] | . digits [e …])`, case-insensitive words. Checked here so
/// that nothing Rust's parser might accept beyond it slips through.
fn is_python_float_literal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if ["inf", "infinity", "nan"]
        .iter()
        .any(|word| unsigned.eq_ignore_ascii_case(word))
    {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (mantissa, ""),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || whole.len() + fraction.len() == 0 {
        return false;
    }
    match exponent {
        None => true,
        Some(exponent) => {
            let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            !exponent.is_empty() && digits(exponent)
        }
    }
}

/// The decimal value of a Unicode `Nd` character (Python's `Py_UNICODE_TODECIMAL`), or `None`.
fn unicode_decimal(c: char) -> Option<u8> {
    let code = c as u32;
    if c.is_ascii_digit() {
        return Some(code as u8 - b'0');
    }
    // Every Nd block is ten consecutive code points starting at its zero.
    let zero = match DECIMAL_ZEROS.binary_search(&code) {
        Ok(index) => DECIMAL_ZEROS[index],
        Err(0) => return None,
        Err(index) => DECIMAL_ZEROS[index - 1],
    };
    (code - zero < 10).then(|| (code - zero) as u8)
}

/// The zero of every non-ASCII Unicode `Nd` block, from Python 3.11's `unicodedata` (Unicode
/// 14.0): `[c for c in range(0x80, 0x110000) if unicodedata.decimal(chr(c), -1) == 0]`.
const DECIMAL_ZEROS: [u32; 65] = [
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn correct(answer: &str, truth: &str) -> bool {
        question_scorer(answer, truth).correct
    }

    #[test]
    fn number_rule_strips_dollar_percent_and_commas_and_needs_exact_equality() {
        assert_eq!(question_scorer("17", "17").rule, Rule::Number);
        assert!(correct("$1,000", "1000"));
        assert!(correct("45%", "45"));
        assert!(correct("17.0", "17"));
        assert!(correct(" 17 ", "17"));
        assert!(correct("1e3", "1000"));
        assert!(!correct("17.000001", "17"), "no tolerance");
        assert!(!correct("17 apples", "17"), "units are not removed");
        assert!(!correct("seventeen", "17"));
        assert!(correct("0.1", "0.1"));
        assert!(!correct("0.30000000000000004", "0.3"));
    }

    #[test]
    fn list_rule_compares_in_order_with_per_element_rules() {
        assert_eq!(question_scorer("a, b", "a, b").rule, Rule::List);
        assert!(correct("Apple, Banana", "apple,banana"));
        assert!(correct("apple;banana", "apple, banana"), "either separator");
        assert!(!correct("banana, apple", "apple, banana"), "order matters");
        assert!(!correct("apple", "apple, banana"), "lengths must match");
        assert!(
            correct("$2, 3%", "2, 3"),
            "numeric elements use the number rule"
        );
        assert!(
            !correct("a.b, c", "ab, c"),
            "punctuation is kept in list elements"
        );
        assert!(
            correct("sea gull, x", "seagull, x"),
            "whitespace is removed"
        );
        assert!(correct("a,,b", "a,,b"), "empty elements are compared too");
    }

    #[test]
    fn string_rule_ignores_case_whitespace_and_ascii_punctuation() {
        assert_eq!(question_scorer("Paris", "Paris").rule, Rule::String);
        assert!(correct("PARIS.", "Paris"));
        assert!(correct("sea gull", "seagull"));
        assert!(correct("St. Louis!", "st louis"));
        assert!(
            !correct("the Beatles", "Beatles"),
            "articles are not removed"
        );
        assert!(!correct("Paris", "Lyon"));
    }

    #[test]
    fn quirk_thousands_separator_in_ground_truth_makes_a_list() {
        let verdict = question_scorer("1000", "1,000");
        assert_eq!(verdict.rule, Rule::List);
        assert!(!verdict.correct);
        assert!(correct("1,000", "1,000"));
        assert!(correct("1;0", "1,000"), "element 000 is the number 0");
    }

    #[test]
    fn quirk_numeric_list_elements_are_tested_raw() {
        // " 2" parses as a float (Python strips it), so the number rule applies.
        assert!(correct("1, $2", "1, 2"));
        assert!(correct("1,2.0", "1, 2"));
        assert!(!correct("1, two", "1, 2"));
    }

    #[test]
    fn quirk_punctuation_removal_is_ascii_only() {
        assert!(correct("Jean-Paul", "JeanPaul"));
        assert!(
            !correct("Jean\u{2013}Paul", "JeanPaul"),
            "an en dash survives"
        );
        assert!(correct("Jean\u{2013}Paul", "jean \u{2013} paul"));
        assert!(correct("Ça va", "ÇA VA"), "lowercasing is Unicode");
    }

    #[test]
    fn quirk_unparseable_answers_are_infinite_and_nan_matches_nothing() {
        assert!(correct("no idea", "inf"));
        assert!(correct("no idea", "1e999"));
        assert!(!correct("nan", "nan"));
        assert!(!correct("", "0"));
    }

    #[test]
    fn python_float_matches_cpython_on_edge_cases() {
        let cases: [(&str, Option<f64>); 22] = [
            ("1\u{1c}", None),
            ("1\u{85}", Some(1.0)),
            ("\u{3000}1\u{3000}", Some(1.0)),
            ("1.e5", Some(1e5)),
            (".e5", None),
            ("1e", None),
            ("-iNfInItY", Some(f64::NEG_INFINITY)),
            ("1_0", Some(10.0)),
            ("1__0", None),
            ("_1", None),
            ("1_", None),
            ("1_.5", None),
            ("1._5", None),
            ("\u{661}\u{662}", Some(12.0)),
            ("\u{ff13}", Some(3.0)),
            ("1\u{7f}", None),
            ("\x0b1\x0c", Some(1.0)),
            (" 1 2", None),
            ("0x10", None),
            ("", None),
            (".", None),
            ("+.5", Some(0.5)),
        ];
        for (text, expected) in cases {
            assert_eq!(python_float(text), expected, "{text:?}");
        }
        assert!(python_float("+nan").unwrap().is_nan());
    }

    #[test]
    fn normalize_str_removes_unicode_whitespace_before_lowercasing() {
        assert_eq!(normalize_str("A\u{a0}B\u{1c}C\u{2003}d", true), "abcd");
        assert_eq!(normalize_str("A.b", false), "a.b");
        assert_eq!(normalize_str("A.b", true), "ab");
        assert_eq!(split_string("a,b;;c"), ["a", "b", "", "c"]);
    }
}

/// Equality with the official Python scorer, in the same test run.
#[cfg(test)]
mod reference {
    use std::io::Write;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    use super::question_scorer;
    use crate::webshop::rng::Rng;

    /// Loads `scorer.py` alone: its only imports beyond the standard library are `inspect_ai.scorer`
    /// (CORRECT, INCORRECT, Score, Scorer, Target, accuracy, scorer, stderr) and `inspect_ai.solver`
    /// (TaskState), used only by the `gaia_scorer` wrapper, so stand-in modules with those names
    /// suffice; `question_scorer` itself is pure standard library. Reads JSON `[answer, truth]`
    /// lines on stdin, writes `1`/`0` per line.
    const DRIVER: &str = r#"
import importlib.util, json, logging, sys, types
logging.disable(logging.CRITICAL)  # normalize_number_str warns on every unparseable answer
shim_scorer = types.ModuleType("inspect_ai.scorer")
for name in ["CORRECT", "INCORRECT", "Score", "Scorer", "Target"]:
    setattr(shim_scorer, name, object)
shim_scorer.accuracy = shim_scorer.stderr = lambda *a, **k: None
shim_scorer.scorer = lambda *a, **k: (lambda f: f)
shim_solver = types.ModuleType("inspect_ai.solver")
shim_solver.TaskState = object
sys.modules["inspect_ai"] = types.ModuleType("inspect_ai")
sys.modules["inspect_ai.scorer"] = shim_scorer
sys.modules["inspect_ai.solver"] = shim_solver
spec = importlib.util.spec_from_file_location("gaia_reference_scorer", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for line in sys.stdin:
    answer, truth = json.loads(line)
    print(1 if module.question_scorer(model_answer=answer, ground_truth=truth)[0] else 0)
"#;

    fn reference_path() -> PathBuf {
        crate::default_data_dir().join("reference/gaia/scorer.py")
    }

    const WORDS: [&str; 24] = [
        "Paris",
        "the Beatles",
        "sea gull",
        "St. Louis",
        "Ça va",
        "İstanbul",
        "ΟΔΟΣ",
        "Straße",
        "1990\u{2013}2000",
        "O'Neil",
        "a.b",
        "x-ray",
        "New\u{a0}York",
        "mRNA",
        "Ünïcödé",
        "e.g.",
        "Washington, D.C.",
        "(b)",
        "right",
        "Mars",
        "inf",
        "nan",
        "Москва",
        "東京",
    ];

    const NUMBERS: [&str; 26] = [
        "17",
        "0",
        "-3",
        "3.14",
        "1000",
        "1,000",
        "1e3",
        "2.50",
        ".5",
        "5.",
        "1_000",
        " 2",
        "\u{661}\u{662}",
        "\u{ff14}\u{ff12}",
        "inf",
        "-Infinity",
        "nan",
        "1e999",
        "0.1",
        "100000000000000000001",
        "+7",
        "007",
        "1.e2",
        "12\u{3000}",
        "4\u{1c}",
        "6__0",
    ];

    fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
        items[rng.below(items.len())]
    }

    fn ground_truth(rng: &mut Rng) -> String {
        match rng.below(3) {
            0 => pick(rng, &NUMBERS).to_string(),
            1 => pick(rng, &WORDS).to_string(),
            _ => {
                let count = 2 + rng.below(3);
                let separator = [", ", ",", "; ", ";"][rng.below(4)];
                (0..count)
                    .map(|_| {
                        if rng.below(2) == 0 {
                            pick(rng, &NUMBERS)
                        } else {
                            pick(rng, &WORDS)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(separator)
            }
        }
    }

    /// An answer derived from `truth` by one of the edits a model's answer shows (or unrelated).
    fn answer_for(rng: &mut Rng, truth: &str) -> String {
        match rng.below(16) {
            0 | 1 => truth.to_string(),
            2 => truth.to_uppercase(),
            3 => truth.replace(' ', ""),
            4 => format!("  {truth}\n"),
            5 => format!("${truth}"),
            6 => format!("{truth}%"),
            7 => format!("{truth}."),
            8 => truth.replace(',', ";"),
            9 => truth.replace(", ", ","),
            10 => {
                let mut parts: Vec<&str> = truth.split([',', ';']).collect();
                parts.reverse();
                parts.join(",")
            }
            11 => truth
                .split([',', ';'])
                .next()
                .unwrap_or_default()
                .to_string(),
            12 => truth.replace('0', "\u{660}").replace('1', "\u{ff11}"),
            13 => truth.replace(' ', "\u{2003}"),
            14 => format!("{truth},000"),
            _ => ground_truth(rng),
        }
    }

    #[test]
    fn equals_the_official_python_scorer_on_generated_pairs() {
        let path = reference_path();
        if !path.is_file() {
            let message = format!(
                "the official GAIA scorer is missing at {} (run ops/setup gaia-ref)",
                path.display()
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{message}");
            }
            eprintln!("skipping the reference comparison: {message}");
            return;
        }
        let mut rng = Rng::new(0x6A1A);
        let mut pairs: Vec<(String, String)> = Vec::new();
        for _ in 0..1500 {
            let truth = ground_truth(&mut rng);
            let answer = answer_for(&mut rng, &truth);
            pairs.push((answer, truth));
        }
        let input: String = pairs
            .iter()
            .map(|pair| serde_json::to_string(&[&pair.0, &pair.1]).unwrap() + "\n")
            .collect();

        let mut child = Command::new("python3")
            .arg("-c")
            .arg(DRIVER)
            .arg(&path)
            .env("PYTHONIOENCODING", "utf-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "the python driver failed");
        let reference: Vec<bool> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| line == "1")
            .collect();
        assert_eq!(reference.len(), pairs.len());

        let mismatches: Vec<String> = pairs
            .iter()
            .zip(&reference)
            .filter(|((answer, truth), expected)| {
                question_scorer(answer, truth).correct != **expected
            })
            .map(|((answer, truth), expected)| {
                format!("{answer:?} vs {truth:?}: python {expected}")
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{} mismatches:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
        // The pairs must exercise both outcomes and all three rules to mean anything.
        let right = reference.iter().filter(|correct| **correct).count();
        assert!(right > 300 && right < 1200, "{right} of 1500 correct");
        for rule in [super::Rule::Number, super::Rule::List, super::Rule::String] {
            let used = pairs
                .iter()
                .filter(|(a, t)| question_scorer(a, t).rule == rule)
                .count();
            assert!(used > 200, "{rule}: {used} pairs");
        }
    }
}
