//! The final report: seed vs final harness on the held-out split (the first and only time
//! evolution reads it, through [`FinalEvaluation`]), plus a budget-matched baseline — the seed
//! harness given best-of-N with N the evolution's rollouts per held-out task (capped), scored as
//! pass@N, i.e. with an oracle picking the best of N: an upper bound for any best-of-N or majority
//! vote without a verifier. Written to `report.md` with a curve per round (SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::driver::{
    CurvePoint, Evolution, EvolutionSummary, EvolveError, Rollout, Tally, write_json, write_text,
};
use crate::rollouts::success_table;
use crate::splits::SplitRole;
use crate::stats::{self, Interval, PassSummary};
use crate::traces::{FinalEvaluation, RunTraces, TraceStore};

const HELD_OUT_SCOPE: &str = "held_out";
/// Bootstrap resamples for the task-level intervals of pass@k and pass^k.
const RESAMPLES: usize = 2000;

/// One harness on the held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutResult {
    pub label: String,
    pub harness: String,
    pub summary: PassSummary,
    /// Task-bootstrap 95% intervals.
    pub pass_at_k_interval: Interval,
    pub pass_hat_k_interval: Interval,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Sum of episode wall times, seconds.
    pub episode_seconds: f64,
    /// Tasks with at least one success in the first k attempts.
    pub solved_tasks: Vec<String>,
}

/// The budget-matched baseline: the seed's pass@N.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// N: evolution episodes per held-out task, capped.
    pub n: u32,
    /// Evolution episodes per held-out task before the cap.
    pub matched: f64,
    pub capped: bool,
    pub pass_at_n: f64,
    pub pass_at_n_interval: Interval,
}

/// `final.json` and the numbers of `report.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalReport {
    pub env: String,
    pub held_out_split: String,
    pub held_out_tasks: usize,
    pub k: u32,
    pub seed: HeldOutResult,
    pub final_harness: HeldOutResult,
    pub baseline: Baseline,
    /// Exact McNemar over (task, attempt) pairs of the first k attempts, same seeds.
    pub mcnemar_p: f64,
    /// Pairs only the seed solved / only the final harness solved.
    pub seed_only: u64,
    pub final_only: u64,
    /// Held-out tasks the seed solved (some attempt) that the final harness never solves.
    pub tasks_lost: Vec<String>,
    pub tasks_gained: Vec<String>,
    pub evolution_episodes: u64,
    pub rounds_run: u32,
    pub stop_reason: String,
}

