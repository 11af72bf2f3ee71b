//! The small YAML subset of v5 `task.yaml` files (flat mappings written by `yaml.safe_dump`):
//! `key: scalar` (plain, 'single' or "double" quoted), `key:` followed by `- item` lines, and
//! `key: |` literal blocks. Plain scalars are read as strings (`null`, `~` and nothing as null),
//! which is what every task.yaml field is. Anything else is an error naming the line.

use serde_json::{Map, Value};

/// Parses a task.yaml; errors carry the 1-based line number.
pub(crate) fn parse(text: &str) -> Result<Map<String, Value>, (usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut map = Map::new();
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let number = index + 1;
        index += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') || line == "---" {
            continue;
        }
        if line.starts_with([' ', '\t', '-']) {
            return Err((number, format!("expected `key: value`, found `{line}`")));
        }
        let Some((key, rest)) = line.split_once(':') else {
            return Err((number, format!("expected `key: value`, found `{line}`")));
        };
        let key = key.trim().to_string();
        let rest = rest.trim();
        if rest.starts_with('|') {
            let keep_newline = !rest.starts_with("|-");
            let mut block = Vec::new();
            while index < lines.len()
                && (lines[index].starts_with(' ') || lines[index].trim().is_empty())
            {
                block.push(lines[index]);
                index += 1;
            }
            while block.last().is_some_and(|line| line.trim().is_empty()) {
                block.pop();
            }
            let indent = block
                .iter()
                .filter(|line| !line.trim().is_empty())
                .map(|line| line.len() - line.trim_start().len())
                .min()
                .unwrap_or(0);
            let mut value = block
                .iter()
                .map(|line| line.get(indent..).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            if keep_newline && !block.is_empty() {
                value.push('\n');
            }
            map.insert(key, Value::String(value));
            continue;
        }
        if rest.is_empty() && index < lines.len() && lines[index].trim_start().starts_with("- ") {
            let mut items = Vec::new();
            while index < lines.len() && lines[index].trim_start().starts_with("- ") {
                let item = lines[index].trim_start()[2..].trim();
                items.push(scalar(item).map_err(|message| (index + 1, message))?);
                index += 1;
            }
            map.insert(key, Value::Array(items));
            continue;
        }
        if rest == "[]" {
            map.insert(key, Value::Array(Vec::new()));
            continue;
        }
        map.insert(key, scalar(rest).map_err(|message| (number, message))?);
    }
    Ok(map)
}

fn scalar(text: &str) -> Result<Value, String> {
    if text.is_empty() || text == "null" || text == "~" {
        return Ok(Value::Null);
    }
    if text.starts_with('"') {
        return serde_json::from_str::<String>(text)
            .map(Value::String)
            .map_err(|error| format!("bad double-quoted string {text}: {error}"));
    }
    if let Some(inner) = text.strip_prefix('\'') {
        let Some(inner) = inner.strip_suffix('\'') else {
            return Err(format!("unterminated single-quoted string {text}"));
        };
        return Ok(Value::String(inner.replace("''", "'")));
    }
    let plain = match text.find(" #") {
        Some(comment) => text[..comment].trim_end(),
        None => text,
    };
    Ok(Value::String(plain.to_string()))
}

/// A YAML double-quoted scalar (JSON string escapes are valid YAML escapes).
pub(crate) fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swebench_task_yaml_subset() {
        let text = "base_commit: abc123\ndatasets:\n- SWE-bench/SWE-bench_Verified\n- lite\n\
                    version: '3.0'\nimage: \"sweb.eval:x\\n\"\nnote: |\n  two\n  lines\n\
                    empty:\nsplit: test # comment\n";
        let map = parse(text).unwrap();
        assert_eq!(map["base_commit"], "abc123");
        assert_eq!(
            map["datasets"],
            serde_json::json!(["SWE-bench/SWE-bench_Verified", "lite"])
        );
        assert_eq!(map["version"], "3.0");
        assert_eq!(map["image"], "sweb.eval:x\n");
        assert_eq!(map["note"], "two\nlines\n");
        assert_eq!(map["empty"], Value::Null);
        assert_eq!(map["split"], "test");
        assert_eq!(parse("  indented: x\n").unwrap_err().0, 1);
        assert_eq!(parse("a: b\nno colon\n").unwrap_err().0, 2);
        let quoted = quote("it's \"q\"\n\u{1}");
        assert_eq!(
            parse(&format!("k: {quoted}")).unwrap()["k"],
            "it's \"q\"\n\u{1}"
        );
    }
}
