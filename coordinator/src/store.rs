//! The run directory: `run.toml`, `outcomes.jsonl`, `trajectories.jsonl`, `harness/<hash>.toml`,
//! `report.md`.
//!
//! Appends are line-atomic: each record is serialized first and written with one `write_all` on a
//! file opened for appending. A crash can still leave a truncated last line; opening the store drops
//! it (and logs it) and truncates the file so later appends start on a fresh line. The trajectory is
//! appended before its outcome, so an outcome line always has its trajectory; a key whose outcome
//! line was lost is re-run and may then have two trajectory lines, of which the last counts.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_protocol::{HarnessSpec, Outcome};
use kiln_worker::TaskResult;
use serde::de::DeserializeOwned;

use crate::config::RunConfig;
use crate::error::{CoordinatorError, CoordinatorErrorKind};

pub const RUN_TOML: &str = "run.toml";
pub const OUTCOMES: &str = "outcomes.jsonl";
pub const TRAJECTORIES: &str = "trajectories.jsonl";
pub const REPORT: &str = "report.md";
pub const HARNESS_DIR: &str = "harness";

/// An open run directory.
pub struct RunStore {
    dir: PathBuf,
    config: RunConfig,
    outcomes: File,
    trajectories: File,
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStore")
            .field("dir", &self.dir)
            .field("run_id", &self.config.run_id)
            .finish()
    }
}

