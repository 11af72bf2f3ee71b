//! `kiln evolve`: the AEGIS loop over ordinary runs, and `kiln evolve replay`.
//!
//! Every rollout is a `kiln run` (embedded, or on the NATS cluster with `--nats`) with its own run
//! directory under the evolution directory; the loop itself is [`kiln_evolve::Evolution`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kiln_environments::{EnvContext, EnvironmentFactory, catalog, default_data_dir};
use kiln_evolve::driver::{audit_differences, read_audit};
use kiln_evolve::evolver::{Evolver, LlmEvolver, RulesEvolver};
use kiln_evolve::report::{FinalReport, final_evaluation};
use kiln_evolve::rollouts::RolloutErrorKind;
use kiln_evolve::{
    Evolution, EvolutionSplits, EvolveConfig, EvolveProgress, Mode, RolloutError, RolloutRequest,
    Rollouts, SplitSizes, StoredRollouts,
};
use kiln_harness::{Harness, HarnessSpec, default_for_run};
use kiln_models::factory_for;
use kiln_protocol::ModelSpec;

use crate::args::{EvolveRunArgs, RunArgs, SandboxArgs};
use crate::commands::run::{RunEnd, execute_args};
use crate::forbidden::forbidden_literals;
use crate::input_error;

const EVOLVE_TOML: &str = "evolve.toml";
const DEFAULT_MODEL: &str = "local:smollm2";

