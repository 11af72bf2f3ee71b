//! The chat template a GGUF model ships (`tokenizer.chat_template`), rendered over Kiln messages.
//!
//! The template is the Jinja source the model was fine-tuned with; rendering it (rather than
//! hard-coding ChatML) keeps details such as SmolLM2's default system prompt ("You are a helpful
//! AI assistant named SmolLM, trained by Hugging Face", inserted when the conversation has no
//! system message) exactly as the model expects. Rendering follows Hugging Face `transformers`:
//! `trim_blocks` and `lstrip_blocks` on, `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token` and `raise_exception` available.
//!
//! Partial: Python string methods some templates call (`.strip()`, `.startswith()`) and
//! `strftime_now` are not provided; such templates fail to render with a clear error.

use kiln_protocol::Message;
use minijinja::{Environment, ErrorKind, Value, context};

use super::gguf::GgufFile;

/// The metadata key holding the template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

const TEMPLATE_NAME: &str = "chat";

/// What kind of problem a [`ChatTemplateError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplateErrorKind {
    /// The model file has no `tokenizer.chat_template`.
    Missing,
    /// The template does not parse.
    Syntax,
    /// Rendering failed (the template raised, or used something not provided).
    Render,
}

/// Why a chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ChatTemplateError {
    kind: ChatTemplateErrorKind,
    message: String,
}

impl ChatTemplateError {
    fn new(kind: ChatTemplateErrorKind, message: String) -> Self {
        Self { kind, message }
    }

    pub fn kind(&self) -> ChatTemplateErrorKind {
        self.kind
    }
}

/// A compiled chat template, with the special-token texts templates refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts templates see under those names.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let mut environment = Environment::new();
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        environment.add_function("raise_exception", raise_exception);
        environment
            .add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|error| {
                ChatTemplateError::new(
                    ChatTemplateErrorKind::Syntax,
                    format!("chat template does not parse: {error:#}"),
                )
            })?;
        Ok(ChatTemplate {
            environment,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template of a GGUF model; `bos_token`/`eos_token` are the texts of its BOS and EOS
    /// tokens (empty when it has none).
    pub fn from_gguf(
        file: &GgufFile,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        let source = match file.get(CHAT_TEMPLATE_KEY) {
            None => {
                return Err(ChatTemplateError::new(
                    ChatTemplateErrorKind::Missing,
                    format!(
                        "{}: the model has no `{CHAT_TEMPLATE_KEY}`, so Kiln cannot format chats for it",
                        file.path().display()
                    ),
                ));
            }
            Some(_) => file.get_str(CHAT_TEMPLATE_KEY).map_err(|error| {
                ChatTemplateError::new(ChatTemplateErrorKind::Missing, error.to_string())
            })?,
        };
        Self::new(source, bos_token, eos_token).map_err(|error| {
            ChatTemplateError::new(
                error.kind,
                format!("{}: {}", file.path().display(), error.message),
            )
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The prompt for `messages`; with `add_generation_prompt`, it ends where the assistant's
    /// reply starts (`<|im_start|>assistant\n` for ChatML models).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .expect("the template was added in new()");
        let messages = Value::from_serialize(messages);
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(|error| {
                ChatTemplateError::new(
                    ChatTemplateErrorKind::Render,
                    format!("chat template failed to render: {error:#}"),
                )
            })
    }
}

/// `raise_exception(message)`, which Hugging Face templates call to reject a conversation.
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as shipped in its GGUF file.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn smollm2() -> ChatTemplate {
        ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap()
    }

    #[test]
    fn inserts_the_default_system_prompt_when_none_is_given() {
        let prompt = smollm2()
            .render(&[Message::user("What is 2+2?")], true)
            .unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn keeps_a_given_system_prompt_and_the_whole_conversation() {
        let messages = [
            Message::system("Be brief."),
            Message::user("Hi"),
            Message::assistant("Hello."),
            Message::user("Bye"),
        ];
        let prompt = smollm2().render(&messages, false).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        );
    }

    #[test]
    fn an_empty_conversation_is_only_the_generation_prompt() {
        assert_eq!(
            smollm2().render(&[], true).unwrap(),
            "<|im_start|>assistant\n"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_follow_transformers() {
        // Without trim_blocks and lstrip_blocks this renders "\n  user:a\n\n  assistant:b\n".
        let template = "{% for m in messages %}\n  {% if m.role %}{{ m.role }}:{{ m.content }}{% endif %}\n{% endfor %}";
        let rendered = ChatTemplate::new(template, "", "")
            .unwrap()
            .render(&[Message::user("a"), Message::assistant("b")], false)
            .unwrap();
        assert_eq!(rendered, "user:aassistant:b");
    }

    #[test]
    fn bos_token_and_raise_exception_are_available() {
        let template = "{{ bos_token }}{% if messages|length == 0 %}{{ raise_exception('need a message') }}{% endif %}{{ messages[0].content }}";
        let template = ChatTemplate::new(template, "<s>", "</s>").unwrap();
        assert_eq!(
            template.render(&[Message::user("x")], false).unwrap(),
            "<s>x"
        );
        let error = template.render(&[], false).unwrap_err();
        assert_eq!(error.kind(), ChatTemplateErrorKind::Render);
        assert!(error.to_string().contains("need a message"), "{error}");
    }

    #[test]
    fn a_broken_template_is_a_syntax_error() {
        let error = ChatTemplate::new("{% for m in messages %}", "", "").unwrap_err();
        assert_eq!(error.kind(), ChatTemplateErrorKind::Syntax);
    }
}
