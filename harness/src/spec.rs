//! Harness files: reading TOML/JSON with precise errors, the canonical form and the content hash.
//!
//! The canonical form is the harness as it runs: processors in resolved order, every default
//! filled in (hooks, group, config), sets (`envs`, `after`, `hooks`) sorted, object keys sorted.
//! The content hash is the hex sha256 of the canonical form as compact JSON, so two files that
//! differ only in formatting, key order or spelled-out defaults name the same version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_protocol::HarnessSpec;
use regex::Regex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::builtin::script::KIND as SCRIPT_KIND;
use crate::error::{HarnessError, HarnessErrorKind, Location};
use crate::processor::{ProcessorRegistry, field_in_message};
use crate::resolve::{ResolvedProcessor, resolve};

/// Number of hex digits in a short hash (as shown in reports and file names).
pub const SHORT_HASH_LEN: usize = 12;

/// The serialization of a harness file, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    Toml,
    Json,
}

impl SpecFormat {
    pub fn from_path(path: &Path) -> Result<Self, HarnessError> {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("toml") => Ok(SpecFormat::Toml),
            Some("json") => Ok(SpecFormat::Json),
            _ => Err(HarnessError::new(
                HarnessErrorKind::UnsupportedFormat,
                "a harness file must end in .toml or .json",
            )
            .with_file(path)),
        }
    }
}

/// Reads and validates a harness file. The spec is returned as written, except that each script
/// processor's `file` is read (relative to the harness file) and replaced by its text as
/// `source`, so the canonical form and the content hash cover the script. Errors name the file,
/// line, column, processor and field; a script's compile error names the script file, or the
/// line of the harness file for an inline script.
pub fn load_spec(path: &Path, registry: &ProcessorRegistry) -> Result<HarnessSpec, HarnessError> {
    let format = SpecFormat::from_path(path)?;
    let text = std::fs::read_to_string(path).map_err(|error| {
        HarnessError::new(HarnessErrorKind::Io, format!("cannot read: {error}")).with_file(path)
    })?;
    let mut spec = parse_spec(&text, format).map_err(|error| error.with_file(path))?;
    let base = path.parent().unwrap_or_else(|| Path::new(""));
    let script_files = embed_script_files(&mut spec, base).map_err(|error| {
        let location = error
            .processor()
            .and_then(|id| locate_field(&text, id, error.field(), false));
        error.with_location(location).with_file(path)
    })?;
    check_spec(&text, &spec, registry, &script_files).map_err(|error| {
        // A script file's error already names the script file.
        if error.file().is_none() {
            error.with_file(path)
        } else {
            error
        }
    })?;
    Ok(spec)
}

/// Replaces each script processor's `file` by the file's text as `source`. Returns the file
/// each processor's script came from.
pub fn embed_script_files(
    spec: &mut HarnessSpec,
    base: &Path,
) -> Result<BTreeMap<String, PathBuf>, HarnessError> {
    let mut files = BTreeMap::new();
    for processor in &mut spec.processors {
        if processor.kind != SCRIPT_KIND {
            continue;
        }
        let Value::Object(config) = &mut processor.config else {
            continue;
        };
        // Both or neither are reported by the kind's config check.
        if config.contains_key("source") {
            continue;
        }
        let Some(Value::String(file)) = config.get("file") else {
            continue;
        };
        let path = base.join(file);
        let source = std::fs::read_to_string(&path).map_err(|error| {
            HarnessError::new(
                HarnessErrorKind::Io,
                format!("cannot read script file `{}`: {error}", path.display()),
            )
            .with_processor(&processor.id)
            .with_field("config.file")
        })?;
        config.remove("file");
        config.insert("source".to_string(), Value::String(source));
        files.insert(processor.id.clone(), path);
    }
    Ok(files)
}

/// Parses text and validates it against `registry`; semantic errors are located in the text.
pub fn parse_and_validate(
    text: &str,
    format: SpecFormat,
    registry: &ProcessorRegistry,
) -> Result<HarnessSpec, HarnessError> {
    let spec = parse_spec(text, format)?;
    check_spec(text, &spec, registry, &BTreeMap::new())?;
    Ok(spec)
}

