//! Python semantics for JSON values, shared by the retail and airline tools.
//!
//! The reference `server.py` tools are Python on the raw JSON DB, so their results and error
//! texts are CPython 3.11's: argument binding naming the reference function, `KeyError` as the
//! quoted key, `TypeError`s naming Python types, truthiness, `==` across `int`/`float`/`bool`,
//! and `int`/`float` arithmetic that keeps the two distinct. Both domains call this one
//! implementation so that a fix to a message lands in both. The reference servers' MCP calling
//! convention (the `state_key` argument, the tool schema shape) lives here too, since both domains
//! share it and it is what [`bind`] binds against.

use kiln_protocol::ToolSchema;
use serde_json::{Map, Number, Value, json};

use super::ToolError;
use super::pyjson::{float_repr, py_repr, py_round};

/// The argument the reference's MCP layer strips before calling a tool (it names the state
/// namespace there; Kiln gives each episode its own DB instead).
const STATE_KEY_ARG: &str = "state_key";

/// A domain's tool dispatcher: runs the tool `name` on the DB with the arguments as bound.
pub type Dispatch = fn(&mut Value, &str, &Map<String, Value>) -> Result<Value, ToolError>;

/// Calls a tool as the reference's MCP layer does: a `state_key` argument is dropped, the rest is
/// passed to `dispatch`. A failure is logged at debug level with the domain and tool.
pub fn call_reference_tool(
    domain: &'static str,
    dispatch: Dispatch,
    db: &mut Value,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    let result = if args.contains_key(STATE_KEY_ARG) {
        let mut public = args.clone();
        public.shift_remove(STATE_KEY_ARG);
        dispatch(db, name, &public)
    } else {
        dispatch(db, name, args)
    };
    if let Err(error) = &result {
        tracing::debug!(domain, tool = name, error = %error, "tau2 tool failed");
    }
    result
}

/// The reference's `_tool_schema`: a closed JSON-schema object of `properties`, of which
/// `required` are required.
pub fn tool_schema(
    name: &str,
    description: &str,
    properties: Map<String, Value>,
    required: &[&str],
) -> ToolSchema {
    ToolSchema {
        name: name.to_string(),
        description: description.to_string(),
        parameters: json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }),
    }
}

/// Binds keyword arguments the way Python binds `function(db, **arguments)`: an unknown keyword
/// (or `db` itself, when the function takes it) fails first, in argument order, then the missing
/// parameters are listed together. The messages are CPython 3.11's, naming the reference's
/// function.
pub fn bind<'a, const N: usize>(
    function: &str,
    takes_db: bool,
    params: [&str; N],
    args: &'a Map<String, Value>,
) -> Result<[&'a Value; N], ToolError> {
    for key in args.keys() {
        if takes_db && key == "db" {
            return Err(ToolError::new(format!(
                "{function}() got multiple values for argument 'db'"
            )));
        }
        if !params.contains(&key.as_str()) {
            return Err(ToolError::new(format!(
                "{function}() got an unexpected keyword argument '{key}'"
            )));
        }
    }
    let missing: Vec<&str> = params
        .iter()
        .copied()
        .filter(|param| !args.contains_key(*param))
        .collect();
    if !missing.is_empty() {
        return Err(ToolError::new(missing_arguments_message(
            function, &missing,
        )));
    }
    Ok(params.map(|param| args.get(param).unwrap_or(&Value::Null)))
}

/// CPython's `missing N required positional argument(s): 'a', 'b', and 'c'`.
pub fn missing_arguments_message(function: &str, missing: &[&str]) -> String {
    let quoted: Vec<String> = missing.iter().map(|name| format!("'{name}'")).collect();
    let names = match quoted.as_slice() {
        [one] => one.clone(),
        [first, second] => format!("{first} and {second}"),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
        [] => String::new(),
    };
    let plural = if missing.len() == 1 {
        "argument"
    } else {
        "arguments"
    };
    format!(
        "{function}() missing {} required positional {plural}: {names}",
        missing.len()
    )
}

/// Python's type name of a JSON value.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(number) if number.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `KeyError(key)`: its message is the key's `repr`.
pub fn key_error(key: &Value) -> ToolError {
    ToolError::new(py_repr(key))
}

