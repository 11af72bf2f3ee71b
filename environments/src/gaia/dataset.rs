//! The real GAIA files: `metadata.jsonl` or `metadata.parquet` per split, attachments beside them.
//!
//! Accepted layouts for `--env gaia:PATH` (the first that matches):
//! - `PATH/metadata.{jsonl,parquet}`: one split, named after the folder when it is `validation` or
//!   `test`, else `validation` if the tasks have answers and `test` if not;
//! - `PATH/{validation,test}/metadata.*` and `PATH/2023/{validation,test}/metadata.*` (the
//!   Hugging Face repository's layout): both splits.
//!
//! When a folder has both files, `metadata.jsonl` is read. Fields: `task_id`, `Question`, `Level`
//! (`"1"`..`"3"` or a number), `Final answer` (absent, null or `"?"` on the test split: no answer),
//! `file_name` (`""` if none), `file_path` (Parquet, relative to the dataset root) and
//! `Annotator Metadata`. A bad record is skipped with a warning naming file and line/row; a split
//! with no readable task is an error.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{EnvError, EnvErrorKind};

/// One GAIA task.
#[derive(Debug, Clone, PartialEq)]
pub struct GaiaTask {
    pub task_id: String,
    pub question: String,
    /// 1, 2 or 3.
    pub level: u8,
    /// `None` on the test split.
    pub final_answer: Option<String>,
    /// The attachment's name as given (`""` if none).
    pub file_name: String,
    /// The attachment on disk, when the task has one and it was found.
    pub attachment: Option<PathBuf>,
    /// `Annotator Metadata` as given (steps, tools), `null` if absent.
    pub annotator: Value,
}

/// One split's tasks.
#[derive(Debug, Clone)]
pub struct GaiaSplit {
    pub name: String,
    pub metadata: PathBuf,
    pub tasks: Vec<GaiaTask>,
    /// Records that could not be read, with the reason (file and line/row named).
    pub skipped: Vec<String>,
}

impl GaiaSplit {
    pub fn task(&self, task_id: &str) -> Option<&GaiaTask> {
        self.tasks.iter().find(|task| task.task_id == task_id)
    }
}

/// A GAIA dataset on disk.
#[derive(Debug, Clone)]
pub struct GaiaDataset {
    pub root: PathBuf,
    pub splits: Vec<GaiaSplit>,
}

impl GaiaDataset {
    pub fn split(&self, name: &str) -> Option<&GaiaSplit> {
        self.splits.iter().find(|split| split.name == name)
    }

    /// The task with this id in `split`, else in any split.
    pub fn task(&self, split: &str, task_id: &str) -> Option<&GaiaTask> {
        self.split(split)
            .and_then(|found| found.task(task_id))
            .or_else(|| self.splits.iter().find_map(|found| found.task(task_id)))
    }
}

fn data_error(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::Data, message)
}

/// The metadata file of a folder (`metadata.jsonl` before `metadata.parquet`).
fn metadata_in(dir: &Path) -> Option<PathBuf> {
    ["metadata.jsonl", "metadata.parquet"]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// Loads every split found under `root` (see the module docs for the layouts).
pub fn load(root: &Path) -> Result<GaiaDataset, EnvError> {
    if !root.is_dir() {
        return Err(data_error(format!(
            "GAIA dataset {} is not a folder (expected a folder with metadata.jsonl or \
             metadata.parquet, or with validation/ and test/ folders holding them)",
            root.display()
        )));
    }
    let mut splits = Vec::new();
    if let Some(metadata) = metadata_in(root) {
        let folder = root
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let mut split = read_split("", &metadata, root)?;
        split.name = match folder {
            "validation" | "test" => folder.to_string(),
            _ if split.tasks.iter().any(|task| task.final_answer.is_some()) => {
                "validation".to_string()
            }
            _ => "test".to_string(),
        };
        splits.push(split);
    } else {
        for base in [root.to_path_buf(), root.join("2023")] {
            for name in ["validation", "test"] {
                if let Some(metadata) = metadata_in(&base.join(name)) {
                    splits.push(read_split(name, &metadata, root)?);
                }
            }
            if !splits.is_empty() {
                break;
            }
        }
    }
    if splits.is_empty() {
        return Err(data_error(format!(
            "no GAIA metadata under {}: expected metadata.jsonl or metadata.parquet there, or in \
             validation/ and test/ (or 2023/validation/ and 2023/test/)",
            root.display()
        )));
    }
    Ok(GaiaDataset {
        root: root.to_path_buf(),
        splits,
    })
}

/// Reads one metadata file; attachments are looked up beside it, then at `file_path` under `root`.
pub fn read_split(name: &str, metadata: &Path, root: &Path) -> Result<GaiaSplit, EnvError> {
    let records = if metadata.extension().is_some_and(|ext| ext == "parquet") {
        parquet_records(metadata)?
    } else {
        jsonl_records(metadata)?
    };
    let dir = metadata.parent().unwrap_or(root);
    let mut tasks = Vec::new();
    let mut skipped = Vec::new();
    for (place, record) in records {
        let parsed = record.and_then(|value| task_from_value(&value, dir, root));
        match parsed {
            Ok(task) => tasks.push(task),
            Err(reason) => {
                let message = format!("{} {place}: {reason}", metadata.display());
                tracing::warn!(%message, "skipping a GAIA record");
                skipped.push(message);
            }
        }
    }
    if tasks.is_empty() {
        return Err(data_error(format!(
            "{} holds no readable GAIA task{}",
            metadata.display(),
            skipped
                .first()
                .map(|first| format!(" (first problem: {first})"))
                .unwrap_or_default()
        )));
    }
    Ok(GaiaSplit {
        name: name.to_string(),
        metadata: metadata.to_path_buf(),
        tasks,
        skipped,
    })
}

type Records = Vec<(String, Result<Value, String>)>;

fn jsonl_records(path: &Path) -> Result<Records, EnvError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| data_error(format!("cannot read {}: {error}", path.display())))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let parsed =
                serde_json::from_str(line).map_err(|error| format!("not a JSON object: {error}"));
            (format!("line {}", index + 1), parsed)
        })
        .collect())
}

