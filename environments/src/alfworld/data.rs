//! ALFWorld's shipped facts, read from `$KILN_HOME/data/alfworld/` (installed by
//! `ops/setup alfworld` from the `alfworld==0.4.2` wheel): type constraints and scene numbers from
//! `constants.py`, goal templates from `goal_library.py`, and per floor plan the object types
//! present (`layouts/FloorPlanN-objects.json`) and receptacle instances (`-openable.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::pyliteral::{PyModule, PyValue, data_error};
use super::task_type::TaskType;
use crate::EnvError;

/// Receptacle types as ALFWorld names them in text: the floor plans' `Sink`/`Bathtub` instances
/// are the `SinkBasin`/`BathtubBasin` receptacles.
const RECEPTACLE_ALIASES: [(&str, &str); 2] = [("Sink", "SinkBasin"), ("Bathtub", "BathtubBasin")];

/// Where a lamp stands. `constants.py` lists no receptacle for lamps, but the PDDL toggles a lamp
/// only in a receptacle at the agent's location, so the generator stands each lamp on one of these.
pub const LAMP_STANDS: [&str; 6] = [
    "SideTable",
    "Desk",
    "Dresser",
    "Shelf",
    "CoffeeTable",
    "DiningTable",
];

/// Lamp types (ALFWorld's toggleable objects).
pub const LAMPS: [&str; 2] = ["DeskLamp", "FloorLamp"];

/// The rules of the world, from `constants.py` and `goal_library.py`.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Static receptacle type → object types it can contain (`VAL_RECEPTACLE_OBJECTS`, without
    /// the movable receptacles, which are objects here).
    pub containment: BTreeMap<String, BTreeSet<String>>,
    /// Object types an agent can pick up: every non-sliced object type some receptacle can hold.
    pub pickupable: BTreeSet<String>,
    pub openable: BTreeSet<String>,
    pub heatable: BTreeSet<String>,
    pub coolable: BTreeSet<String>,
    pub cleanable: BTreeSet<String>,
    pub toggleable: BTreeSet<String>,
    pub sliceable: BTreeSet<String>,
    pub movable_receptacles: BTreeSet<String>,
    pub train_scenes: Vec<u32>,
    pub test_scenes: Vec<u32>,
    /// Room type → scene numbers (`SCENE_TYPE`).
    pub scene_types: BTreeMap<String, BTreeSet<u32>>,
    /// Task type name → room types it may be generated in (`GOALS_VALID`).
    pub goals_valid: BTreeMap<String, BTreeSet<String>>,
    /// Task type → its two goal templates (`{obj}`, `{recep}`, `{toggle}`).
    pub templates: BTreeMap<TaskType, Vec<String>>,
    /// `MAX_NUM_OF_OBJ_INSTANCES`: most instances of a distractor type.
    pub max_instances: u32,
    /// `PICKUP_REPEAT_MAX`: most instances of the target type.
    pub pickup_repeat_max: u32,
}

impl Rules {
    pub fn can_contain(&self, receptacle: &str, object: &str) -> bool {
        self.containment
            .get(receptacle)
            .is_some_and(|objects| objects.contains(object))
    }

    /// The room type of a scene (`Kitchen`, `LivingRoom`, `Bedroom`, `Bathroom`).
    pub fn room_of(&self, scene: u32) -> Option<&str> {
        self.scene_types
            .iter()
            .find(|(_, scenes)| scenes.contains(&scene))
            .map(|(room, _)| room.as_str())
    }

    /// Whether `task_type` may be generated in `scene` (`GOALS_VALID`).
    pub fn goal_valid_in(&self, task_type: TaskType, scene: u32) -> bool {
        let Some(room) = self.room_of(scene) else {
            return false;
        };
        self.goals_valid
            .get(task_type.name())
            .is_some_and(|rooms| rooms.contains(room))
    }
}

/// One floor plan: the object types present and its receptacle instances.
#[derive(Debug, Clone)]
pub struct FloorPlan {
    pub scene: u32,
    /// Object types in `FloorPlanN-objects.json`, sorted.
    pub object_types: BTreeSet<String>,
    /// Static receptacle types with their instance counts (at least 1), from `-openable.json`
    /// (aliases applied), plus one instance of each static receptacle type the objects list names
    /// but the openable file lacks.
    pub receptacles: BTreeMap<String, u32>,
}

/// Everything the ALFWorld generator reads, loaded once.
#[derive(Debug, Clone)]
pub struct AlfworldData {
    pub dir: PathBuf,
    pub rules: Rules,
    pub plans: BTreeMap<u32, FloorPlan>,
}