pub fn key_error_str(key: &str) -> ToolError {
    key_error(&Value::String(key.to_string()))
}

/// The string key of a dict lookup; `TypeError` for unhashable keys, `KeyError` for keys
/// that are hashable but can never be in a JSON object (numbers, booleans, `None`).
pub fn as_key(key: &Value) -> Result<&str, ToolError> {
    match key {
        Value::String(text) => Ok(text),
        Value::Array(_) | Value::Object(_) => Err(ToolError::new(format!(
            "unhashable type: '{}'",
            type_name(key)
        ))),
        _ => Err(key_error(key)),
    }
}

/// `key in container` for a dict with string keys: the matching key, if any. Unhashable keys are
/// a `TypeError`; other non-strings are simply absent.
pub fn find_key<'k>(container: &Value, key: &'k Value) -> Result<Option<&'k str>, ToolError> {
    let Value::Object(map) = container else {
        return Err(ToolError::new(format!(
            "argument of type '{}' is not iterable",
            type_name(container)
        )));
    };
    match key {
        Value::String(text) => Ok(map.contains_key(text.as_str()).then_some(text.as_str())),
        Value::Array(_) | Value::Object(_) => Err(ToolError::new(format!(
            "unhashable type: '{}'",
            type_name(key)
        ))),
        _ => Ok(None),
    }
}

/// `container.get(key)`.
pub fn dict_get<'a>(container: &'a Value, key: &Value) -> Result<Option<&'a Value>, ToolError> {
    let Value::Object(map) = container else {
        return Err(ToolError::new(format!(
            "'{}' object has no attribute 'get'",
            type_name(container)
        )));
    };
    match key {
        Value::String(text) => Ok(map.get(text.as_str())),
        Value::Array(_) | Value::Object(_) => Err(ToolError::new(format!(
            "unhashable type: '{}'",
            type_name(key)
        ))),
        _ => Ok(None),
    }
}

/// The error of `container[key]` with a string key that is absent or a container that is no
/// dict.
fn subscript_error(container: &Value, key: &str) -> ToolError {
    match container {
        Value::Object(_) => key_error_str(key),
        Value::Array(_) => ToolError::new("list indices must be integers or slices, not str"),
        Value::String(_) => ToolError::new("string indices must be integers, not 'str'"),
        other => ToolError::new(format!(
            "'{}' object is not subscriptable",
            type_name(other)
        )),
    }
}

/// `container[key]` with a string key.
pub fn subscript<'a>(container: &'a Value, key: &str) -> Result<&'a Value, ToolError> {
    if let Value::Object(map) = container
        && let Some(value) = map.get(key)
    {
        return Ok(value);
    }
    Err(subscript_error(container, key))
}

/// `container[key]` with a string key, for assignment through it.
pub fn subscript_mut<'a>(container: &'a mut Value, key: &str) -> Result<&'a mut Value, ToolError> {
    let present = matches!(&*container, Value::Object(map) if map.contains_key(key));
    if !present {
        return Err(subscript_error(container, key));
    }
    container.get_mut(key).ok_or_else(|| key_error_str(key))
}

/// `container[key]` with any key value (a dict is the only container indexed this way).
pub fn subscript_by<'a>(container: &'a Value, key: &Value) -> Result<&'a Value, ToolError> {
    if !container.is_object() {
        return match key {
            Value::String(text) => subscript(container, text),
            _ => Err(ToolError::new(format!(
                "'{}' object is not subscriptable",
                type_name(container)
            ))),
        };
    }
    let text = as_key(key)?;
    subscript(container, text)
}

/// `len(value)`.
pub fn py_len(value: &Value) -> Result<usize, ToolError> {
    match value {
        Value::Array(items) => Ok(items.len()),
        Value::Object(map) => Ok(map.len()),
        Value::String(text) => Ok(text.chars().count()),
        other => Err(ToolError::new(format!(
            "object of type '{}' has no len()",
            type_name(other)
        ))),
    }
}

