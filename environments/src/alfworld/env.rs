//! [`AlfworldEnvironment`]: one generated ALFWorld-format game behind the [`Environment`] trait,
//! and [`AlfworldFactory`], which loads the ALFWorld data once and generates tasks by id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Message, Observation, StepResult, TaskSpec, Termination,
};
use serde_json::{Value, json};

use super::data::AlfworldData;
use super::generate::{DEFAULT_MAX_STEPS, DEFAULT_SEED, GeneratedTask, Generator};
use super::task_type::Split;
use super::world::World;
use crate::options::{invalid_options, options_object, positive_u32, unknown_option};
use crate::{
    EnvContext, EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation, SplitInfo,
};

/// The environment id.
pub const ENV_ID: &str = "alfworld";

/// What every report says about these tasks.
pub const GENERATED_NOTE: &str = "generated ALFWorld-format task";

/// The agent's instructions: the command set (0.3.x wording).
pub const INSTRUCTIONS: &str = "Interact with a household to solve a task. Each turn, reply with exactly one command.\n\
Available commands:\n\
  look: look around your current location\n\
  inventory: check your current inventory\n\
  go to (receptacle): move to a receptacle\n\
  open (receptacle): open a receptacle\n\
  close (receptacle): close a receptacle\n\
  take (object) from (receptacle): take an object from a receptacle\n\
  put (object) in/on (receptacle): place an object in or on a receptacle\n\
  examine (something): examine a receptacle or an object\n\
  use (object): use an object\n\
  heat (object) with (receptacle): heat an object using a receptacle\n\
  clean (object) with (receptacle): clean an object using a receptacle\n\
  cool (object) with (receptacle): cool an object using a receptacle\n\
  slice (object) with (object): slice an object using a sharp object\n\
Anything else gets \"Nothing happens.\"";

/// Options an ALFWorld task accepts in `env_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlfworldOptions {
    /// Steps before the episode ends unsolved (ALFWorld's base config: 50).
    pub max_steps: u32,
}

impl Default for AlfworldOptions {
    fn default() -> Self {
        Self {
            max_steps: DEFAULT_MAX_STEPS,
        }
    }
}

