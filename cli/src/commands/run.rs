//! `kiln run`: validate every input, then create (or reopen) the run directory, run the embedded
//! cluster (coordinator actors and one worker with N slots on in-process channels), and report.
//!
//! Nothing is written before every input is validated: environment, split, task ids, harness file,
//! models (with a preflight request for HTTP endpoints) and the environment options.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kiln_coordinator::config::HarnessRef;
use kiln_coordinator::plan::new_run_id;
use kiln_coordinator::store::{RUN_TOML, harness_path, read_run_config};
use kiln_coordinator::{
    KILN_VERSION, RunConfig, RunLaunch, RunRecord, RunRegistry, RunRole, RunState, RunStore,
    UserMode, config_differences, execute_run, render_summary, write_run_report,
};
use kiln_environments::{AuxModel, EnvContext, EnvironmentFactory, catalog, default_data_dir};
use kiln_harness::{Harness, default_for_run};
use kiln_models::{ModelFactory, factory_for};
use kiln_protocol::{HarnessSpec, ModelSpec, SamplingParams};
use kiln_worker::{
    BackendModelResolver, CatalogEnvResolver, ChatAuxModel, EnvResolver, HarnessEpisodeRunner,
    InMemoryHarnessStore, InProcessTransport, Transport, WorkerConfig, WorkerDeps, run_worker,
};
use serde_json::{Value, json};

use crate::args::{RunArgs, SandboxArgs};
use crate::commands::cluster::attach;
use crate::commands::sandbox::{sandboxed_resolver, shut_down};
use crate::input_error;
use crate::progress::BarProgress;
use crate::selection::TaskSelection;

/// Split used when neither `--split` nor `run.toml` gives one and the environment names no
/// default of its own: the held-out split.
pub const DEFAULT_SPLIT: &str = "test";
/// Episode time limit when neither `--timeout-s` nor `run.toml` gives one.
pub const DEFAULT_TIMEOUT_S: u64 = 600;
/// Where runs go without `--out`.
pub const RUNS_DIR: &str = "runs";

/// Where the harness comes from.
#[derive(Debug, Clone)]
enum HarnessSource {
    File(PathBuf),
    /// `harness/<hash>.toml` of the run being resumed.
    Stored {
        dir: PathBuf,
        hash: String,
    },
    /// The environment's built-in harness.
    Default,
}

/// The command line merged with `run.toml` when resuming, parsed but not yet validated against
/// the environment.
#[derive(Debug, Clone)]
struct RunRequest {
    env: String,
    split: String,
    selection: TaskSelection,
    selection_label: String,
    attempts: u32,
    model: ModelSpec,
    user: UserMode,
    judge: Option<ModelSpec>,
    harness: HarnessSource,
    timeout_s: u64,
    seed_scope: Option<String>,
}

/// Everything validated, ready to create the run.
struct PreparedRun {
    request: RunRequest,
    context: EnvContext,
    factory: Arc<dyn EnvironmentFactory>,
    split_size: usize,
    tasks: Vec<String>,
    harness: Harness,
    model_factory: Arc<dyn ModelFactory>,
    env_options: Value,
}

/// How a run ended.
pub enum RunEnd {
    /// Every (task, attempt) is recorded; `report.md` is written.
    Finished {
        dir: PathBuf,
        config: Box<RunConfig>,
        stats: Box<kiln_coordinator::RunStats>,
    },
    /// Ctrl-C: the run directory can be resumed (embedded), or the run goes on in the cluster.
    Interrupted,
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    match execute_args(args).await? {
        RunEnd::Finished { dir, config, stats } => {
            println!("{}", render_summary(&config, &stats, &dir));
            Ok(ExitCode::SUCCESS)
        }
        RunEnd::Interrupted => Ok(ExitCode::from(130)),
    }
}