/// `for item in value`: list items, dict keys or string characters.
pub fn iterate(value: &Value) -> Result<Vec<Value>, ToolError> {
    match value {
        Value::Array(items) => Ok(items.clone()),
        Value::Object(map) => Ok(map.keys().map(|key| Value::String(key.clone())).collect()),
        Value::String(text) => Ok(text
            .chars()
            .map(|ch| Value::String(ch.to_string()))
            .collect()),
        other => Err(ToolError::new(format!(
            "'{}' object is not iterable",
            type_name(other)
        ))),
    }
}

/// `needle in haystack` where the haystack should be a string.
pub fn contains_text(haystack: &Value, needle: &str) -> Result<bool, ToolError> {
    match haystack {
        Value::String(text) => Ok(text.contains(needle)),
        Value::Array(items) => Ok(items.iter().any(|item| item == needle)),
        Value::Object(map) => Ok(map.contains_key(needle)),
        other => Err(ToolError::new(format!(
            "argument of type '{}' is not iterable",
            type_name(other)
        ))),
    }
}

/// `value.lower()`.
pub fn lower(value: &Value) -> Result<String, ToolError> {
    match value {
        Value::String(text) => Ok(text.to_lowercase()),
        other => Err(ToolError::new(format!(
            "'{}' object has no attribute 'lower'",
            type_name(other)
        ))),
    }
}

/// Python truthiness.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(_) => Num::of(value).is_some_and(|number| !number.py_eq(Num::Int(0))),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// `left == right`: numbers (and booleans) compare by value, containers element-wise.
pub fn py_eq(left: &Value, right: &Value) -> bool {
    if let (Some(left), Some(right)) = (Num::of(left), Num::of(right)) {
        return left.py_eq(right);
    }
    match (left, right) {
        (Value::Null, Value::Null) => true,
        (Value::String(left), Value::String(right)) => left == right,
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(l, r)| py_eq(l, r))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left
                    .iter()
                    .all(|(key, l)| right.get(key).is_some_and(|r| py_eq(l, r)))
        }
        _ => false,
    }
}

/// `left < right` for numbers or strings; `TypeError` otherwise.
pub fn py_lt(left: &Value, right: &Value) -> Result<bool, ToolError> {
    if let (Some(l), Some(r)) = (Num::of(left), Num::of(right)) {
        return Ok(l.lt(r));
    }
    match (left, right) {
        (Value::String(l), Value::String(r)) => Ok(l < r),
        _ => Err(ToolError::new(format!(
            "'<' not supported between instances of '{}' and '{}'",
            type_name(left),
            type_name(right)
        ))),
    }
}

/// `left < right` where the right side is an already computed number.
pub fn num_lt(left: &Value, right: Num) -> Result<bool, ToolError> {
    match Num::of(left) {
        Some(l) => Ok(l.lt(right)),
        None => Err(ToolError::new(format!(
            "'<' not supported between instances of '{}' and '{}'",
            type_name(left),
            right.type_name()
        ))),
    }
}

/// `left * right`.
pub fn mul(left: &Value, right: &Value) -> Result<Num, ToolError> {
    binary(left, right, "*")
}

/// `left - right`; `op` names the operator in the error (`-` or `-=`).
pub fn sub(left: &Value, right: &Value, op: &str) -> Result<Num, ToolError> {
    binary(left, right, op)
}

/// `-value`.
pub fn neg(value: &Value) -> Result<Num, ToolError> {
    match Num::of(value) {
        Some(number) => Ok(-number),
        None => Err(ToolError::new(format!(
            "bad operand type for unary -: '{}'",
            type_name(value)
        ))),
    }
}

/// `max(0, value)`: Python keeps the first of equal items, so a non-positive value gives the
/// integer `0`.
pub fn max_with_zero(value: Num) -> Result<Num, ToolError> {
    if Num::Int(0).lt(value) {
        Ok(value)
    } else {
        Ok(Num::Int(0))
    }
}

fn binary(left: &Value, right: &Value, op: &str) -> Result<Num, ToolError> {
    match (Num::of(left), Num::of(right)) {
        (Some(l), Some(r)) => l.apply(r, op),
        _ => Err(unsupported(op, type_name(left), type_name(right))),
    }
}