/// Runs the held-out evaluation and writes `final.json` and `report.md`.
pub async fn final_evaluation(
    evolution: &Evolution,
    summary: &EvolutionSummary,
    store: TraceStore,
    wall_seconds: f64,
) -> Result<FinalReport, EvolveError> {
    let final_eval = FinalEvaluation::conclude(store);
    let splits = final_eval.splits().clone();
    let tasks = splits.held_out.clone();
    if tasks.is_empty() {
        return Err(EvolveError::Invalid("the held-out split is empty".into()));
    }
    let k = evolution.config.final_attempts.max(1);
    let matched = summary.episodes as f64 / tasks.len() as f64;
    let cap = evolution.config.baseline_max_attempts.max(k);
    let n = (matched.ceil() as u32).clamp(k, cap);
    let runs = evolution.dir.join("final").join("runs");
    let seed_dir = held_out_rollout(
        evolution,
        "final seed",
        runs.join("seed"),
        &evolution.seed_harness,
        &tasks,
        n,
    )
    .await?;
    let seed_run = final_eval.load_held_out(&seed_dir)?;
    let final_run = if summary.final_hash == evolution.config.seed_harness {
        seed_run.clone()
    } else {
        let dir = held_out_rollout(
            evolution,
            "final harness",
            runs.join("final"),
            &summary.final_harness,
            &tasks,
            k,
        )
        .await?;
        final_eval.load_held_out(&dir)?
    };
    let seed_table = success_table(&seed_run.outcomes, &tasks, n);
    let final_table = success_table(&final_run.outcomes, &tasks, k);
    let first_k = |table: &BTreeMap<String, Vec<bool>>| -> BTreeMap<String, Vec<bool>> {
        table
            .iter()
            .map(|(task, row)| (task.clone(), row[..k as usize].to_vec()))
            .collect()
    };
    let seed_k = first_k(&seed_table);
    let seed = held_out_result("seed", &seed_run, &seed_k, k, evolution.config.seed)?;
    let final_harness =
        held_out_result("final", &final_run, &final_table, k, evolution.config.seed)?;
    let (mut seed_only, mut final_only) = (0u64, 0u64);
    for (task, row) in &seed_k {
        for (s, f) in row.iter().zip(&final_table[task]) {
            match (s, f) {
                (true, false) => seed_only += 1,
                (false, true) => final_only += 1,
                _ => {}
            }
        }
    }
    let solved = |table: &BTreeMap<String, Vec<bool>>, task: &str| table[task].iter().any(|s| *s);
    let tasks_lost = tasks
        .iter()
        .filter(|t| solved(&seed_k, t) && !solved(&final_table, t))
        .cloned()
        .collect();
    let tasks_gained = tasks
        .iter()
        .filter(|t| !solved(&seed_k, t) && solved(&final_table, t))
        .cloned()
        .collect();
    let best_of_n: Vec<f64> = tasks
        .iter()
        .map(|t| f64::from(u8::from(solved(&seed_table, t))))
        .collect();
    let pass_at_n = best_of_n.iter().sum::<f64>() / best_of_n.len() as f64;
    let report = FinalReport {
        env: evolution.config.env.clone(),
        held_out_split: splits.held_out_source.clone(),
        held_out_tasks: tasks.len(),
        k,
        seed,
        final_harness,
        baseline: Baseline {
            n,
            matched,
            capped: (matched.ceil() as u32) > cap,
            pass_at_n,
            pass_at_n_interval: interval_of_mean(&best_of_n, evolution.config.seed),
        },
        mcnemar_p: stats::mcnemar_exact(seed_only, final_only),
        seed_only,
        final_only,
        tasks_lost,
        tasks_gained,
        evolution_episodes: summary.episodes,
        rounds_run: summary.rounds_run,
        stop_reason: summary.stop_reason.clone(),
    };
    write_json(&evolution.dir.join("final.json"), &report)?;
    write_text(
        &evolution.dir.join("report.md"),
        &render(&report, &summary.curves, wall_seconds),
    )?;
    write_text(
        &evolution.dir.join("curves.svg"),
        &curve_svg(&summary.curves),
    )?;
    Ok(report)
}

/// A held-out rollout: the ordinary rollout path, after the trace store was given up.
async fn held_out_rollout(
    evolution: &Evolution,
    purpose: &str,
    dir: PathBuf,
    spec: &kiln_harness::HarnessSpec,
    tasks: &[String],
    attempts: u32,
) -> Result<PathBuf, EvolveError> {
    let rollout = Rollout {
        round: u32::MAX,
        purpose: purpose.to_string(),
        dir,
        spec,
        role: SplitRole::HeldOut,
        tasks: tasks.to_vec(),
        attempts,
        seed_scope: HELD_OUT_SCOPE,
        candidate: false,
    };
    evolution.rollout(rollout, &mut Tally::default()).await
}