/// Validates, creates or reopens the run directory, runs the run and writes its report:
/// `kiln run` without the printed summary (`kiln evolve` runs its rollouts through it).
pub async fn execute_args(args: RunArgs) -> anyhow::Result<RunEnd> {
    let resume_dir = resume_dir(&args)?;
    let stored = match &resume_dir {
        Some(dir) => {
            Some(read_run_config(dir).map_err(|error| input_error(format!("--resume: {error}")))?)
        }
        None => None,
    };
    let request = RunRequest::from_args(&args, resume_dir.as_deref(), stored.as_ref())?;
    if let Some(stored) = &stored {
        // Report changed flags before validating against the environment: a changed split would
        // otherwise surface as an unknown task id.
        ensure_same_run(stored, &request.overlay(stored))?;
    }
    if args.nats.is_some() {
        ensure_cluster_ready(&request)?;
    }
    let prepared = prepare(request).await?;
    let config = run_config(&prepared, stored.as_ref())?;
    let store = open_store(&args, resume_dir.as_deref(), &config, &prepared.harness)?;
    match &args.nats {
        Some(url) => execute_on_cluster(store, prepared, url).await,
        None => execute(store, prepared, args.workers, &args.sandbox).await,
    }
}

/// Workers build their environments from the task alone; a model user or judge would need the
/// model given to every worker, which is not supported yet.
fn ensure_cluster_ready(request: &RunRequest) -> anyhow::Result<()> {
    if request.user.model().is_some() {
        return Err(input_error(
            "--user model:… is not supported with --nats yet (workers build no user model); use \
             --user scripted or --user none",
        ));
    }
    if request.judge.is_some() {
        return Err(input_error(
            "--judge is not supported with --nats yet (workers build no judge model); run without \
             it (NL assertions are reported unjudged)",
        ));
    }
    Ok(())
}

/// The directory `--resume` names, if any.
fn resume_dir(args: &RunArgs) -> anyhow::Result<Option<PathBuf>> {
    match (&args.resume, &args.out) {
        (None, _) => Ok(None),
        (Some(Some(dir)), Some(out)) if dir != out => Err(input_error(format!(
            "--resume {} and --out {} name different directories; give one of them",
            dir.display(),
            out.display()
        ))),
        (Some(Some(dir)), _) => Ok(Some(dir.clone())),
        (Some(None), Some(out)) => Ok(Some(out.clone())),
        (Some(None), None) => latest_run(Path::new(RUNS_DIR)).map(Some),
    }
}

/// The most recently created run under `runs/`.
fn latest_run(runs: &Path) -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir(runs).map_err(|_| {
        input_error(format!(
            "--resume: there is no {} directory; pass --resume DIR",
            runs.display()
        ))
    })?;
    let newest = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter_map(|dir| {
            read_run_config(&dir)
                .ok()
                .map(|config| (config.created_at, dir))
        })
        .max();
    newest.map(|(_, dir)| dir).ok_or_else(|| {
        input_error(format!(
            "--resume: no run under {}; pass --resume DIR",
            runs.display()
        ))
    })
}

