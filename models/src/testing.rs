//! A scripted OpenAI-compatible HTTP server for tests (feature `testing`).
//!
//! [`ScriptedServer`] listens on a real port and speaks the chat-completions protocol, so anything
//! that talks to a model over HTTP ([`crate::openai::OpenAiChat`], the `kiln` binary, a worker in
//! another process) can be tested against it without a GPU. Its answers come from a [`Script`]: an
//! ordered list of [`Rule`]s, each an optional [`Matcher`] and a [`ScriptedResponse`], plus a
//! default. Every chat request it receives is recorded for assertions.
//!
//! Routes: `GET /v1/models`, `POST /v1/chat/completions`, and `GET /v1/_scripted/requests` (the
//! recorded requests as JSON, for tests that run the server in another process).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kiln_protocol::Usage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tracing::debug;

/// What the server answers, and in which order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Script {
    /// Model id listed by `GET /v1/models` and echoed in answers.
    #[serde(default = "default_model_name")]
    pub model: String,
    /// Tried in order for each request; the first that matches and has uses left answers.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The answer when no rule applies: by default the text `###STOP###`, which ends τ²-style
    /// conversations instead of looping forever.
    #[serde(default = "default_response")]
    pub default: ScriptedResponse,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            model: default_model_name(),
            rules: Vec::new(),
            default: default_response(),
        }
    }
}

impl Script {
    /// A script with these rules and the standard default.
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }

    /// Replaces the default answer.
    pub fn with_default(mut self, default: ScriptedResponse) -> Self {
        self.default = default;
        self
    }
}

fn default_model_name() -> String {
    "scripted".to_string()
}

fn default_response() -> ScriptedResponse {
    ScriptedResponse::text("###STOP###")
}

/// One scripted answer, possibly limited to some requests or to a number of uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Which requests this rule answers; `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Matcher>,
    pub response: ScriptedResponse,
    /// How many requests this rule answers before it is used up; `None`: unlimited. With a
    /// [`ScriptedResponse::Status`] this gives "fail N times, then go on".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Rule {
    /// A rule answering any request, without limit.
    pub fn always(response: ScriptedResponse) -> Self {
        Self {
            matcher: None,
            response,
            times: None,
        }
    }

    /// A rule answering the next `times` requests it matches.
    pub fn times(times: u32, response: ScriptedResponse) -> Self {
        Self {
            matcher: None,
            response,
            times: Some(times),
        }
    }

    /// A rule answering requests that `matcher` accepts, without limit.
    pub fn when(matcher: Matcher, response: ScriptedResponse) -> Self {
        Self {
            matcher: Some(matcher),
            response,
            times: None,
        }
    }
}

/// Selects requests by message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Matcher {
    /// The last message's text content contains `text`.
    LastMessageContains { text: String },
    /// Some message's text content contains `text`.
    AnyMessageContains { text: String },
}

impl Matcher {
    /// Whether the request body's `messages` satisfy this matcher.
    pub fn matches(&self, request: &Value) -> bool {
        let messages = request
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        match self {
            Matcher::LastMessageContains { text } => messages
                .last()
                .is_some_and(|message| message_text(message).contains(text.as_str())),
            Matcher::AnyMessageContains { text } => messages
                .iter()
                .any(|message| message_text(message).contains(text.as_str())),
        }
    }
}

/// A message's text: string content, or the text parts of list content.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A tool call the scripted model makes; `arguments` is sent JSON-encoded, as the API does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptedToolCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

/// What the server sends back for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScriptedResponse {
    /// A normal completion. `content: None` sends `null` (typical of tool-call-only answers).
    /// Without `usage`, prompt tokens are the whitespace-separated words of the request's messages
    /// and completion tokens those of the reply, so usage accounting sees realistic non-zero counts.
    Reply {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ScriptedToolCall>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// A tool call whose `arguments` string is sent exactly as given (e.g. invalid JSON).
    MalformedToolCall { name: String, raw_arguments: String },
    /// An HTTP error status with this body, and a `Retry-After` header (seconds) when given.
    Status {
        code: u16,
        #[serde(default)]
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// HTTP 200 with a body that is not JSON.
    NotJson {
        #[serde(default = "default_not_json_body")]
        body: String,
    },
    /// Waits `ms` milliseconds, then answers with `then`.
    Delay {
        ms: u64,
        then: Box<ScriptedResponse>,
    },
}

fn default_not_json_body() -> String {
    "<html><body>502 Bad Gateway</body></html>".to_string()
}

impl ScriptedResponse {
    /// A plain text reply.
    pub fn text(content: impl Into<String>) -> Self {
        ScriptedResponse::Reply {
            content: Some(content.into()),
            tool_calls: Vec::new(),
            usage: None,
        }
    }

    /// A reply made of one tool call.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        ScriptedResponse::Reply {
            content: None,
            tool_calls: vec![ScriptedToolCall {
                name: name.into(),
                arguments,
            }],
            usage: None,
        }
    }

    /// An error status without `Retry-After`.
    pub fn status(code: u16, body: impl Into<String>) -> Self {
        ScriptedResponse::Status {
            code,
            body: body.into(),
            retry_after: None,
        }
    }

    /// This response, `ms` milliseconds late.
    pub fn delayed(self, ms: u64) -> Self {
        ScriptedResponse::Delay {
            ms,
            then: Box::new(self),
        }
    }
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// The JSON body; a body that is not JSON is kept as a string.
    pub body: Value,
    /// The `Authorization` header, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
}

