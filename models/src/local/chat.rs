//! [`LocalChat`]: the [`ChatModel`] of an embedded GGUF model.
//!
//! A request's messages are rendered with the model's own chat template and tokenized; the
//! [`Engine`] generates the reply. Models like SmolLM2 have no native tool calling, so when the
//! request offers tools they are described in the system message, with the instruction to answer
//! `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (the format the harness's `tool_parser`
//! reads). Earlier tool calls and results in the conversation are rendered the same way: calls as
//! `<tool_call>` lines in the assistant turn, results as user turns wrapped in
//! `<tool_response>…</tool_response>`.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::trajectory::TokenRecord;
use kiln_protocol::{Message, Role, ToolSchema, Usage};

use super::device::{DevicePreference, select_device};
use super::engine::{Engine, EngineConfig, GenerationParams};
use super::llama::{ForwardMode, LlamaModel};
use super::sampling::SamplingConfig;
use super::tokenizer::{TokenId, Tokenizer};
use super::{ChatTemplate, LocalModelFiles, kiln_home, resolve_model_path};
use crate::{CandidateScore, ChatModel, ChatRequest, ChatResponse, ModelError, ModelErrorKind};

/// How a local model is loaded and served.
#[derive(Debug, Clone, Default)]
pub struct LocalChatOptions {
    pub device: DevicePreference,
    pub engine: EngineConfig,
}

/// An embedded model behind the [`ChatModel`] trait. Clones share the engine (and the weights).
#[derive(Clone)]
pub struct LocalChat {
    label: String,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    engine: Engine,
}

impl std::fmt::Debug for LocalChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChat")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl LocalChat {
    /// Loads the model a `local:MODEL` spec names (`smollm2` or a GGUF path) and starts its
    /// engine.
    pub fn load_spec(model: &str, options: &LocalChatOptions) -> Result<LocalChat, ModelError> {
        let path = resolve_model_path(model, &kiln_home())?;
        Self::load(&path, format!("local:{model}"), options)
    }

    /// Loads the GGUF file at `path`; `label` is what outcomes record.
    pub fn load(
        path: &Path,
        label: String,
        options: &LocalChatOptions,
    ) -> Result<LocalChat, ModelError> {
        let files = LocalModelFiles::load(path)?;
        let device = select_device(options.device).map_err(|error| {
            ModelError::new(
                ModelErrorKind::Unavailable,
                format!("no device for {label}: {error}"),
            )
        })?;
        let model = LlamaModel::load(&files.gguf, &device, ForwardMode::Fast)
            .map_err(|error| ModelError::new(ModelErrorKind::Unavailable, error.to_string()))?;
        let LocalModelFiles {
            tokenizer,
            chat_template,
            ..
        } = files;
        let tokenizer = Arc::new(tokenizer);
        let engine = Engine::start(model, tokenizer.clone(), options.engine.clone());
        Ok(LocalChat {
            label,
            tokenizer,
            template: Arc::new(chat_template),
            engine,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt text for `messages` (with `tools` described), ending where the reply starts.
    pub fn render_prompt(
        &self,
        messages: &[Message],
        tools: &[ToolSchema],
    ) -> Result<String, ModelError> {
        let messages = prompt_messages(messages, tools);
        self.template
            .render(&messages, true)
            .map_err(|error| ModelError::new(ModelErrorKind::InvalidResponse, error.to_string()))
    }

    /// Token ids of `text` as the model reads prompts (special tokens such as `<|im_start|>`
    /// parsed).
    pub fn encode(&self, text: &str) -> Vec<TokenId> {
        self.tokenizer.encode(text, true, true)
    }

    /// The tokens of `candidate` as the content of the assistant turn that `prompt_text` opens,
    /// through the end-of-turn token (the chat template's own closing, rendered and cut after
    /// the first end-of-generation token).
    fn candidate_tokens(
        &self,
        messages: &[Message],
        prompt_text: &str,
        candidate: &str,
    ) -> Result<Vec<TokenId>, ModelError> {
        let mut conversation = prompt_messages(messages, &[]);
        conversation.push(Message::assistant(candidate));
        let full = self
            .template
            .render(&conversation, false)
            .map_err(|error| ModelError::new(ModelErrorKind::InvalidResponse, error.to_string()))?;
        let continuation = full.strip_prefix(prompt_text).unwrap_or(candidate);
        let mut ids = self.tokenizer.encode(continuation, false, true);
        if let Some(end) = ids
            .iter()
            .position(|&id| self.tokenizer.is_end_of_generation(id))
        {
            ids.truncate(end + 1);
        }
        Ok(ids)
    }
}

#[async_trait]
impl ChatModel for LocalChat {
    fn label(&self) -> String {
        self.label.clone()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let prompt_text = self.render_prompt(&request.messages, &request.tools)?;
        let prompt_ids = self.encode(&prompt_text);
        let sampling = &request.sampling;
        let params = GenerationParams {
            max_tokens: sampling.max_tokens as usize,
            sampling: SamplingConfig {
                temperature: sampling.temperature,
                top_p: sampling.top_p,
                seed: sampling.seed,
            },
            stop: request.stop.clone(),
        };
        let generation = self.engine.generate(prompt_ids.clone(), params).await?;
        tracing::debug!(
            model = %self.label,
            prompt_tokens = prompt_ids.len(),
            reused = generation.reused_prompt_tokens,
            completion_tokens = generation.completion_ids.len(),
            finish = generation.finish.as_str(),
            "local chat"
        );
        Ok(ChatResponse {
            message: Message::assistant(generation.text),
            usage: Usage {
                prompt_tokens: prompt_ids.len() as u64,
                completion_tokens: generation.completion_ids.len() as u64,
                calls: 1,
            },
            finish_reason: Some(generation.finish.as_str().to_string()),
            tokens: Some(TokenRecord {
                prompt_ids,
                completion_ids: generation.completion_ids,
                completion_logprobs: generation.completion_logprobs,
                logprob_temperature: generation.logprob_temperature,
                reused_prompt_tokens: generation.reused_prompt_tokens as u64,
            }),
        })
    }

    /// Sums each candidate's token log-probabilities as the assistant's whole reply: its content
    /// and the end-of-turn token, so a candidate that is a prefix of another is not favoured for
    /// being short.
    async fn score(
        &self,
        messages: &[Message],
        candidates: &[String],
    ) -> Result<Vec<CandidateScore>, ModelError> {
        let prompt_text = self.render_prompt(messages, &[])?;
        let prompt_ids = self.encode(&prompt_text);
        let candidate_ids = candidates
            .iter()
            .map(|candidate| self.candidate_tokens(messages, &prompt_text, candidate))
            .collect::<Result<Vec<_>, _>>()?;
        let logprobs = self.engine.score(prompt_ids, candidate_ids).await?;
        Ok(logprobs
            .iter()
            .map(|values| CandidateScore {
                logprob: values.iter().map(|&v| f64::from(v)).sum(),
                tokens: values.len(),
            })
            .collect())
    }
}

/// The messages the template renders: tools described in the system message, tool calls and
/// results as text.
pub fn prompt_messages(messages: &[Message], tools: &[ToolSchema]) -> Vec<Message> {
    let mut rendered: Vec<Message> = messages.iter().map(textualize).collect();
    if tools.is_empty() {
        return rendered;
    }
    let catalogue = tool_instructions(tools);
    match rendered.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{catalogue}", first.content.trim_end());
        }
        _ => rendered.insert(0, Message::system(catalogue)),
    }
    rendered
}

