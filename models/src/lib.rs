//! The [`ChatModel`] trait and its backends.
//!
//! - [`openai`]: any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, llama.cpp server,
//!   Ollama, hosted APIs through a proxy).
//! - [`oracle`]: replays a task's gold actions; used to validate environments and scorers.
//! - [`factory`]: picks the backend for a [`kiln_protocol::ModelSpec`].
//! - [`local`]: embedded GGUF models in candle (CPU; CUDA with the `cuda` feature): model file,
//!   tokenizer, chat template, forward pass, batching engine, [`local::LocalChat`].
//! - `testing` (feature `testing`): a scripted OpenAI-compatible HTTP server for tests.

use async_trait::async_trait;
use kiln_protocol::trajectory::TokenRecord;
use std::sync::Arc;

use kiln_protocol::{Action, Message, SamplingParams, ToolSchema, Usage};

pub mod factory;
pub mod local;
pub mod openai;
pub mod oracle;
#[cfg(feature = "testing")]
pub mod testing;

pub use factory::{factory_for, local_factory, openai_factory};
pub use openai::{OpenAiChat, OpenAiConfig, RetryPolicy};
pub use oracle::{OracleModel, STOP_SIGNAL};

/// One chat request.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Tools offered through the API's native tool calling (empty: none offered).
    pub tools: Vec<ToolSchema>,
    pub sampling: SamplingParams,
    /// Extra stop sequences.
    pub stop: Vec<String>,
}

/// One chat response.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    /// The assistant message (text and/or native tool calls).
    pub message: Message,
    pub usage: Usage,
    /// Backend's finish reason (`stop`, `length`, `tool_calls`), when it gives one.
    pub finish_reason: Option<String>,
    /// Token ids and logprobs, for local models.
    pub tokens: Option<TokenRecord>,
}

/// What went wrong in a model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// Could not connect (refused, DNS, TLS).
    Connect,
    /// No answer within the configured timeout.
    Timeout,
    /// HTTP 429 after all retries.
    RateLimited,
    /// Another HTTP error status (after retries for 5xx).
    Http,
    /// The backend answered with something that is not a valid response.
    InvalidResponse,
    /// The model cannot be loaded or the request cannot be served.
    Unavailable,
    /// The prompt does not fit in the model's context window (the message gives both lengths).
    ContextOverflow,
}

/// A failed model call. `kind()` says what failed; the message names the endpoint and cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    kind: ModelErrorKind,
    message: String,
}

impl ModelError {
    pub fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> ModelErrorKind {
        self.kind
    }
}

/// A chat model. Implementations are shared across concurrent episodes (`Send + Sync`); per-episode
/// state (like the oracle's cursor) lives in a per-episode instance.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Label recorded in outcomes.
    fn label(&self) -> String;
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError>;

    /// Log-likelihood of each candidate continuation after the rendered `messages` (the assistant
    /// turn is opened, each candidate is scored as its content). Used to pick among an
    /// environment's admissible actions. Backends without token-level access return
    /// `Unavailable`.
    async fn score(
        &self,
        messages: &[Message],
        candidates: &[String],
    ) -> Result<Vec<CandidateScore>, ModelError> {
        let _ = (messages, candidates);
        Err(ModelError::new(
            ModelErrorKind::Unavailable,
            format!(
                "model `{}` cannot score candidates (needs a local model)",
                self.label()
            ),
        ))
    }
}

/// Log-likelihood of one candidate continuation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CandidateScore {
    /// Sum of the candidate tokens' log-probabilities.
    pub logprob: f64,
    /// Number of candidate tokens (for length-normalised choice).
    pub tokens: usize,
}

/// Builds the model one episode talks to. Most backends hand out one shared instance; the oracle
/// builds a fresh replayer over the task's gold plan, which is only known after the environment's
/// reset.
#[async_trait]
pub trait ModelFactory: Send + Sync {
    /// Label recorded in outcomes (`oracle`, `openai:MODEL@URL`).
    fn label(&self) -> String;
    /// Checks the backend is usable before a run starts (endpoint reachable, model file present),
    /// so a misconfigured run fails before anything is written.
    async fn preflight(&self) -> Result<(), ModelError> {
        Ok(())
    }
    /// The model for one episode. `gold_plan` is the environment's oracle plan, when it has one.
    fn for_episode(&self, gold_plan: Option<&[Action]>) -> Result<Arc<dyn ChatModel>, ModelError>;
}
