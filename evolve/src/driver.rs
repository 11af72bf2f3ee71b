//! The loop behind `kiln evolve`: round 0 calibrates the gate's noise, then each round digests the
//! parent's search-split rollouts, plans, proposes K candidates, reviews them (critic) and gates
//! the survivors against the parent on the gate split; at the end the seed, the final harness and
//! a budget-matched baseline are evaluated on the held-out split ([`crate::report`]).
//!
//! The loop is a deterministic function of `evolve.toml`, the seed harness and the rollouts it
//! reads: every rollout has a fixed directory, a complete one is never run again, and proposals
//! are stored before they are judged. So `--resume` is "run the loop again", and replay is "run
//! the loop again with [`StoredRollouts`](crate::rollouts::StoredRollouts) and compare the audit".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_harness::{Harness, HarnessSpec, apply_edits, builtin_registry};
use kiln_protocol::Termination;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::artifacts::{self, RoundFiles};
use crate::candidate::{Bucket, Candidate};
use crate::critic::{CriticContext, CriticVerdict, ForbiddenLiterals, LeverHistory, review};
use crate::digest::{Episode, TaskDigest, TaskStatus, digest_tasks};
use crate::evolver::{Demonstration, EvolveInput, Evolver, Proposals, RejectedProposal};
use crate::gate::{
    AaTask, Calibration, GateConfig, GateDecision, GateInput, PairedTask, Shippable, SmokeResult,
    calibrate, calibrate_at, canonical_check, combination_decision, decide, disjoint_selection,
};
use crate::plan::{EditRecord, EditVerdict, Landscape, PlanInput, plan};
use crate::rollouts::{
    RolloutError, RolloutErrorKind, RolloutRequest, Rollouts, read_outcomes, success_table,
};
use crate::splits::{EvolutionSplits, SplitRole};
use crate::stats;
use crate::traces::{RunTraces, TraceStore};

/// `evolve.toml`: everything that defines an evolution. A resumed evolution must match it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvolveConfig {
    pub env: String,
    /// The agent model, as a model spec.
    pub model: String,
    /// Content hash of the seed harness (`harnesses/<hash>.toml`).
    pub seed_harness: String,
    pub rounds: u32,
    /// Candidates proposed per round.
    pub candidates: usize,
    /// Attempts per gate task (raised by round 0 when the gate would be noise).
    pub attempts: u32,
    /// Attempts per search task each round.
    pub search_attempts: u32,
    /// Attempts per held-out task in the final report (k of pass@k and pass^k).
    pub final_attempts: u32,
    /// Rounds without a shipped candidate before stopping.
    pub patience: u32,
    pub search: usize,
    pub gate: usize,
    /// Held-out tasks; all of the held-out split when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<usize>,
    /// `rules`, `llm` or `both`.
    pub evolver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_model: Option<String>,
    pub seed: u64,
    /// Cap on N of the budget-matched best-of-N baseline.
    pub baseline_max_attempts: u32,
    pub gate_config: GateConfig,
}

impl EvolveConfig {
    /// Fields that differ from `stored`, as "field: stored X, requested Y".
    pub fn differences(&self, stored: &EvolveConfig) -> Vec<String> {
        let (Ok(mine), Ok(theirs)) = (serde_json::to_value(self), serde_json::to_value(stored))
        else {
            return vec!["the configurations do not serialize".into()];
        };
        let (Some(mine), Some(theirs)) = (mine.as_object(), theirs.as_object()) else {
            return Vec::new();
        };
        let keys: BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
        keys.into_iter()
            .filter(|key| mine.get(*key) != theirs.get(*key))
            .map(|key| {
                format!(
                    "{key}: evolve.toml has {}, requested {}",
                    theirs.get(key).unwrap_or(&Value::Null),
                    mine.get(key).unwrap_or(&Value::Null)
                )
            })
            .collect()
    }
}

/// Why the loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum EvolveError {
    #[error(transparent)]
    Rollout(#[from] crate::rollouts::RolloutError),
    #[error(transparent)]
    Traces(#[from] crate::traces::TraceError),
    #[error(transparent)]
    Artifacts(#[from] artifacts::ArtifactError),
    #[error("{0}")]
    Invalid(String),
}

/// Progress of the loop: round, stage, what is being done.
pub trait EvolveProgress: Send + Sync {
    fn stage(&self, round: u32, stage: &str, detail: &str);
}

/// Progress that goes to the log only.
pub struct LogProgress;

impl EvolveProgress for LogProgress {
    fn stage(&self, round: u32, stage: &str, detail: &str) {
        tracing::info!(round, stage, detail, "evolve");
    }
}

/// Whether the loop writes artifacts (a run) or only derives decisions (a replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Evolve,
    Replay,
}

/// Everything the loop needs besides the configuration.
pub struct Evolution {
    pub config: EvolveConfig,
    pub dir: PathBuf,
    pub seed_harness: HarnessSpec,
    pub splits: EvolutionSplits,
    pub evolvers: Vec<Arc<dyn Evolver>>,
    pub rollouts: Arc<dyn Rollouts>,
    /// Gold strings and non-search task ids of the environment (the critic's).
    pub forbidden: ForbiddenLiterals,
    pub progress: Arc<dyn EvolveProgress>,
    pub mode: Mode,
}

/// Seed scopes: runs of one scope pair attempt `i` of a task on the same seed.
const SEARCH_SCOPE: &str = "search";
const GATE_SCOPE: &str = "gate";
const SMOKE_SCOPE: &str = "smoke";
/// Written into a rollout's directory when it failed.
const FAILED_MARKER: &str = "rollout-failed.txt";

/// One rollout the loop asks for.
pub(crate) struct Rollout<'a> {
    pub(crate) round: u32,
    pub(crate) purpose: String,
    pub(crate) dir: PathBuf,
    pub(crate) spec: &'a HarnessSpec,
    pub(crate) role: SplitRole,
    pub(crate) tasks: Vec<String>,
    pub(crate) attempts: u32,
    pub(crate) seed_scope: &'a str,
    /// A candidate's rollout: its failure is remembered (and rejects the candidate); a parent's
    /// failure stops the evolution and is tried again on `--resume`.
    pub(crate) candidate: bool,
}

/// One point of `curves.json`: the parent after a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub round: u32,
    pub parent: String,
    /// Parent's pass@1 on the gate split (n attempts).
    pub gate_pass_at_1: f64,
    /// Parent's pass@1 on the search split.
    pub search_pass_at_1: f64,
    pub shipped: Vec<String>,
    /// Episodes run so far (all rollouts).
    pub episodes: u64,
    /// Episodes this round ran.
    #[serde(default)]
    pub round_episodes: u64,
    /// Wall time of this round spent in rollouts, seconds (0 for rollouts found on disk).
    #[serde(default)]
    pub rollout_seconds: f64,
    /// Wall time of this round spent in AEGIS itself: digest, plan, evolve, critic, gate
    /// bookkeeping and artifacts.
    #[serde(default)]
    pub aegis_seconds: f64,
}

