//! The simulated customer of a τ² episode, behind one small trait ([`SimulatedUser`]).
//!
//! `env_options.user` picks the implementation:
//! - `"scripted"` (default): [`ScriptedUser`], deterministic and offline;
//! - `"model"`: [`ModelUser`], any [`AuxModel`] playing the customer the way τ²'s official LLM
//!   user does (its guidelines, [`SIMULATION_GUIDELINES`], plus the task's instructions);
//! - `"none"`: [`SoloUser`], no customer at all: the agent gets the task as a ticket, its text
//!   messages get a fixed note, and the episode ends on the agent's `###STOP###`.
//!
//! # The scripted user
//!
//! It plays the task from its structured instructions with keyword heuristics, so a capable agent
//! can finish every task without a model on the other side. **Its scores are not comparable to
//! official τ² numbers, which use an LLM user**: it is more cooperative and more literal than
//! an LLM (it can even hand out the ids the gold write actions use), and it never improvises.
//! Reports must say which user produced a score.
//!
//! Per agent message it answers, in this order:
//! 1. **Transfer**: after the agent successfully called `transfer_to_human_agents`, the next reply
//!    is `###TRANSFER###`.
//! 2. **Requested information**: in the agent's questions (sentences ending in `?` or asking to
//!    "provide", "share", "tell", "confirm"…) it detects what is asked (name, zip code, email,
//!    user id, order id, reservation id, address, payment method, items, cabin, bags, insurance,
//!    passengers, flights, trip, reason) and answers from, in order: the `known_info` sentences
//!    that mention it (turned into first person), the slot values of the gold *write* actions
//!    (payment method ids, addresses, item ids, passengers, flights, …), or a refusal taken
//!    from `unknown_info` ("I do not remember my email address"). With none of those it says it
//!    does not know; it never invents a value.
//! 3. **Confirmation**: when asked to confirm or whether to proceed, it says yes if the message
//!    names an action the task wants (a gold write action: "cancel", "exchange", "book", …), no if
//!    it names only actions the task does not want, and otherwise yes exactly while some wanted
//!    write action is still undone.
//! 4. **Decisions**: the sentences of `task_instructions` and the rest of `reason_for_call` are
//!    held back; the unsaid one sharing the most content words (at least two) with the agent's
//!    message is said when relevant.
//! 5. **Progress and stop**: with nothing else to say it brings up the next unsaid part of its
//!    request, or asks the agent to go ahead while a wanted write action is undone; once every
//!    wanted write action has been made (the environment reports the agent's successful tool
//!    calls to it) and it has nothing left to say, or when the agent says goodbye / asks whether
//!    there is anything else, it ends with `###STOP###`. It gives up with `###STOP###` after
//!    [`SCRIPTED_MAX_REPLIES`] replies or after restating an undone request twice.
//!
//! The opening line is the first sentence of `reason_for_call` in first person.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::{Message, Termination};
use serde_json::{Map, Value};

use super::tasks::Tau2Task;
use crate::{AuxModel, EnvError, EnvErrorKind};

/// The agent's greeting that opens every τ² conversation.
pub const GREETING: &str = "Hi! How can I help you today?";
/// The user (or agent) ends the conversation.
pub const STOP: &str = "###STOP###";
/// The user has been transferred to a human agent.
pub const TRANSFER: &str = "###TRANSFER###";
/// The user's scenario gives it nothing to continue with.
pub const OUT_OF_SCOPE: &str = "###OUT-OF-SCOPE###";
/// The scripted user stops after this many replies, so a looping agent cannot keep it forever.
pub const SCRIPTED_MAX_REPLIES: usize = 30;
/// What the agent hears back in solo mode (`user: none`) when it sends text.
pub const SOLO_NOTE: &str = "(No customer is on the line. Continue with tool calls, and send ###STOP### when the task is done.)";

/// τ²'s user-simulation guidelines, written out for a model playing the customer.
pub const SIMULATION_GUIDELINES: &str = "\
# User Simulation Guidelines
You are playing the role of a customer contacting a customer service representative.
Your goal is to simulate a realistic customer interaction while following the scenario instructions below.

## Core Principles
- Write one message at a time, keeping the conversation natural.
- Follow the scenario instructions strictly.
- Never make up or hallucinate information that the scenario does not give you. Anything the scenario does not provide is unknown or unavailable to you.
- Do not repeat the instructions word for word; paraphrase them in natural language.
- Reveal information progressively: wait until the agent asks for a specific piece of information before giving it.

## Task Completion
- Keep the conversation going until the task is complete.
- Do not end the conversation early. Agreeing to an action is not the same as the action being done: wait until the agent confirms it has done it.
- Before ending, check that every request, question and task in your instructions has been addressed, not just some of them.
- When the goal of the instructions is satisfied, write the token '###STOP###' to end the conversation.
- If you are transferred to another agent, write the token '###TRANSFER###'.
- If the scenario does not give you enough information to continue, write the token '###OUT-OF-SCOPE###' to end the conversation.

Remember: the goal is a realistic, natural conversation that sticks to the given instructions and stays in character.";

/// How the user simulator is chosen (`env_options.user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserMode {
    #[default]
    Scripted,
    Model,
    None,
}

