//! Generated ALFWorld-format tasks through the factory and the `Environment` API: split shapes,
//! determinism, the expert on every task of every split, a random agent's score, options, limits,
//! errors for unknown ids and missing or corrupt data. Needs `ops/setup alfworld`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kiln_environments::alfworld::data::AlfworldData;
use kiln_environments::alfworld::generate::Rng;
use kiln_environments::alfworld::world::NOTHING_HAPPENS;
use kiln_environments::alfworld::{
    AlfworldFactory, DEFAULT_MAX_STEPS, DEFAULT_SEED, Generator, Split, TaskType,
};
use kiln_environments::{EnvContext, EnvErrorKind, EnvironmentFactory, catalog, default_data_dir};
use kiln_protocol::{Action, ModelSpec, Observation, TaskSpec, Termination};
use serde_json::{Value, json};

fn context() -> EnvContext {
    EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    }
}

fn generator(seed: u64) -> Generator {
    let data = AlfworldData::load(&default_data_dir())
        .unwrap_or_else(|error| panic!("{error} (run ops/setup alfworld)"));
    Generator::new(Arc::new(data), seed)
}

fn spec(task_id: &str, options: Value) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "alfworld-tests".to_string(),
        env: "alfworld".to_string(),
        split: "valid_unseen".to_string(),
        task_id: task_id.to_string(),
        attempt: 0,
        harness_hash: "none".to_string(),
        model: ModelSpec::Oracle,
        env_options: options,
        seed: 0,
        timeout_s: 0,
    }
}

fn say(text: &str) -> Action {
    Action::Message {
        text: text.to_string(),
    }
}

#[test]
fn splits_have_alfworld_shapes_and_stable_ids() {
    let factory = catalog::open("alfworld", &context()).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        factory
            .description()
            .contains("generated ALFWorld-format tasks")
    );
    let sizes: Vec<(String, usize)> = factory
        .splits()
        .into_iter()
        .map(|split| (split.name, split.tasks))
        .collect();
    assert_eq!(
        sizes,
        [
            ("train".to_string(), 3553),
            ("valid_seen".to_string(), 134),
            ("valid_unseen".to_string(), 134)
        ]
    );
    for split in ["valid_seen", "valid_unseen"] {
        let ids = factory.task_ids(split).unwrap();
        let mut per_type: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &ids {
            *per_type.entry(id.split('/').nth(1).unwrap()).or_default() += 1;
        }
        let expected = BTreeMap::from([
            ("pick_and_place_simple", 24),
            ("look_at_obj_in_light", 18),
            ("pick_clean_then_place_in_recep", 31),
            ("pick_heat_then_place_in_recep", 23),
            ("pick_cool_then_place_in_recep", 21),
            ("pick_two_obj_and_place", 17),
        ]);
        assert_eq!(per_type, expected, "{split}");
    }
    assert_eq!(
        factory.task_ids("valid_unseen").unwrap()[7],
        "valid_unseen/pick_and_place_simple/0007"
    );
    assert_eq!(
        factory.task_ids("test").unwrap_err().kind(),
        EnvErrorKind::UnknownSplit
    );
    assert_eq!(factory.default_split(), "valid_unseen");
}

#[test]
fn the_same_seed_gives_the_same_tasks_and_another_seed_others() {
    let (first, again, other) = (
        generator(DEFAULT_SEED),
        generator(DEFAULT_SEED),
        generator(7),
    );
    let mut differing = 0;
    for id in Split::ValidUnseen.task_ids() {
        let a = first.task(&id).unwrap();
        let b = again.task(&id).unwrap();
        assert_eq!(a.intro(), b.intro(), "{id}");
        assert_eq!(a.expert, b.expert, "{id}");
        assert_eq!(
            format!("{:?}", a.world.objects),
            format!("{:?}", b.world.objects)
        );
        if other.task(&id).unwrap().intro() != a.intro()
            || other.task(&id).unwrap().expert != a.expert
        {
            differing += 1;
        }
    }
    assert!(
        differing > 120,
        "only {differing} of 134 tasks change with the seed"
    );
}

#[test]
fn valid_unseen_uses_held_out_scenes_and_the_others_training_scenes() {
    let generator = generator(DEFAULT_SEED);
    let data = AlfworldData::load(&default_data_dir()).unwrap();
    for (split, scenes) in [
        (Split::ValidUnseen, &data.rules.test_scenes),
        (Split::ValidSeen, &data.rules.train_scenes),
    ] {
        for id in split.task_ids() {
            let task = generator.task(&id).unwrap();
            assert!(scenes.contains(&task.scene), "{id} in scene {}", task.scene);
            let room = data.rules.room_of(task.scene).unwrap();
            assert!(
                data.rules.goals_valid[task.task_type.name()].contains(room),
                "{id}: {room}"
            );
        }
    }
}

