//! A small reader for the Python literals in ALFWorld's `gen/constants.py` and
//! `gen/goal_library.py`, so Kiln reads those files as shipped without running Python.
//!
//! It understands exactly what those files use for the names Kiln needs: strings (single,
//! double and triple quoted), integers, lists, tuples, sets, dicts, `range(a, b)` and
//! `list(range(a, b))`, and these top-level statements on a name:
//! `NAME = <literal>`, `NAME.extend(<literal>)`, `NAME['k'] = NAME['j']` and `del NAME['k']`.
//! Anything else in the file is skipped. Errors name the file, the line and what was expected.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{EnvError, EnvErrorKind};

/// A Python value Kiln reads from the ALFWorld sources.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    Str(String),
    Int(i64),
    /// A list or a tuple.
    List(Vec<PyValue>),
    /// A set, in source order (duplicates kept as written; callers dedupe).
    Set(Vec<PyValue>),
    /// A dict with string keys, in source order.
    Dict(Vec<(String, PyValue)>),
}

impl PyValue {
    /// The items of a list, tuple or set.
    pub fn items(&self) -> Option<&[PyValue]> {
        match self {
            PyValue::List(items) | PyValue::Set(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            PyValue::Int(value) => Some(*value),
            _ => None,
        }
    }

    /// The value of `key` in a dict.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(entries) => entries
                .iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// The items of a list/set as strings, or `None` if any item is not a string.
    pub fn strings(&self) -> Option<Vec<String>> {
        self.items()?
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect()
    }
}

/// The module-level names of a Python source, evaluated with the statements this reader knows.
#[derive(Debug, Default)]
pub struct PyModule {
    names: BTreeMap<String, PyValue>,
}

impl PyModule {
    /// Evaluates the statements of `source` (read from `path`, named in errors) that assign,
    /// extend, alias or delete one of `wanted`.
    pub fn parse(path: &Path, source: &str, wanted: &[&str]) -> Result<Self, EnvError> {
        let mut module = PyModule::default();
        let mut offset = 0;
        for line in source.split_inclusive('\n') {
            let start = offset;
            offset += line.len();
            let Some(name) = wanted.iter().find(|name| starts_statement_on(line, name)) else {
                continue;
            };
            let mut parser = Parser {
                path,
                src: source.as_bytes(),
                pos: start,
            };
            parser.statement(&mut module, name)?;
        }
        Ok(module)
    }

    /// The value bound to `name`, or a [`EnvErrorKind::Data`] error naming the file.
    pub fn get(&self, path: &Path, name: &str) -> Result<&PyValue, EnvError> {
        self.names.get(name).ok_or_else(|| {
            data_error(format!(
                "{}: expected a module-level assignment to `{name}`, found none",
                path.display()
            ))
        })
    }
}

/// Whether `line` is a top-level statement on `name` (`NAME =`, `NAME.`, `NAME[`, `del NAME[`).
fn starts_statement_on(line: &str, name: &str) -> bool {
    let rest = line.strip_prefix("del ").unwrap_or(line);
    let Some(after) = rest.strip_prefix(name) else {
        return false;
    };
    let after = after.trim_start_matches([' ', '\t']);
    after.starts_with('=') && !after.starts_with("==")
        || after.starts_with('.')
        || after.starts_with('[')
}

pub(crate) fn data_error(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::Data, message)
}

