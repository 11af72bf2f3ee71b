//! [`AuxModel`] over a [`ChatModel`]: how an environment's simulated user or judge gets a model
//! without the environments crate depending on `kiln-models`.

use std::sync::Arc;

use async_trait::async_trait;
use kiln_environments::AuxModel;
use kiln_models::{ChatModel, ChatRequest};
use kiln_protocol::{Message, SamplingParams};

/// Text-in, text-out adapter: no tools offered, the reply's text content returned.
pub struct ChatAuxModel {
    model: Arc<dyn ChatModel>,
    sampling: SamplingParams,
}

impl ChatAuxModel {
    pub fn new(model: Arc<dyn ChatModel>, sampling: SamplingParams) -> Self {
        Self { model, sampling }
    }
}

#[async_trait]
impl AuxModel for ChatAuxModel {
    fn label(&self) -> String {
        self.model.label()
    }

    async fn complete(&self, messages: &[Message]) -> Result<String, String> {
        let request = ChatRequest {
            messages: messages.to_vec(),
            tools: Vec::new(),
            sampling: self.sampling.clone(),
            stop: Vec::new(),
        };
        match self.model.chat(&request).await {
            Ok(response) => Ok(response.message.content),
            Err(error) => Err(format!("{} failed: {error}", self.model.label())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_models::{ChatResponse, ModelError, ModelErrorKind};
    use kiln_protocol::Usage;
    use std::sync::Mutex;

    /// Answers with the number of messages it saw, or fails when told to.
    struct CountingModel {
        fail: bool,
        seen_tools: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl ChatModel for CountingModel {
        fn label(&self) -> String {
            "counting".into()
        }
        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
            self.seen_tools.lock().unwrap().push(request.tools.len());
            if self.fail {
                return Err(ModelError::new(
                    ModelErrorKind::Http,
                    "HTTP 500 from http://x",
                ));
            }
            Ok(ChatResponse {
                message: Message::assistant(format!("{} messages", request.messages.len())),
                usage: Usage::default(),
                finish_reason: Some("stop".into()),
                tokens: None,
            })
        }
    }

    #[tokio::test]
    async fn returns_the_reply_text_and_offers_no_tools() {
        let model = Arc::new(CountingModel {
            fail: false,
            seen_tools: Mutex::new(Vec::new()),
        });
        let aux = ChatAuxModel::new(model.clone(), SamplingParams::default());
        let reply = aux
            .complete(&[Message::system("be a user"), Message::user("hi")])
            .await
            .unwrap();
        assert_eq!(reply, "2 messages");
        assert_eq!(aux.label(), "counting");
        assert_eq!(*model.seen_tools.lock().unwrap(), vec![0]);
    }

    #[tokio::test]
    async fn model_errors_become_messages_naming_the_model() {
        let model = Arc::new(CountingModel {
            fail: true,
            seen_tools: Mutex::new(Vec::new()),
        });
        let error = ChatAuxModel::new(model, SamplingParams::default())
            .complete(&[])
            .await
            .unwrap_err();
        assert!(
            error.contains("counting") && error.contains("HTTP 500"),
            "{error}"
        );
    }
}
