//! OpenAI-compatible chat-completions backend.
//!
//! One [`OpenAiChat`] talks to `{base_url}/chat/completions` of any OpenAI-compatible server (vLLM,
//! SGLang, llama.cpp server, Ollama, hosted APIs behind a proxy). It is shared by every episode of a
//! run: it holds no per-episode state, only a pooled HTTP client.
//!
//! The request/response mapping lives in plain functions ([`request_body`], [`parse_completion`])
//! so it can be tested without a server; the HTTP loop adds timeouts and retries around them.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kiln_protocol::{Message, Role, ToolCall, ToolSchema, Usage};
use rand::Rng;
use serde_json::{Map, Value, json};
use tracing::{Instrument, debug, info_span, warn};

use crate::{ChatModel, ChatRequest, ChatResponse, ModelError, ModelErrorKind};

/// Environment variables read for the bearer key, first set one wins.
pub const API_KEY_ENV_VARS: [&str; 2] = ["KILN_API_KEY", "OPENAI_API_KEY"];

/// How many characters of an error body are quoted in error messages.
const BODY_EXCERPT_CHARS: usize = 300;

/// When and how long to wait before retrying a failed call.
///
/// Retried: HTTP 429, HTTP 5xx and connection failures. Not retried: other 4xx (the request itself
/// is wrong) and request timeouts (a server that needed the whole timeout once will likely need it
/// again, and a retry would multiply an already long wait).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Upper bound on the exponential delay.
    pub max_backoff: Duration,
    /// Upper bound on a server's `Retry-After`, so a misbehaving server cannot stall a run.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No retries at all; for preflight checks and tests.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// Delay before retry number `retry` (0-based).
    ///
    /// A server's `Retry-After` is honoured as given (capped by `max_retry_after`). Otherwise the
    /// delay is `initial_backoff * 2^retry`, capped by `max_backoff`, scaled by `jitter` (expected in
    /// `0.5..=1.0`) so that many workers rate-limited together do not retry in lockstep.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(retry_after) = retry_after {
            return retry_after.min(self.max_retry_after);
        }
        let factor = 2u32.saturating_pow(retry.min(20));
        let exponential = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        exponential.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Everything needed to reach one model on one OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Model name sent in the `model` field.
    pub model: String,
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8000/v1` (no trailing slash needed).
    pub base_url: String,
    /// Bearer key; `None` sends no `Authorization` header (typical for local servers).
    pub api_key: Option<String>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, from sending to the last byte of the answer. Generous by
    /// default because local servers may take minutes for a long completion on a busy GPU.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl OpenAiConfig {
    /// A config with default timeouts and retries; the key comes from [`API_KEY_ENV_VARS`].
    pub fn new(model: impl Into<String>, base_url: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key: api_key_from_env(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("model", &self.model)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// The first non-empty key among [`API_KEY_ENV_VARS`].
pub fn api_key_from_env() -> Option<String> {
    API_KEY_ENV_VARS
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
}

/// A chat model behind an OpenAI-compatible `chat/completions` endpoint.
pub struct OpenAiChat {
    config: OpenAiConfig,
    client: reqwest::Client,
    completions_url: String,
    models_url: String,
}

impl fmt::Debug for OpenAiChat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiChat")
            .field("config", &self.config)
            .finish()
    }
}

impl OpenAiChat {
    /// Builds the HTTP client. Fails only if the TLS backend cannot be initialised.
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|error| {
                ModelError::new(
                    ModelErrorKind::Unavailable,
                    format!(
                        "cannot build an HTTP client for {}: {}",
                        config.base_url,
                        error_chain(&error)
                    ),
                )
            })?;
        let base = config.base_url.trim_end_matches('/');
        let completions_url = format!("{base}/chat/completions");
        let models_url = format!("{base}/models");
        Ok(Self {
            config,
            client,
            completions_url,
            models_url,
        })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The full URL chat requests are posted to.
    pub fn completions_url(&self) -> &str {
        &self.completions_url
    }

    /// Checks the server answers `GET {base}/models`, once, without retries.
    ///
    /// A server that has no `/models` route (404) still counts as reachable: some proxies only
    /// implement chat completions. 401/403 fail, since every chat call would fail the same way.
    /// A model list that does not name the configured model only logs a warning, because proxies
    /// routinely serve aliases they do not list.
    pub async fn preflight(&self) -> Result<(), ModelError> {
        let url = &self.models_url;
        let started = Instant::now();
        let response = self
            .authorized(self.client.get(url))
            .send()
            .await
            .map_err(|error| {
                classify_transport_error("GET", url, &self.config, error).into_error(1)
            })?;
        let status = response.status().as_u16();
        debug!(endpoint = %url, status, latency_ms = started.elapsed().as_millis() as u64, "preflight answered");
        if status == 404 {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(ModelError::new(
                ModelErrorKind::Http,
                format!("GET {url}: HTTP {status}: {}", body_excerpt(&body)),
            ));
        }
        if !models_list_names(&body, &self.config.model) {
            warn!(endpoint = %url, model = %self.config.model, "model not listed by the server; continuing");
        }
        Ok(())
    }

    fn authorized(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.config.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    async fn post_with_retries(&self, body: &Value) -> Result<ChatResponse, ModelError> {
        let mut retry = 0;
        loop {
            let attempt = retry + 1;
            let started = Instant::now();
            let result = self.post_once(body).await;
            let latency_ms = started.elapsed().as_millis() as u64;
            let failure = match result {
                Ok(text) => {
                    debug!(
                        attempt,
                        latency_ms,
                        status = 200,
                        "chat completion answered"
                    );
                    return parse_completion(&self.completions_url, &text);
                }
                Err(failure) => failure,
            };
            if !failure.retryable || retry >= self.config.retry.max_retries {
                debug!(attempt, latency_ms, status = ?failure.status, "chat completion failed");
                return Err(failure.into_error(attempt));
            }
            let jitter = rand::thread_rng().gen_range(0.5..=1.0);
            let delay = self.config.retry.delay(retry, failure.retry_after, jitter);
            warn!(
                attempt,
                latency_ms,
                status = ?failure.status,
                delay_ms = delay.as_millis() as u64,
                error = %failure.message,
                "chat completion failed; retrying"
            );
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }

    /// One attempt: the body text of a 2xx answer, or a classified failure.
    async fn post_once(&self, body: &Value) -> Result<String, AttemptFailure> {
        let url = &self.completions_url;
        let response = self
            .authorized(self.client.post(url))
            .json(body)
            .send()
            .await
            .map_err(|error| classify_transport_error("POST", url, &self.config, error))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
        let text = response
            .text()
            .await
            .map_err(|error| classify_transport_error("POST", url, &self.config, error))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let (kind, retryable) = classify_status(status);
        Err(AttemptFailure {
            kind,
            retryable,
            status: Some(status),
            retry_after,
            message: format!("POST {url}: HTTP {status}: {}", body_excerpt(&text)),
        })
    }
}

#[async_trait]
impl ChatModel for OpenAiChat {
    fn label(&self) -> String {
        format!("openai:{}@{}", self.config.model, self.config.base_url)
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let body = request_body(&self.config.model, request);
        let span =
            info_span!("openai_chat", endpoint = %self.completions_url, model = %self.config.model);
        self.post_with_retries(&body).instrument(span).await
    }
}

/// A failed attempt, before deciding whether to retry.
#[derive(Debug)]
struct AttemptFailure {
    kind: ModelErrorKind,
    retryable: bool,
    status: Option<u16>,
    retry_after: Option<Duration>,
    message: String,
}

impl AttemptFailure {
    fn into_error(self, attempts: u32) -> ModelError {
        if attempts <= 1 {
            return ModelError::new(self.kind, self.message);
        }
        ModelError::new(
            self.kind,
            format!("{} (after {attempts} attempts)", self.message),
        )
    }
}

/// Error kind for an HTTP status, and whether it is worth retrying.
fn classify_status(status: u16) -> (ModelErrorKind, bool) {
    match status {
        429 => (ModelErrorKind::RateLimited, true),
        500..=599 => (ModelErrorKind::Http, true),
        _ => (ModelErrorKind::Http, false),
    }
}

/// Maps a reqwest failure to an error kind. Connection failures (including a connection dropped
/// before the answer) are retried; a request timeout is not (see [`RetryPolicy`]).
fn classify_transport_error(
    method: &str,
    url: &str,
    config: &OpenAiConfig,
    error: reqwest::Error,
) -> AttemptFailure {
    // The URL is already at the front of the message; reqwest would repeat it.
    let error = error.without_url();
    let cause = error_chain(&error);
    let (kind, retryable, message) = if error.is_connect() {
        (
            ModelErrorKind::Connect,
            true,
            format!("{method} {url}: cannot connect: {cause}"),
        )
    } else if error.is_timeout() {
        let limit = config.request_timeout;
        (
            ModelErrorKind::Timeout,
            false,
            format!("{method} {url}: no answer within {limit:?}: {cause}"),
        )
    } else if error.is_decode() || error.is_body() {
        (
            ModelErrorKind::InvalidResponse,
            false,
            format!("{method} {url}: cannot read the answer: {cause}"),
        )
    } else {
        (
            ModelErrorKind::Connect,
            true,
            format!("{method} {url}: request failed: {cause}"),
        )
    };
    AttemptFailure {
        kind,
        retryable,
        status: None,
        retry_after: None,
        message,
    }
}

/// The error and its sources, joined: reqwest's own message rarely says *why* ("error sending
/// request"), the cause ("Connection refused") is further down the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `Retry-After` in seconds. The HTTP-date form is ignored (the normal backoff applies).
fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    let seconds: f64 = text.parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}

/// The start of a body, on one line, for error messages.
pub(crate) fn body_excerpt(body: &str) -> String {
    let collapsed: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "<empty body>".to_string();
    }
    let mut chars = collapsed.chars();
    let excerpt: String = chars.by_ref().take(BODY_EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        format!("{excerpt}…")
    } else {
        excerpt
    }
}

/// Whether a `GET /models` answer lists `model` (`{"data": [{"id": ...}]}`).
fn models_list_names(body: &str, model: &str) -> bool {
    let Ok(list) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    list.get("data")
        .and_then(Value::as_array)
        .is_some_and(|models| {
            models
                .iter()
                .any(|entry| entry.get("id").and_then(Value::as_str) == Some(model))
        })
}

/// The JSON body of a chat-completions request.
///
/// Sampling comes from the request (the caller decides per call). `tools` is omitted when none are
/// offered, `stop` when empty, `seed` when unset: some servers reject empty or null values.
pub fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(request.messages.iter().map(message_to_openai).collect()),
    );
    if !request.tools.is_empty() {
        body.insert(
            "tools".into(),
            Value::Array(request.tools.iter().map(tool_to_openai).collect()),
        );
    }
    let sampling = &request.sampling;
    body.insert("temperature".into(), json!(sampling.temperature));
    body.insert("top_p".into(), json!(sampling.top_p));
    body.insert("max_tokens".into(), json!(sampling.max_tokens));
    if let Some(seed) = sampling.seed {
        body.insert("seed".into(), json!(seed));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    Value::Object(body)
}

/// One Kiln message in the OpenAI shape.
fn message_to_openai(message: &Message) -> Value {
    let mut object = Map::new();
    object.insert("role".into(), json!(role_name(message.role)));
    match message.role {
        Role::Assistant if !message.tool_calls.is_empty() => {
            let content = if message.content.is_empty() {
                Value::Null
            } else {
                json!(message.content)
            };
            object.insert("content".into(), content);
            object.insert(
                "tool_calls".into(),
                Value::Array(message.tool_calls.iter().map(tool_call_to_openai).collect()),
            );
        }
        Role::Tool => {
            object.insert("content".into(), json!(message.content));
            if let Some(call_id) = &message.tool_call_id {
                object.insert("tool_call_id".into(), json!(call_id));
            }
        }
        _ => {
            object.insert("content".into(), json!(message.content));
        }
    }
    Value::Object(object)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// A tool call in the OpenAI shape. Arguments travel as a JSON string; arguments kept as a string
/// because the model produced invalid JSON are sent back verbatim, so the model sees what it wrote.
fn tool_call_to_openai(call: &ToolCall) -> Value {
    let arguments = match &call.arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    };
    json!({
        "id": call.id,
        "type": "function",
        "function": { "name": call.name, "arguments": arguments },
    })
}

fn tool_to_openai(tool: &ToolSchema) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    })
}

/// Parses a chat-completions answer.
///
/// Lenient where servers differ harmlessly (null or list-of-parts content, a missing `usage`, a
/// missing tool-call id, arguments sent as an object), strict where the answer is unusable (not
/// JSON, no `choices[0].message`, a tool call without a name): those are `InvalidResponse` errors
/// naming `endpoint` and what was missing.
pub fn parse_completion(endpoint: &str, body: &str) -> Result<ChatResponse, ModelError> {
    let invalid = |what: &str| {
        ModelError::new(
            ModelErrorKind::InvalidResponse,
            format!(
                "POST {endpoint}: invalid chat completion: {what}: {}",
                body_excerpt(body)
            ),
        )
    };
    let root: Value = serde_json::from_str(body).map_err(|_| invalid("body is not JSON"))?;
    if let Some(error) = root.get("error").filter(|error| !error.is_null()) {
        return Err(invalid(&format!("server returned an error object {error}")));
    }
    let choice = root
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or_else(|| invalid("missing `choices[0]`"))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| invalid("missing `choices[0].message`"))?;
    let content = parse_content(message.get("content")).map_err(|what| invalid(&what))?;
    let tool_calls = parse_tool_calls(message.get("tool_calls")).map_err(|what| invalid(&what))?;
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    let usage = parse_usage(root.get("usage"));
    Ok(ChatResponse {
        message: Message::assistant_tool_calls(content, tool_calls),
        usage,
        finish_reason,
        tokens: None,
    })
}

/// `content` as text: a string, null/absent (tool-call-only answers), or a list of text parts.
fn parse_content(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        Some(other) => Err(format!(
            "`choices[0].message.content` is neither text nor null: {other}"
        )),
    }
}

fn parse_tool_calls(tool_calls: Option<&Value>) -> Result<Vec<ToolCall>, String> {
    let calls = match tool_calls {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err("`choices[0].message.tool_calls` is not a list".to_string()),
    };
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| parse_tool_call(index, call))
        .collect()
}

fn parse_tool_call(index: usize, call: &Value) -> Result<ToolCall, String> {
    let function = call
        .get("function")
        .filter(|function| function.is_object())
        .ok_or_else(|| format!("missing `tool_calls[{index}].function`"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| format!("missing `tool_calls[{index}].function.name`"))?;
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map_or_else(|| format!("call_{index}"), str::to_string);
    Ok(ToolCall {
        id,
        name: name.to_string(),
        arguments: parse_arguments(function.get("arguments")),
    })
}

/// Tool-call arguments as JSON. The API sends a JSON string; invalid JSON is kept as a string value
/// (not an error) so the harness can tell the model what went wrong. An empty string means `{}`
/// (models calling an argument-less tool), and an object sent directly is taken as is.
pub fn parse_arguments(arguments: Option<&Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(raw)) if raw.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(raw)) => {
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
        }
        Some(other) => other.clone(),
    }
}

/// Token counts of one call; zero when the server reports none.
fn parse_usage(usage: Option<&Value>) -> Usage {
    let count = |field: &str| {
        usage
            .and_then(|usage| usage.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        prompt_tokens: count("prompt_tokens"),
        completion_tokens: count("completion_tokens"),
        calls: 1,
    }
}

#[cfg(test)]
mod tests {
    use kiln_protocol::SamplingParams;

    use super::*;

    const ENDPOINT: &str = "http://127.0.0.1:9/v1/chat/completions";

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_retries: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        assert_eq!(policy.delay(0, None, 1.0), Duration::from_millis(100));
        assert_eq!(policy.delay(2, None, 1.0), Duration::from_millis(400));
        assert_eq!(policy.delay(2, None, 0.5), Duration::from_millis(200));
        assert_eq!(policy.delay(9, None, 1.0), Duration::from_secs(1));
        assert_eq!(policy.delay(u32::MAX, None, 1.0), Duration::from_secs(1));
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(60)), 1.0),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn only_rate_limits_and_server_errors_are_retried() {
        assert_eq!(classify_status(429), (ModelErrorKind::RateLimited, true));
        assert_eq!(classify_status(503), (ModelErrorKind::Http, true));
        assert_eq!(classify_status(400), (ModelErrorKind::Http, false));
        assert_eq!(classify_status(404), (ModelErrorKind::Http, false));
    }

    #[test]
    fn request_body_maps_messages_tools_and_sampling() {
        let call = ToolCall {
            id: "c1".into(),
            name: "find_user".into(),
            arguments: json!({"email": "a@b.c"}),
        };
        let request = ChatRequest {
            messages: vec![
                Message::system("be brief"),
                Message::user("hi"),
                Message::assistant_tool_calls("", vec![call.clone()]),
                Message::tool_result(&call, "{\"user_id\": \"u1\"}"),
            ],
            tools: vec![ToolSchema {
                name: "find_user".into(),
                description: "finds a user".into(),
                parameters: json!({"type": "object", "properties": {"email": {"type": "string"}}}),
            }],
            sampling: SamplingParams {
                temperature: 0.5,
                top_p: 0.9,
                max_tokens: 64,
                seed: Some(7),
            },
            stop: vec!["END".into()],
        };
        let body = request_body("qwen", &request);
        assert_eq!(body["model"], "qwen");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        let assistant = &body["messages"][2];
        assert!(assistant["content"].is_null());
        assert_eq!(assistant["tool_calls"][0]["type"], "function");
        assert_eq!(assistant["tool_calls"][0]["function"]["name"], "find_user");
        let arguments: Value = serde_json::from_str(
            assistant["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(arguments, call.arguments);
        assert_eq!(body["messages"][3]["tool_call_id"], "c1");
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            request.tools[0].parameters
        );
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["seed"], 7);
        assert_eq!(body["stop"], json!(["END"]));
    }

    #[test]
    fn request_body_omits_empty_tools_stop_and_seed() {
        let request = ChatRequest {
            messages: vec![Message::user("hi")],
            ..ChatRequest::default()
        };
        let body = request_body("m", &request);
        for absent in ["tools", "stop", "seed"] {
            assert!(
                body.get(absent).is_none(),
                "{absent} should be omitted: {body}"
            );
        }
    }

    #[test]
    fn malformed_arguments_are_sent_back_verbatim() {
        let call = ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments: json!("{broken"),
        };
        let encoded = tool_call_to_openai(&call);
        assert_eq!(encoded["function"]["arguments"], "{broken");
    }

    #[test]
    fn parses_text_tool_calls_finish_reason_and_usage() {
        let body = json!({
            "choices": [{
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}},
                        {"type": "function", "function": {"name": "g", "arguments": "not json"}},
                        {"id": "c", "type": "function", "function": {"name": "h", "arguments": ""}}
                    ]
                },
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        })
        .to_string();
        let response = parse_completion(ENDPOINT, &body).unwrap();
        assert_eq!(response.message.role, Role::Assistant);
        assert_eq!(response.message.content, "");
        let calls = &response.message.tool_calls;
        assert_eq!(calls[0].arguments, json!({"x": 1}));
        assert_eq!(calls[1].id, "call_1");
        assert_eq!(calls[1].arguments, json!("not json"));
        assert_eq!(calls[2].arguments, json!({}));
        assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 3,
                calls: 1
            }
        );
    }

    #[test]
    fn joins_list_of_parts_content() {
        let body = json!({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]});
        let response = parse_completion(ENDPOINT, &body.to_string()).unwrap();
        assert_eq!(response.message.content, "ab");
        assert_eq!(response.usage.total_tokens(), 0);
    }

    #[test]
    fn structurally_invalid_answers_name_the_endpoint_and_the_gap() {
        let cases = [
            ("<html>oops</html>", "not JSON"),
            ("{\"object\": \"chat.completion\"}", "choices[0]"),
            ("{\"choices\": []}", "choices[0]"),
            (
                "{\"choices\": [{\"finish_reason\": \"stop\"}]}",
                "choices[0].message",
            ),
            (
                "{\"choices\": [{\"message\": {\"content\": 5}}]}",
                "content",
            ),
            (
                "{\"choices\": [{\"message\": {\"tool_calls\": [{\"function\": {}}]}}]}",
                "function.name",
            ),
            ("{\"error\": {\"message\": \"overloaded\"}}", "overloaded"),
        ];
        for (body, expected) in cases {
            let error = parse_completion(ENDPOINT, body).unwrap_err();
            assert_eq!(error.kind(), ModelErrorKind::InvalidResponse, "{body}");
            let message = error.to_string();
            assert!(message.contains(ENDPOINT), "{message}");
            assert!(
                message.contains(expected),
                "{message} should mention {expected}"
            );
        }
    }

    #[test]
    fn body_excerpt_is_short_and_single_line() {
        let long = "line\n".repeat(200);
        let excerpt = body_excerpt(&long);
        assert!(!excerpt.contains('\n'));
        assert!(excerpt.chars().count() <= BODY_EXCERPT_CHARS + 1);
        assert!(excerpt.ends_with('…'));
        assert_eq!(body_excerpt("  "), "<empty body>");
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let mut config = OpenAiConfig::new("m", "http://x/v1/");
        config.api_key = Some("sk-secret".into());
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-secret"));
        assert_eq!(config.base_url, "http://x/v1");
    }

    #[test]
    fn models_list_lookup() {
        let body = json!({"object": "list", "data": [{"id": "qwen"}, {"id": "llama"}]}).to_string();
        assert!(models_list_names(&body, "llama"));
        assert!(!models_list_names(&body, "gpt"));
        assert!(!models_list_names("nope", "gpt"));
    }
}