struct Parser<'a> {
    path: &'a Path,
    src: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, expected: &str) -> EnvError {
        let line = self.src[..self.pos.min(self.src.len())]
            .iter()
            .filter(|byte| **byte == b'\n')
            .count()
            + 1;
        let found: String = String::from_utf8_lossy(&self.src[self.pos.min(self.src.len())..])
            .chars()
            .take(24)
            .collect();
        data_error(format!(
            "{}:{line}: expected {expected}, found `{}`",
            self.path.display(),
            found.replace('\n', "\\n")
        ))
    }

    fn statement(&mut self, module: &mut PyModule, name: &str) -> Result<(), EnvError> {
        let is_del = self.eat_word("del");
        self.skip_space();
        if !self.eat_word(name) {
            return Err(self.error(&format!("a statement on `{name}`")));
        }
        self.skip_space();
        if is_del {
            let key = self.subscript()?;
            let value = module.names.get_mut(name);
            let Some(PyValue::Dict(entries)) = value else {
                return Err(self.error(&format!("`{name}` to be a dict before `del`")));
            };
            entries.retain(|(entry, _)| *entry != key);
            return Ok(());
        }
        match self.peek() {
            Some(b'=') => {
                self.pos += 1;
                let value = self.value()?;
                module.names.insert(name.to_string(), value);
            }
            Some(b'.') => {
                self.pos += 1;
                if !self.eat_word("extend") {
                    // Other methods (`.update`, `.append`) are not used on the names Kiln reads.
                    return Err(self.error(&format!("`{name}.extend(...)`")));
                }
                self.expect(b'(')?;
                let extra = self.value()?;
                self.expect(b')')?;
                let Some(PyValue::List(items)) = module.names.get_mut(name) else {
                    return Err(self.error(&format!("`{name}` to be a list before `.extend`")));
                };
                let Some(extra) = extra.items() else {
                    return Err(self.error("a list argument to `.extend`"));
                };
                items.extend(extra.iter().cloned());
            }
            Some(b'[') => {
                let key = self.subscript()?;
                self.expect(b'=')?;
                self.skip_space();
                // `NAME['k'] = NAME['j']` (an alias) or `NAME['k'] = <literal>`.
                let value = if self.eat_word(name) {
                    let source_key = self.subscript()?;
                    module
                        .names
                        .get(name)
                        .and_then(|dict| dict.get(&source_key))
                        .cloned()
                        .ok_or_else(|| self.error(&format!("`{name}['{source_key}']` to exist")))?
                } else {
                    self.value()?
                };
                let Some(PyValue::Dict(entries)) = module.names.get_mut(name) else {
                    return Err(
                        self.error(&format!("`{name}` to be a dict before item assignment"))
                    );
                };
                entries.retain(|(entry, _)| *entry != key);
                entries.push((key, value));
            }
            _ => return Err(self.error(&format!("`=`, `.extend(` or `[` after `{name}`"))),
        }
        Ok(())
    }

    fn subscript(&mut self) -> Result<String, EnvError> {
        self.expect(b'[')?;
        let PyValue::Str(key) = self.value()? else {
            return Err(self.error("a string subscript"));
        };
        self.expect(b']')?;
        Ok(key)
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.src.get(self.pos).copied()
    }

    /// Skips blanks, newlines, backslash continuations and comments.
    fn skip_space(&mut self) {
        while let Some(&byte) = self.src.get(self.pos) {
            match byte {
                b' ' | b'\t' | b'\r' | b'\n' => self.pos += 1,
                b'\\' if self.src.get(self.pos + 1) == Some(&b'\n') => self.pos += 2,
                b'#' => {
                    while self.src.get(self.pos).is_some_and(|byte| *byte != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), EnvError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            return Ok(());
        }
        Err(self.error(&format!("`{}`", byte as char)))
    }

    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_space();
        let end = self.pos + word.len();
        let matches = self.src.get(self.pos..end) == Some(word.as_bytes())
            && !self
                .src
                .get(end)
                .is_some_and(|byte| byte.is_ascii_alphanumeric() || *byte == b'_');
        if matches {
            self.pos = end;
        }
        matches
    }

    fn value(&mut self) -> Result<PyValue, EnvError> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(PyValue::Str),
            Some(b'[') => self.sequence(b'[', b']').map(PyValue::List),
            Some(b'(') => self.sequence(b'(', b')').map(PyValue::List),
            Some(b'{') => self.brace(),
            Some(byte) if byte.is_ascii_digit() || byte == b'-' => self.int().map(PyValue::Int),
            _ if self.eat_word("list") => {
                self.expect(b'(')?;
                let inner = self.value()?;
                self.expect(b')')?;
                Ok(inner)
            }
            _ if self.eat_word("range") => self.range(),
            _ => Err(self.error("a Python literal (string, int, list, tuple, set, dict, range)")),
        }
    }

    fn range(&mut self) -> Result<PyValue, EnvError> {
        self.expect(b'(')?;
        let start = self.int()?;
        self.expect(b',')?;
        let end = self.int()?;
        self.expect(b')')?;
        if end < start || end - start > 100_000 {
            return Err(self.error("a range of at most 100000 increasing integers"));
        }
        Ok(PyValue::List((start..end).map(PyValue::Int).collect()))
    }

    fn int(&mut self) -> Result<i64, EnvError> {
        self.skip_space();
        let start = self.pos;
        if self.src.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        while self.src.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.src[start..self.pos])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                self.pos = start;
                self.error("an integer")
            })
    }

    fn sequence(&mut self, open: u8, close: u8) -> Result<Vec<PyValue>, EnvError> {
        self.expect(open)?;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(byte) if byte == close => {}
                _ => return Err(self.error(&format!("`,` or `{}`", close as char))),
            }
        }
    }

    /// `{...}`: a dict (string keys) or a set, decided by the first item.
    fn brace(&mut self) -> Result<PyValue, EnvError> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(PyValue::Dict(Vec::new()));
        }
        let first = self.value()?;
        if self.peek() != Some(b':') {
            let mut items = vec![first];
            loop {
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        return Ok(PyValue::Set(items));
                    }
                    _ => return Err(self.error("`,` or `}` in a set")),
                }
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(PyValue::Set(items));
                }
                items.push(self.value()?);
            }
        }
        let mut entries = Vec::new();
        let mut key = first;
        loop {
            let PyValue::Str(name) = key else {
                return Err(self.error("a string dict key"));
            };
            self.expect(b':')?;
            entries.push((name, self.value()?));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.error("`,` or `}` in a dict")),
            }
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(PyValue::Dict(entries));
            }
            key = self.value()?;
        }
    }

    fn string(&mut self) -> Result<String, EnvError> {
        let quote = self.src[self.pos];
        let triple = self.src.get(self.pos..self.pos + 3) == Some(&[quote, quote, quote]);
        let delimiter_len = if triple { 3 } else { 1 };
        self.pos += delimiter_len;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.src.get(self.pos) else {
                return Err(self.error("the end of a string literal"));
            };
            if byte == quote
                && (!triple || self.src.get(self.pos..self.pos + 3) == Some(&[quote, quote, quote]))
            {
                self.pos += delimiter_len;
                break;
            }
            if byte == b'\n' && !triple {
                return Err(self.error("the end of a string literal before the line ends"));
            }
            if byte == b'\\' {
                let escaped = self.src.get(self.pos + 1).copied();
                self.pos += 2;
                match escaped {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'\n') => {}
                    Some(other @ (b'\\' | b'\'' | b'"')) => out.push(other),
                    Some(other) => out.extend([b'\\', other]),
                    None => return Err(self.error("an escaped character")),
                }
                continue;
            }
            out.push(byte);
            self.pos += 1;
        }
        String::from_utf8(out).map_err(|_| self.error("a UTF-8 string literal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str, wanted: &[&str]) -> Result<PyModule, EnvError> {
        PyModule::parse(Path::new("constants.py"), source, wanted)
    }

    #[test]
    fn reads_assignments_extends_aliases_and_deletes() {
        let source = r#"
import os
DEBUG = True   # not wanted, skipped
NUMS = list(range(7, 10))  # train
NUMS.extend(list(range(1, 3)))
TYPES = {"A": range(1, 3),
         'B': range(5, 6)}
SETS = {
    'TableTop': {'Apple',  # fruit
                 "Book"},
    'Fridge': {'Egg'},
}
SETS['Desk'] = SETS['TableTop']
del SETS['TableTop']
G = \
{
    'pddl': '''
    (:goal "x")
    ''',
    'templates': ['put a {obj} in {recep}',
                  'put some {obj} on {recep}']
}
"#;
        let module = parse(source, &["NUMS", "TYPES", "SETS", "G"]).unwrap();
        let path = Path::new("constants.py");
        let nums: Vec<i64> = module
            .get(path, "NUMS")
            .unwrap()
            .items()
            .unwrap()
            .iter()
            .map(|value| value.as_int().unwrap())
            .collect();
        assert_eq!(nums, [7, 8, 9, 1, 2]);
        let types = module.get(path, "TYPES").unwrap();
        assert_eq!(types.get("B").unwrap().items().unwrap().len(), 1);
        let sets = module.get(path, "SETS").unwrap();
        assert!(sets.get("TableTop").is_none());
        assert_eq!(
            sets.get("Desk").unwrap().strings().unwrap(),
            ["Apple", "Book"]
        );
        let goal = module.get(path, "G").unwrap();
        assert_eq!(
            goal.get("templates").unwrap().strings().unwrap(),
            ["put a {obj} in {recep}", "put some {obj} on {recep}"]
        );
        assert!(
            goal.get("pddl")
                .unwrap()
                .as_str()
                .unwrap()
                .contains("(:goal \"x\")")
        );
        assert!(module.get(path, "DEBUG").is_err());
    }

    #[test]
    fn errors_name_the_file_line_and_expectation() {
        let error = parse("A = [1, 2\nB = 3\n", &["A"]).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        let text = error.to_string();
        assert!(
            text.starts_with("constants.py:2: expected `,` or `]`"),
            "{text}"
        );

        let error = parse("A = 'open\n", &["A"]).unwrap_err();
        assert!(
            error.to_string().contains("end of a string literal"),
            "{error}"
        );

        let error = parse("A = foo(1)\n", &["A"]).unwrap_err();
        assert!(error.to_string().contains("a Python literal"), "{error}");

        let error = PyModule::default()
            .get(Path::new("x/constants.py"), "OBJECTS")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("x/constants.py: expected a module-level assignment to `OBJECTS`"),
            "{error}"
        );
    }
}
