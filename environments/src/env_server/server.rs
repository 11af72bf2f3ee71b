//! The server side: one environment session over a reader/writer pair.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_protocol::Message;
use kiln_protocol::env_server::{
    AuxReply, AuxRole, HostLine, PROTOCOL_VERSION, Reply, Request, Response, ServerLine, WireError,
    WireErrorKind,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use super::lines::{LineReader, write_line};
use super::wire::{evaluation_to_wire, kind_to_wire};
use crate::{AuxModel, EnvContext, EnvError, EnvErrorKind, Environment, catalog};

/// What a server needs besides its connection.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Kiln's data root (`$KILN_HOME`): environments read `<data_dir>/data/...`.
    pub data_dir: PathBuf,
    /// Reported in the hello line.
    pub server_version: String,
}

impl ServeOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

type SharedWriter = Arc<tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>>;

/// Aux requests waiting for the host's answer, by id.
#[derive(Default)]
struct PendingAux {
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, oneshot::Sender<AuxReply>>>,
}

impl PendingAux {
    fn register(&self) -> (u64, oneshot::Receiver<AuxReply>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id, sender);
        (id, receiver)
    }

    fn answer(&self, id: u64, reply: AuxReply) {
        match self.lock().remove(&id) {
            Some(sender) => {
                let _ = sender.send(reply);
            }
            None => tracing::warn!(id, "aux reply for no pending aux request"),
        }
    }

    /// Drops every waiting sender: their requests fail with "host closed the connection".
    fn fail_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<AuxReply>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The [`AuxModel`] the server gives environments: each completion is an `aux` request to the host.
struct ForwardedAux {
    role: AuxRole,
    writer: SharedWriter,
    pending: Arc<PendingAux>,
}

#[async_trait]
impl AuxModel for ForwardedAux {
    fn label(&self) -> String {
        format!("host {} model", self.role.as_str())
    }

    async fn complete(&self, messages: &[Message]) -> Result<String, String> {
        let (id, receiver) = self.pending.register();
        let line = ServerLine::Aux {
            id,
            role: self.role,
            messages: messages.to_vec(),
        };
        if let Err(error) = write_line(&mut *self.writer.lock().await, &line).await {
            return Err(format!(
                "cannot send the {} request to the host: {error}",
                self.role.as_str()
            ));
        }
        match receiver.await {
            Ok(AuxReply::Ok(text)) => Ok(text),
            Ok(AuxReply::Error(message)) => Err(message),
            Err(_) => Err(format!(
                "the host closed the connection before answering the {} request",
                self.role.as_str()
            )),
        }
    }
}

/// The environment session's state.
struct Session {
    options: ServeOptions,
    writer: SharedWriter,
    pending: Arc<PendingAux>,
    env: Option<Box<dyn Environment>>,
    /// Admissible actions after the last reset or step, for `actions`.
    last_actions: Option<Vec<String>>,
}

/// Serves one environment session: writes the hello line, then answers requests until `close`
/// or the end of `reader`. A request that fails gets an error response and the session goes on;
/// an unreadable line from the host ends the session with an error (the host is broken, and
/// answering would only desynchronise the conversation).
pub async fn serve<R, W>(reader: R, writer: W, options: ServeOptions) -> Result<(), EnvError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let writer: SharedWriter = Arc::new(tokio::sync::Mutex::new(Box::new(writer)));
    let hello = ServerLine::Hello {
        protocol: PROTOCOL_VERSION,
        server: options.server_version.clone(),
        envs: catalog::known_ids()
            .iter()
            .map(|id| id.to_string())
            .collect(),
    };
    write_line(&mut *writer.lock().await, &hello)
        .await
        .map_err(|error| crashed(format!("cannot write the hello line: {error}")))?;

    let pending = Arc::new(PendingAux::default());
    let (requests_tx, mut requests) = mpsc::unbounded_channel();
    let (ended_tx, mut ended) = watch::channel(false);
    let reading = tokio::spawn(read_host(
        LineReader::new(reader),
        requests_tx,
        pending.clone(),
        ended_tx,
    ));

    let mut session = Session {
        options,
        writer: writer.clone(),
        pending,
        env: None,
        last_actions: None,
    };
    while let Some((id, request)) = requests.recv().await {
        let closing = matches!(request, Request::Close);
        let op = request.op();
        tracing::debug!(id, op, "request");
        // The host going away cancels whatever is running (a hung step must not keep the process).
        let result = tokio::select! {
            result = session.handle(request) => result,
            _ = ended.wait_for(|ended| *ended) => break,
        };
        if let Response::Error(error) = &result {
            tracing::warn!(id, op, kind = ?error.kind, message = %error.message, "request failed");
        }
        let line = ServerLine::Response { id, result };
        if let Err(error) = write_line(&mut *writer.lock().await, &line).await {
            reading.abort();
            return Err(crashed(format!(
                "cannot write the response to `{op}`: {error}"
            )));
        }
        if closing {
            break;
        }
    }
    if let Some(env) = session.env.as_mut()
        && let Err(error) = env.close().await
    {
        tracing::warn!(%error, "closing the environment failed");
    }
    reading.abort();
    match reading.await {
        Ok(Err(error)) => Err(error),
        _ => Ok(()),
    }
}

