//! The env-server protocol: how a host (the worker) drives an environment that runs in another
//! process or container, as JSON lines on the server's stdin/stdout.
//!
//! One session per server process:
//! 1. the server writes a [`ServerLine::Hello`] first (protocol version, server version, the
//!    environment ids it hosts); a host rejects a server whose [`PROTOCOL_VERSION`] differs;
//! 2. the host sends [`HostLine::Request`]s, one at a time, each with a fresh `id`: `open` (which
//!    environment, its options, which auxiliary models the host can answer for), then `reset`,
//!    `step`…, `actions`, `evaluate`, and finally `close`;
//! 3. the server answers each request with a [`ServerLine::Response`] carrying the same `id` and
//!    either a [`Reply`] or a [`WireError`] whose kind maps onto the environments crate's
//!    `EnvErrorKind`;
//! 4. while serving a request, the server may ask the host for a model completion (τ²'s simulated
//!    user, an NL-assertion judge) with a [`ServerLine::Aux`] line; the host answers with a
//!    [`HostLine::AuxReply`] carrying that `id`, and the server then goes on with the request.
//!
//! Every line is one JSON object terminated by `\n`. The server logs to stderr only; anything on
//! stdout that is not a protocol line is a protocol error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::Message;
use crate::env::{Action, EnvInfo, StepResult};
use crate::outcome::{ComponentScore, Termination};
use crate::task::TaskSpec;

/// Version of this protocol. Bumped on any incompatible change to the types below.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line either side accepts (bytes). A τ² reset reply (policy, 16 tool schemas, gold
/// plan) is well under 1 MiB; anything longer is a broken peer, not a message.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Which auxiliary model the server asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuxRole {
    /// The simulated user (τ² `user = "model"`).
    User,
    /// The NL-assertion judge.
    Judge,
}

impl AuxRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AuxRole::User => "user",
            AuxRole::Judge => "judge",
        }
    }
}

/// A line from the host to the server.
// One value per line, built and consumed at once: variant size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostLine {
    /// A request the server answers with a [`ServerLine::Response`] of the same `id`.
    Request { id: u64, request: Request },
    /// The answer to the server's [`ServerLine::Aux`] with the same `id`.
    AuxReply { id: u64, reply: AuxReply },
}

/// What the host asks the server to do.
// One value per line, built and consumed at once: variant size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Creates the environment `env` with the task's `options` (`EnvironmentFactory::create`).
    /// `aux` lists the auxiliary models the host can answer for; the server gives the environment
    /// only those.
    Open {
        env: String,
        #[serde(default, skip_serializing_if = "Value::is_null")]
        options: Value,
        #[serde(default)]
        aux: Vec<AuxRole>,
    },
    /// `Environment::reset`.
    Reset { task: TaskSpec },
    /// `Environment::step`.
    Step { action: Action },
    /// The admissible actions after the last reset or step (None when the environment does not
    /// list them).
    Actions,
    /// `Environment::evaluate`.
    Evaluate { termination: Termination },
    /// `Environment::close`; the server exits after answering.
    Close,
}

impl Request {
    /// The operation name, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Open { .. } => "open",
            Request::Reset { .. } => "reset",
            Request::Step { .. } => "step",
            Request::Actions => "actions",
            Request::Evaluate { .. } => "evaluate",
            Request::Close => "close",
        }
    }
}

/// The host's answer to an aux request: the completion text, or why the model failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuxReply {
    Ok(String),
    Error(String),
}

/// A line from the server to the host.
// One value per line, built and consumed at once: variant size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerLine {
    /// The first line of every session.
    Hello {
        protocol: u32,
        /// The env-server's version (the workspace version it was built from).
        server: String,
        /// Environment ids this server can open.
        envs: Vec<String>,
    },
    /// The answer to the host's request `id`.
    Response { id: u64, result: Response },
    /// A completion the server needs from the host's model for `role`, while serving a request.
    Aux {
        id: u64,
        role: AuxRole,
        messages: Vec<Message>,
    },
}

/// A request's result.
// One value per line, built and consumed at once: variant size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(WireError),
}

/// A successful request's payload; the variant matches the request's `op`.
// One value per line, built and consumed at once: variant size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    Open {
        env: String,
    },
    /// The reset result, with the task's gold plan (the `oracle_plan` of the environment, fetched
    /// here because the host's `oracle_plan` is synchronous).
    Reset {
        info: EnvInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        oracle_plan: Option<Vec<Action>>,
    },
    Step {
        result: StepResult,
    },
    Actions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actions: Option<Vec<String>>,
    },
    Evaluate {
        evaluation: WireEvaluation,
    },
    Close,
}

