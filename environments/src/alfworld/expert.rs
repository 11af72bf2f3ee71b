//! The expert: a full-knowledge planner that solves every generated task, the ALFWorld analogue
//! of `handcoded_expert_tw.py` (which reads the game's facts the same way). It plans on a clone
//! of the world, checking every command against the preconditions as it goes.

use super::world::{Command, Goal, Place, World};

/// The commands that reach the goal from `world`'s current state, or `None` when this planner
/// cannot reach it (a missing appliance or receptacle, an object that cannot go there). Targets
/// are chosen deterministically: the lowest-numbered fitting instance.
pub fn plan(world: &World) -> Option<Vec<String>> {
    let mut planner = Planner {
        sim: world.clone(),
        commands: Vec::new(),
    };
    planner.solve()?;
    planner.sim.goal_met().then_some(planner.commands)
}

struct Planner {
    sim: World,
    commands: Vec<String>,
}

impl Planner {
    fn solve(&mut self) -> Option<()> {
        match self.sim.goal.clone() {
            Goal::Place {
                object,
                receptacle,
                state,
            } => {
                let target = self.object_not_in(&object, &receptacle, &[])?;
                self.fetch(target)?;
                if let Some(treatment) = state {
                    let appliance = self.receptacle_of(treatment.appliance())?;
                    self.go_to(appliance)?;
                    self.run(Command::Treat(treatment, target, appliance))?;
                }
                let destination = self.receptacle_of(&receptacle)?;
                self.deliver(target, destination)
            }
            Goal::PlaceTwo { object, receptacle } => {
                let destination = self.receptacle_of(&receptacle)?;
                let first = self.object_not_in(&object, &receptacle, &[])?;
                self.fetch(first)?;
                self.deliver(first, destination)?;
                let second = self.object_not_in(&object, &receptacle, &[first])?;
                self.fetch(second)?;
                self.deliver(second, destination)
            }
            Goal::LookInLight { object, lamp } => {
                let target = self.object_not_in(&object, "", &[])?;
                let light = self.sim.objects.iter().position(|candidate| {
                    candidate.kind == lamp && matches!(candidate.place, Place::In(_))
                })?;
                self.fetch(target)?;
                let Place::In(stand) = self.sim.objects[light].place else {
                    return None;
                };
                self.go_to(stand)?;
                self.run(Command::Use(light))
            }
        }
    }

    /// The first object of type `kind` lying in a receptacle not of type `avoid`, skipping `except`.
    fn object_not_in(&self, kind: &str, avoid: &str, except: &[usize]) -> Option<usize> {
        self.sim
            .objects
            .iter()
            .enumerate()
            .find(|(index, candidate)| {
                candidate.kind == kind
                    && !except.contains(index)
                    && matches!(candidate.place,
                        Place::In(holder) if self.sim.receptacles[holder].kind != avoid)
            })
            .map(|(index, _)| index)
    }

    fn receptacle_of(&self, kind: &str) -> Option<usize> {
        self.sim
            .receptacles
            .iter()
            .position(|receptacle| receptacle.kind == kind)
    }

    fn run(&mut self, command: Command) -> Option<()> {
        if !self.sim.allowed(command) {
            return None;
        }
        let text = self.sim.command_text(command);
        self.sim.step(&text);
        self.commands.push(text);
        Some(())
    }

    fn go_to(&mut self, receptacle: usize) -> Option<()> {
        if self.sim.at == Some(receptacle) {
            return Some(());
        }
        self.run(Command::GoTo(receptacle))
    }

    fn open_if_closed(&mut self, receptacle: usize) -> Option<()> {
        let holder = &self.sim.receptacles[receptacle];
        if holder.openable && !holder.open {
            return self.run(Command::Open(receptacle));
        }
        Some(())
    }

    fn fetch(&mut self, object: usize) -> Option<()> {
        let Place::In(holder) = self.sim.objects[object].place else {
            return None;
        };
        self.go_to(holder)?;
        self.open_if_closed(holder)?;
        self.run(Command::Take(object, holder))
    }

    fn deliver(&mut self, object: usize, destination: usize) -> Option<()> {
        self.go_to(destination)?;
        self.open_if_closed(destination)?;
        self.run(Command::Put(object, destination))
    }
}
