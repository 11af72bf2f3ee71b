//! Oracle backend: replays a task's gold actions.
//!
//! Used to validate environments and scorers end to end: an episode driven by the oracle should
//! reach the gold final state, so a failing oracle run points at the environment, not at a model.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use kiln_protocol::{Action, Message, Usage};

use crate::{ChatModel, ChatRequest, ChatResponse, ModelError};

/// What the oracle says once its plan is exhausted.
pub const STOP_SIGNAL: &str = "###STOP###";

/// Replays a plan of actions, one per `chat` call, whatever the request says.
///
/// The cursor is per instance, so build one per episode (the oracle's factory does).
#[derive(Debug)]
pub struct OracleModel {
    plan: Vec<Action>,
    cursor: AtomicUsize,
}

impl OracleModel {
    pub fn new(plan: Vec<Action>) -> Self {
        Self {
            plan,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Planned actions not yet replayed.
    pub fn remaining(&self) -> usize {
        self.plan
            .len()
            .saturating_sub(self.cursor.load(Ordering::SeqCst))
    }
}

#[async_trait]
impl ChatModel for OracleModel {
    fn label(&self) -> String {
        "oracle".to_string()
    }

    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let index = self.cursor.fetch_add(1, Ordering::SeqCst);
        Ok(response_for(self.plan.get(index)))
    }
}

/// The assistant turn for one planned action (`None`: plan exhausted).
///
/// A tool call becomes one native tool call; a message becomes text.
fn response_for(action: Option<&Action>) -> ChatResponse {
    let (message, finish_reason) = match action {
        Some(Action::ToolCall { call }) => (
            Message::assistant_tool_calls("", vec![call.clone()]),
            "tool_calls",
        ),
        Some(Action::Message { text }) => (Message::assistant(text.clone()), "stop"),
        None => (Message::assistant(STOP_SIGNAL), "stop"),
    };
    ChatResponse {
        message,
        usage: Usage::default(),
        finish_reason: Some(finish_reason.to_string()),
        tokens: None,
    }
}

#[cfg(test)]
mod tests {
    use kiln_protocol::{Role, ToolCall};
    use serde_json::json;

    use super::*;

    fn plan() -> Vec<Action> {
        vec![
            Action::ToolCall {
                call: ToolCall {
                    id: "g0".into(),
                    name: "find_user_id_by_email".into(),
                    arguments: json!({"email": "a@b.c"}),
                },
            },
            Action::Message {
                text: "Your order is cancelled.".into(),
            },
        ]
    }

    #[tokio::test]
    async fn replays_the_plan_in_order_then_stops() {
        let oracle = OracleModel::new(plan());
        let request = ChatRequest::default();

        let first = oracle.chat(&request).await.unwrap();
        assert_eq!(first.message.role, Role::Assistant);
        assert_eq!(first.message.content, "");
        let Action::ToolCall { call } = &plan()[0] else {
            unreachable!("plan starts with a tool call")
        };
        assert_eq!(first.message.tool_calls, vec![call.clone()]);
        assert_eq!(first.finish_reason.as_deref(), Some("tool_calls"));

        let second = oracle.chat(&request).await.unwrap();
        assert_eq!(second.message.content, "Your order is cancelled.");
        assert!(second.message.tool_calls.is_empty());
        assert_eq!(oracle.remaining(), 0);

        for _ in 0..3 {
            let after = oracle.chat(&request).await.unwrap();
            assert_eq!(after.message.content, STOP_SIGNAL);
            assert!(after.message.tool_calls.is_empty());
            assert_eq!(after.usage, Usage::default());
        }
    }

    #[tokio::test]
    async fn instances_keep_separate_cursors() {
        let first_episode = OracleModel::new(plan());
        let second_episode = OracleModel::new(plan());
        first_episode.chat(&ChatRequest::default()).await.unwrap();
        assert_eq!(first_episode.remaining(), 1);
        assert_eq!(second_episode.remaining(), 2);
        let reply = second_episode.chat(&ChatRequest::default()).await.unwrap();
        assert_eq!(reply.message.tool_calls.len(), 1);
    }

    #[tokio::test]
    async fn an_empty_plan_stops_at_once() {
        let oracle = OracleModel::new(Vec::new());
        let reply = oracle.chat(&ChatRequest::default()).await.unwrap();
        assert_eq!(reply.message.content, STOP_SIGNAL);
        assert_eq!(oracle.label(), "oracle");
    }
}