impl RunRequest {
    /// Flags given on the command line win; the others come from `run.toml` when resuming, else
    /// from the defaults. [`config_differences`] then rejects a resume whose flags change the run.
    fn from_args(
        args: &RunArgs,
        resume_dir: Option<&Path>,
        stored: Option<&RunConfig>,
    ) -> anyhow::Result<Self> {
        let Some(env) = args
            .env
            .clone()
            .or_else(|| stored.map(|config| config.env.clone()))
        else {
            return Err(input_error(
                "missing --env: which environment to run (`kiln envs` lists them), or --resume DIR",
            ));
        };
        let split = args
            .split
            .clone()
            .or_else(|| stored.map(|config| config.split.clone()))
            .unwrap_or_else(|| default_split(&env));
        let (selection, selection_label) = match (&args.tasks, stored) {
            (Some(text), _) => {
                let selection: TaskSelection = text.parse().map_err(input_error)?;
                let label = selection.label();
                (selection, label)
            }
            (None, Some(config)) => (
                TaskSelection::Ids(config.tasks.clone()),
                config.task_selection.clone(),
            ),
            (None, None) => (TaskSelection::All, TaskSelection::All.label()),
        };
        let attempts = args
            .attempts
            .or(stored.map(|config| config.attempts))
            .unwrap_or(1);
        if attempts == 0 {
            return Err(input_error("`--attempts 0`: expected at least 1"));
        }
        let mut model = match &args.model {
            Some(text) => text
                .parse()
                .map_err(|error| input_error(format!("--model: {error}")))?,
            None => stored
                .map(|config| config.model.clone())
                .unwrap_or(ModelSpec::Oracle),
        };
        apply_sampling(&mut model, args.temperature, args.top_p)?;
        let user = match &args.user {
            Some(text) => text
                .parse()
                .map_err(|error| input_error(format!("--user: {error}")))?,
            None => stored
                .map(|config| config.user.clone())
                .unwrap_or(UserMode::Scripted),
        };
        let judge_text = args
            .judge
            .clone()
            .or_else(|| stored.and_then(|config| config.judge.clone()));
        let judge = match judge_text {
            Some(text) => Some(
                text.parse()
                    .map_err(|error| input_error(format!("--judge: {error}")))?,
            ),
            None => None,
        };
        let harness = match (&args.harness, resume_dir, stored) {
            (Some(file), _, _) => HarnessSource::File(file.clone()),
            (None, Some(dir), Some(config)) => HarnessSource::Stored {
                dir: dir.to_path_buf(),
                hash: config.harness.hash.clone(),
            },
            _ => HarnessSource::Default,
        };
        let timeout_s = args
            .timeout_s
            .or(stored.map(|config| config.timeout_s))
            .unwrap_or(DEFAULT_TIMEOUT_S);
        let seed_scope = args
            .seed_scope
            .clone()
            .or_else(|| stored.and_then(|config| config.seed_scope.clone()));
        Ok(Self {
            env,
            split,
            selection,
            selection_label,
            attempts,
            model,
            user,
            judge,
            harness,
            timeout_s,
            seed_scope,
        })
    }

    /// `stored` with this request's flags that need no validation (env, split, attempts, models)
    /// written over it.
    fn overlay(&self, stored: &RunConfig) -> RunConfig {
        RunConfig {
            env: self.env.clone(),
            split: self.split.clone(),
            attempts: self.attempts,
            model: self.model.clone(),
            user: self.user.clone(),
            judge: self.judge.as_ref().map(ModelSpec::to_string),
            seed_scope: self.seed_scope.clone(),
            ..stored.clone()
        }
    }
}

/// Sets `--temperature` / `--top-p` on the agent model's sampling; the oracle does not sample.
fn apply_sampling(
    model: &mut ModelSpec,
    temperature: Option<f32>,
    top_p: Option<f32>,
) -> anyhow::Result<()> {
    if temperature.is_none() && top_p.is_none() {
        return Ok(());
    }
    let sampling = match model {
        ModelSpec::Local { sampling, .. } | ModelSpec::OpenAi { sampling, .. } => sampling,
        ModelSpec::Oracle => {
            return Err(input_error(
                "--temperature/--top-p: the oracle replays gold actions and samples nothing; give a \
                 local: or openai: model",
            ));
        }
    };
    if let Some(temperature) = temperature {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(input_error(format!(
                "`--temperature {temperature}`: expected a finite number >= 0 (0: greedy)"
            )));
        }
        sampling.temperature = temperature;
    }
    if let Some(top_p) = top_p {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(input_error(format!(
                "`--top-p {top_p}`: expected a number in (0, 1]"
            )));
        }
        sampling.top_p = top_p;
    }
    Ok(())
}

/// Fails, listing the differences, when `requested` is not the `stored` run.
fn ensure_same_run(stored: &RunConfig, requested: &RunConfig) -> anyhow::Result<()> {
    let differences = config_differences(stored, requested);
    if differences.is_empty() {
        return Ok(());
    }
    Err(input_error(format!(
        "--resume: the requested run differs from the stored one:\n  {}\n(leave those flags out to continue the \
         stored run, or start a new run)",
        differences.join("\n  ")
    )))
}