/// `<data_dir>/data/alfworld`.
pub fn alfworld_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("data").join("alfworld")
}

impl AlfworldData {
    /// Loads `<data_dir>/data/alfworld/{constants.py,goal_library.py,layouts/}`. A missing
    /// installation says to run `ops/setup alfworld`; a corrupt file is named with what was
    /// expected.
    pub fn load(data_dir: &Path) -> Result<Self, EnvError> {
        let dir = alfworld_dir(data_dir);
        let missing: Vec<&str> = ["constants.py", "goal_library.py", "layouts"]
            .into_iter()
            .filter(|file| !dir.join(file).exists())
            .collect();
        if !missing.is_empty() {
            return Err(data_error(format!(
                "alfworld data is missing from {} ({}): run ops/setup alfworld",
                dir.display(),
                missing.join(", ")
            )));
        }
        let mut rules = load_constants(&dir.join("constants.py"))?;
        rules.templates = load_templates(&dir.join("goal_library.py"))?;
        let plans = load_plans(&dir.join("layouts"), &rules)?;
        tracing::debug!(dir = %dir.display(), floor_plans = plans.len(), "loaded alfworld data");
        Ok(Self { dir, rules, plans })
    }
}

fn read(path: &Path) -> Result<String, EnvError> {
    std::fs::read_to_string(path)
        .map_err(|error| data_error(format!("{}: cannot read ({error})", path.display())))
}

const CONSTANT_NAMES: [&str; 10] = [
    "MAX_NUM_OF_OBJ_INSTANCES",
    "PICKUP_REPEAT_MAX",
    "TRAIN_SCENE_NUMBERS",
    "TEST_SCENE_NUMBERS",
    "SCENE_TYPE",
    "GOALS_VALID",
    "MOVABLE_RECEPTACLES",
    "VAL_RECEPTACLE_OBJECTS",
    "VAL_ACTION_OBJECTS",
    "OPENABLE_CLASS_LIST",
];

