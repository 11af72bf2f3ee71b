//! `report.json` per instance and the run report `<model>.<run_id>.json` (schema_version 2), as
//! `swebench.harness.reporting.make_run_report` writes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::grading::{InstanceReport, classify_infra_failure};
use super::{Instance, LOG_INSTANCE, LOG_REPORT, LOG_TEST_OUTPUT, Prediction};

/// `<log_root>/<model>/<instance_id>/`: where one instance's logs and report live.
pub fn instance_dir(log_root: &Path, prediction: &Prediction) -> PathBuf {
    log_root
        .join(prediction.model_dir())
        .join(&prediction.instance_id)
}

/// `{instance_id: report}` as JSON with 4-space indentation (as `json.dumps(…, indent=4)`).
pub fn instance_report_json(instance_id: &str, report: &InstanceReport) -> String {
    let value = serde_json::json!({ instance_id: report });
    pretty4(&value)
}

fn pretty4(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .expect("a JSON value serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Whether a finished `report.json` says the instance was resolved: `None` when the file is
/// empty, not JSON, or lacks `[instance_id].resolved` (the official "error" instances).
pub fn report_resolved(text: &str, instance_id: &str) -> Option<bool> {
    let value: Value = serde_json::from_str(text.trim()).ok()?;
    value.get(instance_id)?.get("resolved")?.as_bool()
}

/// The run report with the official keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    pub total_instances: usize,
    pub submitted_instances: usize,
    pub completed_instances: usize,
    pub resolved_instances: usize,
    pub unresolved_instances: usize,
    pub infra_failure_instances: usize,
    pub ambiguous_failure_instances: usize,
    pub empty_patch_instances: usize,
    pub error_instances: usize,
    pub completed_ids: Vec<String>,
    pub incomplete_ids: Vec<String>,
    pub empty_patch_ids: Vec<String>,
    pub submitted_ids: Vec<String>,
    pub resolved_ids: Vec<String>,
    pub unresolved_ids: Vec<String>,
    pub infra_failure_ids: Vec<String>,
    pub ambiguous_failure_ids: Vec<String>,
    pub failure_reasons: BTreeMap<String, String>,
    pub error_ids: Vec<String>,
    pub schema_version: u32,
}

/// Builds the run report from what is on disk under `log_root` (`<out>/<run_id>`).
pub fn make_run_report(
    predictions: &[Prediction],
    dataset: &[Instance],
    log_root: &Path,
) -> RunReport {
    let by_id: HashMap<&str, &Prediction> = predictions
        .iter()
        .map(|prediction| (prediction.instance_id.as_str(), prediction))
        .collect();
    let mut completed = BTreeSet::new();
    let mut resolved = BTreeSet::new();
    let mut unresolved = BTreeSet::new();
    let mut errors = BTreeSet::new();
    let mut incomplete = BTreeSet::new();
    let mut empty = BTreeSet::new();
    for instance in dataset {
        let id = instance.instance_id.as_str();
        let Some(prediction) = by_id.get(id) else {
            incomplete.insert(id.to_string());
            continue;
        };
        if prediction.is_empty() {
            empty.insert(id.to_string());
            continue;
        }
        let path = instance_dir(log_root, prediction).join(LOG_REPORT);
        let Ok(text) = std::fs::read_to_string(&path) else {
            errors.insert(id.to_string());
            continue;
        };
        completed.insert(id.to_string());
        match report_resolved(&text, id) {
            Some(true) => resolved.insert(id.to_string()),
            Some(false) => unresolved.insert(id.to_string()),
            None => errors.insert(id.to_string()),
        };
    }
    let mut infra = BTreeSet::new();
    let mut ambiguous = BTreeSet::new();
    let mut reasons = BTreeMap::new();
    for id in unresolved.iter().chain(errors.iter()) {
        let dir = instance_dir(log_root, by_id[id.as_str()]);
        let logs: Vec<String> = [LOG_TEST_OUTPUT, LOG_INSTANCE]
            .iter()
            .filter_map(|file| std::fs::read_to_string(dir.join(file)).ok())
            .collect();
        if let Some((reason, environment)) = classify_infra_failure(&logs.join("\n")) {
            reasons.insert(id.clone(), reason.to_string());
            if environment {
                infra.insert(id.clone());
            } else {
                ambiguous.insert(id.clone());
            }
        }
    }
    let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
    let mut submitted: Vec<String> = by_id.keys().map(|id| id.to_string()).collect();
    submitted.sort();
    RunReport {
        total_instances: dataset.len(),
        submitted_instances: predictions.len(),
        completed_instances: completed.len(),
        resolved_instances: resolved.len(),
        unresolved_instances: unresolved.len(),
        infra_failure_instances: infra.len(),
        ambiguous_failure_instances: ambiguous.len(),
        empty_patch_instances: empty.len(),
        error_instances: errors.len(),
        completed_ids: list(&completed),
        incomplete_ids: list(&incomplete),
        empty_patch_ids: list(&empty),
        submitted_ids: submitted,
        resolved_ids: list(&resolved),
        unresolved_ids: list(&unresolved),
        infra_failure_ids: list(&infra),
        ambiguous_failure_ids: list(&ambiguous),
        failure_reasons: reasons,
        error_ids: list(&errors),
        schema_version: 2,
    }
}

/// Writes the run report as `<dir>/<model>.<run_id>.json`; returns the path.
pub fn write_run_report(
    dir: &Path,
    model: &str,
    run_id: &str,
    report: &RunReport,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.{run_id}.json", model.replace('/', "__")));
    let value = serde_json::to_value(report).map_err(std::io::Error::other)?;
    std::fs::write(&path, pretty4(&value) + "\n")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(id: &str, patch: Option<&str>) -> Prediction {
        Prediction {
            instance_id: id.into(),
            model_name_or_path: "org/m".into(),
            model_patch: patch.map(str::to_string),
        }
    }

    fn instance(id: &str) -> Instance {
        Instance {
            instance_id: id.into(),
            ..Instance::default()
        }
    }

    #[test]
    fn swebench_run_report_counts_like_the_official_one() {
        let dir = tempfile::tempdir().unwrap();
        let predictions = vec![
            prediction("r", Some("d")),
            prediction("u", Some("d")),
            prediction("e", Some("d")),
            prediction("x", Some("d")),
            prediction("empty", Some("")),
        ];
        let dataset: Vec<Instance> = ["r", "u", "e", "x", "empty", "missing"]
            .iter()
            .map(|id| instance(id))
            .collect();
        let report = |resolved: bool| InstanceReport {
            patch_is_none: false,
            patch_exists: true,
            patch_successfully_applied: true,
            resolved,
            infra_failure: false,
            infra_failure_reason: None,
            tests_status: None,
        };
        for (id, resolved) in [("r", true), ("u", false)] {
            let path = instance_dir(dir.path(), &prediction(id, None));
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(
                path.join(LOG_REPORT),
                instance_report_json(id, &report(resolved)),
            )
            .unwrap();
        }
        let broken = instance_dir(dir.path(), &prediction("x", None));
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join(LOG_REPORT), "").unwrap();
        let errored = instance_dir(dir.path(), &prediction("e", None));
        std::fs::create_dir_all(&errored).unwrap();
        std::fs::write(errored.join(LOG_INSTANCE), "Error response from daemon: no").unwrap();

        let run = make_run_report(&predictions, &dataset, dir.path());
        assert_eq!(run.total_instances, 6);
        assert_eq!(run.submitted_instances, 5);
        assert_eq!(run.resolved_ids, ["r"]);
        assert_eq!(run.unresolved_ids, ["u"]);
        assert_eq!(run.completed_ids, ["r", "u", "x"]);
        assert_eq!(run.error_ids, ["e", "x"]);
        assert_eq!(run.empty_patch_ids, ["empty"]);
        assert_eq!(run.incomplete_ids, ["missing"]);
        assert_eq!(run.infra_failure_ids, ["e"]);
        assert_eq!(run.failure_reasons["e"], "container_unavailable");
        let path = write_run_report(dir.path(), "org/m", "run1", &run).unwrap();
        assert!(path.ends_with("org__m.run1.json"));
        let written: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(written["schema_version"], 2);
        assert_eq!(written["resolved_instances"], 1);
        assert_eq!(
            report_resolved(&instance_report_json("r", &report(true)), "r"),
            Some(true)
        );
    }
}
