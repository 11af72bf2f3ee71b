//! Predictions: `{instance_id, model_name_or_path, model_patch}` per line (JSONL), or a JSON list
//! / `{instance_id: prediction}` object as the official harness also accepts.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::instance::{LoadError, rows_of};

/// One model's patch for one instance. `model_patch` is `None` when the model produced none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    pub instance_id: String,
    pub model_name_or_path: String,
    pub model_patch: Option<String>,
}

impl Prediction {
    /// Empty or missing patches are not evaluated (the official `empty_patch_ids`).
    pub fn is_empty(&self) -> bool {
        self.model_patch.as_deref().is_none_or(str::is_empty)
    }

    /// The model name as a folder name (`/` → `__`, as the official log layout does).
    pub fn model_dir(&self) -> String {
        self.model_name_or_path.replace('/', "__")
    }
}

/// Reads predictions; every line must be an object with a string `instance_id`; a missing
/// `model_name_or_path` becomes "None" (the official default); `model_patch` may be null.
/// Duplicate instance ids are an error naming the line.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::io(path, error))?;
    let mut predictions: Vec<Prediction> = Vec::new();
    for (line, row) in rows_of(path, &text)? {
        let invalid =
            |field: &str, message: String| LoadError::invalid(path, line, Some(field), message);
        let Value::Object(map) = &row else {
            return Err(LoadError::invalid(
                path,
                line,
                None,
                "expected a JSON object",
            ));
        };
        let instance_id = match map.get("instance_id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err(invalid("instance_id", "missing; expected a string".into())),
        };
        let model_name_or_path = match map.get("model_name_or_path") {
            None | Some(Value::Null) => "None".to_string(),
            Some(Value::String(name)) => name.clone(),
            Some(other) => {
                return Err(invalid(
                    "model_name_or_path",
                    format!("expected a string, found {other}"),
                ));
            }
        };
        let model_patch = match map.get("model_patch") {
            None | Some(Value::Null) => None,
            Some(Value::String(patch)) => Some(patch.clone()),
            Some(_) => {
                return Err(invalid(
                    "model_patch",
                    "expected a string (a unified diff) or null".into(),
                ));
            }
        };
        if predictions
            .iter()
            .any(|known| known.instance_id == instance_id)
        {
            return Err(invalid(
                "instance_id",
                format!("duplicate prediction for `{instance_id}`"),
            ));
        }
        predictions.push(Prediction {
            instance_id,
            model_name_or_path,
            model_patch,
        });
    }
    Ok(predictions)
}

/// Writes predictions as JSONL (one object per line, in the given order).
pub fn write_predictions(path: &Path, predictions: &[Prediction]) -> Result<(), LoadError> {
    let mut text = Vec::new();
    for prediction in predictions {
        serde_json::to_writer(&mut text, prediction)
            .map_err(|error| LoadError::invalid(path, None, None, error.to_string()))?;
        text.write_all(b"\n")
            .map_err(|error| LoadError::io(path, error))?;
    }
    std::fs::write(path, text).map_err(|error| LoadError::io(path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swebench_predictions_round_trip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preds.jsonl");
        let predictions = vec![
            Prediction {
                instance_id: "a__b-1".into(),
                model_name_or_path: "org/model".into(),
                model_patch: Some("diff --git a/x b/x\n".into()),
            },
            Prediction {
                instance_id: "a__b-2".into(),
                model_name_or_path: "org/model".into(),
                model_patch: None,
            },
        ];
        write_predictions(&path, &predictions).unwrap();
        assert_eq!(read_predictions(&path).unwrap(), predictions);
        assert_eq!(predictions[0].model_dir(), "org__model");
        assert!(predictions[1].is_empty());

        let json = dir.path().join("preds.json");
        std::fs::write(
            &json,
            r#"{"a__b-1": {"instance_id": "a__b-1", "model_patch": ""}}"#,
        )
        .unwrap();
        let read = read_predictions(&json).unwrap();
        assert_eq!(read[0].model_name_or_path, "None");
        assert!(read[0].is_empty());

        std::fs::write(
            &path,
            "{\"instance_id\": \"x\"}\n{\"model_patch\": \"p\"}\n",
        )
        .unwrap();
        let error = read_predictions(&path).unwrap_err().to_string();
        assert!(
            error.contains("preds.jsonl:2: field `instance_id`"),
            "{error}"
        );
        std::fs::write(&path, "{\"instance_id\": \"x\", \"model_patch\": 3}\n").unwrap();
        let error = read_predictions(&path).unwrap_err().to_string();
        assert!(error.contains(":1: field `model_patch`"), "{error}");
    }
}
