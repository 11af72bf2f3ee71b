//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Kiln: a benchmark cluster for LLM agents.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LoggingArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where logs go (always stderr) and how they look.
#[derive(Debug, Args)]
pub struct LoggingArgs {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (`warn`, `info`, `kiln_worker=debug`, …); `RUST_LOG` overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run a harness with a model on an environment's tasks, and write a report.
    Run(RunArgs),
    /// List environments, their splits and task counts, and whether their data is installed.
    Envs,
    /// Validate, show or compare harness files.
    #[command(subcommand)]
    Harness(HarnessCommand),
    /// Print one completion of a prompt (as a user message) from any model backend.
    Generate(GenerateArgs),
    /// Take tasks from a NATS cluster and run their episodes (any number of workers, any hosts).
    Worker(WorkerArgs),
    /// Execute the runs submitted to a NATS cluster (`kiln run --nats`); resumes unfinished runs
    /// when restarted.
    Coordinator(CoordinatorArgs),
    /// GAIA: score a submission file against a dataset.
    #[command(subcommand)]
    Gaia(GaiaCommand),
    /// A local wiki speaking the MediaWiki API (for GAIA-style web tools).
    #[command(subcommand)]
    Wiki(WikiCommand),
    /// Regenerate `report.md` of a run directory and print its summary.
    Report {
        /// The run directory (`runs/<run-id>` or an `--out` directory).
        dir: PathBuf,
    },
    /// Train the embedded model with cross-harness GRPO on recorded runs (LoRA adapters by
    /// default); writes `metrics.jsonl` and checkpoints (`<out>/<id>/adapter.safetensors`).
    Train(TrainArgs),
    /// AEGIS harness evolution: `kiln evolve --env E --model M …` runs the loop; `check` and
    /// `replay` are its tools.
    Evolve(EvolveArgs),
}

/// `kiln evolve`: the loop, or one of its subcommands.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvolveArgs {
    #[command(subcommand)]
    pub command: Option<EvolveCommand>,
    #[command(flatten)]
    pub run: EvolveRunArgs,
}

/// `kiln evolve …`.
#[derive(Debug, Subcommand)]
pub enum EvolveCommand {
    /// Run the Critic's static checks on one candidate harness: exit 0 when it would go on to
    /// the gate, 1 with the reasons when it would be rejected.
    Check(EvolveCheckArgs),
    /// Re-derive every accept/reject decision of an evolution from its stored rollouts (runs
    /// nothing); exit 1 when any differs from `audit.jsonl`.
    Replay {
        /// The evolution directory.
        dir: PathBuf,
    },
}

