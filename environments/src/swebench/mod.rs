//! SWE-bench format: instances, predictions, the official log parsers and grader, eval scripts.
//!
//! Everything here is plain data and text processing, so it runs without Docker; the container
//! side (apply the patch, run the eval script, collect the log) lives in `kiln-worker`.
//! The grading rules follow the official `swebench` 5.0.2 harness exactly (see
//! `reference_tests`, which grades the same logs with both in one run).

pub mod eval_script;
pub mod grading;
pub mod instance;
pub mod parsers;
pub mod predictions;
pub mod report;
mod task_yaml;

#[cfg(test)]
mod reference_tests;

pub use grading::{ResolvedStatus, StatusMap, TestsReport};
pub use instance::{EvalType, Instance, load_dataset, load_task_repo};
pub use predictions::{Prediction, read_predictions, write_predictions};

/// Marker lines of the official harness (`swebench.harness.constants`).
pub const APPLY_PATCH_FAIL: &str = ">>>>> Patch Apply Failed";
pub const APPLY_PATCH_PASS: &str = ">>>>> Applied Patch";
pub const RESET_FAILED: &str = ">>>>> Reset Failed";
pub const TESTS_ERROR: &str = ">>>>> Tests Errored";
pub const TESTS_TIMEOUT: &str = ">>>>> Tests Timed Out";
pub const START_TEST_OUTPUT: &str = ">>>>> Start Test Output";
pub const END_TEST_OUTPUT: &str = ">>>>> End Test Output";
pub const TEST_EXIT_CODE: &str = ">>>>> Test Exit Code";
/// Shell variable the eval script stashes the test command's `$?` in.
pub const TEST_EXIT_CODE_VAR: &str = "SWEBENCH_TEST_EXIT_CODE";

/// Where the patch is copied in the container, and the repository.
pub const CONTAINER_PATCH_FILE: &str = "/tmp/patch.diff";
pub const CONTAINER_WORKDIR: &str = "/testbed";

/// The v5 apply strategies, tried in order with a tree reset before each retry.
pub const GIT_APPLY_CMDS: [&str; 4] = [
    "git apply --verbose",
    "git apply --verbose --3way",
    "git apply --verbose --reject",
    "patch --batch --forward --fuzz=5 -p1 -i",
];
/// Run between apply attempts: a failed `--reject` leaves partial state behind.
pub const RESET_TREE_CMD: &str = "git checkout -- . ; git clean -fd";
/// After every strategy failed: the patch may already be fully applied.
pub const REVERSE_CHECK_CMD: &str = "git apply --check --reverse";

/// Default test time limit of the official harness, in seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 1800;

/// Per-instance files, as the official harness names them.
pub const LOG_REPORT: &str = "report.json";
pub const LOG_INSTANCE: &str = "run_instance.log";
pub const LOG_TEST_OUTPUT: &str = "test_output.txt";

/// The local name of an instance's official image: `sweb.eval.x86_64.<id lowercased>`.
pub fn local_image_name(instance_id: &str) -> String {
    format!("sweb.eval.x86_64.{}", instance_id.to_lowercase())
}

/// The name the official images are pulled as:
/// `swebench/sweb.eval.x86_64.<id with "__" as "_1776_", lowercased>:latest`.
pub fn hub_image_name(instance_id: &str) -> String {
    format!(
        "swebench/sweb.eval.x86_64.{}:latest",
        instance_id.replace("__", "_1776_").to_lowercase()
    )
}

/// Images an instance may run in, in order of preference: its own `image` field, then the
/// official local name, then the hub name.
pub fn candidate_images(instance: &Instance) -> Vec<String> {
    let mut images = Vec::new();
    if let Some(image) = instance.image.as_deref().filter(|image| !image.is_empty()) {
        images.push(image.to_string());
    }
    for image in [
        local_image_name(&instance.instance_id),
        hub_image_name(&instance.instance_id),
    ] {
        if !images.contains(&image) {
            images.push(image);
        }
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swebench_image_names_follow_the_official_scheme() {
        assert_eq!(
            local_image_name("django__django-11099"),
            "sweb.eval.x86_64.django__django-11099"
        );
        assert_eq!(
            hub_image_name("Django__django-11099"),
            "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
        );
    }
}