/// Validates a parsed spec and locates an error in `text` (or in the script file it names).
fn check_spec(
    text: &str,
    spec: &HarnessSpec,
    registry: &ProcessorRegistry,
    script_files: &BTreeMap<String, PathBuf>,
) -> Result<(), HarnessError> {
    let Err(error) = resolve(spec, registry) else {
        return Ok(());
    };
    if error.kind() == HarnessErrorKind::Script
        && let Some(id) = error.processor()
    {
        if let Some(file) = script_files.get(id) {
            return Err(error.with_file(file).with_field("config.file"));
        }
        return Err(locate_inline_script_error(text, error));
    }
    // A duplicate id is reported where it is repeated, anything else where the id is defined.
    let repeated = error.kind() == HarnessErrorKind::DuplicateId;
    let location = error
        .processor()
        .and_then(|id| locate_field(text, id, error.field(), repeated));
    Err(error.with_location(location))
}

/// Maps a script position (in an inline `source`) to the harness file: exactly for a multi-line
/// string (TOML `'''` or `"""`) and for the first line of a one-line string; otherwise the
/// error points at `source` and its message names the script line and column.
fn locate_inline_script_error(text: &str, error: HarnessError) -> HarnessError {
    let id = error.processor().unwrap_or_default().to_string();
    let field = error.field().unwrap_or("config.source").to_string();
    let script = error.location();
    let key = locate_field(text, &id, Some(&field), false);
    let mapped = match (key, script) {
        (Some(key), Some(script)) => map_into_string(text, key, script),
        _ => None,
    };
    let mut message = error.message().to_string();
    if mapped.is_none()
        && let Some(Location { line, column }) = script
    {
        message = format!("{message} (script line {line}, column {column})");
    }
    HarnessError::new(HarnessErrorKind::Script, message)
        .with_processor(id)
        .with_field(field)
        .with_location(mapped.or(key))
}

fn map_into_string(text: &str, key: Location, script: Location) -> Option<Location> {
    let key_offset = offset_of(text, key)?;
    let after_key = &text[key_offset..];
    let assign = after_key.find(['=', ':'])?;
    let value = after_key[assign + 1..].trim_start_matches([' ', '\t']);
    let value_offset = text.len() - value.len();
    let value_column = location_of(text, value_offset).column;
    let multi_line = value.starts_with("'''") || value.starts_with("\"\"\"");
    if multi_line {
        // TOML drops a newline right after the opening delimiter.
        let rest = &value[3..];
        if rest.starts_with('\n') || rest.starts_with("\r\n") {
            return Some(Location {
                line: key.line + script.line,
                column: script.column,
            });
        }
        return Some(if script.line == 1 {
            Location {
                line: key.line,
                column: value_column + 3 + script.column - 1,
            }
        } else {
            Location {
                line: key.line + script.line - 1,
                column: script.column,
            }
        });
    }
    if script.line == 1 && (value.starts_with('"') || value.starts_with('\'')) {
        return Some(Location {
            line: key.line,
            column: value_column + script.column,
        });
    }
    None
}

/// Parses text into a spec (shape only; see [`parse_and_validate`] for semantic checks).
pub fn parse_spec(text: &str, format: SpecFormat) -> Result<HarnessSpec, HarnessError> {
    match format {
        SpecFormat::Toml => toml::from_str(text).map_err(|error| toml_error(text, &error)),
        SpecFormat::Json => serde_json::from_str(text).map_err(|error| json_error(text, &error)),
    }
}

fn toml_error(text: &str, error: &toml::de::Error) -> HarnessError {
    let message = error.message().trim().replace('\n', "; ");
    let location = error.span().map(|span| location_of(text, span.start));
    let mut result =
        HarnessError::new(HarnessErrorKind::Syntax, message.clone()).with_location(location);
    let Some(location) = location else {
        return result;
    };
    let context = toml_context(text, location.line);
    let key = field_in_message(&message).or_else(|| key_on_line(text, location.line));
    if let Some(id) = context.processor_id {
        result = result.with_processor(id);
    }
    let field = match (context.table, key) {
        // An unknown top-level table is reported by its own name.
        (Some(table), Some(key)) if table.rsplit('.').next() == Some(key.as_str()) => Some(table),
        (Some(table), Some(key)) => Some(format!("{table}.{key}")),
        (None, Some(key)) => Some(key),
        (Some(table), None) => Some(table),
        (None, None) => None,
    };
    match field {
        Some(field) => result.with_field(field),
        None => result,
    }
}

