//! The Gate: the deterministic accept/reject decision for one candidate, in this order (the first
//! failure stops): canonical form → smoke episode → per-task paired no-regression check on the
//! gate split → aggregate paired test or net gain (minus the critic's budget-widening charge) →
//! ship.
//!
//! Round 0 ([`calibrate`]) measures noise from parent-vs-parent reruns (A/A): per-task pass rates,
//! each task's tolerance (how many attempts a solved task may drop before the drop counts as a
//! regression) so that an unchanged harness fails the per-task check with probability at most
//! `target_false_reject`, the net-gain threshold a no-op exceeds with probability at most half of
//! `target_false_accept`, and an estimate of the whole gate's false-accept rate. When the
//! tolerances say the gate would be noise (most solved tasks could lose half their attempts
//! unnoticed), it recommends a larger `n`.
//!
//! Every decision is a serializable record with its inputs and statistics (for `audit.jsonl`),
//! and is a pure function of them: `kiln evolve replay` re-derives it.

use std::collections::{BTreeMap, BTreeSet};

use kiln_harness::{HarnessSpec, ProcessorRegistry};
use serde::{Deserialize, Serialize};

use crate::candidate::Bucket;
use crate::rng::Rng;
use crate::stats::{self, BootstrapResult};

/// Which aggregate paired test the gate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateTest {
    /// Exact McNemar on attempt pairs (parent attempt i vs child attempt i, same seed).
    McNemar,
    /// Paired bootstrap over tasks on per-task pass-rate differences.
    Bootstrap,
}

/// The gate's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateConfig {
    /// A task counts as solved by the parent when its pass rate is at least this.
    pub solved_threshold: f64,
    /// Significance level of the aggregate test.
    pub alpha: f64,
    pub test: AggregateTest,
    pub bootstrap_resamples: usize,
    /// Seed of the bootstrap and of calibration simulations.
    pub seed: u64,
    /// Largest acceptable probability that an unchanged harness fails the per-task check.
    pub target_false_reject: f64,
    /// Largest acceptable probability that a no-op edit ships.
    pub target_false_accept: f64,
    /// A task whose tolerance exceeds this fraction of its attempts is not really protected.
    pub max_noise_margin: f64,
    /// The gate is noise when more than this share of solved tasks is not really protected.
    pub max_unprotected_share: f64,
    /// Upper bound for the recommended number of attempts.
    pub max_attempts: u32,
    /// Net-gain threshold (pass@1 fraction); None: the calibrated one.
    pub min_net_gain: Option<f64>,
    /// Null rounds simulated by [`calibrate`].
    pub calibration_rounds: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            solved_threshold: 0.5,
            alpha: 0.05,
            test: AggregateTest::McNemar,
            bootstrap_resamples: 2000,
            seed: 0,
            target_false_reject: 0.10,
            target_false_accept: 0.05,
            max_noise_margin: 0.5,
            max_unprotected_share: 0.2,
            max_attempts: 16,
            min_net_gain: None,
            calibration_rounds: 2000,
        }
    }
}

/// Round-0 outcomes of one gate task: two reruns of the parent with the same seeds (A/A). `second`
/// may be empty when only one rerun was made (then no observed A/A regressions are counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AaTask {
    pub task: String,
    pub first: Vec<bool>,
    pub second: Vec<bool>,
}

/// What round 0 says about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCalibration {
    pub task: String,
    pub successes: u64,
    pub attempts: u64,
    /// Smoothed pass rate `(c + ½) / (N + 1)`: never exactly 0 or 1, so a task seen always
    /// solved still has some noise.
    pub rate: f64,
    /// Attempts (out of `n`) the task may drop, when solved, before the drop is a regression.
    pub margin: u32,
    /// Probability that an unchanged harness "regresses" this task with that margin.
    pub false_regression: f64,
}

