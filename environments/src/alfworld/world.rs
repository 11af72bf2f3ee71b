//! The ALFWorld text world: receptacles, objects, the agent, the command set with the PDDL
//! preconditions of `alfred.pddl`, the feedback strings of `alfred.twl2`, admissible commands and
//! the six goals. Pure state, no I/O: [`World::step`] is all an episode needs.
//!
//! Choices where ALFWorld leaves room, all deliberate:
//! - Placing uses the 0.3.x wording `put {o} in/on {r}` ("You put the {o} in/on the {r}."), the
//!   one ReAct-era results used; 0.4's `move {o} to {r}` gets "Nothing happens.".
//! - `go to` the receptacle the agent is already at is not admissible (it changes nothing).
//! - Objects sit directly in receptacles; movable receptacles (bowl, mug, …) are plain objects and
//!   hold nothing, as in ALFWorld's text engine where the nested-receptacle actions are disabled.
//! - `use {lamp}` sets the lamp's toggled flag for good and always says "You turn on the {o}.",
//!   as ALFWorld's PDDL (`isToggled`) and grammar do.

use std::collections::HashMap;
use std::sync::Arc;

use super::data::Rules;

/// The answer to anything that is not a valid command.
pub const NOTHING_HAPPENS: &str = "Nothing happens.";

/// `-= Welcome to TextWorld, ALFRED! =-`, the first line of every game.
pub const WELCOME: &str = "-= Welcome to TextWorld, ALFRED! =-";

/// Where an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In (or on) the receptacle with this index.
    In(usize),
    /// In the agent's hands.
    Held,
}

/// A static receptacle (`cabinet 3`).
#[derive(Debug, Clone, PartialEq)]
pub struct Receptacle {
    /// Text name: lowercased type and a number per type (`sinkbasin 1`).
    pub name: String,
    /// ALFRED type (`SinkBasin`).
    pub kind: String,
    pub openable: bool,
    pub open: bool,
    /// Objects in it, in the order they were put there.
    pub contents: Vec<usize>,
}

/// An object (`apple 2`) and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub name: String,
    pub kind: String,
    pub place: Place,
    pub clean: bool,
    pub hot: bool,
    pub cool: bool,
    pub sliced: bool,
    pub toggled: bool,
}

/// What the agent must achieve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// An object of type `object` (clean/hot/cool when `state` says so) in a receptacle of type
    /// `receptacle`.
    Place {
        object: String,
        receptacle: String,
        state: Option<Treatment>,
    },
    /// Two distinct objects of type `object` in the same receptacle of type `receptacle`.
    PlaceTwo { object: String, receptacle: String },
    /// Holding an object of type `object` while a toggled lamp of type `lamp` is in a receptacle
    /// at the agent's location.
    LookInLight { object: String, lamp: String },
}

/// A state change applied at an appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// `clean {o} with {sinkbasin}`.
    Clean,
    /// `heat {o} with {microwave}`.
    Heat,
    /// `cool {o} with {fridge}`.
    Cool,
}

impl Treatment {
    pub fn verb(self) -> &'static str {
        match self {
            Treatment::Clean => "clean",
            Treatment::Heat => "heat",
            Treatment::Cool => "cool",
        }
    }

    /// The receptacle type that applies it.
    pub fn appliance(self) -> &'static str {
        match self {
            Treatment::Clean => "SinkBasin",
            Treatment::Heat => "Microwave",
            Treatment::Cool => "Fridge",
        }
    }
}

/// A parsed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Look,
    Inventory,
    GoTo(usize),
    Open(usize),
    Close(usize),
    Take(usize, usize),
    Put(usize, usize),
    Use(usize),
    Treat(Treatment, usize, usize),
    Slice(usize, usize),
    ExamineReceptacle(usize),
    ExamineObject(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Receptacle(usize),
    Object(usize),
}

