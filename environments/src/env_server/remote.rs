//! The host side: an [`Environment`] whose instance lives in an env-server on the other end of a
//! JSON-lines connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_protocol::env_server::{
    AuxReply, AuxRole, HostLine, PROTOCOL_VERSION, Reply, Request, Response, ServerLine,
};
use kiln_protocol::{Action, EnvInfo, StepResult, TaskSpec, Termination};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::lines::{LineReader, write_line};
use super::server::excerpt;
use super::wire::{evaluation_from_wire, kind_from_wire};
use crate::{AuxModel, EnvError, EnvErrorKind, Environment, Evaluation};

/// Tells what became of the process on the other end of a broken connection (exit status, the
/// last stderr lines, "killed for memory"), so a `Crashed` error can say more than "EOF".
#[async_trait]
pub trait ExitProbe: Send + Sync {
    /// A short description of how the peer ended, or None when nothing is known.
    async fn describe_exit(&self) -> Option<String>;
}

/// How a [`RemoteEnvironment`] behaves.
#[derive(Clone)]
pub struct RemoteConfig {
    /// How long the host waits for each line from the server (the hello, a response, the next aux
    /// request). Time spent in the host's own aux models does not count.
    pub call_timeout: Duration,
    /// The host's simulated-user model, offered to the server as `aux` role `user`.
    pub user_model: Option<Arc<dyn AuxModel>>,
    /// The host's judge model, offered as role `judge`.
    pub judge_model: Option<Arc<dyn AuxModel>>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(120),
            user_model: None,
            judge_model: None,
        }
    }
}

type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// An [`Environment`] served by an env-server over a reader/writer pair.
///
/// The environment is opened on the first `reset` with the task's `env` and the options given to
/// [`RemoteEnvironment::set_options`]. Once the connection fails, every later call fails with the
/// same `Crashed` error. `oracle_plan` returns the plan the server sent with the reset response.
pub struct RemoteEnvironment {
    reader: LineReader<BoxReader>,
    writer: BoxWriter,
    config: RemoteConfig,
    server_version: String,
    probe: Option<Arc<dyn ExitProbe>>,
    options: Value,
    next_id: u64,
    opened: Option<String>,
    plan: Option<Vec<Action>>,
    /// The call whose answer has not been read yet; set if a call's future was dropped mid-way
    /// (an episode time limit), which leaves the conversation out of step.
    in_flight: Option<&'static str>,
    broken: Option<EnvError>,
    closed: bool,
}