fn parquet_records(path: &Path) -> Result<Records, EnvError> {
    use parquet::file::reader::SerializedFileReader;
    let file = File::open(path)
        .map_err(|error| data_error(format!("cannot open {}: {error}", path.display())))?;
    let reader = SerializedFileReader::new(file).map_err(|error| {
        data_error(format!(
            "{} is not a readable Parquet file: {error}",
            path.display()
        ))
    })?;
    Ok(reader
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let parsed = row
                .map(|row| row.to_json_value())
                .map_err(|error| format!("unreadable row: {error}"));
            (format!("row {index}"), parsed)
        })
        .collect())
}

fn task_from_value(value: &Value, dir: &Path, root: &Path) -> Result<GaiaTask, String> {
    let text = |key: &str| -> Option<String> {
        match value.get(key) {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        }
    };
    let task_id = text("task_id")
        .filter(|id| !id.trim().is_empty())
        .ok_or("missing `task_id` (a non-empty string)")?;
    let question = text("Question").ok_or(format!("task {task_id}: missing `Question`"))?;
    let level = text("Level")
        .and_then(|level| level.trim().parse::<u8>().ok())
        .filter(|level| (1..=3).contains(level))
        .ok_or(format!("task {task_id}: `Level` must be 1, 2 or 3"))?;
    let final_answer = text("Final answer").filter(|answer| answer != "?");
    let file_name = text("file_name").unwrap_or_default();
    let attachment = find_attachment(&file_name, text("file_path").as_deref(), dir, root);
    if !file_name.is_empty() && attachment.is_none() {
        tracing::warn!(%task_id, %file_name, "GAIA attachment not found");
    }
    Ok(GaiaTask {
        task_id,
        question,
        level,
        final_answer,
        file_name,
        attachment,
        annotator: value
            .get("Annotator Metadata")
            .cloned()
            .unwrap_or(Value::Null),
    })
}

