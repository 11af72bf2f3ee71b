//! Python-compatible JSON text and numbers.
//!
//! τ² hashes its DB as `sha256(json.dumps(state, sort_keys=True, default=str))` and its tools
//! return `json.dumps` text and `str(...)` of Python values, so matching it byte for byte needs
//! Python's separators (`", "`, `": "`), its ASCII escaping, its float `repr` (`100.0`, `1e-05`)
//! and its correctly rounded `round(x, n)`. A JSON integer and a JSON float stay distinct
//! (`100` vs `100.0`), as they are in Python: serde_json keeps that in `Number::is_f64`.

use serde_json::{Map, Number, Value};

/// `json.dumps(value)`: keys in insertion order, `", "` and `": "`, non-ASCII escaped as `\uXXXX`.
pub fn dumps(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(
        &mut out,
        value,
        Options {
            sort_keys: false,
            ensure_ascii: true,
        },
    );
    out
}

/// `json.dumps(value, sort_keys=True)`: what τ²'s DB hash is computed over.
pub fn dumps_sorted(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(
        &mut out,
        value,
        Options {
            sort_keys: true,
            ensure_ascii: true,
        },
    );
    out
}

/// `json.dumps(value, ensure_ascii=False)`: the reference server's `_json_content`, which keeps
/// non-ASCII characters as they are.
pub fn dumps_unicode(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(
        &mut out,
        value,
        Options {
            sort_keys: false,
            ensure_ascii: false,
        },
    );
    out
}

/// Python's `repr(float)`: the shortest digits that round-trip, fixed notation when the decimal
/// exponent is in `-4..16` (always with a fractional part, `100.0`), else scientific with a signed
/// two-digit-minimum exponent (`1e-05`, `1.5e+16`). Non-finite values print as Python's `json`
/// module prints them (`Infinity`, `-Infinity`, `NaN`), since that is where this text ends up.
pub fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            "Infinity".to_string()
        } else {
            "-Infinity".to_string()
        };
    }
    let scientific = shortest_scientific(x);
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Python's `decpt`: the value is 0.DIGITS × 10^decpt.
    let decimal_point = exponent + 1;
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if decimal_point <= -4 || decimal_point > 16 {
        write_scientific(&mut out, &digits, exponent);
    } else {
        write_fixed(&mut out, &digits, decimal_point);
    }
    out
}

/// The shortest round-trip digits in scientific form (`-1.2345e-5`), chosen as Python's repr
/// chooses them. Rust's `{:e}` gives the shortest length, but when two strings of that length are
/// equally close to the value it may pick the other one (`1838179139006728.25` → `…728.3`, where
/// Python prints `…728.2`); the correctly rounded string of the same length (Rust's fixed-precision
/// formatting rounds half to even) is Python's choice whenever it round-trips.
fn shortest_scientific(x: f64) -> String {
    let shortest = format!("{x:e}");
    let digit_count = shortest.split_once('e').map_or(0, |(mantissa, _)| {
        mantissa.chars().filter(char::is_ascii_digit).count()
    });
    let rounded = format!("{:.*e}", digit_count.saturating_sub(1), x);
    if rounded.parse::<f64>().ok() == Some(x) {
        rounded
    } else {
        shortest
    }
}

fn write_scientific(out: &mut String, digits: &str, exponent: i32) {
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    out.push('e');
    out.push(if exponent < 0 { '-' } else { '+' });
    let magnitude = exponent.unsigned_abs();
    if magnitude < 10 {
        out.push('0');
    }
    out.push_str(&magnitude.to_string());
}

fn write_fixed(out: &mut String, digits: &str, decimal_point: i32) {
    if decimal_point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n(
            '0',
            decimal_point.unsigned_abs() as usize,
        ));
        out.push_str(digits);
        return;
    }
    let point = decimal_point as usize;
    if point >= digits.len() {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', point - digits.len()));
        out.push_str(".0");
        return;
    }
    out.push_str(&digits[..point]);
    out.push('.');
    out.push_str(&digits[point..]);
}