fn load_constants(path: &Path) -> Result<Rules, EnvError> {
    let source = read(path)?;
    let module = PyModule::parse(path, &source, &CONSTANT_NAMES)?;
    let get = |name: &str| module.get(path, name);
    let expected = |name: &str, what: &str| {
        data_error(format!(
            "{}: expected `{name}` to be {what}",
            path.display()
        ))
    };
    let int = |name: &str| -> Result<u32, EnvError> {
        get(name)?
            .as_int()
            .and_then(|value| u32::try_from(value).ok())
            .filter(|value| *value > 0)
            .ok_or_else(|| expected(name, "a positive integer"))
    };
    let scenes = |name: &str| -> Result<Vec<u32>, EnvError> {
        scene_list(get(name)?).ok_or_else(|| expected(name, "a list of scene numbers"))
    };
    let string_set = |value: &PyValue| value.strings().map(BTreeSet::from_iter);
    let string_sets = |name: &str| -> Result<BTreeMap<String, BTreeSet<String>>, EnvError> {
        let PyValue::Dict(entries) = get(name)? else {
            return Err(expected(name, "a dict of string sets"));
        };
        entries
            .iter()
            .map(|(key, value)| {
                string_set(value)
                    .map(|set| (key.clone(), set))
                    .ok_or_else(|| expected(name, "a dict of string sets"))
            })
            .collect()
    };

    let movable_receptacles = string_set(get("MOVABLE_RECEPTACLES")?)
        .ok_or_else(|| expected("MOVABLE_RECEPTACLES", "a list of strings"))?;
    let mut containment = string_sets("VAL_RECEPTACLE_OBJECTS")?;
    containment.retain(|receptacle, _| !movable_receptacles.contains(receptacle));
    for table in [
        "DiningTable",
        "CounterTop",
        "Fridge",
        "Microwave",
        "SinkBasin",
    ] {
        if !containment.contains_key(table) {
            return Err(expected(
                "VAL_RECEPTACLE_OBJECTS",
                &format!("a dict with an entry for `{table}`"),
            ));
        }
    }
    // Sliced pieces only exist after slicing; they are never placed or picked up as such.
    let pickupable: BTreeSet<String> = containment
        .values()
        .flatten()
        .filter(|kind| !kind.ends_with("Sliced") && !containment.contains_key(*kind))
        .cloned()
        .collect();
    let actions = string_sets("VAL_ACTION_OBJECTS")?;
    let action = |name: &str| -> Result<BTreeSet<String>, EnvError> {
        actions
            .get(name)
            .cloned()
            .ok_or_else(|| expected("VAL_ACTION_OBJECTS", &format!("a dict with `{name}`")))
    };
    let scene_types = match get("SCENE_TYPE")? {
        PyValue::Dict(entries) => entries
            .iter()
            .map(|(room, value)| {
                scene_list(value)
                    .map(|scenes| (room.clone(), scenes.into_iter().collect()))
                    .ok_or_else(|| expected("SCENE_TYPE", "a dict of scene ranges"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(expected("SCENE_TYPE", "a dict of scene ranges")),
    };
    Ok(Rules {
        containment,
        pickupable,
        openable: string_set(get("OPENABLE_CLASS_LIST")?)
            .ok_or_else(|| expected("OPENABLE_CLASS_LIST", "a list of strings"))?,
        heatable: action("Heatable")?,
        coolable: action("Coolable")?,
        cleanable: action("Cleanable")?,
        toggleable: action("Toggleable")?,
        sliceable: action("Sliceable")?,
        movable_receptacles,
        train_scenes: scenes("TRAIN_SCENE_NUMBERS")?,
        test_scenes: scenes("TEST_SCENE_NUMBERS")?,
        scene_types,
        goals_valid: string_sets("GOALS_VALID")?,
        templates: BTreeMap::new(),
        max_instances: int("MAX_NUM_OF_OBJ_INSTANCES")?,
        pickup_repeat_max: int("PICKUP_REPEAT_MAX")?,
    })
}

fn scene_list(value: &PyValue) -> Option<Vec<u32>> {
    value
        .items()?
        .iter()
        .map(|item| item.as_int().and_then(|scene| u32::try_from(scene).ok()))
        .collect()
}

fn load_templates(path: &Path) -> Result<BTreeMap<TaskType, Vec<String>>, EnvError> {
    let source = read(path)?;
    let module = PyModule::parse(path, &source, &["gdict"])?;
    let gdict = module.get(path, "gdict")?;
    TaskType::ALL
        .into_iter()
        .map(|task_type| {
            let templates = gdict
                .get(task_type.name())
                .and_then(|entry| entry.get("templates"))
                .and_then(PyValue::strings)
                .filter(|templates| !templates.is_empty())
                .ok_or_else(|| {
                    data_error(format!(
                        "{}: expected gdict[\"{}\"] to have a non-empty 'templates' list",
                        path.display(),
                        task_type.name()
                    ))
                })?;
            Ok((task_type, templates))
        })
        .collect()
}

fn load_plans(layouts: &Path, rules: &Rules) -> Result<BTreeMap<u32, FloorPlan>, EnvError> {
    let scenes: BTreeSet<u32> = rules
        .train_scenes
        .iter()
        .chain(&rules.test_scenes)
        .copied()
        .collect();
    scenes
        .into_iter()
        .map(|scene| load_plan(layouts, scene, rules).map(|plan| (scene, plan)))
        .collect()
}

fn load_plan(layouts: &Path, scene: u32, rules: &Rules) -> Result<FloorPlan, EnvError> {
    let objects_path = layouts.join(format!("FloorPlan{scene}-objects.json"));
    let openable_path = layouts.join(format!("FloorPlan{scene}-openable.json"));
    let objects: Vec<String> = parse_json(&objects_path, "a JSON list of object type names")?;
    let openable: serde_json::Map<String, serde_json::Value> = parse_json(
        &openable_path,
        "a JSON object keyed by receptacle ids (`Type|x|y|z`)",
    )?;
    let alias = |kind: &str| -> String {
        RECEPTACLE_ALIASES
            .iter()
            .find(|(from, _)| *from == kind)
            .map_or(kind, |(_, to)| *to)
            .to_string()
    };
    let mut receptacles: BTreeMap<String, u32> = BTreeMap::new();
    for key in openable.keys() {
        let kind = alias(key.split('|').next().unwrap_or_default());
        if rules.containment.contains_key(&kind) {
            *receptacles.entry(kind).or_default() += 1;
        }
    }
    for kind in &objects {
        let kind = alias(kind);
        if rules.containment.contains_key(&kind) {
            receptacles.entry(kind).or_insert(1);
        }
    }
    if receptacles.is_empty() {
        return Err(data_error(format!(
            "{}: expected at least one receptacle (found none in it or {})",
            openable_path.display(),
            objects_path.display()
        )));
    }
    Ok(FloorPlan {
        scene,
        object_types: objects.into_iter().collect(),
        receptacles,
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T, EnvError> {
    let text = read(path)?;
    serde_json::from_str(&text)
        .map_err(|error| data_error(format!("{}: expected {what} ({error})", path.display())))
}
