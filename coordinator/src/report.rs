//! The run report: statistics over outcomes (plain functions) and their rendering as `report.md`
//! and as the summary table printed at the end of `kiln run`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use kiln_protocol::{Outcome, Termination, Usage};

use crate::config::{RunConfig, UserMode};

/// One reward component across the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComponentSummary {
    /// Episodes where the component was judged.
    pub judged: usize,
    /// Episodes where no judge was configured for it.
    pub unjudged: usize,
    /// Episodes where it has no value for another reason (the episode errored before scoring).
    pub missing: usize,
    /// Mean over judged episodes.
    pub mean: Option<f64>,
}

/// pass^k at one k.
#[derive(Debug, Clone, PartialEq)]
pub struct PassHatK {
    pub k: u32,
    /// Counting strict success.
    pub strict: f64,
    /// Counting success over judged components only.
    pub judged_only: f64,
    /// Tasks with at least k recorded attempts (the others are left out of the mean).
    pub tasks: usize,
}

/// One row of the per-task table.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub task_id: String,
    pub trials: usize,
    pub successes: usize,
    pub judged_only_successes: usize,
    /// Mean of [`Outcome::reward_strict`] (an unjudged component counts as not passed).
    pub mean_reward_strict: f64,
    /// Mean of `reward` (unjudged components left out, as if passed).
    pub mean_reward_judged_only: f64,
    pub terminations: BTreeMap<String, usize>,
    pub errors: usize,
}

/// One errored episode.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRow {
    pub task_id: String,
    pub attempt: u32,
    pub termination: String,
    pub message: String,
}

/// Everything the report says, computed from `run.toml` and the outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    /// Keys the run expects (tasks × attempts).
    pub expected: usize,
    /// Outcomes recorded for expected keys.
    pub recorded: usize,
    pub successes: usize,
    pub judged_only_successes: usize,
    /// Episodes with at least one unjudged component.
    pub unjudged_episodes: usize,
    pub pass_hat_k: Vec<PassHatK>,
    /// Mean of [`Outcome::reward_strict`]: the headline mean reward (an unjudged component
    /// counts as not passed, as in strict success).
    pub mean_reward_strict: f64,
    /// Mean of `reward`, which leaves unjudged components out (as if passed).
    pub mean_reward_judged_only: f64,
    pub components: BTreeMap<String, ComponentSummary>,
    pub terminations: BTreeMap<String, usize>,
    pub errors: Vec<ErrorRow>,
    pub tasks: Vec<TaskRow>,
    pub usage: Usage,
    /// Outcomes without a `db_hash` (τ² records one for every scored episode).
    pub missing_db_hash: usize,
    /// Sum of episode wall times.
    pub episode_wall_ms: u64,
    /// Time during which at least one episode ran (the union of episode intervals), so pauses
    /// between resumed sessions do not count.
    pub active_ms: u64,
}

impl RunStats {
    pub fn success_rate(&self) -> Option<f64> {
        ratio(self.successes, self.recorded)
    }

    pub fn judged_only_rate(&self) -> Option<f64> {
        ratio(self.judged_only_successes, self.recorded)
    }

    /// Episodes recorded per second of active time.
    pub fn episodes_per_second(&self) -> Option<f64> {
        (self.active_ms > 0).then(|| self.recorded as f64 / (self.active_ms as f64 / 1000.0))
    }
}

fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// pass^k of one task: the chance that k attempts drawn without replacement from its `trials` all
/// succeed, C(successes, k) / C(trials, k). `None` when the task has fewer than k trials.
pub fn pass_hat_k(successes: usize, trials: usize, k: usize) -> Option<f64> {
    if k == 0 || trials < k || successes > trials {
        return None;
    }
    if successes < k {
        return Some(0.0);
    }
    // C(s, k) / C(n, k) = Π_{i<k} (s - i) / (n - i)
    Some(
        (0..k)
            .map(|i| (successes - i) as f64 / (trials - i) as f64)
            .product(),
    )
}

