//! A client for AgentGym's WebShop server (`--env agentgym:webshop@URL`): the same episodes as
//! Kiln's own [`webshop`](crate::webshop) environment, on the server's (real) data.
//!
//! The server's API (see `shared/specs/agentgym.md`): `POST /create` → an int id; `POST /reset`
//! `{"env_idx", "session_id"}` (session id = goal index) answers a stale pair, so the observation is
//! read afterwards with `GET /observation`; `POST /step` `{"env_idx", "action"}` →
//! `{"state", "reward", "done", "info"}`; `GET /available_actions` → `{"has_search_bar",
//! "clickables"}`. The id field is `env_idx`. The server never frees environments (it has no
//! `/close`), so one instance creates one server environment and reuses it across resets.
//!
//! HTTP goes through the shared [`HttpClient`]: the reference client's timeout and 503 retries,
//! and `{"error": "..."}` bodies as server-side failures.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Message, Observation, StepResult, TaskSpec, Termination,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpClient;
use crate::webshop::WebShopOptions;
use crate::{EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation, SplitInfo};

/// Goals of WebShop's human-instruction set (12,087): the `train` split runs from 1500 to the end.
pub const HUMAN_GOALS: usize = 12_087;

/// `GET /available_actions`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AvailableActions {
    pub has_search_bar: bool,
    pub clickables: Vec<String>,
}

impl AvailableActions {
    /// Kiln's admissible action strings: `search[...]` when there is a search bar, `click[x]` for
    /// every clickable except the search button.
    pub fn action_strings(&self) -> Vec<String> {
        let mut actions = Vec::new();
        if self.has_search_bar {
            actions.push("search[...]".to_string());
        }
        actions.extend(
            self.clickables
                .iter()
                .filter(|clickable| clickable.as_str() != "search")
                .map(|clickable| format!("click[{clickable}]")),
        );
        actions
    }
}

/// `POST /step`.
#[derive(Debug, Clone, Deserialize)]
struct StepReply {
    state: String,
    reward: f64,
    done: bool,
}

/// Creates [`AgentGymWebShop`] clients of one server.
pub struct AgentGymWebShopFactory {
    id: String,
    client: HttpClient,
}

impl AgentGymWebShopFactory {
    /// `base_url` is the server's root, e.g. `http://127.0.0.1:36001`. Fails with
    /// [`EnvErrorKind::InvalidOptions`] unless it is an `http://` or `https://` URL.
    pub fn new(base_url: &str) -> Result<Self, EnvError> {
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        let host = base_url
            .strip_prefix("http://")
            .or_else(|| base_url.strip_prefix("https://"));
        if host.is_none_or(str::is_empty) {
            return Err(EnvError::new(
                EnvErrorKind::InvalidOptions,
                format!(
                    "agentgym:webshop needs the server's http(s) URL, e.g. agentgym:webshop@http://127.0.0.1:36001; got `{base_url}`"
                ),
            ));
        }
        Ok(Self {
            id: format!("agentgym:webshop@{base_url}"),
            client: HttpClient::new(&base_url)?,
        })
    }

    /// Sets the pause between 503 retries (tests shorten it).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.client = self.client.with_retry_delay(delay);
        self
    }

    /// A fresh client, typed. `options` are those of Kiln's own WebShop (`max_steps`).
    pub fn create_client(&self, options: &Value) -> Result<AgentGymWebShop, EnvError> {
        Ok(AgentGymWebShop {
            http: self.client.clone(),
            options: WebShopOptions::from_value(options)?,
            env_idx: None,
            episode: None,
        })
    }
}

impl EnvironmentFactory for AgentGymWebShopFactory {
    fn id(&self) -> &str {
        &self.id
    }

    fn description(&self) -> &str {
        "WebShop through an AgentGym server (the server's product data and goals)"
    }

    fn splits(&self) -> Vec<SplitInfo> {
        split_ranges()
            .into_iter()
            .map(|(name, range)| SplitInfo {
                name: name.to_string(),
                tasks: range.len(),
            })
            .collect()
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        let Some((_, range)) = split_ranges().into_iter().find(|(name, _)| *name == split) else {
            return Err(EnvError::new(
                EnvErrorKind::UnknownSplit,
                format!(
                    "{} has no split `{split}`; splits: test, eval, train",
                    self.id
                ),
            ));
        };
        Ok(range.map(|index| index.to_string()).collect())
    }

    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.create_client(options)?))
    }
}