/// Mutable server state: rule uses left and the request log.
/// A function that answers a request from its body (a policy that reads the prompt, for a test
/// model whose behaviour depends on what the harness puts there); `None` leaves the request to
/// the script's rules.
pub type Responder = Arc<dyn Fn(&Value) -> Option<ScriptedResponse> + Send + Sync>;

struct ServerState {
    script: Script,
    responder: Option<Responder>,
    uses_left: Vec<Option<u32>>,
    requests: Vec<RecordedRequest>,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("script", &self.script)
            .field("responder", &self.responder.is_some())
            .field("requests", &self.requests.len())
            .finish()
    }
}

impl ServerState {
    fn new(script: Script, responder: Option<Responder>) -> Self {
        let uses_left = script.rules.iter().map(|rule| rule.times).collect();
        Self {
            script,
            responder,
            uses_left,
            requests: Vec::new(),
        }
    }

    /// Picks the answer for `body` (the responder first) and spends one use of the rule that
    /// gave it.
    fn select(&mut self, body: &Value) -> ScriptedResponse {
        if let Some(response) = self.responder.as_ref().and_then(|respond| respond(body)) {
            return response;
        }
        for (index, rule) in self.script.rules.iter().enumerate() {
            if self.uses_left[index] == Some(0) {
                continue;
            }
            if !rule
                .matcher
                .as_ref()
                .is_none_or(|matcher| matcher.matches(body))
            {
                continue;
            }
            if let Some(left) = &mut self.uses_left[index] {
                *left -= 1;
            }
            return rule.response.clone();
        }
        self.script.default.clone()
    }
}

type Shared = Arc<Mutex<ServerState>>;

fn lock(state: &Shared) -> MutexGuard<'_, ServerState> {
    // A panic while holding the lock cannot leave the state half-updated in a way that matters to
    // a test double, so poisoning is ignored.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running scripted server; stops when dropped.
#[derive(Debug)]
pub struct ScriptedServer {
    address: SocketAddr,
    state: Shared,
    shutdown: Option<oneshot::Sender<()>>,
}

impl ScriptedServer {
    /// Starts serving `script` on a free port of 127.0.0.1. Must be called inside a tokio runtime.
    pub async fn start(script: Script) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), script).await
    }

    /// Starts serving `script` on `address` (port 0 picks a free port).
    pub async fn start_on(address: SocketAddr, script: Script) -> io::Result<Self> {
        Self::serve(address, script, None).await
    }

    /// Starts a server that answers with `responder` (falling back to `script` where it returns
    /// `None`) on a free port of 127.0.0.1.
    pub async fn start_with_responder(script: Script, responder: Responder) -> io::Result<Self> {
        Self::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            script,
            Some(responder),
        )
        .await
    }

    async fn serve(
        address: SocketAddr,
        script: Script,
        responder: Option<Responder>,
    ) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let state: Shared = Arc::new(Mutex::new(ServerState::new(script, responder)));
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        let app = router(state.clone());
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = shutdown_signal.await;
            });
            if let Err(error) = serve.await {
                tracing::warn!(%error, "scripted server stopped with an error");
            }
        });
        debug!(%address, "scripted server listening");
        Ok(Self {
            address,
            state,
            shutdown: Some(shutdown),
        })
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every chat request received so far, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// The bodies of every chat request received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.state)
            .requests
            .iter()
            .map(|request| request.body.clone())
            .collect()
    }

    /// How many chat requests were received.
    pub fn request_count(&self) -> usize {
        lock(&self.state).requests.len()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/_scripted/requests", get(recorded_requests))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn list_models(State(state): State<Shared>) -> Json<Value> {
    let model = lock(&state).script.model.clone();
    Json(json!({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "kiln"}]}))
}

async fn recorded_requests(State(state): State<Shared>) -> Json<Vec<RecordedRequest>> {
    Json(lock(&state).requests.clone())
}

async fn chat_completions(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let (response, sequence, model) = {
        let mut state = lock(&state);
        state.requests.push(RecordedRequest {
            body: parsed.clone(),
            authorization,
        });
        (
            state.select(&parsed),
            state.requests.len(),
            state.script.model.clone(),
        )
    };
    render(response, &parsed, sequence, &model).await
}

