//! [`WebShopEnvironment`]: one WebShop-format shopping episode behind the [`Environment`] trait, and
//! [`WebShopFactory`], which shares the synthetic catalog between instances.
//!
//! An episode starts on the search page of its goal (task id = goal index). Every step takes one
//! action string (`Action::Message`; a tool call `search`/`click` with one string argument is
//! accepted as the same action). An invalid action is an ordinary step: the page stays, reward 0,
//! not done, and `info.invalid` says why. `click[buy now]` ends the episode (`EnvDone`) with
//! WebShop's reward; reaching `max_steps` ends it (`MaxSteps`) with reward 0.
//!
//! Each step's `admissible_actions` is the list of valid action strings: `search[...]` on the search
//! page (a placeholder: any keywords may be searched) and `click[x]` for every clickable otherwise.
//! `info` carries WebShop's own view: `has_search_bar`, `clickables` (lowercased, including the
//! unclickable `search` button, as WebShop lists it), the step's `reward` and the page kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Message, Observation, StepResult, TaskSpec, Termination,
};
use serde_json::{Value, json};

use super::goals::split_ranges;
use super::pages::render;
use super::reward::RewardBreakdown;
use super::session::{NEXT, Page, RESULTS_PER_PAGE, Session};
use super::shop::Shop;
use crate::options::{options_object, positive_u32, unknown_option};
use crate::{EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation, SplitInfo};

/// The environment id.
pub const ENV_ID: &str = "webshop";

/// Default step limit: ReAct's WebShop budget (the original baselines allowed 100, HarnessX 20).
pub const DEFAULT_MAX_STEPS: u32 = 15;

/// What evaluations and listings say about the data.
pub const CATALOG_NOTE: &str = "synthetic catalog";

/// Options a WebShop task accepts in `env_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebShopOptions {
    /// Steps (valid or not) before the episode ends unpurchased.
    pub max_steps: u32,
}

impl Default for WebShopOptions {
    fn default() -> Self {
        Self {
            max_steps: DEFAULT_MAX_STEPS,
        }
    }
}

impl WebShopOptions {
    /// Parses `{"max_steps": N}`; `null` or `{}` gives the defaults. Unknown keys and bad values
    /// are [`EnvErrorKind::InvalidOptions`].
    pub fn from_value(options: &Value) -> Result<Self, EnvError> {
        let mut parsed = Self::default();
        let Some(map) = options_object(ENV_ID, options)? else {
            return Ok(parsed);
        };
        for (key, value) in map {
            match key.as_str() {
                "max_steps" => parsed.max_steps = positive_u32(ENV_ID, key, value)?,
                other => return Err(unknown_option(ENV_ID, other, "max_steps")),
            }
        }
        Ok(parsed)
    }
}

fn state_error(message: &str) -> EnvError {
    EnvError::new(EnvErrorKind::State, format!("webshop: {message}"))
}

/// The system-prompt text: what the site is and how to act.
pub const INSTRUCTIONS: &str = "You are shopping on WebShop, an online store (a synthetic catalog). \
Find and buy the product that best matches the instruction. Each turn, reply with exactly one \
action: search[keywords] on the search page, or click[value] where value is a button, a product id \
or an option shown on the page (for example click[Buy Now]). Buy within the step limit.";

/// The expert's actions for goal `goal`: search the target's title, page forward to it, open it,
/// choose the goal's options, buy. `None` if the target is not among the title search's results
/// (the catalog generator's titles are unique, so it always is).
pub fn oracle_actions(shop: &Shop, goal: usize) -> Option<Vec<String>> {
    let goal = shop.goals().get(goal)?;
    let target = shop.product(goal.product);
    let keywords = target.name.to_lowercase();
    let position = shop
        .search(&keywords)
        .iter()
        .position(|&hit| hit == goal.product)?;
    let mut actions = vec![format!("search[{keywords}]")];
    actions.extend((0..position / RESULTS_PER_PAGE).map(|_| format!("click[{NEXT}]")));
    actions.push(format!("click[{}]", target.asin.to_lowercase()));
    actions.extend(
        goal.goal_options
            .iter()
            .map(|(_, value)| format!("click[{value}]")),
    );
    actions.push("click[buy now]".to_string());
    Some(actions)
}

/// Creates [`WebShopEnvironment`]s over the standard synthetic catalog (generated once per
/// process, about a second in debug builds).
#[derive(Default)]
pub struct WebShopFactory {
    shop: std::sync::OnceLock<Arc<Shop>>,
}

impl WebShopFactory {
    /// A factory over the standard catalog ([`Shop::standard`]), generated on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// A factory over a given catalog (tests, other seeds).
    pub fn with_shop(shop: Arc<Shop>) -> Self {
        let factory = Self::default();
        let _ = factory.shop.set(shop);
        factory
    }

    /// The catalog, generated on first use.
    /// The catalog this environment shops in.
    pub fn shop(&self) -> &Arc<Shop> {
        self.shop.get_or_init(Shop::standard)
    }