pub async fn evolve(args: EvolveRunArgs) -> anyhow::Result<ExitCode> {
    let stored = match &args.resume {
        Some(dir) => Some(read_config(dir)?),
        None => None,
    };
    let dir = match (&args.resume, &args.out) {
        (Some(resume), Some(out)) if resume != out => {
            return Err(input_error(format!(
                "--resume {} and --out {} name different directories; give one of them",
                resume.display(),
                out.display()
            )));
        }
        (Some(dir), _) | (None, Some(dir)) => dir.clone(),
        (None, None) => default_dir(args.env.as_deref().unwrap_or("evolution")),
    };
    if stored.is_none() && dir.join(EVOLVE_TOML).exists() {
        return Err(input_error(format!(
            "--out {}: the directory already holds an evolution; pass `--resume {}` to continue it",
            dir.display(),
            dir.display()
        )));
    }
    if args.variants.unwrap_or(1) > 1 {
        return Err(input_error(
            "--variants > 1 (variant isolation) is not implemented yet; run with --variants 1",
        ));
    }
    let env = args
        .env
        .clone()
        .or_else(|| stored.as_ref().map(|c| c.env.clone()))
        .ok_or_else(|| {
            input_error("missing --env: which environment to evolve on (`kiln envs`)")
        })?;
    let model_text = args
        .model
        .clone()
        .or_else(|| stored.as_ref().map(|c| c.model.clone()))
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let model: ModelSpec = model_text
        .parse()
        .map_err(|error| input_error(format!("--model: {error}")))?;
    // The seed harness: given, stored (resuming), or the built-in one; a stored one is read only
    // after the settings are compared, so a changed flag is reported first.
    let given_harness = match (&args.harness, &stored) {
        (Some(path), _) => Some(
            Harness::load(path)
                .map_err(|error| input_error(format!("--harness: {error}")))?
                .spec()
                .clone(),
        ),
        (None, Some(_)) => None,
        (None, None) => Some(default_for_run(&env, &model)),
    };
    let seed_hash = match (&given_harness, &stored) {
        (Some(spec), _) => Harness::new(spec)
            .map_err(|error| input_error(format!("the seed harness is invalid: {error}")))?
            .hash()
            .to_string(),
        (None, stored) => stored
            .as_ref()
            .map(|config| config.seed_harness.clone())
            .unwrap_or_default(),
    };
    // A flag given wins, then evolve.toml when resuming, then the default.
    let stored_ref = stored.as_ref();
    fn pick<T>(given: Option<T>, stored: Option<T>, default: T) -> T {
        given.or(stored).unwrap_or(default)
    }
    let evolver = args
        .evolver
        .clone()
        .or_else(|| stored.as_ref().map(|c| c.evolver.clone()))
        .unwrap_or_else(|| "rules".into());
    let meta_model = args
        .meta_model
        .clone()
        .or_else(|| stored.as_ref().and_then(|c| c.meta_model.clone()));
    let config = EvolveConfig {
        env: env.clone(),
        model: model.to_string(),
        seed_harness: seed_hash,
        rounds: pick(args.rounds, stored_ref.map(|c| c.rounds), 3),
        candidates: pick(args.candidates, stored_ref.map(|c| c.candidates), 3),
        attempts: pick(args.attempts, stored_ref.map(|c| c.attempts), 2),
        search_attempts: pick(
            args.search_attempts,
            stored_ref.map(|c| c.search_attempts),
            1,
        ),
        final_attempts: pick(args.final_attempts, stored_ref.map(|c| c.final_attempts), 3),
        patience: pick(args.patience, stored_ref.map(|c| c.patience), 2),
        search: pick(args.search, stored_ref.map(|c| c.search), 10),
        gate: pick(args.gate, stored_ref.map(|c| c.gate), 10),
        held_out: args
            .held_out
            .or_else(|| stored.as_ref().and_then(|c| c.held_out)),
        evolver,
        meta_model,
        seed: pick(args.seed, stored_ref.map(|c| c.seed), 0),
        baseline_max_attempts: pick(
            args.baseline_max_attempts,
            stored_ref.map(|c| c.baseline_max_attempts),
            8,
        ),
        gate_config: stored
            .as_ref()
            .map(|c| c.gate_config.clone())
            .unwrap_or_default(),
    };
    validate(&config)?;
    if let Some(stored) = &stored {
        let differences = config.differences(stored);
        if !differences.is_empty() {
            return Err(input_error(format!(
                "--resume: the requested evolution differs from the stored one:\n  {}\n(leave those flags out to continue it)",
                differences.join("\n  ")
            )));
        }
    }
    let seed_harness = match given_harness {
        Some(spec) => spec,
        None => stored_harness(&dir, &config.seed_harness)?,
    };
    let evolvers = evolvers(&config).await?;
    let factory = open_env(&env)?;
    let splits = match &stored {
        Some(_) => read_splits(&dir)?,
        None => EvolutionSplits::draw(
            factory.as_ref(),
            SplitSizes {
                search: config.search,
                gate: config.gate,
                held_out: config.held_out,
            },
            config.seed,
        )
        .map_err(|error| input_error(format!("--env {env}: {error}")))?,
    };
    let ctx = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    let search: BTreeSet<String> = splits.search.iter().cloned().collect();
    let forbidden = forbidden_literals(&env, &ctx, Some(&search))
        .map_err(|error| input_error(format!("--env {env}: {error:#}")))?;

    std::fs::create_dir_all(&dir)
        .map_err(|error| input_error(format!("--out {}: {error}", dir.display())))?;
    if stored.is_none() {
        std::fs::write(dir.join(EVOLVE_TOML), toml::to_string_pretty(&config)?)?;
        kiln_evolve::artifacts::write_splits(&dir, &splits)?;
    }
    let rollouts = CliRollouts {
        env: env.clone(),
        model: model.to_string(),
        workers: args.workers,
        timeout_s: args.timeout_s,
        nats: args.nats.clone(),
        sandbox: args.sandbox.clone(),
    };
    let evolution = Evolution {
        config,
        dir: dir.clone(),
        seed_harness,
        splits,
        evolvers,
        rollouts: Arc::new(rollouts),
        forbidden,
        progress: Arc::new(PrintProgress),
        mode: Mode::Evolve,
    };
    eprintln!(
        "kiln evolve: {} on {} in {} (search {}, gate {}, held-out {} tasks)",
        evolution.config.model,
        env,
        dir.display(),
        evolution.splits.search.len(),
        evolution.splits.gate.len(),
        evolution.splits.held_out.len()
    );
    let started = Instant::now();
    let (summary, store) = evolution.run().await.map_err(|error| {
        anyhow::anyhow!(
            "{error}\ncontinue with `kiln evolve --resume {}`",
            dir.display()
        )
    })?;
    let report = final_evaluation(&evolution, &summary, store, started.elapsed().as_secs_f64())
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "final evaluation: {error}\ncontinue with `kiln evolve --resume {}`",
                dir.display()
            )
        })?;
    println!("{}", render_summary(&report, &dir));
    Ok(ExitCode::SUCCESS)
}