/// Python's `round(x, ndigits)` for a float: the exact binary value rounded to `ndigits` decimal
/// places with ties to even, then converted back to the nearest float (so `round(2.675, 2)` is
/// `2.67` and `round(0.125, 2)` is `0.12`). Negative `ndigits` round to tens, hundreds, ….
///
/// Where Python raises `OverflowError` (rounding a value near `f64::MAX` up to a power of ten
/// that does not fit), this returns an infinity of the same sign.
pub fn py_round(x: f64, ndigits: i32) -> f64 {
    // Python's NDIGITS_MAX and NDIGITS_MIN (floatobject.c).
    const NDIGITS_MAX: i32 = 323;
    const NDIGITS_MIN: i32 = -308;
    if !x.is_finite() || x == 0.0 || ndigits > NDIGITS_MAX {
        return x;
    }
    if ndigits < NDIGITS_MIN {
        return 0.0 * x;
    }
    if ndigits >= 0 {
        // Rust's fixed-precision formatting is exact and rounds ties to even, like `_Py_dg_dtoa`.
        let text = format!("{:.*}", ndigits as usize, x);
        return text.parse().expect("formatted float parses");
    }
    round_to_power_of_ten(x, ndigits.unsigned_abs() as usize)
}

/// Rounds `x` to a multiple of `10^places` (ties to even) working on its exact decimal digits.
fn round_to_power_of_ten(x: f64, places: usize) -> f64 {
    let magnitude = x.abs();
    let integer_part = magnitude.trunc();
    let has_fraction = magnitude != integer_part;
    // An integral float prints exactly with `{:.0}`.
    let mut digits = format!("{integer_part:.0}").into_bytes();
    if digits.len() <= places {
        let mut padded = vec![b'0'; places + 1 - digits.len()];
        padded.extend_from_slice(&digits);
        digits = padded;
    }
    let split = digits.len() - places;
    let (head, tail) = digits.split_at(split);
    let mut head = head.to_vec();
    let round_up = match tail[0].cmp(&b'5') {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => {
            let beyond_half = has_fraction || tail[1..].iter().any(|d| *d != b'0');
            let head_is_odd = (head[head.len() - 1] - b'0') % 2 == 1;
            beyond_half || head_is_odd
        }
    };
    if round_up {
        increment_decimal(&mut head);
    }
    let mut text = String::from_utf8(head).expect("ascii digits");
    text.extend(std::iter::repeat_n('0', places));
    let rounded: f64 = text.parse().expect("digit string parses");
    if x.is_sign_negative() {
        -rounded
    } else {
        rounded
    }
}

fn increment_decimal(digits: &mut Vec<u8>) {
    for digit in digits.iter_mut().rev() {
        if *digit == b'9' {
            *digit = b'0';
            continue;
        }
        *digit += 1;
        return;
    }
    digits.insert(0, b'1');
}

