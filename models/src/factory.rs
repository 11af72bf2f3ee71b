//! From a [`ModelSpec`] to a [`ModelFactory`]: the one place that knows which backend serves which
//! spec, so the worker and the CLI never match on backends themselves.

use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::{Action, ModelSpec};

use crate::openai::{OpenAiChat, OpenAiConfig};
use crate::oracle::OracleModel;
use crate::{ChatModel, ModelError, ModelErrorKind, ModelFactory};

/// The factory for `spec`, with default timeouts and retries for HTTP backends.
///
/// Fails for `local:` specs: embedded candle inference is not built yet.
pub fn factory_for(spec: &ModelSpec) -> Result<Arc<dyn ModelFactory>, ModelError> {
    match spec {
        ModelSpec::Oracle => Ok(Arc::new(OracleFactory)),
        ModelSpec::OpenAi {
            model, base_url, ..
        } => openai_factory(OpenAiConfig::new(model, base_url)),
        ModelSpec::Local { model, .. } => Err(local_unavailable(model)),
    }
}

/// A factory handing every episode the same [`OpenAiChat`] built from `config`; use it instead of
/// [`factory_for`] to set timeouts, retries or the key explicitly.
pub fn openai_factory(config: OpenAiConfig) -> Result<Arc<dyn ModelFactory>, ModelError> {
    Ok(Arc::new(OpenAiFactory {
        chat: Arc::new(OpenAiChat::new(config)?),
    }))
}

fn local_unavailable(model: &str) -> ModelError {
    ModelError::new(
        ModelErrorKind::Unavailable,
        format!(
            "model `local:{model}`: embedded models are not built yet (candle GGUF inference is planned \
             for a later issue); serve the model with an OpenAI-compatible server (llama.cpp, vLLM, \
             Ollama) and use `openai:MODEL@URL` instead"
        ),
    )
}

/// Builds a fresh [`OracleModel`] over each episode's gold plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct OracleFactory;

impl ModelFactory for OracleFactory {
    fn label(&self) -> String {
        ModelSpec::Oracle.label()
    }

    fn for_episode(&self, gold_plan: Option<&[Action]>) -> Result<Arc<dyn ChatModel>, ModelError> {
        let Some(plan) = gold_plan else {
            return Err(ModelError::new(
                ModelErrorKind::Unavailable,
                "the oracle needs an environment with gold actions, and this environment gave none",
            ));
        };
        Ok(Arc::new(OracleModel::new(plan.to_vec())))
    }
}

/// Shares one [`OpenAiChat`] (and its connection pool) across episodes.
#[derive(Debug)]
pub struct OpenAiFactory {
    chat: Arc<OpenAiChat>,
}

#[async_trait]
impl ModelFactory for OpenAiFactory {
    fn label(&self) -> String {
        self.chat.label()
    }

    async fn preflight(&self) -> Result<(), ModelError> {
        self.chat.preflight().await
    }

    fn for_episode(&self, _gold_plan: Option<&[Action]>) -> Result<Arc<dyn ChatModel>, ModelError> {
        Ok(self.chat.clone())
    }
}

#[cfg(test)]
mod tests {
    use kiln_protocol::ToolCall;
    use serde_json::json;

    use super::*;

    #[test]
    fn oracle_spec_needs_a_gold_plan() {
        let factory = factory_for(&"oracle".parse().unwrap()).unwrap();
        assert_eq!(factory.label(), "oracle");
        let error = factory.for_episode(None).err().expect("no plan must fail");
        assert_eq!(error.kind(), ModelErrorKind::Unavailable);
        assert!(error.to_string().contains("gold actions"), "{error}");
        let plan = [Action::ToolCall {
            call: ToolCall {
                id: "1".into(),
                name: "f".into(),
                arguments: json!({}),
            },
        }];
        let model = factory.for_episode(Some(&plan)).unwrap();
        assert_eq!(model.label(), "oracle");
    }

    #[test]
    fn openai_spec_shares_one_model_labelled_like_the_spec() {
        let spec: ModelSpec = "openai:qwen@http://127.0.0.1:8000/v1".parse().unwrap();
        let factory = factory_for(&spec).unwrap();
        assert_eq!(factory.label(), spec.label());
        let first = factory.for_episode(None).unwrap();
        let second = factory.for_episode(None).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.label(), spec.label());
    }

    #[test]
    fn local_spec_is_unavailable_and_says_why() {
        let error = factory_for(&"local:smollm2".parse().unwrap())
            .err()
            .expect("local must fail");
        assert_eq!(error.kind(), ModelErrorKind::Unavailable);
        let message = error.to_string();
        assert!(message.contains("local:smollm2"), "{message}");
        assert!(message.contains("not built yet"), "{message}");
    }
}