impl RemoteEnvironment {
    /// Reads the server's hello line (within `config.call_timeout`) and checks its protocol version.
    pub async fn connect<R, W>(reader: R, writer: W, config: RemoteConfig) -> Result<Self, EnvError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        Self::connect_with_probe(reader, writer, config, None).await
    }

    /// [`RemoteEnvironment::connect`] with an [`ExitProbe`] that explains connection failures,
    /// including a failure to say hello.
    pub async fn connect_with_probe<R, W>(
        reader: R,
        writer: W,
        config: RemoteConfig,
        probe: Option<Arc<dyn ExitProbe>>,
    ) -> Result<Self, EnvError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let mut remote = Self {
            reader: LineReader::new(Box::new(reader)),
            writer: Box::new(writer),
            config,
            server_version: String::new(),
            probe,
            options: Value::Null,
            next_id: 0,
            opened: None,
            plan: None,
            in_flight: None,
            broken: None,
            closed: false,
        };
        remote.in_flight = Some("hello");
        let line = remote.read_server_line("hello").await?;
        remote.in_flight = None;
        match line {
            ServerLine::Hello {
                protocol, server, ..
            } if protocol == PROTOCOL_VERSION => {
                remote.server_version = server;
                Ok(remote)
            }
            ServerLine::Hello {
                protocol, server, ..
            } => Err(remote
                .fail(format!(
                    "env-server {server} speaks protocol {protocol}, this host speaks {PROTOCOL_VERSION}; rebuild the env-server (ops/images)"
                ))
                .await),
            other => Err(remote
                .fail(format!(
                    "env-server did not start with a hello line; got {}",
                    excerpt(&serde_json::to_string(&other).unwrap_or_default())
                ))
                .await),
        }
    }

    /// The env-server's version from its hello line.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Options sent with `open` (the task's `env_options`).
    pub fn set_options(&mut self, options: Value) {
        self.options = options;
    }

    /// The host models offered to the server as `aux` roles; takes effect at `open` (the first
    /// reset). A warm-pool sandbox connects before the episode's models are known.
    pub fn set_aux_models(
        &mut self,
        user_model: Option<Arc<dyn AuxModel>>,
        judge_model: Option<Arc<dyn AuxModel>>,
    ) {
        self.config.user_model = user_model;
        self.config.judge_model = judge_model;
    }

    /// Replaces the per-line timeout (see [`RemoteConfig::call_timeout`]).
    pub fn set_call_timeout(&mut self, call_timeout: Duration) {
        self.config.call_timeout = call_timeout;
    }

    /// Whether the connection has failed (every call now fails).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// The admissible actions after the last reset or step, as the server knows them.
    pub async fn actions(&mut self) -> Result<Option<Vec<String>>, EnvError> {
        match self.call(Request::Actions).await? {
            Reply::Actions { actions } => Ok(actions),
            other => Err(self.mismatch("actions", &other).await),
        }
    }

    /// Sends one request and waits for its response, answering the server's aux requests
    /// meanwhile. Error responses become [`EnvError`]s of their kind.
    pub async fn call(&mut self, request: Request) -> Result<Reply, EnvError> {
        if let Some(error) = &self.broken {
            return Err(error.clone());
        }
        let op = request.op();
        if let Some(abandoned) = self.in_flight {
            return Err(self
                .fail(format!(
                    "cannot send `{op}`: the previous `{abandoned}` call was abandoned before its answer (cancelled, e.g. by the episode's time limit)"
                ))
                .await);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.in_flight = Some(op);
        let line = HostLine::Request { id, request };
        if let Err(error) = write_line(&mut self.writer, &line).await {
            return Err(self
                .fail(format!("cannot send `{op}` to the env-server: {error}"))
                .await);
        }
        loop {
            match self.read_server_line(op).await? {
                ServerLine::Response {
                    id: answered,
                    result,
                } if answered == id => {
                    self.in_flight = None;
                    return match result {
                        Response::Ok(reply) => Ok(reply),
                        Response::Error(error) => {
                            Err(EnvError::new(kind_from_wire(error.kind), error.message))
                        }
                    };
                }
                ServerLine::Response { id: answered, .. } => {
                    return Err(self
                        .fail(format!(
                            "env-server answered request {answered} while `{op}` (request {id}) was waiting"
                        ))
                        .await);
                }
                ServerLine::Aux {
                    id: aux_id,
                    role,
                    messages,
                } => {
                    let model = match role {
                        AuxRole::User => self.config.user_model.clone(),
                        AuxRole::Judge => self.config.judge_model.clone(),
                    };
                    let reply = answer_aux(model, role, &messages).await;
                    let line = HostLine::AuxReply { id: aux_id, reply };
                    if let Err(error) = write_line(&mut self.writer, &line).await {
                        return Err(self
                            .fail(format!(
                                "cannot send the {} reply during `{op}`: {error}",
                                role.as_str()
                            ))
                            .await);
                    }
                }
                ServerLine::Hello { .. } => {
                    return Err(self
                        .fail(format!("env-server sent a second hello during `{op}`"))
                        .await);
                }
            }
        }
    }

    /// Reads the next non-empty line within the call timeout and parses it.
    async fn read_server_line(&mut self, op: &str) -> Result<ServerLine, EnvError> {
        let limit = self.config.call_timeout;
        let line = loop {
            match tokio::time::timeout(limit, self.reader.next_line()).await {
                Err(_) => {
                    return Err(self
                        .fail(format!(
                            "env-server did not answer `{op}` within {}s",
                            limit.as_secs_f64()
                        ))
                        .await);
                }
                Ok(Ok(Some(line))) if line.trim().is_empty() => continue,
                Ok(Ok(Some(line))) => break line,
                Ok(Ok(None)) => {
                    return Err(self
                        .fail(format!("env-server closed its output during `{op}`"))
                        .await);
                }
                Ok(Err(error)) => {
                    return Err(self
                        .fail(format!(
                            "cannot read the env-server's answer to `{op}`: {error}"
                        ))
                        .await);
                }
            }
        };
        match serde_json::from_str::<ServerLine>(&line) {
            Ok(parsed) => Ok(parsed),
            Err(error) => Err(self
                .fail(format!(
                    "env-server sent a line that is not an env-server message during `{op}` ({error}): {}",
                    excerpt(&line)
                ))
                .await),
        }
    }

    /// Marks the connection broken with a `Crashed` error, completed by the probe's account of how
    /// the peer ended.
    async fn fail(&mut self, what: String) -> EnvError {
        let mut message = what;
        if let Some(probe) = &self.probe
            && let Some(exit) = probe.describe_exit().await
        {
            message.push_str(&format!(" ({exit})"));
        }
        let error = EnvError::new(EnvErrorKind::Crashed, message);
        tracing::warn!(%error, "env-server connection failed");
        self.broken = Some(error.clone());
        error
    }

    async fn mismatch(&mut self, op: &str, reply: &Reply) -> EnvError {
        self.fail(format!(
            "env-server answered `{op}` with a `{}` reply",
            reply.op()
        ))
        .await
    }

    fn aux_roles(&self) -> Vec<AuxRole> {
        let mut roles = Vec::new();
        if self.config.user_model.is_some() {
            roles.push(AuxRole::User);
        }
        if self.config.judge_model.is_some() {
            roles.push(AuxRole::Judge);
        }
        roles
    }
}