/// Round 0's noise calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Attempts per task the gate runs (the recommended `n` when raising it was possible).
    pub attempts: u32,
    /// Attempts per task round 0 was measured with.
    pub measured_attempts: u32,
    pub tasks: Vec<TaskCalibration>,
    /// Estimated probability that an unchanged harness fails the per-task check.
    pub family_false_reject: f64,
    /// The net-gain threshold (pass@1 fraction) in use.
    pub net_gain_threshold: f64,
    /// Estimated probability that a no-op edit ships, from simulated null rounds.
    pub false_accept_rate: f64,
    /// Whether the gate would be noise at `measured_attempts`.
    pub noise_at_measured: bool,
    /// Whether it still is at `attempts` (when `max_attempts` did not allow enough).
    pub noise: bool,
    /// Solved tasks in the A/A reruns that the per-task check would have called regressed.
    pub observed_aa_regressions: Vec<String>,
    pub config: GateConfig,
}

impl Calibration {
    fn task(&self, task: &str) -> Option<&TaskCalibration> {
        self.tasks.iter().find(|t| t.task == task)
    }
}

/// Successes needed out of `n` to count as solved at `threshold`.
fn solved_count(n: u32, threshold: f64) -> u64 {
    ((threshold * f64::from(n)) - 1e-9).ceil().max(0.0) as u64
}

/// P[an unchanged task of rate `p` is called regressed] with `n` attempts per side and tolerance
/// `margin`: parent X ≥ s, child Y < s and X − Y > margin, X and Y independent Bin(n, p).
pub fn false_regression_probability(p: f64, n: u32, margin: u32, threshold: f64) -> f64 {
    let s = solved_count(n, threshold);
    let n64 = u64::from(n);
    let pmf: Vec<f64> = (0..=n64).map(|k| stats::binomial_pmf(n64, k, p)).collect();
    let mut total = 0.0;
    for x in s..=n64 {
        for y in 0..s.min(n64 + 1) {
            if x > y + u64::from(margin) {
                total += pmf[x as usize] * pmf[y as usize];
            }
        }
    }
    total
}

/// The smallest margin whose false-regression probability is within `budget` (`n` when none is:
/// the task cannot be protected at this `n`).
fn margin_for(p: f64, n: u32, threshold: f64, budget: f64) -> (u32, f64) {
    for margin in 0..n {
        let q = false_regression_probability(p, n, margin, threshold);
        if q <= budget {
            return (margin, q);
        }
    }
    (n, 0.0)
}

struct Tolerances {
    tasks: Vec<TaskCalibration>,
    family_false_reject: f64,
    noise: bool,
}

fn tolerances(rates: &[(String, u64, u64)], n: u32, config: &GateConfig) -> Tolerances {
    let count = rates.len().max(1) as f64;
    // Per-task budget so that the family of all tasks stays within the target.
    let budget = 1.0 - (1.0 - config.target_false_reject).powf(1.0 / count);
    let mut tasks = Vec::with_capacity(rates.len());
    let mut survive = 1.0;
    let mut solved = 0usize;
    let mut unprotected = 0usize;
    for (task, successes, attempts) in rates {
        let rate = (*successes as f64 + 0.5) / (*attempts as f64 + 1.0);
        let (margin, false_regression) = margin_for(rate, n, config.solved_threshold, budget);
        survive *= 1.0 - false_regression;
        if stats::pass_at_1(*successes, *attempts) >= config.solved_threshold {
            solved += 1;
            if f64::from(margin) > config.max_noise_margin * f64::from(n) {
                unprotected += 1;
            }
        }
        tasks.push(TaskCalibration {
            task: task.clone(),
            successes: *successes,
            attempts: *attempts,
            rate,
            margin,
            false_regression,
        });
    }
    let noise = solved > 0 && unprotected as f64 > config.max_unprotected_share * solved as f64;
    Tolerances {
        tasks,
        family_false_reject: 1.0 - survive,
        noise,
    }
}

/// Round-0 calibration from A/A reruns. `n` is raised (up to `max_attempts`) when the tolerances
/// at the measured `n` say the per-task check would be noise.
pub fn calibrate(round0: &[AaTask], config: &GateConfig) -> Calibration {
    calibrate_with(round0, config, None)
}