fn unsupported(op: &str, left: &str, right: &str) -> ToolError {
    ToolError::new(format!(
        "unsupported operand type(s) for {op}: '{left}' and '{right}'"
    ))
}

/// A Python number: `int` (booleans count as 0 and 1) or `float`. The two stay distinct so results
/// print as Python prints them (`100` vs `100.0`). Partial: Python's `int` is unbounded, this one
/// holds 128 bits and reports `integer overflow in {op}` beyond.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    /// The number a JSON value holds (booleans are ints, as in Python).
    pub fn of(value: &Value) -> Option<Num> {
        match value {
            Value::Bool(flag) => Some(Num::Int(i128::from(*flag))),
            Value::Number(number) if number.is_f64() => number.as_f64().map(Num::Float),
            Value::Number(number) => number
                .as_i64()
                .map(i128::from)
                .or_else(|| number.as_u64().map(i128::from))
                .map(Num::Int),
            _ => None,
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            Num::Int(_) => "int",
            Num::Float(_) => "float",
        }
    }

    /// The number in `value`, or the `TypeError` Python raises using it with `op` against a
    /// float (the retail tools' prices and balances).
    pub fn from_value(value: &Value, op: &str) -> Result<Num, ToolError> {
        Num::of(value).ok_or_else(|| unsupported(op, type_name(value), "float"))
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(int) => int as f64,
            Num::Float(float) => float,
        }
    }

    /// `abs(self)`.
    pub fn abs(self) -> Num {
        match self {
            Num::Int(int) => Num::Int(int.saturating_abs()),
            Num::Float(float) => Num::Float(float.abs()),
        }
    }

    /// `round(self, ndigits)`: an int stays an int.
    pub fn round(self, ndigits: i32) -> Num {
        match self {
            Num::Int(_) => self,
            Num::Float(float) => Num::Float(py_round(float, ndigits)),
        }
    }

    /// Back to JSON: an `int` stays an integer, a `float` a float (`100.0`).
    pub fn to_value(self) -> Result<Value, ToolError> {
        match self {
            Num::Int(int) => i64::try_from(int)
                .map(Value::from)
                .or_else(|_| u64::try_from(int).map(Value::from))
                .map_err(|_| ToolError::new("integer too large for JSON")),
            Num::Float(float) => Number::from_f64(float)
                .map(Value::Number)
                .ok_or_else(|| ToolError::new("float overflow")),
        }
    }

    /// `str(number)`.
    pub fn py_str(self) -> String {
        match self {
            Num::Int(int) => int.to_string(),
            Num::Float(float) if float.is_infinite() => {
                if float > 0.0 {
                    "inf".to_string()
                } else {
                    "-inf".to_string()
                }
            }
            Num::Float(float) if float.is_nan() => "nan".to_string(),
            Num::Float(float) => float_repr(float),
        }
    }

    pub fn py_eq(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(l), Num::Int(r)) => l == r,
            (l, r) => l.as_f64() == r.as_f64(),
        }
    }

    pub fn lt(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(l), Num::Int(r)) => l < r,
            (l, r) => l.as_f64() < r.as_f64(),
        }
    }

    /// `self + other` (`op` names the operator in errors).
    pub fn add(self, other: Num, op: &str) -> Result<Num, ToolError> {
        self.apply(other, if op == "+=" { "+=" } else { "+" })
    }

    /// `self - other` (`op` names the operator in errors).
    pub fn sub(self, other: Num, op: &str) -> Result<Num, ToolError> {
        self.apply(other, if op == "-=" { "-=" } else { "-" })
    }

    /// `self + value` where the value may not be a number.
    pub fn add_value(self, value: &Value, op: &str) -> Result<Num, ToolError> {
        match Num::of(value) {
            Some(other) => self.apply(other, op),
            None => Err(unsupported(op, self.type_name(), type_name(value))),
        }
    }

    fn apply(self, other: Num, op: &str) -> Result<Num, ToolError> {
        let symbol = op.trim_end_matches('=');
        if let (Num::Int(l), Num::Int(r)) = (self, other) {
            let result = match symbol {
                "+" => l.checked_add(r),
                "-" => l.checked_sub(r),
                "*" => l.checked_mul(r),
                _ => None,
            };
            return result
                .map(Num::Int)
                .ok_or_else(|| ToolError::new(format!("integer overflow in {op}")));
        }
        let (l, r) = (self.as_f64(), other.as_f64());
        match symbol {
            "+" => Ok(Num::Float(l + r)),
            "-" => Ok(Num::Float(l - r)),
            "*" => Ok(Num::Float(l * r)),
            _ => Err(ToolError::new(format!("unsupported operator {op}"))),
        }
    }
}

