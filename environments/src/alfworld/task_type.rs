//! The six ALFWorld task types and the split shapes built from them.

/// An ALFWorld task type, named as ALFWorld names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskType {
    PickAndPlaceSimple,
    LookAtObjInLight,
    PickCleanThenPlaceInRecep,
    PickHeatThenPlaceInRecep,
    PickCoolThenPlaceInRecep,
    PickTwoObjAndPlace,
}

impl TaskType {
    /// In ALFWorld's reporting order (pick, look, clean, heat, cool, pick-two).
    pub const ALL: [TaskType; 6] = [
        TaskType::PickAndPlaceSimple,
        TaskType::LookAtObjInLight,
        TaskType::PickCleanThenPlaceInRecep,
        TaskType::PickHeatThenPlaceInRecep,
        TaskType::PickCoolThenPlaceInRecep,
        TaskType::PickTwoObjAndPlace,
    ];

    /// ALFWorld's name (`pick_and_place_simple`), used in task ids.
    pub fn name(self) -> &'static str {
        match self {
            TaskType::PickAndPlaceSimple => "pick_and_place_simple",
            TaskType::LookAtObjInLight => "look_at_obj_in_light",
            TaskType::PickCleanThenPlaceInRecep => "pick_clean_then_place_in_recep",
            TaskType::PickHeatThenPlaceInRecep => "pick_heat_then_place_in_recep",
            TaskType::PickCoolThenPlaceInRecep => "pick_cool_then_place_in_recep",
            TaskType::PickTwoObjAndPlace => "pick_two_obj_and_place",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|task_type| task_type.name() == name)
    }

    /// Tasks of this type in the official valid_unseen split (24/18/31/23/21/17 = 134); Kiln's
    /// `valid_seen` and `valid_unseen` both have this shape.
    pub fn eval_count(self) -> usize {
        match self {
            TaskType::PickAndPlaceSimple => 24,
            TaskType::LookAtObjInLight => 18,
            TaskType::PickCleanThenPlaceInRecep => 31,
            TaskType::PickHeatThenPlaceInRecep => 23,
            TaskType::PickCoolThenPlaceInRecep => 21,
            TaskType::PickTwoObjAndPlace => 17,
        }
    }

    /// Tasks of this type in the official train split (790/308/650/459/533/813 = 3,553, as the
    /// ALFWorld paper counts them); Kiln's `train` has this shape.
    pub fn train_count(self) -> usize {
        match self {
            TaskType::PickAndPlaceSimple => 790,
            TaskType::LookAtObjInLight => 308,
            TaskType::PickCleanThenPlaceInRecep => 650,
            TaskType::PickHeatThenPlaceInRecep => 459,
            TaskType::PickCoolThenPlaceInRecep => 533,
            TaskType::PickTwoObjAndPlace => 813,
        }
    }
}

/// Kiln's ALFWorld splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training scenes, 3,553 tasks.
    Train,
    /// Training scenes, other tasks than `train` (different seeds), 134 tasks.
    ValidSeen,
    /// Held-out scenes (`TEST_SCENE_NUMBERS`), 134 tasks.
    ValidUnseen,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::ValidSeen, Split::ValidUnseen];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::ValidSeen => "valid_seen",
            Split::ValidUnseen => "valid_unseen",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|split| split.name() == name)
    }

    /// How many tasks of `task_type` the split has.
    pub fn count(self, task_type: TaskType) -> usize {
        match self {
            Split::Train => task_type.train_count(),
            Split::ValidSeen | Split::ValidUnseen => task_type.eval_count(),
        }
    }

    /// Total tasks in the split.
    pub fn size(self) -> usize {
        TaskType::ALL.into_iter().map(|kind| self.count(kind)).sum()
    }

    /// Task ids in order: by type (ALFWorld's order), then index:
    /// `valid_unseen/pick_and_place_simple/0007`.
    pub fn task_ids(self) -> Vec<String> {
        TaskType::ALL
            .into_iter()
            .flat_map(|task_type| {
                (0..self.count(task_type)).map(move |index| task_id(self, task_type, index))
            })
            .collect()
    }
}

/// `split/task_type/NNNN`.
pub fn task_id(split: Split, task_type: TaskType, index: usize) -> String {
    format!("{}/{}/{index:04}", split.name(), task_type.name())
}

/// Parses a task id made by [`task_id`]; `None` if it is not one of the split's ids.
pub fn parse_task_id(id: &str) -> Option<(Split, TaskType, usize)> {
    let mut parts = id.split('/');
    let split = Split::from_name(parts.next()?)?;
    let task_type = TaskType::from_name(parts.next()?)?;
    let index_text = parts.next()?;
    if parts.next().is_some() || index_text.len() < 4 {
        return None;
    }
    let index: usize = index_text.parse().ok()?;
    // Exactly the canonical spelling, so one task has one id.
    if format!("{index:04}") != index_text || index >= split.count(task_type) {
        return None;
    }
    Some((split, task_type, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_shapes_match_alfworld() {
        assert_eq!(Split::ValidUnseen.size(), 134);
        assert_eq!(Split::ValidSeen.size(), 134);
        assert_eq!(Split::Train.size(), 3553);
        let ids = Split::ValidUnseen.task_ids();
        assert_eq!(ids[7], "valid_unseen/pick_and_place_simple/0007");
        assert_eq!(ids[24], "valid_unseen/look_at_obj_in_light/0000");
    }

    #[test]
    fn task_ids_round_trip_and_reject_others() {
        for id in Split::ValidSeen.task_ids() {
            let (split, task_type, index) = parse_task_id(&id).unwrap();
            assert_eq!(task_id(split, task_type, index), id);
        }
        for bad in [
            "valid_unseen/pick_and_place_simple/7",
            "valid_unseen/pick_and_place_simple/0024",
            "valid_unseen/pick_and_place_simple/0007/x",
            "test/pick_and_place_simple/0001",
            "valid_unseen/pick_three/0001",
            "",
        ] {
            assert!(parse_task_id(bad).is_none(), "{bad}");
        }
    }
}