/// Episodes asked for and time spent waiting for rollouts.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub count: u64,
    pub rollout_seconds: f64,
}

/// Per lever (operator): what shipped and how its predictions held up. `scoreboard.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeverScore {
    pub tries: u32,
    pub gated: u32,
    pub shipped: u32,
    pub shipped_rounds: Vec<u32>,
    /// Shipped with a measured gain.
    pub hits: u32,
    /// Predicted unlocks (search tasks) of shipped candidates, and how many happened.
    pub predicted_unlocks: u32,
    pub realized_unlocks: u32,
}

impl LeverScore {
    pub fn hit_rate(&self) -> f64 {
        if self.tries == 0 {
            0.0
        } else {
            f64::from(self.hits) / f64::from(self.tries)
        }
    }

    /// Share of predicted unlocks that happened (None before any shipped prediction).
    pub fn prediction_precision(&self) -> Option<f64> {
        (self.predicted_unlocks > 0)
            .then(|| f64::from(self.realized_unlocks) / f64::from(self.predicted_unlocks))
    }
}

/// What the loop ends with.
#[derive(Debug, Clone, PartialEq)]
pub struct EvolutionSummary {
    pub rounds_run: u32,
    pub final_harness: HarnessSpec,
    pub final_hash: String,
    /// `audit.jsonl`, one JSON value per decision.
    pub audit: Vec<Value>,
    pub curves: Vec<CurvePoint>,
    pub calibration: Calibration,
    /// Episodes run for evolution (search, gate, smoke).
    pub episodes: u64,
    pub stop_reason: String,
}

/// The parent between rounds.
struct Parent {
    spec: HarnessSpec,
    hash: String,
    /// Gate-split successes, per task, `calibration.attempts` attempts.
    gate: BTreeMap<String, Vec<bool>>,
    search_dir: PathBuf,
}

/// What gating one candidate produced.
struct Gated {
    decision: GateDecision,
    child: HarnessSpec,
    child_table: BTreeMap<String, Vec<bool>>,
    /// Why the candidate's gate rollout failed, if it did.
    rollout_error: Option<String>,
}

/// Whether an error belongs to the candidate being gated (its harness, its rollout) rather than
/// to the evolution (interrupted, a replay without the rollout, the disk).
fn is_candidate_failure(error: &EvolveError) -> bool {
    match error {
        EvolveError::Rollout(error) => error.kind() == RolloutErrorKind::Failed,
        EvolveError::Invalid(_) => true,
        EvolveError::Traces(_) | EvolveError::Artifacts(_) => false,
    }
}

impl Evolution {
    /// Runs the loop to its end (rounds, patience) and returns the summary; the final held-out
    /// evaluation is [`crate::report::final_evaluation`], given the trace store back.
    pub async fn run(&self) -> Result<(EvolutionSummary, TraceStore), EvolveError> {
        let mut audit = Vec::new();
        self.run_recording(&mut audit).await
    }

    /// Re-derives the decisions from the stored rollouts (mode [`Mode::Replay`]): the decisions
    /// made, and the error that stopped the replay early if one did (a rollout the original run
    /// never made because it decided otherwise, say).
    pub async fn replay(&self) -> (Vec<Value>, Option<EvolveError>) {
        let mut audit = Vec::new();
        match self.run_recording(&mut audit).await {
            Ok(_) => (audit, None),
            Err(error) => (audit, Some(error)),
        }
    }