/// Merged length of possibly overlapping [start, end) intervals.
pub fn union_length(intervals: &mut [(u64, u64)]) -> u64 {
    intervals.sort_unstable();
    let mut total = 0;
    let mut current: Option<(u64, u64)> = None;
    for &(start, end) in intervals.iter() {
        let end = end.max(start);
        current = match current {
            Some((open_start, open_end)) if start <= open_end => {
                Some((open_start, open_end.max(end)))
            }
            Some((open_start, open_end)) => {
                total += open_end - open_start;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0, |(start, end)| end - start)
}

/// The name a termination has in files (`agent_stop`).
pub fn termination_name(termination: Termination) -> String {
    serde_json::to_value(termination)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Statistics over the outcomes of the run's expected keys (others are ignored).
pub fn compute_stats(config: &RunConfig, outcomes: &[Outcome]) -> RunStats {
    let expected_tasks: HashMap<&str, usize> = config
        .tasks
        .iter()
        .enumerate()
        .map(|(index, task)| (task.as_str(), index))
        .collect();
    let counted: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| {
            outcome.attempt < config.attempts
                && expected_tasks.contains_key(outcome.task_id.as_str())
        })
        .collect();

    let mut stats = RunStats {
        expected: config.tasks.len() * config.attempts as usize,
        recorded: counted.len(),
        successes: counted.iter().filter(|outcome| outcome.success).count(),
        judged_only_successes: counted
            .iter()
            .filter(|outcome| outcome.success_judged_only)
            .count(),
        unjudged_episodes: counted
            .iter()
            .filter(|outcome| outcome.components.values().any(|c| c.unjudged))
            .count(),
        pass_hat_k: Vec::new(),
        mean_reward_strict: mean(counted.iter().map(|outcome| outcome.reward_strict()))
            .unwrap_or(0.0),
        mean_reward_judged_only: mean(counted.iter().map(|outcome| outcome.reward)).unwrap_or(0.0),
        components: component_summaries(&counted),
        terminations: BTreeMap::new(),
        errors: Vec::new(),
        tasks: Vec::new(),
        usage: Usage::default(),
        missing_db_hash: counted
            .iter()
            .filter(|outcome| outcome.db_hash.is_none())
            .count(),
        episode_wall_ms: counted.iter().map(|outcome| outcome.wall_ms).sum(),
        active_ms: union_length(
            &mut counted
                .iter()
                .map(|o| (o.started_at, o.finished_at))
                .collect::<Vec<_>>(),
        ),
    };
    for outcome in &counted {
        *stats
            .terminations
            .entry(termination_name(outcome.termination))
            .or_default() += 1;
        stats.usage.add(outcome.usage);
        if let Some(message) = &outcome.error {
            stats.errors.push(ErrorRow {
                task_id: outcome.task_id.clone(),
                attempt: outcome.attempt,
                termination: termination_name(outcome.termination),
                message: message.clone(),
            });
        }
    }
    stats
        .errors
        .sort_by_key(|row| (expected_tasks[row.task_id.as_str()], row.attempt));
    stats.tasks = task_rows(config, &counted);
    stats.pass_hat_k = (1..=config.attempts)
        .map(|k| pass_hat_k_over_tasks(&stats.tasks, k))
        .collect();
    stats
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, count) = values.fold((0.0, 0usize), |(sum, count), value| {
        (sum + value, count + 1)
    });
    (count > 0).then(|| sum / count as f64)
}

fn component_summaries(outcomes: &[&Outcome]) -> BTreeMap<String, ComponentSummary> {
    let mut sums: BTreeMap<String, (ComponentSummary, f64)> = BTreeMap::new();
    for outcome in outcomes {
        for (name, score) in &outcome.components {
            let (summary, sum) = sums.entry(name.clone()).or_default();
            match (score.unjudged, score.value) {
                (true, _) => summary.unjudged += 1,
                (false, Some(value)) => {
                    summary.judged += 1;
                    *sum += value;
                }
                (false, None) => summary.missing += 1,
            }
        }
    }
    sums.into_iter()
        .map(|(name, (mut summary, sum))| {
            summary.mean = (summary.judged > 0).then(|| sum / summary.judged as f64);
            (name, summary)
        })
        .collect()
}

fn task_rows(config: &RunConfig, outcomes: &[&Outcome]) -> Vec<TaskRow> {
    let mut by_task: HashMap<&str, Vec<&Outcome>> = HashMap::new();
    for outcome in outcomes {
        by_task
            .entry(outcome.task_id.as_str())
            .or_default()
            .push(outcome);
    }
    config
        .tasks
        .iter()
        .map(|task_id| {
            let trials = by_task
                .get(task_id.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let mut terminations = BTreeMap::new();
            for outcome in trials {
                *terminations
                    .entry(termination_name(outcome.termination))
                    .or_default() += 1;
            }
            TaskRow {
                task_id: task_id.clone(),
                trials: trials.len(),
                successes: trials.iter().filter(|outcome| outcome.success).count(),
                judged_only_successes: trials
                    .iter()
                    .filter(|outcome| outcome.success_judged_only)
                    .count(),
                mean_reward_strict: mean(trials.iter().map(|outcome| outcome.reward_strict()))
                    .unwrap_or(0.0),
                mean_reward_judged_only: mean(trials.iter().map(|outcome| outcome.reward))
                    .unwrap_or(0.0),
                terminations,
                errors: trials
                    .iter()
                    .filter(|outcome| outcome.error.is_some())
                    .count(),
            }
        })
        .collect()
}

fn pass_hat_k_over_tasks(rows: &[TaskRow], k: u32) -> PassHatK {
    let k_usize = k as usize;
    let strict: Vec<f64> = rows
        .iter()
        .filter_map(|row| pass_hat_k(row.successes, row.trials, k_usize))
        .collect();
    let judged_only: Vec<f64> = rows
        .iter()
        .filter_map(|row| pass_hat_k(row.judged_only_successes, row.trials, k_usize))
        .collect();
    PassHatK {
        k,
        strict: mean(strict.iter().copied()).unwrap_or(0.0),
        judged_only: mean(judged_only.iter().copied()).unwrap_or(0.0),
        tasks: strict.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn percent(part: usize, whole: usize) -> String {
    match ratio(part, whole) {
        Some(value) => format!("{part}/{whole} ({:.1}%)", value * 100.0),
        None => format!("{part}/{whole}"),
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    const MAX: usize = 200;
    let flat: String = text.replace('|', "\\|").replace(['\n', '\r'], " ");
    if flat.chars().count() <= MAX {
        return flat;
    }
    let cut: String = flat.chars().take(MAX).collect();
    format!("{cut}…")
}

fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The domain named in a τ² environment id (`tau2-airline` → `airline`).
fn tau2_domain(env: &str) -> Option<&str> {
    env.strip_prefix("tau2-")
}

/// What the user mode means for the numbers.
pub fn user_mode_note(user: &UserMode) -> String {
    match user {
        UserMode::Scripted => "scripted (offline, deterministic). Scores with the scripted user are not comparable to \
             official τ² numbers, which use an LLM user simulator"
            .to_string(),
        UserMode::Model(spec) => format!("LLM user simulator `{spec}`"),
        UserMode::None => "none: the agent works from the task instruction alone".to_string(),
    }
}

fn judge_note(config: &RunConfig) -> String {
    match &config.judge {
        Some(judge) => format!("`{judge}`"),
        None => {
            "none configured: components that need a judge (τ² NL assertions) are reported unjudged"
                .to_string()
        }
    }
}

fn task_scope(config: &RunConfig) -> String {
    let scope = format!(
        "`{}` — {} of {} tasks ({})",
        config.split,
        config.tasks.len(),
        config.split_size,
        config.task_selection
    );
    match (tau2_domain(&config.env), provenance(&config.env)) {
        (Some(domain), _) => format!("{scope}; official τ²-bench {domain} tasks"),
        (None, Some(provenance)) => format!("{scope}; {provenance}"),
        (None, None) => scope,
    }
}

/// Where the tasks of an environment without official data here come from, said in every report.
pub fn provenance(env: &str) -> Option<&'static str> {
    match env {
        "alfworld" => Some(
            "generated ALFWorld-format tasks (seeded, over the ALFRED floor plans; not the official game files)",
        ),
        "webshop" => Some(
            "synthetic catalog (seeded WebShop-format products and goals; not the real WebShop data)",
        ),
        _ => None,
    }
}

/// `report.md`.
pub fn render_report(config: &RunConfig, stats: &RunStats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Kiln run `{}`\n", config.run_id);
    render_measured(&mut out, config, stats);
    render_results(&mut out, stats);
    render_pass_hat_k(&mut out, stats);
    render_components(&mut out, stats);
    render_terminations(&mut out, stats);
    render_errors(&mut out, stats);
    render_usage(&mut out, stats);
    render_tasks(&mut out, stats);
    out
}

fn render_measured(out: &mut String, config: &RunConfig, stats: &RunStats) {
    let _ = writeln!(out, "## What was measured\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Environment | `{}` |", config.env);
    let _ = writeln!(out, "| Split and tasks | {} |", task_scope(config));
    let _ = writeln!(
        out,
        "| Attempts | {} per task ({} episodes expected, {} recorded) |",
        config.attempts, stats.expected, stats.recorded
    );
    let _ = writeln!(out, "| Agent model | `{}` |", config.model);
    let _ = writeln!(
        out,
        "| Harness | `{}` (`{}`) |",
        config.harness.name, config.harness.hash
    );
    if tau2_domain(&config.env).is_some() {
        let _ = writeln!(out, "| User | {} |", user_mode_note(&config.user));
    }
    let _ = writeln!(out, "| Judge | {} |", judge_note(config));
    let _ = writeln!(
        out,
        "| Kiln | {} (run created {}) |",
        config.kiln_version, config.created_at
    );
    let _ = writeln!(out);
    if config.model == kiln_protocol::ModelSpec::Oracle {
        let _ = writeln!(
            out,
            "> The `oracle` model replays each task's gold actions: this run checks the environment and its \
             scorer, not an agent.\n"
        );
    }
    if let Some(provenance) = provenance(&config.env) {
        let _ = writeln!(out, "> **Tasks:** {provenance}.\n");
    }
    if config.user == UserMode::Scripted && tau2_domain(&config.env).is_some() {
        let _ = writeln!(
            out,
            "> **Scripted user.** These scores are not comparable to official τ² numbers, which use an LLM \
             user simulator.\n"
        );
    }
    if stats.recorded < stats.expected {
        let _ = writeln!(
            out,
            "> **Incomplete run.** {} of {} episodes are missing; resume with `kiln run --resume DIR`.\n",
            stats.expected - stats.recorded,
            stats.expected
        );
    }
}

fn render_results(out: &mut String, stats: &RunStats) {
    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(out, "| Metric | Value |\n|---|---|");
    let _ = writeln!(
        out,
        "| Success (strict) | {} |",
        percent(stats.successes, stats.recorded)
    );
    if stats.unjudged_episodes > 0 {
        let _ = writeln!(
            out,
            "| Success (judged components only) | {} |",
            percent(stats.judged_only_successes, stats.recorded)
        );
    }
    let _ = writeln!(
        out,
        "| Mean reward (strict) | {:.3} |",
        stats.mean_reward_strict
    );
    if stats.unjudged_episodes > 0 {
        let _ = writeln!(
            out,
            "| Mean reward (judged components only) | {:.3} |",
            stats.mean_reward_judged_only
        );
    }
    let _ = writeln!(out, "| Episodes with errors | {} |", stats.errors.len());
    let _ = writeln!(out);
    if stats.unjudged_episodes > 0 {
        let _ = writeln!(
            out,
            "> **Unjudged components.** {} episodes have components no judge scored. The headline figures \
             (success, pass^k, mean reward) are strict: they count such an episode as not successful and \
             its reward as 0. The judged-only figures count only the judged components. Configure \
             `--judge SPEC` to score them.\n",
            stats.unjudged_episodes
        );
    }
}

fn render_pass_hat_k(out: &mut String, stats: &RunStats) {
    let _ = writeln!(out, "### pass^k\n");
    let _ = writeln!(
        out,
        "pass^k = C(successes, k) / C(attempts, k), averaged over tasks.\n"
    );
    let show_judged = stats.unjudged_episodes > 0;
    if show_judged {
        let _ = writeln!(
            out,
            "| k | strict | judged-only | tasks |\n|---|---|---|---|"
        );
    } else {
        let _ = writeln!(out, "| k | pass^k | tasks |\n|---|---|---|");
    }
    for row in &stats.pass_hat_k {
        if show_judged {
            let _ = writeln!(
                out,
                "| {} | {:.3} | {:.3} | {} |",
                row.k, row.strict, row.judged_only, row.tasks
            );
        } else {
            let _ = writeln!(out, "| {} | {:.3} | {} |", row.k, row.strict, row.tasks);
        }
    }
    let _ = writeln!(out);
}

fn render_components(out: &mut String, stats: &RunStats) {
    let _ = writeln!(out, "### Reward components\n");
    if stats.components.is_empty() {
        let _ = writeln!(out, "No components were scored.\n");
        return;
    }
    let _ = writeln!(
        out,
        "| Component | Mean (judged) | Judged | Unjudged | Missing |\n|---|---|---|---|---|"
    );
    for (name, summary) in &stats.components {
        let mean = summary
            .mean
            .map_or_else(|| "—".to_string(), |mean| format!("{mean:.3}"));
        let _ = writeln!(
            out,
            "| {name} | {mean} | {} | {} | {} |",
            summary.judged, summary.unjudged, summary.missing
        );
    }
    let _ = writeln!(out);
}

fn render_terminations(out: &mut String, stats: &RunStats) {
    let _ = writeln!(out, "### Terminations\n");
    let _ = writeln!(out, "| Termination | Episodes |\n|---|---|");
    for (name, count) in &stats.terminations {
        let _ = writeln!(out, "| {name} | {count} |");
    }
    let _ = writeln!(out);
}

fn render_errors(out: &mut String, stats: &RunStats) {
    const SHOWN: usize = 50;
    let _ = writeln!(out, "### Errors\n");
    if stats.errors.is_empty() {
        let _ = writeln!(out, "None.\n");
        return;
    }
    let _ = writeln!(
        out,
        "| Task | Attempt | Termination | Error |\n|---|---|---|---|"
    );
    for row in stats.errors.iter().take(SHOWN) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            cell(&row.task_id),
            row.attempt,
            row.termination,
            cell(&row.message)
        );
    }
    if stats.errors.len() > SHOWN {
        let _ = writeln!(
            out,
            "\n…and {} more (see `outcomes.jsonl`).",
            stats.errors.len() - SHOWN
        );
    }
    let _ = writeln!(out);
}

fn render_usage(out: &mut String, stats: &RunStats) {
    let _ = writeln!(out, "### Usage and time\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let usage = stats.usage;
    let _ = writeln!(
        out,
        "| Tokens | {} prompt + {} completion = {} |",
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens()
    );
    let _ = writeln!(out, "| Model calls | {} |", usage.calls);
    if stats.recorded > 0 {
        let _ = writeln!(
            out,
            "| Tokens per episode | {:.0} |",
            usage.total_tokens() as f64 / stats.recorded as f64
        );
    }
    let _ = writeln!(
        out,
        "| Episode wall time (sum) | {} |",
        seconds(stats.episode_wall_ms)
    );
    let _ = writeln!(out, "| Active wall time | {} |", seconds(stats.active_ms));
    let throughput = stats
        .episodes_per_second()
        .map_or_else(|| "—".to_string(), |rate| format!("{rate:.2} tasks/s"));
    let _ = writeln!(out, "| Throughput | {throughput} |");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Active wall time is the time during which at least one episode ran; pauses between resumed sessions \
         are not counted.\n"
    );
}

fn render_tasks(out: &mut String, stats: &RunStats) {
    let _ = writeln!(out, "## Per task\n");
    let _ = writeln!(
        out,
        "| Task | Attempts | Success | Judged-only | Mean reward | Judged-only reward | Terminations | Errors |\n|---|---|---|---|---|---|---|---|"
    );
    for row in &stats.tasks {
        let terminations: Vec<String> = row
            .terminations
            .iter()
            .map(|(name, count)| format!("{name}×{count}"))
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {} | {} |",
            cell(&row.task_id),
            row.trials,
            row.successes,
            row.judged_only_successes,
            row.mean_reward_strict,
            row.mean_reward_judged_only,
            terminations.join(", "),
            row.errors
        );
    }
}

/// The one-screen summary printed at the end of a run.
pub fn render_summary(config: &RunConfig, stats: &RunStats, dir: &Path) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("run", config.run_id.clone()),
        (
            "env",
            format!(
                "{} (split {}, {} tasks × {} {})",
                config.env,
                config.split,
                config.tasks.len(),
                config.attempts,
                if config.attempts == 1 {
                    "attempt"
                } else {
                    "attempts"
                }
            ),
        ),
        ("model", config.model.to_string()),
        (
            "harness",
            format!(
                "{} ({})",
                config.harness.name,
                short_hash(&config.harness.hash)
            ),
        ),
        (
            "user",
            match config.user {
                _ if tau2_domain(&config.env).is_none() => "n/a".to_string(),
                UserMode::Scripted => {
                    "scripted (not comparable to official τ² numbers)".to_string()
                }
                ref other => other.to_string(),
            },
        ),
        (
            "judge",
            config.judge.clone().unwrap_or_else(|| "none".to_string()),
        ),
        (
            "episodes",
            format!(
                "{}/{} recorded, {} with errors",
                stats.recorded,
                stats.expected,
                stats.errors.len()
            ),
        ),
        ("success", percent(stats.successes, stats.recorded)),
    ];
    if stats.unjudged_episodes > 0 {
        rows.push((
            "judged-only",
            format!(
                "{} ({} episodes unjudged)",
                percent(stats.judged_only_successes, stats.recorded),
                stats.unjudged_episodes
            ),
        ));
    }
    let pass: Vec<String> = stats
        .pass_hat_k
        .iter()
        .map(|row| format!("k={} {:.3}", row.k, row.strict))
        .collect();
    rows.push(("pass^k", pass.join("  ")));
    let mean_reward = if stats.unjudged_episodes > 0 {
        format!(
            "{:.3} strict ({:.3} judged-only)",
            stats.mean_reward_strict, stats.mean_reward_judged_only
        )
    } else {
        format!("{:.3}", stats.mean_reward_strict)
    };
    rows.push(("mean reward", mean_reward));
    if !stats.terminations.is_empty() {
        let terminations: Vec<String> = stats
            .terminations
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        rows.push(("terminations", terminations.join(", ")));
    }
    rows.push((
        "tokens",
        format!(
            "{} ({} calls)",
            stats.usage.total_tokens(),
            stats.usage.calls
        ),
    ));
    let throughput = stats
        .episodes_per_second()
        .map_or_else(String::new, |rate| format!(", {rate:.2} tasks/s"));
    rows.push((
        "wall time",
        format!("{} active{throughput}", seconds(stats.active_ms)),
    ));
    rows.push((
        "report",
        dir.join(crate::store::REPORT).display().to_string(),
    ));

    let width = rows.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let _ = writeln!(out, "  {key:<width$}  {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_config;
    use crate::testing::outcome;
    use kiln_protocol::ComponentScore;

    #[test]
    fn pass_hat_k_matches_the_combinatorial_definition() {
        // 3 of 4 trials succeed: pass^1 = 3/4, pass^2 = C(3,2)/C(4,2) = 3/6, pass^4 = 0.
        assert_eq!(pass_hat_k(3, 4, 1), Some(0.75));
        assert_eq!(pass_hat_k(3, 4, 2), Some(0.5));
        assert_eq!(pass_hat_k(3, 4, 3), Some(0.25));
        assert_eq!(pass_hat_k(3, 4, 4), Some(0.0));
        assert_eq!(pass_hat_k(2, 2, 2), Some(1.0));
        assert_eq!(pass_hat_k(1, 1, 2), None);
        assert_eq!(pass_hat_k(0, 3, 0), None);
    }

    #[test]
    fn union_length_merges_overlaps_and_skips_gaps() {
        assert_eq!(union_length(&mut [(0, 10), (5, 15), (100, 110)]), 25);
        assert_eq!(union_length(&mut [(5, 6), (0, 10)]), 10);
        assert_eq!(union_length(&mut []), 0);
    }

    fn unjudged(mut outcome: Outcome) -> Outcome {
        outcome.components.insert(
            "NL_ASSERTION".into(),
            ComponentScore {
                value: None,
                unjudged: true,
                detail: None,
            },
        );
        outcome.success = false;
        outcome
    }

    #[test]
    fn stats_count_strict_and_judged_only_success_and_pass_hat_k() {
        let config = sample_config(); // tasks 0 and 1, 2 attempts
        let mut errored = outcome(&config.run_id, "1", 1, false);
        errored.error = Some("HTTP 500 | upstream".into());
        errored.termination = Termination::ModelError;
        errored.components.clear();
        errored.db_hash = None;
        let outcomes = vec![
            unjudged(outcome(&config.run_id, "0", 0, true)),
            unjudged(outcome(&config.run_id, "0", 1, true)),
            outcome(&config.run_id, "1", 0, true),
            errored,
            outcome(&config.run_id, "not-in-run", 0, true),
        ];
        let stats = compute_stats(&config, &outcomes);
        assert_eq!((stats.expected, stats.recorded), (4, 4));
        assert_eq!(stats.successes, 1);
        assert_eq!(stats.judged_only_successes, 3);
        assert_eq!(stats.unjudged_episodes, 2);
        assert_eq!(stats.missing_db_hash, 1);
        // Task 0: 0/2 strict, 2/2 judged-only; task 1: 1/2 either way.
        assert_eq!(
            stats.pass_hat_k[0],
            PassHatK {
                k: 1,
                strict: 0.25,
                judged_only: 0.75,
                tasks: 2
            }
        );
        assert_eq!(
            stats.pass_hat_k[1],
            PassHatK {
                k: 2,
                strict: 0.0,
                judged_only: 0.5,
                tasks: 2
            }
        );
        // Unjudged NL assertions: the judged DB component gives reward 1, which the judged-only
        // mean keeps and the strict mean counts as 0 (task 0's two episodes).
        assert_eq!(outcomes[0].reward, 1.0);
        assert_eq!(outcomes[0].reward_strict(), 0.0);
        assert_eq!(outcomes[2].reward_strict(), 1.0);
        assert_eq!(stats.mean_reward_strict, 0.25);
        assert_eq!(stats.mean_reward_judged_only, 0.75);
        assert_eq!(
            (
                stats.tasks[0].mean_reward_strict,
                stats.tasks[0].mean_reward_judged_only
            ),
            (0.0, 1.0)
        );
        let db = &stats.components["DB"];
        assert_eq!((db.judged, db.unjudged, db.mean), (3, 0, Some(1.0)));
        let nl = &stats.components["NL_ASSERTION"];
        assert_eq!((nl.judged, nl.unjudged, nl.mean), (0, 2, None));
        assert_eq!(stats.terminations["agent_stop"], 3);
        assert_eq!(stats.terminations["model_error"], 1);
        assert_eq!(stats.errors.len(), 1);
        assert_eq!(stats.usage.calls, 4);
        assert_eq!(stats.tasks[1].errors, 1);

        let report = render_report(&config, &stats);
        assert!(
            report.contains("| Success (strict) | 1/4 (25.0%) |"),
            "{report}"
        );
        assert!(
            report.contains("| Success (judged components only) | 3/4 (75.0%) |"),
            "{report}"
        );
        assert!(
            report.contains("| Mean reward (strict) | 0.250 |"),
            "{report}"
        );
        assert!(
            report.contains("| Mean reward (judged components only) | 0.750 |"),
            "{report}"
        );
        assert!(
            report.contains("The headline figures (success, pass^k, mean reward) are strict"),
            "{report}"
        );
        assert!(
            report.contains("| 0 | 2 | 0 | 2 | 0.000 | 1.000 | agent_stop×2 | 0 |"),
            "{report}"
        );
        let summary = render_summary(&config, &stats, Path::new("runs/x"));
        assert!(
            summary.contains("mean reward   0.250 strict (0.750 judged-only)"),
            "{summary}"
        );
        assert!(report.contains("not comparable to official τ² numbers"));
        assert!(report.contains("official τ²-bench airline tasks"));
        assert!(
            report.contains("HTTP 500 \\| upstream"),
            "pipes must be escaped: {report}"
        );
        assert!(
            report.contains("| NL_ASSERTION | — | 0 | 2 | 0 |"),
            "{report}"
        );
    }

    #[test]
    fn judged_only_columns_appear_only_when_something_is_unjudged() {
        let config = sample_config();
        let outcomes = vec![outcome(&config.run_id, "0", 0, true)];
        let stats = compute_stats(&config, &outcomes);
        let report = render_report(&config, &stats);
        assert!(!report.contains("judged components only"));
        assert!(
            report.contains("| Mean reward (strict) | 1.000 |"),
            "{report}"
        );
        assert!(report.contains("Incomplete run"));
        let summary = render_summary(&config, &stats, Path::new("runs/x"));
        assert!(summary.contains("1/1 (100.0%)"), "{summary}");
        assert!(!summary.contains("judged-only"));
        assert!(summary.contains("mean reward   1.000\n"), "{summary}");
        assert!(summary.contains("runs/x/report.md"));
    }
}
