//! From a [`ModelSpec`] to a [`ModelFactory`]: the one place that knows which backend serves which
//! spec, so the worker and the CLI never match on backends themselves.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_protocol::{Action, ModelSpec};

use crate::local::{LocalChat, LocalChatOptions};
use crate::openai::{OpenAiChat, OpenAiConfig};
use crate::oracle::OracleModel;
use crate::{ChatModel, ModelError, ModelErrorKind, ModelFactory};

/// The factory for `spec`, with default timeouts and retries for HTTP backends and the default
/// device and engine settings for local models.
pub fn factory_for(spec: &ModelSpec) -> Result<Arc<dyn ModelFactory>, ModelError> {
    match spec {
        ModelSpec::Oracle => Ok(Arc::new(OracleFactory)),
        ModelSpec::OpenAi {
            model, base_url, ..
        } => openai_factory(OpenAiConfig::new(model, base_url)),
        ModelSpec::Local { model, .. } => Ok(local_factory(model, LocalChatOptions::default())),
    }
}

/// A factory handing every episode the same [`OpenAiChat`] built from `config`; use it instead of
/// [`factory_for`] to set timeouts, retries or the key explicitly.
pub fn openai_factory(config: OpenAiConfig) -> Result<Arc<dyn ModelFactory>, ModelError> {
    Ok(Arc::new(OpenAiFactory {
        chat: Arc::new(OpenAiChat::new(config)?),
    }))
}

/// A factory for the embedded model a `local:MODEL` spec names. The model is loaded once, on the
/// first [`ModelFactory::preflight`] or [`ModelFactory::for_episode`], and every episode shares it
/// (and its batching engine).
pub fn local_factory(model: &str, options: LocalChatOptions) -> Arc<dyn ModelFactory> {
    Arc::new(LocalFactory {
        loader: Arc::new(LocalLoader {
            model: model.to_string(),
            options,
            chat: Mutex::new(None),
        }),
    })
}

/// Loads a local model once and shares it across episodes.
#[derive(Debug)]
pub struct LocalFactory {
    loader: Arc<LocalLoader>,
}

#[derive(Debug)]
struct LocalLoader {
    model: String,
    options: LocalChatOptions,
    chat: Mutex<Option<Arc<LocalChat>>>,
}

impl LocalLoader {
    /// The shared model, loading it on first use. The lock is held during the load so concurrent
    /// first callers wait for one load instead of each loading the weights; a failed load is not
    /// kept, so a later call tries again.
    fn chat(&self) -> Result<Arc<LocalChat>, ModelError> {
        let mut slot = self
            .chat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(chat) = slot.as_ref() {
            return Ok(chat.clone());
        }
        let chat = Arc::new(LocalChat::load_spec(&self.model, &self.options)?);
        *slot = Some(chat.clone());
        Ok(chat)
    }
}

#[async_trait]
impl ModelFactory for LocalFactory {
    fn label(&self) -> String {
        format!("local:{}", self.loader.model)
    }

    /// Loads the weights and starts the engine (reading and checking the file's header, tokenizer
    /// and template on the way), so a run with a missing or corrupt model fails before it starts.
    /// The load runs on the blocking pool, not on an async worker thread.
    async fn preflight(&self) -> Result<(), ModelError> {
        let loader = self.loader.clone();
        tokio::task::spawn_blocking(move || loader.chat().map(|_| ()))
            .await
            .map_err(|error| {
                ModelError::new(
                    ModelErrorKind::Unavailable,
                    format!("loading {} failed: {error}", self.label()),
                )
            })?
    }

    fn for_episode(&self, _gold_plan: Option<&[Action]>) -> Result<Arc<dyn ChatModel>, ModelError> {
        Ok(self.loader.chat()?)
    }
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

    #[tokio::test]
    async fn a_local_spec_with_a_missing_file_fails_preflight_naming_the_file() {
        let factory = factory_for(&"local:/nonexistent/model.gguf".parse().unwrap()).unwrap();
        assert_eq!(factory.label(), "local:/nonexistent/model.gguf");
        let error = factory.preflight().await.unwrap_err();
        assert_eq!(error.kind(), ModelErrorKind::Unavailable);
        assert!(
            error.to_string().contains("/nonexistent/model.gguf"),
            "{error}"
        );
        assert!(factory.for_episode(None).is_err());
    }

    #[test]
    fn an_unknown_local_name_is_refused_with_the_known_forms() {
        let factory = factory_for(&"local:gpt9".parse().unwrap()).unwrap();
        let error = factory.for_episode(None).err().expect("unknown model");
        assert!(error.to_string().contains("local:smollm2"), "{error}");
    }
}
