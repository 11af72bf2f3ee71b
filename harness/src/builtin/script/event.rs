//! The event a script sees: a Rhai value of type `Event` whose fields are the hook's context
//! (read-only) and what the hook may change (writable), and nothing else.
//!
//! Reading a field gives a copy; writing a read-only field, writing a field the hook does not
//! have, or writing a value of the wrong shape is an error at the line that does it. A write
//! that survives the call is applied to the real event only when the whole call succeeds, so a
//! failing script leaves the event as it was. An event is usable only during its hook call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kiln_protocol::{
    Action, EnvInfo, Hook, Message, Observation, SamplingParams, Termination, ToolSchema,
};
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map};
use serde::de::DeserializeOwned;
use serde_json::{Number, Value, json};

use super::engine::lock;
use crate::events::{StepContext, StopRequest};

/// Terminations a script may end an episode with. Error terminations (model, environment,
/// harness errors, timeouts) are infrastructure verdicts a script must not claim, and `env_done`
/// belongs to the environment.
pub const SCRIPT_TERMINATIONS: [Termination; 4] = [
    Termination::AgentStop,
    Termination::LoopDetected,
    Termination::MaxSteps,
    Termination::TooManyErrors,
];

/// Notes one hook call may add (`event.note(value)`); more are an error.
pub const MAX_NOTES: usize = 16;

/// A value a script wrote to a writable field, already converted to its Rust type.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Messages(Vec<Message>),
    Message(Message),
    Tools(Vec<ToolSchema>),
    Sampling(SamplingParams),
    Strings(Vec<String>),
    Text(String),
    OptionalText(Option<String>),
    Actions(Vec<Action>),
    Action(Action),
    Observation(Observation),
    Stop(Option<StopRequest>),
    Veto(Option<Veto>),
}

/// A `before_tool` veto: an observation, or an error text shaped like the action.
#[derive(Debug, Clone, PartialEq)]
pub enum Veto {
    Observation(Observation),
    Error(String),
}

/// How a writable field's value is checked and converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An array of messages; a string item is a user message.
    Messages,
    /// One message (a map with `role`, `content`, …).
    Message,
    /// An array of tool schemas (`name`, `description`, `parameters`).
    Tools,
    /// A map: `temperature`, `top_p`, `max_tokens`, `seed`.
    Sampling,
    /// An array of strings.
    Strings,
    /// A string.
    Text,
    /// A string or `()`.
    OptionalText,
    /// An array of actions (`#{type: "message", text}` or `#{type: "tool_call", call: #{id, name, arguments}}`).
    Actions,
    /// One action.
    Action,
    /// An observation (`#{type: "text", text}`, `#{type: "user", text}` or
    /// `#{type: "tool_result", call_id, name, content, is_error}`).
    Observation,
    /// `()`, a reason string (ends the episode as `agent_stop`) or `#{termination, reason}`.
    Stop,
    /// `()`, an error text, or an observation map.
    Veto,
}

#[derive(Debug, Clone)]
enum Access {
    Read,
    Write(Shape),
}

#[derive(Debug, Clone)]
struct Field {
    value: Dynamic,
    access: Access,
}

/// The fields of one hook's event, built by [`EventBuilder`].
#[derive(Debug)]
pub struct EventData {
    hook: Hook,
    fields: BTreeMap<&'static str, Field>,
    written: BTreeMap<&'static str, Written>,
    notes: Vec<Value>,
    open: bool,
}