/// Validates the request against the environment and the models. Writes nothing.
async fn prepare(request: RunRequest) -> anyhow::Result<PreparedRun> {
    let data_dir = default_data_dir();
    let plain = EnvContext {
        data_dir: data_dir.clone(),
        ..EnvContext::default()
    };
    let factory = catalog::open(&request.env, &plain)
        .map_err(|error| input_error(format!("--env: {error}")))?;
    let split_size = split_size(factory.as_ref(), &request.split)?;
    let available = factory
        .task_ids(&request.split)
        .map_err(|error| input_error(format!("--split: {error}")))?;
    let tasks = request
        .selection
        .resolve(&available, &request.env, &request.split)
        .map_err(input_error)?;
    let harness = load_harness(&request.harness, &request.env, &request.model)?;

    let model_factory = model_factory(&request.model, "--model").await?;
    let user_model = match request.user.model() {
        Some(spec) => Some(aux_model(spec, "--user model:").await?),
        None => None,
    };
    let judge_model = match &request.judge {
        Some(spec) => Some(aux_model(spec, "--judge").await?),
        None => None,
    };
    let context = EnvContext {
        data_dir,
        user_model,
        judge_model,
    };
    let factory = if context.user_model.is_some() || context.judge_model.is_some() {
        catalog::open(&request.env, &context)
            .map_err(|error| input_error(format!("--env: {error}")))?
    } else {
        factory
    };
    let env_options = env_options(&request.env, &request.user);
    factory.create(&env_options).map_err(|error| {
        input_error(format!(
            "`{}` rejects the run's environment options {env_options}: {error}",
            request.env
        ))
    })?;
    Ok(PreparedRun {
        request,
        context,
        factory,
        split_size,
        tasks,
        harness,
        model_factory,
        env_options,
    })
}

/// The split a run uses without `--split`: the environment's own held-out default (`test`; ALFWorld
/// `valid_unseen`). Factories are lazy, so this loads no data.
fn default_split(env: &str) -> String {
    // GAIA datasets are not listed (they need a path); theirs is `validation` when present.
    let gaia = kiln_environments::gaia::is_gaia(env)
        .then(|| catalog::open(env, &EnvContext::default()).ok())
        .flatten();
    if let Some(factory) = gaia {
        return factory.default_split().to_string();
    }
    catalog::factories(&EnvContext::default())
        .into_iter()
        .find(|factory| factory.id() == env)
        .map(|factory| factory.default_split().to_string())
        .unwrap_or_else(|| DEFAULT_SPLIT.to_string())
}

/// Options given to every environment instance of the run: τ² takes the simulated user; the text
/// environments take none from the command line.
fn env_options(env: &str, user: &UserMode) -> Value {
    if env.starts_with("tau2") {
        return json!({ "user": user.option_value() });
    }
    json!({})
}

/// The number of tasks in `split`, or an error listing the splits there are.
fn split_size(factory: &dyn EnvironmentFactory, split: &str) -> anyhow::Result<usize> {
    let splits = factory.splits();
    if let Some(found) = splits.iter().find(|info| info.name == split) {
        return Ok(found.tasks);
    }
    let listed: Vec<String> = splits
        .iter()
        .map(|info| format!("{} ({} tasks)", info.name, info.tasks))
        .collect();
    Err(input_error(format!(
        "--split: unknown split `{split}` of `{}`; its splits are: {}",
        factory.id(),
        listed.join(", ")
    )))
}

fn load_harness(source: &HarnessSource, env: &str, model: &ModelSpec) -> anyhow::Result<Harness> {
    match source {
        HarnessSource::File(path) => {
            Harness::load(path).map_err(|error| input_error(format!("--harness: {error}")))
        }
        HarnessSource::Default => Harness::new(&default_for_run(env, model)).map_err(|error| {
            anyhow::anyhow!("the built-in harness for `{env}` is invalid: {error}")
        }),
        HarnessSource::Stored { dir, hash } => load_stored_harness(dir, hash),
    }
}

/// The harness of a run being resumed; it must still hash to what `run.toml` records.
fn load_stored_harness(dir: &Path, hash: &str) -> anyhow::Result<Harness> {
    let path = harness_path(dir, hash);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        input_error(format!("--resume: cannot read {}: {error}", path.display()))
    })?;
    let spec: HarnessSpec = toml::from_str(&text)
        .map_err(|error| input_error(format!("--resume: {}: {error}", path.display())))?;
    let harness = Harness::new(&spec)
        .map_err(|error| input_error(format!("--resume: {}: {error}", path.display())))?;
    if harness.hash() != hash {
        return Err(input_error(format!(
            "--resume: {} hashes to {}, but run.toml records {hash}",
            path.display(),
            harness.hash()
        )));
    }
    Ok(harness)
}

