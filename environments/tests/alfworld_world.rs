//! ALFWorld commands on a hand-built room with the real type rules: every precondition and
//! feedback string pinned, list rendering, "Nothing happens." for anything invalid, and
//! admissible commands that are exactly the commands that do something. Needs `ops/setup alfworld`.

use std::sync::Arc;

use kiln_environments::alfworld::data::AlfworldData;
use kiln_environments::alfworld::generate::Rng;
use kiln_environments::alfworld::world::{
    Goal, NOTHING_HAPPENS, Object, Place, Receptacle, Treatment, World,
};
use kiln_environments::default_data_dir;

const COUNTERTOP: usize = 0;
const CABINET: usize = 1;
const FRIDGE: usize = 2;
const SINKBASIN: usize = 4;
const SIDETABLE: usize = 5;

fn receptacle(name: &str, kind: &str, openable: bool) -> Receptacle {
    Receptacle {
        name: name.to_string(),
        kind: kind.to_string(),
        openable,
        open: false,
        contents: Vec::new(),
    }
}

fn object(name: &str, kind: &str, holder: usize) -> Object {
    Object {
        name: name.to_string(),
        kind: kind.to_string(),
        place: Place::In(holder),
        clean: false,
        hot: false,
        cool: false,
        sliced: false,
        toggled: false,
    }
}

/// A kitchen-and-study room: countertop 1 (apple 1, knife 1), cabinet 1 (mug 1, closed),
/// fridge 1 (potato 1, closed), microwave 1, sinkbasin 1, sidetable 1 (desklamp 1, book 1).
fn room(goal: Goal) -> World {
    let data = AlfworldData::load(&default_data_dir())
        .unwrap_or_else(|error| panic!("{error} (run ops/setup alfworld)"));
    let receptacles = vec![
        receptacle("countertop 1", "CounterTop", false),
        receptacle("cabinet 1", "Cabinet", true),
        receptacle("fridge 1", "Fridge", true),
        receptacle("microwave 1", "Microwave", true),
        receptacle("sinkbasin 1", "SinkBasin", false),
        receptacle("sidetable 1", "SideTable", false),
    ];
    let objects = vec![
        object("apple 1", "Apple", COUNTERTOP),
        object("knife 1", "Knife", COUNTERTOP),
        object("mug 1", "Mug", CABINET),
        object("potato 1", "Potato", FRIDGE),
        object("desklamp 1", "DeskLamp", SIDETABLE),
        object("book 1", "Book", SIDETABLE),
    ];
    World::new(Arc::new(data.rules), receptacles, objects, goal)
}

fn apple_in_fridge() -> Goal {
    Goal::Place {
        object: "Apple".to_string(),
        receptacle: "Fridge".to_string(),
        state: None,
    }
}

fn steps(world: &mut World, commands: &[(&str, &str)]) {
    for (command, expected) in commands {
        assert_eq!(world.step(command), *expected, "after `{command}`");
    }
}

#[test]
fn the_intro_has_alfworld_text_format() {
    let world = room(apple_in_fridge());
    assert_eq!(
        world.intro("put a apple in fridge."),
        "-= Welcome to TextWorld, ALFRED! =-\n\n\
         You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a \
         countertop 1, a fridge 1, a microwave 1, a sidetable 1, and a sinkbasin 1.\n\n\
         Your task is to: put a apple in fridge."
    );
}

#[test]
fn go_to_open_close_and_examine_describe_receptacles() {
    let mut world = room(apple_in_fridge());
    steps(
        &mut world,
        &[
            (
                "go to countertop 1",
                "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1.",
            ),
            ("go to countertop 1", NOTHING_HAPPENS),
            ("open countertop 1", NOTHING_HAPPENS),
            ("open cabinet 1", NOTHING_HAPPENS),
            (
                "go to cabinet 1",
                "You arrive at cabinet 1. The cabinet 1 is closed.",
            ),
            ("examine cabinet 1", "The cabinet 1 is closed."),
            ("close cabinet 1", NOTHING_HAPPENS),
            (
                "open cabinet 1",
                "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1.",
            ),
            ("open cabinet 1", NOTHING_HAPPENS),
            (
                "examine cabinet 1",
                "The cabinet 1 is open. In it, you see a mug 1.",
            ),
            ("examine countertop 1", NOTHING_HAPPENS),
            ("close cabinet 1", "You close the cabinet 1."),
            (
                "go to microwave 1",
                "You arrive at microwave 1. The microwave 1 is closed.",
            ),
            (
                "open microwave 1",
                "You open the microwave 1. The microwave 1 is open. In it, you see nothing.",
            ),
            (
                "go to sinkbasin 1",
                "You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing.",
            ),
            (
                "go to sidetable 1",
                "You arrive at sidetable 1. On the sidetable 1, you see a desklamp 1, and a book 1.",
            ),
            (
                "go to cabinet 1",
                "You arrive at cabinet 1. The cabinet 1 is closed.",
            ),
        ],
    );
    // Open receptacles stay open and say so on arrival.
    steps(
        &mut world,
        &[(
            "go to microwave 1",
            "You arrive at microwave 1. The microwave 1 is open. In it, you see nothing.",
        )],
    );
}