/// Python's `str()` of a JSON value: strings as they are, `True`/`False`/`None`, floats via
/// [`float_repr`] (finite values print the same under `str` and `repr`), integers as digits.
/// Arrays and objects print as Python's `repr` of a list or dict (`{'a': [1, None]}`).
pub fn py_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a JSON value: like [`py_str`] but strings are quoted (`'abc'`).
///
/// Partial: non-ASCII characters are kept as they are (Python escapes the few it considers
/// unprintable); the τ² data is plain ASCII.
pub fn py_repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(number) => write_number_repr(out, number),
        Value::String(text) => write_string_repr(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                write_string_repr(out, key);
                out.push_str(": ");
                write_repr(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number_repr(out: &mut String, number: &Number) {
    match number.as_f64() {
        Some(float) if number.is_f64() => {
            // `str(float('inf'))` is `inf`, unlike JSON's `Infinity`.
            if float.is_infinite() {
                out.push_str(if float > 0.0 { "inf" } else { "-inf" });
            } else if float.is_nan() {
                out.push_str("nan");
            } else {
                out.push_str(&float_repr(float));
            }
        }
        _ => out.push_str(&number.to_string()),
    }
}

fn write_string_repr(out: &mut String, text: &str) {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Where serialised JSON text goes: a `String`, or a hasher (see [`write_sorted`]).
pub trait Sink {
    fn push_str(&mut self, text: &str);
}

impl Sink for String {
    fn push_str(&mut self, text: &str) {
        String::push_str(self, text);
    }
}

/// Streams `json.dumps(value, sort_keys=True)` into `sink` without building the whole text
/// (what the DB hash uses: the DB is megabytes).
pub fn write_sorted(sink: &mut impl Sink, value: &Value) {
    write_value(
        sink,
        value,
        Options {
            sort_keys: true,
            ensure_ascii: true,
        },
    );
}

#[derive(Clone, Copy)]
struct Options {
    sort_keys: bool,
    ensure_ascii: bool,
}

/// Reusable buffers for sorting object keys, one per nesting depth, so that serialising a DB of
/// tens of thousands of objects does not allocate once per object.
struct Writer<'a> {
    options: Options,
    sort_buffers: Vec<Vec<(&'a String, &'a Value)>>,
}

fn write_value(out: &mut impl Sink, value: &Value, options: Options) {
    let mut writer = Writer {
        options,
        sort_buffers: Vec::new(),
    };
    writer.value(out, value, 0);
}

impl<'a> Writer<'a> {
    fn value(&mut self, out: &mut impl Sink, value: &'a Value, depth: usize) {
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(number) => write_number(out, number),
            Value::String(text) => write_string(out, text, self.options.ensure_ascii),
            Value::Array(items) => {
                out.push_str("[");
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push_str(", ");
                    }
                    self.value(out, item, depth + 1);
                }
                out.push_str("]");
            }
            Value::Object(map) => {
                out.push_str("{");
                // Python sorts str keys by code point; UTF-8 byte order is the same order.
                if self.options.sort_keys && !map.keys().is_sorted() {
                    self.sorted_entries(out, map, depth);
                } else {
                    self.entries(out, map.iter(), depth);
                }
                out.push_str("}");
            }
        }
    }

    fn sorted_entries(&mut self, out: &mut impl Sink, map: &'a Map<String, Value>, depth: usize) {
        if self.sort_buffers.len() <= depth {
            self.sort_buffers.resize_with(depth + 1, Vec::new);
        }
        let mut entries = std::mem::take(&mut self.sort_buffers[depth]);
        entries.clear();
        entries.extend(map.iter());
        entries.sort_unstable_by(|left, right| left.0.cmp(right.0));
        self.entries(out, entries.iter().copied(), depth);
        self.sort_buffers[depth] = entries;
    }

    fn entries(
        &mut self,
        out: &mut impl Sink,
        entries: impl Iterator<Item = (&'a String, &'a Value)>,
        depth: usize,
    ) {
        for (index, (key, item)) in entries.enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            write_string(out, key, self.options.ensure_ascii);
            out.push_str(": ");
            self.value(out, item, depth + 1);
        }
    }
}

fn write_number(out: &mut impl Sink, number: &Number) {
    if let Some(int) = number.as_u64() {
        write_integer(out, false, int);
    } else if let Some(int) = number.as_i64() {
        write_integer(out, int < 0, int.unsigned_abs());
    } else {
        let float = number.as_f64().unwrap_or(f64::NAN);
        out.push_str(&float_repr(float));
    }
}

/// Writes an integer without allocating (the airline DB holds tens of thousands).
fn write_integer(out: &mut impl Sink, negative: bool, mut magnitude: u64) {
    let mut buffer = [0u8; 21];
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        start -= 1;
        buffer[start] = b'-';
    }
    out.push_str(std::str::from_utf8(&buffer[start..]).unwrap_or_default());
}

/// Python's `json` string escaping: `"` `\` and the short escapes, other control characters as
/// `\u00XX`; with `ensure_ascii` also DEL and every non-ASCII character (as UTF-16 units).
/// Runs of characters that need no escape are written in one piece.
fn write_string(out: &mut impl Sink, text: &str, ensure_ascii: bool) {
    out.push_str("\"");
    let mut run_start = 0;
    for (index, ch) in text.char_indices() {
        let plain = match ch {
            '"' | '\\' => false,
            c if (c as u32) < 0x20 => false,
            c if ensure_ascii && (c as u32) >= 0x7f => false,
            _ => true,
        };
        if plain {
            continue;
        }
        out.push_str(&text[run_start..index]);
        run_start = index + ch.len_utf8();
        write_escape(out, ch);
    }
    out.push_str(&text[run_start..]);
    out.push_str("\"");
}

