//! The Planner: digests and history → a landscape (`landscape.md` with YAML front matter, and
//! `landscape.json`) of recurring failures, regressions, every edit tried with its measured hit
//! rate per bucket, untried buckets and directions, and the Critic's last strategy concern.
//! Deterministic: the same inputs give byte-identical files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::candidate::{Bucket, EvidencePointer};
use crate::digest::{TaskDigest, TaskStatus};

/// Every bucket, in report order.
pub const ALL_BUCKETS: [Bucket; 4] = [
    Bucket::Prompt,
    Bucket::Tools,
    Bucket::Config,
    Bucket::Processor,
];

/// Themes listed in the front matter.
const TOP_THEMES: usize = 5;
/// Evidence pointers shown per cluster.
const CLUSTER_EVIDENCE: usize = 3;

/// What happened to one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditVerdict {
    Shipped,
    RejectedByCritic,
    RejectedByGate,
    /// Malformed (did not apply, bad manifest): never reached the critic.
    Invalid,
}

/// One edit tried in an earlier round, as the loop records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditRecord {
    pub round: u32,
    pub candidate_id: String,
    pub operator: String,
    pub buckets: Vec<Bucket>,
    /// Signatures the edit addressed (from its manifest's capability evidence).
    #[serde(default)]
    pub targets: Vec<String>,
    pub verdict: EditVerdict,
    /// Whether it paid off: shipped with a measured gain on the gate split.
    pub hit: bool,
}

/// Tries and hits of one lever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HitRate {
    pub tries: u32,
    pub hits: u32,
}

impl HitRate {
    pub fn rate(&self) -> Option<f64> {
        (self.tries > 0).then(|| f64::from(self.hits) / f64::from(self.tries))
    }
}

/// Failed or flaky tasks sharing a failure category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureCluster {
    pub category: String,
    pub tasks: Vec<String>,
    /// Signatures seen in the cluster's tasks, with how many tasks show each (most first).
    pub signatures: Vec<(String, u32)>,
    pub evidence: Vec<EvidencePointer>,
}

/// A task whose pass state worsened since the previous round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub task: String,
    pub before: String,
    pub after: String,
}

/// The landscape of one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Landscape {
    pub round: u32,
    pub top_themes: Vec<String>,
    pub persistent_failures: Vec<String>,
    pub unattempted_directions: Vec<String>,
    pub tasks: u32,
    pub solved: u32,
    pub flaky: u32,
    pub failed: u32,
    pub clusters: Vec<FailureCluster>,
    /// Tasks (failed or flaky) showing each signature.
    pub signature_tasks: BTreeMap<String, u32>,
    pub regressions: Vec<Regression>,
    pub edits: Vec<EditRecord>,
    pub bucket_hit_rates: BTreeMap<Bucket, HitRate>,
    pub operator_hit_rates: BTreeMap<String, HitRate>,
    pub untried_buckets: Vec<Bucket>,
    pub strategy_concern: Option<String>,
}

/// What the planner works from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub round: u32,
    /// This round's digests (search split).
    pub digests: &'a [TaskDigest],
    /// The previous round's digests of the same split, for regressions and persistence.
    pub previous: Option<&'a [TaskDigest]>,
    pub history: &'a [EditRecord],
    /// The Critic's last `strategy_concern`, relayed verbatim.
    pub strategy_concern: Option<&'a str>,
}