#[test]
fn take_needs_empty_hands_presence_and_an_open_receptacle() {
    let mut world = room(apple_in_fridge());
    steps(
        &mut world,
        &[
            // Not at the countertop.
            ("take apple 1 from countertop 1", NOTHING_HAPPENS),
            (
                "go to cabinet 1",
                "You arrive at cabinet 1. The cabinet 1 is closed.",
            ),
            // The cabinet is closed.
            ("take mug 1 from cabinet 1", NOTHING_HAPPENS),
            (
                "open cabinet 1",
                "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1.",
            ),
            (
                "take mug 1 from cabinet 1",
                "You pick up the mug 1 from the cabinet 1.",
            ),
            (
                "go to countertop 1",
                "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1.",
            ),
            // Hands are full.
            ("take apple 1 from countertop 1", NOTHING_HAPPENS),
            // The object is not in that receptacle.
            ("take potato 1 from countertop 1", NOTHING_HAPPENS),
            (
                "put mug 1 in/on countertop 1",
                "You put the mug 1 in/on the countertop 1.",
            ),
            (
                "take apple 1 from countertop 1",
                "You pick up the apple 1 from the countertop 1.",
            ),
            (
                "examine countertop 1",
                "On the countertop 1, you see a knife 1, and a mug 1.",
            ),
            (
                "go to sidetable 1",
                "You arrive at sidetable 1. On the sidetable 1, you see a desklamp 1, and a book 1.",
            ),
        ],
    );
    // Lamps cannot be picked up, even with empty hands.
    world.step("put apple 1 in/on sidetable 1");
    assert_eq!(
        world.step("take desklamp 1 from sidetable 1"),
        NOTHING_HAPPENS
    );
}

#[test]
fn put_needs_the_object_held_an_open_receptacle_and_a_compatible_type() {
    let mut world = room(apple_in_fridge());
    steps(
        &mut world,
        &[
            (
                "go to countertop 1",
                "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1.",
            ),
            // Not held.
            ("put apple 1 in/on countertop 1", NOTHING_HAPPENS),
            (
                "take apple 1 from countertop 1",
                "You pick up the apple 1 from the countertop 1.",
            ),
            (
                "go to cabinet 1",
                "You arrive at cabinet 1. The cabinet 1 is closed.",
            ),
            (
                "open cabinet 1",
                "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1.",
            ),
            // Cabinets cannot hold apples (constants.py).
            ("put apple 1 in/on cabinet 1", NOTHING_HAPPENS),
            (
                "go to fridge 1",
                "You arrive at fridge 1. The fridge 1 is closed.",
            ),
            // Closed.
            ("put apple 1 in/on fridge 1", NOTHING_HAPPENS),
            // 0.4 wording is not this environment's command.
            ("move apple 1 to fridge 1", NOTHING_HAPPENS),
            (
                "open fridge 1",
                "You open the fridge 1. The fridge 1 is open. In it, you see a potato 1.",
            ),
            // Not at the countertop any more.
            ("put apple 1 in/on countertop 1", NOTHING_HAPPENS),
        ],
    );
    assert!(!world.goal_met());
    assert_eq!(
        world.step("put apple 1 in/on fridge 1"),
        "You put the apple 1 in/on the fridge 1."
    );
    assert!(world.goal_met());
    assert_eq!(
        world.step("examine fridge 1"),
        "The fridge 1 is open. In it, you see a potato 1, and a apple 1."
    );
}