    async fn run_recording(
        &self,
        audit: &mut Vec<Value>,
    ) -> Result<(EvolutionSummary, TraceStore), EvolveError> {
        let mut store = TraceStore::new(self.splits.clone());
        let mut curves = Vec::new();
        let mut episodes = Tally::default();
        let mut round_start = (std::time::Instant::now(), Tally::default());
        let seed_hash = self.harness_file(&self.seed_harness)?.1;

        // Round 0: search rollouts of the seed, and the A/A noise calibration on the gate split.
        let search_dir = self
            .run_search(0, &self.seed_harness, &mut episodes)
            .await?;
        let mut calibration = self.calibrate(&mut episodes, audit).await?;
        let gate_dir = self.parent_gate_run(&calibration, &mut episodes).await?;
        let mut parent = Parent {
            spec: self.seed_harness.clone(),
            hash: seed_hash,
            gate: self.gate_table(&gate_dir, calibration.attempts)?,
            search_dir,
        };
        curves.push(self.curve_point(0, &parent, Vec::new(), &episodes, &mut round_start)?);
        self.write_progress_files(audit, &curves, &BTreeMap::new())?;

        let mut history: Vec<EditRecord> = Vec::new();
        let mut scores: BTreeMap<String, LeverScore> = BTreeMap::new();
        let mut previous_digests: Option<Vec<TaskDigest>> = None;
        let mut strategy_concern: Option<String> = None;
        let mut tried: BTreeSet<(String, String)> = BTreeSet::new();
        let mut stalled = 0u32;
        let mut rounds_run = 0u32;
        let mut stop_reason = format!("ran all {} rounds", self.config.rounds);
        let mut search_run: Option<RunTraces> = None;
        let mut previous_proposals: Option<Proposals> = None;
        for round in 1..=self.config.rounds {
            rounds_run = round;
            // A parent's search rollouts are read once, not again each round it stays the parent.
            if search_run
                .as_ref()
                .is_none_or(|run| run.dir != parent.search_dir)
            {
                search_run = Some(store.load_run(&parent.search_dir)?.clone());
            }
            let run = search_run
                .as_ref()
                .expect("the parent's search run is loaded");
            let episodes_of: Vec<Episode<'_>> = run
                .outcomes
                .iter()
                .map(|outcome| Episode {
                    outcome,
                    trajectory: run.trajectory(&outcome.task_id, outcome.attempt),
                })
                .collect();
            let splits = &self.splits;
            let digests = digest_tasks(
                &episodes_of,
                &|task| splits.cluster(task).to_string(),
                Some(&parent.spec),
            );
            self.progress
                .stage(round, "digest", &format!("{} search tasks", digests.len()));
            if let Some(previous) = &previous_proposals {
                self.update_predictions(&mut scores, previous, &digests, &history, round);
            }
            let landscape = plan(PlanInput {
                round,
                digests: &digests,
                previous: previous_digests.as_deref(),
                history: &history,
                strategy_concern: strategy_concern.as_deref(),
            });
            self.progress.stage(
                round,
                "plan",
                &format!(
                    "{} solved, {} flaky, {} failed",
                    landscape.solved, landscape.flaky, landscape.failed
                ),
            );
            let demonstrations = demonstrations(run, &self.splits);
            let proposals = self
                .proposals(
                    round,
                    &parent,
                    &landscape,
                    &digests,
                    &demonstrations,
                    &history,
                )
                .await?;
            if self.mode == Mode::Evolve {
                artifacts::write_round(
                    &self.dir,
                    &RoundFiles {
                        round,
                        parent: &parent.spec,
                        digests: &digests,
                        landscape: &landscape,
                        proposals: &proposals,
                    },
                )?;
            }
            for rejected in &proposals.rejected {
                audit.push(json!({
                    "round": round, "candidate_id": rejected.candidate_id, "stage": "evolver",
                    "decision": "invalid", "evolver": rejected.evolver, "reason": rejected.reason,
                }));
            }

            // Critic, then the gate for each survivor.
            let context = self.critic_context(round, &scores);
            let mut verdicts: Vec<CriticVerdict> = Vec::new();
            let mut decisions: Vec<GateDecision> = Vec::new();
            let mut gated: BTreeMap<String, Gated> = BTreeMap::new();
            for candidate in &proposals.candidates {
                let score = scores
                    .entry(candidate.manifest.operator.clone())
                    .or_default();
                score.tries += 1;
                let record = |verdict: EditVerdict| EditRecord {
                    round,
                    candidate_id: candidate.id().to_string(),
                    operator: candidate.manifest.operator.clone(),
                    buckets: candidate.manifest.buckets.clone(),
                    targets: candidate
                        .manifest
                        .capability_evidence
                        .iter()
                        .map(|e| e.kind.clone())
                        .collect(),
                    verdict,
                    hit: false,
                };
                let child = match apply_edits(&parent.spec, &candidate.edits, &builtin_registry()) {
                    Ok(child) => child,
                    Err(error) => {
                        audit.push(json!({
                            "round": round, "candidate_id": candidate.id(), "stage": "apply",
                            "decision": "invalid", "reason": error.to_string(),
                        }));
                        history.push(record(EditVerdict::Invalid));
                        continue;
                    }
                };
                let mut verdict = review(&parent.spec, &child, Some(&candidate.manifest), &context);
                verdict.candidate_id = Some(candidate.id().to_string());
                audit.push(json!({
                    "round": round, "candidate_id": candidate.id(), "stage": "critic",
                    "decision": verdict.decision, "verdict": verdict,
                }));
                if !verdict.accepted() {
                    self.progress
                        .stage(round, "critic", &format!("{} rejected", candidate.id()));
                    if let Some(concern) = &verdict.strategy_concern {
                        strategy_concern = Some(concern.clone());
                    }
                    history.push(record(EditVerdict::RejectedByCritic));
                    verdicts.push(verdict);
                    continue;
                }
                let child_hash = kiln_harness::content_hash(&child, &builtin_registry()).ok();
                if let Some(hash) = &child_hash
                    && !tried.insert((parent.hash.clone(), hash.clone()))
                {
                    audit.push(json!({
                        "round": round, "candidate_id": candidate.id(), "stage": "dedup",
                        "decision": "skipped",
                        "reason": format!("harness {hash} was already gated against this parent"),
                    }));
                    history.push(record(EditVerdict::Invalid));
                    verdicts.push(verdict);
                    continue;
                }
                score.gated += 1;
                let result = self
                    .gate_candidate(
                        round,
                        candidate.id(),
                        &child,
                        verdict.budget.charge,
                        &parent,
                        &calibration,
                        &mut episodes,
                    )
                    .await?;
                audit.push(json!({
                    "round": round, "candidate_id": candidate.id(), "stage": "gate",
                    "decision": if result.decision.shipped() { "ship" } else { "reject" },
                    "gate": result.decision,
                    "rollout_error": result.rollout_error,
                }));
                self.progress.stage(
                    round,
                    "gate",
                    &format!("{}: {}", candidate.id(), verdict_line(&result.decision)),
                );
                let mut entry = record(if result.decision.shipped() {
                    EditVerdict::Shipped
                } else {
                    EditVerdict::RejectedByGate
                });
                entry.hit = result.decision.shipped()
                    && result
                        .decision
                        .aggregate
                        .as_ref()
                        .is_some_and(|a| a.gain > 0.0);
                history.push(entry);
                decisions.push(result.decision.clone());
                verdicts.push(verdict);
                gated.insert(candidate.id().to_string(), result);
            }

            // Which candidates ship: the best alone, or several with disjoint buckets whose
            // combination passes the gate again.
            let mut ranked: Vec<(&GateDecision, Vec<Bucket>)> = decisions
                .iter()
                .filter(|d| d.shipped())
                .map(|d| {
                    let buckets = proposals
                        .candidates
                        .iter()
                        .find(|c| c.id() == d.candidate_id)
                        .map(|c| c.manifest.buckets.clone())
                        .unwrap_or_default();
                    (d, buckets)
                })
                .collect();
            ranked.sort_by(|a, b| {
                let gain = |d: &GateDecision| d.aggregate.as_ref().map_or(0.0, |s| s.net_gain);
                gain(b.0)
                    .total_cmp(&gain(a.0))
                    .then_with(|| a.0.candidate_id.cmp(&b.0.candidate_id))
            });
            let ranked: Vec<Shippable> = ranked
                .into_iter()
                .map(|(d, buckets)| Shippable {
                    candidate_id: d.candidate_id.clone(),
                    buckets,
                })
                .collect();
            let members = disjoint_selection(&ranked);
            let combined = if members.len() > 1 {
                self.gate_combination(
                    round,
                    &members,
                    &proposals,
                    &parent,
                    &calibration,
                    &mut episodes,
                )
                .await?
            } else {
                None
            };
            if let Some(Gated { decision, .. }) = &combined {
                audit.push(json!({
                    "round": round, "candidate_id": decision.candidate_id, "stage": "combination_gate",
                    "decision": if decision.shipped() { "ship" } else { "reject" },
                    "gate": decision,
                }));
            }
            let choice = combination_decision(&members, combined.as_ref().map(|c| &c.decision));
            audit.push(json!({
                "round": round, "stage": "ship", "ship": choice.ship, "reason": choice.reason,
            }));
            let shipped = choice.ship.clone();
            let new_parent = match (&combined, shipped.len()) {
                (_, 0) => None,
                (Some(combination), n) if n > 1 && combination.decision.shipped() => {
                    Some((combination.child.clone(), combination.child_table.clone()))
                }
                _ => gated
                    .get(&shipped[0])
                    .map(|g| (g.child.clone(), g.child_table.clone())),
            };
            for id in &shipped {
                if let Some(candidate) = proposals.candidates.iter().find(|c| c.id() == id) {
                    let score = scores
                        .entry(candidate.manifest.operator.clone())
                        .or_default();
                    score.shipped += 1;
                    score.shipped_rounds.push(round);
                    if gated.get(id).is_some_and(|g| {
                        g.decision.aggregate.as_ref().is_some_and(|a| a.gain > 0.0)
                    }) {
                        score.hits += 1;
                    }
                }
            }
            if self.mode == Mode::Evolve {
                self.write_round_decisions(
                    round,
                    &verdicts,
                    &decisions,
                    &choice.ship,
                    &choice.reason,
                    combined.as_ref().map(|c| &c.decision),
                )?;
            }
            previous_digests = Some(digests);
            previous_proposals = Some(proposals);
            match new_parent {
                Some((spec, table)) => {
                    stalled = 0;
                    let (_, hash) = self.harness_file(&spec)?;
                    let (recalibrated, table) = self
                        .recalibrate(round, &spec, table, &calibration, &mut episodes)
                        .await?;
                    audit.push(json!({
                        "round": round, "stage": "recalibration", "calibration": recalibrated,
                    }));
                    calibration = recalibrated;
                    let search_dir = self.run_search(round, &spec, &mut episodes).await?;
                    parent = Parent {
                        spec,
                        hash,
                        gate: table,
                        search_dir,
                    };
                }
                None => stalled += 1,
            }
            curves.push(self.curve_point(round, &parent, shipped, &episodes, &mut round_start)?);
            self.write_progress_files(audit, &curves, &scores)?;
            if stalled >= self.config.patience {
                stop_reason = format!("no candidate shipped in {stalled} rounds (patience)");
                break;
            }
        }
        let summary = EvolutionSummary {
            rounds_run,
            final_harness: parent.spec,
            final_hash: parent.hash,
            audit: audit.clone(),
            curves,
            calibration,
            episodes: episodes.count,
            stop_reason,
        };
        Ok((summary, store))
    }