/// A calibration at exactly `attempts` per task (no raising): for a parent whose gate rows were
/// just measured at that `n`. `noise` still says whether the per-task check would be noise.
pub fn calibrate_at(round0: &[AaTask], config: &GateConfig, attempts: u32) -> Calibration {
    calibrate_with(round0, config, Some(attempts.max(1)))
}

fn calibrate_with(round0: &[AaTask], config: &GateConfig, fixed: Option<u32>) -> Calibration {
    let measured_attempts = round0
        .iter()
        .map(|t| t.first.len())
        .max()
        .unwrap_or(0)
        .max(1) as u32;
    let rates: Vec<(String, u64, u64)> = round0
        .iter()
        .map(|t| {
            let all = t.first.iter().chain(&t.second);
            let successes = all.clone().filter(|s| **s).count() as u64;
            (t.task.clone(), successes, all.count() as u64)
        })
        .collect();
    let mut attempts = fixed.unwrap_or(measured_attempts);
    let at_measured = tolerances(&rates, attempts, config);
    let mut chosen = at_measured;
    let noise_at_measured = chosen.noise;
    while fixed.is_none() && chosen.noise && attempts < config.max_attempts {
        attempts += 1;
        chosen = tolerances(&rates, attempts, config);
    }
    let mut calibration = Calibration {
        attempts,
        measured_attempts,
        tasks: chosen.tasks,
        family_false_reject: chosen.family_false_reject,
        net_gain_threshold: 0.0,
        false_accept_rate: 0.0,
        noise_at_measured,
        noise: chosen.noise,
        observed_aa_regressions: Vec::new(),
        config: config.clone(),
    };
    calibration.observed_aa_regressions = round0
        .iter()
        .filter(|t| !t.second.is_empty())
        .filter(|t| task_regression(&t.task, &t.first, &t.second, &calibration).is_some())
        .map(|t| t.task.clone())
        .collect();
    calibration.net_gain_threshold = match config.min_net_gain {
        Some(threshold) => threshold,
        None => null_gain_quantile(&calibration, 1.0 - config.target_false_accept / 2.0),
    };
    calibration.false_accept_rate = simulate_no_op_accept_rate(
        &calibration,
        config.calibration_rounds,
        config.seed ^ 0xA5A5_5A5A,
    );
    calibration
}

/// Draws `n` Bernoulli(`p`) attempts.
fn draw(rng: &mut Rng, p: f64, n: u32) -> Vec<bool> {
    (0..n).map(|_| rng.bernoulli(p)).collect()
}

/// One simulated no-op round: parent and child both drawn from the calibrated rates.
pub fn simulate_null_round(calibration: &Calibration, rng: &mut Rng) -> Vec<PairedTask> {
    calibration
        .tasks
        .iter()
        .map(|t| PairedTask {
            task: t.task.clone(),
            parent: draw(rng, t.rate, calibration.attempts),
            child: draw(rng, t.rate, calibration.attempts),
        })
        .collect()
}

fn null_gain_quantile(calibration: &Calibration, quantile: f64) -> f64 {
    let rounds = calibration.config.calibration_rounds.max(1);
    let mut rng = Rng::new(calibration.config.seed ^ 0x5EED_6A1E);
    let mut gains: Vec<f64> = (0..rounds)
        .map(|_| mean_gain(&simulate_null_round(calibration, &mut rng)))
        .collect();
    gains.sort_by(f64::total_cmp);
    let rank = ((quantile * gains.len() as f64).ceil() as usize).clamp(1, gains.len());
    gains[rank - 1]
}

/// The share of `rounds` simulated no-op rounds that the whole gate ships.
pub fn simulate_no_op_accept_rate(calibration: &Calibration, rounds: usize, seed: u64) -> f64 {
    if rounds == 0 {
        return 0.0;
    }
    let mut rng = Rng::new(seed);
    let accepted = (0..rounds)
        .filter(|_| {
            let input =
                GateInput::passing_preflight("no-op", simulate_null_round(calibration, &mut rng));
            decide(&input, calibration).shipped()
        })
        .count();
    accepted as f64 / rounds as f64
}