#[test]
fn heat_cool_and_clean_need_the_object_held_at_the_right_appliance() {
    let mut world = room(Goal::Place {
        object: "Apple".to_string(),
        receptacle: "CounterTop".to_string(),
        state: Some(Treatment::Heat),
    });
    steps(
        &mut world,
        &[
            (
                "go to countertop 1",
                "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1.",
            ),
            (
                "take apple 1 from countertop 1",
                "You pick up the apple 1 from the countertop 1.",
            ),
            // Not at an appliance.
            ("heat apple 1 with microwave 1", NOTHING_HAPPENS),
            (
                "go to microwave 1",
                "You arrive at microwave 1. The microwave 1 is closed.",
            ),
            // Wrong appliance for the verb.
            ("cool apple 1 with microwave 1", NOTHING_HAPPENS),
            ("clean apple 1 with microwave 1", NOTHING_HAPPENS),
            // The microwave need not be open (alfred.pddl).
            (
                "heat apple 1 with microwave 1",
                "You heat the apple 1 using the microwave 1.",
            ),
            ("examine apple 1", "This is a hot apple 1."),
            (
                "go to fridge 1",
                "You arrive at fridge 1. The fridge 1 is closed.",
            ),
            (
                "cool apple 1 with fridge 1",
                "You cool the apple 1 using the fridge 1.",
            ),
            // Cooling cleared hot.
            ("examine apple 1", "This is a cold apple 1."),
            (
                "go to sinkbasin 1",
                "You arrive at sinkbasin 1. On the sinkbasin 1, you see nothing.",
            ),
            (
                "clean apple 1 with sinkbasin 1",
                "You clean the apple 1 using the sinkbasin 1.",
            ),
            ("examine apple 1", "This is a cool and clean apple 1."),
            (
                "go to microwave 1",
                "You arrive at microwave 1. The microwave 1 is closed.",
            ),
            (
                "heat apple 1 with microwave 1",
                "You heat the apple 1 using the microwave 1.",
            ),
            // Heating cleared cold.
            ("examine apple 1", "This is a hot and clean apple 1."),
            (
                "go to countertop 1",
                "You arrive at countertop 1. On the countertop 1, you see a knife 1.",
            ),
        ],
    );
    assert!(!world.goal_met());
    world.step("put apple 1 in/on countertop 1");
    assert!(world.goal_met());
    // Not held any more: no appliance works on it.
    world.step("go to microwave 1");
    assert_eq!(world.step("heat apple 1 with microwave 1"), NOTHING_HAPPENS);
    // Books are not heatable.
    let mut world = room(apple_in_fridge());
    world.step("go to sidetable 1");
    world.step("take book 1 from sidetable 1");
    world.step("go to microwave 1");
    assert_eq!(world.step("heat book 1 with microwave 1"), NOTHING_HAPPENS);
}

#[test]
fn use_turns_on_a_lamp_at_the_agents_location() {
    let mut world = room(Goal::LookInLight {
        object: "Book".to_string(),
        lamp: "DeskLamp".to_string(),
    });
    steps(
        &mut world,
        &[
            ("use desklamp 1", NOTHING_HAPPENS),
            (
                "go to sidetable 1",
                "You arrive at sidetable 1. On the sidetable 1, you see a desklamp 1, and a book 1.",
            ),
            ("examine desklamp 1", "This desklamp 1 is off."),
            ("use book 1", NOTHING_HAPPENS),
            ("use desklamp 1", "You turn on the desklamp 1."),
            ("examine desklamp 1", "This desklamp 1 is on."),
        ],
    );
    assert!(!world.goal_met(), "the book is not held yet");
    world.step("take book 1 from sidetable 1");
    assert!(world.goal_met());
    world.step("go to countertop 1");
    assert!(!world.goal_met(), "the lamp is not at the agent's location");
}

#[test]
fn inventory_look_examine_and_slice_feedback() {
    let mut world = room(apple_in_fridge());
    steps(
        &mut world,
        &[
            ("inventory", "You are not carrying anything."),
            (
                "look",
                "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, \
                 a countertop 1, a fridge 1, a microwave 1, a sidetable 1, and a sinkbasin 1.",
            ),
            // Not visible from the middle of the room.
            ("examine apple 1", NOTHING_HAPPENS),
            (
                "go to countertop 1",
                "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1.",
            ),
            (
                "look",
                "You are facing the countertop 1. Next to it, you see nothing.",
            ),
            ("examine knife 1", "There's nothing special about knife 1."),
            ("slice apple 1 with knife 1", NOTHING_HAPPENS),
            (
                "take knife 1 from countertop 1",
                "You pick up the knife 1 from the countertop 1.",
            ),
            ("inventory", "You are carrying: a knife 1."),
            ("slice knife 1 with apple 1", NOTHING_HAPPENS),
            (
                "slice apple 1 with knife 1",
                "You sliced the apple 1 with the knife 1.",
            ),
            ("examine apple 1", "This is a sliced apple 1."),
            (
                "go to cabinet 1",
                "You arrive at cabinet 1. The cabinet 1 is closed.",
            ),
            // In a closed cabinet: not visible.
            ("examine mug 1", NOTHING_HAPPENS),
            (
                "open cabinet 1",
                "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 1.",
            ),
            (
                "examine mug 1",
                "This is a normal mug 1. In it, you see nothing.",
            ),
            ("examine knife 1", "There's nothing special about knife 1."),
        ],
    );
}