impl UserMode {
    /// Parses `scripted`, `model` or `none`.
    pub fn parse(text: &str) -> Result<Self, EnvError> {
        match text {
            "scripted" => Ok(UserMode::Scripted),
            "model" => Ok(UserMode::Model),
            "none" => Ok(UserMode::None),
            other => Err(EnvError::new(
                EnvErrorKind::InvalidOptions,
                format!(
                    "invalid tau2 option user = `{other}`; expected \"scripted\", \"model\" or \"none\""
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UserMode::Scripted => "scripted",
            UserMode::Model => "model",
            UserMode::None => "none",
        }
    }
}

/// How a user message ends the episode, if it does. `###OUT-OF-SCOPE###` wins over the other
/// tokens (the run was aborted, not completed), as in τ².
pub fn classify_user_stop(text: &str) -> Option<Termination> {
    if text.contains(OUT_OF_SCOPE) {
        return Some(Termination::OutOfScope);
    }
    if text.contains(STOP) {
        return Some(Termination::UserStop);
    }
    if text.contains(TRANSFER) {
        return Some(Termination::Transfer);
    }
    None
}

/// The customer side of a τ² conversation.
#[async_trait]
pub trait SimulatedUser: Send + Sync {
    /// Recorded in the evaluation info (`scripted`, `model:<label>`, `none`).
    fn label(&self) -> String;
    /// The first user message, answering the agent's [`GREETING`].
    async fn opening(&mut self) -> Result<String, EnvError>;
    /// The reply to one agent text message.
    async fn reply(&mut self, agent_message: &str) -> Result<String, EnvError>;
    /// Told after every agent tool call. A real customer cannot see tool calls; the scripted
    /// user uses this to know which of the task's write actions are done and when a transfer
    /// happened.
    fn observe_tool_call(&mut self, _name: &str, _succeeded: bool) {}
    /// How a message of this user ends the episode, if it does (τ²'s stop tokens by default).
    fn stop_in(&self, text: &str) -> Option<Termination> {
        classify_user_stop(text)
    }
}

/// Builds the user for `mode`. `is_write_tool` tells the scripted user which gold actions change
/// the DB; `model` is required for [`UserMode::Model`].
pub fn build_user(
    mode: UserMode,
    task: &Tau2Task,
    is_write_tool: &dyn Fn(&str) -> bool,
    model: Option<Arc<dyn AuxModel>>,
) -> Result<Box<dyn SimulatedUser>, EnvError> {
    match mode {
        UserMode::Scripted => Ok(Box::new(ScriptedUser::new(task, is_write_tool))),
        UserMode::None => Ok(Box::new(SoloUser::new(task))),
        UserMode::Model => {
            let model = model.ok_or_else(|| {
                EnvError::new(
                    EnvErrorKind::InvalidOptions,
                    "tau2 option user = \"model\" needs a user model, and none is configured (EnvContext.user_model)",
                )
            })?;
            Ok(Box::new(ModelUser::new(model, task)))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Solo mode
// ---------------------------------------------------------------------------------------------

/// No customer: the task arrives as a ticket and the agent works alone.
pub struct SoloUser {
    ticket: String,
}

impl SoloUser {
    pub fn new(task: &Tau2Task) -> Self {
        let ticket = format!(
            "No customer is on the line: resolve this ticket with your tools, then send {STOP}.\n\n{}",
            task.user_scenario.instructions
        );
        Self { ticket }
    }
}

#[async_trait]
impl SimulatedUser for SoloUser {
    fn label(&self) -> String {
        "none".to_string()
    }
    async fn opening(&mut self) -> Result<String, EnvError> {
        Ok(self.ticket.clone())
    }
    async fn reply(&mut self, _agent_message: &str) -> Result<String, EnvError> {
        Ok(SOLO_NOTE.to_string())
    }
    /// Its ticket and note name `###STOP###` for the agent; only the agent can end a solo episode.
    fn stop_in(&self, _text: &str) -> Option<Termination> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Model-driven user
// ---------------------------------------------------------------------------------------------

/// A model plays the customer: [`SIMULATION_GUIDELINES`] plus the task's instructions as system
/// prompt, and the conversation with roles flipped (the agent's messages are its `user` turns,
/// its own earlier replies its `assistant` turns).
pub struct ModelUser {
    model: Arc<dyn AuxModel>,
    system_prompt: String,
    /// The conversation from the simulated user's side (roles already flipped).
    history: Vec<Message>,
}

impl ModelUser {
    pub fn new(model: Arc<dyn AuxModel>, task: &Tau2Task) -> Self {
        let system_prompt = user_system_prompt(task);
        Self {
            model,
            system_prompt,
            history: Vec::new(),
        }
    }

    /// The messages the model sees for its next reply.
    pub fn prompt(&self) -> Vec<Message> {
        let mut messages = Vec::with_capacity(self.history.len() + 1);
        messages.push(Message::system(self.system_prompt.clone()));
        messages.extend(self.history.iter().cloned());
        messages
    }

    async fn respond_to(&mut self, agent_text: &str) -> Result<String, EnvError> {
        self.history.push(Message::user(agent_text));
        let reply = self.complete_non_empty().await?;
        self.history.push(Message::assistant(reply.clone()));
        Ok(reply)
    }

    /// One retry on an empty answer: τ² rejects empty user messages.
    async fn complete_non_empty(&self) -> Result<String, EnvError> {
        let prompt = self.prompt();
        for _ in 0..2 {
            let text = self.model.complete(&prompt).await.map_err(|error| {
                EnvError::new(
                    EnvErrorKind::AuxModel,
                    format!("user model {} failed: {error}", self.model.label()),
                )
            })?;
            let text = text.trim();
            if !text.is_empty() {
                return Ok(text.to_string());
            }
        }
        Err(EnvError::new(
            EnvErrorKind::AuxModel,
            format!(
                "user model {} answered with an empty message twice",
                self.model.label()
            ),
        ))
    }
}

/// τ²'s user system prompt: the guidelines, then the scenario in `<scenario>` tags.
pub fn user_system_prompt(task: &Tau2Task) -> String {
    let scenario = task.user_scenario.instructions.to_string();
    let persona = task
        .user_scenario
        .persona
        .as_deref()
        .map(|persona| format!("Persona:\n\t{persona}\n"))
        .unwrap_or_default();
    format!(
        "{SIMULATION_GUIDELINES}\n\n<scenario>\n{persona}{}\n</scenario>",
        scenario.trim_end()
    )
}

#[async_trait]
impl SimulatedUser for ModelUser {
    fn label(&self) -> String {
        format!("model:{}", self.model.label())
    }
    async fn opening(&mut self) -> Result<String, EnvError> {
        self.respond_to(GREETING).await
    }
    async fn reply(&mut self, agent_message: &str) -> Result<String, EnvError> {
        self.respond_to(agent_message).await
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted user
// ---------------------------------------------------------------------------------------------

/// What an agent may ask the customer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Name,
    Zip,
    Email,
    UserId,
    OrderId,
    ReservationId,
    Address,
    Payment,
    Items,
    Cabin,
    Baggage,
    Insurance,
    Passengers,
    Flights,
    Trip,
    Reason,
}

/// Keywords that signal each topic in an agent's question, checked on lowercased text.
const TOPIC_KEYWORDS: &[(Topic, &[&str])] = &[
    (Topic::Name, &["name", "who am i speaking"]),
    (Topic::Zip, &["zip", "postal code", "postcode"]),
    (Topic::Email, &["email", "e-mail"]),
    (
        Topic::UserId,
        &["user id", "user_id", "userid", "account id", "customer id"],
    ),
    (
        Topic::OrderId,
        &[
            "order id",
            "order number",
            "order #",
            "which order",
            "order_id",
        ],
    ),
    (
        Topic::ReservationId,
        &[
            "reservation id",
            "reservation number",
            "reservation code",
            "confirmation number",
            "confirmation code",
            "booking reference",
            "booking code",
            "which reservation",
            "reservation_id",
        ],
    ),
    (Topic::Address, &["address"]),
    (
        Topic::Payment,
        &[
            "payment",
            "pay with",
            "pay for",
            "card",
            "paypal",
            "certificate",
            "refund to",
        ],
    ),
    (
        Topic::Items,
        &[
            "which item",
            "which product",
            "what item",
            "item id",
            "options",
            "variant",
        ],
    ),
    (
        Topic::Cabin,
        &["cabin", "economy", "business class", "which class"],
    ),
    (Topic::Baggage, &["bag", "luggage"]),
    (Topic::Insurance, &["insurance"]),
    (
        Topic::Passengers,
        &["passenger", "traveler", "traveller", "date of birth"],
    ),
    (
        Topic::Flights,
        &[
            "which flight",
            "flight number",
            "what date",
            "which date",
            "travel date",
            "departure date",
        ],
    ),
    (
        Topic::Trip,
        &[
            "origin",
            "destination",
            "one way",
            "one-way",
            "round trip",
            "round-trip",
            "flying from",
        ],
    ),
    (Topic::Reason, &["reason"]),
];

/// Phrases that turn a sentence into a request even without a question mark.
const REQUEST_PHRASES: &[&str] = &[
    "please provide",
    "please share",
    "please tell",
    "please let me know",
    "please confirm",
    "could you",
    "can you",
    "may i have",
    "i need your",
    "i'll need",
    "i will need",
];

const CONFIRM_PHRASES: &[&str] = &[
    "confirm",
    "proceed",
    "shall i",
    "should i",
    "would you like me to",
    "do you want me to",
    "go ahead",
    "yes/no",
    "(yes)",
    "is that correct",
    "is this correct",
    "are you sure",
];

const GOODBYE_PHRASES: &[&str] = &[
    "goodbye",
    "good bye",
    "have a great day",
    "have a nice day",
    "have a wonderful day",
    "anything else",
    "take care",
    "thank you for contacting",
    "thanks for contacting",
];

/// Verbs that name a change to the customer's data; used to refuse actions the task does not want.
const WRITE_VERBS: &[&str] = &[
    "cancel",
    "exchange",
    "return",
    "refund",
    "book",
    "modify",
    "change",
    "upgrade",
    "certificate",
    "compensation",
    "transfer",
];

/// Words that name each write tool in an agent's confirmation question.
fn action_keywords(tool: &str) -> &'static [&'static str] {
    match tool {
        "cancel_pending_order" | "cancel_reservation" => &["cancel"],
        "exchange_delivered_order_items" => &["exchange"],
        "return_delivered_order_items" => &["return", "refund"],
        "modify_pending_order_address" | "modify_user_address" => &["address"],
        "modify_pending_order_items" => &["modify", "change", "switch", "replace"],
        "modify_pending_order_payment" => &["payment"],
        "book_reservation" => &["book", "reserv", "purchase"],
        "update_reservation_flights" => &["flight", "change", "modify", "upgrade", "cabin"],
        "update_reservation_baggages" => &["bag", "luggage"],
        "update_reservation_passengers" => &["passenger", "name"],
        "send_certificate" => &["certificate", "compensation", "voucher"],
        "transfer_to_human_agents" => &["transfer", "human"],
        _ => &[],
    }
}

/// One sentence the user can say, with the topics it answers.
#[derive(Debug, Clone)]
struct Fact {
    topics: Vec<Topic>,
    text: String,
}

/// The deterministic, offline customer described in the module docs.
#[derive(Debug, Clone)]
pub struct ScriptedUser {
    opening: String,
    known: Vec<Fact>,
    unknown: Vec<Fact>,
    slots: Vec<Fact>,
    /// Held-back sentences: the rest of `reason_for_call`, then `task_instructions`.
    decisions: Vec<String>,
    said_decisions: HashSet<usize>,
    /// Gold write tools not yet done by the agent (one entry per gold call).
    pending_writes: Vec<String>,
    wanted_writes: Vec<String>,
    transferred: bool,
    replies: usize,
    restatements: usize,
}

impl ScriptedUser {
    pub fn new(task: &Tau2Task, is_write_tool: &dyn Fn(&str) -> bool) -> Self {
        let instructions = &task.user_scenario.instructions;
        let mut reason = sentences(&instructions.reason_for_call);
        let opening = if reason.is_empty() {
            "Hi, I need some help.".to_string()
        } else {
            reason.remove(0)
        };
        let mut decisions: Vec<String> = reason
            .iter()
            .map(|sentence| to_first_person(sentence))
            .collect();
        if let Some(task_instructions) = &instructions.task_instructions {
            decisions.extend(
                sentences(task_instructions)
                    .iter()
                    .map(|sentence| to_first_person(sentence)),
            );
        }
        decisions.retain(|sentence| sentence.chars().any(char::is_alphanumeric));

        let wanted_writes: Vec<String> = task
            .gold_actions()
            .iter()
            .filter(|action| is_write_tool(&action.name))
            .map(|action| action.name.clone())
            .collect();
        let slots = task
            .gold_actions()
            .iter()
            .filter(|action| is_write_tool(&action.name))
            .flat_map(|action| slot_facts(&action.arguments))
            .collect();

        Self {
            opening: to_first_person(&opening),
            known: facts_from(instructions.known_info.as_deref()),
            unknown: facts_from(instructions.unknown_info.as_deref()),
            slots,
            decisions,
            said_decisions: HashSet::new(),
            pending_writes: wanted_writes.clone(),
            wanted_writes,
            transferred: false,
            replies: 0,
            restatements: 0,
        }
    }

    /// The reply to one agent message (the [`SimulatedUser::reply`] logic, synchronous).
    pub fn respond(&mut self, agent_message: &str) -> String {
        self.replies += 1;
        if self.transferred {
            return TRANSFER.to_string();
        }
        if self.replies > SCRIPTED_MAX_REPLIES {
            return format!("I have to go now, thank you. {STOP}");
        }
        let lower = agent_message.to_lowercase();
        let mut parts = Vec::new();
        let asked = requested_topics(agent_message);
        if !asked.is_empty() {
            parts.push(self.answer(&asked));
        }
        if is_confirmation_request(&lower) {
            parts.push(self.confirmation(&lower).to_string());
        }
        if let Some(decision) = self.relevant_decision(&lower) {
            parts.push(decision);
        }
        if !parts.is_empty() {
            return parts.join(" ");
        }
        self.progress(&lower)
    }

    fn answer(&self, asked: &[Topic]) -> String {
        let mut answers: Vec<String> = Vec::new();
        let mut push = |text: String| {
            if !answers.contains(&text) {
                answers.push(text);
            }
        };
        for topic in asked {
            let known: Vec<&Fact> = self
                .known
                .iter()
                .chain(&self.slots)
                .filter(|fact| fact.topics.contains(topic))
                .collect();
            if !known.is_empty() {
                known.into_iter().for_each(|fact| push(fact.text.clone()));
                continue;
            }
            match self.unknown.iter().find(|fact| fact.topics.contains(topic)) {
                Some(fact) => push(format!("Sorry, {}", lowercase_first(&fact.text))),
                None => push(format!(
                    "Sorry, I don't have my {} at hand.",
                    topic_label(*topic)
                )),
            }
        }
        answers.join(" ")
    }

    fn confirmation(&self, lower: &str) -> &'static str {
        let names_wanted = self.wanted_writes.iter().any(|tool| {
            action_keywords(tool)
                .iter()
                .any(|keyword| lower.contains(keyword))
        });
        if names_wanted {
            return "Yes, please go ahead.";
        }
        if WRITE_VERBS.iter().any(|verb| lower.contains(verb)) {
            return "No, I don't want that.";
        }
        if self.pending_writes.is_empty() {
            "No, thank you."
        } else {
            "Yes, please go ahead."
        }
    }

    fn relevant_decision(&mut self, lower: &str) -> Option<String> {
        let message_words = content_words(lower);
        let (index, score) = self
            .decisions
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.said_decisions.contains(index))
            .map(|(index, sentence)| {
                (
                    index,
                    content_words(&sentence.to_lowercase())
                        .intersection(&message_words)
                        .count(),
                )
            })
            .max_by_key(|&(index, score)| (score, std::cmp::Reverse(index)))?;
        if score < 2 {
            return None;
        }
        self.said_decisions.insert(index);
        Some(self.decisions[index].clone())
    }

    fn next_unsaid_decision(&mut self) -> Option<String> {
        let index = (0..self.decisions.len()).find(|index| !self.said_decisions.contains(index))?;
        self.said_decisions.insert(index);
        Some(self.decisions[index].clone())
    }

    fn progress(&mut self, lower: &str) -> String {
        let says_goodbye = GOODBYE_PHRASES.iter().any(|phrase| lower.contains(phrase));
        if self.pending_writes.is_empty() {
            if says_goodbye {
                return format!("No, that's all. Thank you for your help! {STOP}");
            }
            if let Some(decision) = self.next_unsaid_decision() {
                return decision;
            }
            return format!("Great, that's everything I needed. Thank you! {STOP}");
        }
        if !says_goodbye && let Some(decision) = self.next_unsaid_decision() {
            return decision;
        }
        self.restatements += 1;
        if self.restatements > 2 {
            return format!("It seems this can't be done today. Thank you anyway. {STOP}");
        }
        format!(
            "Actually, I still need help with my request: {}",
            self.opening
        )
    }
}

#[async_trait]
impl SimulatedUser for ScriptedUser {
    fn label(&self) -> String {
        "scripted".to_string()
    }
    async fn opening(&mut self) -> Result<String, EnvError> {
        Ok(format!("Hi! {}", self.opening))
    }
    async fn reply(&mut self, agent_message: &str) -> Result<String, EnvError> {
        Ok(self.respond(agent_message))
    }
    fn observe_tool_call(&mut self, name: &str, succeeded: bool) {
        if !succeeded {
            return;
        }
        if name == "transfer_to_human_agents" {
            self.transferred = true;
        }
        if let Some(position) = self
            .pending_writes
            .iter()
            .position(|pending| pending == name)
        {
            self.pending_writes.remove(position);
        }
    }
}

/// The topics an agent message asks about: only its questions and explicit requests count, so a
/// statement like "your order #W1 is cancelled" asks for nothing.
pub fn requested_topics(agent_message: &str) -> Vec<Topic> {
    let mut topics = Vec::new();
    for sentence in sentences(agent_message) {
        let lower = sentence.to_lowercase();
        let is_request = sentence.trim_end().ends_with('?')
            || REQUEST_PHRASES.iter().any(|phrase| lower.contains(phrase));
        if !is_request {
            continue;
        }
        for topic in topics_in(&lower) {
            add_topic(&mut topics, topic);
        }
    }
    topics
}

fn is_confirmation_request(lower: &str) -> bool {
    lower.contains('?') && CONFIRM_PHRASES.iter().any(|phrase| lower.contains(phrase))
}

fn topics_in(lower: &str) -> Vec<Topic> {
    // "email address" asks for an email, not a postal address.
    let lower = lower
        .replace("e-mail address", "email")
        .replace("email address", "email");
    TOPIC_KEYWORDS
        .iter()
        .filter(|(_, keywords)| keywords.iter().any(|keyword| lower.contains(keyword)))
        .map(|(topic, _)| *topic)
        .collect()
}

fn topic_label(topic: Topic) -> &'static str {
    match topic {
        Topic::Name => "name",
        Topic::Zip => "zip code",
        Topic::Email => "email address",
        Topic::UserId => "user id",
        Topic::OrderId => "order id",
        Topic::ReservationId => "reservation number",
        Topic::Address => "address",
        Topic::Payment => "payment details",
        Topic::Items => "item details",
        Topic::Cabin => "cabin preference",
        Topic::Baggage => "baggage details",
        Topic::Insurance => "insurance preference",
        Topic::Passengers => "passenger details",
        Topic::Flights => "flight details",
        Topic::Trip => "trip details",
        Topic::Reason => "reason",
    }
}

/// `known_info` / `unknown_info` sentences in first person, tagged with what they answer.
fn facts_from(text: Option<&str>) -> Vec<Fact> {
    let Some(text) = text else {
        return Vec::new();
    };
    sentences(text)
        .into_iter()
        .map(|sentence| {
            let text = to_first_person(&sentence);
            Fact {
                topics: fact_topics(&text),
                text,
            }
        })
        .filter(|fact| !fact.topics.is_empty())
        .collect()
}

/// Topics a known/unknown-info sentence can answer: the question keywords plus a few shapes
/// (`I am <Name>`, an email, an id with underscores and digits, a 5-digit zip, `#W…` order ids).
fn fact_topics(sentence: &str) -> Vec<Topic> {
    let lower = sentence.to_lowercase();
    let mut topics = topics_in(&lower);
    if lower.starts_with("i am ") || lower.contains("my name") {
        add_topic(&mut topics, Topic::Name);
    }
    for word in lower.split(|c: char| c.is_whitespace() || c == ',') {
        let word = word.trim_matches(|c: char| matches!(c, '.' | ';' | ':' | '(' | ')'));
        if word.contains('@') {
            add_topic(&mut topics, Topic::Email);
        } else if word.contains('_') && word.chars().any(|c| c.is_ascii_digit()) {
            add_topic(&mut topics, Topic::UserId);
        } else if word.len() == 5 && word.chars().all(|c| c.is_ascii_digit()) {
            add_topic(&mut topics, Topic::Zip);
        } else if word.starts_with("#w") {
            add_topic(&mut topics, Topic::OrderId);
        }
    }
    if lower.contains("reservation") {
        add_topic(&mut topics, Topic::ReservationId);
    }
    topics
}

fn add_topic(topics: &mut Vec<Topic>, topic: Topic) {
    if !topics.contains(&topic) {
        topics.push(topic);
    }
}

/// What the customer says about the arguments of one gold write action.
fn slot_facts(arguments: &Map<String, Value>) -> Vec<Fact> {
    let text = |key: &str| arguments.get(key).map(value_text);
    let mut facts = Vec::new();
    let mut add = |topic: Topic, text: String| {
        facts.push(Fact {
            topics: vec![topic],
            text,
        })
    };
    if let Some(order) = text("order_id") {
        add(Topic::OrderId, format!("It's about order {order}."));
    }
    if let Some(reservation) = text("reservation_id") {
        add(
            Topic::ReservationId,
            format!("It's about reservation {reservation}."),
        );
    }
    if let Some(user) = text("user_id") {
        add(Topic::UserId, format!("My user id is {user}."));
    }
    if let Some(payment) = text("payment_method_id").or_else(|| text("payment_id")) {
        add(
            Topic::Payment,
            format!("Please use my payment method {payment}."),
        );
    }
    if let Some(Value::Array(payments)) = arguments.get("payment_methods") {
        let listed: Vec<String> = payments
            .iter()
            .map(|payment| {
                format!(
                    "{} for {}",
                    value_text(&payment["payment_id"]),
                    value_text(&payment["amount"])
                )
            })
            .collect();
        add(
            Topic::Payment,
            format!("I'd like to pay with {}.", listed.join(" and ")),
        );
    }
    if let Some(address) = address_text(arguments) {
        add(Topic::Address, format!("The address is {address}."));
    }
    if let Some(items) = text("item_ids") {
        match text("new_item_ids") {
            Some(new_items) => add(
                Topic::Items,
                format!("The items are {items}, and I want {new_items} instead."),
            ),
            None => add(Topic::Items, format!("The items are {items}.")),
        }
    }
    if let Some(reason) = text("reason") {
        add(Topic::Reason, format!("The reason is: {reason}."));
    }
    if let Some(cabin) = text("cabin") {
        add(Topic::Cabin, format!("I'd like {cabin} cabin."));
    }
    if let Some(total) = text("total_baggages") {
        let nonfree = text("nonfree_baggages").unwrap_or_else(|| "0".to_string());
        add(
            Topic::Baggage,
            format!("I have {total} checked bags in total ({nonfree} of them not free)."),
        );
    }
    if let Some(insurance) = text("insurance") {
        let answer = if insurance == "yes" {
            "Yes, I want travel insurance."
        } else {
            "No, I don't want travel insurance."
        };
        add(Topic::Insurance, answer.to_string());
    }
    if let Some(Value::Array(passengers)) = arguments.get("passengers") {
        let listed: Vec<String> = passengers
            .iter()
            .map(|passenger| {
                format!(
                    "{} {} (born {})",
                    value_text(&passenger["first_name"]),
                    value_text(&passenger["last_name"]),
                    value_text(&passenger["dob"])
                )
            })
            .collect();
        add(
            Topic::Passengers,
            format!("The passengers are {}.", listed.join(", ")),
        );
    }
    if let Some(Value::Array(flights)) = arguments.get("flights") {
        let listed: Vec<String> = flights
            .iter()
            .map(|flight| {
                format!(
                    "{} on {}",
                    value_text(&flight["flight_number"]),
                    value_text(&flight["date"])
                )
            })
            .collect();
        add(
            Topic::Flights,
            format!("The flights are {}.", listed.join(", ")),
        );
    }
    if let (Some(origin), Some(destination)) = (text("origin"), text("destination")) {
        let kind = text("flight_type")
            .map(|kind| kind.replace('_', " "))
            .unwrap_or_else(|| "one way".to_string());
        add(
            Topic::Trip,
            format!("I'm flying from {origin} to {destination}, {kind}."),
        );
    }
    facts
}

fn address_text(arguments: &Map<String, Value>) -> Option<String> {
    let address1 = arguments.get("address1")?;
    let parts: Vec<String> = ["address2", "city", "state", "zip", "country"]
        .iter()
        .filter_map(|key| arguments.get(*key))
        .map(value_text)
        .filter(|part| !part.is_empty())
        .collect();
    Some(
        std::iter::once(value_text(address1))
            .chain(parts)
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Plain text of a JSON value: strings unquoted, arrays comma-separated.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Splits text into sentences at `.`, `!` or `?` followed by whitespace, and at line breaks.
/// Decimals (`4.5`) and ids (`#W123.`) survive because a split needs whitespace after the mark.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut current = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            current.push(c);
            let ends = matches!(c, '.' | '!' | '?')
                && chars.peek().is_none_or(|next| next.is_whitespace());
            if ends {
                push_sentence(&mut out, &current);
                current.clear();
            }
        }
        push_sentence(&mut out, &current);
    }
    out
}

fn push_sentence(out: &mut Vec<String>, sentence: &str) {
    let sentence = sentence.trim();
    if !sentence.is_empty() {
        out.push(sentence.to_string());
    }
}

/// Words after which `you` is an object (`tells you` → `tells me`).
const OBJECT_CONTEXT: &[&str] = &[
    "to",
    "for",
    "with",
    "tell",
    "tells",
    "told",
    "give",
    "gives",
    "gave",
    "ask",
    "asks",
    "asked",
    "offer",
    "offers",
    "offered",
    "send",
    "sends",
    "sent",
    "help",
    "helps",
    "at",
    "about",
    "let",
    "than",
    "from",
    "of",
    "by",
    "call",
    "contact",
    "inform",
    "informs",
    "charge",
    "charges",
    "refund",
    "refunds",
    "provide",
    "provides",
    "show",
    "shows",
    "remind",
    "reminds",
    "transfer",
    "transfers",
    "allow",
    "allows",
    "pay",
    "pays",
    "get",
    "gets",
    "assist",
];

/// Nouns before which a misspelt `you` means `your` (`You name is …`).
const POSSESSED: &[&str] = &[
    "name",
    "reservation",
    "user",
    "email",
    "zip",
    "order",
    "address",
];

/// Turns the scenario's second person into the customer's first person: `You are` → `I am`,
/// `your` → `my`, `tells you` → `tells me`. A heuristic good enough for τ²'s short sentences.
pub fn to_first_person(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut index = 0;
    while index < words.len() {
        let word = words[index];
        let (core, trailing) = split_trailing_punctuation(word);
        let lower = core.to_lowercase();
        let next = words
            .get(index + 1)
            .map(|next| split_trailing_punctuation(next).0.to_lowercase());
        let previous = out
            .last()
            .map(|previous| split_trailing_punctuation(previous).0.to_lowercase());
        let capital = core.chars().next().is_some_and(char::is_uppercase);
        let (replacement, consumed_next) = match lower.as_str() {
            "you" if trailing.is_empty() && next.as_deref() == Some("are") => {
                (Some("I am".to_string()), true)
            }
            "you" if trailing.is_empty() && next.as_deref() == Some("were") => {
                (Some("I was".to_string()), true)
            }
            "you"
                if next
                    .as_deref()
                    .is_some_and(|next| POSSESSED.contains(&next)) =>
            {
                (Some("my".to_string()), false)
            }
            "you"
                if previous
                    .as_deref()
                    .is_some_and(|previous| OBJECT_CONTEXT.contains(&previous)) =>
            {
                (Some("me".to_string()), false)
            }
            "you" => (Some("I".to_string()), false),
            "your" => (Some("my".to_string()), false),
            "yours" => (Some("mine".to_string()), false),
            "yourself" => (Some("myself".to_string()), false),
            "you're" | "you’re" => (Some("I'm".to_string()), false),
            "you've" | "you’ve" => (Some("I've".to_string()), false),
            "you'd" | "you’d" => (Some("I'd".to_string()), false),
            "you'll" | "you’ll" => (Some("I'll".to_string()), false),
            _ => (None, false),
        };
        match replacement {
            Some(replacement) => {
                let replacement = if capital {
                    capitalize(&replacement)
                } else {
                    replacement
                };
                if consumed_next {
                    let (_, next_trailing) = split_trailing_punctuation(words[index + 1]);
                    out.push(format!("{replacement}{next_trailing}"));
                    index += 2;
                    continue;
                }
                out.push(format!("{replacement}{trailing}"));
            }
            None => out.push(word.to_string()),
        }
        index += 1;
    }
    out.join(" ")
}

fn split_trailing_punctuation(word: &str) -> (&str, &str) {
    let core = word.trim_end_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '’');
    let core = core.trim_end_matches(['\'', '’']);
    (core, &word[core.len()..])
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn lowercase_first(text: &str) -> String {
    // "I" stays capitalised; anything else starts lowercase after "Sorry, ".
    if text.starts_with("I ") || text.starts_with("I'") {
        return text.to_string();
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

const STOPWORDS: &[&str] = &[
    "that", "this", "with", "have", "from", "your", "will", "would", "what", "when", "which",
    "there", "their", "they", "them", "then", "than", "been", "were", "want", "like", "just",
    "also", "only", "some", "more", "very", "into", "about", "could", "should", "agent", "please",
    "know", "tell", "make", "sure", "does", "dont", "don't", "it's", "need", "help", "today",
    "thank", "thanks",
];

fn content_words(lower: &str) -> HashSet<String> {
    lower
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|word| word.len() >= 4 && !STOPWORDS.contains(word))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tau2::tasks::{
        EvaluationCriteria, GoldAction, RewardType, UserInstructions, UserScenario,
    };
    use std::sync::Mutex;

    fn task(
        reason: &str,
        known: &str,
        unknown: Option<&str>,
        instructions: &str,
        actions: Vec<GoldAction>,
    ) -> Tau2Task {
        Tau2Task {
            id: "t".to_string(),
            description: None,
            user_scenario: UserScenario {
                persona: None,
                instructions: UserInstructions {
                    domain: "retail".to_string(),
                    reason_for_call: reason.to_string(),
                    known_info: Some(known.to_string()),
                    unknown_info: unknown.map(str::to_string),
                    task_instructions: Some(instructions.to_string()),
                },
            },
            initial_state: None,
            evaluation_criteria: Some(EvaluationCriteria {
                actions: Some(actions),
                env_assertions: None,
                communicate_info: None,
                nl_assertions: None,
                reward_basis: vec![RewardType::Db],
            }),
        }
    }

    fn action(name: &str, arguments: Value) -> GoldAction {
        GoldAction {
            action_id: format!("{name}_0"),
            name: name.to_string(),
            arguments: arguments.as_object().unwrap().clone(),
            requestor: None,
            info: None,
            compare_args: None,
        }
    }

    fn is_write(name: &str) -> bool {
        name.starts_with("cancel") || name.starts_with("exchange") || name.starts_with("modify")
    }

    fn exchange_task() -> Tau2Task {
        task(
            "You received your order #W2378156 and wish to exchange the keyboard. If there is no clicky keyboard, you'd go for no backlight.",
            "You are Yusuf Rossi in zip code 19122.",
            Some("You do not remember your email address."),
            "If the agent offers a refund to a gift card, refuse it and insist on the credit card.",
            vec![
                action(
                    "find_user_id_by_name_zip",
                    serde_json::json!({"first_name": "Yusuf", "last_name": "Rossi", "zip": "19122"}),
                ),
                action(
                    "exchange_delivered_order_items",
                    serde_json::json!({"order_id": "#W2378156", "item_ids": ["1151293680"], "new_item_ids": ["7706410293"], "payment_method_id": "credit_card_9513926"}),
                ),
            ],
        )
    }

    #[test]
    fn first_person_conversion_handles_the_scenario_phrasings() {
        assert_eq!(to_first_person("You are Emma Kim."), "I am Emma Kim.");
        assert_eq!(
            to_first_person("Your user id is emma_kim_9957."),
            "My user id is emma_kim_9957."
        );
        assert_eq!(
            to_first_person("You name is Ivan Khan and your zip code is 28243."),
            "My name is Ivan Khan and my zip code is 28243."
        );
        assert_eq!(
            to_first_person(
                "If Agent tells you that cancellation is not possible, mention that you were told so."
            ),
            "If Agent tells me that cancellation is not possible, mention that I was told so."
        );
        assert_eq!(
            to_first_person("You don't know your email, you'd rather wait."),
            "I don't know my email, I'd rather wait."
        );
    }

    #[test]
    fn sentences_split_on_marks_followed_by_space_only() {
        assert_eq!(
            sentences("Order #W1 costs 4.5 dollars. Really?\nYes!  ok"),
            vec!["Order #W1 costs 4.5 dollars.", "Really?", "Yes!", "ok"]
        );
    }

    #[test]
    fn scripted_user_releases_known_info_only_when_asked_and_refuses_unknown_info() {
        let mut user = ScriptedUser::new(&exchange_task(), &is_write);
        assert_eq!(
            user.opening,
            "I received my order #W2378156 and wish to exchange the keyboard."
        );

        let statement = user.respond("I can help you with the exchange.");
        assert!(
            !statement.contains("19122"),
            "nothing was asked, nothing released: {statement}"
        );

        let reply = user.respond("Could you please provide your name and zip code?");
        assert!(
            reply.contains("Yusuf Rossi") && reply.contains("19122"),
            "{reply}"
        );

        let reply = user.respond("What is your email address?");
        assert!(
            reply.starts_with("Sorry,") && reply.contains("do not remember my email"),
            "{reply}"
        );

        let reply = user.respond("Which payment method should the price difference go to?");
        assert!(
            reply.contains("credit_card_9513926"),
            "gold write slot released: {reply}"
        );

        let reply = user.respond("What is your date of birth?");
        assert!(
            reply.starts_with("Sorry, I don't have"),
            "never invents a value: {reply}"
        );
    }

    #[test]
    fn scripted_user_confirms_wanted_actions_and_refuses_others() {
        let mut user = ScriptedUser::new(&exchange_task(), &is_write);
        let yes = user.respond("Shall I proceed with the exchange of the keyboard?");
        assert!(yes.contains("Yes"), "{yes}");
        let no = user.respond("Would you like me to cancel the order instead?");
        assert!(no.contains("No"), "{no}");
    }

    #[test]
    fn scripted_user_says_decisions_when_relevant() {
        let mut user = ScriptedUser::new(&exchange_task(), &is_write);
        let reply = user.respond("We can refund the difference to a gift card.");
        assert!(
            reply.contains("refuse it and insist on the credit card"),
            "{reply}"
        );
        let reply = user.respond("There is no clicky keyboard in stock with backlight.");
        assert!(reply.contains("I'd go for no backlight"), "{reply}");
    }

    #[test]
    fn scripted_user_stops_only_when_its_writes_are_done_and_transfers_after_a_transfer() {
        let mut user = ScriptedUser::new(&exchange_task(), &is_write);
        let reply = user.respond("Is there anything else I can help you with?");
        assert!(
            !reply.contains(STOP),
            "the exchange is not done yet: {reply}"
        );
        assert!(reply.contains("still need help"), "{reply}");

        user.observe_tool_call("exchange_delivered_order_items", false);
        assert!(
            !user.respond("Anything else?").contains(STOP),
            "a failed call does not count"
        );
        user.observe_tool_call("exchange_delivered_order_items", true);
        let reply =
            user.respond("Your exchange is done. Is there anything else I can help you with?");
        assert!(reply.ends_with(STOP), "{reply}");
        assert_eq!(classify_user_stop(&reply), Some(Termination::UserStop));

        let mut user = ScriptedUser::new(&exchange_task(), &is_write);
        user.observe_tool_call("transfer_to_human_agents", true);
        let reply = user.respond("You are being transferred to a human agent.");
        assert_eq!(reply, TRANSFER);
        assert_eq!(classify_user_stop(&reply), Some(Termination::Transfer));
    }

    #[test]
    fn scripted_user_gives_up_after_its_reply_budget() {
        let mut user = ScriptedUser::new(&exchange_task(), &is_write);
        let last = (0..=SCRIPTED_MAX_REPLIES)
            .map(|_| user.respond("Hmm."))
            .last()
            .unwrap();
        assert!(last.ends_with(STOP), "{last}");
    }

    #[test]
    fn stop_tokens_are_classified_out_of_scope_first() {
        assert_eq!(
            classify_user_stop("bye ###STOP### ###OUT-OF-SCOPE###"),
            Some(Termination::OutOfScope)
        );
        assert_eq!(
            classify_user_stop("###TRANSFER###"),
            Some(Termination::Transfer)
        );
        assert_eq!(classify_user_stop("thanks"), None);
    }

    /// Records the prompts it receives and answers from a script.
    struct FakeModel {
        answers: Mutex<Vec<String>>,
        prompts: Mutex<Vec<Vec<Message>>>,
    }

    #[async_trait]
    impl AuxModel for FakeModel {
        fn label(&self) -> String {
            "fake".to_string()
        }
        async fn complete(&self, messages: &[Message]) -> Result<String, String> {
            self.prompts.lock().unwrap().push(messages.to_vec());
            let mut answers = self.answers.lock().unwrap();
            if answers.is_empty() {
                Err("out of answers".to_string())
            } else {
                Ok(answers.remove(0))
            }
        }
    }

    #[tokio::test]
    async fn model_user_sees_guidelines_scenario_and_a_role_flipped_conversation() {
        let model = Arc::new(FakeModel {
            answers: Mutex::new(vec![
                "I want to exchange a keyboard.".to_string(),
                "Yusuf Rossi, 19122.".to_string(),
            ]),
            prompts: Mutex::new(Vec::new()),
        });
        let task = exchange_task();
        let mut user = build_user(UserMode::Model, &task, &is_write, Some(model.clone())).unwrap();
        assert_eq!(user.label(), "model:fake");
        assert_eq!(
            user.opening().await.unwrap(),
            "I want to exchange a keyboard."
        );
        assert_eq!(
            user.reply("Your name and zip, please?").await.unwrap(),
            "Yusuf Rossi, 19122."
        );

        let prompts = model.prompts.lock().unwrap().clone();
        let last = &prompts[1];
        assert_eq!(last[0].role, kiln_protocol::Role::System);
        assert!(last[0].content.contains("Reveal information progressively"));
        assert!(last[0].content.contains(
            "<scenario>\nDomain: retail\nReason for call:\n\tYou received your order #W2378156"
        ));
        let flipped: Vec<_> = last[1..]
            .iter()
            .map(|message| (message.role, message.content.as_str()))
            .collect();
        use kiln_protocol::Role::{Assistant, User};
        assert_eq!(
            flipped,
            [
                (User, GREETING),
                (Assistant, "I want to exchange a keyboard."),
                (User, "Your name and zip, please?")
            ]
        );

        let error = user.reply("anything?").await.unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::AuxModel);
        assert!(error.to_string().contains("fake"), "{error}");
    }

    #[test]
    fn model_mode_without_a_model_is_an_options_error() {
        let error = build_user(UserMode::Model, &exchange_task(), &is_write, None)
            .err()
            .unwrap();
        assert_eq!(error.kind(), EnvErrorKind::InvalidOptions);
        assert_eq!(
            UserMode::parse("llm").unwrap_err().kind(),
            EnvErrorKind::InvalidOptions
        );
    }

    #[tokio::test]
    async fn solo_user_hands_over_a_ticket_and_answers_with_a_fixed_note() {
        let mut user = build_user(UserMode::None, &exchange_task(), &is_write, None).unwrap();
        let ticket = user.opening().await.unwrap();
        assert!(
            ticket.contains("#W2378156") && ticket.contains("Yusuf Rossi"),
            "{ticket}"
        );
        assert_eq!(user.reply("Hello?").await.unwrap(), SOLO_NOTE);
    }
}