/// The host model's answer to an aux request (held outside `self`, which is not `Sync`).
async fn answer_aux(
    model: Option<Arc<dyn AuxModel>>,
    role: AuxRole,
    messages: &[kiln_protocol::Message],
) -> AuxReply {
    let Some(model) = model else {
        return AuxReply::Error(format!("the host has no {} model", role.as_str()));
    };
    match model.complete(messages).await {
        Ok(text) => AuxReply::Ok(text),
        Err(message) => AuxReply::Error(message),
    }
}

#[async_trait]
impl Environment for RemoteEnvironment {
    async fn reset(&mut self, task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        match &self.opened {
            Some(env) if env != &task.env => {
                return Err(EnvError::new(
                    EnvErrorKind::State,
                    format!(
                        "this env-server session hosts `{env}`; task {} needs `{}`",
                        task.task_id, task.env
                    ),
                ));
            }
            Some(_) => {}
            None => {
                let open = Request::Open {
                    env: task.env.clone(),
                    options: self.options.clone(),
                    aux: self.aux_roles(),
                };
                match self.call(open).await? {
                    Reply::Open { .. } => self.opened = Some(task.env.clone()),
                    other => return Err(self.mismatch("open", &other).await),
                }
            }
        }
        self.plan = None;
        match self.call(Request::Reset { task: task.clone() }).await? {
            Reply::Reset { info, oracle_plan } => {
                self.plan = oracle_plan;
                Ok(info)
            }
            other => Err(self.mismatch("reset", &other).await),
        }
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        match self
            .call(Request::Step {
                action: action.clone(),
            })
            .await?
        {
            Reply::Step { result } => Ok(result),
            other => Err(self.mismatch("step", &other).await),
        }
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        match self.call(Request::Evaluate { termination }).await? {
            Reply::Evaluate { evaluation } => Ok(evaluation_from_wire(evaluation)),
            other => Err(self.mismatch("evaluate", &other).await),
        }
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        self.plan.clone()
    }

    /// Asks the server to close and exit. A broken connection, or a server that already went away
    /// after the request, is not an error: there is nothing left to release on this side.
    async fn close(&mut self) -> Result<(), EnvError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if self.broken.is_some() || self.in_flight.is_some() {
            return Ok(());
        }
        match self.call(Request::Close).await {
            Ok(Reply::Close) => Ok(()),
            Ok(other) => Err(self.mismatch("close", &other).await),
            Err(error) if error.kind() == EnvErrorKind::Crashed => {
                tracing::debug!(%error, "env-server went away while closing");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}