#[test]
fn anything_else_is_nothing_happens_and_changes_nothing() {
    let mut world = room(apple_in_fridge());
    world.step("go to countertop 1");
    let before = format!("{:?}", (&world.receptacles, &world.objects, world.at));
    for text in [
        "",
        "   ",
        "go to",
        "go to moon 1",
        "Go to countertop 1",
        "go to countertop 9",
        "go to apple 1",
        "take apple 1",
        "take apple 1 from",
        "take countertop 1 from apple 1",
        "put apple 1 on countertop 1",
        "help",
        "jump",
        "heat apple 1",
        "slice apple 1 with apple 1",
        "examine",
        "examine nothing 1",
        "inventory please",
        "look around",
        "\u{0}\u{7f}💥",
    ] {
        assert_eq!(world.step(text), NOTHING_HAPPENS, "`{text}`");
    }
    assert_eq!(
        before,
        format!("{:?}", (&world.receptacles, &world.objects, world.at))
    );
    // Surrounding whitespace is trimmed.
    assert_eq!(
        world.step("  look \n"),
        "You are facing the countertop 1. Next to it, you see nothing."
    );
}

#[test]
fn goals_of_every_kind_hold_exactly_when_they_should() {
    let mut two = room(Goal::PlaceTwo {
        object: "Apple".to_string(),
        receptacle: "Fridge".to_string(),
    });
    assert!(!two.goal_met());
    two.objects.push(object("apple 2", "Apple", SINKBASIN));
    let mut two = World::new(
        Arc::new(two.rules().clone()),
        two.receptacles.clone(),
        two.objects.clone(),
        two.goal.clone(),
    );
    for command in [
        "go to fridge 1",
        "open fridge 1",
        "go to countertop 1",
        "take apple 1 from countertop 1",
        "go to fridge 1",
        "put apple 1 in/on fridge 1",
    ] {
        assert_ne!(two.step(command), NOTHING_HAPPENS, "{command}");
    }
    assert!(!two.goal_met(), "one apple is not two");
    for command in [
        "go to sinkbasin 1",
        "take apple 2 from sinkbasin 1",
        "go to fridge 1",
        "put apple 2 in/on fridge 1",
    ] {
        assert_ne!(two.step(command), NOTHING_HAPPENS, "{command}");
    }
    assert!(two.goal_met());

    let mut clean = room(Goal::Place {
        object: "Apple".to_string(),
        receptacle: "CounterTop".to_string(),
        state: Some(Treatment::Clean),
    });
    assert!(
        !clean.goal_met(),
        "the apple starts on the countertop but not clean"
    );
    for command in [
        "go to countertop 1",
        "take apple 1 from countertop 1",
        "go to sinkbasin 1",
        "clean apple 1 with sinkbasin 1",
        "go to countertop 1",
        "put apple 1 in/on countertop 1",
    ] {
        assert_ne!(clean.step(command), NOTHING_HAPPENS, "{command}");
    }
    assert!(clean.goal_met());
}

/// Admissible commands, checked against the whole command space by stepping a clone with each:
/// a command is admissible exactly when it does not answer "Nothing happens.".
#[test]
fn admissible_commands_are_exactly_the_commands_that_do_something() {
    let start = room(apple_in_fridge());
    let space = start.all_commands();
    assert!(space.len() > 200, "{}", space.len());
    let mut rng = Rng::new(5);
    for walk in 0..6 {
        let mut world = start.clone();
        for step in 0..30 {
            let admissible = world.admissible_commands();
            let mut sorted = admissible.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(admissible, sorted, "sorted and unique");
            for command in &space {
                let mut probe = world.clone();
                let did_something = probe.step(command) != NOTHING_HAPPENS;
                assert_eq!(
                    did_something,
                    admissible.binary_search(command).is_ok(),
                    "walk {walk} step {step}: `{command}` (admissible: {admissible:?})"
                );
            }
            let next = rng.pick(&admissible).unwrap().clone();
            world.step(&next);
        }
    }
}