/// The agent's model factory, after a preflight check (an HTTP endpoint must answer). `flag` names
/// the input in errors: `--model`, `--judge`, `--user model:`.
async fn model_factory(spec: &ModelSpec, flag: &str) -> anyhow::Result<Arc<dyn ModelFactory>> {
    let named = flag_with_value(flag, spec);
    let factory = factory_for(spec).map_err(|error| input_error(format!("{named}: {error}")))?;
    factory
        .preflight()
        .await
        .map_err(|error| input_error(format!("{named}: {error}")))?;
    Ok(factory)
}

/// `--model SPEC`, or `--user model:SPEC` for a flag ending in `:`.
fn flag_with_value(flag: &str, spec: &ModelSpec) -> String {
    if flag.ends_with(':') {
        return format!("{flag}{spec}");
    }
    format!("{flag} {spec}")
}

/// A model for the environment's own use (simulated user, judge).
async fn aux_model(spec: &ModelSpec, flag: &str) -> anyhow::Result<Arc<dyn AuxModel>> {
    let factory = model_factory(spec, flag).await?;
    let model = factory
        .for_episode(None)
        .map_err(|error| input_error(format!("{}: {error}", flag_with_value(flag, spec))))?;
    let sampling = match spec {
        ModelSpec::OpenAi { sampling, .. } | ModelSpec::Local { sampling, .. } => sampling.clone(),
        ModelSpec::Oracle => SamplingParams::default(),
    };
    Ok(Arc::new(ChatAuxModel::new(model, sampling)))
}

/// The resolved `run.toml`. When resuming, the run keeps its id and creation time, and the
/// requested run must be the stored one.
fn run_config(prepared: &PreparedRun, stored: Option<&RunConfig>) -> anyhow::Result<RunConfig> {
    let request = &prepared.request;
    let now = time::OffsetDateTime::now_utc();
    let created_at = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.to_string());
    let config = RunConfig {
        schema: kiln_protocol::SCHEMA_VERSION,
        run_id: stored
            .map(|config| config.run_id.clone())
            .unwrap_or_else(|| new_run_id(&request.env, now)),
        kiln_version: KILN_VERSION.to_string(),
        created_at: stored
            .map(|config| config.created_at.clone())
            .unwrap_or(created_at),
        env: request.env.clone(),
        split: request.split.clone(),
        split_size: prepared.split_size,
        task_selection: request.selection_label.clone(),
        attempts: request.attempts,
        user: request.user.clone(),
        judge: request.judge.as_ref().map(ModelSpec::to_string),
        timeout_s: request.timeout_s,
        tasks: prepared.tasks.clone(),
        model: request.model.clone(),
        harness: HarnessRef {
            name: prepared.harness.name().to_string(),
            hash: prepared.harness.hash().to_string(),
        },
        seed_scope: request.seed_scope.clone(),
    };
    let Some(stored) = stored else {
        return Ok(config);
    };
    ensure_same_run(stored, &config)?;
    Ok(RunConfig {
        timeout_s: stored.timeout_s,
        task_selection: stored.task_selection.clone(),
        ..config
    })
}

/// Reopens the resumed run, or creates the new run's directory: the first write of `kiln run`.
fn open_store(
    args: &RunArgs,
    resume_dir: Option<&Path>,
    config: &RunConfig,
    harness: &Harness,
) -> anyhow::Result<RunStore> {
    if let Some(dir) = resume_dir {
        return RunStore::open(dir).map_err(|error| input_error(format!("--resume: {error}")));
    }
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new(RUNS_DIR).join(&config.run_id));
    if dir.join(RUN_TOML).exists() {
        return Err(input_error(format!(
            "--out {}: the directory already holds a run; pass `--resume {}` to continue it",
            dir.display(),
            dir.display()
        )));
    }
    let harness_toml = harness
        .canonical_toml()
        .context("cannot write the harness as TOML")?;
    Ok(RunStore::create(&dir, config, &harness_toml)?)
}