impl Reply {
    /// The operation name, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Reply::Open { .. } => "open",
            Reply::Reset { .. } => "reset",
            Reply::Step { .. } => "step",
            Reply::Actions { .. } => "actions",
            Reply::Evaluate { .. } => "evaluate",
            Reply::Close => "close",
        }
    }
}

/// An environment's scored episode end, as sent over the wire (the environments crate's
/// `Evaluation`, field for field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvaluation {
    pub reward: f64,
    #[serde(default)]
    pub components: BTreeMap<String, ComponentScore>,
    pub success: bool,
    pub success_judged_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub info: Value,
}

/// A failed request: what kind of failure and a message naming the input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: WireErrorKind,
    pub message: String,
}

/// The environments crate's `EnvErrorKind`, plus `protocol` for a request the server could not
/// understand or did not expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireErrorKind {
    UnknownEnv,
    UnknownSplit,
    UnknownTask,
    Data,
    InvalidOptions,
    AuxModel,
    Crashed,
    State,
    Protocol,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolCall;
    use serde_json::json;

    #[test]
    fn lines_have_the_documented_shape() {
        let open = HostLine::Request {
            id: 1,
            request: Request::Open {
                env: "tau2-retail".into(),
                options: json!({"user": "scripted"}),
                aux: vec![AuxRole::Judge],
            },
        };
        assert_eq!(
            serde_json::to_value(&open).unwrap(),
            json!({"type": "request", "id": 1, "request": {"op": "open", "env": "tau2-retail",
                   "options": {"user": "scripted"}, "aux": ["judge"]}})
        );
        let close = HostLine::Request {
            id: 9,
            request: Request::Close,
        };
        assert_eq!(
            serde_json::to_value(&close).unwrap(),
            json!({"type": "request", "id": 9, "request": {"op": "close"}})
        );
        let error = ServerLine::Response {
            id: 2,
            result: Response::Error(WireError {
                kind: WireErrorKind::UnknownTask,
                message: "no task 7".into(),
            }),
        };
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            json!({"type": "response", "id": 2, "result": {"error": {"kind": "unknown_task", "message": "no task 7"}}})
        );
        let aux = HostLine::AuxReply {
            id: 3,
            reply: AuxReply::Ok("hi".into()),
        };
        assert_eq!(
            serde_json::to_value(&aux).unwrap(),
            json!({"type": "aux_reply", "id": 3, "reply": {"ok": "hi"}})
        );
    }

    #[test]
    fn every_line_kind_round_trips() {
        let call = ToolCall {
            id: "c1".into(),
            name: "get_user_details".into(),
            arguments: json!({"user_id": "u1"}),
        };
        let lines = vec![
            HostLine::Request {
                id: 4,
                request: Request::Step {
                    action: Action::ToolCall { call },
                },
            },
            HostLine::Request {
                id: 5,
                request: Request::Evaluate {
                    termination: Termination::AgentStop,
                },
            },
            HostLine::Request {
                id: 6,
                request: Request::Actions,
            },
            HostLine::AuxReply {
                id: 7,
                reply: AuxReply::Error("model down".into()),
            },
        ];
        for line in lines {
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(serde_json::from_str::<HostLine>(&text).unwrap(), line);
        }
        let server_lines = vec![
            ServerLine::Hello {
                protocol: PROTOCOL_VERSION,
                server: "0.1.0".into(),
                envs: vec!["tau2-retail".into()],
            },
            ServerLine::Aux {
                id: 1,
                role: AuxRole::User,
                messages: vec![Message::user("hello")],
            },
            ServerLine::Response {
                id: 8,
                result: Response::Ok(Reply::Evaluate {
                    evaluation: WireEvaluation {
                        reward: 0.1 + 0.2,
                        components: BTreeMap::new(),
                        success: false,
                        success_judged_only: false,
                        db_hash: Some("abc".into()),
                        info: json!({"steps": 3}),
                    },
                }),
            },
            ServerLine::Response {
                id: 9,
                result: Response::Ok(Reply::Close),
            },
        ];
        for line in server_lines {
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(serde_json::from_str::<ServerLine>(&text).unwrap(), line);
        }
    }
}