    /// Writes `harnesses/<hash>.toml` (canonical) and returns its path and hash.
    pub fn harness_file(&self, spec: &HarnessSpec) -> Result<(PathBuf, String), EvolveError> {
        harness_file(&self.dir, spec, self.mode)
    }

    pub(crate) async fn rollout(
        &self,
        plan: Rollout<'_>,
        episodes: &mut Tally,
    ) -> Result<PathBuf, EvolveError> {
        let Rollout {
            round,
            purpose,
            dir,
            spec,
            role,
            tasks,
            attempts,
            seed_scope,
            candidate,
        } = plan;
        let (harness_file, harness_hash) = self.harness_file(spec)?;
        let split = match role {
            SplitRole::Search => self.splits.search_source.clone(),
            SplitRole::Gate => self.splits.gate_source.clone(),
            SplitRole::HeldOut => self.splits.held_out_source.clone(),
        };
        self.progress.stage(
            round,
            "rollout",
            &format!("{purpose}: {} tasks x {attempts}", tasks.len()),
        );
        episodes.count += tasks.len() as u64 * u64::from(attempts);
        let request = RolloutRequest {
            purpose,
            dir: dir.clone(),
            harness_file,
            harness_hash,
            split,
            tasks,
            attempts,
            seed_scope: seed_scope.to_string(),
        };
        // A failed rollout is remembered, so a resumed or replayed evolution takes the same
        // decision about it instead of trying again.
        let failure = dir.join(FAILED_MARKER);
        if candidate && let Ok(message) = std::fs::read_to_string(&failure) {
            return Err(RolloutError::new(&request, message.trim()).into());
        }
        let started = std::time::Instant::now();
        let ran = self.rollouts.run(&request).await;
        episodes.rollout_seconds += started.elapsed().as_secs_f64();
        if let Err(error) = &ran
            && candidate
            && error.kind() == RolloutErrorKind::Failed
            && self.mode == Mode::Evolve
        {
            write_text(&failure, &error.message)?;
        }
        ran?;
        // Whatever ran it, the directory must now hold exactly this rollout.
        match crate::rollouts::stored_run(&request)? {
            crate::rollouts::StoredRun::Complete => Ok(dir),
            other => Err(EvolveError::Invalid(format!(
                "rollout {} ended without every outcome recorded ({other:?})",
                request.purpose
            ))),
        }
    }

    async fn run_search(
        &self,
        round: u32,
        spec: &HarnessSpec,
        episodes: &mut Tally,
    ) -> Result<PathBuf, EvolveError> {
        self.rollout(
            Rollout {
                round,
                purpose: format!("R{round} search"),
                dir: self.round_runs(round).join("search"),
                spec,
                role: SplitRole::Search,
                tasks: self.splits.search.clone(),
                attempts: self.config.search_attempts,
                seed_scope: SEARCH_SCOPE,
                candidate: false,
            },
            episodes,
        )
        .await
    }

    fn round_runs(&self, round: u32) -> PathBuf {
        artifacts::round_dir(&self.dir, round).join("runs")
    }

    /// Round 0: the seed twice on the gate split with the same seeds (A/A), then the calibration.
    async fn calibrate(
        &self,
        episodes: &mut Tally,
        audit: &mut Vec<Value>,
    ) -> Result<Calibration, EvolveError> {
        let n = self.config.attempts;
        let mut tables = Vec::new();
        for name in ["gate-a", "gate-b"] {
            let dir = self
                .rollout(
                    Rollout {
                        round: 0,
                        purpose: format!("R0 {name}"),
                        dir: self.round_runs(0).join(name),
                        spec: &self.seed_harness,
                        role: SplitRole::Gate,
                        tasks: self.splits.gate.clone(),
                        attempts: n,
                        seed_scope: GATE_SCOPE,
                        candidate: false,
                    },
                    episodes,
                )
                .await?;
            tables.push(self.gate_table(&dir, n)?);
        }
        let round0: Vec<AaTask> = self
            .splits
            .gate
            .iter()
            .map(|task| AaTask {
                task: task.clone(),
                first: tables[0][task].clone(),
                second: tables[1][task].clone(),
            })
            .collect();
        let mut gate_config = self.config.gate_config.clone();
        gate_config.seed = self.config.seed;
        let calibration = calibrate(&round0, &gate_config);
        self.progress.stage(
            0,
            "calibrate",
            &format!(
                "gate n = {} (measured {}), false reject {:.3}, false accept {:.3}{}",
                calibration.attempts,
                calibration.measured_attempts,
                calibration.family_false_reject,
                calibration.false_accept_rate,
                if calibration.noise {
                    ", still noise"
                } else {
                    ""
                }
            ),
        );
        audit.push(json!({"round": 0, "stage": "calibration", "calibration": calibration}));
        if self.mode == Mode::Evolve {
            write_json(
                &artifacts::round_dir(&self.dir, 0).join("calibration.json"),
                &calibration,
            )?;
        }
        Ok(calibration)
    }

