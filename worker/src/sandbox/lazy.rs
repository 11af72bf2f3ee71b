//! The worker's view of sandboxes: an [`EnvResolver`] whose environments acquire a sandbox in
//! `reset` and release it in `close`, so the worker loop does not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kiln_environments::{
    AuxModel, EnvContext, EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation,
    SplitInfo, catalog,
};
use kiln_protocol::{Action, EnvInfo, StepResult, TaskSpec, Termination};
use serde_json::Value;

use super::{Sandbox, SandboxProvider, SandboxRequest};
use crate::resolve::EnvResolver;

/// The key of a task's `env_options` that configures its sandbox instead of its environment.
pub const SANDBOX_OPTIONS_KEY: &str = "sandbox";

/// Per-task sandbox options: `env_options.sandbox = {"network": "bridge"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxOptions {
    /// The Docker network the task needs; none by default.
    pub network: Option<String>,
}

impl SandboxOptions {
    /// Splits a task's `env_options` into the sandbox's options and the environment's (the
    /// `sandbox` key removed). Bad sandbox options are an `InvalidOptions` error naming the key.
    pub fn split(options: &Value) -> Result<(SandboxOptions, Value), EnvError> {
        let Value::Object(map) = options else {
            return Ok((SandboxOptions::default(), options.clone()));
        };
        let Some(sandbox) = map.get(SANDBOX_OPTIONS_KEY) else {
            return Ok((SandboxOptions::default(), options.clone()));
        };
        let invalid = |message: String| EnvError::new(EnvErrorKind::InvalidOptions, message);
        let Value::Object(sandbox) = sandbox else {
            return Err(invalid(format!(
                "env option `sandbox` must be an object like {{\"network\": \"bridge\"}}, got {sandbox}"
            )));
        };
        let mut parsed = SandboxOptions::default();
        for (key, value) in sandbox {
            match key.as_str() {
                "network" => match value {
                    Value::Null => {}
                    Value::String(name) if name == "none" => {}
                    Value::String(name) if !name.is_empty() => parsed.network = Some(name.clone()),
                    other => {
                        return Err(invalid(format!(
                            "env option `sandbox.network` must be a Docker network name, got {other}"
                        )));
                    }
                },
                other => {
                    return Err(invalid(format!(
                        "unknown env option `sandbox.{other}`; valid: sandbox.network"
                    )));
                }
            }
        }
        let mut rest = map.clone();
        rest.remove(SANDBOX_OPTIONS_KEY);
        let rest = if rest.is_empty() {
            Value::Null
        } else {
            Value::Object(rest)
        };
        Ok((parsed, rest))
    }
}

/// [`EnvResolver`] that runs every environment in a sandbox from `provider`. Environment ids are
/// checked against the catalog; listing (splits, task ids) uses the local catalog factory, whose
/// data is loaded only if asked.
pub struct SandboxEnvResolver {
    provider: Arc<dyn SandboxProvider>,
    context: EnvContext,
    call_timeout: Duration,
    resolved: Mutex<HashMap<String, Arc<dyn EnvironmentFactory>>>,
}

impl SandboxEnvResolver {
    /// `context.user_model` / `context.judge_model` answer the env-servers' aux requests;
    /// `context.data_dir` is only used for listing.
    pub fn new(provider: Arc<dyn SandboxProvider>, context: EnvContext) -> Self {
        Self {
            provider,
            context,
            call_timeout: Duration::from_secs(120),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// How long to wait for each line from an env-server (default 120 s). A hung environment
    /// becomes a `Crashed` error after this long, even without an episode time limit.
    pub fn with_call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }
}

impl EnvResolver for SandboxEnvResolver {
    fn resolve(&self, env_id: &str) -> Result<Arc<dyn EnvironmentFactory>, EnvError> {
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(factory) = resolved.get(env_id) {
            return Ok(factory.clone());
        }
        let Some(listing) = catalog::factories(&self.context)
            .into_iter()
            .find(|factory| factory.id() == env_id)
        else {
            return Err(EnvError::new(
                EnvErrorKind::UnknownEnv,
                format!(
                    "unknown environment `{env_id}`; known environments: {}",
                    catalog::known_ids().join(", ")
                ),
            ));
        };
        let factory: Arc<dyn EnvironmentFactory> = Arc::new(SandboxEnvFactory {
            listing,
            provider: self.provider.clone(),
            user_model: self.context.user_model.clone(),
            judge_model: self.context.judge_model.clone(),
            call_timeout: self.call_timeout,
        });
        resolved.insert(env_id.to_string(), factory.clone());
        Ok(factory)
    }
}

/// One environment id served from sandboxes.
struct SandboxEnvFactory {
    listing: Arc<dyn EnvironmentFactory>,
    provider: Arc<dyn SandboxProvider>,
    user_model: Option<Arc<dyn AuxModel>>,
    judge_model: Option<Arc<dyn AuxModel>>,
    call_timeout: Duration,
}

impl EnvironmentFactory for SandboxEnvFactory {
    fn id(&self) -> &str {
        self.listing.id()
    }