/// One gate task's outcomes: attempt `i` of parent and child ran with the same seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTask {
    pub task: String,
    pub parent: Vec<bool>,
    pub child: Vec<bool>,
}

impl PairedTask {
    fn parent_rate(&self) -> f64 {
        rate(&self.parent)
    }
    fn child_rate(&self) -> f64 {
        rate(&self.child)
    }
}

fn rate(outcomes: &[bool]) -> f64 {
    stats::pass_at_1(
        outcomes.iter().filter(|s| **s).count() as u64,
        outcomes.len() as u64,
    )
}

fn mean_gain(tasks: &[PairedTask]) -> f64 {
    if tasks.is_empty() {
        return 0.0;
    }
    tasks
        .iter()
        .map(|t| t.child_rate() - t.parent_rate())
        .sum::<f64>()
        / tasks.len() as f64
}

/// Whether the child validated and canonicalized (its content hash), or why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CanonicalCheck {
    Ok { hash: String },
    Invalid { error: String },
}

/// Validates and canonicalizes `child` against `registry`.
pub fn canonical_check(child: &HarnessSpec, registry: &ProcessorRegistry) -> CanonicalCheck {
    match kiln_harness::content_hash(child, registry) {
        Ok(hash) => CanonicalCheck::Ok { hash },
        Err(error) => CanonicalCheck::Invalid {
            error: error.to_string(),
        },
    }
}

/// The smoke episode: did one episode with the child run without a harness error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeResult {
    pub ran: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harness_error: Option<String>,
}

/// Everything the gate decides on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateInput {
    pub candidate_id: String,
    pub canonical: CanonicalCheck,
    pub smoke: SmokeResult,
    pub outcomes: Vec<PairedTask>,
    /// The critic's budget-widening charge (pass@1 fraction), subtracted from the gain.
    pub budget_charge: f64,
}

impl GateInput {
    /// An input whose canonical and smoke stages pass and which has no budget charge (for
    /// simulations and tests).
    pub fn passing_preflight(candidate_id: &str, outcomes: Vec<PairedTask>) -> Self {
        Self {
            candidate_id: candidate_id.to_string(),
            canonical: CanonicalCheck::Ok {
                hash: String::new(),
            },
            smoke: SmokeResult {
                ran: true,
                harness_error: None,
            },
            outcomes,
            budget_charge: 0.0,
        }
    }
}

/// The gate stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStage {
    Canonical,
    Smoke,
    PerTask,
    Aggregate,
}

/// A solved task the child lost beyond noise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRegression {
    pub task: String,
    pub parent_rate: f64,
    pub child_rate: f64,
    /// The tolerance used, in attempts (0 for a task round 0 did not see).
    pub margin: u32,
    pub attempts: usize,
}

/// The aggregate stage's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateStats {
    pub tasks: usize,
    pub parent_pass_at_1: f64,
    pub child_pass_at_1: f64,
    /// Attempt pairs where only the parent succeeded.
    pub parent_only: u64,
    /// Attempt pairs where only the child succeeded.
    pub child_only: u64,
    pub mcnemar_p: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapResult>,
    pub test: AggregateTest,
    /// p-value of the configured test.
    pub p_value: f64,
    /// Mean per-task child − parent pass rate.
    pub gain: f64,
    pub budget_charge: f64,
    /// `gain − budget_charge`.
    pub net_gain: f64,
    pub net_gain_threshold: f64,
    pub significant: bool,
    pub above_threshold: bool,
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum GateVerdict {
    Ship,
    Reject { stage: GateStage, reason: String },
}

/// One decision with its inputs and statistics: one line of `audit.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    pub candidate_id: String,
    pub verdict: GateVerdict,
    /// Stages that passed, in order.
    pub passed: Vec<GateStage>,
    pub regressions: Vec<TaskRegression>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateStats>,
    pub input: GateInput,
    pub attempts: u32,
    pub solved_threshold: f64,
}

impl GateDecision {
    pub fn shipped(&self) -> bool {
        self.verdict == GateVerdict::Ship
    }
}