    /// The gate's tolerances for a newly shipped parent, from its own gate rows: round 0's margins
    /// came from the seed's pass rates, and a task the seed never solved but the new parent does
    /// must be protected by what the new parent's rate says is noise. When the per-task check
    /// would be noise at the current `n` (a task solved 1/1 cannot be told from luck), `n` is
    /// raised and the new parent's gate rows are measured again at that `n`.
    async fn recalibrate(
        &self,
        round: u32,
        spec: &HarnessSpec,
        table: BTreeMap<String, Vec<bool>>,
        current: &Calibration,
        episodes: &mut Tally,
    ) -> Result<(Calibration, BTreeMap<String, Vec<bool>>), EvolveError> {
        let rows = |table: &BTreeMap<String, Vec<bool>>| -> Vec<AaTask> {
            table
                .iter()
                .map(|(task, row)| AaTask {
                    task: task.clone(),
                    first: row.clone(),
                    second: Vec::new(),
                })
                .collect()
        };
        let wanted = calibrate(&rows(&table), &current.config);
        let attempts = wanted.attempts.max(current.attempts);
        if attempts == current.attempts {
            return Ok((
                calibrate_at(&rows(&table), &current.config, attempts),
                table,
            ));
        }
        let dir = self
            .rollout(
                Rollout {
                    round,
                    purpose: format!("R{round} new parent gate at n = {attempts}"),
                    dir: self
                        .round_runs(round)
                        .join(format!("parent-gate-n{attempts}")),
                    spec,
                    role: SplitRole::Gate,
                    tasks: self.splits.gate.clone(),
                    attempts,
                    seed_scope: GATE_SCOPE,
                    candidate: false,
                },
                episodes,
            )
            .await?;
        let table = self.gate_table(&dir, attempts)?;
        let calibration = calibrate_at(&rows(&table), &current.config, attempts);
        self.progress.stage(
            round,
            "calibrate",
            &format!(
                "new parent: gate n raised to {attempts}{}",
                if calibration.noise {
                    " (still noise)"
                } else {
                    ""
                }
            ),
        );
        Ok((calibration, table))
    }

    /// The seed's gate run at the calibrated n: `gate-a` when n was not raised.
    async fn parent_gate_run(
        &self,
        calibration: &Calibration,
        episodes: &mut Tally,
    ) -> Result<PathBuf, EvolveError> {
        if calibration.attempts == self.config.attempts {
            return Ok(self.round_runs(0).join("gate-a"));
        }
        self.rollout(
            Rollout {
                round: 0,
                purpose: format!("R0 gate at n = {}", calibration.attempts),
                dir: self
                    .round_runs(0)
                    .join(format!("gate-n{}", calibration.attempts)),
                spec: &self.seed_harness,
                role: SplitRole::Gate,
                tasks: self.splits.gate.clone(),
                attempts: calibration.attempts,
                seed_scope: GATE_SCOPE,
                candidate: false,
            },
            episodes,
        )
        .await
    }

    fn gate_table(
        &self,
        dir: &Path,
        attempts: u32,
    ) -> Result<BTreeMap<String, Vec<bool>>, EvolveError> {
        let outcomes = read_outcomes(dir).map_err(EvolveError::Invalid)?;
        Ok(success_table(&outcomes, &self.splits.gate, attempts))
    }

    /// Proposals of round `round`: stored ones when the round was proposed before (a resumed or
    /// replayed evolution judges the same candidates), else the evolvers'.
    async fn proposals(
        &self,
        round: u32,
        parent: &Parent,
        landscape: &Landscape,
        digests: &[TaskDigest],
        demonstrations: &[Demonstration],
        history: &[EditRecord],
    ) -> Result<Proposals, EvolveError> {
        let path = artifacts::round_dir(&self.dir, round).join("proposals.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let stored: StoredProposals = serde_json::from_str(&text)
                .map_err(|error| EvolveError::Invalid(format!("{}: {error}", path.display())))?;
            if stored.parent != parent.hash {
                return Err(EvolveError::Invalid(format!(
                    "{}: proposed for parent {}, but this round's parent is {}",
                    path.display(),
                    stored.parent,
                    parent.hash
                )));
            }
            return Ok(stored.proposals());
        }
        if self.mode == Mode::Replay {
            return Err(EvolveError::Invalid(format!(
                "{} is missing: replay judges stored proposals only",
                path.display()
            )));
        }
        let share = split_evenly(self.config.candidates, self.evolvers.len());
        let mut proposals = Proposals::default();
        for (index, (evolver, k)) in self.evolvers.iter().zip(share).enumerate() {
            if k == 0 {
                continue;
            }
            let input = EvolveInput {
                env: &self.config.env,
                round,
                parent: &parent.spec,
                landscape,
                digests,
                splits: &self.splits,
                demonstrations,
                history,
                k,
                seed: self.config.seed.wrapping_add(index as u64),
            };
            let mut more = evolver.propose(&input).await;
            self.progress.stage(
                round,
                "evolve",
                &format!(
                    "{}: {} candidates, {} rejected proposals",
                    evolver.name(),
                    more.candidates.len(),
                    more.rejected.len()
                ),
            );
            proposals.candidates.append(&mut more.candidates);
            proposals.rejected.append(&mut more.rejected);
        }
        renumber(round, &mut proposals);
        write_json(
            &path,
            &StoredProposals {
                parent: parent.hash.clone(),
                candidates: proposals.candidates.clone(),
                rejected: proposals
                    .rejected
                    .iter()
                    .map(|r| StoredRejected {
                        candidate_id: r.candidate_id.clone(),
                        evolver: r.evolver.clone(),
                        reason: r.reason.clone(),
                        raw: r.raw.clone(),
                    })
                    .collect(),
            },
        )?;
        Ok(proposals)
    }

    fn critic_context(&self, round: u32, scores: &BTreeMap<String, LeverScore>) -> CriticContext {
        CriticContext {
            forbidden: self.forbidden.clone(),
            search_split: Some(self.splits.search.iter().cloned().collect()),
            seed: Some(self.seed_harness.clone()),
            lever_history: scores
                .iter()
                .map(|(operator, score)| LeverHistory {
                    operator: operator.clone(),
                    shipped_rounds: score.shipped_rounds.clone(),
                    hit_rate: score.prediction_precision().unwrap_or(score.hit_rate()),
                })
                .collect(),
            round,
            ..CriticContext::default()
        }
    }