impl EventData {
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// The converted values of every field written.
    pub fn written(&self) -> &BTreeMap<&'static str, Written> {
        &self.written
    }

    pub fn take_written(&mut self) -> BTreeMap<&'static str, Written> {
        std::mem::take(&mut self.written)
    }

    pub fn take_notes(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.notes)
    }

    /// Field names, read-only ones first, for messages.
    fn describe(&self) -> String {
        let (read, write): (Vec<_>, Vec<_>) = self
            .fields
            .iter()
            .partition(|(_, field)| matches!(field.access, Access::Read));
        let names = |fields: Vec<(&&str, &Field)>| {
            fields
                .iter()
                .map(|(name, _)| **name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "read-only: {}; writable: {}",
            names(read),
            if write.is_empty() {
                "none".to_string()
            } else {
                names(write)
            }
        )
    }

    fn get(&self, name: &str) -> Result<Dynamic, String> {
        self.check_open()?;
        match self.fields.get(name) {
            Some(field) => Ok(field.value.clone()),
            None => Err(format!(
                "the `{}` event has no field `{name}` ({})",
                self.hook,
                self.describe()
            )),
        }
    }

    fn set(&mut self, name: &str, value: Dynamic) -> Result<(), String> {
        self.check_open()?;
        let hook = self.hook;
        let Some((&key, field)) = self.fields.get_key_value(name) else {
            return Err(format!(
                "the `{hook}` event has no field `{name}` ({})",
                self.describe()
            ));
        };
        let shape = match field.access {
            Access::Write(shape) => shape,
            // Rhai writes a property back after calling a method on it; an unchanged value is
            // not a write.
            Access::Read if same_value(&field.value, &value) => return Ok(()),
            Access::Read => {
                return Err(format!(
                    "field `{name}` is read-only at `{hook}` ({})",
                    self.describe()
                ));
            }
        };
        let written = convert(shape, &value).map_err(|error| {
            format!(
                "field `{name}` at `{hook}` expects {}: {error}",
                expected(shape)
            )
        })?;
        // Reads see the value as the script wrote it.
        if let Some(field) = self.fields.get_mut(key) {
            field.value = value;
        }
        self.written.insert(key, written);
        Ok(())
    }

    fn note(&mut self, value: &Dynamic) -> Result<(), String> {
        self.check_open()?;
        if self.notes.len() >= MAX_NOTES {
            return Err(format!("at most {MAX_NOTES} notes per hook call"));
        }
        self.notes.push(to_json(value)?);
        Ok(())
    }

    fn check_open(&self) -> Result<(), String> {
        if self.open {
            return Ok(());
        }
        Err(format!(
            "this `{}` event is over: an event can be used only during its hook call",
            self.hook
        ))
    }
}

/// The Rhai value of an event. Clones share one [`EventData`], so the processor reads what the
/// script wrote after the call.
#[derive(Debug, Clone)]
pub struct ScriptEvent(Arc<Mutex<EventData>>);

impl ScriptEvent {
    pub fn new(data: EventData) -> Self {
        Self(Arc::new(Mutex::new(data)))
    }

    /// Ends the event's life (later uses fail) and returns its data.
    pub fn close(&self) -> EventData {
        let mut data = lock(&self.0);
        data.open = false;
        EventData {
            hook: data.hook,
            fields: std::mem::take(&mut data.fields),
            written: std::mem::take(&mut data.written),
            notes: std::mem::take(&mut data.notes),
            open: false,
        }
    }
}

/// Registers the `Event` type: fields by `event.name` or `event["name"]`, `event.note(value)`,
/// and printing.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptEvent>("Event");
    engine.register_indexer_get(
        |event: &mut ScriptEvent, name: ImmutableString| -> Result<Dynamic, Box<EvalAltResult>> {
            lock(&event.0).get(&name).map_err(Into::into)
        },
    );
    engine.register_indexer_set(
        |event: &mut ScriptEvent,
         name: ImmutableString,
         value: Dynamic|
         -> Result<(), Box<EvalAltResult>> {
            lock(&event.0).set(&name, value).map_err(Into::into)
        },
    );
    engine.register_fn(
        "note",
        |event: &mut ScriptEvent, value: Dynamic| -> Result<(), Box<EvalAltResult>> {
            lock(&event.0).note(&value).map_err(Into::into)
        },
    );
    engine.register_fn("to_string", |event: &mut ScriptEvent| -> String {
        let data = lock(&event.0);
        format!("Event({}; {})", data.hook, data.describe())
    });
    engine.register_fn("to_debug", |event: &mut ScriptEvent| -> String {
        let data = lock(&event.0);
        format!("Event({}; {})", data.hook, data.describe())
    });
}