impl AlfworldOptions {
    /// Parses `{"max_steps": N}`; `null` or `{}` gives the defaults. The run-wide `user` option
    /// (which `kiln run` passes to every environment) is accepted as `"scripted"` or `"none"` and
    /// ignored, since ALFWorld has no conversational user; `"model"` is refused, as it asks for a
    /// user model this environment would never call. Unknown keys and wrong types are
    /// [`EnvErrorKind::InvalidOptions`].
    pub fn from_value(options: &Value) -> Result<Self, EnvError> {
        let mut parsed = Self::default();
        let Some(map) = options_object("alfworld", options)? else {
            return Ok(parsed);
        };
        for (key, value) in map {
            match key.as_str() {
                "max_steps" => parsed.max_steps = positive_u32("alfworld", key, value)?,
                "user" => match value.as_str() {
                    Some("scripted" | "none") => {}
                    _ => {
                        return Err(invalid_options(format!(
                            "alfworld has no simulated user: option user must be \"scripted\" or \"none\" (ignored), got {value}"
                        )));
                    }
                },
                other => {
                    return Err(unknown_option(
                        "alfworld",
                        other,
                        "max_steps (and user, ignored)",
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

/// Loads ALFWorld data lazily and hands out environments over generated tasks.
pub struct AlfworldFactory {
    data_dir: PathBuf,
    seed: u64,
    generator: OnceLock<Result<Generator, EnvError>>,
}

impl AlfworldFactory {
    /// A factory over Kiln's published splits ([`DEFAULT_SEED`]).
    pub fn new(ctx: &EnvContext) -> Self {
        Self::with_seed(ctx, DEFAULT_SEED)
    }

    /// A factory whose tasks are generated from `seed` (same seed, same tasks).
    pub fn with_seed(ctx: &EnvContext, seed: u64) -> Self {
        Self {
            data_dir: ctx.data_dir.clone(),
            seed,
            generator: OnceLock::new(),
        }
    }

    /// The task generator, loading the data on first use ([`EnvErrorKind::Data`] naming the
    /// missing or corrupt file).
    pub fn generator(&self) -> Result<&Generator, EnvError> {
        self.generator
            .get_or_init(|| {
                AlfworldData::load(&self.data_dir)
                    .map(|data| Generator::new(Arc::new(data), self.seed))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    pub fn create_alfworld(&self, options: &Value) -> Result<AlfworldEnvironment, EnvError> {
        let options = AlfworldOptions::from_value(options)?;
        Ok(AlfworldEnvironment::new(self.generator()?.clone(), options))
    }
}

impl EnvironmentFactory for AlfworldFactory {
    fn id(&self) -> &str {
        ENV_ID
    }

    fn description(&self) -> &str {
        "ALFWorld: generated ALFWorld-format tasks (household text games, six task types, ALFRED floor plans)"
    }

    fn splits(&self) -> Vec<SplitInfo> {
        if self.generator().is_err() {
            return Vec::new();
        }
        Split::ALL
            .into_iter()
            .map(|split| SplitInfo {
                name: split.name().to_string(),
                tasks: split.size(),
            })
            .collect()
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        self.generator()?;
        let Some(split) = Split::from_name(split) else {
            return Err(EnvError::new(
                EnvErrorKind::UnknownSplit,
                format!("alfworld has no split `{split}`; splits: train, valid_seen, valid_unseen"),
            ));
        };
        Ok(split.task_ids())
    }

    /// Search and gate from `train` (train scenes, drawn disjointly); held-out = `valid_unseen`
    /// (unseen scenes), the split ALFWorld results are reported on.
    fn evolution_sources(&self) -> Option<crate::EvolutionSources> {
        Some(crate::EvolutionSources::new(
            Split::Train.name(),
            Split::Train.name(),
            Split::ValidUnseen.name(),
        ))
    }

    /// The task type (`pick_and_place_simple`, …), read from the id.
    fn task_cluster(&self, task_id: &str) -> String {
        super::task_type::parse_task_id(task_id)
            .map(|(_, task_type, _)| task_type.name().to_string())
            .unwrap_or_default()
    }

    /// `valid_unseen`: ALFWorld's out-of-distribution evaluation split (ReAct's 134 games).
    fn default_split(&self) -> &str {
        Split::ValidUnseen.name()
    }

    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.create_alfworld(options)?))
    }
}

/// One ALFWorld-format episode at a time.
pub struct AlfworldEnvironment {
    generator: Generator,
    options: AlfworldOptions,
    episode: Option<Episode>,
}

struct Episode {
    task: GeneratedTask,
    world: World,
    steps: u32,
    won: bool,
    ended: Option<Termination>,
}

impl AlfworldEnvironment {
    pub fn new(generator: Generator, options: AlfworldOptions) -> Self {
        Self {
            generator,
            options,
            episode: None,
        }
    }

    /// The current game state (after reset).
    pub fn world(&self) -> Option<&World> {
        self.episode.as_ref().map(|episode| &episode.world)
    }

    /// The current task (after reset).
    pub fn task(&self) -> Option<&GeneratedTask> {
        self.episode.as_ref().map(|episode| &episode.task)
    }

    /// Applies one text command, as [`Environment::step`] does for `Action::Message`.
    pub fn step_text(&mut self, text: &str) -> Result<StepResult, EnvError> {
        let max_steps = self.options.max_steps;
        let episode = self.episode_mut()?;
        let feedback = episode.world.step(text);
        Ok(finish_step(
            episode,
            max_steps,
            Observation::Text { text: feedback },
        ))
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

fn state_error(message: &str) -> EnvError {
    EnvError::new(EnvErrorKind::State, format!("alfworld: {message}"))
}

fn finish_step(episode: &mut Episode, max_steps: u32, observation: Observation) -> StepResult {
    episode.steps += 1;
    episode.won = episode.world.goal_met();
    let termination = if episode.won {
        Some(Termination::EnvDone)
    } else if episode.steps >= max_steps {
        Some(Termination::MaxSteps)
    } else {
        None
    };
    episode.ended = termination;
    StepResult {
        observation,
        done: termination.is_some(),
        termination,
        admissible_actions: Some(episode.world.admissible_commands()),
        info: json!({
            "won": episode.won,
            "reward": if episode.won { 1.0 } else { 0.0 },
            "steps": episode.steps,
        }),
    }
}

#[async_trait]
impl Environment for AlfworldEnvironment {
    async fn reset(&mut self, spec: &TaskSpec) -> Result<EnvInfo, EnvError> {
        if spec.env != ENV_ID {
            tracing::warn!(expected = ENV_ID, got = %spec.env, "task spec names another environment");
        }
        let task = self.generator.task(&spec.task_id)?;
        let world = task.world.clone();
        let opening = task.intro();
        let admissible = world.admissible_commands();
        tracing::debug!(task = %task.id, scene = task.scene, goal = %task.goal_text, "alfworld reset");
        self.episode = Some(Episode {
            task,
            world,
            steps: 0,
            won: false,
            ended: None,
        });
        Ok(EnvInfo {
            env: ENV_ID.to_string(),
            instructions: INSTRUCTIONS.to_string(),
            tools: Vec::new(),
            opening: vec![Message::user(opening)],
            admissible_actions: Some(admissible),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        match action {
            Action::Message { text } => self.step_text(text),
            // A text game has no tools: the call is a wasted step with an explicit note.
            Action::ToolCall { call } => {
                let max_steps = self.options.max_steps;
                let episode = self.episode_mut()?;
                let observation = Observation::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: "Nothing happens. (alfworld takes text commands, not tool calls)"
                        .to_string(),
                    is_error: true,
                };
                Ok(finish_step(episode, max_steps, observation))
            }
        }
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        let episode = self
            .episode
            .as_ref()
            .ok_or_else(|| state_error("evaluate called before reset"))?;
        let reward = if episode.won { 1.0 } else { 0.0 };
        let detail = format!(
            "goal `{}` {} after {} steps",
            episode.task.goal_text.trim_end_matches('.'),
            if episode.won { "met" } else { "not met" },
            episode.steps
        );
        let components = BTreeMap::from([(
            "goal".to_string(),
            ComponentScore {
                value: Some(reward),
                unjudged: false,
                detail: Some(detail),
            },
        )]);
        Ok(Evaluation {
            reward,
            components,
            success: episode.won,
            success_judged_only: episode.won,
            db_hash: None,
            info: json!({
                "note": GENERATED_NOTE,
                "task_type": episode.task.task_type.name(),
                "scene": episode.task.scene,
                "goal": episode.task.goal_text,
                "steps": episode.steps,
                "seed": self.generator.seed(),
                "termination": format!("{termination:?}"),
            }),
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        let episode = self.episode.as_ref()?;
        Some(
            episode
                .task
                .expert
                .iter()
                .map(|text| Action::Message { text: text.clone() })
                .collect(),
        )
    }
}