/// Whether one task regressed: solved by the parent, below the threshold for the child, and down
/// by more than its round-0 tolerance.
fn task_regression(
    task: &str,
    parent: &[bool],
    child: &[bool],
    calibration: &Calibration,
) -> Option<TaskRegression> {
    let threshold = calibration.config.solved_threshold;
    let parent_rate = rate(parent);
    let child_rate = rate(child);
    if parent.is_empty() || parent_rate < threshold || child_rate >= threshold {
        return None;
    }
    let margin = calibration.task(task).map_or(0, |t| t.margin);
    let attempts = parent.len().max(child.len());
    // The margin is in attempts out of the calibrated n; as a rate it applies to any table size.
    let tolerance = f64::from(margin) / f64::from(calibration.attempts.max(1));
    if parent_rate - child_rate <= tolerance + 1e-9 {
        return None;
    }
    Some(TaskRegression {
        task: task.to_string(),
        parent_rate,
        child_rate,
        margin,
        attempts,
    })
}

fn aggregate(input: &GateInput, calibration: &Calibration) -> AggregateStats {
    let config = &calibration.config;
    let (mut parent_only, mut child_only) = (0u64, 0u64);
    let (mut parent_total, mut child_total, mut parent_n, mut child_n) = (0u64, 0u64, 0u64, 0u64);
    for task in &input.outcomes {
        for (p, c) in task.parent.iter().zip(&task.child) {
            match (p, c) {
                (true, false) => parent_only += 1,
                (false, true) => child_only += 1,
                _ => {}
            }
        }
        parent_total += task.parent.iter().filter(|s| **s).count() as u64;
        child_total += task.child.iter().filter(|s| **s).count() as u64;
        parent_n += task.parent.len() as u64;
        child_n += task.child.len() as u64;
    }
    let mcnemar_p = stats::mcnemar_exact(parent_only, child_only);
    let differences: Vec<f64> = input
        .outcomes
        .iter()
        .map(|t| t.child_rate() - t.parent_rate())
        .collect();
    let bootstrap = (config.test == AggregateTest::Bootstrap)
        .then(|| stats::paired_bootstrap(&differences, config.bootstrap_resamples, config.seed))
        .flatten();
    let gain = mean_gain(&input.outcomes);
    let net_gain = gain - input.budget_charge;
    let (p_value, improved) = match (&bootstrap, config.test) {
        (Some(result), AggregateTest::Bootstrap) => (result.p_value, result.mean_difference > 0.0),
        _ => (mcnemar_p, child_only > parent_only),
    };
    let significant = p_value < config.alpha && improved && net_gain > 0.0;
    let above_threshold = net_gain > calibration.net_gain_threshold + 1e-12;
    AggregateStats {
        tasks: input.outcomes.len(),
        parent_pass_at_1: stats::pass_at_1(parent_total, parent_n),
        child_pass_at_1: stats::pass_at_1(child_total, child_n),
        parent_only,
        child_only,
        mcnemar_p,
        bootstrap,
        test: config.test,
        p_value,
        gain,
        budget_charge: input.budget_charge,
        net_gain,
        net_gain_threshold: calibration.net_gain_threshold,
        significant,
        above_threshold,
    }
}

