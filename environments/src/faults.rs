//! `debug-faults`: a **test fixture**, not a benchmark. An environment that misbehaves on demand, so
//! the sandboxes, the worker and the run can be tested against an environment crash, a process
//! killed for memory and a hung step with real processes and containers.
//!
//! The fault comes from the task options (`{"fault": "crash"}`) or, when the options name none,
//! from the task id: split `test` holds the tasks `ok`, `crash`, `oom` and `hang`, so
//! `kiln run --env debug-faults --split test` exercises every failure in one run.
//!
//! - `ok` (or `none`): two text steps, then done with reward 1;
//! - `crash`: the first step exits the process with status [`CRASH_EXIT_CODE`];
//! - `oom`: the first step allocates and touches memory, 16 MiB at a time, until the process is
//!   killed (or, past `max_mib`, default 4096, fails with a `Crashed` error so that an unlimited
//!   sandbox does not eat the host);
//! - `hang`: the first step never returns;
//! - `probe` (asked for by option or task id; not in split `test`): the first step looks at the sandbox from
//!   the inside ([`probe::probe_sandbox`]: identity, writable paths, network, pids limit, mounts)
//!   and ends the episode with the report as its observation, a JSON object.
//!
//! `crash` and `oom` take the whole process down, so they only act inside an env-server process
//! (the `kiln-env-server` binary calls [`enable_process_faults`]); in any other process they fail
//! the step with a `Crashed` error instead.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use kiln_protocol::{Action, EnvInfo, Message, Observation, StepResult, TaskSpec, Termination};
use serde_json::{Value, json};

use crate::{EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation, SplitInfo};

pub mod probe;

/// The environment id.
pub const ENV_ID: &str = "debug-faults";

/// Exit status of the process for the `crash` fault.
pub const CRASH_EXIT_CODE: i32 = 3;

/// Task ids of split `test`, each named after its fault.
const TEST_TASKS: [&str; 4] = ["ok", "crash", "oom", "hang"];

/// Steps of the normal path before it is done.
const OK_STEPS: u32 = 2;

/// Allocation granularity of the `oom` fault.
const OOM_CHUNK_BYTES: usize = 16 * 1024 * 1024;

static PROCESS_FAULTS: AtomicBool = AtomicBool::new(false);

/// Lets `crash` and `oom` act on the process. Only the env-server binary calls this: those faults
/// exist to kill a sandboxed process, never the host's.
pub fn enable_process_faults() {
    PROCESS_FAULTS.store(true, Ordering::SeqCst);
}

fn process_faults_enabled() -> bool {
    PROCESS_FAULTS.load(Ordering::SeqCst)
}

/// How the environment misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Crash,
    Oom { max_mib: u64 },
    Hang,
    Probe,
}

impl Fault {
    /// Parses a fault name (`ok`/`none`, `crash`, `oom`, `hang`).
    fn from_name(name: &str, max_mib: u64) -> Option<Self> {
        match name {
            "ok" | "none" => Some(Fault::None),
            "crash" => Some(Fault::Crash),
            "oom" => Some(Fault::Oom { max_mib }),
            "hang" => Some(Fault::Hang),
            "probe" => Some(Fault::Probe),
            _ => None,
        }
    }
}

/// Parsed task options: the fault, if the options name one, and the `oom` cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultOptions {
    pub fault: Option<Fault>,
    pub max_mib: u64,
}

impl FaultOptions {
    /// `null` or an object with `fault` (string) and `max_mib` (positive integer); anything else is
    /// an [`EnvErrorKind::InvalidOptions`] error naming the key.
    pub fn from_value(options: &Value) -> Result<Self, EnvError> {
        let mut max_mib = 4096;
        let mut fault_name = None;
        match options {
            Value::Null => {}
            Value::Object(map) => {
                for (key, value) in map {
                    match key.as_str() {
                        "fault" => {
                            fault_name = Some(value.as_str().ok_or_else(|| {
                                invalid(format!(
                                    "debug-faults option `fault` must be a string, got {value}"
                                ))
                            })?);
                        }
                        "max_mib" => {
                            max_mib = value.as_u64().filter(|mib| *mib > 0).ok_or_else(|| {
                                invalid(format!(
                                    "debug-faults option `max_mib` must be a positive integer, got {value}"
                                ))
                            })?;
                        }
                        other => {
                            return Err(invalid(format!(
                                "unknown debug-faults option `{other}`; valid options: fault, max_mib"
                            )));
                        }
                    }
                }
            }
            other => {
                return Err(invalid(format!(
                    "debug-faults options must be an object, got {other}"
                )));
            }
        }
        let fault = match fault_name {
            None => None,
            Some(name) => Some(Fault::from_name(name, max_mib).ok_or_else(|| {
                invalid(format!(
                    "unknown debug-faults fault `{name}`; expected one of ok, crash, oom, hang, probe"
                ))
            })?),
        };
        Ok(Self { fault, max_mib })
    }
}

fn invalid(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::InvalidOptions, message)
}