fn held_out_result(
    label: &str,
    run: &RunTraces,
    table: &BTreeMap<String, Vec<bool>>,
    k: u32,
    seed: u64,
) -> Result<HeldOutResult, EvolveError> {
    let successes: Vec<u64> = table
        .values()
        .map(|row| row.iter().filter(|s| **s).count() as u64)
        .collect();
    let summary = stats::summarize(&successes, u64::from(k), u64::from(k))
        .ok_or_else(|| EvolveError::Invalid(format!("{label}: no held-out outcomes")))?;
    let per_task = |f: fn(u64, u64, u64) -> Option<f64>| -> Vec<f64> {
        successes
            .iter()
            .map(|c| f(u64::from(k), *c, u64::from(k)).unwrap_or(0.0))
            .collect()
    };
    let within: std::collections::BTreeSet<(&str, u32)> = table
        .keys()
        .flat_map(|task| (0..k).map(move |a| (task.as_str(), a)))
        .collect();
    let counted: Vec<&kiln_protocol::Outcome> = run
        .outcomes
        .iter()
        .filter(|o| within.contains(&(o.task_id.as_str(), o.attempt)))
        .collect();
    Ok(HeldOutResult {
        label: label.to_string(),
        harness: run
            .outcomes
            .first()
            .map(|o| o.harness_hash.clone())
            .unwrap_or_default(),
        pass_at_k_interval: interval_of_mean(&per_task(stats::pass_at_k), seed),
        pass_hat_k_interval: interval_of_mean(&per_task(stats::pass_hat_k), seed),
        summary,
        prompt_tokens: counted.iter().map(|o| o.usage.prompt_tokens).sum(),
        completion_tokens: counted.iter().map(|o| o.usage.completion_tokens).sum(),
        episode_seconds: counted.iter().map(|o| o.wall_ms as f64 / 1000.0).sum(),
        solved_tasks: table
            .iter()
            .filter(|(_, row)| row.iter().any(|s| *s))
            .map(|(task, _)| task.clone())
            .collect(),
    })
}

/// Task-bootstrap 95% interval of a mean over tasks.
fn interval_of_mean(values: &[f64], seed: u64) -> Interval {
    stats::paired_bootstrap(values, RESAMPLES, seed)
        .map(|result| result.interval)
        .unwrap_or(Interval {
            low: 0.0,
            high: 0.0,
        })
}

fn render(report: &FinalReport, curves: &[CurvePoint], wall_seconds: f64) -> String {
    let mut out = format!(
        "# Evolution report: {}\n\nHeld-out split `{}`: {} tasks evolution never saw, k = {} attempts each, \
         seeds paired across harnesses. {} rounds run ({}); {} evolution episodes; wall time {:.0} s.\n\n",
        report.env,
        report.held_out_split,
        report.held_out_tasks,
        report.k,
        report.rounds_run,
        report.stop_reason,
        report.evolution_episodes,
        wall_seconds
    );
    out.push_str("| harness | pass@1 [95% CI] | pass@k [95% CI] | pass^k [95% CI] | tokens (prompt + completion) | episode time |\n|---|---|---|---|---|---|\n");
    for result in [&report.seed, &report.final_harness] {
        let s = &result.summary;
        let _ = writeln!(
            out,
            "| {} `{}` | {:.3} [{:.3}, {:.3}] | {:.3} [{:.3}, {:.3}] | {:.3} [{:.3}, {:.3}] | {} + {} | {:.0} s |",
            result.label,
            kiln_harness::short_hash(&result.harness),
            s.pass_at_1,
            s.pass_at_1_interval.low,
            s.pass_at_1_interval.high,
            s.pass_at_k,
            result.pass_at_k_interval.low,
            result.pass_at_k_interval.high,
            s.pass_hat_k,
            result.pass_hat_k_interval.low,
            result.pass_hat_k_interval.high,
            result.prompt_tokens,
            result.completion_tokens,
            result.episode_seconds
        );
    }
    let b = &report.baseline;
    let _ = writeln!(
        out,
        "| seed, best-of-{} (oracle-picked, pass@{}) | - | {:.3} [{:.3}, {:.3}] | - | - | - |\n",
        b.n, b.n, b.pass_at_n, b.pass_at_n_interval.low, b.pass_at_n_interval.high
    );
    let _ = writeln!(
        out,
        "Budget-matched baseline: evolution spent {:.1} episodes per held-out task; the seed gets N = {}{} \
         attempts per task and counts a task solved when any attempt is (an upper bound for best-of-N or \
         majority vote without a verifier).\n",
        b.matched,
        b.n,
        if b.capped { " (capped)" } else { "" }
    );
    let gain = report.final_harness.summary.pass_at_1 - report.seed.summary.pass_at_1;
    let _ = writeln!(
        out,
        "Final vs seed, paired (exact McNemar over task × attempt pairs): {:+.1} points pass@1, \
         {} pairs only the seed solved, {} only the final harness solved, p = {:.4}.\n",
        gain * 100.0,
        report.seed_only,
        report.final_only,
        report.mcnemar_p
    );
    let list = |tasks: &[String]| {
        if tasks.is_empty() {
            "none".to_string()
        } else {
            tasks.join(", ")
        }
    };
    let _ = writeln!(
        out,
        "Held-out tasks lost (solved by the seed, never by the final harness): {}.\n\nTasks gained: {}.\n",
        list(&report.tasks_lost),
        list(&report.tasks_gained)
    );
    out.push_str("## Per round (parent after the round)\n\n![curves](curves.svg)\n\n| round | parent | gate pass@1 | search pass@1 | shipped | episodes so far | rollouts | AEGIS |\n|---|---|---|---|---|---|---|---|\n");
    for point in curves {
        let _ = writeln!(
            out,
            "| {} | `{}` | {:.3} | {:.3} | {} | {} | {:.1} s | {:.2} s |",
            point.round,
            kiln_harness::short_hash(&point.parent),
            point.gate_pass_at_1,
            point.search_pass_at_1,
            if point.shipped.is_empty() {
                "-".to_string()
            } else {
                point.shipped.join(", ")
            },
            point.episodes,
            point.rollout_seconds,
            point.aegis_seconds
        );
    }
    let rollouts: f64 = curves.iter().map(|p| p.rollout_seconds).sum();
    let aegis: f64 = curves.iter().map(|p| p.aegis_seconds).sum();
    if rollouts + aegis > 0.0 {
        let _ = writeln!(
            out,
            "\nAEGIS itself (digest, plan, evolve, critic, gate bookkeeping, artifacts) took {aegis:.2} s of \
             {:.1} s of rounds ({:.2}%); rollouts found on disk by `--resume` count as 0 s.",
            rollouts + aegis,
            100.0 * aegis / (rollouts + aegis)
        );
    }
    out
}