    fn description(&self) -> &str {
        self.listing.description()
    }

    fn splits(&self) -> Vec<SplitInfo> {
        self.listing.splits()
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        self.listing.task_ids(split)
    }

    /// Parses the sandbox options; the environment's own options are checked by the env-server
    /// at `open`, in the first `reset`.
    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        let (sandbox, env_options) = SandboxOptions::split(options)?;
        Ok(Box::new(SandboxEnvironment {
            provider: self.provider.clone(),
            sandbox,
            env_options,
            user_model: self.user_model.clone(),
            judge_model: self.judge_model.clone(),
            call_timeout: self.call_timeout,
            active: None,
        }))
    }
}

/// An environment in a sandbox acquired at the first `reset` and released at `close` (or on drop).
pub struct SandboxEnvironment {
    provider: Arc<dyn SandboxProvider>,
    sandbox: SandboxOptions,
    env_options: Value,
    user_model: Option<Arc<dyn AuxModel>>,
    judge_model: Option<Arc<dyn AuxModel>>,
    call_timeout: Duration,
    active: Option<Sandbox>,
}

impl SandboxEnvironment {
    fn active(&mut self, op: &str) -> Result<&mut Sandbox, EnvError> {
        self.active.as_mut().ok_or_else(|| {
            EnvError::new(
                EnvErrorKind::State,
                format!("{op} called before reset (no sandbox acquired)"),
            )
        })
    }

    /// Which sandbox hosts this environment (`container 3f2a…`), once acquired.
    pub fn sandbox(&self) -> Option<String> {
        self.active.as_ref().map(|sandbox| sandbox.lease.describe())
    }
}

#[async_trait]
impl Environment for SandboxEnvironment {
    async fn reset(&mut self, task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        if self.active.is_none() {
            let request = SandboxRequest {
                run_id: task.run_id.clone(),
                task_id: task.task_id.clone(),
                env: task.env.clone(),
                network: self.sandbox.network.clone(),
            };
            let mut sandbox = self.provider.acquire(&request).await.map_err(|error| {
                EnvError::new(
                    EnvErrorKind::Crashed,
                    format!(
                        "cannot start a {} sandbox for `{}`: {error}",
                        self.provider.name(),
                        task.env
                    ),
                )
            })?;
            tracing::debug!(sandbox = %sandbox.lease.describe(), env = %task.env, "sandbox acquired");
            sandbox.remote.set_options(self.env_options.clone());
            sandbox
                .remote
                .set_aux_models(self.user_model.clone(), self.judge_model.clone());
            sandbox.remote.set_call_timeout(self.call_timeout);
            self.active = Some(sandbox);
        }
        self.active("reset")?.remote.reset(task).await
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        self.active("step")?.remote.step(action).await
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        self.active("evaluate")?.remote.evaluate(termination).await
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        self.active.as_ref()?.remote.oracle_plan()
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        let Some(mut sandbox) = self.active.take() else {
            return Ok(());
        };
        let clean = !sandbox.remote.is_broken();
        let closed = sandbox.remote.close().await;
        sandbox.lease.release(clean && closed.is_ok()).await;
        tracing::debug!(sandbox = %sandbox.lease.describe(), "sandbox released");
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sandbox_options_are_split_off_and_checked() {
        let (sandbox, rest) =
            SandboxOptions::split(&json!({"user": "scripted", "sandbox": {"network": "bridge"}}))
                .unwrap();
        assert_eq!(sandbox.network.as_deref(), Some("bridge"));
        assert_eq!(rest, json!({"user": "scripted"}));

        let (sandbox, rest) =
            SandboxOptions::split(&json!({"sandbox": {"network": "none"}})).unwrap();
        assert_eq!(sandbox, SandboxOptions::default());
        assert_eq!(rest, Value::Null);

        let (sandbox, rest) = SandboxOptions::split(&json!({"fault": "hang"})).unwrap();
        assert_eq!(sandbox, SandboxOptions::default());
        assert_eq!(rest, json!({"fault": "hang"}));

        let error = SandboxOptions::split(&json!({"sandbox": {"gpu": true}})).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::InvalidOptions);
        assert!(error.to_string().contains("sandbox.gpu"), "{error}");
        let error = SandboxOptions::split(&json!({"sandbox": "bridge"})).unwrap_err();
        assert!(error.to_string().contains("must be an object"), "{error}");
    }
}