#[test]
fn generated_tasks_read_like_alfworld_games() {
    let generator = generator(DEFAULT_SEED);
    for task_type in TaskType::ALL {
        let task = generator
            .generate(Split::ValidUnseen, task_type, 0)
            .unwrap();
        let intro = task.intro();
        let (welcome, rest) = intro.split_once("\n\n").unwrap();
        assert_eq!(welcome, "-= Welcome to TextWorld, ALFRED! =-");
        let (room, goal) = rest.split_once("\n\n").unwrap();
        assert!(
            room.starts_with(
                "You are in the middle of a room. Looking quickly around you, you see a "
            ),
            "{room}"
        );
        assert!(room.ends_with('.') && room.contains(", and a "), "{room}");
        assert!(
            goal.starts_with("Your task is to: ") && goal.ends_with('.'),
            "{goal}"
        );
        let templates: &[&str] = match task_type {
            TaskType::PickAndPlaceSimple => &["put a ", "put some "],
            TaskType::LookAtObjInLight => &["look at ", "examine the "],
            TaskType::PickCleanThenPlaceInRecep => &["put a clean ", "clean some "],
            TaskType::PickHeatThenPlaceInRecep => &["put a hot ", "heat some "],
            TaskType::PickCoolThenPlaceInRecep => &["put a cool ", "cool some "],
            TaskType::PickTwoObjAndPlace => &["put two ", "find two "],
        };
        let sentence = goal.trim_start_matches("Your task is to: ");
        assert!(
            templates.iter().any(|start| sentence.starts_with(start)),
            "{task_type:?}: {sentence}"
        );
        println!("{}\n  expert: {:?}\n", intro, task.expert);
    }
}

/// Runs the expert on every task of `split` through the world, checking every command does
/// something and the goal holds at the end, within the step limit.
fn expert_solves_every_task(split: Split) {
    let generator = generator(DEFAULT_SEED);
    let mut steps = 0;
    for id in split.task_ids() {
        let task = generator
            .task(&id)
            .unwrap_or_else(|error| panic!("{error}"));
        let mut world = task.world.clone();
        assert!(!world.goal_met(), "{id} starts solved");
        assert!(task.expert.len() <= DEFAULT_MAX_STEPS as usize, "{id}");
        for command in &task.expert {
            assert!(
                world.admissible_commands().contains(command),
                "{id}: expert command `{command}` is not admissible"
            );
            assert_ne!(world.step(command), NOTHING_HAPPENS, "{id}: `{command}`");
        }
        assert!(world.goal_met(), "{id}: expert did not reach the goal");
        steps += task.expert.len();
    }
    println!(
        "{}: expert solved {} of {} tasks, {:.1} steps on average",
        split.name(),
        split.size(),
        split.size(),
        steps as f64 / split.size() as f64
    );
}

#[test]
fn the_expert_solves_every_valid_unseen_task() {
    expert_solves_every_task(Split::ValidUnseen);
}

#[test]
fn the_expert_solves_every_valid_seen_task() {
    expert_solves_every_task(Split::ValidSeen);
}

#[test]
fn the_expert_solves_every_train_task() {
    expert_solves_every_task(Split::Train);
}

/// A uniformly random agent over the admissible commands (seeded, 50 steps).
fn random_success_rate(split: Split, seed: u64) -> f64 {
    let generator = generator(DEFAULT_SEED);
    let mut rng = Rng::new(seed);
    let ids = split.task_ids();
    let mut solved = 0;
    for id in &ids {
        let mut world = generator.task(id).unwrap().world;
        for _ in 0..DEFAULT_MAX_STEPS {
            let admissible = world.admissible_commands();
            let command = rng.pick(&admissible).unwrap().clone();
            world.step(&command);
            if world.goal_met() {
                solved += 1;
                break;
            }
        }
    }
    solved as f64 / ids.len() as f64
}

#[test]
fn a_random_agent_scores_far_below_the_expert() {
    for split in Split::ALL {
        let rate = random_success_rate(split, 11);
        println!(
            "random agent on {}: {:.1}% success (expert: 100%)",
            split.name(),
            rate * 100.0
        );
        assert!(
            rate < 0.15,
            "{}: random agent solved {:.1}%",
            split.name(),
            rate * 100.0
        );
    }
}