impl RunStore {
    /// Creates a new run directory with `run.toml` and `harness/<hash>.toml` (`harness_toml`, the
    /// harness's canonical TOML). Fails if `dir` already holds a run; call this only after every
    /// input has been validated, so bad input leaves nothing behind.
    pub fn create(
        dir: &Path,
        config: &RunConfig,
        harness_toml: &str,
    ) -> Result<Self, CoordinatorError> {
        if dir.join(RUN_TOML).exists() {
            return Err(CoordinatorError::new(
                CoordinatorErrorKind::RunDirectory,
                format!(
                    "{} already holds a run; pass `--resume {}` to continue it",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        let harness_dir = dir.join(HARNESS_DIR);
        fs::create_dir_all(&harness_dir)
            .map_err(|error| CoordinatorError::io("create", &harness_dir, error))?;
        write_atomically(&harness_path(dir, &config.harness.hash), harness_toml)?;
        let text = config.to_toml().map_err(|error| {
            CoordinatorError::new(
                CoordinatorErrorKind::Io,
                format!("cannot serialize run.toml: {error}"),
            )
        })?;
        write_atomically(&dir.join(RUN_TOML), &text)?;
        Self::open_files(dir, config.clone())
    }

    /// Opens an existing run directory for resuming, repairing truncated last lines.
    pub fn open(dir: &Path) -> Result<Self, CoordinatorError> {
        let config = read_run_config(dir)?;
        repair_jsonl_tail::<Outcome>(&dir.join(OUTCOMES))?;
        repair_last_line(&dir.join(TRAJECTORIES))?;
        Self::open_files(dir, config)
    }

    fn open_files(dir: &Path, config: RunConfig) -> Result<Self, CoordinatorError> {
        let outcomes = open_append(&dir.join(OUTCOMES))?;
        let trajectories = open_append(&dir.join(TRAJECTORIES))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            outcomes,
            trajectories,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The outcomes recorded so far, first record per key.
    pub fn outcomes(&self) -> Result<Vec<Outcome>, CoordinatorError> {
        read_outcomes(&self.dir)
    }

    /// (task, attempt) keys already recorded.
    pub fn completed_keys(&self) -> Result<BTreeSet<(String, u32)>, CoordinatorError> {
        Ok(self
            .outcomes()?
            .into_iter()
            .map(|outcome| (outcome.task_id, outcome.attempt))
            .collect())
    }

    /// Appends one result: its trajectory line, then its outcome line.
    pub fn append(&mut self, result: &TaskResult) -> Result<(), CoordinatorError> {
        append_line(
            &mut self.trajectories,
            &self.dir.join(TRAJECTORIES),
            &result.trajectory,
        )?;
        append_line(
            &mut self.outcomes,
            &self.dir.join(OUTCOMES),
            &result.outcome,
        )
    }

    /// The harness spec this run uses, from `harness/<hash>.toml`.
    pub fn harness(&self) -> Result<HarnessSpec, CoordinatorError> {
        read_harness(&self.dir, &self.config.harness.hash)
    }
}

/// Reads and parses `run.toml`.
pub fn read_run_config(dir: &Path) -> Result<RunConfig, CoordinatorError> {
    let path = dir.join(RUN_TOML);
    if !path.exists() {
        return Err(CoordinatorError::new(
            CoordinatorErrorKind::RunDirectory,
            format!(
                "{} is not a run directory: {} is missing",
                dir.display(),
                path.display()
            ),
        ));
    }
    let text =
        fs::read_to_string(&path).map_err(|error| CoordinatorError::io("read", &path, error))?;
    RunConfig::from_toml(&text).map_err(|error| {
        CoordinatorError::new(
            CoordinatorErrorKind::CorruptStore,
            format!("{}: {error}", path.display()),
        )
    })
}

/// Path of a harness version inside a run directory.
pub fn harness_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join(HARNESS_DIR).join(format!("{hash}.toml"))
}

fn read_harness(dir: &Path, hash: &str) -> Result<HarnessSpec, CoordinatorError> {
    let path = harness_path(dir, hash);
    let text =
        fs::read_to_string(&path).map_err(|error| CoordinatorError::io("read", &path, error))?;
    toml::from_str(&text).map_err(|error| {
        CoordinatorError::new(
            CoordinatorErrorKind::CorruptStore,
            format!("{}: {error}", path.display()),
        )
    })
}

/// Reads `outcomes.jsonl` of a run directory: records in file order, later duplicates of a key
/// dropped, an unparseable last line dropped (a crash mid-append). Does not modify the file.
pub fn read_outcomes(dir: &Path) -> Result<Vec<Outcome>, CoordinatorError> {
    let path = dir.join(OUTCOMES);
    let parsed = read_jsonl::<Outcome>(&path)?;
    if let Some(dropped) = &parsed.dropped_tail {
        tracing::warn!(path = %path.display(), line = dropped.line, "ignoring a truncated last line");
    }
    let mut seen = BTreeSet::new();
    let mut outcomes = Vec::with_capacity(parsed.records.len());
    for outcome in parsed.records {
        if !seen.insert((outcome.task_id.clone(), outcome.attempt)) {
            tracing::warn!(task_id = %outcome.task_id, attempt = outcome.attempt, "ignoring a duplicate outcome line");
            continue;
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Writes `report.md` into a run directory.
pub fn write_report(dir: &Path, markdown: &str) -> Result<PathBuf, CoordinatorError> {
    let path = dir.join(REPORT);
    write_atomically(&path, markdown)?;
    Ok(path)
}

/// A JSON-lines file, parsed.
#[derive(Debug)]
pub struct JsonlFile<T> {
    pub records: Vec<T>,
    /// The last line, when it did not parse (or had no newline) and was left out.
    pub dropped_tail: Option<DroppedLine>,
    /// Byte length of the valid prefix (everything but the dropped tail).
    pub valid_len: u64,
}

/// A line left out of a JSON-lines file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedLine {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// Parses a JSON-lines file. A missing file is empty. Only the last line may be bad: a bad line
/// elsewhere is corruption and an error naming file and line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<JsonlFile<T>, CoordinatorError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(CoordinatorError::io("read", path, error)),
    };
    parse_jsonl(&bytes).map_err(|(line, reason)| {
        CoordinatorError::new(
            CoordinatorErrorKind::CorruptStore,
            format!("{} line {line}: {reason}", path.display()),
        )
    })
}

/// [`read_jsonl`] over bytes; the error is (1-based line, reason).
pub fn parse_jsonl<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonlFile<T>, (usize, String)> {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut line_number = 0usize;
    while offset < bytes.len() {
        line_number += 1;
        let rest = &bytes[offset..];
        let (line, terminated) = match rest.iter().position(|&byte| byte == b'\n') {
            Some(end) => (&rest[..end], true),
            None => (rest, false),
        };
        let next_offset = offset + line.len() + usize::from(terminated);
        let is_last = next_offset >= bytes.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            offset = next_offset;
            continue;
        }
        let parsed = if terminated {
            serde_json::from_slice::<T>(line).map_err(|error| error.to_string())
        } else {
            Err("line has no terminating newline (truncated write)".to_string())
        };
        match parsed {
            Ok(record) => records.push(record),
            Err(reason) if is_last => {
                let dropped = DroppedLine {
                    line: line_number,
                    reason,
                };
                return Ok(JsonlFile {
                    records,
                    dropped_tail: Some(dropped),
                    valid_len: offset as u64,
                });
            }
            Err(reason) => return Err((line_number, reason)),
        }
        offset = next_offset;
    }
    Ok(JsonlFile {
        records,
        dropped_tail: None,
        valid_len: bytes.len() as u64,
    })
}

/// Drops a bad last line from a JSON-lines file by truncating the file to its valid prefix.
fn repair_jsonl_tail<T: DeserializeOwned>(
    path: &Path,
) -> Result<Option<DroppedLine>, CoordinatorError> {
    let parsed = read_jsonl::<T>(path)?;
    let Some(dropped) = parsed.dropped_tail else {
        return Ok(None);
    };
    tracing::warn!(
        path = %path.display(),
        line = dropped.line,
        reason = %dropped.reason,
        "dropping a truncated last line; its task will run again"
    );
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| CoordinatorError::io("open", path, error))?;
    file.set_len(parsed.valid_len)
        .map_err(|error| CoordinatorError::io("truncate", path, error))?;
    Ok(Some(dropped))
}

/// Drops a bad last line without parsing the rest of the file (trajectory files are large and
/// their readers skip nothing: only the tail can be damaged by a crash).
fn repair_last_line(path: &Path) -> Result<Option<DroppedLine>, CoordinatorError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(CoordinatorError::io("read", path, error)),
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let last_start = body
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let tail = parse_jsonl::<serde_json::Value>(&bytes[last_start..]).map_err(|(_, reason)| {
        CoordinatorError::new(
            CoordinatorErrorKind::CorruptStore,
            format!("{}: {reason}", path.display()),
        )
    })?;
    let Some(dropped) = tail.dropped_tail else {
        return Ok(None);
    };
    tracing::warn!(path = %path.display(), reason = %dropped.reason, "dropping a truncated last line");
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|error| CoordinatorError::io("open", path, error))?;
    file.set_len(last_start as u64)
        .map_err(|error| CoordinatorError::io("truncate", path, error))?;
    Ok(Some(dropped))
}

fn open_append(path: &Path) -> Result<File, CoordinatorError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| CoordinatorError::io("open", path, error))
}