fn write_escape(out: &mut impl Sink, ch: char) {
    match ch {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{08}' => out.push_str("\\b"),
        '\u{0c}' => out.push_str("\\f"),
        c => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                push_unicode_escape(out, *unit);
            }
        }
    }
}

fn push_unicode_escape(out: &mut impl Sink, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut escape = *b"\\u0000";
    for (slot, shift) in escape[2..].iter_mut().zip([12, 8, 4, 0]) {
        *slot = HEX[usize::from((unit >> shift) & 0xf)];
    }
    out.push_str(std::str::from_utf8(&escape).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr_matches_python_notation_boundaries() {
        assert_eq!(float_repr(100.0), "100.0");
        assert_eq!(float_repr(1234.56), "1234.56");
        assert_eq!(float_repr(1e-5), "1e-05");
        assert_eq!(float_repr(0.0001), "0.0001");
        assert_eq!(float_repr(1e16), "1e+16");
        assert_eq!(float_repr(1e15), "1000000000000000.0");
        assert_eq!(float_repr(1.5e16), "1.5e+16");
        assert_eq!(float_repr(-0.0), "-0.0");
        assert_eq!(float_repr(5e-324), "5e-324");
        assert_eq!(float_repr(f64::INFINITY), "Infinity");
    }

    #[test]
    fn py_round_rounds_the_exact_binary_value_ties_to_even() {
        assert_eq!(py_round(2.675, 2), 2.67);
        assert_eq!(py_round(0.125, 2), 0.12);
        assert_eq!(py_round(0.375, 2), 0.38);
        assert_eq!(py_round(25.0, -1), 20.0);
        assert_eq!(py_round(35.0, -1), 40.0);
        assert_eq!(py_round(-25.5, -1), -30.0);
        assert_eq!(py_round(4.0, 2), 4.0);
    }

    #[test]
    fn dumps_uses_python_separators_and_escapes() {
        let value = json!({"b": 1, "a": [1.0, null, true], "s": "é\"\n\u{7f}"});
        assert_eq!(
            dumps(&value),
            r#"{"b": 1, "a": [1.0, null, true], "s": "\u00e9\"\n\u007f"}"#
        );
        assert_eq!(
            dumps_sorted(&value),
            r#"{"a": [1.0, null, true], "b": 1, "s": "\u00e9\"\n\u007f"}"#
        );
        assert_eq!(
            dumps_unicode(&value),
            "{\"b\": 1, \"a\": [1.0, null, true], \"s\": \"é\\\"\\n\u{7f}\"}"
        );
        assert_eq!(dumps(&json!("😀")), r#""\ud83d\ude00""#);
    }

    #[test]
    fn py_str_prints_python_scalars_and_containers() {
        assert_eq!(py_str(&json!("abc")), "abc");
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(py_str(&Value::Null), "None");
        assert_eq!(py_str(&json!(4.0)), "4.0");
        assert_eq!(py_str(&json!(4)), "4");
        assert_eq!(
            py_str(&json!({"a": ["x", null, 1.5]})),
            "{'a': ['x', None, 1.5]}"
        );
        assert_eq!(py_repr(&json!("it's")), "\"it's\"");
    }

    #[test]
    fn ties_between_equally_short_digit_strings_pick_pythons_choice() {
        // Both `…728.2` and `…728.3` round-trip and are 0.05 away; Python prints the even one.
        // 1838179139006728.25 exactly (the spacing of doubles there is 0.25).
        let tie = 1_838_179_139_006_728.0_f64 + 0.25;
        assert_eq!(float_repr(tie), "1838179139006728.2");
        assert_eq!(float_repr(0.1), "0.1");
        assert_eq!(float_repr(100.0), "100.0");
        assert_eq!(float_repr(1e23), "1e+23");
        assert_eq!(float_repr(5e-324), "5e-324");
    }
}
