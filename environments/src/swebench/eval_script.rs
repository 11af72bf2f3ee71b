//! Eval scripts: the dataset's own (v5), made to record the test exit code as the official
//! harness does, or one generated like the 4.1 generator for instances that carry none.

use std::sync::LazyLock;

use regex::Regex;

use super::{END_TEST_OUTPUT, Instance, START_TEST_OUTPUT, TEST_EXIT_CODE, TEST_EXIT_CODE_VAR};

/// Heredoc delimiter of the official generator.
const HEREDOC: &str = "EOF_114329324912";

/// Files the official generator never passes to the test command.
const NON_TEST_EXTS: [&str; 11] = [
    ".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml",
];

/// `parse_eval_script`: the script's lines without the shebang and `set -uxo pipefail`.
pub fn parse_eval_script(script: &str) -> Vec<String> {
    script
        .trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .split('\n')
        .filter(|line| *line != "#!/bin/bash" && *line != "set -uxo pipefail")
        .map(str::to_string)
        .collect()
}

/// `record_test_exit_code`: stash `$?` right after the test command and echo it after the end
/// marker. A script without the end marker is left as it is.
pub fn record_test_exit_code(lines: Vec<String>) -> Vec<String> {
    let Some(position) = lines.iter().position(|line| line.contains(END_TEST_OUTPUT)) else {
        return lines;
    };
    let mut out = lines[..position].to_vec();
    out.push(format!("{TEST_EXIT_CODE_VAR}=$?"));
    out.push(lines[position].clone());
    out.push(format!("echo \"{TEST_EXIT_CODE}: ${TEST_EXIT_CODE_VAR}\""));
    out.extend_from_slice(&lines[position + 1..]);
    out
}

/// The script the container runs (`TestSpec.eval_script`), from the script lines.
pub fn assemble(lines: &[String]) -> String {
    let mut script = String::from("#!/bin/bash\nset -uxo pipefail\n");
    script.push_str(&lines.join("\n"));
    script.push('\n');
    script
}

/// The script to run for `instance`: its own eval script when it has one, else one generated
/// with `test_cmd`; in both cases recording the test exit code. `None` when the instance has
/// no eval script and no test command is known.
pub fn script_for(instance: &Instance, test_cmd: Option<&str>) -> Option<String> {
    let lines = match instance
        .eval_script
        .as_deref()
        .filter(|script| !script.is_empty())
    {
        Some(script) => parse_eval_script(script),
        None => generate_lines(instance, test_cmd?),
    };
    Some(assemble(&record_test_exit_code(lines)))
}

static DIFF_HEADER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^diff --git a/.* b/(.*)$").unwrap());

/// Files a patch touches (the `b/` side of each `diff --git` header), in order.
pub fn patch_files(patch: &str) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for captures in DIFF_HEADER.captures_iter(patch) {
        let file = captures[1].trim_end_matches('\r').to_string();
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files
}

/// What the test command gets: the test patch's files without data files (a data file passed
/// to pytest makes it run nothing and exit 4).
pub fn test_directives(test_patch: &str) -> Vec<String> {
    patch_files(test_patch)
        .into_iter()
        .filter(|file| !NON_TEST_EXTS.iter().any(|ext| file.ends_with(ext)))
        .collect()
}

fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:+=@,".contains(c))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The 4.1 generator's shape: `cd /testbed`, show the state, reset the test files to the base
/// commit, apply the test patch from a heredoc, run `test_cmd` on the test files between the
/// markers, restore the test files.
fn generate_lines(instance: &Instance, test_cmd: &str) -> Vec<String> {
    let base = shell_quote(&instance.base_commit);
    let files: Vec<String> = patch_files(&instance.test_patch)
        .iter()
        .map(|file| shell_quote(file))
        .collect();
    let directives: Vec<String> = test_directives(&instance.test_patch)
        .iter()
        .map(|file| shell_quote(file))
        .collect();
    let reset = format!("git checkout {base} {}", files.join(" "));
    let mut test_patch = instance.test_patch.clone();
    if !test_patch.ends_with('\n') {
        test_patch.push('\n');
    }
    vec![
        "cd /testbed".to_string(),
        "git config --global --add safe.directory /testbed".to_string(),
        "git status".to_string(),
        "git show".to_string(),
        format!("git -c core.fileMode=false diff {base}"),
        reset.clone(),
        format!("git apply -v - <<'{HEREDOC}'\n{test_patch}{HEREDOC}"),
        format!(": '{START_TEST_OUTPUT}'"),
        format!("{test_cmd} {}", directives.join(" ")),
        format!(": '{END_TEST_OUTPUT}'"),
        reset,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_PATCH: &str = "diff --git a/tests/test_x.py b/tests/test_x.py\n--- a/tests/test_x.py\n\
        +++ b/tests/test_x.py\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/tests/data.json b/tests/data.json\n";

    #[test]
    fn swebench_eval_script_records_the_exit_code() {
        let script = "#!/bin/bash\nset -uxo pipefail\ncd /testbed\n: '>>>>> Start Test Output'\n\
                      pytest -rA t.py\n: '>>>>> End Test Output'\ngit checkout x t.py\n";
        let lines = record_test_exit_code(parse_eval_script(script));
        assert_eq!(
            lines,
            [
                "cd /testbed",
                ": '>>>>> Start Test Output'",
                "pytest -rA t.py",
                "SWEBENCH_TEST_EXIT_CODE=$?",
                ": '>>>>> End Test Output'",
                "echo \">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE\"",
                "git checkout x t.py",
            ]
        );
        assert!(assemble(&lines).starts_with("#!/bin/bash\nset -uxo pipefail\ncd /testbed\n"));
        let unchanged = vec!["echo hi".to_string()];
        assert_eq!(record_test_exit_code(unchanged.clone()), unchanged);
    }

    #[test]
    fn swebench_generated_script_runs_only_test_files() {
        assert_eq!(test_directives(TEST_PATCH), ["tests/test_x.py"]);
        let instance = Instance {
            instance_id: "a__b-1".into(),
            base_commit: "abc".into(),
            test_patch: TEST_PATCH.into(),
            ..Instance::default()
        };
        assert!(script_for(&instance, None).is_none());
        let script = script_for(&instance, Some("python3 -m pytest -rA")).unwrap();
        assert!(script.contains("git checkout abc tests/test_x.py tests/data.json\n"));
        assert!(
            script.contains("python3 -m pytest -rA tests/test_x.py\nSWEBENCH_TEST_EXIT_CODE=$?\n")
        );
        assert!(script.contains(&format!("<<'{HEREDOC}'\n{TEST_PATCH}{HEREDOC}\n")));
        assert!(script.contains("echo \">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE\""));
    }
}
