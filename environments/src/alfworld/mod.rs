//! ALFWorld-format household text games, generated offline (see `../shared/specs/alfworld.md`).
//!
//! The official ALFWorld game files are a separate download that Kiln does not have, so these are
//! **generated ALFWorld-format tasks**, not the official splits: a seeded generator
//! ([`generate`]) places object instances in compatible receptacles of the ALFRED floor plans
//! shipped in the `alfworld==0.4.2` wheel, under `constants.py`'s type constraints, for all six
//! task types with `goal_library.py`'s goal templates; an expert planner ([`expert`]) solves every
//! task it keeps. The text, the command set, its preconditions and feedback ([`world`]) follow
//! `alfred.pddl` and `alfred.twl2`, with the 0.3.x placing command `put {o} in/on {r}` (not 0.4's
//! `move {o} to {r}`).
//!
//! Splits: `train` (3,553 tasks in training scenes), `valid_seen` (134 other tasks in training
//! scenes) and `valid_unseen` (134 tasks in the held-out `TEST_SCENE_NUMBERS` scenes), each with
//! ALFWorld's per-type shape. Reward is 1 and the episode ends when the goal holds; otherwise it
//! ends at the step limit (default 50, `env_options.max_steps`).

pub mod data;
pub mod env;
pub mod expert;
pub mod generate;
pub mod pyliteral;
pub mod task_type;
pub mod world;

pub use env::{AlfworldEnvironment, AlfworldFactory, AlfworldOptions, ENV_ID};
pub use generate::{DEFAULT_MAX_STEPS, DEFAULT_SEED, GeneratedTask, Generator};
pub use task_type::{Split, TaskType};
pub use world::World;