/// The system-prompt text that describes `tools` and the `<tool_call>` format.
pub fn tool_instructions(tools: &[ToolSchema]) -> String {
    let mut text = String::from("# Tools\n\nYou may call one or more of these tools:\n");
    for tool in tools {
        let schema = serde_json::json!({
            "name": tool.name,
            "description": tool.description.trim(),
            "parameters": tool.parameters,
        });
        text.push_str(&format!("\n{schema}"));
    }
    text.push_str(
        "\n\nTo call a tool, write its name and a JSON object of arguments inside tags, one call \
         per line:\n<tool_call>{\"name\": \"TOOL_NAME\", \"arguments\": {\"ARGUMENT\": \"VALUE\"}}</tool_call>\n\
         To answer without a tool, write plain text.",
    );
    text
}

fn textualize(message: &Message) -> Message {
    match message.role {
        Role::Tool => Message::user(format!(
            "<tool_response>\n{}\n</tool_response>",
            message.content
        )),
        Role::Assistant if !message.tool_calls.is_empty() => {
            let mut lines = Vec::new();
            if !message.content.trim().is_empty() {
                lines.push(message.content.trim_end().to_string());
            }
            for call in &message.tool_calls {
                let body = serde_json::json!({"name": call.name, "arguments": call.arguments});
                lines.push(format!("<tool_call>{body}</tool_call>"));
            }
            Message::assistant(lines.join("\n"))
        }
        _ => Message {
            role: message.role,
            content: message.content.clone(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use kiln_protocol::ToolCall;
    use serde_json::json;

    use super::*;

    fn tool(name: &str) -> ToolSchema {
        ToolSchema {
            name: name.to_string(),
            description: format!("Does {name}."),
            parameters: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
        }
    }

    #[test]
    fn tools_are_described_in_the_existing_system_message() {
        let messages = [Message::system("Be brief."), Message::user("hi")];
        let rendered = prompt_messages(&messages, &[tool("get_order")]);
        assert_eq!(rendered.len(), 2);
        assert!(rendered[0].content.starts_with("Be brief.\n\n# Tools"));
        assert!(rendered[0].content.contains("\"name\":\"get_order\""));
        assert!(
            rendered[0]
                .content
                .contains("<tool_call>{\"name\": \"TOOL_NAME\"")
        );
        assert_eq!(rendered[1], messages[1]);
    }

    #[test]
    fn tools_get_a_system_message_when_there_is_none() {
        let rendered = prompt_messages(&[Message::user("hi")], &[tool("a")]);
        assert_eq!(rendered[0].role, Role::System);
        assert!(rendered[0].content.contains("\"name\":\"a\""));
        assert!(prompt_messages(&[Message::user("hi")], &[]).len() == 1);
    }

    #[test]
    fn tool_calls_and_results_become_text_the_parser_reads() {
        let call = ToolCall {
            id: "c1".into(),
            name: "get_order".into(),
            arguments: json!({"id": "#W1"}),
        };
        let messages = [
            Message::assistant_tool_calls("Checking.", vec![call.clone()]),
            Message::tool_result(&call, "{\"status\": \"pending\"}"),
        ];
        let rendered = prompt_messages(&messages, &[]);
        assert_eq!(
            rendered[0].content,
            "Checking.\n<tool_call>{\"name\":\"get_order\",\"arguments\":{\"id\":\"#W1\"}}</tool_call>"
        );
        assert!(rendered[0].tool_calls.is_empty());
        assert_eq!(rendered[1].role, Role::User);
        assert_eq!(
            rendered[1].content,
            "<tool_response>\n{\"status\": \"pending\"}\n</tool_response>"
        );
    }
}