/// Builds the landscape.
pub fn plan(input: PlanInput<'_>) -> Landscape {
    let digests = input.digests;
    let count = |status: TaskStatus| digests.iter().filter(|d| d.status == status).count() as u32;
    let unsolved: Vec<&TaskDigest> = digests
        .iter()
        .filter(|d| d.status != TaskStatus::Solved)
        .collect();
    let clusters = clusters(&unsolved);
    let mut signature_tasks: BTreeMap<String, u32> = BTreeMap::new();
    for digest in &unsolved {
        for name in digest.signatures.keys() {
            *signature_tasks.entry(name.clone()).or_default() += 1;
        }
    }
    let top_themes = top_themes(&clusters, &signature_tasks);
    let previous: BTreeMap<&str, &TaskDigest> = input
        .previous
        .unwrap_or_default()
        .iter()
        .map(|d| (d.task_id.as_str(), d))
        .collect();
    let persistent_failures = digests
        .iter()
        .filter(|d| d.status == TaskStatus::Failed)
        .filter(|d| {
            previous
                .get(d.task_id.as_str())
                .is_some_and(|p| p.status == TaskStatus::Failed)
        })
        .map(|d| d.task_id.clone())
        .collect();
    let regressions = digests
        .iter()
        .filter_map(|d| {
            let before = previous.get(d.task_id.as_str())?;
            // k-aware: compare pass rates, so 2/2 → 1/2 counts, 1/2 → 1/2 does not.
            (d.pass_rate() < before.pass_rate()).then(|| Regression {
                task: d.task_id.clone(),
                before: format!("{}/{}", before.successes, before.attempts),
                after: format!("{}/{}", d.successes, d.attempts),
            })
        })
        .collect();
    let mut bucket_hit_rates: BTreeMap<Bucket, HitRate> = BTreeMap::new();
    let mut operator_hit_rates: BTreeMap<String, HitRate> = BTreeMap::new();
    for edit in input.history {
        for bucket in &edit.buckets {
            let rate = bucket_hit_rates.entry(*bucket).or_default();
            rate.tries += 1;
            rate.hits += u32::from(edit.hit);
        }
        let rate = operator_hit_rates.entry(edit.operator.clone()).or_default();
        rate.tries += 1;
        rate.hits += u32::from(edit.hit);
    }
    let untried_buckets: Vec<Bucket> = ALL_BUCKETS
        .into_iter()
        .filter(|bucket| !bucket_hit_rates.contains_key(bucket))
        .collect();
    let targeted: BTreeSet<&str> = input
        .history
        .iter()
        .flat_map(|edit| edit.targets.iter().map(String::as_str))
        .collect();
    let mut unattempted_directions: Vec<String> = ranked(&signature_tasks)
        .into_iter()
        .filter(|(name, _)| !targeted.contains(name.as_str()))
        .map(|(name, tasks)| format!("address {name} ({tasks} tasks)"))
        .collect();
    unattempted_directions.extend(
        untried_buckets
            .iter()
            .map(|bucket| format!("try the {} bucket", bucket_name(*bucket))),
    );
    Landscape {
        round: input.round,
        top_themes,
        persistent_failures,
        unattempted_directions,
        tasks: digests.len() as u32,
        solved: count(TaskStatus::Solved),
        flaky: count(TaskStatus::Flaky),
        failed: count(TaskStatus::Failed),
        clusters,
        signature_tasks,
        regressions,
        edits: input.history.to_vec(),
        bucket_hit_rates,
        operator_hit_rates,
        untried_buckets,
        strategy_concern: input.strategy_concern.map(str::to_string),
    }
}

fn ranked(counts: &BTreeMap<String, u32>) -> Vec<(String, u32)> {
    let mut list: Vec<(String, u32)> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    // Most tasks first; ties by name, so the order is total.
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    list
}

fn clusters(unsolved: &[&TaskDigest]) -> Vec<FailureCluster> {
    let mut by_category: BTreeMap<&str, Vec<&TaskDigest>> = BTreeMap::new();
    for digest in unsolved {
        let category = digest.failure_category.map_or("none", |c| c.as_str());
        by_category.entry(category).or_default().push(digest);
    }
    let mut clusters: Vec<FailureCluster> = by_category
        .into_iter()
        .map(|(category, tasks)| {
            let mut signatures: BTreeMap<String, u32> = BTreeMap::new();
            for digest in &tasks {
                for name in digest.signatures.keys() {
                    *signatures.entry(name.clone()).or_default() += 1;
                }
            }
            let evidence = tasks
                .iter()
                .flat_map(|d| d.episodes.first().cloned())
                .take(CLUSTER_EVIDENCE)
                .collect();
            FailureCluster {
                category: category.to_string(),
                tasks: tasks.iter().map(|d| d.task_id.clone()).collect(),
                signatures: ranked(&signatures),
                evidence,
            }
        })
        .collect();
    clusters.sort_by(|a, b| {
        b.tasks
            .len()
            .cmp(&a.tasks.len())
            .then(a.category.cmp(&b.category))
    });
    clusters
}

fn top_themes(clusters: &[FailureCluster], signatures: &BTreeMap<String, u32>) -> Vec<String> {
    let mut themes: Vec<String> = clusters
        .iter()
        .map(|c| format!("{}: {} tasks", c.category, c.tasks.len()))
        .collect();
    themes.extend(
        ranked(signatures)
            .into_iter()
            .map(|(name, tasks)| format!("{name}: {tasks} tasks")),
    );
    themes.truncate(TOP_THEMES);
    themes
}