/// The gate's decision on one candidate.
pub fn decide(input: &GateInput, calibration: &Calibration) -> GateDecision {
    let mut decision = GateDecision {
        candidate_id: input.candidate_id.clone(),
        verdict: GateVerdict::Ship,
        passed: Vec::new(),
        regressions: Vec::new(),
        aggregate: None,
        input: input.clone(),
        attempts: calibration.attempts,
        solved_threshold: calibration.config.solved_threshold,
    };
    let reject = |stage, reason: String| GateVerdict::Reject { stage, reason };
    if let CanonicalCheck::Invalid { error } = &input.canonical {
        decision.verdict = reject(
            GateStage::Canonical,
            format!("the child does not validate: {error}"),
        );
        return decision;
    }
    decision.passed.push(GateStage::Canonical);
    if !input.smoke.ran || input.smoke.harness_error.is_some() {
        let why = input
            .smoke
            .harness_error
            .clone()
            .unwrap_or_else(|| "the smoke episode did not run".to_string());
        decision.verdict = reject(GateStage::Smoke, format!("smoke episode failed: {why}"));
        return decision;
    }
    decision.passed.push(GateStage::Smoke);
    if input.outcomes.is_empty() {
        decision.verdict = reject(GateStage::PerTask, "no gate-split outcomes".to_string());
        return decision;
    }
    decision.regressions = input
        .outcomes
        .iter()
        .filter_map(|t| task_regression(&t.task, &t.parent, &t.child, calibration))
        .collect();
    if !decision.regressions.is_empty() {
        let names: Vec<String> = decision
            .regressions
            .iter()
            .map(|r| format!("{} ({:.2} -> {:.2})", r.task, r.parent_rate, r.child_rate))
            .collect();
        decision.verdict = reject(
            GateStage::PerTask,
            format!(
                "solved tasks regressed beyond round-0 noise: {}",
                names.join(", ")
            ),
        );
        return decision;
    }
    decision.passed.push(GateStage::PerTask);
    let stats = aggregate(input, calibration);
    if !(stats.significant || stats.above_threshold) {
        decision.verdict = reject(
            GateStage::Aggregate,
            format!(
                "no significant improvement: p = {:.4} ({:?}), net gain {:+.4} (gain {:+.4} - budget charge {:.4}) not above {:.4}",
                stats.p_value,
                stats.test,
                stats.net_gain,
                stats.gain,
                stats.budget_charge,
                stats.net_gain_threshold
            ),
        );
        decision.aggregate = Some(stats);
        return decision;
    }
    decision.aggregate = Some(stats);
    decision.passed.push(GateStage::Aggregate);
    decision
}

/// A candidate that passed the gate alone, in ship-ranking order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shippable {
    pub candidate_id: String,
    pub buckets: Vec<Bucket>,
}

/// The candidates worth gating together: greedily, in rank order, each whose buckets are disjoint
/// from those already chosen.
pub fn disjoint_selection(ranked: &[Shippable]) -> Vec<Shippable> {
    let mut taken: BTreeSet<Bucket> = BTreeSet::new();
    let mut chosen = Vec::new();
    for candidate in ranked {
        if candidate.buckets.iter().any(|b| taken.contains(b)) {
            continue;
        }
        taken.extend(candidate.buckets.iter().copied());
        chosen.push(candidate.clone());
    }
    chosen
}

/// Which candidates ship in a round, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CombinationDecision {
    pub ship: Vec<String>,
    pub reason: String,
}

/// Several candidates ship together only when their buckets are pairwise disjoint and the
/// combination (all their edits applied) passed the gate again (`combined`); otherwise only the
/// best-ranked one ships. `members` is in rank order, each already shipped by the gate alone.
pub fn combination_decision(
    members: &[Shippable],
    combined: Option<&GateDecision>,
) -> CombinationDecision {
    let Some(first) = members.first() else {
        return CombinationDecision {
            ship: Vec::new(),
            reason: "no candidate passed the gate".to_string(),
        };
    };
    let only_first = |reason: String| CombinationDecision {
        ship: vec![first.candidate_id.clone()],
        reason,
    };
    if members.len() == 1 {
        return only_first("one candidate passed the gate".to_string());
    }
    let mut owner: BTreeMap<Bucket, &str> = BTreeMap::new();
    for member in members {
        for bucket in &member.buckets {
            if let Some(other) = owner.insert(*bucket, &member.candidate_id) {
                return only_first(format!(
                    "{} and {} share the {bucket:?} bucket; only the best-ranked ships",
                    other, member.candidate_id
                ));
            }
        }
    }
    match combined {
        Some(decision) if decision.shipped() => CombinationDecision {
            ship: members.iter().map(|m| m.candidate_id.clone()).collect(),
            reason: "buckets are disjoint and the combination passed the gate".to_string(),
        },
        Some(decision) => only_first(format!(
            "the combination failed the gate ({:?}); only the best-ranked ships",
            decision.verdict
        )),
        None => {
            only_first("the combination has not been gated; only the best-ranked ships".to_string())
        }
    }
}