/// Builds one hook's [`EventData`].
pub struct EventBuilder {
    data: EventData,
}

impl EventBuilder {
    pub fn new(hook: Hook) -> Self {
        let mut builder = Self {
            data: EventData {
                hook,
                fields: BTreeMap::new(),
                written: BTreeMap::new(),
                notes: Vec::new(),
                open: true,
            },
        };
        builder = builder.read("hook", json!(hook.as_str()));
        builder
    }

    /// A read-only field.
    pub fn read(mut self, name: &'static str, value: Value) -> Self {
        self.data.fields.insert(
            name,
            Field {
                value: to_dynamic(&value),
                access: Access::Read,
            },
        );
        self
    }

    /// A writable field with its current value.
    pub fn write(mut self, name: &'static str, shape: Shape, value: Value) -> Self {
        self.data.fields.insert(
            name,
            Field {
                value: to_dynamic(&value),
                access: Access::Write(shape),
            },
        );
        self
    }

    /// A field a script may set once: writable while `current` is `None` (nothing to undo
    /// then), read-only once an earlier processor set it (a stop, retry or veto cannot be lifted).
    pub fn once(self, name: &'static str, shape: Shape, current: Option<Value>) -> Self {
        match current {
            None => self.write(name, shape, Value::Null),
            Some(value) => self.read(name, value),
        }
    }

    /// The per-step context: `step`, `env`, `admissible`, `conversation` (all read-only).
    pub fn context(self, ctx: &StepContext<'_>) -> Self {
        self.read("step", json!(ctx.step()))
            .read("env", env_value(ctx.env()))
            .read("admissible", json!(ctx.admissible_actions()))
            .read("conversation", to_value(ctx.conversation()))
    }

    pub fn build(self) -> EventData {
        self.data
    }
}

/// What a script sees of the environment: its id, instructions and tools. Task ids, splits and
/// gold data are not exposed, so a script cannot key its behaviour to a task.
pub fn env_value(env: &EnvInfo) -> Value {
    json!({
        "id": env.env,
        "instructions": env.instructions,
        "tools": to_value(&env.tools),
    })
}

/// Serializes a protocol value; they all serialize.
pub fn to_value<T: serde::Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// JSON → Rhai: integers that fit `i64` stay integers, other numbers become floats.
pub fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(flag) => Dynamic::from_bool(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Dynamic::from_int(integer),
            None => Dynamic::from_float(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => Dynamic::from(text.clone()),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(entries) => {
            let map: Map = entries
                .iter()
                .map(|(key, value)| (key.as_str().into(), to_dynamic(value)))
                .collect();
            Dynamic::from_map(map)
        }
    }
}

/// Rhai → JSON, for plain data only (no functions, events or other custom values).
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(flag) = value.as_bool() {
        return Ok(Value::Bool(flag));
    }
    if let Ok(integer) = value.as_int() {
        return Ok(Value::from(integer));
    }
    if let Ok(float) = value.as_float() {
        return Number::from_f64(float)
            .map(Value::Number)
            .ok_or_else(|| format!("{float} is not a finite number"));
    }
    if let Ok(character) = value.as_char() {
        return Ok(Value::String(character.to_string()));
    }
    if value.is_string() {
        return Ok(Value::String(
            value.clone().into_string().unwrap_or_default(),
        ));
    }
    if value.is_array() {
        let items = value.read_lock::<rhai::Array>().ok_or("unreadable array")?;
        return items
            .iter()
            .map(to_json)
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if value.is_map() {
        let map = value.read_lock::<Map>().ok_or("unreadable map")?;
        let mut object = serde_json::Map::new();
        for (key, item) in map.iter() {
            object.insert(key.to_string(), to_json(item)?);
        }
        return Ok(Value::Object(object));
    }
    Err(format!(
        "a value of type `{}` is not data",
        value.type_name()
    ))
}