pub fn bucket_name(bucket: Bucket) -> &'static str {
    match bucket {
        Bucket::Prompt => "prompt",
        Bucket::Tools => "tools",
        Bucket::Config => "config",
        Bucket::Processor => "processor",
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

fn yaml_list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        let _ = writeln!(out, "{key}: []");
        return;
    }
    let _ = writeln!(out, "{key}:");
    for item in items {
        let _ = writeln!(out, "  - {}", yaml_string(item));
    }
}

fn rate_text(rate: &HitRate) -> String {
    match rate.rate() {
        Some(value) => format!("{}/{} ({value:.2})", rate.hits, rate.tries),
        None => "untried".to_string(),
    }
}

impl Landscape {
    /// `landscape.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the landscape serializes")
    }

    /// `landscape.md`: YAML front matter, then the sections.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from("---\n");
        let _ = writeln!(out, "round: {}", self.round);
        yaml_list(&mut out, "top_themes", &self.top_themes);
        yaml_list(&mut out, "persistent_failures", &self.persistent_failures);
        yaml_list(
            &mut out,
            "unattempted_directions",
            &self.unattempted_directions,
        );
        out.push_str("---\n\n");
        let _ = writeln!(out, "# Landscape, round {}\n", self.round);
        let _ = writeln!(
            out,
            "{} tasks: {} solved, {} flaky, {} failed.\n",
            self.tasks, self.solved, self.flaky, self.failed
        );
        out.push_str("## Failure clusters\n\n");
        if self.clusters.is_empty() {
            out.push_str("None: every task was solved.\n\n");
        } else {
            out.push_str(
                "| category | tasks | signatures (tasks) | evidence |\n|---|---|---|---|\n",
            );
            for cluster in &self.clusters {
                let signatures: Vec<String> = cluster
                    .signatures
                    .iter()
                    .map(|(name, tasks)| format!("{name} ({tasks})"))
                    .collect();
                let evidence: Vec<String> =
                    cluster.evidence.iter().map(|p| format!("`{p}`")).collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    cluster.category,
                    cluster.tasks.len(),
                    signatures.join(", "),
                    evidence.join(" ")
                );
            }
            out.push('\n');
        }
        out.push_str("## Regressions to address\n\n");
        if self.regressions.is_empty() {
            out.push_str("None.\n\n");
        } else {
            for regression in &self.regressions {
                let _ = writeln!(
                    out,
                    "- `{}`: {} → {}",
                    regression.task, regression.before, regression.after
                );
            }
            out.push('\n');
        }
        out.push_str("## Attempted edits\n\n");
        if self.edits.is_empty() {
            out.push_str("None yet.\n\n");
        } else {
            out.push_str("| round | candidate | operator | buckets | verdict | hit |\n|---|---|---|---|---|---|\n");
            for edit in &self.edits {
                let buckets: Vec<&str> = edit.buckets.iter().map(|b| bucket_name(*b)).collect();
                let verdict = serde_json::to_value(edit.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    edit.round,
                    edit.candidate_id,
                    edit.operator,
                    buckets.join("+"),
                    verdict,
                    if edit.hit { "yes" } else { "no" }
                );
            }
            out.push('\n');
        }
        out.push_str("## Hit rate per bucket\n\n");
        for bucket in ALL_BUCKETS {
            let rate = self
                .bucket_hit_rates
                .get(&bucket)
                .copied()
                .unwrap_or_default();
            let _ = writeln!(out, "- {}: {}", bucket_name(bucket), rate_text(&rate));
        }
        out.push_str("\n## Untried buckets\n\n");
        if self.untried_buckets.is_empty() {
            out.push_str("None.\n");
        } else {
            let names: Vec<&str> = self
                .untried_buckets
                .iter()
                .map(|b| bucket_name(*b))
                .collect();
            let _ = writeln!(out, "{}", names.join(", "));
        }
        out.push_str("\n## Strategy concern (the Critic's, verbatim)\n\n");
        match &self.strategy_concern {
            Some(concern) => {
                let _ = writeln!(out, "> {}", concern.replace('\n', "\n> "));
            }
            None => out.push_str("None.\n"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::tests::{outcome, trajectory};
    use crate::digest::{Episode, digest_tasks};

    fn digests(results: &[(&str, bool, &str)]) -> Vec<TaskDigest> {
        let outcomes: Vec<_> = results
            .iter()
            .map(|(task, success, termination)| outcome("alfworld", task, *success, termination))
            .collect();
        let trajectories: Vec<_> = results
            .iter()
            .map(|(task, success, _)| {
                let observation = if *success { "ok" } else { "Nothing happens." };
                trajectory(
                    "alfworld",
                    "r",
                    task,
                    0,
                    "",
                    &["x", "y"],
                    &[observation, observation],
                )
            })
            .collect();
        let episodes: Vec<Episode<'_>> = outcomes
            .iter()
            .zip(&trajectories)
            .map(|(outcome, trajectory)| Episode {
                outcome,
                trajectory: Some(trajectory),
            })
            .collect();
        digest_tasks(&episodes, &|_| String::new(), None)
    }

    #[test]
    fn the_landscape_counts_clusters_regressions_and_hit_rates() {
        let previous = digests(&[
            ("a", true, "env_done"),
            ("b", false, "max_steps"),
            ("c", true, "env_done"),
        ]);
        let current = digests(&[
            ("a", false, "max_steps"),
            ("b", false, "max_steps"),
            ("c", true, "env_done"),
            ("d", false, "loop_detected"),
        ]);
        let history = vec![
            EditRecord {
                round: 1,
                candidate_id: "C-R1-01".into(),
                operator: "strategy_lines".into(),
                buckets: vec![Bucket::Prompt],
                targets: vec!["invalid_action".into()],
                verdict: EditVerdict::Shipped,
                hit: true,
            },
            EditRecord {
                round: 1,
                candidate_id: "C-R1-02".into(),
                operator: "loop_breaker".into(),
                buckets: vec![Bucket::Config],
                targets: vec![],
                verdict: EditVerdict::RejectedByGate,
                hit: false,
            },
        ];
        let landscape = plan(PlanInput {
            round: 2,
            digests: &current,
            previous: Some(&previous),
            history: &history,
            strategy_concern: Some("prompt lever fatigued"),
        });
        assert_eq!((landscape.solved, landscape.failed), (1, 3));
        assert_eq!(landscape.persistent_failures, vec!["b".to_string()]);
        assert_eq!(landscape.regressions.len(), 1);
        assert_eq!(landscape.regressions[0].task, "a");
        assert_eq!(landscape.regressions[0].before, "1/1");
        // Three unsolved tasks all show invalid actions; loop_detected gives a loop category.
        assert_eq!(landscape.signature_tasks["invalid_action"], 3);
        let categories: Vec<&str> = landscape
            .clusters
            .iter()
            .map(|c| c.category.as_str())
            .collect();
        assert_eq!(categories, ["invalid_actions", "loop"]);
        assert_eq!(landscape.clusters[0].tasks, ["a", "b"]);
        assert_eq!(
            landscape.bucket_hit_rates[&Bucket::Prompt].rate(),
            Some(1.0)
        );
        assert_eq!(landscape.operator_hit_rates["loop_breaker"].hits, 0);
        assert_eq!(
            landscape.untried_buckets,
            vec![Bucket::Tools, Bucket::Processor]
        );
        assert!(
            !landscape
                .unattempted_directions
                .iter()
                .any(|d| d.contains("invalid_action")),
            "invalid_action was targeted: {:?}",
            landscape.unattempted_directions
        );
        assert!(
            landscape
                .unattempted_directions
                .iter()
                .any(|d| d.contains("step_limit"))
        );

        let markdown = landscape.to_markdown();
        assert!(
            markdown.starts_with("---\nround: 2\ntop_themes:\n  - \"invalid_actions: 2 tasks\"\n")
        );
        assert!(markdown.contains("persistent_failures:\n  - \"b\"\n"));
        assert!(markdown.contains("## Regressions to address\n\n- `a`: 1/1 → 0/1"));
        assert!(markdown.contains("- prompt: 1/1 (1.00)"));
        assert!(markdown.contains("> prompt lever fatigued"));
        let json: Landscape = serde_json::from_str(&landscape.to_json()).unwrap();
        assert_eq!(json, landscape);
        // Deterministic.
        let again = plan(PlanInput {
            round: 2,
            digests: &current,
            previous: Some(&previous),
            history: &history,
            strategy_concern: Some("prompt lever fatigued"),
        });
        assert_eq!(again.to_markdown(), markdown);
    }

    #[test]
    fn an_all_solved_round_has_no_clusters() {
        let current = digests(&[("a", true, "env_done")]);
        let landscape = plan(PlanInput {
            round: 0,
            digests: &current,
            previous: None,
            history: &[],
            strategy_concern: None,
        });
        assert!(landscape.clusters.is_empty());
        assert_eq!(landscape.untried_buckets.len(), 4);
        let markdown = landscape.to_markdown();
        assert!(markdown.contains("persistent_failures: []"));
        assert!(markdown.contains("None: every task was solved."));
    }
}