/// Reads host lines: requests go to the session, aux replies to their waiters. Returns at the end
/// of the stream (Ok) or at an unreadable line (Err); either way the session is told it ended.
async fn read_host<R: AsyncRead + Unpin>(
    mut reader: LineReader<R>,
    requests: mpsc::UnboundedSender<(u64, Request)>,
    pending: Arc<PendingAux>,
    ended: watch::Sender<bool>,
) -> Result<(), EnvError> {
    let result = loop {
        let line = match reader.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break Ok(()),
            Err(error) => break Err(crashed(format!("cannot read from the host: {error}"))),
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<HostLine>(&line) {
            Ok(HostLine::Request { id, request }) => {
                if requests.send((id, request)).is_err() {
                    break Ok(());
                }
            }
            Ok(HostLine::AuxReply { id, reply }) => pending.answer(id, reply),
            Err(error) => {
                break Err(crashed(format!(
                    "the host sent a line that is not an env-server message ({error}): {}",
                    excerpt(&line)
                )));
            }
        }
    };
    if let Err(error) = &result {
        tracing::error!(%error, "host connection broken");
    } else {
        tracing::debug!("host closed the connection");
    }
    pending.fail_all();
    let _ = ended.send(true);
    result
}

impl Session {
    async fn handle(&mut self, request: Request) -> Response {
        match self.dispatch(request).await {
            Ok(reply) => Response::Ok(reply),
            Err(error) => Response::Error(error),
        }
    }

    async fn dispatch(&mut self, request: Request) -> Result<Reply, WireError> {
        if let Request::Open { env, options, aux } = request {
            return self.open(env, &options, &aux);
        }
        let op = request.op();
        let Some(env) = self.env.as_mut() else {
            return Err(WireError {
                kind: WireErrorKind::Protocol,
                message: format!("`{op}` before `open`: open an environment first"),
            });
        };
        match request {
            Request::Open { .. } => unreachable!("handled above"),
            Request::Reset { task } => {
                let info = env.reset(&task).await.map_err(wire_error)?;
                self.last_actions = info.admissible_actions.clone();
                let oracle_plan = env.oracle_plan();
                Ok(Reply::Reset { info, oracle_plan })
            }
            Request::Step { action } => {
                let result = env.step(&action).await.map_err(wire_error)?;
                self.last_actions = result.admissible_actions.clone();
                Ok(Reply::Step { result })
            }
            Request::Actions => Ok(Reply::Actions {
                actions: self.last_actions.clone(),
            }),
            Request::Evaluate { termination } => {
                let evaluation = env.evaluate(termination).await.map_err(wire_error)?;
                Ok(Reply::Evaluate {
                    evaluation: evaluation_to_wire(evaluation),
                })
            }
            Request::Close => {
                env.close().await.map_err(wire_error)?;
                self.env = None;
                Ok(Reply::Close)
            }
        }
    }

    fn open(
        &mut self,
        env_id: String,
        options: &serde_json::Value,
        aux: &[AuxRole],
    ) -> Result<Reply, WireError> {
        if self.env.is_some() {
            return Err(WireError {
                kind: WireErrorKind::Protocol,
                message: "`open` twice: an env-server hosts one environment per session".into(),
            });
        }
        let forwarded = |role: AuxRole| -> Option<Arc<dyn AuxModel>> {
            aux.contains(&role).then(|| {
                Arc::new(ForwardedAux {
                    role,
                    writer: self.writer.clone(),
                    pending: self.pending.clone(),
                }) as Arc<dyn AuxModel>
            })
        };
        let context = EnvContext {
            data_dir: self.options.data_dir.clone(),
            user_model: forwarded(AuxRole::User),
            judge_model: forwarded(AuxRole::Judge),
        };
        let factory = catalog::open(&env_id, &context).map_err(wire_error)?;
        let env = factory.create(options).map_err(wire_error)?;
        tracing::info!(env = %env_id, "environment opened");
        self.env = Some(env);
        Ok(Reply::Open { env: env_id })
    }
}

fn wire_error(error: EnvError) -> WireError {
    WireError {
        kind: kind_to_wire(error.kind()),
        message: error.to_string(),
    }
}

fn crashed(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::Crashed, message)
}

/// The start of a line, for error messages.
pub(crate) fn excerpt(line: &str) -> String {
    const LIMIT: usize = 200;
    if line.len() <= LIMIT {
        return line.to_string();
    }
    let mut end = LIMIT;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &line[..end], line.len())
}