#[tokio::test]
async fn an_episode_through_the_environment_api_scores_the_oracle_plan() {
    let factory = AlfworldFactory::new(&context());
    let id = "valid_unseen/pick_heat_then_place_in_recep/0003";
    let mut env = factory.create(&Value::Null).unwrap();
    let info = env.reset(&spec(id, Value::Null)).await.unwrap();
    assert_eq!(info.env, "alfworld");
    assert!(info.tools.is_empty());
    assert!(
        info.instructions
            .contains("put (object) in/on (receptacle)")
    );
    assert_eq!(info.opening.len(), 1);
    assert!(
        info.opening[0]
            .content
            .starts_with("-= Welcome to TextWorld, ALFRED! =-")
    );
    let admissible = info.admissible_actions.unwrap();
    assert!(admissible.contains(&"look".to_string()));
    assert!(
        admissible
            .iter()
            .all(|command| !command.starts_with("take "))
    );

    let plan = env.oracle_plan().unwrap();
    assert!(!plan.is_empty());
    for (index, action) in plan.iter().enumerate() {
        let result = env.step(action).await.unwrap();
        let Observation::Text { text } = &result.observation else {
            panic!("text observation expected");
        };
        assert_ne!(text, NOTHING_HAPPENS);
        assert!(result.admissible_actions.is_some());
        let last = index + 1 == plan.len();
        assert_eq!(result.done, last, "step {index}: {text}");
        if last {
            assert_eq!(result.termination, Some(Termination::EnvDone));
            assert_eq!(result.info["won"], json!(true));
            assert_eq!(result.info["reward"], json!(1.0));
        }
    }
    let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
    assert_eq!(evaluation.reward, 1.0);
    assert!(evaluation.success && evaluation.success_judged_only);
    assert_eq!(evaluation.components["goal"].value, Some(1.0));
    assert_eq!(evaluation.info["note"], "generated ALFWorld-format task");
    assert_eq!(
        evaluation.info["task_type"],
        "pick_heat_then_place_in_recep"
    );
    // Stepping a finished episode is a state error, not a crash.
    assert_eq!(
        env.step(&say("look")).await.unwrap_err().kind(),
        EnvErrorKind::State
    );
}

#[tokio::test]
async fn the_step_limit_ends_an_unsolved_episode_with_reward_zero() {
    let factory = AlfworldFactory::new(&context());
    let options = json!({ "max_steps": 3 });
    let mut env = factory.create(&options).unwrap();
    let id = "valid_seen/pick_and_place_simple/0000";
    env.reset(&spec(id, options.clone())).await.unwrap();
    let first = env.step(&say("jump around")).await.unwrap();
    assert_eq!(first.observation.text(), NOTHING_HAPPENS);
    assert!(!first.done);
    let tool_call = Action::ToolCall {
        call: kiln_protocol::ToolCall {
            id: "c1".to_string(),
            name: "look".to_string(),
            arguments: json!({}),
        },
    };
    let second = env.step(&tool_call).await.unwrap();
    assert!(second.observation.text().starts_with("Nothing happens."));
    assert!(!second.done);
    let third = env.step(&say("look")).await.unwrap();
    assert!(third.done);
    assert_eq!(third.termination, Some(Termination::MaxSteps));
    let evaluation = env.evaluate(Termination::MaxSteps).await.unwrap();
    assert_eq!(evaluation.reward, 0.0);
    assert!(!evaluation.success);
    assert!(
        evaluation.components["goal"]
            .detail
            .as_deref()
            .unwrap()
            .contains("not met after 3 steps")
    );

    // The default limit is 50.
    let mut env = factory.create(&Value::Null).unwrap();
    env.reset(&spec(id, Value::Null)).await.unwrap();
    for step in 1..=50 {
        let result = env.step(&say("look")).await.unwrap();
        assert_eq!(result.done, step == 50, "step {step}");
    }
}