fn find_attachment(
    file_name: &str,
    file_path: Option<&str>,
    dir: &Path,
    root: &Path,
) -> Option<PathBuf> {
    if file_name.is_empty() {
        return None;
    }
    // Only plain names: a file_name that climbs out of the split's folder is ignored.
    let beside = Path::new(file_name)
        .file_name()
        .filter(|name| *name == std::ffi::OsStr::new(file_name))
        .map(|name| dir.join(name));
    let under_root = file_path
        .filter(|path| !path.is_empty() && !path.split('/').any(|part| part == ".."))
        .map(|path| root.join(path));
    beside
        .into_iter()
        .chain(under_root)
        .find(|path| path.is_file())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::writer::SerializedFileWriter;
    use serde_json::json;

    use super::*;

    /// The columns of the Hugging Face files written by [`write_parquet`] (GAIA's own names,
    /// `Final answer` with its space; `Annotator Metadata` is left out).
    const PARQUET_COLUMNS: [&str; 6] = [
        "task_id",
        "Question",
        "Level",
        "Final answer",
        "file_name",
        "file_path",
    ];

    /// Writes `metadata.parquet` (optional UTF-8 columns, snappy-compressed) with the parquet
    /// crate's own writer (pyarrow is not installed here).
    pub fn write_parquet(path: &Path, rows: &[[&str; 6]]) {
        use parquet::basic::{Compression, ConvertedType, Repetition, Type as Physical};
        use parquet::schema::types::Type;
        let fields = PARQUET_COLUMNS
            .iter()
            .map(|name| {
                Arc::new(
                    Type::primitive_type_builder(name, Physical::BYTE_ARRAY)
                        .with_repetition(Repetition::OPTIONAL)
                        .with_converted_type(ConvertedType::UTF8)
                        .build()
                        .unwrap(),
                )
            })
            .collect();
        let schema = Arc::new(
            Type::group_type_builder("schema")
                .with_fields(fields)
                .build()
                .unwrap(),
        );
        let properties = Arc::new(
            parquet::file::properties::WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .build(),
        );
        let file = File::create(path).unwrap();
        let mut writer = SerializedFileWriter::new(file, schema, properties).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut column = 0;
        while let Some(mut writer) = group.next_column().unwrap() {
            let values: Vec<ByteArray> = rows
                .iter()
                .map(|row| ByteArray::from(row[column]))
                .collect();
            let levels = vec![1i16; rows.len()];
            writer
                .typed::<ByteArrayType>()
                .write_batch(&values, Some(&levels), None)
                .unwrap();
            writer.close().unwrap();
            column += 1;
        }
        group.close().unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn reads_jsonl_with_levels_answers_and_attachments() {
        let dir = tempfile::tempdir().unwrap();
        let validation = dir.path().join("2023/validation");
        std::fs::create_dir_all(&validation).unwrap();
        std::fs::write(validation.join("t2.csv"), "a,b\n1,2\n").unwrap();
        let lines = [
            json!({"task_id": "t1", "Question": "Capital of France?", "Level": "1",
                   "Final answer": "Paris", "file_name": "",
                   "Annotator Metadata": {"Steps": "1. search", "Number of steps": "1"}}),
            json!({"task_id": "t2", "Question": "Sum of b?", "Level": 2,
                   "Final answer": "2", "file_name": "t2.csv"}),
            json!({"task_id": "t3", "Question": "Bad level", "Level": "7", "Final answer": "x"}),
        ];
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        std::fs::write(validation.join("metadata.jsonl"), text + "not json\n").unwrap();

        let dataset = load(dir.path()).unwrap();
        assert_eq!(dataset.splits.len(), 1);
        let split = &dataset.splits[0];
        assert_eq!(split.name, "validation");
        assert_eq!(split.tasks.len(), 2);
        assert_eq!(split.skipped.len(), 2, "{:?}", split.skipped);
        assert!(split.skipped[0].contains("line 3") && split.skipped[0].contains("Level"));
        assert!(split.skipped[1].contains("line 4"));
        let first = &split.tasks[0];
        assert_eq!(
            (first.level, first.final_answer.as_deref()),
            (1, Some("Paris"))
        );
        assert_eq!(first.attachment, None);
        assert_eq!(first.annotator["Number of steps"], "1");
        let second = dataset.task("validation", "t2").unwrap();
        assert_eq!(second.level, 2);
        assert_eq!(
            second.attachment.as_deref(),
            Some(validation.join("t2.csv").as_path())
        );
    }

    #[test]
    fn reads_parquet_and_the_test_split_without_answers() {
        let dir = tempfile::tempdir().unwrap();
        let test = dir.path().join("2023/test");
        std::fs::create_dir_all(&test).unwrap();
        std::fs::write(test.join("q9.txt"), "secret: 42").unwrap();
        write_parquet(
            &test.join("metadata.parquet"),
            &[
                ["q8", "What is 2+2?", "1", "?", "", ""],
                [
                    "q9",
                    "Read the file.",
                    "3",
                    "?",
                    "q9.txt",
                    "2023/test/q9.txt",
                ],
            ],
        );
        let dataset = load(dir.path()).unwrap();
        let split = dataset.split("test").unwrap();
        assert_eq!(split.tasks.len(), 2);
        assert!(split.tasks.iter().all(|task| task.final_answer.is_none()));
        assert_eq!(split.tasks[1].level, 3);
        assert_eq!(split.tasks[1].question, "Read the file.");
        assert_eq!(
            split.tasks[1].attachment.as_deref(),
            Some(test.join("q9.txt").as_path())
        );

        // The same file read directly as a one-split folder: named by its folder.
        let alone = load(&test).unwrap();
        assert_eq!(alone.splits[0].name, "test");
    }

    #[test]
    fn missing_or_empty_datasets_are_data_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let error = load(dir.path()).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(error.to_string().contains("metadata.jsonl"), "{error}");
        std::fs::write(dir.path().join("metadata.jsonl"), "{}\n").unwrap();
        let error = load(dir.path()).unwrap_err();
        assert!(error.to_string().contains("task_id"), "{error}");
        let error = load(&dir.path().join("nope")).unwrap_err();
        assert!(error.to_string().contains("not a folder"), "{error}");
    }
}