/// One game's state. Cloning is cheap enough to probe every command (names and rules are shared).
#[derive(Debug, Clone)]
pub struct World {
    rules: Arc<Rules>,
    names: Arc<HashMap<String, Entity>>,
    pub receptacles: Vec<Receptacle>,
    pub objects: Vec<Object>,
    /// The receptacle the agent stands at; `None` in the middle of the room (the start).
    pub at: Option<usize>,
    pub goal: Goal,
}

impl World {
    /// A world in its initial state. `objects[i].place` must agree with the receptacles'
    /// `contents`; [`World::new`] rebuilds `contents` from the places, in object order.
    pub fn new(
        rules: Arc<Rules>,
        mut receptacles: Vec<Receptacle>,
        objects: Vec<Object>,
        goal: Goal,
    ) -> Self {
        for receptacle in &mut receptacles {
            receptacle.contents.clear();
        }
        for (index, object) in objects.iter().enumerate() {
            if let Place::In(receptacle) = object.place {
                receptacles[receptacle].contents.push(index);
            }
        }
        let mut names = HashMap::new();
        for (index, receptacle) in receptacles.iter().enumerate() {
            names.insert(receptacle.name.clone(), Entity::Receptacle(index));
        }
        for (index, object) in objects.iter().enumerate() {
            names.insert(object.name.clone(), Entity::Object(index));
        }
        Self {
            rules,
            names: Arc::new(names),
            receptacles,
            objects,
            at: None,
            goal,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The object in the agent's hands.
    pub fn held(&self) -> Option<usize> {
        self.objects
            .iter()
            .position(|object| object.place == Place::Held)
    }

    /// The reset text: welcome line, room overview, task.
    pub fn intro(&self, goal_text: &str) -> String {
        format!(
            "{WELCOME}\n\n{}\n\nYour task is to: {goal_text}",
            self.room_overview()
        )
    }

    /// "You are in the middle of a room. Looking quickly around you, you see …" with every
    /// receptacle, types in alphabetical order and numbers descending (as ALFWorld lists them).
    pub fn room_overview(&self) -> String {
        let mut order: Vec<&Receptacle> = self.receptacles.iter().collect();
        order.sort_by(|a, b| {
            let (a_type, a_number) = split_name(&a.name);
            let (b_type, b_number) = split_name(&b.name);
            a_type.cmp(b_type).then(b_number.cmp(&a_number))
        });
        let names: Vec<&str> = order
            .iter()
            .map(|receptacle| receptacle.name.as_str())
            .collect();
        format!(
            "You are in the middle of a room. Looking quickly around you, you see {}.",
            render_list(&names)
        )
    }

    /// Whether the goal holds now.
    pub fn goal_met(&self) -> bool {
        match &self.goal {
            Goal::Place {
                object,
                receptacle,
                state,
            } => self.objects.iter().any(|candidate| {
                candidate.kind == *object
                    && self.in_receptacle_of_type(candidate, receptacle)
                    && match state {
                        None => true,
                        Some(Treatment::Clean) => candidate.clean,
                        Some(Treatment::Heat) => candidate.hot,
                        Some(Treatment::Cool) => candidate.cool,
                    }
            }),
            Goal::PlaceTwo { object, receptacle } => self.receptacles.iter().any(|holder| {
                holder.kind == *receptacle
                    && holder
                        .contents
                        .iter()
                        .filter(|index| self.objects[**index].kind == *object)
                        .count()
                        >= 2
            }),
            Goal::LookInLight { object, lamp } => {
                let holding = self
                    .held()
                    .is_some_and(|index| self.objects[index].kind == *object);
                let Some(at) = self.at else {
                    return false;
                };
                let lit = self.objects.iter().any(|candidate| {
                    candidate.kind == *lamp && candidate.toggled && candidate.place == Place::In(at)
                });
                holding && lit
            }
        }
    }

    fn in_receptacle_of_type(&self, object: &Object, kind: &str) -> bool {
        matches!(object.place, Place::In(index) if self.receptacles[index].kind == kind)
    }

    /// Parses `text` (trimmed; otherwise exact) into a command over this world's names.
    pub fn parse(&self, text: &str) -> Option<Command> {
        let text = text.trim();
        let receptacle = |name: &str| match self.names.get(name) {
            Some(Entity::Receptacle(index)) => Some(*index),
            _ => None,
        };
        let object = |name: &str| match self.names.get(name) {
            Some(Entity::Object(index)) => Some(*index),
            _ => None,
        };
        let pair = |rest: &str, separator: &str| -> Option<(usize, usize)> {
            let (first, second) = rest.split_once(separator)?;
            Some((object(first)?, receptacle(second)?))
        };
        match text {
            "look" => return Some(Command::Look),
            "inventory" => return Some(Command::Inventory),
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("go to ") {
            return receptacle(rest).map(Command::GoTo);
        }
        if let Some(rest) = text.strip_prefix("open ") {
            return receptacle(rest).map(Command::Open);
        }
        if let Some(rest) = text.strip_prefix("close ") {
            return receptacle(rest).map(Command::Close);
        }
        if let Some(rest) = text.strip_prefix("take ") {
            return pair(rest, " from ").map(|(o, r)| Command::Take(o, r));
        }
        if let Some(rest) = text.strip_prefix("put ") {
            return pair(rest, " in/on ").map(|(o, r)| Command::Put(o, r));
        }
        if let Some(rest) = text.strip_prefix("use ") {
            return object(rest).map(Command::Use);
        }
        for treatment in [Treatment::Heat, Treatment::Cool, Treatment::Clean] {
            if let Some(rest) = text
                .strip_prefix(treatment.verb())
                .and_then(|rest| rest.strip_prefix(' '))
            {
                return pair(rest, " with ").map(|(o, r)| Command::Treat(treatment, o, r));
            }
        }
        if let Some(rest) = text.strip_prefix("slice ") {
            let (first, second) = rest.split_once(" with ")?;
            return Some(Command::Slice(object(first)?, object(second)?));
        }
        if let Some(rest) = text.strip_prefix("examine ") {
            return match self.names.get(rest)? {
                Entity::Receptacle(index) => Some(Command::ExamineReceptacle(*index)),
                Entity::Object(index) => Some(Command::ExamineObject(*index)),
            };
        }
        None
    }

    /// Whether the command's preconditions hold (those of `alfred.pddl`).
    pub fn allowed(&self, command: Command) -> bool {
        let here = |receptacle: usize| self.at == Some(receptacle);
        let reachable = |receptacle: usize| {
            let holder = &self.receptacles[receptacle];
            !holder.openable || holder.open
        };
        let held = self.held();
        match command {
            Command::Look | Command::Inventory => true,
            Command::GoTo(receptacle) => !here(receptacle),
            Command::Open(receptacle) => {
                here(receptacle)
                    && self.receptacles[receptacle].openable
                    && !self.receptacles[receptacle].open
            }
            Command::Close(receptacle) => {
                here(receptacle)
                    && self.receptacles[receptacle].openable
                    && self.receptacles[receptacle].open
            }
            Command::Take(object, receptacle) => {
                held.is_none()
                    && here(receptacle)
                    && reachable(receptacle)
                    && self.objects[object].place == Place::In(receptacle)
                    && self.rules.pickupable.contains(&self.objects[object].kind)
            }
            Command::Put(object, receptacle) => {
                held == Some(object)
                    && here(receptacle)
                    && reachable(receptacle)
                    && self.rules.can_contain(
                        &self.receptacles[receptacle].kind,
                        &self.objects[object].kind,
                    )
            }
            Command::Use(object) => {
                self.rules.toggleable.contains(&self.objects[object].kind)
                    && matches!(self.objects[object].place, Place::In(holder) if here(holder))
            }
            Command::Treat(treatment, object, receptacle) => {
                let able = match treatment {
                    Treatment::Clean => &self.rules.cleanable,
                    Treatment::Heat => &self.rules.heatable,
                    Treatment::Cool => &self.rules.coolable,
                };
                held == Some(object)
                    && here(receptacle)
                    && self.receptacles[receptacle].kind == treatment.appliance()
                    && able.contains(&self.objects[object].kind)
            }
            Command::Slice(target, knife) => {
                held == Some(knife)
                    && matches!(self.objects[knife].kind.as_str(), "Knife" | "ButterKnife")
                    && self.rules.sliceable.contains(&self.objects[target].kind)
                    && matches!(self.objects[target].place, Place::In(holder) if here(holder))
            }
            Command::ExamineReceptacle(receptacle) => here(receptacle),
            Command::ExamineObject(object) => match self.objects[object].place {
                Place::Held => true,
                Place::In(holder) => here(holder) && reachable(holder),
            },
        }
    }

    /// Applies one text command and returns the feedback; anything invalid is
    /// [`NOTHING_HAPPENS`] and changes nothing.
    pub fn step(&mut self, text: &str) -> String {
        match self.parse(text) {
            Some(command) if self.allowed(command) => self.apply(command),
            _ => NOTHING_HAPPENS.to_string(),
        }
    }

    /// Applies a command whose preconditions hold.
    fn apply(&mut self, command: Command) -> String {
        match command {
            Command::Look => self.look(),
            Command::Inventory => match self.held() {
                Some(object) => format!("You are carrying: a {}.", self.objects[object].name),
                None => "You are not carrying anything.".to_string(),
            },
            Command::GoTo(receptacle) => {
                self.at = Some(receptacle);
                format!(
                    "You arrive at {}. {}",
                    self.receptacles[receptacle].name,
                    self.describe_receptacle(receptacle)
                )
            }
            Command::Open(receptacle) => {
                self.receptacles[receptacle].open = true;
                format!(
                    "You open the {}. {}",
                    self.receptacles[receptacle].name,
                    self.describe_receptacle(receptacle)
                )
            }
            Command::Close(receptacle) => {
                self.receptacles[receptacle].open = false;
                format!("You close the {}.", self.receptacles[receptacle].name)
            }
            Command::Take(object, receptacle) => {
                self.receptacles[receptacle]
                    .contents
                    .retain(|index| *index != object);
                self.objects[object].place = Place::Held;
                format!(
                    "You pick up the {} from the {}.",
                    self.objects[object].name, self.receptacles[receptacle].name
                )
            }
            Command::Put(object, receptacle) => {
                self.receptacles[receptacle].contents.push(object);
                self.objects[object].place = Place::In(receptacle);
                format!(
                    "You put the {} in/on the {}.",
                    self.objects[object].name, self.receptacles[receptacle].name
                )
            }
            Command::Use(object) => {
                self.objects[object].toggled = true;
                format!("You turn on the {}.", self.objects[object].name)
            }
            Command::Treat(treatment, object, receptacle) => {
                let state = &mut self.objects[object];
                match treatment {
                    Treatment::Clean => state.clean = true,
                    Treatment::Heat => {
                        state.hot = true;
                        state.cool = false;
                    }
                    Treatment::Cool => {
                        state.cool = true;
                        state.hot = false;
                    }
                }
                format!(
                    "You {} the {} using the {}.",
                    treatment.verb(),
                    self.objects[object].name,
                    self.receptacles[receptacle].name
                )
            }
            Command::Slice(target, knife) => {
                self.objects[target].sliced = true;
                format!(
                    "You sliced the {} with the {}.",
                    self.objects[target].name, self.objects[knife].name
                )
            }
            Command::ExamineReceptacle(receptacle) => self.describe_receptacle(receptacle),
            Command::ExamineObject(object) => self.describe_object(object),
        }
    }

    fn look(&self) -> String {
        match self.at {
            // Nothing ever lies on the floor next to a receptacle in this world.
            Some(receptacle) => format!(
                "You are facing the {}. Next to it, you see nothing.",
                self.receptacles[receptacle].name
            ),
            None => self.room_overview(),
        }
    }

    /// `examineReceptacle.feedback` of `alfred.twl2`.
    pub fn describe_receptacle(&self, receptacle: usize) -> String {
        let holder = &self.receptacles[receptacle];
        let contents: Vec<&str> = holder
            .contents
            .iter()
            .map(|index| self.objects[*index].name.as_str())
            .collect();
        match (holder.openable, holder.open) {
            (true, true) => format!(
                "The {} is open. In it, you see {}.",
                holder.name,
                render_list(&contents)
            ),
            (true, false) => format!("The {} is closed.", holder.name),
            (false, _) => format!(
                "On the {}, you see {}.",
                holder.name,
                render_list(&contents)
            ),
        }
    }

    /// `examineObject.feedback` of `alfred.twl2`, conditions in its order.
    pub fn describe_object(&self, object: usize) -> String {
        let state = &self.objects[object];
        let name = &state.name;
        if self.rules.movable_receptacles.contains(&state.kind) {
            return format!("This is a normal {name}. In it, you see nothing.");
        }
        let toggleable = self.rules.toggleable.contains(&state.kind);
        match (state.clean, state.hot, state.cool, state.sliced) {
            (true, true, _, true) => format!("This is a hot and clean sliced {name}."),
            (true, _, true, true) => format!("This is a cool and clean sliced {name}."),
            (true, _, _, true) => format!("This is a clean sliced {name}."),
            (_, true, _, true) => format!("This is a hot sliced {name}."),
            (_, _, true, true) => format!("This is a cool sliced {name}."),
            (true, true, _, _) => format!("This is a hot and clean {name}."),
            (true, _, true, _) => format!("This is a cool and clean {name}."),
            (_, true, _, _) => format!("This is a hot {name}."),
            (true, _, _, _) => format!("This is a clean {name}."),
            (_, _, true, _) => format!("This is a cold {name}."),
            _ if toggleable && state.toggled => format!("This {name} is on."),
            _ if toggleable => format!("This {name} is off."),
            (_, _, _, true) => format!("This is a sliced {name}."),
            _ => format!("There's nothing special about {name}."),
        }
    }

    /// Every command whose preconditions hold now, sorted and de-duplicated.
    pub fn admissible_commands(&self) -> Vec<String> {
        let mut commands = vec!["inventory".to_string(), "look".to_string()];
        for (index, receptacle) in self.receptacles.iter().enumerate() {
            if self.at != Some(index) {
                commands.push(format!("go to {}", receptacle.name));
            }
        }
        let held = self.held();
        if let Some(object) = held {
            commands.push(format!("examine {}", self.objects[object].name));
        }
        if let Some(here) = self.at {
            let holder = &self.receptacles[here];
            commands.push(format!("examine {}", holder.name));
            if holder.openable {
                let verb = if holder.open { "close" } else { "open" };
                commands.push(format!("{verb} {}", holder.name));
            }
            for &object in &holder.contents {
                for command in [
                    Command::Take(object, here),
                    Command::ExamineObject(object),
                    Command::Use(object),
                ] {
                    if self.allowed(command) {
                        commands.push(self.command_text(command));
                    }
                }
                if let Some(knife) = held {
                    let slice = Command::Slice(object, knife);
                    if self.allowed(slice) {
                        commands.push(self.command_text(slice));
                    }
                }
            }
            if let Some(object) = held {
                let mut candidates = vec![Command::Put(object, here)];
                candidates.extend(
                    [Treatment::Heat, Treatment::Cool, Treatment::Clean]
                        .map(|treatment| Command::Treat(treatment, object, here)),
                );
                for command in candidates {
                    if self.allowed(command) {
                        commands.push(self.command_text(command));
                    }
                }
            }
        }
        commands.sort();
        commands.dedup();
        commands
    }

    /// The text of a command, as [`World::parse`] reads it.
    pub fn command_text(&self, command: Command) -> String {
        let r = |index: usize| self.receptacles[index].name.as_str();
        let o = |index: usize| self.objects[index].name.as_str();
        match command {
            Command::Look => "look".to_string(),
            Command::Inventory => "inventory".to_string(),
            Command::GoTo(receptacle) => format!("go to {}", r(receptacle)),
            Command::Open(receptacle) => format!("open {}", r(receptacle)),
            Command::Close(receptacle) => format!("close {}", r(receptacle)),
            Command::Take(object, receptacle) => {
                format!("take {} from {}", o(object), r(receptacle))
            }
            Command::Put(object, receptacle) => {
                format!("put {} in/on {}", o(object), r(receptacle))
            }
            Command::Use(object) => format!("use {}", o(object)),
            Command::Treat(treatment, object, receptacle) => {
                format!("{} {} with {}", treatment.verb(), o(object), r(receptacle))
            }
            Command::Slice(target, knife) => format!("slice {} with {}", o(target), o(knife)),
            Command::ExamineReceptacle(receptacle) => format!("examine {}", r(receptacle)),
            Command::ExamineObject(object) => format!("examine {}", o(object)),
        }
    }

    /// Every syntactically valid command over this world's names, valid now or not: what the
    /// tests probe admissibility against.
    pub fn all_commands(&self) -> Vec<String> {
        let mut commands = Vec::new();
        let receptacles = 0..self.receptacles.len();
        let objects = 0..self.objects.len();
        commands.push(Command::Look);
        commands.push(Command::Inventory);
        for r in receptacles.clone() {
            commands.extend([
                Command::GoTo(r),
                Command::Open(r),
                Command::Close(r),
                Command::ExamineReceptacle(r),
            ]);
            for o in objects.clone() {
                commands.extend([Command::Take(o, r), Command::Put(o, r)]);
                commands.extend(
                    [Treatment::Heat, Treatment::Cool, Treatment::Clean]
                        .map(|treatment| Command::Treat(treatment, o, r)),
                );
            }
        }
        for o in objects.clone() {
            commands.extend([Command::Use(o), Command::ExamineObject(o)]);
            for k in objects.clone() {
                commands.push(Command::Slice(o, k));
            }
        }
        commands
            .into_iter()
            .map(|command| self.command_text(command))
            .collect()
    }
}

/// `("cabinet", 4)` from `cabinet 4`.
fn split_name(name: &str) -> (&str, u32) {
    match name.rsplit_once(' ') {
        Some((kind, number)) => (kind, number.parse().unwrap_or(0)),
        None => (name, 0),
    }
}

/// ALFWorld's list rendering: "nothing", "a X", "a X, and a Y", "a X, a Y, and a Z" (always "a").
pub fn render_list(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_string(),
        [only] => format!("a {only}"),
        [init @ .., last] => {
            let head: Vec<String> = init.iter().map(|name| format!("a {name}")).collect();
            format!("{}, and a {last}", head.join(", "))
        }
    }
}

/// The text name of an ALFRED type: lowercased (`SinkBasin` → `sinkbasin`).
pub fn type_text(kind: &str) -> String {
    kind.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_render_as_alfworld_does() {
        assert_eq!(render_list(&[]), "nothing");
        assert_eq!(render_list(&["apple 1"]), "a apple 1");
        assert_eq!(render_list(&["apple 1", "egg 2"]), "a apple 1, and a egg 2");
        assert_eq!(
            render_list(&["apple 1", "egg 2", "mug 1"]),
            "a apple 1, a egg 2, and a mug 1"
        );
    }

    #[test]
    fn names_split_into_type_and_number() {
        assert_eq!(split_name("cabinet 12"), ("cabinet", 12));
        assert_eq!(type_text("SinkBasin"), "sinkbasin");
    }
}