async fn execute(
    store: RunStore,
    prepared: PreparedRun,
    workers: usize,
    sandbox: &SandboxArgs,
) -> anyhow::Result<RunEnd> {
    let dir = store.dir().to_path_buf();
    let run_id = store.config().run_id.clone();
    let transport = InProcessTransport::new();
    let harnesses = InMemoryHarnessStore::new();
    // Containers of this process are labelled with its own worker id, so reaping them at the end
    // cannot touch another `kiln run` on the same host.
    let sandbox_worker = format!("local-{}", std::process::id());
    let (environments, docker) =
        match sandboxed_resolver(sandbox, &sandbox_worker, prepared.context.clone()).await? {
            Some((resolver, docker)) => (resolver, docker),
            None => (
                Arc::new(CatalogEnvResolver::new(prepared.context).with_factory(prepared.factory))
                    as Arc<dyn EnvResolver>,
                None,
            ),
        };
    let deps = WorkerDeps {
        transport: Arc::new(transport.clone()),
        harnesses: Arc::new(harnesses.clone()),
        environments,
        models: Arc::new(
            BackendModelResolver::new()
                .with_factory(&prepared.request.model, prepared.model_factory),
        ),
        runner: Arc::new(HarnessEpisodeRunner::new()),
    };
    let worker = tokio::spawn(run_worker(WorkerConfig::new("local", workers), deps));
    let progress = Arc::new(BarProgress::new());
    eprintln!("kiln: run {run_id} in {}", dir.display());
    let launch = RunLaunch {
        role: RunRole::Coordinate,
        store,
        harness: prepared.harness.spec().clone(),
        env_options: prepared.env_options,
        timeout_s: prepared.request.timeout_s,
        transport: Arc::new(transport.clone()),
        harnesses: Arc::new(harnesses),
        progress: progress.clone(),
    };
    let finished = tokio::select! {
        finished = execute_run(launch) => Some(finished),
        _ = tokio::signal::ctrl_c() => None,
    };
    progress.finish();
    transport.close().await;
    if finished.is_none() {
        worker.abort();
    }
    shut_down(docker).await;
    let Some(finished) = finished else {
        worker.abort();
        eprintln!(
            "kiln: interrupted; continue with `kiln run --resume {}`",
            dir.display()
        );
        return Ok(RunEnd::Interrupted);
    };
    if let Err(error) = finished {
        worker.abort();
        return Err(anyhow::Error::new(error).context(format!(
            "run {run_id} failed; continue it with `kiln run --resume {}`",
            dir.display()
        )));
    }
    let _ = worker.await;
    finish(dir)
}

/// Writes `report.md` (and a GAIA submission file for GAIA runs).
fn finish(dir: PathBuf) -> anyhow::Result<RunEnd> {
    let (config, stats) = write_run_report(&dir)?;
    crate::commands::gaia::write_run_submission(&dir, &config)?;
    Ok(RunEnd::Finished {
        dir,
        config: Box::new(config),
        stats: Box::new(stats),
    })
}