/// `kiln evolve` (the loop). Options left out take their value from `evolve.toml` when
/// resuming, else the default.
#[derive(Debug, Args)]
pub struct EvolveRunArgs {
    /// Environment id (`kiln envs`); it must name search, gate and held-out splits.
    #[arg(long)]
    pub env: Option<String>,
    /// Agent model spec [default: local:smollm2].
    #[arg(long)]
    pub model: Option<String>,
    /// Seed harness file [default: the built-in harness for the environment and model].
    #[arg(long)]
    pub harness: Option<PathBuf>,
    /// Rounds after round 0 [default: 3].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Candidates proposed per round [default: 3].
    #[arg(long)]
    pub candidates: Option<usize>,
    /// Attempts per gate task; round 0 raises it when the gate would be noise [default: 2].
    #[arg(long)]
    pub attempts: Option<u32>,
    /// Attempts per search task each round [default: 1].
    #[arg(long)]
    pub search_attempts: Option<u32>,
    /// Attempts per held-out task in the final report (k of pass@k) [default: 3].
    #[arg(long)]
    pub final_attempts: Option<u32>,
    /// Stop after this many rounds without a shipped candidate [default: 2].
    #[arg(long)]
    pub patience: Option<u32>,
    /// Search-split tasks [default: 10].
    #[arg(long)]
    pub search: Option<usize>,
    /// Gate-split tasks [default: 10].
    #[arg(long)]
    pub gate: Option<usize>,
    /// Held-out tasks [default: the whole held-out split].
    #[arg(long)]
    pub held_out: Option<usize>,
    /// Meta-model spec for the `llm` evolver (an OpenAI-compatible endpoint).
    #[arg(long)]
    pub meta_model: Option<String>,
    /// `rules` (offline, deterministic), `llm` (needs --meta-model) or `both` [default: rules].
    #[arg(long)]
    pub evolver: Option<String>,
    /// Harness variants routed by task cluster [default: 1].
    #[arg(long)]
    pub variants: Option<u32>,
    /// Cap on N of the budget-matched best-of-N baseline [default: 8].
    #[arg(long)]
    pub baseline_max_attempts: Option<u32>,
    /// Seed of the splits, the evolvers and the gate's statistics [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evolution directory [default: evolutions/<env>-<time>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue an interrupted evolution; finished rollouts are not run again.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Episodes run concurrently (embedded cluster).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Wall-clock limit of one episode in seconds [default: 600].
    #[arg(long)]
    pub timeout_s: Option<u64>,
    /// Run every rollout on a NATS cluster (`kiln coordinator` and `kiln worker`s).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `kiln evolve check`.
#[derive(Debug, Args)]
pub struct EvolveCheckArgs {
    /// The candidate harness (TOML or JSON).
    pub candidate: PathBuf,
    /// The parent harness the candidate was derived from.
    #[arg(long)]
    pub base: PathBuf,
    /// Environment whose data supplies the task ids and gold strings no harness may contain.
    #[arg(long)]
    pub env: String,
    /// The candidate's manifest (TOML or JSON); without it the manifest checks are skipped.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Search-split task ids, one per line: their gold may be used (few-shot demonstrations) and
    /// predictions may name only them [default: every task counts as gate/held-out].
    #[arg(long)]
    pub search_tasks: Option<PathBuf>,
    /// The seed harness of the evolution, to catch budgets widened a little every round.
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `kiln run`. Options left out take their value from `run.toml` when resuming, else the default.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Environment id (`kiln envs` lists them). Required unless resuming.
    #[arg(long)]
    pub env: Option<String>,
    /// Split of the environment's tasks [default: test].
    #[arg(long)]
    pub split: Option<String>,
    /// Which tasks of the split: `all`, a count N (the first N), or ids separated by commas
    /// (`--tasks 7,12`; a single id needs a trailing comma: `--tasks 7,`) [default: all].
    #[arg(long)]
    pub tasks: Option<String>,
    /// Attempts per task; pass^k is reported for k = 1..attempts [default: 1].
    #[arg(long)]
    pub attempts: Option<u32>,
    /// Episodes run concurrently.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Agent model: `oracle`, `openai:MODEL@URL`, `local:NAME` [default: oracle].
    #[arg(long)]
    pub model: Option<String>,
    /// Harness file (TOML or JSON) [default: the environment's built-in harness].
    #[arg(long)]
    pub harness: Option<PathBuf>,
    /// Simulated user: `scripted` (offline; not comparable to official τ² numbers), `model:SPEC`
    /// (an LLM user) or `none` [default: scripted].
    #[arg(long)]
    pub user: Option<String>,
    /// Judge model for NL assertions (a model spec); without one they are reported unjudged.
    #[arg(long)]
    pub judge: Option<String>,
    /// Run directory [default: runs/<run-id>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue a run: record only its missing (task, attempt) keys. Without DIR: the `--out`
    /// directory, else the newest run under `runs/`.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub resume: Option<Option<PathBuf>>,
    /// Wall-clock limit of one episode in seconds, 0 for none [default: 600].
    #[arg(long)]
    pub timeout_s: Option<u64>,
    /// Run on a NATS cluster: submit the run to `kiln coordinator`, whose `kiln worker`s run the
    /// episodes, and follow it here (the run directory is written locally too). `--workers` is
    /// ignored. Ctrl-C detaches; the run goes on.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Derive episode seeds from this name instead of the run id: runs of one scope give attempt
    /// `i` of a task the same seed (paired A/B comparisons).
    #[arg(long, value_name = "NAME")]
    pub seed_scope: Option<String>,
    /// Sampling temperature of the agent model (0: greedy) [default: the model's, 0]. Training
    /// rollouts sample (> 0); token log-probabilities are recorded at this temperature.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass of the agent model, in (0, 1] [default: 1]; keep 1 for training.
    #[arg(long)]
    pub top_p: Option<f32>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Where episodes' environments run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxKind {
    /// In the worker process.
    None,
    /// A `kiln-env-server` subprocess per episode (crash isolation only).
    Process,
    /// A Docker container per episode from `kiln/env-server:<version>` (`ops/images`): no
    /// network, resource limits, read-only root, no capabilities, non-root.
    Docker,
}

/// `--sandbox` and its Docker settings.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Where environments run.
    #[arg(long, value_enum, default_value_t = SandboxKind::None)]
    pub sandbox: SandboxKind,
    /// Docker: containers kept started for the next episodes.
    #[arg(long, default_value_t = 0)]
    pub warm_pool: usize,
    /// Docker: memory limit of one environment container, MiB.
    #[arg(long, default_value_t = 1024)]
    pub sandbox_memory_mib: u64,
    /// Docker: CPU limit of one environment container.
    #[arg(long, default_value_t = 1.0)]
    pub sandbox_cpus: f64,
}

