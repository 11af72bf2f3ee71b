//! Clients for AgentGym environment servers (see `../shared/specs/agentgym.md`), for users who
//! have the real benchmark data: `--env agentgym:<env>@<url>` runs Kiln's harnesses against a
//! running AgentGym server over its HTTP API.
//!
//! This module holds what all AgentGym clients share: parsing the `agentgym:<env>@<url>` spec and
//! an HTTP client that behaves like AgentGym's reference client (300 s timeout, HTTP 503 retried
//! up to five times) and turns the servers' HTTP-200 `{"error": ...}` bodies into errors. Each
//! server's routes live in their own file.

pub mod alfworld;
pub mod webshop;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::{EnvError, EnvErrorKind, EnvironmentFactory};

/// What every AgentGym environment id starts with.
pub const PREFIX: &str = "agentgym:";

/// The AgentGym environments Kiln has a client for.
pub const KNOWN: [&str; 2] = ["alfworld", "webshop"];

/// The reference client's request timeout.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// The reference client's retries on HTTP 503.
pub const MAX_RETRIES: u32 = 5;

/// A parsed `agentgym:<env>@<url>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `alfworld`.
    pub env: String,
    /// The server's base URL, without a trailing slash: `http://127.0.0.1:36001`.
    pub url: String,
}

/// Whether `env_id` names an AgentGym server (`agentgym:...`).
pub fn is_agentgym(env_id: &str) -> bool {
    env_id.starts_with(PREFIX)
}

/// Parses `agentgym:<env>@<url>`; errors are [`EnvErrorKind::UnknownEnv`] saying the expected form.
pub fn parse_target(env_id: &str) -> Result<Target, EnvError> {
    let usage = || {
        EnvError::new(
            EnvErrorKind::UnknownEnv,
            format!(
                "`{env_id}` is not an AgentGym environment; expected agentgym:<env>@<http url>, \
                 e.g. agentgym:alfworld@http://127.0.0.1:36001 (envs: {})",
                KNOWN.join(", ")
            ),
        )
    };
    let rest = env_id.strip_prefix(PREFIX).ok_or_else(usage)?;
    let (env, url) = rest.split_once('@').ok_or_else(usage)?;
    let url = url.trim_end_matches('/');
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(usage)?;
    if env.is_empty() || host.is_empty() || host.contains(char::is_whitespace) {
        return Err(usage());
    }
    Ok(Target {
        env: env.to_string(),
        url: url.to_string(),
    })
}

/// The factory for `agentgym:<env>@<url>`. Opening does no I/O (the server is first contacted at
/// an episode's reset); unknown envs are [`EnvErrorKind::UnknownEnv`].
pub fn open(env_id: &str) -> Result<Arc<dyn EnvironmentFactory>, EnvError> {
    let target = parse_target(env_id)?;
    match target.env.as_str() {
        "alfworld" => Ok(Arc::new(alfworld::AgentGymAlfworldFactory::new(
            env_id, target,
        )?)),
        "webshop" => Ok(Arc::new(webshop::AgentGymWebShopFactory::new(&target.url)?)),
        other => Err(EnvError::new(
            EnvErrorKind::UnknownEnv,
            format!(
                "no AgentGym client for `{other}` in `{env_id}`; AgentGym envs Kiln drives: {}",
                KNOWN.join(", ")
            ),
        )),
    }
}

/// HTTP to one AgentGym server, as the reference client does it.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    http: reqwest::Client,
    retry_delay: Duration,
}