#[tokio::test]
async fn bad_options_unknown_ids_and_early_calls_are_clear_errors() {
    let factory = AlfworldFactory::new(&context());
    for (options, needle) in [
        (
            json!({ "max_steps": 0 }),
            "max_steps must be a positive integer",
        ),
        (
            json!({ "max_steps": "ten" }),
            "max_steps must be a positive integer",
        ),
        (json!({ "steps": 5 }), "unknown alfworld option `steps`"),
        (json!([1]), "must be a JSON object"),
        (json!({ "user": "model" }), "alfworld has no simulated user"),
    ] {
        let error = factory.create(&options).err().unwrap();
        assert_eq!(error.kind(), EnvErrorKind::InvalidOptions);
        assert!(error.to_string().contains(needle), "{error}");
    }
    // What `kiln run` passes to every environment.
    for user in ["scripted", "none"] {
        factory.create(&json!({ "user": user })).unwrap();
    }
    let mut env = factory.create(&Value::Null).unwrap();
    assert_eq!(
        env.step(&say("look")).await.unwrap_err().kind(),
        EnvErrorKind::State
    );
    assert_eq!(
        env.evaluate(Termination::AgentStop)
            .await
            .unwrap_err()
            .kind(),
        EnvErrorKind::State
    );
    for id in [
        "valid_unseen/pick_and_place_simple/0024",
        "valid_unseen/pick_and_place_simple/7",
        "trial_T20190909_070538_437648",
        "",
    ] {
        let error = env.reset(&spec(id, Value::Null)).await.unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::UnknownTask, "{id}");
        assert!(error.to_string().contains(&format!("`{id}`")), "{error}");
    }
    assert!(env.oracle_plan().is_none());
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the installed data under a fresh `$KILN_HOME`-like directory.
fn data_copy() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    copy_tree(
        &default_data_dir().join("data").join("alfworld"),
        &home.path().join("data").join("alfworld"),
    );
    home
}

fn open_error(home: &Path) -> String {
    let ctx = EnvContext {
        data_dir: home.to_path_buf(),
        ..EnvContext::default()
    };
    let error = catalog::open("alfworld", &ctx).err().unwrap();
    assert_eq!(error.kind(), EnvErrorKind::Data, "{error}");
    error.to_string()
}

#[test]
fn missing_and_corrupt_data_files_are_named() {
    let empty = tempfile::tempdir().unwrap();
    let message = open_error(empty.path());
    assert!(message.contains("run ops/setup alfworld"), "{message}");
    let ctx = EnvContext {
        data_dir: empty.path().to_path_buf(),
        ..EnvContext::default()
    };
    let listed = AlfworldFactory::new(&ctx);
    assert!(listed.splits().is_empty());
    assert_eq!(
        listed.task_ids("train").unwrap_err().kind(),
        EnvErrorKind::Data
    );

    let home = data_copy();
    let constants = home.path().join("data/alfworld/constants.py");
    let source = std::fs::read_to_string(&constants).unwrap();
    std::fs::write(
        &constants,
        source.replace("OPENABLE_CLASS_LIST = [", "OPENABLE_CLASS_LIST = [["),
    )
    .unwrap();
    let message = open_error(home.path());
    assert!(
        message.contains("constants.py:") && message.contains("expected"),
        "{message}"
    );

    std::fs::write(
        &constants,
        source.replace("MAX_NUM_OF_OBJ_INSTANCES", "MAX_INSTANCES"),
    )
    .unwrap();
    let message = open_error(home.path());
    assert!(message.contains("`MAX_NUM_OF_OBJ_INSTANCES`"), "{message}");
    std::fs::write(&constants, &source).unwrap();

    let layout = home
        .path()
        .join("data/alfworld/layouts/FloorPlan402-objects.json");
    std::fs::write(&layout, "{\"not\": \"a list\"").unwrap();
    let message = open_error(home.path());
    assert!(
        message.contains("FloorPlan402-objects.json: expected a JSON list"),
        "{message}"
    );
    std::fs::remove_file(&layout).unwrap();
    let message = open_error(home.path());
    assert!(
        message.contains("FloorPlan402-objects.json: cannot read"),
        "{message}"
    );

    let home = data_copy();
    let goals = home.path().join("data/alfworld/goal_library.py");
    let source = std::fs::read_to_string(&goals).unwrap();
    std::fs::write(
        &goals,
        source.replace("gdict[\"look_at_obj_in_light\"]", "gdict[\"look\"]"),
    )
    .unwrap();
    let message = open_error(home.path());
    assert!(
        message.contains("goal_library.py: expected gdict[\"look_at_obj_in_light\"]"),
        "{message}"
    );
}

/// The published `valid_unseen` split, pinned: a change to the generator, the data files or the
/// text format that changes any task shows here (update the digest deliberately, and say so).
#[test]
fn the_published_valid_unseen_split_is_pinned() {
    use sha2::{Digest, Sha256};
    let generator = generator(DEFAULT_SEED);
    let mut hasher = Sha256::new();
    for id in Split::ValidUnseen.task_ids() {
        let task = generator.task(&id).unwrap();
        hasher.update(format!(
            "{id}\n{}\n{}\n",
            task.intro(),
            task.expert.join("|")
        ));
    }
    let digest = hex::encode(hasher.finalize());
    println!("valid_unseen digest: {digest}");
    assert_eq!(digest, PINNED_VALID_UNSEEN);
}

