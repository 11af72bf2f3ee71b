//! Parsing of a task's `env_options`: the shape every environment shares — `null` or a JSON object
//! of known keys — and the wording of its errors, so that each environment only lists its keys.

use serde_json::{Map, Value};

use crate::{EnvError, EnvErrorKind};

/// The options object, or `None` for `null` (the defaults). Anything else is an
/// [`EnvErrorKind::InvalidOptions`] error naming the environment.
pub fn options_object<'a>(
    env: &str,
    options: &'a Value,
) -> Result<Option<&'a Map<String, Value>>, EnvError> {
    match options {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map)),
        other => Err(invalid_options(format!(
            "{env} env_options must be a JSON object, got {other}"
        ))),
    }
}

/// A positive integer that fits in `u32` (step and error limits).
pub fn positive_u32(env: &str, key: &str, value: &Value) -> Result<u32, EnvError> {
    value
        .as_u64()
        .filter(|limit| *limit > 0)
        .and_then(|limit| u32::try_from(limit).ok())
        .ok_or_else(|| {
            invalid_options(format!(
                "{env} option {key} must be a positive integer, got {value}"
            ))
        })
}

/// The error for a key the environment does not know; `valid` lists the ones it does.
pub fn unknown_option(env: &str, key: &str, valid: &str) -> EnvError {
    invalid_options(format!(
        "unknown {env} option `{key}`; valid options: {valid}"
    ))
}

/// An [`EnvErrorKind::InvalidOptions`] error.
pub fn invalid_options(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::InvalidOptions, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_is_the_defaults_and_non_objects_are_refused() {
        assert!(options_object("webshop", &Value::Null).unwrap().is_none());
        assert_eq!(
            options_object("webshop", &json!({"a": 1}))
                .unwrap()
                .unwrap()
                .len(),
            1
        );
        let error = options_object("webshop", &json!([1])).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::InvalidOptions);
        assert!(
            error
                .to_string()
                .contains("webshop env_options must be a JSON object, got [1]"),
            "{error}"
        );
    }

    #[test]
    fn limits_must_be_positive_u32() {
        assert_eq!(positive_u32("tau2", "max_steps", &json!(7)).unwrap(), 7);
        for bad in [json!(0), json!(-1), json!(1.5), json!("7"), json!(u64::MAX)] {
            let error = positive_u32("tau2", "max_steps", &bad).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("tau2 option max_steps must be a positive integer"),
                "{error}"
            );
        }
    }
}