/// Gate and search pass@1 of the parent per round, as a small SVG line chart.
pub fn curve_svg(curves: &[CurvePoint]) -> String {
    let (width, height, pad) = (480.0, 240.0, 36.0);
    let rounds = curves.len().max(2) - 1;
    let x = |i: usize| pad + (width - 2.0 * pad) * i as f64 / rounds as f64;
    let y = |v: f64| height - pad - (height - 2.0 * pad) * v.clamp(0.0, 1.0);
    let line = |f: fn(&CurvePoint) -> f64| -> String {
        curves
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(f(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#888\"/>",
        height - pad,
        width - pad,
        height - pad,
        height - pad
    );
    for (label, value) in [("0", 0.0), ("0.5", 0.5), ("1", 1.0)] {
        let _ = writeln!(
            svg,
            "<text x=\"4\" y=\"{:.1}\">{label}</text>",
            y(value) + 4.0
        );
    }
    for (i, point) in curves.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">R{}</text>",
            x(i),
            height - pad + 14.0,
            point.round
        );
    }
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
        line(|p| p.gate_pass_at_1)
    );
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" stroke-dasharray=\"4 3\" points=\"{}\"/>",
        line(|p| p.search_pass_at_1)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"14\" fill=\"#1f77b4\">gate pass@1</text><text x=\"{:.1}\" y=\"28\" fill=\"#ff7f0e\">search pass@1</text>\n</svg>",
        width - 150.0,
        width - 150.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_has_one_point_per_round_on_both_lines() {
        let points: Vec<CurvePoint> = (0..3)
            .map(|round| CurvePoint {
                round,
                parent: format!("h{round}"),
                gate_pass_at_1: f64::from(round) * 0.25,
                search_pass_at_1: 0.5,
                shipped: Vec::new(),
                episodes: 10,
                round_episodes: 10,
                rollout_seconds: 1.0,
                aegis_seconds: 0.01,
            })
            .collect();
        let svg = curve_svg(&points);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">R2<"), "{svg}");
        // Gate pass@1 0.5 at round 2 sits at mid height.
        assert!(svg.contains("444.0,120.0"), "{svg}");
    }

    #[test]
    fn intervals_of_a_constant_are_that_constant() {
        let interval = interval_of_mean(&[1.0, 1.0, 1.0], 3);
        assert_eq!((interval.low, interval.high), (1.0, 1.0));
    }
}
