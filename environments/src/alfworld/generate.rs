//! The seeded task generator. The official ALFWorld game files are not available offline, so
//! every task is generated from a floor plan's object and receptacle types and `constants.py`'s
//! type constraints, the way ALFRED samples its tasks:
//!
//! 1. A scene from the split's pool (`TRAIN_SCENE_NUMBERS` for `train`/`valid_seen`,
//!    `TEST_SCENE_NUMBERS` for `valid_unseen`) whose room type allows the task type
//!    (`GOALS_VALID`) and which has what the task needs (sink basin, microwave, fridge, a lamp).
//! 2. A target object type and a receptacle type that can contain it (not the appliance of the
//!    task), or a lamp type for `look_at_obj_in_light`.
//! 3. Receptacle instances from the floor plan, numbered per type; 1..=`PICKUP_REPEAT_MAX`
//!    target instances (at least 2 for pick-two) placed anywhere they fit except the goal
//!    receptacle type; each other object type of the floor plan with probability 1/2, with
//!    1..=`MAX_NUM_OF_OBJ_INSTANCES` instances in random compatible receptacles; lamps on a stand.
//! 4. A goal sentence from one of the task type's two templates in `goal_library.py`.
//! 5. The expert plans the task; a task it cannot solve within the default step limit, or
//!    whose goal already holds, is rejected and the next attempt is drawn.
//!
//! A task depends only on (seed, split, type, index), so any one task is generated alone, in
//! microseconds, and the same seed always gives the same task.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::data::{AlfworldData, LAMP_STANDS, LAMPS, Rules};
use super::expert;
use super::task_type::{Split, TaskType, parse_task_id, task_id};
use super::world::{Goal, Object, Place, Receptacle, Treatment, World, type_text};
use crate::{EnvError, EnvErrorKind};

/// The seed Kiln's published splits are generated with.
pub const DEFAULT_SEED: u64 = 0xA1F0_2026;

/// ALFWorld's default step limit (`max_episode_steps` 50 in the base config).
pub const DEFAULT_MAX_STEPS: u32 = 50;

/// Draws per task before giving up (none of the shipped splits comes close).
const MAX_ATTEMPTS: u32 = 1000;

/// One generated game.
#[derive(Debug, Clone)]
pub struct GeneratedTask {
    pub id: String,
    pub split: Split,
    pub task_type: TaskType,
    /// The ALFRED floor plan number.
    pub scene: u32,
    /// "put some spraybottle on toilet."
    pub goal_text: String,
    /// The initial state.
    pub world: World,
    /// The expert's commands, which reach the goal from `world`.
    pub expert: Vec<String>,
    /// Which draw this is (earlier draws were rejected: unfit scene, goal already met, or no
    /// expert plan within the step limit).
    pub attempt: u32,
}

impl GeneratedTask {
    /// The reset observation: welcome, room, task.
    pub fn intro(&self) -> String {
        self.world.intro(&self.goal_text)
    }
}

/// Generates tasks from loaded ALFWorld data and a seed.
#[derive(Clone)]
pub struct Generator {
    data: Arc<AlfworldData>,
    rules: Arc<Rules>,
    seed: u64,
}