fn json_error(text: &str, error: &serde_json::Error) -> HarnessError {
    let full = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    let location = (error.line() > 0).then_some(Location {
        line: error.line(),
        column: error.column(),
    });
    let result =
        HarnessError::new(HarnessErrorKind::Syntax, message.clone()).with_location(location);
    let key = field_in_message(&message).or_else(|| {
        let offset = offset_of(text, location?)?;
        last_json_key(&text[..offset])
    });
    match key {
        Some(key) => result.with_field(key),
        None => result,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn location_of(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    Location {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

fn offset_of(text: &str, location: Location) -> Option<usize> {
    let line_start = if location.line == 1 {
        0
    } else {
        text.match_indices('\n').nth(location.line - 2)?.0 + 1
    };
    let line = &text[line_start..];
    let within = line
        .char_indices()
        .nth(location.column.saturating_sub(1))
        .map_or(line.len(), |(index, _)| index);
    Some(line_start + within)
}

fn line_text(text: &str, line: usize) -> Option<&str> {
    text.lines().nth(line.checked_sub(1)?)
}

fn key_on_line(text: &str, line: usize) -> Option<String> {
    static KEY: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let regex = KEY.get_or_init(|| {
        Regex::new(r#"^\s*"?([A-Za-z0-9_\-]+)"?\s*="#).expect("the key pattern is valid")
    });
    let captures = regex.captures(line_text(text, line)?)?;
    Some(captures[1].to_string())
}

fn last_json_key(before: &str) -> Option<String> {
    static KEY: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let regex = KEY.get_or_init(|| {
        Regex::new(r#""([A-Za-z0-9_\-]+)"\s*:"#).expect("the JSON key pattern is valid")
    });
    regex
        .captures_iter(before)
        .last()
        .map(|captures| captures[1].to_string())
}

/// The TOML table a line belongs to, and the processor id when it is a `[[processor]]` table.
#[derive(Debug, Default, PartialEq)]
struct TomlContext {
    table: Option<String>,
    processor_id: Option<String>,
}

fn toml_context(text: &str, line: usize) -> TomlContext {
    static HEADER: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    static ID: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let header = HEADER.get_or_init(|| {
        Regex::new(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?").expect("the header pattern is valid")
    });
    let id = ID
        .get_or_init(|| Regex::new(r#"^\s*id\s*=\s*"([^"]*)""#).expect("the id pattern is valid"));
    let lines: Vec<&str> = text.lines().collect();
    let upto = line.min(lines.len());
    let Some(header_line) = (0..upto).rev().find(|&index| header.is_match(lines[index])) else {
        return TomlContext::default();
    };
    let table = header
        .captures(lines[header_line])
        .map(|c| c[1].to_string());
    let processor_id = if table.as_deref().is_some_and(|t| t.starts_with("processor")) {
        lines[header_line + 1..]
            .iter()
            .take_while(|text| {
                !header.is_match(text) || text.trim_start().starts_with("[processor.")
            })
            .find_map(|text| id.captures(text).map(|c| c[1].to_string()))
    } else {
        None
    };
    TomlContext {
        table,
        processor_id,
    }
}

/// Where a processor's id is defined, or better the line of `field`'s last segment inside that
/// processor's definition.
fn locate_field(text: &str, id: &str, field: Option<&str>, last: bool) -> Option<Location> {
    let id_pattern = Regex::new(&format!(r#""?id"?\s*[=:]\s*"{}""#, regex::escape(id))).ok()?;
    let id_match = if last {
        id_pattern.find_iter(text).last()?
    } else {
        id_pattern.find(text)?
    };
    let id_location = location_of(text, id_match.start());
    let Some(leaf) = field.and_then(|field| field.rsplit('.').next()) else {
        return Some(id_location);
    };
    if leaf == "id" {
        return Some(id_location);
    }
    let section_start = text[..id_match.start()]
        .rfind("[[processor]]")
        .or_else(|| text[..id_match.start()].rfind('{'))
        .unwrap_or(id_match.start());
    let after_id = &text[id_match.end()..];
    let section_end = id_match.end()
        + [after_id.find("[[processor]]"), after_id.find("\"id\"")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(after_id.len());
    let key_pattern = Regex::new(&format!(
        r#"(?:^|[\s{{,])("?{}"?)\s*[=:]"#,
        regex::escape(leaf)
    ))
    .ok()?;
    let section = &text[section_start..section_end];
    let key = key_pattern.captures(section)?.get(1)?;
    let key_start = section_start + key.start();
    Some(location_of(text, key_start))
}

/// The canonical spec: see the module docs.
pub fn canonical_spec(
    spec: &HarnessSpec,
    registry: &ProcessorRegistry,
) -> Result<HarnessSpec, HarnessError> {
    let resolved = resolve(spec, registry)?;
    Ok(canonical_from_resolved(spec, &resolved))
}

pub(crate) fn canonical_from_resolved(
    spec: &HarnessSpec,
    resolved: &[ResolvedProcessor],
) -> HarnessSpec {
    let mut envs = spec.envs.clone();
    envs.sort();
    envs.dedup();
    HarnessSpec {
        schema: spec.schema,
        name: spec.name.clone(),
        description: spec.description.clone(),
        envs,
        processors: resolved.iter().map(|p| p.spec.clone()).collect(),
    }
}

/// Compact JSON of an already canonical spec, keys sorted.
pub fn canonical_json(canonical: &HarnessSpec) -> String {
    let value = serde_json::to_value(canonical).expect("a harness spec serializes to JSON");
    sorted_json(&value).to_string()
}

/// TOML of an already canonical spec.
pub fn canonical_toml(canonical: &HarnessSpec) -> Result<String, HarnessError> {
    toml::to_string(canonical).map_err(|error| {
        HarnessError::new(
            HarnessErrorKind::InvalidConfig,
            format!("the harness cannot be written as TOML: {error}"),
        )
    })
}

/// Hex sha256 of the canonical JSON.
pub fn hash_canonical(canonical: &HarnessSpec) -> String {
    hex::encode(Sha256::digest(canonical_json(canonical).as_bytes()))
}

/// The content hash of any valid spec (canonicalizes first).
pub fn content_hash(
    spec: &HarnessSpec,
    registry: &ProcessorRegistry,
) -> Result<String, HarnessError> {
    Ok(hash_canonical(&canonical_spec(spec, registry)?))
}

/// The first [`SHORT_HASH_LEN`] hex digits.
pub fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(SHORT_HASH_LEN)]
}

/// A copy of `value` with every object's keys sorted.
pub fn sorted_json(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let sorted: Map<String, Value> = keys
                .into_iter()
                .map(|key| (key.clone(), sorted_json(&map[key])))
                .collect();
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_json).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::builtin_registry;

    const TOML_SPEC: &str = r#"
schema = 1
name = "demo"
envs = ["b", "a"]

[[processor]]
id = "limit"
kind = "step_limit"
config = { max_steps = 30 }

[[processor]]
id = "parser"
kind = "tool_parser"
"#;

    #[test]
    fn toml_and_json_spellings_hash_equal() {
        let json_spec = r#"{
          "processor": [
            {"kind": "step_limit", "config": {"max_steps": 30}, "id": "limit", "phase": 0},
            {"id": "parser", "kind": "tool_parser", "hooks": ["after_model"],
             "config": {"formats": ["tool_call_tags", "action"], "native": true}}
          ],
          "envs": ["a", "b", "a"],
          "name": "demo"
        }"#;
        let registry = builtin_registry();
        let from_toml = parse_spec(TOML_SPEC, SpecFormat::Toml).unwrap();
        let from_json = parse_spec(json_spec, SpecFormat::Json).unwrap();
        let hash = content_hash(&from_toml, &registry).unwrap();
        assert_eq!(hash, content_hash(&from_json, &registry).unwrap());
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn any_semantic_change_changes_the_hash() {
        let registry = builtin_registry();
        let base =
            content_hash(&parse_spec(TOML_SPEC, SpecFormat::Toml).unwrap(), &registry).unwrap();
        let changed = TOML_SPEC.replace("max_steps = 30", "max_steps = 31");
        let other =
            content_hash(&parse_spec(&changed, SpecFormat::Toml).unwrap(), &registry).unwrap();
        assert_ne!(base, other);
    }

    #[test]
    fn canonical_toml_round_trips_to_the_same_hash() {
        let registry = builtin_registry();
        let canonical =
            canonical_spec(&parse_spec(TOML_SPEC, SpecFormat::Toml).unwrap(), &registry).unwrap();
        let text = canonical_toml(&canonical).unwrap();
        let reparsed = parse_spec(&text, SpecFormat::Toml).unwrap();
        assert_eq!(canonical_spec(&reparsed, &registry).unwrap(), canonical);
        assert!(text.contains("max_steps = 30"), "{text}");
        assert!(text.contains("envs = [\"a\", \"b\"]"), "{text}");
    }

    #[test]
    fn toml_errors_name_line_column_processor_and_field() {
        let text = TOML_SPEC.replace("max_steps = 30 }", "max_steps = 30 }\nphase = \"early\"");
        let error = parse_spec(&text, SpecFormat::Toml).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::Syntax);
        assert_eq!(error.location().map(|l| l.line), Some(10));
        assert_eq!(error.processor(), Some("limit"));
        assert_eq!(error.field(), Some("processor.phase"));

        let missing = TOML_SPEC.replace("kind = \"tool_parser\"\n", "");
        let error = parse_spec(&missing, SpecFormat::Toml).unwrap_err();
        assert_eq!(error.field(), Some("processor.kind"));
        assert_eq!(error.processor(), Some("parser"));
    }

    #[test]
    fn json_errors_name_line_column_and_field() {
        let text = "{\n  \"name\": \"x\",\n  \"processor\": [\n    {\"id\": \"a\", \"kind\": \"step_limit\", \"phase\": \"late\"}\n  ]\n}";
        let error = parse_spec(text, SpecFormat::Json).unwrap_err();
        assert_eq!(error.location().map(|l| l.line), Some(4));
        assert_eq!(error.field(), Some("phase"));
        assert!(error.message().contains("invalid type"), "{error}");
    }

    #[test]
    fn semantic_errors_point_at_the_offending_key() {
        let text = TOML_SPEC.replace("max_steps = 30", "max_steps = 0");
        let error = parse_and_validate(&text, SpecFormat::Toml, &builtin_registry()).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::InvalidConfig);
        assert_eq!(error.processor(), Some("limit"));
        assert_eq!(error.field(), Some("config.max_steps"));
        assert_eq!(
            error.location(),
            Some(Location {
                line: 9,
                column: 12
            })
        );

        let text = TOML_SPEC.replace("\"tool_parser\"", "\"tool_parsr\"");
        let error = parse_and_validate(&text, SpecFormat::Toml, &builtin_registry()).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::UnknownKind);
        assert_eq!(error.location().map(|l| l.line), Some(13));
    }

    #[test]
    fn a_duplicate_id_is_located_where_it_repeats() {
        let text = TOML_SPEC.replace("id = \"parser\"", "id = \"limit\"");
        let error = parse_and_validate(&text, SpecFormat::Toml, &builtin_registry()).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::DuplicateId);
        assert_eq!(
            error.location(),
            Some(Location {
                line: 12,
                column: 1
            })
        );
    }

    #[test]
    fn unknown_tables_and_bad_tokens_are_named_plainly() {
        let text = TOML_SPEC.replace(
            "[[processor]]\nid = \"parser\"",
            "[[processr]]\nid = \"parser\"",
        );
        let error = parse_spec(&text, SpecFormat::Toml).unwrap_err();
        assert_eq!(error.field(), Some("processr"));
        let error = parse_spec("{\"name\": \"x\" \"envs\": []}", SpecFormat::Json).unwrap_err();
        assert_eq!(error.field(), Some("name"));
        assert_eq!(error.location().map(|l| l.line), Some(1));
    }

    #[test]
    fn location_counts_characters() {
        assert_eq!(location_of("ab\ncé=", 6), Location { line: 2, column: 3 });
        assert_eq!(
            offset_of("ab\ncé=", Location { line: 2, column: 3 }),
            Some(6)
        );
    }

    #[test]
    fn short_hash_is_twelve_digits() {
        assert_eq!(short_hash("0123456789abcdef"), "0123456789ab");
    }
}