    /// A fresh environment, typed.
    pub fn create_webshop(&self, options: &Value) -> Result<WebShopEnvironment, EnvError> {
        let options = WebShopOptions::from_value(options)?;
        Ok(WebShopEnvironment::new(self.shop().clone(), options))
    }
}

impl EnvironmentFactory for WebShopFactory {
    fn id(&self) -> &str {
        ENV_ID
    }

    fn description(&self) -> &str {
        "WebShop-format online shopping on a synthetic catalog (1,200 products, 3,000 goals; search[...] / click[...])"
    }

    fn splits(&self) -> Vec<SplitInfo> {
        let goals = self.shop().goals().len();
        split_ranges()
            .into_iter()
            .map(|(name, range)| SplitInfo {
                name: name.to_string(),
                tasks: range.end.min(goals).saturating_sub(range.start),
            })
            .collect()
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        self.shop().split_ids(split)
    }

    /// Search from `train`, gate from `eval`, held-out = `test` (the original's three ranges).
    fn evolution_sources(&self) -> Option<crate::EvolutionSources> {
        Some(crate::EvolutionSources::new("train", "eval", "test"))
    }

    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(self.create_webshop(options)?))
    }
}

/// One WebShop episode at a time: see the module docs.
pub struct WebShopEnvironment {
    shop: Arc<Shop>,
    options: WebShopOptions,
    episode: Option<Episode>,
}

struct Episode {
    session: Session,
    steps: u32,
    invalid: u32,
    ended: Option<Termination>,
}

impl WebShopEnvironment {
    /// An environment over `shop`; call [`Environment::reset`] (or [`WebShopEnvironment::start`]) first.
    pub fn new(shop: Arc<Shop>, options: WebShopOptions) -> Self {
        Self {
            shop,
            options,
            episode: None,
        }
    }

    pub fn shop(&self) -> &Arc<Shop> {
        &self.shop
    }

    /// The current session (page, search hits, selected options), `None` before reset.
    pub fn session(&self) -> Option<&Session> {
        self.episode.as_ref().map(|episode| &episode.session)
    }

    /// The current page as text (`None` before reset).
    pub fn observation(&self) -> Option<String> {
        self.session().map(|session| render(session, &self.shop))
    }

    /// The valid action strings now (empty before reset).
    pub fn available_actions(&self) -> Vec<String> {
        self.session()
            .map(|session| session.available_actions(&self.shop))
            .unwrap_or_default()
    }

    /// Starts goal `goal` (an index) directly; [`Environment::reset`] parses the task id.
    pub fn start(&mut self, goal: usize) -> Result<String, EnvError> {
        if goal >= self.shop.goals().len() {
            return Err(self.shop.goal_index(&goal.to_string()).unwrap_err());
        }
        self.episode = Some(Episode {
            session: Session::new(goal),
            steps: 0,
            invalid: 0,
            ended: None,
        });
        Ok(self.observation().unwrap_or_default())
    }

    /// Applies one action string: WebShop's `step`. Returns the page text, the step's reward and
    /// whether the episode ended, with `info`.
    pub fn step_text(&mut self, action: &str) -> Result<StepResult, EnvError> {
        let shop = self.shop.clone();
        let max_steps = self.options.max_steps;
        let episode = self
            .episode
            .as_mut()
            .ok_or_else(|| state_error("step called before reset"))?;
        if let Some(ended) = episode.ended {
            return Err(state_error(&format!(
                "step called after the episode ended ({ended:?})"
            )));
        }
        episode.steps += 1;
        let outcome = episode.session.apply(&shop, action);
        if outcome.is_err() {
            episode.invalid += 1;
        }
        let purchased = episode.session.purchase.as_ref().map(|p| p.reward);
        let termination = if purchased.is_some() {
            Some(Termination::EnvDone)
        } else if episode.steps >= max_steps {
            Some(Termination::MaxSteps)
        } else {
            None
        };
        episode.ended = termination;
        let session = &episode.session;
        let mut info = json!({
            "page": session.page.kind(),
            "has_search_bar": session.has_search_bar(),
            "clickables": session.clickables(&shop),
            "reward": purchased.unwrap_or(0.0),
            "steps": episode.steps,
        });
        if let Err(invalid) = &outcome {
            info["invalid"] = json!(invalid.describe());
            tracing::debug!(action, reason = %invalid.describe(), "webshop invalid action");
        }
        Ok(StepResult {
            observation: Observation::Text {
                text: render(session, &shop),
            },
            done: termination.is_some(),
            termination,
            admissible_actions: Some(session.available_actions(&shop)),
            info,
        })
    }
}