impl Generator {
    pub fn new(data: Arc<AlfworldData>, seed: u64) -> Self {
        let rules = Arc::new(data.rules.clone());
        Self { data, rules, seed }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The task with id `id` (`valid_unseen/pick_and_place_simple/0007`), or
    /// [`EnvErrorKind::UnknownTask`].
    pub fn task(&self, id: &str) -> Result<GeneratedTask, EnvError> {
        let Some((split, task_type, index)) = parse_task_id(id) else {
            return Err(EnvError::new(
                EnvErrorKind::UnknownTask,
                format!(
                    "alfworld has no task `{id}`: ids look like `valid_unseen/pick_and_place_simple/0007` \
                     (splits train, valid_seen, valid_unseen; six task types; index below the type's count)"
                ),
            ));
        };
        self.generate(split, task_type, index)
    }

    /// Task `index` of `task_type` in `split`.
    pub fn generate(
        &self,
        split: Split,
        task_type: TaskType,
        index: usize,
    ) -> Result<GeneratedTask, EnvError> {
        let id = task_id(split, task_type, index);
        for attempt in 0..MAX_ATTEMPTS {
            let mut rng = Rng::new(derive_seed(self.seed, &[&id, &attempt.to_string()]));
            let Some((scene, world, goal_text)) = self.sample(&mut rng, split, task_type) else {
                continue;
            };
            if world.goal_met() {
                continue;
            }
            let Some(expert) = expert::plan(&world) else {
                continue;
            };
            if expert.len() > DEFAULT_MAX_STEPS as usize {
                continue;
            }
            return Ok(GeneratedTask {
                id,
                split,
                task_type,
                scene,
                goal_text,
                world,
                expert,
                attempt,
            });
        }
        Err(EnvError::new(
            EnvErrorKind::Data,
            format!(
                "alfworld: no solvable task `{id}` in {MAX_ATTEMPTS} draws from the floor plans in {}",
                self.data.dir.display()
            ),
        ))
    }

    fn scenes(&self, split: Split, task_type: TaskType) -> Vec<u32> {
        let pool = match split {
            Split::Train | Split::ValidSeen => &self.rules.train_scenes,
            Split::ValidUnseen => &self.rules.test_scenes,
        };
        pool.iter()
            .copied()
            .filter(|scene| {
                self.data.plans.contains_key(scene) && self.rules.goal_valid_in(task_type, *scene)
            })
            .collect()
    }

    fn sample(
        &self,
        rng: &mut Rng,
        split: Split,
        task_type: TaskType,
    ) -> Option<(u32, World, String)> {
        let rules = &self.rules;
        let scene = *rng.pick(&self.scenes(split, task_type))?;
        let plan = &self.data.plans[&scene];

        let mut receptacles = Vec::new();
        for (kind, count) in &plan.receptacles {
            for number in 1..=*count {
                receptacles.push(Receptacle {
                    name: format!("{} {number}", type_text(kind)),
                    kind: kind.clone(),
                    openable: rules.openable.contains(kind),
                    open: false,
                    contents: Vec::new(),
                });
            }
        }
        // Receptacle types here that can hold each pickable object type of the plan, computed
        // once per draw (every type here has an instance).
        let holder_kinds: BTreeMap<&str, Vec<&str>> = plan
            .object_types
            .iter()
            .filter(|kind| rules.pickupable.contains(*kind))
            .map(|kind| {
                let holders = plan
                    .receptacles
                    .keys()
                    .filter(|holder| rules.can_contain(holder, kind))
                    .map(String::as_str)
                    .collect();
                (kind.as_str(), holders)
            })
            .collect();
        let holders =
            |object: &str| -> Vec<&str> { holder_kinds.get(object).cloned().unwrap_or_default() };
        let fits = |object: &str, avoid: Option<&str>| -> Vec<usize> {
            let kinds = holders(object);
            receptacles
                .iter()
                .enumerate()
                .filter(|(_, holder)| {
                    kinds.contains(&holder.kind.as_str()) && Some(holder.kind.as_str()) != avoid
                })
                .map(|(index, _)| index)
                .collect()
        };
        let stands: Vec<usize> = receptacles
            .iter()
            .enumerate()
            .filter(|(_, holder)| LAMP_STANDS.contains(&holder.kind.as_str()))
            .map(|(index, _)| index)
            .collect();
        let lamps: Vec<&str> = LAMPS
            .into_iter()
            .filter(|lamp| plan.object_types.contains(*lamp) && rules.toggleable.contains(*lamp))
            .filter(|_| !stands.is_empty())
            .collect();
        let candidates: Vec<&str> = holder_kinds
            .iter()
            .filter(|(_, holders)| !holders.is_empty())
            .map(|(kind, _)| *kind)
            .collect();

        // The goal: a target type, and a receptacle type or a lamp type.
        let treatment = match task_type {
            TaskType::PickCleanThenPlaceInRecep => Some(Treatment::Clean),
            TaskType::PickHeatThenPlaceInRecep => Some(Treatment::Heat),
            TaskType::PickCoolThenPlaceInRecep => Some(Treatment::Cool),
            _ => None,
        };
        let (target, goal, goal_text) = if task_type == TaskType::LookAtObjInLight {
            let lamp = *rng.pick(&lamps)?;
            let object = (*rng.pick(&candidates)?).to_string();
            let text = fill(rng.pick(&rules.templates[&task_type])?, &object, "", lamp);
            let goal = Goal::LookInLight {
                object: object.clone(),
                lamp: lamp.to_string(),
            };
            (object, goal, text)
        } else {
            let appliance = treatment.map(Treatment::appliance);
            if appliance.is_some_and(|kind| !plan.receptacles.contains_key(kind)) {
                return None;
            }
            let able = |kind: &str| match treatment {
                None => true,
                Some(Treatment::Clean) => rules.cleanable.contains(kind),
                Some(Treatment::Heat) => rules.heatable.contains(kind),
                Some(Treatment::Cool) => rules.coolable.contains(kind),
            };
            // Goal receptacle types for an object: they can hold it, are not the task's
            // appliance, and the object can start somewhere else.
            let goal_kinds = |object: &str| -> Vec<&str> {
                let mut kinds = holders(object);
                if kinds.len() < 2 {
                    return Vec::new();
                }
                kinds.retain(|kind| Some(*kind) != appliance);
                kinds
            };
            let objects: Vec<&str> = candidates
                .iter()
                .copied()
                .filter(|kind| able(kind) && !goal_kinds(kind).is_empty())
                .collect();
            let object = (*rng.pick(&objects)?).to_string();
            let receptacle = (*rng.pick(&goal_kinds(&object))?).to_string();
            let text = fill(
                rng.pick(&rules.templates[&task_type])?,
                &object,
                &receptacle,
                "",
            );
            let goal = if task_type == TaskType::PickTwoObjAndPlace {
                Goal::PlaceTwo {
                    object: object.clone(),
                    receptacle,
                }
            } else {
                Goal::Place {
                    object: object.clone(),
                    receptacle,
                    state: treatment,
                }
            };
            (object, goal, text)
        };
        let avoid = match &goal {
            Goal::Place { receptacle, .. } | Goal::PlaceTwo { receptacle, .. } => {
                Some(receptacle.as_str())
            }
            Goal::LookInLight { .. } => None,
        };

        // How many of each type, in type order so numbering is per type from 1.
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        let least = if task_type == TaskType::PickTwoObjAndPlace {
            2
        } else {
            1
        };
        let most = rules.pickup_repeat_max.max(least);
        counts.insert(
            &target,
            least + rng.below((most - least + 1) as usize) as u32,
        );
        for kind in &candidates {
            if *kind != target && rng.below(2) == 0 {
                counts.insert(kind, 1 + rng.below(rules.max_instances as usize) as u32);
            }
        }
        for lamp in &lamps {
            counts.insert(lamp, 1);
        }

        let mut objects = Vec::new();
        for (kind, count) in counts {
            let places = if LAMPS.contains(&kind) {
                stands.clone()
            } else if kind == target {
                fits(kind, avoid)
            } else {
                fits(kind, None)
            };
            for number in 1..=count {
                objects.push(Object {
                    name: format!("{} {number}", type_text(kind)),
                    kind: kind.to_string(),
                    place: Place::In(*rng.pick(&places)?),
                    clean: false,
                    hot: false,
                    cool: false,
                    sliced: false,
                    toggled: false,
                });
            }
        }
        let world = World::new(self.rules.clone(), receptacles, objects, goal);
        Some((scene, world, goal_text))
    }
}

/// A goal template with `{obj}`, `{recep}` and `{toggle}` filled with type names, plus ".".
fn fill(template: &str, object: &str, receptacle: &str, lamp: &str) -> String {
    let text = template
        .replace("{obj}", &type_text(object))
        .replace("{recep}", &type_text(receptacle))
        .replace("{toggle}", &type_text(lamp));
    format!("{text}.")
}

/// FNV-1a over the seed and the parts, so a task's randomness depends only on its identity.
fn derive_seed(seed: u64, parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    seed.to_le_bytes().into_iter().for_each(&mut eat);
    for part in parts {
        eat(0xff);
        part.bytes().for_each(&mut eat);
    }
    hash
}

/// SplitMix64 ([`kiln_protocol::rng::splitmix64`]): small, fast, and stable across Rust and crate
/// versions (unlike `rand`'s streams),
/// so generated splits never change under a dependency upgrade.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        kiln_protocol::rng::splitmix64(&mut self.0)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform element, `None` if empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_stable_and_in_range() {
        let mut rng = Rng::new(7);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(7);
        let second: Vec<u64> = (0..3).map(|_| again.next_u64()).collect();
        assert_eq!(first, second);
        assert!((0..1000).all(|_| rng.below(3) < 3));
        assert!(rng.pick::<u8>(&[]).is_none());
        assert_ne!(derive_seed(1, &["a"]), derive_seed(2, &["a"]));
        assert_ne!(derive_seed(1, &["ab", "c"]), derive_seed(1, &["a", "bc"]));
    }

    #[test]
    fn templates_fill_with_type_names() {
        assert_eq!(
            fill("put some {obj} on {recep}", "SprayBottle", "Toilet", ""),
            "put some spraybottle on toilet."
        );
        assert_eq!(
            fill("look at {obj} under the {toggle}", "Bowl", "", "DeskLamp"),
            "look at bowl under the desklamp."
        );
    }
}