/// `kiln run --nats`: submits the run to the cluster's coordinator and records its results in
/// the local run directory as they arrive.
async fn execute_on_cluster(
    store: RunStore,
    prepared: PreparedRun,
    url: &str,
) -> anyhow::Result<RunEnd> {
    let dir = store.dir().to_path_buf();
    let run_id = store.config().run_id.clone();
    let transport = attach(url).await?;
    let registry = RunRegistry::open(transport.client()).await?;
    let record = RunRecord {
        config: store.config().clone(),
        harness: prepared.harness.spec().clone(),
        env_options: prepared.env_options.clone(),
        timeout_s: prepared.request.timeout_s,
        state: RunState::Submitted,
        coordinator: None,
        message: None,
        report: None,
    };
    submit(&registry, &record).await?;
    eprintln!(
        "kiln: run {run_id} submitted to {url}; recording results in {}",
        dir.display()
    );
    let harnesses = transport.harness_store().await?;
    let progress = Arc::new(BarProgress::new());
    let launch = RunLaunch {
        role: RunRole::Follow,
        store,
        harness: prepared.harness.spec().clone(),
        env_options: prepared.env_options,
        timeout_s: prepared.request.timeout_s,
        transport: Arc::new(transport.clone()),
        harnesses: Arc::new(harnesses),
        progress: progress.clone(),
    };
    let finished = tokio::select! {
        finished = execute_run(launch) => Ok(finished),
        failure = watch_for_failure(&registry, &run_id) => Err(failure),
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            eprintln!(
                "kiln: detached; run {run_id} goes on in the cluster. Follow it again with \
                 `kiln run --resume {} --nats {url}`",
                dir.display()
            );
            return Ok(RunEnd::Interrupted);
        }
    };
    progress.finish();
    match finished {
        Ok(Ok(_summary)) => {}
        Ok(Err(error)) => {
            return Err(anyhow::Error::new(error).context(format!(
                "following run {run_id} failed; follow it again with `kiln run --resume {} --nats {url}`",
                dir.display()
            )));
        }
        Err(message) => anyhow::bail!("the coordinator failed run {run_id}: {message}"),
    }
    finish(dir)
}

/// Submits the run, or, when it was submitted before (`--resume`), resubmits it only if the
/// coordinator had failed it.
async fn submit(registry: &RunRegistry, record: &RunRecord) -> anyhow::Result<()> {
    let run_id = &record.config.run_id;
    let Some(existing) = registry.get(run_id).await? else {
        registry.submit(record).await?;
        return Ok(());
    };
    if existing.record.config.harness.hash != record.config.harness.hash {
        return Err(input_error(format!(
            "run {run_id} was submitted with harness {}, this directory has {}",
            existing.record.config.harness.hash, record.config.harness.hash
        )));
    }
    if existing.record.state == RunState::Failed {
        eprintln!("kiln: run {run_id} had failed in the cluster; submitting it again");
        if registry.update(record, existing.revision).await?.is_none() {
            anyhow::bail!("run {run_id} changed in the cluster while resubmitting it; try again");
        }
    }
    Ok(())
}