/// The action string of an agent action: the message text, or `name[argument]` for a
/// `search`/`click` tool call with one string argument (anything else yields a malformed action).
fn action_text(action: &Action) -> String {
    match action {
        Action::Message { text } => text.clone(),
        Action::ToolCall { call } => {
            let argument = match &call.arguments {
                Value::String(text) => Some(text.clone()),
                Value::Object(map) if map.len() == 1 => map
                    .values()
                    .next()
                    .and_then(Value::as_str)
                    .map(String::from),
                _ => None,
            };
            match argument {
                Some(argument) => format!("{}[{argument}]", call.name),
                None => call.name.clone(),
            }
        }
    }
}

/// The evaluation of a purchase (or of no purchase): `R`, success iff `R = 1`, one component per
/// factor.
pub fn evaluation_of(
    purchase: Option<&RewardBreakdown>,
    goal: usize,
    termination: Termination,
    steps: u32,
    invalid: u32,
) -> Evaluation {
    let mut components = BTreeMap::new();
    let component = |value: f64, detail: String| ComponentScore {
        value: Some(value),
        unjudged: false,
        detail: Some(detail),
    };
    let Some(purchase) = purchase else {
        components.insert(
            "purchase".to_string(),
            component(0.0, format!("nothing was bought ({termination:?})")),
        );
        return Evaluation {
            reward: 0.0,
            components,
            success: false,
            success_judged_only: false,
            db_hash: None,
            info: json!({"catalog": CATALOG_NOTE, "goal": goal, "purchased": null, "steps": steps, "invalid_actions": invalid}),
        };
    };
    let r_type = purchase.r_type;
    components.insert(
        "type".to_string(),
        component(
            r_type.r_type,
            format!(
                "query match {}, category match {}, noun overlap {:.3}",
                r_type.query_match, r_type.category_match, r_type.title_score
            ),
        ),
    );
    components.insert(
        "attributes".to_string(),
        component(
            purchase.attribute_matches as f64 / purchase.attributes_asked.max(1) as f64,
            format!(
                "{}/{} goal attributes matched",
                purchase.attribute_matches, purchase.attributes_asked
            ),
        ),
    );
    if purchase.options_asked > 0 {
        components.insert(
            "options".to_string(),
            component(
                purchase.option_matches as f64 / purchase.options_asked as f64,
                format!(
                    "{}/{} goal options matched",
                    purchase.option_matches, purchase.options_asked
                ),
            ),
        );
    }
    components.insert(
        "price".to_string(),
        component(
            if purchase.price_ok { 1.0 } else { 0.0 },
            format!("charged ${:.2}", purchase.price),
        ),
    );
    let success = purchase.success();
    Evaluation {
        reward: purchase.reward,
        components,
        success,
        success_judged_only: success,
        db_hash: None,
        info: json!({
            "catalog": CATALOG_NOTE,
            "goal": goal,
            "reward_formula": "r_type * (attributes + options + price) / (asked + 1)",
            "steps": steps,
            "invalid_actions": invalid,
        }),
    }
}

#[async_trait]
impl Environment for WebShopEnvironment {
    async fn reset(&mut self, task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        if task.env != ENV_ID {
            tracing::warn!(expected = ENV_ID, got = %task.env, "task spec names another environment");
        }
        let goal = self.shop.goal_index(&task.task_id)?;
        let observation = self.start(goal)?;
        tracing::debug!(goal, "webshop reset");
        Ok(EnvInfo {
            env: ENV_ID.to_string(),
            instructions: INSTRUCTIONS.to_string(),
            tools: Vec::new(),
            opening: vec![Message::user(observation)],
            admissible_actions: Some(self.available_actions()),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        self.step_text(&action_text(action))
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        let episode = self
            .episode
            .as_ref()
            .ok_or_else(|| state_error("evaluate called before reset"))?;
        let mut evaluation = evaluation_of(
            episode.session.purchase.as_ref(),
            episode.session.goal,
            termination,
            episode.steps,
            episode.invalid,
        );
        if let (Page::Done { product }, Value::Object(info)) =
            (&episode.session.page, &mut evaluation.info)
        {
            let product = self.shop.product(*product);
            info.insert("purchased".to_string(), json!(product.asin));
            info.insert(
                "options".to_string(),
                json!(
                    episode
                        .session
                        .selected
                        .iter()
                        .cloned()
                        .collect::<BTreeMap<_, _>>()
                ),
            );
        }
        Ok(evaluation)
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        let goal = self.session()?.goal;
        let actions = oracle_actions(&self.shop, goal)?;
        Some(
            actions
                .into_iter()
                .map(|text| Action::Message { text })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_defaults_and_reject_bad_input() {
        assert_eq!(
            WebShopOptions::from_value(&Value::Null).unwrap(),
            WebShopOptions::default()
        );
        assert_eq!(
            WebShopOptions::from_value(&json!({"max_steps": 100}))
                .unwrap()
                .max_steps,
            100
        );
        for bad in [json!({"max_steps": 0}), json!({"speed": 1}), json!([1])] {
            let error = WebShopOptions::from_value(&bad).unwrap_err();
            assert_eq!(error.kind(), EnvErrorKind::InvalidOptions, "{bad}");
        }
    }
}