fn same_value(a: &Dynamic, b: &Dynamic) -> bool {
    match (to_json(a), to_json(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn expected(shape: Shape) -> &'static str {
    match shape {
        Shape::Messages => {
            "an array of messages (maps with `role` and `content`, or strings for user messages)"
        }
        Shape::Message => "a message (a map with `role` and `content`)",
        Shape::Tools => "an array of tools (maps with `name`, `description` and `parameters`)",
        Shape::Sampling => "a map with `temperature`, `top_p`, `max_tokens` and optionally `seed`",
        Shape::Strings => "an array of strings",
        Shape::Text => "a string",
        Shape::OptionalText => "a string or ()",
        Shape::Actions => {
            "an array of actions (`#{type: \"message\", text: …}` or `#{type: \"tool_call\", call: #{id, name, arguments}}`)"
        }
        Shape::Action => {
            "an action (`#{type: \"message\", text: …}` or `#{type: \"tool_call\", call: #{id, name, arguments}}`)"
        }
        Shape::Observation => {
            "an observation (`#{type: \"text\", text: …}`, `#{type: \"user\", text: …}` or `#{type: \"tool_result\", call_id, name, content, is_error}`)"
        }
        Shape::Stop => "(), a reason string, or `#{termination: …, reason: …}`",
        Shape::Veto => "(), an error text, or an observation map",
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|error| error.to_string())
}

fn message(value: Value) -> Result<Message, String> {
    match value {
        Value::String(text) => Ok(Message::user(text)),
        other => typed(other),
    }
}

/// Checks and converts a value written to a field of `shape`.
pub fn convert(shape: Shape, value: &Dynamic) -> Result<Written, String> {
    let json = to_json(value)?;
    Ok(match shape {
        Shape::Messages => {
            let Value::Array(items) = json else {
                return Err(format!("found {}", kind_of(&json)));
            };
            Written::Messages(items.into_iter().map(message).collect::<Result<_, _>>()?)
        }
        Shape::Message => match json {
            Value::Object(_) => Written::Message(typed(json)?),
            other => return Err(format!("found {}", kind_of(&other))),
        },
        Shape::Tools => Written::Tools(typed(json)?),
        Shape::Sampling => Written::Sampling(typed(json)?),
        Shape::Strings => Written::Strings(typed(json)?),
        Shape::Text => match json {
            Value::String(text) => Written::Text(text),
            other => return Err(format!("found {}", kind_of(&other))),
        },
        Shape::OptionalText => match json {
            Value::Null => Written::OptionalText(None),
            Value::String(text) => Written::OptionalText(Some(text)),
            other => return Err(format!("found {}", kind_of(&other))),
        },
        Shape::Actions => Written::Actions(typed(json)?),
        Shape::Action => Written::Action(typed(json)?),
        Shape::Observation => Written::Observation(typed(json)?),
        Shape::Stop => Written::Stop(stop(json)?),
        Shape::Veto => Written::Veto(match json {
            Value::Null => None,
            Value::String(text) => Some(Veto::Error(text)),
            other => Some(Veto::Observation(typed(other)?)),
        }),
    })
}

fn stop(json: Value) -> Result<Option<StopRequest>, String> {
    let (termination, reason) = match json {
        Value::Null => return Ok(None),
        Value::String(reason) => (Termination::AgentStop, reason),
        Value::Object(mut map) => {
            let termination = match map.remove("termination") {
                None => Termination::AgentStop,
                Some(value) => typed::<Termination>(value)?,
            };
            let reason = match map.remove("reason") {
                None => String::new(),
                Some(Value::String(reason)) => reason,
                Some(other) => {
                    return Err(format!(
                        "`reason` must be a string, found {}",
                        kind_of(&other)
                    ));
                }
            };
            if let Some(key) = map.keys().next() {
                return Err(format!(
                    "unknown key `{key}` (expected `termination` and `reason`)"
                ));
            }
            (termination, reason)
        }
        other => return Err(format!("found {}", kind_of(&other))),
    };
    if !SCRIPT_TERMINATIONS.contains(&termination) {
        let allowed: Vec<String> = SCRIPT_TERMINATIONS
            .iter()
            .map(|termination| {
                to_value(termination)
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        return Err(format!(
            "a script may stop an episode only as {}",
            allowed.join(", ")
        ));
    }
    Ok(Some(StopRequest {
        termination,
        reason: if reason.is_empty() {
            "stopped by a script".to_string()
        } else {
            reason
        },
    }))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "()",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EventData {
        EventBuilder::new(Hook::AfterTool)
            .read("done", json!(false))
            .write(
                "observation",
                Shape::Observation,
                json!({"type": "text", "text": "You see a desk."}),
            )
            .build()
    }

    #[test]
    fn reads_copy_and_writes_convert() {
        let mut data = event();
        assert_eq!(to_json(&data.get("done").unwrap()).unwrap(), json!(false));
        let observation = to_dynamic(&json!({"type": "text", "text": "changed"}));
        data.set("observation", observation).unwrap();
        assert_eq!(
            data.written()["observation"],
            Written::Observation(Observation::Text {
                text: "changed".into()
            })
        );
        assert_eq!(
            to_json(&data.get("observation").unwrap()).unwrap()["text"],
            "changed"
        );
    }

    #[test]
    fn read_only_unknown_and_misshapen_writes_are_refused() {
        let mut data = event();
        let error = data.set("done", Dynamic::from_bool(true)).unwrap_err();
        assert!(error.contains("read-only at `after_tool`"), "{error}");
        // Writing back the same value (what Rhai does after a method call) is no write.
        data.set("done", Dynamic::from_bool(false)).unwrap();
        let error = data.set("reward", Dynamic::from_int(1)).unwrap_err();
        assert!(error.contains("no field `reward`"), "{error}");
        assert!(error.contains("writable: observation"), "{error}");
        let error = data.set("observation", Dynamic::from_int(3)).unwrap_err();
        assert!(error.contains("expects an observation"), "{error}");
        assert!(data.written().is_empty());
    }

    #[test]
    fn a_closed_event_refuses_everything() {
        let event = ScriptEvent::new(event());
        let data = event.close();
        assert_eq!(data.hook(), Hook::AfterTool);
        let error = lock(&event.0).get("done").unwrap_err();
        assert!(error.contains("only during its hook call"), "{error}");
    }

    #[test]
    fn stop_accepts_a_reason_or_an_allowed_termination() {
        let reason = convert(Shape::Stop, &Dynamic::from("looping".to_string())).unwrap();
        assert_eq!(
            reason,
            Written::Stop(Some(StopRequest {
                termination: Termination::AgentStop,
                reason: "looping".into()
            }))
        );
        let map = to_dynamic(&json!({"termination": "loop_detected", "reason": "r"}));
        assert!(matches!(
            convert(Shape::Stop, &map).unwrap(),
            Written::Stop(Some(StopRequest {
                termination: Termination::LoopDetected,
                ..
            }))
        ));
        let error = convert(
            Shape::Stop,
            &to_dynamic(&json!({"termination": "env_error"})),
        )
        .unwrap_err();
        assert!(error.contains("only as agent_stop"), "{error}");
        assert_eq!(
            convert(Shape::Stop, &Dynamic::UNIT).unwrap(),
            Written::Stop(None)
        );
    }

    #[test]
    fn strings_in_message_arrays_are_user_messages() {
        let value = to_dynamic(&json!(["hint", {"role": "system", "content": "rule"}]));
        assert_eq!(
            convert(Shape::Messages, &value).unwrap(),
            Written::Messages(vec![Message::user("hint"), Message::system("rule")])
        );
    }

    #[test]
    fn json_round_trips_through_rhai() {
        let value = json!({"a": [1, 2.5, "x", null, true], "b": {"c": u64::MAX}});
        let back = to_json(&to_dynamic(&value)).unwrap();
        assert_eq!(back["a"], json!([1, 2.5, "x", null, true]));
        assert_eq!(back["b"]["c"], json!(u64::MAX as f64));
    }
}