impl HttpClient {
    /// A client for the server at `base` (no trailing slash), with the reference timeout.
    pub fn new(base: &str) -> Result<Self, EnvError> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|error| {
                EnvError::new(
                    EnvErrorKind::Crashed,
                    format!("cannot build an HTTP client for {base}: {error}"),
                )
            })?;
        Ok(Self {
            base: base.to_string(),
            http,
            retry_delay: Duration::from_secs(1),
        })
    }

    /// Sets the pause between 503 retries (1 s by default; tests shorten it).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The error for an answer that is valid JSON but not what `route` should return.
    pub fn protocol_error(&self, route: &str, message: &str) -> EnvError {
        crashed(format!(
            "AgentGym server {}{route} broke the protocol: {message}",
            self.base
        ))
    }

    /// `POST {base}{route}` with a JSON body (or none), returning the JSON answer.
    pub async fn post(&self, route: &str, body: Option<&Value>) -> Result<Value, EnvError> {
        self.send(route, || {
            let request = self.http.post(format!("{}{route}", self.base));
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        })
        .await
    }

    /// `GET {base}{route}?query`, returning the JSON answer.
    pub async fn get(&self, route: &str, query: &[(&str, String)]) -> Result<Value, EnvError> {
        self.send(route, || {
            self.http.get(format!("{}{route}", self.base)).query(query)
        })
        .await
    }

    async fn send(
        &self,
        route: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, EnvError> {
        let url = format!("{}{route}", self.base);
        let mut retries = 0;
        loop {
            let response = request().send().await.map_err(|error| {
                crashed(format!("AgentGym server {url}: request failed ({error})"))
            })?;
            let status = response.status();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && retries < MAX_RETRIES {
                retries += 1;
                tracing::warn!(%url, retries, "agentgym server unavailable, retrying");
                tokio::time::sleep(self.retry_delay).await;
                continue;
            }
            let text = response.text().await.map_err(|error| {
                crashed(format!(
                    "AgentGym server {url}: cannot read the answer ({error})"
                ))
            })?;
            if !status.is_success() {
                let retried = if retries > 0 {
                    format!(" after {retries} retries")
                } else {
                    String::new()
                };
                return Err(crashed(format!(
                    "AgentGym server {url}: HTTP {status}{retried}: {}",
                    excerpt(&text)
                )));
            }
            let value: Value = serde_json::from_str(&text).map_err(|error| {
                crashed(format!(
                    "AgentGym server {url}: expected a JSON answer ({error}): {}",
                    excerpt(&text)
                ))
            })?;
            return match error_body(&value) {
                Some(message) => Err(crashed(format!(
                    "AgentGym server {url} answered an error: {message}"
                ))),
                None => Ok(value),
            };
        }
    }
}

/// The message of an HTTP-200 `{"error": "..."}` body, which AgentGym servers use for failures.
pub fn error_body(value: &Value) -> Option<String> {
    let error = value.as_object()?.get("error")?;
    Some(match error {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

fn crashed(message: String) -> EnvError {
    EnvError::new(EnvErrorKind::Crashed, message)
}

fn excerpt(text: &str) -> String {
    const LIMIT: usize = 300;
    if text.chars().count() <= LIMIT {
        return text.to_string();
    }
    let cut: String = text.chars().take(LIMIT).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_parse_and_bad_ones_say_the_expected_form() {
        assert_eq!(
            parse_target("agentgym:alfworld@http://127.0.0.1:36001/").unwrap(),
            Target {
                env: "alfworld".to_string(),
                url: "http://127.0.0.1:36001".to_string()
            }
        );
        for bad in [
            "agentgym:alfworld",
            "agentgym:@http://x",
            "agentgym:alfworld@ftp://x",
            "agentgym:alfworld@http://",
            "alfworld@http://x",
        ] {
            let error = parse_target(bad).unwrap_err();
            assert_eq!(error.kind(), EnvErrorKind::UnknownEnv);
            assert!(
                error.to_string().contains("agentgym:<env>@<http url>"),
                "{error}"
            );
        }
        let error = open("agentgym:sciworld@http://127.0.0.1:1").err().unwrap();
        assert_eq!(error.kind(), EnvErrorKind::UnknownEnv);
        assert!(
            error
                .to_string()
                .contains("no AgentGym client for `sciworld`"),
            "{error}"
        );
    }

    #[test]
    fn error_bodies_are_recognised() {
        assert_eq!(
            error_body(&json!({"error": "The id 3 is not valid."})).as_deref(),
            Some("The id 3 is not valid.")
        );
        assert_eq!(error_body(&json!({"id": 3})), None);
        assert_eq!(error_body(&json!(["error"])), None);
    }
}