    /// Smoke episode, then the child on the gate split paired with the parent.
    #[allow(clippy::too_many_arguments)]
    async fn gate_candidate(
        &self,
        round: u32,
        id: &str,
        child: &HarnessSpec,
        budget_charge: f64,
        parent: &Parent,
        calibration: &Calibration,
        episodes: &mut Tally,
    ) -> Result<Gated, EvolveError> {
        let canonical = canonical_check(child, &builtin_registry());
        let mut input = GateInput {
            candidate_id: id.to_string(),
            canonical: canonical.clone(),
            smoke: SmokeResult {
                ran: false,
                harness_error: None,
            },
            outcomes: Vec::new(),
            budget_charge,
        };
        let mut child_table = BTreeMap::new();
        let mut rollout_error = None;
        if matches!(canonical, crate::gate::CanonicalCheck::Ok { .. }) {
            // A candidate whose rollouts fail (its harness does not load, the run breaks) is
            // rejected with the reason; it never ends the evolution.
            input.smoke = match self.smoke(round, id, child, episodes).await {
                Ok(smoke) => smoke,
                Err(error) if is_candidate_failure(&error) => SmokeResult {
                    ran: false,
                    harness_error: Some(format!("the smoke rollout failed: {error}")),
                },
                Err(error) => return Err(error),
            };
            if input.smoke.ran && input.smoke.harness_error.is_none() {
                let gate_run = self
                    .rollout(
                        Rollout {
                            round,
                            purpose: format!("R{round} {id} gate"),
                            dir: self.round_runs(round).join(format!("{id}-gate")),
                            spec: child,
                            role: SplitRole::Gate,
                            tasks: self.splits.gate.clone(),
                            attempts: calibration.attempts,
                            seed_scope: GATE_SCOPE,
                            candidate: true,
                        },
                        episodes,
                    )
                    .await;
                match gate_run {
                    Ok(dir) => {
                        child_table = self.gate_table(&dir, calibration.attempts)?;
                        input.outcomes = paired(&parent.gate, &child_table);
                    }
                    // No outcomes: the gate rejects at its per-task stage.
                    Err(error) if is_candidate_failure(&error) => {
                        rollout_error = Some(error.to_string());
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(Gated {
            decision: decide(&input, calibration),
            child: child.clone(),
            child_table,
            rollout_error,
        })
    }

    /// One episode of the child on the first search task: a harness that fails at once is
    /// rejected before it costs a gate run.
    async fn smoke(
        &self,
        round: u32,
        id: &str,
        child: &HarnessSpec,
        episodes: &mut Tally,
    ) -> Result<SmokeResult, EvolveError> {
        let Some(task) = self.splits.search.first() else {
            return Ok(SmokeResult {
                ran: false,
                harness_error: Some("the search split is empty".into()),
            });
        };
        let dir = self
            .rollout(
                Rollout {
                    round,
                    purpose: format!("R{round} {id} smoke"),
                    dir: self.round_runs(round).join(format!("{id}-smoke")),
                    spec: child,
                    role: SplitRole::Search,
                    tasks: vec![task.clone()],
                    attempts: 1,
                    seed_scope: SMOKE_SCOPE,
                    candidate: true,
                },
                episodes,
            )
            .await?;
        let outcomes = read_outcomes(&dir).map_err(EvolveError::Invalid)?;
        let Some(outcome) = outcomes.first() else {
            return Ok(SmokeResult {
                ran: false,
                harness_error: None,
            });
        };
        let harness_error = (outcome.termination == Termination::HarnessError).then(|| {
            outcome
                .error
                .clone()
                .unwrap_or_else(|| "the harness stopped the episode".into())
        });
        Ok(SmokeResult {
            ran: true,
            harness_error,
        })
    }

    /// Gates the members' edits applied together. None when they do not compose.
    async fn gate_combination(
        &self,
        round: u32,
        members: &[Shippable],
        proposals: &Proposals,
        parent: &Parent,
        calibration: &Calibration,
        episodes: &mut Tally,
    ) -> Result<Option<Gated>, EvolveError> {
        let mut edits = Vec::new();
        for member in members {
            let Some(candidate) = proposals
                .candidates
                .iter()
                .find(|c| c.id() == member.candidate_id)
            else {
                return Ok(None);
            };
            edits.extend(candidate.edits.iter().cloned());
        }
        let Ok(child) = apply_edits(&parent.spec, &edits, &builtin_registry()) else {
            return Ok(None);
        };
        let verdict = review(
            &parent.spec,
            &child,
            None,
            &self.critic_context(round, &BTreeMap::new()),
        );
        let id = format!("C-R{round}-combined");
        self.gate_candidate(
            round,
            &id,
            &child,
            verdict.budget.charge,
            parent,
            calibration,
            episodes,
        )
        .await
        .map(Some)
    }

    /// Realized unlocks of last round's shipped candidates: predicted search tasks solved now.
    fn update_predictions(
        &self,
        scores: &mut BTreeMap<String, LeverScore>,
        previous: &Proposals,
        current: &[TaskDigest],
        history: &[EditRecord],
        round: u32,
    ) {
        let solved: BTreeSet<&str> = current
            .iter()
            .filter(|d| d.status == TaskStatus::Solved)
            .map(|d| d.task_id.as_str())
            .collect();
        for entry in history
            .iter()
            .filter(|e| e.round == round - 1 && e.verdict == EditVerdict::Shipped)
        {
            let Some(candidate) = previous
                .candidates
                .iter()
                .find(|c| c.id() == entry.candidate_id)
            else {
                continue;
            };
            let predicted = &candidate.manifest.predicted_impact.tasks_will_unlock;
            let score = scores.entry(entry.operator.clone()).or_default();
            score.predicted_unlocks += predicted.len() as u32;
            score.realized_unlocks += predicted
                .iter()
                .filter(|t| solved.contains(t.as_str()))
                .count() as u32;
        }
    }

    fn curve_point(
        &self,
        round: u32,
        parent: &Parent,
        shipped: Vec<String>,
        episodes: &Tally,
        round_start: &mut (std::time::Instant, Tally),
    ) -> Result<CurvePoint, EvolveError> {
        let wall = round_start.0.elapsed().as_secs_f64();
        let rollout_seconds = episodes.rollout_seconds - round_start.1.rollout_seconds;
        let round_episodes = episodes.count - round_start.1.count;
        *round_start = (std::time::Instant::now(), episodes.clone());
        let gate_successes: u64 = parent.gate.values().flatten().filter(|s| **s).count() as u64;
        let gate_total: u64 = parent.gate.values().map(|r| r.len() as u64).sum();
        let search = read_outcomes(&parent.search_dir).map_err(EvolveError::Invalid)?;
        let search_successes = search.iter().filter(|o| o.success).count() as u64;
        Ok(CurvePoint {
            round,
            parent: parent.hash.clone(),
            gate_pass_at_1: stats::pass_at_1(gate_successes, gate_total),
            search_pass_at_1: stats::pass_at_1(search_successes, search.len() as u64),
            shipped,
            episodes: episodes.count,
            round_episodes,
            rollout_seconds,
            aegis_seconds: (wall - rollout_seconds).max(0.0),
        })
    }

    fn write_progress_files(
        &self,
        audit: &[Value],
        curves: &[CurvePoint],
        scores: &BTreeMap<String, LeverScore>,
    ) -> Result<(), EvolveError> {
        if self.mode == Mode::Replay {
            return Ok(());
        }
        let lines: String = audit.iter().map(|v| v.to_string() + "\n").collect();
        write_text(&self.dir.join("audit.jsonl"), &lines)?;
        write_json(&self.dir.join("curves.json"), &curves)?;
        let board: BTreeMap<&String, Value> = scores
            .iter()
            .map(|(operator, score)| {
                (
                    operator,
                    json!({
                        "tries": score.tries, "gated": score.gated, "shipped": score.shipped,
                        "shipped_rounds": score.shipped_rounds, "hit_rate": score.hit_rate(),
                        "prediction_precision": score.prediction_precision(),
                    }),
                )
            })
            .collect();
        write_json(&self.dir.join("scoreboard.json"), &board)
    }

    fn write_round_decisions(
        &self,
        round: u32,
        verdicts: &[CriticVerdict],
        decisions: &[GateDecision],
        ship: &[String],
        reason: &str,
        combined: Option<&GateDecision>,
    ) -> Result<(), EvolveError> {
        let dir = artifacts::round_dir(&self.dir, round);
        write_json(&dir.join("verdicts.json"), &verdicts)?;
        let mut gate: Vec<&GateDecision> = decisions.iter().collect();
        gate.extend(combined);
        write_json(&dir.join("gate.json"), &gate)?;
        let mut text = format!("# Round {round}: decision\n\n");
        if ship.is_empty() {
            let _ = writeln!(text, "Nothing shipped: {reason}.\n");
        } else {
            let _ = writeln!(text, "Shipped: {} ({reason}).\n", ship.join(", "));
        }
        text.push_str(
            "| candidate | critic | gate | p | gain | net gain |\n|---|---|---|---|---|---|\n",
        );
        for verdict in verdicts {
            let id = verdict.candidate_id.clone().unwrap_or_default();
            let decision = decisions.iter().find(|d| d.candidate_id == id);
            let (gate, p, gain, net) = match decision {
                Some(d) => {
                    let stats = d.aggregate.as_ref();
                    (
                        verdict_line(d),
                        stats.map_or("-".into(), |s| format!("{:.4}", s.p_value)),
                        stats.map_or("-".into(), |s| format!("{:+.3}", s.gain)),
                        stats.map_or("-".into(), |s| format!("{:+.3}", s.net_gain)),
                    )
                }
                // Accepted by the critic but not gated: the same harness was gated against this
                // parent before (audit.jsonl has the `dedup` line).
                None if verdict.accepted() => (
                    "not gated: already gated against this parent".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into()),
            };
            let critic = if verdict.accepted() {
                "accept".to_string()
            } else {
                let reasons: Vec<String> =
                    verdict.reasons.iter().map(|r| r.message.clone()).collect();
                format!("reject: {}", reasons.join("; ").replace('|', "/"))
            };
            let _ = writeln!(
                text,
                "| {id} | {critic} | {} | {p} | {gain} | {net} |",
                gate.replace('|', "/")
            );
        }
        write_text(&dir.join("decision.md"), &text)?;
        let mut regressions = format!("# Round {round}: regressions\n\n");
        let mut any = false;
        for decision in decisions.iter().chain(combined) {
            for r in &decision.regressions {
                any = true;
                let _ = writeln!(
                    regressions,
                    "- {} lost `{}`: {:.2} -> {:.2} over {} attempts (tolerance {} attempts)",
                    decision.candidate_id,
                    r.task,
                    r.parent_rate,
                    r.child_rate,
                    r.attempts,
                    r.margin
                );
            }
        }
        if !any {
            regressions.push_str("None.\n");
        }
        write_text(&dir.join("regressions.md"), &regressions)
    }
}

/// A gate table's rows paired with the parent's, in gate-task order.
fn paired(
    parent: &BTreeMap<String, Vec<bool>>,
    child: &BTreeMap<String, Vec<bool>>,
) -> Vec<PairedTask> {
    parent
        .iter()
        .map(|(task, row)| PairedTask {
            task: task.clone(),
            parent: row.clone(),
            child: child.get(task).cloned().unwrap_or_default(),
        })
        .collect()
}

fn verdict_line(decision: &GateDecision) -> String {
    match &decision.verdict {
        crate::gate::GateVerdict::Ship => "ship".to_string(),
        crate::gate::GateVerdict::Reject { stage, reason } => {
            format!("reject at {stage:?}: {reason}")
        }
    }
}

/// The agent's own successes on the search split, as demonstrations.
fn demonstrations(run: &RunTraces, splits: &EvolutionSplits) -> Vec<Demonstration> {
    let mut seen = BTreeSet::new();
    run.outcomes
        .iter()
        .filter(|o| o.success && seen.insert(o.task_id.clone()))
        .filter_map(|o| run.trajectory(&o.task_id, o.attempt))
        .filter_map(|t| Demonstration::from_trajectory(t, splits, "agent").ok())
        .collect()
}

/// `k` split over `n` evolvers, the first ones taking the remainder.
fn split_evenly(k: usize, n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    (0..n).map(|i| k / n + usize::from(i < k % n)).collect()
}

/// Candidate ids in proposal order, across evolvers: `C-R<round>-01`, …
fn renumber(round: u32, proposals: &mut Proposals) {
    let mut index = 0;
    for candidate in &mut proposals.candidates {
        candidate.manifest.candidate_id = crate::candidate::candidate_id(round, index);
        index += 1;
    }
    for rejected in &mut proposals.rejected {
        rejected.candidate_id = crate::candidate::candidate_id(round, index);
        index += 1;
    }
}

/// `R<n>/proposals.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredProposals {
    /// The parent's content hash.
    parent: String,
    candidates: Vec<Candidate>,
    rejected: Vec<StoredRejected>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRejected {
    candidate_id: String,
    evolver: String,
    reason: String,
    raw: String,
}

impl StoredProposals {
    fn proposals(self) -> Proposals {
        Proposals {
            candidates: self.candidates,
            rejected: self
                .rejected
                .into_iter()
                .map(|r| RejectedProposal {
                    candidate_id: r.candidate_id,
                    evolver: r.evolver,
                    reason: r.reason,
                    raw: r.raw,
                })
                .collect(),
        }
    }
}

/// Writes `harnesses/<hash>.toml` under `dir` (every harness version by hash) unless replaying.
pub fn harness_file(
    dir: &Path,
    spec: &HarnessSpec,
    mode: Mode,
) -> Result<(PathBuf, String), EvolveError> {
    let harness = Harness::new(spec).map_err(|error| {
        EvolveError::Invalid(format!("harness `{}` is invalid: {error}", spec.name))
    })?;
    let hash = harness.hash().to_string();
    let path = dir.join("harnesses").join(format!("{hash}.toml"));
    if mode == Mode::Evolve && !path.exists() {
        let text = harness.canonical_toml().map_err(|error| {
            EvolveError::Invalid(format!("harness {hash} does not serialize: {error}"))
        })?;
        write_text(&path, &text)?;
    }
    Ok((path, hash))
}

pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), EvolveError> {
    Ok(artifacts::write(path, text)?)
}

pub(crate) fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), EvolveError> {
    let text = serde_json::to_string_pretty(value).map_err(|error| {
        EvolveError::Invalid(format!("{}: cannot serialize: {error}", path.display()))
    })?;
    write_text(path, &(text + "\n"))
}

/// Reads `audit.jsonl`.
pub fn read_audit(dir: &Path) -> Result<Vec<Value>, EvolveError> {
    let path = dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|error| {
        EvolveError::Invalid(format!("cannot read {}: {error}", path.display()))
    })?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|error| {
                EvolveError::Invalid(format!("{} line {}: {error}", path.display(), index + 1))
            })
        })
        .collect()
}