fn append_line<T: serde::Serialize>(
    file: &mut File,
    path: &Path,
    record: &T,
) -> Result<(), CoordinatorError> {
    let mut line = serde_json::to_vec(record).map_err(|error| {
        CoordinatorError::new(
            CoordinatorErrorKind::Io,
            format!("cannot serialize a record for {}: {error}", path.display()),
        )
    })?;
    line.push(b'\n');
    file.write_all(&line)
        .map_err(|error| CoordinatorError::io("append to", path, error))
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_atomically(path: &Path, text: &str) -> Result<(), CoordinatorError> {
    let temporary = path.with_extension("tmp");
    fs::write(&temporary, text)
        .map_err(|error| CoordinatorError::io("write", &temporary, error))?;
    fs::rename(&temporary, path)
        .map_err(|error| CoordinatorError::io("rename into place", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use crate::testing::result;
    use serde_json::Value;

    fn harness() -> HarnessSpec {
        HarnessSpec {
            schema: 1,
            name: "default".into(),
            description: "test harness".into(),
            envs: vec!["tau2-airline".into()],
            processors: Vec::new(),
        }
    }

    fn harness_toml() -> String {
        toml::to_string(&harness()).unwrap()
    }

    #[test]
    fn a_created_run_reopens_with_its_config_harness_and_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("runs").join("r1");
        let config = sample_config();
        let mut store = RunStore::create(&run_dir, &config, &harness_toml()).unwrap();
        store.append(&result(&config.run_id, "0", 0, true)).unwrap();
        store
            .append(&result(&config.run_id, "1", 0, false))
            .unwrap();
        drop(store);

        let store = RunStore::open(&run_dir).unwrap();
        assert_eq!(store.config(), &config);
        assert_eq!(store.harness().unwrap(), harness());
        let keys: Vec<_> = store.completed_keys().unwrap().into_iter().collect();
        assert_eq!(keys, vec![("0".to_string(), 0), ("1".to_string(), 0)]);
        let trajectories = fs::read_to_string(run_dir.join(TRAJECTORIES)).unwrap();
        assert_eq!(trajectories.lines().count(), 2);
        assert!(harness_path(&run_dir, &config.harness.hash).exists());
    }

    #[test]
    fn creating_over_an_existing_run_fails_and_says_how_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        RunStore::create(dir.path(), &sample_config(), &harness_toml()).unwrap();
        let error = RunStore::create(dir.path(), &sample_config(), &harness_toml()).unwrap_err();
        assert_eq!(error.kind(), CoordinatorErrorKind::RunDirectory);
        assert!(error.to_string().contains("--resume"), "{error}");
    }

    #[test]
    fn opening_drops_a_truncated_outcome_line_and_appends_cleanly_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = sample_config();
        let mut store = RunStore::create(dir.path(), &config, &harness_toml()).unwrap();
        store.append(&result(&config.run_id, "0", 0, true)).unwrap();
        store.append(&result(&config.run_id, "1", 0, true)).unwrap();
        drop(store);
        let path = dir.path().join(OUTCOMES);
        let text = fs::read_to_string(&path).unwrap();
        let cut = text.len() - 20;
        fs::write(&path, &text[..cut]).unwrap();

        let mut store = RunStore::open(dir.path()).unwrap();
        assert_eq!(store.completed_keys().unwrap().len(), 1);
        store.append(&result(&config.run_id, "1", 0, true)).unwrap();
        let outcomes = read_outcomes(dir.path()).unwrap();
        let keys: Vec<_> = outcomes
            .iter()
            .map(|o| (o.task_id.as_str(), o.attempt))
            .collect();
        assert_eq!(keys, vec![("0", 0), ("1", 0)]);
    }

    #[test]
    fn duplicate_outcome_lines_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = sample_config();
        let mut store = RunStore::create(dir.path(), &config, &harness_toml()).unwrap();
        store.append(&result(&config.run_id, "0", 0, true)).unwrap();
        store
            .append(&result(&config.run_id, "0", 0, false))
            .unwrap();
        let outcomes = read_outcomes(dir.path()).unwrap();
        assert_eq!(outcomes.len(), 1);
        assert!(outcomes[0].success, "the first record of a key counts");
    }

    #[test]
    fn a_directory_without_run_toml_is_not_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let error = RunStore::open(dir.path()).unwrap_err();
        assert_eq!(error.kind(), CoordinatorErrorKind::RunDirectory);
        assert!(error.to_string().contains("run.toml"), "{error}");
    }

    #[test]
    fn parse_jsonl_drops_only_a_bad_last_line() {
        let text = b"{\"a\":1}\n{\"a\":2}\n{\"a\":";
        let parsed = parse_jsonl::<Value>(text).unwrap();
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.dropped_tail.as_ref().unwrap().line, 3);
        assert_eq!(parsed.valid_len, 16);

        let corrupt_tail = b"{\"a\":1}\nnot json\n";
        let parsed = parse_jsonl::<Value>(corrupt_tail).unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert_eq!(parsed.valid_len, 8);

        let corrupt_middle = b"{\"a\":1}\nnot json\n{\"a\":3}\n";
        let (line, _) = parse_jsonl::<Value>(corrupt_middle).unwrap_err();
        assert_eq!(line, 2);
    }

    #[test]
    fn a_complete_json_value_without_newline_is_still_a_truncated_write() {
        let parsed = parse_jsonl::<Value>(b"{\"a\":1}\n{\"a\":2}").unwrap();
        assert_eq!(parsed.records.len(), 1);
        assert!(parsed.dropped_tail.unwrap().reason.contains("newline"));
    }

    #[test]
    fn last_line_repair_only_touches_a_bad_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        assert_eq!(repair_last_line(&path).unwrap().unwrap().line, 1);
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        assert!(repair_last_line(&path).unwrap().is_none());
        fs::write(&path, "{\"a\":1}\ngarbage\n").unwrap();
        repair_last_line(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        fs::write(&path, "").unwrap();
        assert!(repair_last_line(&path).unwrap().is_none());
    }

    #[test]
    fn repair_truncates_the_file_to_its_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        fs::write(&path, "{\"a\":1}\n{\"a\":").unwrap();
        let dropped = repair_jsonl_tail::<Value>(&path).unwrap();
        assert_eq!(dropped.unwrap().line, 2);
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        assert!(repair_jsonl_tail::<Value>(&path).unwrap().is_none());
    }
}