/// WebShop's goal-index splits: test 0–499, eval 500–1499, train 1500–12086.
fn split_ranges() -> [(&'static str, std::ops::Range<usize>); 3] {
    [
        ("test", 0..500),
        ("eval", 500..1500),
        ("train", 1500..HUMAN_GOALS),
    ]
}

/// One AgentGym WebShop environment on the server, reset per task.
pub struct AgentGymWebShop {
    http: HttpClient,
    options: WebShopOptions,
    env_idx: Option<i64>,
    episode: Option<Episode>,
}

struct Episode {
    goal: u64,
    steps: u32,
    reward: f64,
    ended: Option<Termination>,
}

impl AgentGymWebShop {
    /// The server-side id, once created.
    pub fn env_idx(&self) -> Option<i64> {
        self.env_idx
    }

    async fn ensure_created(&mut self) -> Result<i64, EnvError> {
        if let Some(id) = self.env_idx {
            return Ok(id);
        }
        let reply = self.http.post("/create", None).await?;
        let id = reply.as_i64().ok_or_else(|| {
            self.http
                .protocol_error("/create", &format!("expected an integer id, got {reply}"))
        })?;
        self.env_idx = Some(id);
        Ok(id)
    }

    async fn available(&self, id: i64) -> Result<AvailableActions, EnvError> {
        let reply = self
            .http
            .get("/available_actions", &[("env_idx", id.to_string())])
            .await?;
        serde_json::from_value(reply.clone()).map_err(|error| {
            self.http.protocol_error(
                "/available_actions",
                &format!("expected {{has_search_bar, clickables}} ({error}), got {reply}"),
            )
        })
    }
}

fn state_error(message: &str) -> EnvError {
    EnvError::new(EnvErrorKind::State, format!("agentgym webshop: {message}"))
}

/// The text of an agent action (as Kiln's own WebShop reads it).
fn action_text(action: &Action) -> String {
    match action {
        Action::Message { text } => text.clone(),
        Action::ToolCall { call } => match &call.arguments {
            Value::String(argument) => format!("{}[{argument}]", call.name),
            Value::Object(map) if map.len() == 1 => match map.values().next() {
                Some(Value::String(argument)) => format!("{}[{argument}]", call.name),
                _ => call.name.clone(),
            },
            _ => call.name.clone(),
        },
    }
}

#[async_trait]
impl Environment for AgentGymWebShop {
    async fn reset(&mut self, task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        let goal: u64 = task.task_id.trim().parse().map_err(|_| {
            EnvError::new(
                EnvErrorKind::UnknownTask,
                format!(
                    "agentgym webshop task ids are goal indices (0, 1, …); got `{}`",
                    task.task_id
                ),
            )
        })?;
        let id = self.ensure_created().await?;
        // The reply's first element is stale: the observation is read afterwards.
        self.http
            .post("/reset", Some(&json!({"env_idx": id, "session_id": goal})))
            .await?;
        let observation = self
            .http
            .get("/observation", &[("env_idx", id.to_string())])
            .await?;
        let observation = observation.as_str().map(String::from).ok_or_else(|| {
            self.http.protocol_error(
                "/observation",
                &format!("expected a string, got {observation}"),
            )
        })?;
        let available = self.available(id).await?;
        self.episode = Some(Episode {
            goal,
            steps: 0,
            reward: 0.0,
            ended: None,
        });
        tracing::debug!(env_idx = id, goal, "agentgym webshop reset");
        Ok(EnvInfo {
            env: "agentgym:webshop".to_string(),
            instructions: crate::webshop::env::INSTRUCTIONS.replace(" (a synthetic catalog)", ""),
            tools: Vec::new(),
            opening: vec![Message::user(observation)],
            admissible_actions: Some(available.action_strings()),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        let id = self
            .env_idx
            .ok_or_else(|| state_error("step called before reset"))?;
        let max_steps = self.options.max_steps;
        let text = action_text(action);
        {
            let episode = self
                .episode
                .as_ref()
                .ok_or_else(|| state_error("step called before reset"))?;
            if let Some(ended) = episode.ended {
                return Err(state_error(&format!(
                    "step called after the episode ended ({ended:?})"
                )));
            }
        }
        let reply = self
            .http
            .post("/step", Some(&json!({"env_idx": id, "action": text})))
            .await?;
        let reply: StepReply = serde_json::from_value(reply.clone()).map_err(|error| {
            self.http.protocol_error(
                "/step",
                &format!("expected {{state, reward, done}} ({error}), got {reply}"),
            )
        })?;
        let available = if reply.done {
            None
        } else {
            Some(self.available(id).await?)
        };
        let episode = self.episode.as_mut().expect("checked above");
        episode.steps += 1;
        if reply.done {
            episode.reward = reply.reward;
        }
        let termination = if reply.done {
            Some(Termination::EnvDone)
        } else if episode.steps >= max_steps {
            Some(Termination::MaxSteps)
        } else {
            None
        };
        episode.ended = termination;
        let mut info = json!({"reward": reply.reward, "steps": episode.steps});
        if let Some(available) = &available {
            info["has_search_bar"] = json!(available.has_search_bar);
            info["clickables"] = json!(available.clickables);
        }
        Ok(StepResult {
            observation: Observation::Text { text: reply.state },
            done: termination.is_some(),
            termination,
            admissible_actions: available.map(|available| available.action_strings()),
            info,
        })
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        let episode = self
            .episode
            .as_ref()
            .ok_or_else(|| state_error("evaluate called before reset"))?;
        let bought = episode.ended == Some(Termination::EnvDone);
        let detail = if bought {
            format!("the server scored the purchase {}", episode.reward)
        } else {
            format!("nothing was bought ({termination:?})")
        };
        let components = BTreeMap::from([(
            "purchase".to_string(),
            ComponentScore {
                value: Some(episode.reward),
                unjudged: false,
                detail: Some(detail),
            },
        )]);
        let success = bought && (episode.reward - 1.0).abs() < 1e-9;
        Ok(Evaluation {
            reward: episode.reward,
            components,
            success,
            success_judged_only: success,
            db_hash: None,
            info: json!({
                "server": self.http.base(),
                "goal": episode.goal,
                "steps": episode.steps,
            }),
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        None
    }
}
