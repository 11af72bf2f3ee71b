//! `agentgym:alfworld@URL`: Kiln's [`Environment`] over AgentGym's ALFWorld server (real
//! ALFWorld games, for users who have them). Routes: `POST /create` → `{"id"}`, `POST /reset`
//! `{"id", "game", "world_type": "Text"}`, `POST /step` `{"id", "action"}`; failures come back as
//! HTTP 200 `{"error": ...}`. Task ids are game indices as strings: the reference server's
//! `game` indexes its training mappings (2,420 games, split `train`) followed by its test
//! mappings (200 games, split `test`).
//!
//! The server has no `/close` route and never frees an environment, so each Kiln environment
//! creates one server environment on its first reset and reuses it for later resets.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Message, Observation, StepResult, TaskSpec, Termination,
};
use serde_json::{Value, json};

use super::{HttpClient, Target};
use crate::alfworld::AlfworldOptions;
use crate::{EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation, SplitInfo};

/// Games in the reference server's training mappings (`mappings_train.json`).
pub const TRAIN_GAMES: u64 = 2420;
/// Games in its test mappings (`mappings_test.json`), indexed after the training games.
pub const TEST_GAMES: u64 = 200;

/// The agent's instructions (the server lists the valid commands every step).
pub const INSTRUCTIONS: &str = "Interact with a household to solve a task. Each turn, reply with exactly one command, \
such as `go to countertop 1`, `take apple 1 from countertop 1`, `open fridge 1` or `look`; the available actions \
are listed after every step. Anything else gets \"Nothing happens.\"";

/// Lists the reference server's splits and creates clients for it. Creating does no I/O.
pub struct AgentGymAlfworldFactory {
    id: String,
    client: HttpClient,
}

impl AgentGymAlfworldFactory {
    /// A factory for the server in `target`; `env_id` is the full `agentgym:alfworld@URL`.
    pub fn new(env_id: &str, target: Target) -> Result<Self, EnvError> {
        Ok(Self {
            id: env_id.to_string(),
            client: HttpClient::new(&target.url)?,
        })
    }

    /// Sets the pause between HTTP 503 retries (1 s by default).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.client = self.client.with_retry_delay(delay);
        self
    }

    pub fn create_client(&self, options: &Value) -> Result<AgentGymAlfworld, EnvError> {
        Ok(AgentGymAlfworld {
            env_id: self.id.clone(),
            client: self.client.clone(),
            options: AlfworldOptions::from_value(options)?,
            server_id: None,
            episode: None,
        })
    }
}

impl EnvironmentFactory for AgentGymAlfworldFactory {
    fn id(&self) -> &str {
        &self.id
    }

    fn description(&self) -> &str {
        "ALFWorld on an AgentGym server (the server's real games; task ids are game indices)"
    }

    fn splits(&self) -> Vec<SplitInfo> {
        vec![
            SplitInfo {
                name: "train".to_string(),
                tasks: TRAIN_GAMES as usize,
            },
            SplitInfo {
                name: "test".to_string(),
                tasks: TEST_GAMES as usize,
            },
        ]
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        let games = match split {
            "train" => 0..TRAIN_GAMES,
            "test" => TRAIN_GAMES..TRAIN_GAMES + TEST_GAMES,
            other => {
                return Err(EnvError::new(
                    EnvErrorKind::UnknownSplit,
                    format!("`{}` has no split `{other}`; splits: train, test", self.id),
                ));
            }
        };
        Ok(games.map(|game| game.to_string()).collect())
    }

    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.create_client(options)?))
    }
}

/// One AgentGym ALFWorld environment, driven over HTTP.
pub struct AgentGymAlfworld {
    env_id: String,
    client: HttpClient,
    options: AlfworldOptions,
    /// The server's id for this environment, created on the first reset.
    server_id: Option<u64>,
    episode: Option<Episode>,
}

struct Episode {
    game: u64,
    task_type: String,
    steps: u32,
    reward: f64,
    ended: Option<Termination>,
}

impl AgentGymAlfworld {
    /// The server's id of this environment, once created.
    pub fn server_id(&self) -> Option<u64> {
        self.server_id
    }