/// How a replay's decisions differ from the stored ones: one line per differing, missing or extra
/// decision. Empty when every decision was re-derived identically.
pub fn audit_differences(stored: &[Value], derived: &[Value]) -> Vec<String> {
    let label = |v: &Value| {
        format!(
            "round {} {} {}",
            v.get("round").unwrap_or(&Value::Null),
            v.get("candidate_id").and_then(Value::as_str).unwrap_or("-"),
            v.get("stage").and_then(Value::as_str).unwrap_or("-")
        )
    };
    // What was decided: the verdict, or the shipped list of a round's ship line.
    let outcome = |v: &Value| {
        v.get("decision")
            .or_else(|| v.get("ship"))
            .unwrap_or(&Value::Null)
            .to_string()
    };
    let mut differences = Vec::new();
    for index in 0..stored.len().max(derived.len()) {
        match (stored.get(index), derived.get(index)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => differences.push(format!(
                "decision {}: stored {} = {}, re-derived {} = {}",
                index + 1,
                label(a),
                outcome(a),
                label(b),
                outcome(b)
            )),
            (Some(a), None) => differences.push(format!(
                "decision {}: stored {} was not re-derived",
                index + 1,
                label(a)
            )),
            (None, Some(b)) => differences.push(format!(
                "decision {}: re-derived {} is not in the stored audit",
                index + 1,
                label(b)
            )),
            (None, None) => {}
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolver::RulesEvolver;

    /// Writes run directories itself: task `tN` succeeds when N is even, else hits the step
    /// limit; candidates' rollouts fail when `fail_candidates`.
    struct Synthetic {
        fail_candidates: bool,
    }

    #[async_trait::async_trait]
    impl Rollouts for Synthetic {
        async fn run(&self, request: &RolloutRequest) -> Result<(), RolloutError> {
            if self.fail_candidates && request.purpose.contains("C-R") {
                return Err(RolloutError::new(
                    request,
                    "the candidate's harness broke the run",
                ));
            }
            let quoted: Vec<String> = request.tasks.iter().map(|t| format!("\"{t}\"")).collect();
            let run_toml = format!(
                "run_id = \"{}\"\nenv = \"toy\"\nsplit = \"{}\"\nattempts = {}\ntasks = [{}]\nseed_scope = \"{}\"\n[harness]\nname = \"h\"\nhash = \"{}\"\n",
                request.purpose.replace(' ', "-"),
                request.split,
                request.attempts,
                quoted.join(", "),
                request.seed_scope,
                request.harness_hash
            );
            let mut outcomes = String::new();
            for task in &request.tasks {
                let even = task.trim_start_matches(['t', 'h']).parse::<u32>().unwrap() % 2 == 0;
                for attempt in 0..request.attempts {
                    let termination = if even { "env_done" } else { "max_steps" };
                    outcomes +=
                        &crate::digest::tests::outcome_json("r", task, attempt, even, termination);
                    outcomes.push('\n');
                }
            }
            std::fs::create_dir_all(&request.dir).unwrap();
            std::fs::write(request.dir.join("run.toml"), run_toml).unwrap();
            std::fs::write(request.dir.join("outcomes.jsonl"), outcomes).unwrap();
            Ok(())
        }
    }

    fn evolution(dir: &Path, fail_candidates: bool) -> Evolution {
        Evolution {
            config: EvolveConfig {
                env: "toy".into(),
                model: "oracle".into(),
                seed_harness: String::new(),
                rounds: 1,
                candidates: 2,
                attempts: 2,
                search_attempts: 1,
                final_attempts: 1,
                patience: 1,
                search: 5,
                gate: 5,
                held_out: None,
                evolver: "rules".into(),
                meta_model: None,
                seed: 0,
                baseline_max_attempts: 1,
                gate_config: GateConfig::default(),
            },
            dir: dir.to_path_buf(),
            seed_harness: kiln_harness::builtin_harness("react-text").unwrap(),
            splits: crate::traces::tests::splits(),
            evolvers: vec![Arc::new(RulesEvolver)],
            rollouts: Arc::new(Synthetic { fail_candidates }),
            forbidden: ForbiddenLiterals::new("toy"),
            progress: Arc::new(LogProgress),
            mode: Mode::Evolve,
        }
    }

    #[tokio::test]
    async fn a_candidate_whose_rollout_fails_is_rejected_and_the_evolution_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (summary, _) = evolution(dir.path(), true).run().await.unwrap();
        let gated: Vec<&Value> = summary
            .audit
            .iter()
            .filter(|d| d["stage"] == "gate")
            .collect();
        assert!(!gated.is_empty(), "{:?}", summary.audit);
        for decision in &gated {
            assert_eq!(decision["decision"], "reject");
            assert_eq!(decision["gate"]["verdict"]["stage"], "smoke", "{decision}");
            let reason = decision["gate"]["verdict"]["reason"].as_str().unwrap();
            assert!(reason.contains("broke the run"), "{reason}");
        }
        let id = gated[0]["candidate_id"].as_str().unwrap();
        assert!(
            dir.path()
                .join(format!("R1/runs/{id}-smoke/{FAILED_MARKER}"))
                .exists()
        );

        // Resumed with rollouts that would now succeed, the evolution takes the same decisions:
        // the failure is remembered, not retried.
        let (again, _) = evolution(dir.path(), false).run().await.unwrap();
        assert_eq!(again.audit, summary.audit);
        let mut replay = evolution(dir.path(), false);
        replay.rollouts = Arc::new(crate::rollouts::StoredRollouts);
        replay.mode = Mode::Replay;
        let (derived, stopped) = replay.replay().await;
        assert!(stopped.is_none(), "{stopped:?}");
        assert!(audit_differences(&summary.audit, &derived).is_empty());
    }

    #[test]
    fn candidates_are_shared_out_and_renumbered() {
        assert_eq!(split_evenly(5, 2), vec![3, 2]);
        assert_eq!(split_evenly(1, 2), vec![1, 0]);
        assert_eq!(split_evenly(4, 1), vec![4]);
    }

    #[test]
    fn configurations_name_their_differences() {
        let config = EvolveConfig {
            env: "webshop".into(),
            model: "local:smollm2".into(),
            seed_harness: "abc".into(),
            rounds: 3,
            candidates: 3,
            attempts: 2,
            search_attempts: 1,
            final_attempts: 3,
            patience: 2,
            search: 10,
            gate: 10,
            held_out: None,
            evolver: "rules".into(),
            meta_model: None,
            seed: 0,
            baseline_max_attempts: 8,
            gate_config: GateConfig::default(),
        };
        assert!(config.differences(&config).is_empty());
        let mut other = config.clone();
        other.rounds = 5;
        other.seed = 1;
        let differences = config.differences(&other);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].starts_with("rounds: evolve.toml has 5, requested 3"));
    }
}