/// The `debug-faults` factory. Needs no data.
#[derive(Debug, Default, Clone, Copy)]
pub struct FaultsFactory;

impl EnvironmentFactory for FaultsFactory {
    fn id(&self) -> &str {
        ENV_ID
    }

    fn description(&self) -> &str {
        "test fixture: an environment that crashes, runs out of memory or hangs on demand"
    }

    fn splits(&self) -> Vec<SplitInfo> {
        vec![SplitInfo {
            name: "test".into(),
            tasks: TEST_TASKS.len(),
        }]
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        if split != "test" {
            return Err(EnvError::new(
                EnvErrorKind::UnknownSplit,
                format!("debug-faults has no split `{split}`; splits: test"),
            ));
        }
        Ok(TEST_TASKS.iter().map(|id| id.to_string()).collect())
    }

    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(FaultsEnvironment {
            options: FaultOptions::from_value(options)?,
            episode: None,
        }))
    }
}

/// One `debug-faults` episode at a time.
pub struct FaultsEnvironment {
    options: FaultOptions,
    episode: Option<FaultEpisode>,
}

struct FaultEpisode {
    fault: Fault,
    steps: u32,
    done: bool,
}

#[async_trait]
impl Environment for FaultsEnvironment {
    async fn reset(&mut self, task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        let fault = match self.options.fault {
            Some(fault) => fault,
            None => Fault::from_name(&task.task_id, self.options.max_mib).ok_or_else(|| {
                EnvError::new(
                    EnvErrorKind::UnknownTask,
                    format!(
                        "debug-faults has no task `{}`; tasks: {}",
                        task.task_id,
                        TEST_TASKS.join(", ")
                    ),
                )
            })?,
        };
        self.episode = Some(FaultEpisode {
            fault,
            steps: 0,
            done: false,
        });
        Ok(EnvInfo {
            env: ENV_ID.into(),
            instructions: "Send any text message; the episode ends after two steps.".into(),
            tools: Vec::new(),
            opening: vec![Message::user("say anything, twice")],
            admissible_actions: Some(vec!["anything".into()]),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        let episode = self
            .episode
            .as_mut()
            .ok_or_else(|| EnvError::new(EnvErrorKind::State, "step called before reset"))?;
        if episode.done {
            return Err(EnvError::new(
                EnvErrorKind::State,
                "step called after the episode ended",
            ));
        }
        match episode.fault {
            Fault::None => {}
            Fault::Crash => crash()?,
            Fault::Oom { max_mib } => exhaust_memory(max_mib)?,
            Fault::Hang => std::future::pending::<()>().await,
            Fault::Probe => {
                // Threads and blocking file and socket calls: off the async workers.
                let report = tokio::task::spawn_blocking(probe::probe_sandbox)
                    .await
                    .map_err(|error| {
                        EnvError::new(EnvErrorKind::Crashed, format!("probe failed: {error}"))
                    })?;
                episode.steps += 1;
                episode.done = true;
                return Ok(StepResult {
                    observation: Observation::Text {
                        text: report.to_string(),
                    },
                    done: true,
                    termination: Some(Termination::EnvDone),
                    admissible_actions: None,
                    info: report,
                });
            }
        }
        episode.steps += 1;
        episode.done = episode.steps >= OK_STEPS;
        let heard = match action {
            Action::Message { text } => text.clone(),
            Action::ToolCall { call } => format!("tool call {}", call.name),
        };
        Ok(StepResult {
            observation: Observation::Text {
                text: format!("step {} ok: {heard}", episode.steps),
            },
            done: episode.done,
            termination: episode.done.then_some(Termination::EnvDone),
            admissible_actions: (!episode.done).then(|| vec!["anything".into()]),
            info: Value::Null,
        })
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        let episode = self
            .episode
            .as_ref()
            .ok_or_else(|| EnvError::new(EnvErrorKind::State, "evaluate called before reset"))?;
        let reward = if episode.done { 1.0 } else { 0.0 };
        Ok(Evaluation {
            reward,
            components: Default::default(),
            success: episode.done,
            success_judged_only: episode.done,
            db_hash: None,
            info: json!({"steps": episode.steps, "termination": termination}),
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        self.episode.as_ref()?;
        Some(
            (1..=OK_STEPS)
                .map(|step| Action::Message {
                    text: format!("message {step}"),
                })
                .collect(),
        )
    }
}

fn crash() -> Result<(), EnvError> {
    if !process_faults_enabled() {
        return Err(EnvError::new(
            EnvErrorKind::Crashed,
            "debug-faults: simulated crash (the process only exits inside an env-server)",
        ));
    }
    tracing::error!(
        code = CRASH_EXIT_CODE,
        "debug-faults: crashing the env-server on purpose"
    );
    std::process::exit(CRASH_EXIT_CODE);
}

/// Allocates and touches memory until the process is killed; returns an error past `max_mib`.
fn exhaust_memory(max_mib: u64) -> Result<(), EnvError> {
    if !process_faults_enabled() {
        return Err(EnvError::new(
            EnvErrorKind::Crashed,
            "debug-faults: simulated out-of-memory (memory is only exhausted inside an env-server)",
        ));
    }
    tracing::warn!(max_mib, "debug-faults: allocating memory until killed");
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total_mib = 0;
    while total_mib < max_mib {
        // Touching every page makes the memory resident, so a cgroup limit actually triggers.
        held.push(vec![1u8; OOM_CHUNK_BYTES]);
        total_mib += (OOM_CHUNK_BYTES / (1024 * 1024)) as u64;
    }
    let touched: usize = held
        .iter()
        .map(|chunk| chunk[chunk.len() - 1] as usize)
        .sum();
    Err(EnvError::new(
        EnvErrorKind::Crashed,
        format!(
            "debug-faults: allocated {total_mib} MiB ({touched} chunks) without being killed; set a memory limit below max_mib"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::ModelSpec;

    fn task(id: &str) -> TaskSpec {
        TaskSpec {
            schema: 1,
            run_id: "r".into(),
            env: ENV_ID.into(),
            split: "test".into(),
            task_id: id.into(),
            attempt: 0,
            harness_hash: String::new(),
            model: ModelSpec::Oracle,
            env_options: Value::Null,
            seed: 0,
            timeout_s: 0,
        }
    }

    #[tokio::test]
    async fn the_probe_reports_what_the_process_sees_and_ends_the_episode() {
        let mut env = FaultsFactory.create(&json!({"fault": "probe"})).unwrap();
        env.reset(&task("ok")).await.unwrap();
        let result = env
            .step(&Action::Message { text: "x".into() })
            .await
            .unwrap();
        assert!(result.done);
        let Observation::Text { text } = &result.observation else {
            panic!("{:?}", result.observation);
        };
        let report: Value = serde_json::from_str(text).unwrap();
        assert_eq!(report, result.info);
        // Outside a container: /tmp is writable and the probe's threads all start.
        assert_eq!(report["tmp_write"]["ok"], true, "{report}");
        assert!(report["identity"]["uid"].is_u64(), "{report}");
        assert!(
            report["interfaces"]
                .as_array()
                .is_some_and(|names| !names.is_empty())
        );
        assert!(
            report["mounts"]
                .as_array()
                .is_some_and(|mounts| !mounts.is_empty())
        );
        assert!(
            report["pids"]["threads_started"].as_u64().unwrap() > 0,
            "{report}"
        );
    }

    #[tokio::test]
    async fn the_normal_path_takes_two_steps_and_scores_one() {
        let mut env = FaultsFactory.create(&Value::Null).unwrap();
        let info = env.reset(&task("ok")).await.unwrap();
        assert_eq!(info.env, ENV_ID);
        let plan = env.oracle_plan().unwrap();
        assert_eq!(plan.len(), 2);
        let first = env.step(&plan[0]).await.unwrap();
        assert!(!first.done);
        let second = env.step(&plan[1]).await.unwrap();
        assert!(second.done);
        assert_eq!(second.termination, Some(Termination::EnvDone));
        let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
        assert_eq!(evaluation.reward, 1.0);
        assert!(evaluation.success);
        let error = env.step(&plan[0]).await.unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::State);
    }

    #[tokio::test]
    async fn process_faults_only_report_outside_an_env_server() {
        let mut env = FaultsFactory.create(&json!({"fault": "crash"})).unwrap();
        env.reset(&task("ok")).await.unwrap();
        let error = env
            .step(&Action::Message { text: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Crashed);
        assert!(error.to_string().contains("simulated crash"), "{error}");

        let mut env = FaultsFactory.create(&Value::Null).unwrap();
        env.reset(&task("oom")).await.unwrap();
        let error = env
            .step(&Action::Message { text: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Crashed);
    }

    #[tokio::test]
    async fn hang_never_returns() {
        let mut env = FaultsFactory.create(&Value::Null).unwrap();
        env.reset(&task("hang")).await.unwrap();
        let stepped = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            env.step(&Action::Message { text: "x".into() }),
        )
        .await;
        assert!(stepped.is_err(), "hang returned");
    }

    #[test]
    fn bad_options_and_tasks_are_named() {
        let error = FaultsFactory
            .create(&json!({"fault": "explode"}))
            .err()
            .unwrap();
        assert_eq!(error.kind(), EnvErrorKind::InvalidOptions);
        assert!(error.to_string().contains("explode"), "{error}");
        let error = FaultsFactory.create(&json!({"color": 1})).err().unwrap();
        assert!(error.to_string().contains("`color`"), "{error}");
        let error = FaultsFactory.create(&json!({"max_mib": 0})).err().unwrap();
        assert!(error.to_string().contains("max_mib"), "{error}");
        assert_eq!(
            FaultsFactory.task_ids("dev").unwrap_err().kind(),
            EnvErrorKind::UnknownSplit
        );
    }

    #[tokio::test]
    async fn unknown_task_ids_are_rejected_at_reset() {
        let mut env = FaultsFactory.create(&Value::Null).unwrap();
        let error = env.reset(&task("melt")).await.unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::UnknownTask);
    }
}