/// `-number`.
impl std::ops::Neg for Num {
    type Output = Num;

    fn neg(self) -> Num {
        match self {
            Num::Int(int) => Num::Int(int.saturating_neg()),
            Num::Float(float) => Num::Float(-float),
        }
    }
}

/// An argument used as a sequence (`item_ids`): a list, a string (its characters) or a dict (its
/// keys), as Python iterates them.
pub struct PySeq {
    items: Vec<Value>,
    is_dict: bool,
}

impl PySeq {
    /// `for item in value` (and `len(value)`, which accepts the same types).
    pub fn of(value: &Value) -> Result<PySeq, ToolError> {
        Ok(PySeq {
            items: iterate(value)?,
            is_dict: value.is_object(),
        })
    }

    /// A sequence whose `len()` Python takes before iterating it (`new_item_ids`): the same
    /// types, with `len`'s error message.
    pub fn sized(value: &Value) -> Result<PySeq, ToolError> {
        py_len(value)?;
        PySeq::of(value)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn first(&self) -> Option<&Value> {
        self.items.first()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Value> {
        self.items.iter()
    }

    pub fn into_values(self) -> Vec<Value> {
        self.items
    }

    /// `seq.count(value)`; a dict has no `count`.
    pub fn count(&self, value: &Value) -> Result<usize, ToolError> {
        if self.is_dict {
            return Err(ToolError::new("'dict' object has no attribute 'count'"));
        }
        Ok(self.items.iter().filter(|item| py_eq(item, value)).count())
    }

    /// `sorted(seq)` as a JSON list. Strings sort by code point and numbers by value; a mix is
    /// Python's `TypeError`.
    pub fn sorted(&self) -> Result<Value, ToolError> {
        let mut items = self.items.clone();
        if items.iter().all(Value::is_string) {
            items.sort_by(|left, right| left.as_str().cmp(&right.as_str()));
            return Ok(Value::Array(items));
        }
        if items.iter().all(|item| Num::of(item).is_some()) {
            items.sort_by(|left, right| {
                let (Some(l), Some(r)) = (Num::of(left), Num::of(right)) else {
                    return std::cmp::Ordering::Equal;
                };
                l.as_f64().total_cmp(&r.as_f64())
            });
            return Ok(Value::Array(items));
        }
        let first = &items[0];
        let other = items
            .iter()
            .find(|item| type_name(item) != type_name(first))
            .unwrap_or(first);
        Err(ToolError::new(format!(
            "'<' not supported between instances of '{}' and '{}'",
            type_name(other),
            type_name(first)
        )))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn bind_reports_like_cpython_in_argument_order() {
        let given = args(json!({"b": 2, "a": 1}));
        let bound = bind("f_state", true, ["a", "b"], &given);
        assert_eq!(
            bound.map(|[a, b]| (a.clone(), b.clone())),
            Ok((json!(1), json!(2)))
        );
        let error = bind("f_state", true, ["a"], &args(json!({"db": 1, "x": 2}))).unwrap_err();
        assert_eq!(error.0, "f_state() got multiple values for argument 'db'");
        // A function without `db` treats it as any other unknown keyword.
        let error = bind("f_state", false, ["a"], &args(json!({"db": 1}))).unwrap_err();
        assert_eq!(error.0, "f_state() got an unexpected keyword argument 'db'");
        let error = bind("f_state", true, ["a", "b"], &args(json!({"b": 1}))).unwrap_err();
        assert_eq!(
            error.0,
            "f_state() missing 1 required positional argument: 'a'"
        );
    }

    #[test]
    fn subscript_errors_name_python_types() {
        let record = json!({"k": [1]});
        assert_eq!(subscript(&record, "k"), Ok(&json!([1])));
        assert_eq!(subscript(&record, "it's").unwrap_err().0, "\"it's\"");
        assert_eq!(
            subscript(&json!([1]), "k").unwrap_err().0,
            "list indices must be integers or slices, not str"
        );
        assert_eq!(
            subscript(&json!(1.5), "k").unwrap_err().0,
            "'float' object is not subscriptable"
        );
        let mut record = record;
        assert_eq!(subscript_mut(&mut record, "x").unwrap_err().0, "'x'");
        assert_eq!(
            subscript_by(&json!({"1": 0}), &json!(1)).unwrap_err().0,
            "1"
        );
        assert_eq!(
            find_key(&json!({}), &json!(["k"])).unwrap_err().0,
            "unhashable type: 'list'"
        );
    }

    #[test]
    fn numbers_compare_across_bool_int_and_float() {
        assert!(py_eq(&json!(1), &json!(1.0)));
        assert!(py_eq(&json!(true), &json!(1)));
        assert!(py_eq(&json!({"a": [0, 2.0]}), &json!({"a": [false, 2]})));
        assert!(!py_eq(&json!("1"), &json!(1)));
        assert!(!truthy(&json!(0.0)));
        assert!(!truthy(&json!("")));
        assert!(truthy(&json!([0])));
        assert_eq!(
            py_lt(&json!("a"), &json!(1)).unwrap_err().0,
            "'<' not supported between instances of 'str' and 'int'"
        );
    }

    #[test]
    fn arithmetic_keeps_int_and_float_apart() {
        let sum = Num::Int(2).add(Num::Int(3), "+=").unwrap();
        assert_eq!(sum.to_value(), Ok(json!(5)));
        let mixed = Num::Int(2).add(Num::Float(0.5), "+").unwrap();
        assert_eq!(mixed.py_str(), "2.5");
        assert_eq!(Num::Float(100.0).py_str(), "100.0");
        assert_eq!(
            mul(&json!(50), &json!(2)).unwrap().to_value(),
            Ok(json!(100))
        );
        assert_eq!(
            mul(&json!("x"), &json!(2)).unwrap_err().0,
            "unsupported operand type(s) for *: 'str' and 'int'"
        );
        assert_eq!(
            Num::Int(i128::MAX).add(Num::Int(1), "+=").unwrap_err().0,
            "integer overflow in +="
        );
        assert_eq!(Num::Float(2.675).round(2), Num::Float(2.67));
        assert_eq!(-Num::Int(3), Num::Int(-3));
        assert_eq!(max_with_zero(Num::Float(-1.5)), Ok(Num::Int(0)));
    }

    #[test]
    fn sequences_iterate_as_python_does() {
        let keys = PySeq::of(&json!({"b": 1, "a": 2})).unwrap();
        assert_eq!(keys.sorted(), Ok(json!(["a", "b"])));
        assert_eq!(
            keys.count(&json!("a")).unwrap_err().0,
            "'dict' object has no attribute 'count'"
        );
        let chars = PySeq::of(&json!("aba")).unwrap();
        assert_eq!(chars.count(&json!("a")), Ok(2));
        assert_eq!(
            PySeq::sized(&json!(3)).err().map(|error| error.0),
            Some("object of type 'int' has no len()".to_string())
        );
        assert_eq!(
            PySeq::of(&json!(3)).err().map(|error| error.0),
            Some("'int' object is not iterable".to_string())
        );
        assert_eq!(
            PySeq::of(&json!([2, "a"])).unwrap().sorted().unwrap_err().0,
            "'<' not supported between instances of 'str' and 'int'"
        );
    }

    #[test]
    fn reference_calls_drop_the_state_key() {
        fn echo(
            _db: &mut Value,
            name: &str,
            args: &Map<String, Value>,
        ) -> Result<Value, ToolError> {
            Ok(json!({"name": name, "args": args}))
        }
        let result = call_reference_tool(
            "test",
            echo,
            &mut Value::Null,
            "t",
            &args(json!({"state_key": "s", "x": 1})),
        );
        assert_eq!(result, Ok(json!({"name": "t", "args": {"x": 1}})));
    }
}