/// Turns a scripted response into HTTP.
async fn render(
    response: ScriptedResponse,
    request: &Value,
    sequence: usize,
    model: &str,
) -> Response {
    match response {
        ScriptedResponse::Reply {
            content,
            tool_calls,
            usage,
        } => {
            let calls = tool_calls
                .iter()
                .map(|call| (call.name.clone(), encode_arguments(&call.arguments)))
                .collect::<Vec<_>>();
            let usage =
                usage.unwrap_or_else(|| estimate_usage(request, content.as_deref(), &calls));
            Json(completion(sequence, model, content, &calls, usage)).into_response()
        }
        ScriptedResponse::MalformedToolCall {
            name,
            raw_arguments,
        } => {
            let calls = [(name, raw_arguments)];
            let usage = estimate_usage(request, None, &calls);
            Json(completion(sequence, model, None, &calls, usage)).into_response()
        }
        ScriptedResponse::Status {
            code,
            body,
            retry_after,
        } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, body).into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        ScriptedResponse::NotJson { body } => {
            ([(header::CONTENT_TYPE, "text/html")], body).into_response()
        }
        ScriptedResponse::Delay { ms, then } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Box::pin(render(*then, request, sequence, model)).await
        }
    }
}

/// Arguments as the API sends them: a JSON string (a null value means no arguments).
fn encode_arguments(arguments: &Value) -> String {
    match arguments {
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    }
}

/// A chat-completion body with one choice.
fn completion(
    sequence: usize,
    model: &str,
    content: Option<String>,
    calls: &[(String, String)],
    usage: Usage,
) -> Value {
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        let tool_calls = calls
            .iter()
            .enumerate()
            .map(|(index, (name, arguments))| {
                json!({
                    "id": format!("call_{sequence}_{index}"),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                })
            })
            .collect::<Vec<_>>();
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let finish_reason = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    json!({
        "id": format!("chatcmpl-scripted-{sequence}"),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens(),
        },
    })
}

/// Word counts standing in for token counts when the script gives none.
fn estimate_usage(request: &Value, content: Option<&str>, calls: &[(String, String)]) -> Usage {
    let words = |text: &str| text.split_whitespace().count() as u64;
    let prompt_tokens = request
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .map(|message| words(&message_text(message)))
                .sum()
        })
        .unwrap_or(0);
    let completion_tokens = content.map(words).unwrap_or(0)
        + calls
            .iter()
            .map(|(name, arguments)| 1 + words(name) + words(arguments))
            .sum::<u64>();
    Usage {
        prompt_tokens,
        completion_tokens,
        calls: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(messages: &[&str]) -> Value {
        let messages: Vec<Value> = messages
            .iter()
            .map(|text| json!({"role": "user", "content": text}))
            .collect();
        json!({"model": "m", "messages": messages})
    }

    #[test]
    fn rules_apply_in_order_until_used_up_then_default() {
        let script = Script::new(vec![
            Rule::times(2, ScriptedResponse::status(500, "down")),
            Rule::when(
                Matcher::LastMessageContains {
                    text: "refund".into(),
                },
                ScriptedResponse::text("refunded"),
            ),
        ])
        .with_default(ScriptedResponse::text("fallback"));
        let mut state = ServerState::new(script, None);
        let refund = request(&["hello", "I want a refund"]);
        assert_eq!(state.select(&refund), ScriptedResponse::status(500, "down"));
        assert_eq!(state.select(&refund), ScriptedResponse::status(500, "down"));
        assert_eq!(state.select(&refund), ScriptedResponse::text("refunded"));
        assert_eq!(state.select(&refund), ScriptedResponse::text("refunded"));
        assert_eq!(
            state.select(&request(&["I want a refund", "thanks"])),
            ScriptedResponse::text("fallback")
        );
    }

    #[test]
    fn matchers_look_at_the_last_or_any_message() {
        let body = request(&["order #W123", "what is the status?"]);
        assert!(
            Matcher::AnyMessageContains {
                text: "#W123".into()
            }
            .matches(&body)
        );
        assert!(
            !Matcher::LastMessageContains {
                text: "#W123".into()
            }
            .matches(&body)
        );
        assert!(
            Matcher::LastMessageContains {
                text: "status".into()
            }
            .matches(&body)
        );
        assert!(!Matcher::AnyMessageContains { text: "x".into() }.matches(&json!("not an object")));
    }

    #[test]
    fn scripts_round_trip_through_json() {
        let text = r#"{
            "rules": [
                {"response": {"type": "status", "code": 429, "retry_after": 1}, "times": 1},
                {"matcher": {"kind": "any_message_contains", "text": "weather"},
                 "response": {"type": "reply", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}},
                {"response": {"type": "delay", "ms": 5, "then": {"type": "not_json"}}}
            ]
        }"#;
        let script: Script = serde_json::from_str(text).unwrap();
        assert_eq!(script.model, "scripted");
        assert_eq!(script.default, ScriptedResponse::text("###STOP###"));
        assert_eq!(script.rules[0].times, Some(1));
        assert_eq!(
            script.rules[1].response,
            ScriptedResponse::tool_call("get_weather", json!({"city": "Paris"}))
        );
        let again: Script = serde_json::from_str(&serde_json::to_string(&script).unwrap()).unwrap();
        assert_eq!(again, script);
    }

    #[test]
    fn estimated_usage_counts_words() {
        let usage = estimate_usage(&request(&["one two", "three"]), Some("a b c d"), &[]);
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                calls: 1
            }
        );
    }
}