/// `kiln evolve replay DIR`.
pub async fn replay(dir: &Path) -> anyhow::Result<ExitCode> {
    let config = read_config(dir)?;
    let splits = read_splits(dir)?;
    let seed_harness = stored_harness(dir, &config.seed_harness)?;
    let ctx = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    let search: BTreeSet<String> = splits.search.iter().cloned().collect();
    let forbidden = forbidden_literals(&config.env, &ctx, Some(&search)).map_err(|error| {
        input_error(format!("{}: env {}: {error:#}", dir.display(), config.env))
    })?;
    let stored_audit = read_audit(dir)?;
    let evolution = Evolution {
        config,
        dir: dir.to_path_buf(),
        seed_harness,
        splits,
        evolvers: Vec::new(),
        rollouts: Arc::new(StoredRollouts),
        forbidden,
        progress: Arc::new(kiln_evolve::driver::LogProgress),
        mode: Mode::Replay,
    };
    let (derived, stopped) = evolution.replay().await;
    let mut differences = audit_differences(&stored_audit, &derived);
    if let Some(error) = &stopped {
        // The replay could not go on: after a decision went the other way, the loop asks for
        // rollouts or proposals the original evolution never made.
        differences.push(format!(
            "the replay stopped after {} decisions: {error}",
            derived.len()
        ));
    }
    if differences.is_empty() {
        println!(
            "kiln evolve replay: {} decisions re-derived from the stored rollouts, all identical",
            derived.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "kiln evolve replay: the re-derived decisions differ from {} ({} stored, {} re-derived):",
        dir.join("audit.jsonl").display(),
        stored_audit.len(),
        derived.len()
    );
    for difference in &differences {
        println!("  {difference}");
    }
    Ok(ExitCode::from(crate::EXIT_FAILURE))
}

fn validate(config: &EvolveConfig) -> anyhow::Result<()> {
    let positive = [
        ("--attempts", u64::from(config.attempts)),
        ("--search-attempts", u64::from(config.search_attempts)),
        ("--final-attempts", u64::from(config.final_attempts)),
        ("--candidates", config.candidates as u64),
        ("--patience", u64::from(config.patience)),
    ];
    for (flag, value) in positive {
        if value == 0 {
            return Err(input_error(format!("`{flag} 0`: expected at least 1")));
        }
    }
    match config.evolver.as_str() {
        "rules" => {}
        "llm" | "both" if config.meta_model.is_none() => {
            return Err(input_error(format!(
                "--evolver {} needs --meta-model SPEC (an OpenAI-compatible model)",
                config.evolver
            )));
        }
        "llm" | "both" => {}
        other => {
            return Err(input_error(format!(
                "--evolver {other}: expected rules, llm or both"
            )));
        }
    }
    Ok(())
}

async fn evolvers(config: &EvolveConfig) -> anyhow::Result<Vec<Arc<dyn Evolver>>> {
    let mut evolvers: Vec<Arc<dyn Evolver>> = Vec::new();
    if matches!(config.evolver.as_str(), "rules" | "both") {
        evolvers.push(Arc::new(RulesEvolver));
    }
    if let Some(text) = config
        .meta_model
        .as_ref()
        .filter(|_| matches!(config.evolver.as_str(), "llm" | "both"))
    {
        let spec: ModelSpec = text
            .parse()
            .map_err(|error| input_error(format!("--meta-model: {error}")))?;
        let factory = factory_for(&spec)
            .map_err(|error| input_error(format!("--meta-model {spec}: {error}")))?;
        factory
            .preflight()
            .await
            .map_err(|error| input_error(format!("--meta-model {spec}: {error}")))?;
        let model = factory
            .for_episode(None)
            .map_err(|error| input_error(format!("--meta-model {spec}: {error}")))?;
        evolvers.push(Arc::new(LlmEvolver::new(model)));
    }
    Ok(evolvers)
}

fn open_env(env: &str) -> anyhow::Result<Arc<dyn EnvironmentFactory>> {
    let ctx = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    catalog::open(env, &ctx).map_err(|error| input_error(format!("--env: {error}")))
}

fn read_config(dir: &Path) -> anyhow::Result<EvolveConfig> {
    let path = dir.join(EVOLVE_TOML);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        input_error(format!(
            "{} is not an evolution directory (cannot read {}: {error})",
            dir.display(),
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|error| input_error(format!("{}: {error}", path.display())))
}

fn read_splits(dir: &Path) -> anyhow::Result<EvolutionSplits> {
    let path = dir.join("splits.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|error| input_error(format!("cannot read {}: {error}", path.display())))?;
    serde_json::from_str(&text).map_err(|error| input_error(format!("{}: {error}", path.display())))
}

fn stored_harness(dir: &Path, hash: &str) -> anyhow::Result<HarnessSpec> {
    let path = dir.join("harnesses").join(format!("{hash}.toml"));
    let harness = Harness::load(&path)
        .map_err(|error| input_error(format!("the seed harness {}: {error}", path.display())))?;
    if harness.hash() != hash {
        return Err(input_error(format!(
            "{} hashes to {}, but evolve.toml records {hash}",
            path.display(),
            harness.hash()
        )));
    }
    Ok(harness.spec().clone())
}

fn default_dir(env: &str) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let stamp = now.format(&format).unwrap_or_default();
    let safe: String = env
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Path::new("evolutions").join(format!("{safe}-{stamp}"))
}

fn render_summary(report: &FinalReport, dir: &Path) -> String {
    format!(
        "held-out `{}` ({} tasks, k = {}): seed pass@1 {:.3}, final pass@1 {:.3} ({:+.1} points, McNemar p = {:.4}); \
         seed best-of-{} {:.3}; tasks lost: {}; {} rounds ({}); report: {}",
        report.held_out_split,
        report.held_out_tasks,
        report.k,
        report.seed.summary.pass_at_1,
        report.final_harness.summary.pass_at_1,
        (report.final_harness.summary.pass_at_1 - report.seed.summary.pass_at_1) * 100.0,
        report.mcnemar_p,
        report.baseline.n,
        report.baseline.pass_at_n,
        report.tasks_lost.len(),
        report.rounds_run,
        report.stop_reason,
        dir.join("report.md").display()
    )
}

/// Progress lines on stderr.
struct PrintProgress;

impl EvolveProgress for PrintProgress {
    fn stage(&self, round: u32, stage: &str, detail: &str) {
        if round == u32::MAX {
            eprintln!("kiln evolve: final {stage}: {detail}");
        } else {
            eprintln!("kiln evolve: R{round} {stage}: {detail}");
        }
        tracing::info!(round, stage, detail, "evolve");
    }
}

/// Rollouts through `kiln run`'s machinery.
struct CliRollouts {
    env: String,
    model: String,
    workers: usize,
    timeout_s: Option<u64>,
    nats: Option<String>,
    sandbox: SandboxArgs,
}

impl CliRollouts {
    fn args(&self, request: &RolloutRequest) -> RunArgs {
        let resume = request
            .dir
            .join("run.toml")
            .exists()
            .then(|| Some(request.dir.clone()));
        // A single id needs a trailing comma to read as an id rather than a count.
        let mut tasks = request.tasks.join(",");
        if request.tasks.len() == 1 {
            tasks.push(',');
        }
        RunArgs {
            env: Some(self.env.clone()),
            split: Some(request.split.clone()),
            tasks: Some(tasks),
            attempts: Some(request.attempts),
            workers: self.workers,
            model: Some(self.model.clone()),
            harness: Some(request.harness_file.clone()),
            user: None,
            judge: None,
            out: resume.is_none().then(|| request.dir.clone()),
            resume,
            timeout_s: self.timeout_s,
            nats: self.nats.clone(),
            seed_scope: Some(request.seed_scope.clone()),
            temperature: None,
            top_p: None,
            sandbox: self.sandbox.clone(),
        }
    }
}

#[async_trait]
impl Rollouts for CliRollouts {
    async fn run(&self, request: &RolloutRequest) -> Result<(), RolloutError> {
        if kiln_evolve::rollouts::stored_run(request)? == kiln_evolve::rollouts::StoredRun::Complete
        {
            return Ok(());
        }
        match execute_args(self.args(request)).await {
            Ok(RunEnd::Finished { .. }) => Ok(()),
            Ok(RunEnd::Interrupted) => Err(RolloutError::with_kind(
                RolloutErrorKind::Interrupted,
                request,
                "interrupted",
            )),
            Err(error) => Err(RolloutError::new(request, format!("{error:#}"))),
        }
    }
}