    async fn ensure_created(&mut self) -> Result<u64, EnvError> {
        if let Some(id) = self.server_id {
            return Ok(id);
        }
        let answer = self.client.post("/create", None).await?;
        let id = answer
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.protocol_error("/create", "{\"id\": int}", &answer))?;
        tracing::debug!(
            server = self.client.base(),
            id,
            "agentgym alfworld env created"
        );
        self.server_id = Some(id);
        Ok(id)
    }

    fn protocol_error(&self, route: &str, expected: &str, answer: &Value) -> EnvError {
        let mut shown = answer.to_string();
        if shown.len() > 300 {
            shown = format!("{}…", shown.chars().take(300).collect::<String>());
        }
        EnvError::new(
            EnvErrorKind::Crashed,
            format!(
                "AgentGym server {}{route}: expected {expected}, got {shown}",
                self.client.base()
            ),
        )
    }

    async fn step_text(&mut self, text: &str) -> Result<StepResult, EnvError> {
        self.episode_mut()?;
        let id = self
            .server_id
            .ok_or_else(|| state_error("step called before reset"))?;
        let answer = self
            .client
            .post("/step", Some(&json!({ "id": id, "action": text })))
            .await?;
        let observation = answer
            .get("observation")
            .and_then(Value::as_str)
            .ok_or_else(|| self.protocol_error("/step", "a string `observation`", &answer))?
            .to_string();
        let reward = answer
            .get("reward")
            .and_then(Value::as_f64)
            .ok_or_else(|| self.protocol_error("/step", "a number `reward`", &answer))?;
        let server_done = answer
            .get("done")
            .and_then(Value::as_bool)
            .ok_or_else(|| self.protocol_error("/step", "a boolean `done`", &answer))?;
        let admissible = actions(&answer)
            .ok_or_else(|| self.protocol_error("/step", "a list `available_actions`", &answer))?;
        let max_steps = self.options.max_steps;
        let episode = self.episode_mut()?;
        episode.steps += 1;
        episode.reward = reward;
        let termination = if server_done || reward >= 1.0 {
            Some(Termination::EnvDone)
        } else if episode.steps >= max_steps {
            Some(Termination::MaxSteps)
        } else {
            None
        };
        episode.ended = termination;
        Ok(StepResult {
            observation: Observation::Text { text: observation },
            done: termination.is_some(),
            termination,
            admissible_actions: Some(admissible),
            info: json!({ "won": reward >= 1.0, "reward": reward, "steps": episode.steps }),
        })
    }

    fn episode_mut(&mut self) -> Result<&mut Episode, EnvError> {
        let episode = self
            .episode
            .as_mut()
            .ok_or_else(|| state_error("step called before reset"))?;
        if let Some(ended) = episode.ended {
            return Err(state_error(&format!(
                "step called after the episode ended ({ended:?})"
            )));
        }
        Ok(episode)
    }
}

fn actions(answer: &Value) -> Option<Vec<String>> {
    answer
        .get("available_actions")?
        .as_array()?
        .iter()
        .map(|action| action.as_str().map(str::to_string))
        .collect()
}

fn state_error(message: &str) -> EnvError {
    EnvError::new(EnvErrorKind::State, format!("agentgym alfworld: {message}"))
}

#[async_trait]
impl Environment for AgentGymAlfworld {
    async fn reset(&mut self, spec: &TaskSpec) -> Result<EnvInfo, EnvError> {
        let game: u64 = spec.task_id.parse().map_err(|_| {
            EnvError::new(
                EnvErrorKind::UnknownTask,
                format!(
                    "`{}` has no task `{}`: task ids are game indices (0-{} train, {}-{} test)",
                    self.env_id,
                    spec.task_id,
                    TRAIN_GAMES - 1,
                    TRAIN_GAMES,
                    TRAIN_GAMES + TEST_GAMES - 1
                ),
            )
        })?;
        let id = self.ensure_created().await?;
        let answer = self
            .client
            .post(
                "/reset",
                Some(&json!({ "id": id, "game": game, "world_type": "Text" })),
            )
            .await?;
        let observation = answer
            .get("observation")
            .and_then(Value::as_str)
            .ok_or_else(|| self.protocol_error("/reset", "a string `observation`", &answer))?
            .to_string();
        let admissible = actions(&answer)
            .ok_or_else(|| self.protocol_error("/reset", "a list `available_actions`", &answer))?;
        let task_type = answer
            .get("task_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        tracing::debug!(server = self.client.base(), id, game, %task_type, "agentgym alfworld reset");
        self.episode = Some(Episode {
            game,
            task_type,
            steps: 0,
            reward: 0.0,
            ended: None,
        });
        Ok(EnvInfo {
            env: self.env_id.clone(),
            instructions: INSTRUCTIONS.to_string(),
            tools: Vec::new(),
            opening: vec![Message::user(observation)],
            admissible_actions: Some(admissible),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        match action {
            Action::Message { text } => self.step_text(text).await,
            // The server only takes text commands; a tool call is a wasted step, answered here.
            Action::ToolCall { call } => {
                let max_steps = self.options.max_steps;
                let episode = self.episode_mut()?;
                episode.steps += 1;
                let termination = (episode.steps >= max_steps).then_some(Termination::MaxSteps);
                episode.ended = termination;
                Ok(StepResult {
                    observation: Observation::ToolResult {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        content: "Nothing happens. (alfworld takes text commands, not tool calls)"
                            .to_string(),
                        is_error: true,
                    },
                    done: termination.is_some(),
                    termination,
                    admissible_actions: None,
                    info: json!({ "won": false, "reward": episode.reward, "steps": episode.steps }),
                })
            }
        }
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        let episode = self
            .episode
            .as_ref()
            .ok_or_else(|| state_error("evaluate called before reset"))?;
        let won = episode.reward >= 1.0;
        let reward = if won { 1.0 } else { 0.0 };
        let components = BTreeMap::from([(
            "goal".to_string(),
            ComponentScore {
                value: Some(reward),
                unjudged: false,
                detail: Some(format!(
                    "server reward {} after {} steps",
                    episode.reward, episode.steps
                )),
            },
        )]);
        Ok(Evaluation {
            reward,
            components,
            success: won,
            success_judged_only: won,
            db_hash: None,
            info: json!({
                "note": "ALFWorld game on an AgentGym server",
                "server": self.client.base(),
                "game": episode.game,
                "task_type": episode.task_type,
                "steps": episode.steps,
                "termination": format!("{termination:?}"),
            }),
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        None
    }
}
