//! Which model an episode uses, parsed from a compact command-line form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Sampling parameters passed to a backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    #[serde(default)]
    pub temperature: f32,
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn default_top_p() -> f32 {
    1.0
}
fn default_max_tokens() -> u32 {
    1024
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: default_top_p(),
            max_tokens: default_max_tokens(),
            seed: None,
        }
    }
}

/// A model: backend plus what the backend needs to find it.
///
/// Command-line forms (see [`FromStr`]):
/// - `oracle` — replays the task's gold actions;
/// - `openai:MODEL@URL` — any OpenAI-compatible chat-completions endpoint (`URL` is the base, e.g.
///   `http://127.0.0.1:8000/v1`); the API key comes from `OPENAI_API_KEY` or `KILN_API_KEY`;
/// - `local:NAME` or `local:/path/model.gguf` — embedded candle inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum ModelSpec {
    Oracle,
    #[serde(rename = "openai")]
    OpenAi {
        model: String,
        base_url: String,
        #[serde(default)]
        sampling: SamplingParams,
    },
    Local {
        model: String,
        #[serde(default)]
        sampling: SamplingParams,
    },
}

impl ModelSpec {
    /// Short human-readable name recorded in outcomes (`oracle`, `openai:gpt-4o@http://…`).
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Oracle => f.write_str("oracle"),
            ModelSpec::OpenAi {
                model, base_url, ..
            } => write!(f, "openai:{model}@{base_url}"),
            ModelSpec::Local { model, .. } => write!(f, "local:{model}"),
        }
    }
}

/// A model spec string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid model spec `{input}`: {reason} (expected `oracle`, `openai:MODEL@URL` or `local:NAME|PATH`)"
)]
pub struct ModelSpecError {
    pub input: String,
    pub reason: String,
}

impl FromStr for ModelSpec {
    type Err = ModelSpecError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| ModelSpecError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let input_trimmed = input.trim();
        if input_trimmed == "oracle" {
            return Ok(ModelSpec::Oracle);
        }
        let Some((backend, rest)) = input_trimmed.split_once(':') else {
            return Err(err("missing backend prefix"));
        };
        match backend {
            "openai" => {
                let Some((model, base_url)) = rest.split_once('@') else {
                    return Err(err("openai needs MODEL@URL"));
                };
                if model.is_empty() {
                    return Err(err("empty model name"));
                }
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(err("URL must start with http:// or https://"));
                }
                Ok(ModelSpec::OpenAi {
                    model: model.to_string(),
                    base_url: base_url.trim_end_matches('/').to_string(),
                    sampling: SamplingParams::default(),
                })
            }
            "local" if !rest.is_empty() => Ok(ModelSpec::Local {
                model: rest.to_string(),
                sampling: SamplingParams::default(),
            }),
            "local" => Err(err("empty local model name")),
            other => Err(err(&format!("unknown backend `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_each_backend() {
        for text in [
            "oracle",
            "openai:qwen@http://127.0.0.1:8000/v1",
            "local:smollm2",
        ] {
            let spec: ModelSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
    }

    #[test]
    fn rejects_malformed_specs_with_the_input_named() {
        for bad in [
            "gpt4",
            "openai:qwen",
            "openai:@http://x",
            "openai:m@ftp://x",
            "local:",
            "foo:bar",
        ] {
            let error = bad.parse::<ModelSpec>().unwrap_err();
            assert_eq!(error.input, bad);
            assert!(error.to_string().contains(bad));
        }
    }
}