/// How to reach the cluster. Every process of a cluster should use the same lease, max-deliver
/// and duplicate window: the last one to connect sets them on the shared consumer and streams.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server URL (`nats://host:4222`).
    #[arg(long, value_name = "URL", env = "KILN_NATS_URL")]
    pub nats: String,
    /// Lease of a task in seconds: a task whose worker sends no heartbeat for this long is
    /// redelivered.
    #[arg(long, default_value_t = 60)]
    pub lease_s: u64,
    /// Deliveries of one task at most; then it is recorded as an error.
    #[arg(long, default_value_t = 5)]
    pub max_deliver: i64,
    /// Window in seconds in which the server drops a task or result queued again under the same
    /// (run, task, attempt) message id.
    #[arg(long, default_value_t = 120)]
    pub duplicate_window_s: u64,
}

/// `kiln worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Episodes run concurrently.
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    /// Name in outcomes and logs [default: <hostname>-<pid>].
    #[arg(long)]
    pub id: Option<String>,
    /// On SIGTERM/SIGINT, how long running episodes may take to finish before their tasks are
    /// handed back (a second signal hands them back at once).
    #[arg(long, default_value_t = 60)]
    pub drain_timeout_s: u64,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `kiln coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Where run directories go (`<DIR>/<run-id>`).
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Name in run records and logs [default: <hostname>-<pid>].
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum HarnessCommand {
    /// Check harness files; prints each one's content hash.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the canonical form of harness files.
    Show {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Processor-level differences from the first file to the second.
    Diff { before: PathBuf, after: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum GaiaCommand {
    /// Score a submission (JSON lines `{"task_id", "model_answer", "reasoning_trace"}`) with the
    /// official scorer: accuracy overall and per level.
    Score {
        /// The submission file.
        #[arg(long)]
        submission: PathBuf,
        /// The GAIA dataset (a folder with metadata.jsonl or metadata.parquet, or with
        /// validation/ and test/ folders holding them).
        #[arg(long)]
        dataset: PathBuf,
        /// Print one JSON line per task, `{"task_id", "correct"}`, instead of the summary.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WikiCommand {
    /// Serve a corpus (JSON lines of pages, or a folder with pages.jsonl): the MediaWiki API at
    /// `/w/api.php`, article pages at `/wiki/TITLE`.
    Serve {
        /// The corpus.
        corpus: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8088")]
        bind: String,
    },
}

/// `kiln generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model: `local:smollm2`, `local:/path/model.gguf`, `openai:MODEL@URL`.
    #[arg(long)]
    pub model: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed (same seed, same completion).
    #[arg(long)]
    pub seed: Option<u64>,
    /// A system message before the prompt [default: the model's own, if its template has one].
    #[arg(long)]
    pub system: Option<String>,
    /// The user message.
    pub prompt: String,
}

/// `kiln train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Run directories to train on (each one a round of the replay buffer, oldest first); their
    /// episodes need token records from a local model.
    #[arg(long, required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// Output directory: `metrics.jsonl` and checkpoint directories.
    #[arg(long)]
    pub out: PathBuf,
    /// Base model the runs were sampled from: `local:smollm2` or `local:/path/model.gguf`.
    #[arg(long, default_value = "local:smollm2")]
    pub model: String,
    /// GRPO optimizer steps, each on the whole buffer.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// LoRA rank; 0 trains every weight (f32 master weights, ≈ 2 GiB for SmolLM2).
    #[arg(long, default_value_t = 16)]
    pub lora_rank: usize,
    /// LoRA alpha [default: twice the rank].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA target projections: `all` or a list of q,k,v,o,gate,up,down.
    #[arg(long, default_value = "all")]
    pub lora_targets: String,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Lower clip ε of the ratio.
    #[arg(long, default_value_t = 0.2)]
    pub clip_low: f64,
    /// Upper clip ε of the ratio (DAPO clip-higher: 0.28).
    #[arg(long, default_value_t = 0.2)]
    pub clip_high: f64,
    /// Loss aggregation: token-mean, sequence-mean, or constant:L (Dr. GRPO).
    #[arg(long, default_value = "token-mean")]
    pub aggregation: String,
    /// k3 KL coefficient to the base model (0: no reference pass).
    #[arg(long, default_value_t = 0.0)]
    pub kl_beta: f64,
    /// Truncated importance sampling cap for rollout/trainer mismatch (none: ratio against the
    /// recorded behaviour logprobs).
    #[arg(long)]
    pub tis_cap: Option<f64>,
    /// The rollouts' sampling temperature (logits are divided by it).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Model turns per backward pass (gradient accumulation).
    #[arg(long, default_value_t = 4)]
    pub micro_batch: usize,
    /// Replay buffer capacity in episodes.
    #[arg(long, default_value_t = 4096)]
    pub buffer: usize,
    /// Rounds (run directories) an episode stays in the buffer.
    #[arg(long)]
    pub staleness: Option<u64>,
    /// Model turns longer than this many tokens are left out (attention memory is quadratic).
    #[arg(long, default_value_t = 2048)]
    pub max_segment_tokens: usize,
    /// A checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Continue from a checkpoint directory.
    #[arg(long)]
    pub init: Option<PathBuf>,
}