const PINNED_VALID_UNSEEN: &str =
    "f6998c2466dc4234869c7ebe7d905f884b6296d5b30c6f16aea6c1e2da889f4d";

#[test]
fn the_shipped_constants_read_as_alfworld_states_them() {
    let data = AlfworldData::load(&default_data_dir()).unwrap();
    let rules = &data.rules;
    assert_eq!(rules.train_scenes.len(), 96);
    assert_eq!(rules.test_scenes.len(), 24);
    assert!(
        rules
            .test_scenes
            .iter()
            .all(|scene| !rules.train_scenes.contains(scene))
    );
    assert_eq!(data.plans.len(), 120);
    assert_eq!((rules.max_instances, rules.pickup_repeat_max), (3, 4));
    // `VAL_RECEPTACLE_OBJECTS['DiningTable'] = VAL_RECEPTACLE_OBJECTS['TableTop']`, then deleted.
    assert_eq!(
        rules.containment["DiningTable"],
        rules.containment["SideTable"]
    );
    assert!(!rules.containment.contains_key("TableTop"));
    // Movable receptacles are objects here.
    assert!(!rules.containment.contains_key("Mug") && rules.pickupable.contains("Mug"));
    assert!(rules.can_contain("Fridge", "Apple") && !rules.can_contain("Cabinet", "Apple"));
    assert!(rules.heatable.contains("Potato") && !rules.heatable.contains("Lettuce"));
    assert!(rules.coolable.contains("WineBottle") && rules.cleanable.contains("Kettle"));
    assert_eq!(
        rules
            .toggleable
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["DeskLamp", "FloorLamp"]
    );
    assert_eq!(
        rules
            .openable
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["Box", "Cabinet", "Drawer", "Fridge", "Microwave", "Safe"]
    );
    assert_eq!(rules.room_of(301), Some("Bedroom"));
    assert!(rules.goal_valid_in(TaskType::PickHeatThenPlaceInRecep, 5));
    assert!(!rules.goal_valid_in(TaskType::PickHeatThenPlaceInRecep, 205));
    assert_eq!(
        rules.templates[&TaskType::LookAtObjInLight],
        [
            "look at {obj} under the {toggle}",
            "examine the {obj} with the {toggle}"
        ]
    );
    // Floor plan 1: sinks are sink basins, and types without an instance file entry get one.
    let kitchen = &data.plans[&1];
    assert!(
        kitchen.receptacles.contains_key("SinkBasin") && !kitchen.receptacles.contains_key("Sink")
    );
    assert_eq!(kitchen.receptacles["Cabinet"], 8);
    assert_eq!(kitchen.receptacles["CoffeeMachine"], 1);
}

#[test]
fn valid_seen_games_are_new_games_in_training_scenes() {
    let generator = generator(DEFAULT_SEED);
    let fingerprint = |id: &str| {
        let task = generator.task(id).unwrap();
        format!("{}|{}|{:?}", task.scene, task.goal_text, task.world.objects)
    };
    let train: std::collections::HashSet<String> = Split::Train
        .task_ids()
        .iter()
        .map(|id| fingerprint(id))
        .collect();
    for id in Split::ValidSeen.task_ids() {
        assert!(
            !train.contains(&fingerprint(&id)),
            "{id} repeats a train game"
        );
    }
}

/// On generated games of every type, at every state along the expert's path (hands full,
/// receptacles open, appliances used, lamps on), the admissible commands are exactly the
/// commands of the whole command space that do something when stepped on a clone.
#[test]
fn admissible_commands_match_stepping_on_generated_games() {
    let generator = generator(DEFAULT_SEED);
    for task_type in TaskType::ALL {
        let task = generator
            .generate(Split::ValidUnseen, task_type, 1)
            .unwrap();
        let mut world = task.world.clone();
        let space = world.all_commands();
        for step in 0..=task.expert.len() {
            let admissible = world.admissible_commands();
            let valid: Vec<&String> = space
                .iter()
                .filter(|command| world.clone().step(command) != NOTHING_HAPPENS)
                .collect();
            let mut expected: Vec<&String> = admissible.iter().collect();
            expected.sort();
            let mut found = valid.clone();
            found.sort();
            found.dedup();
            assert_eq!(found, expected, "{} at step {step}", task.id);
            if let Some(command) = task.expert.get(step) {
                world.step(command);
            }
        }
    }
}