/// Resolves with the coordinator's message when it marks the run failed; says once when no
/// coordinator has taken the run after a while.
async fn watch_for_failure(registry: &RunRegistry, run_id: &str) -> String {
    let started = std::time::Instant::now();
    let mut hinted = false;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let Ok(Some(current)) = registry.get(run_id).await else {
            continue;
        };
        match current.record.state {
            RunState::Failed => {
                return current
                    .record
                    .message
                    .unwrap_or_else(|| "no reason given".to_string());
            }
            RunState::Submitted if !hinted && started.elapsed().as_secs() >= 10 => {
                hinted = true;
                eprintln!(
                    "kiln: no coordinator has taken run {run_id} yet; is `kiln coordinator` running on this NATS server?"
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn run_args(line: &[&str]) -> RunArgs {
        let mut argv = vec!["kiln", "run"];
        argv.extend_from_slice(line);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    fn stored() -> RunConfig {
        RunConfig {
            schema: 1,
            run_id: "tau2-retail-x".into(),
            kiln_version: "0.0.0".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            env: "tau2-retail".into(),
            split: "base".into(),
            split_size: 114,
            task_selection: "first 3".into(),
            attempts: 4,
            user: UserMode::None,
            judge: Some("openai:judge@http://127.0.0.1:1/v1".into()),
            timeout_s: 77,
            tasks: vec!["0".into(), "1".into(), "2".into()],
            model: "openai:agent@http://127.0.0.1:2/v1".parse().unwrap(),
            harness: HarnessRef {
                name: "h".into(),
                hash: "abc".into(),
            },
            seed_scope: None,
        }
    }

    #[test]
    fn a_new_run_gets_the_documented_defaults() {
        let request =
            RunRequest::from_args(&run_args(&["--env", "tau2-airline"]), None, None).unwrap();
        assert_eq!(request.split, DEFAULT_SPLIT);
        assert_eq!(request.selection, TaskSelection::All);
        assert_eq!(request.attempts, 1);
        assert_eq!(request.model, ModelSpec::Oracle);
        assert_eq!(request.user, UserMode::Scripted);
        assert_eq!(request.judge, None);
        assert_eq!(request.timeout_s, DEFAULT_TIMEOUT_S);
        assert!(matches!(request.harness, HarnessSource::Default));
    }

    #[test]
    fn environments_choose_their_default_split_and_options() {
        let request = RunRequest::from_args(&run_args(&["--env", "alfworld"]), None, None).unwrap();
        assert_eq!(request.split, "valid_unseen");
        assert_eq!(env_options("webshop", &UserMode::Scripted), json!({}));
        assert_eq!(
            env_options("tau2-retail", &UserMode::None),
            json!({"user": "none"})
        );
    }

    #[test]
    fn resuming_takes_omitted_flags_from_run_toml() {
        let stored = stored();
        let args = run_args(&["--resume", "dir"]);
        let request = RunRequest::from_args(&args, Some(Path::new("dir")), Some(&stored)).unwrap();
        assert_eq!(
            request.overlay(&stored),
            stored,
            "nothing given, nothing changed"
        );
        assert_eq!(request.selection, TaskSelection::Ids(stored.tasks.clone()));
        assert_eq!(request.selection_label, "first 3");
        assert_eq!(request.timeout_s, 77);
        assert!(matches!(request.harness, HarnessSource::Stored { ref hash, .. } if hash == "abc"));
    }

    #[test]
    fn flags_given_when_resuming_must_match_run_toml() {
        let stored = stored();
        let args = run_args(&[
            "--resume",
            "dir",
            "--attempts",
            "2",
            "--user",
            "scripted",
            "--timeout-s",
            "5",
        ]);
        let request = RunRequest::from_args(&args, Some(Path::new("dir")), Some(&stored)).unwrap();
        assert_eq!(
            request.timeout_s, 5,
            "the time limit may change between sessions"
        );
        let error = ensure_same_run(&stored, &request.overlay(&stored))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("attempts: run.toml has `4`, requested `2`"),
            "{error}"
        );
        assert!(
            error.contains("user: run.toml has `none`, requested `scripted`"),
            "{error}"
        );
        assert!(!error.contains("timeout"), "{error}");
    }

    #[test]
    fn temperature_and_top_p_set_the_agent_models_sampling() {
        let request = RunRequest::from_args(
            &run_args(&[
                "--env",
                "webshop",
                "--model",
                "local:smollm2",
                "--temperature",
                "0.7",
                "--top-p",
                "1",
            ]),
            None,
            None,
        )
        .unwrap();
        let ModelSpec::Local { sampling, .. } = &request.model else {
            panic!("{:?}", request.model);
        };
        assert_eq!((sampling.temperature, sampling.top_p), (0.7, 1.0));
        let oracle = RunRequest::from_args(
            &run_args(&["--env", "webshop", "--temperature", "1"]),
            None,
            None,
        );
        assert!(oracle.unwrap_err().to_string().contains("oracle"));
        let bad = RunRequest::from_args(
            &run_args(&[
                "--env",
                "webshop",
                "--model",
                "local:smollm2",
                "--top-p",
                "0",
            ]),
            None,
            None,
        );
        assert!(bad.unwrap_err().to_string().contains("--top-p 0"));
    }

    #[test]
    fn resume_and_out_must_agree() {
        let error = resume_dir(&run_args(&["--resume", "a", "--out", "b"])).unwrap_err();
        assert!(
            error.to_string().contains("different directories"),
            "{error}"
        );
        let dir = resume_dir(&run_args(&["--resume", "--out", "b"])).unwrap();
        assert_eq!(dir, Some(PathBuf::from("b")));
        assert_eq!(resume_dir(&run_args(&["--env", "x"])).unwrap(), None);
    }

    #[test]
    fn user_and_judge_models_are_named_in_errors() {
        let spec: ModelSpec = "openai:m@http://h:1/v1".parse().unwrap();
        assert_eq!(
            flag_with_value("--user model:", &spec),
            "--user model:openai:m@http://h:1/v1"
        );
        assert_eq!(
            flag_with_value("--judge", &spec),
            "--judge openai:m@http://h:1/v1"
        );
    }
}
