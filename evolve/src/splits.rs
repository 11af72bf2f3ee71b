//! The three frozen splits of an evolution: **search** (rollouts AEGIS learns from), **gate**
//! (acceptance) and **held-out** (the final report only).
//!
//! Which of the environment's own splits each is drawn from is the environment's business
//! ([`kiln_environments::EnvironmentFactory::evolution_sources`], next to its split layout);
//! how many tasks and which ones is decided here, from the seed alone: a stratified draw (by
//! [`kiln_environments::EnvironmentFactory::task_cluster`], e.g. ALFWorld's task type) so every
//! cluster is represented in proportion. When search and gate come from the same split they are
//! drawn disjointly; the held-out split must be another split. The result is checked disjoint
//! at construction and stored with the evolution, so a resumed run reuses the same ids.

use std::collections::{BTreeMap, BTreeSet};

use kiln_environments::{EnvironmentFactory, EvolutionSources};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Which evolution split a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRole {
    Search,
    Gate,
    HeldOut,
}

impl SplitRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitRole::Search => "search",
            SplitRole::Gate => "gate",
            SplitRole::HeldOut => "held_out",
        }
    }
}

/// How many tasks each split gets. `held_out: None` takes the whole held-out split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSizes {
    pub search: usize,
    pub gate: usize,
    #[serde(default)]
    pub held_out: Option<usize>,
}

/// The environment's source splits, read once: ids in benchmark order and each id's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePools {
    pub sources: EvolutionSources,
    pub search: Vec<String>,
    pub gate: Vec<String>,
    pub held_out: Vec<String>,
    /// Cluster of every id above (missing = the empty cluster).
    pub clusters: BTreeMap<String, String>,
}

impl SourcePools {
    /// Reads the pools from an environment factory.
    pub fn from_factory(factory: &dyn EnvironmentFactory) -> Result<Self, SplitError> {
        let env = factory.id().to_string();
        let Some(sources) = factory.evolution_sources() else {
            return Err(SplitError::NoSources { env });
        };
        let read = |split: &str| {
            factory
                .task_ids(split)
                .map_err(|error| SplitError::Environment {
                    env: env.clone(),
                    split: split.to_string(),
                    message: error.to_string(),
                })
        };
        let search = read(&sources.search)?;
        let gate = read(&sources.gate)?;
        let held_out = read(&sources.held_out)?;
        let clusters = search
            .iter()
            .chain(&gate)
            .chain(&held_out)
            .map(|id| (id.clone(), factory.task_cluster(id)))
            .filter(|(_, cluster)| !cluster.is_empty())
            .collect();
        Ok(Self {
            sources,
            search,
            gate,
            held_out,
            clusters,
        })
    }
}

/// Why the splits could not be drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    #[error("environment `{env}` names no evolution splits (search, gate, held-out)")]
    NoSources { env: String },
    #[error("environment `{env}`, split `{split}`: {message}")]
    Environment {
        env: String,
        split: String,
        message: String,
    },
    #[error("`--{role} {wanted}`: expected between 1 and {available} tasks ({what})")]
    Size {
        role: &'static str,
        wanted: usize,
        available: usize,
        what: String,
    },
    #[error(
        "the held-out split `{split}` is also the {role} source; held-out tasks must be tasks evolution never sees"
    )]
    HeldOutShared { split: String, role: &'static str },
    #[error("task `{task}` is in both the {first} and the {second} split")]
    Overlap {
        task: String,
        first: &'static str,
        second: &'static str,
    },
}

/// The frozen splits of one evolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvolutionSplits {
    pub env: String,
    pub seed: u64,
    /// The environment's split each role was drawn from.
    pub search_source: String,
    pub gate_source: String,
    pub held_out_source: String,
    pub search: Vec<String>,
    pub gate: Vec<String>,
    pub held_out: Vec<String>,
    /// Cluster of each drawn task (absent: none).
    #[serde(default)]
    pub clusters: BTreeMap<String, String>,
}

impl EvolutionSplits {
    /// Draws the splits of `factory`'s environment.
    pub fn draw(
        factory: &dyn EnvironmentFactory,
        sizes: SplitSizes,
        seed: u64,
    ) -> Result<Self, SplitError> {
        let pools = SourcePools::from_factory(factory)?;
        Self::from_pools(factory.id(), &pools, sizes, seed)
    }

    /// Draws the splits from already-read pools (plain, no I/O).
    pub fn from_pools(
        env: &str,
        pools: &SourcePools,
        sizes: SplitSizes,
        seed: u64,
    ) -> Result<Self, SplitError> {
        let sources = &pools.sources;
        if sources.held_out == sources.search {
            return Err(SplitError::HeldOutShared {
                split: sources.held_out.clone(),
                role: "search",
            });
        }
        if sources.held_out == sources.gate {
            return Err(SplitError::HeldOutShared {
                split: sources.held_out.clone(),
                role: "gate",
            });
        }
        let cluster_of = |id: &String| pools.clusters.get(id).cloned().unwrap_or_default();
        let held_out_ids: BTreeSet<&String> = pools.held_out.iter().collect();
        // An id listed in two source splits is never drawn for search or gate: held-out wins.
        let search_pool: Vec<String> = pools
            .search
            .iter()
            .filter(|id| !held_out_ids.contains(id))
            .cloned()
            .collect();
        check_size("search", sizes.search, search_pool.len(), &sources.search)?;
        let search = stratified(&search_pool, sizes.search, seed, "search", &cluster_of);
        let taken: BTreeSet<&String> = search.iter().collect();
        let gate_pool: Vec<String> = pools
            .gate
            .iter()
            .filter(|id| !taken.contains(id) && !held_out_ids.contains(id))
            .cloned()
            .collect();
        let what = if sources.gate == sources.search {
            format!("split `{}` after the search draw", sources.gate)
        } else {
            format!("split `{}`", sources.gate)
        };
        if sizes.gate == 0 || sizes.gate > gate_pool.len() {
            return Err(SplitError::Size {
                role: "gate",
                wanted: sizes.gate,
                available: gate_pool.len(),
                what,
            });
        }
        let gate = stratified(&gate_pool, sizes.gate, seed, "gate", &cluster_of);
        let held_out = match sizes.held_out {
            None => pools.held_out.clone(),
            Some(wanted) => {
                check_size("held-out", wanted, pools.held_out.len(), &sources.held_out)?;
                stratified(&pools.held_out, wanted, seed, "held_out", &cluster_of)
            }
        };
        let clusters = search
            .iter()
            .chain(&gate)
            .chain(&held_out)
            .filter_map(|id| pools.clusters.get(id).map(|c| (id.clone(), c.clone())))
            .collect();
        let splits = Self {
            env: env.to_string(),
            seed,
            search_source: sources.search.clone(),
            gate_source: sources.gate.clone(),
            held_out_source: sources.held_out.clone(),
            search,
            gate,
            held_out,
            clusters,
        };
        splits.check_disjoint()?;
        Ok(splits)
    }

    /// Fails when a task is in two splits (also run on splits read back from disk).
    pub fn check_disjoint(&self) -> Result<(), SplitError> {
        let mut seen: BTreeMap<&str, &'static str> = BTreeMap::new();
        for (role, ids) in [
            ("search", &self.search),
            ("gate", &self.gate),
            ("held-out", &self.held_out),
        ] {
            for id in ids {
                if let Some(first) = seen.insert(id, role) {
                    return Err(SplitError::Overlap {
                        task: id.clone(),
                        first,
                        second: role,
                    });
                }
            }
        }
        Ok(())
    }

    /// The role of `task_id`, if it is in one of the splits.
    pub fn role_of(&self, task_id: &str) -> Option<SplitRole> {
        let has = |ids: &[String]| ids.iter().any(|id| id == task_id);
        if has(&self.held_out) {
            Some(SplitRole::HeldOut)
        } else if has(&self.search) {
            Some(SplitRole::Search)
        } else if has(&self.gate) {
            Some(SplitRole::Gate)
        } else {
            None
        }
    }

    pub fn ids(&self, role: SplitRole) -> &[String] {
        match role {
            SplitRole::Search => &self.search,
            SplitRole::Gate => &self.gate,
            SplitRole::HeldOut => &self.held_out,
        }
    }

    /// The cluster of a task (empty when none).
    pub fn cluster(&self, task_id: &str) -> &str {
        self.clusters.get(task_id).map_or("", String::as_str)
    }
}

fn check_size(
    role: &'static str,
    wanted: usize,
    available: usize,
    split: &str,
) -> Result<(), SplitError> {
    if wanted == 0 || wanted > available {
        return Err(SplitError::Size {
            role,
            wanted,
            available,
            what: format!("split `{split}`"),
        });
    }
    Ok(())
}

/// `count` ids of `pool`, stratified by cluster: each cluster is shuffled with its own seeded
/// stream, then clusters are taken round-robin (in name order) until `count` are drawn. The
/// result is sorted by the pool's order, so a split reads in benchmark order.
fn stratified(
    pool: &[String],
    count: usize,
    seed: u64,
    purpose: &str,
    cluster_of: &dyn Fn(&String) -> String,
) -> Vec<String> {
    let mut by_cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in pool {
        by_cluster
            .entry(cluster_of(id))
            .or_default()
            .push(id.clone());
    }
    let mut queues: Vec<std::collections::VecDeque<String>> = by_cluster
        .into_iter()
        .map(|(cluster, mut ids)| {
            Rng::for_purpose(seed, &format!("{purpose}/{cluster}")).shuffle(&mut ids);
            ids.into()
        })
        .collect();
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    while chosen.len() < count {
        let mut progressed = false;
        for queue in &mut queues {
            if chosen.len() == count {
                break;
            }
            if let Some(id) = queue.pop_front() {
                chosen.insert(id);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    pool.iter()
        .filter(|id| chosen.contains(*id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> SourcePools {
        let train: Vec<String> = (0..60)
            .map(|index| format!("train/{}/{index:04}", ["a", "b", "c"][index % 3]))
            .collect();
        let test: Vec<String> = (0..20).map(|index| format!("test/a/{index:04}")).collect();
        let clusters = train
            .iter()
            .map(|id| (id.clone(), id.split('/').nth(1).unwrap().to_string()))
            .collect();
        SourcePools {
            sources: EvolutionSources::new("train", "train", "test"),
            search: train.clone(),
            gate: train,
            held_out: test,
            clusters,
        }
    }

    fn sizes(search: usize, gate: usize) -> SplitSizes {
        SplitSizes {
            search,
            gate,
            held_out: None,
        }
    }

    #[test]
    fn draws_are_disjoint_stratified_and_fixed_by_the_seed() {
        let pools = pools();
        let splits = EvolutionSplits::from_pools("env", &pools, sizes(9, 6), 42).unwrap();
        assert_eq!(splits.search.len(), 9);
        assert_eq!(splits.gate.len(), 6);
        assert_eq!(splits.held_out, pools.held_out);
        splits.check_disjoint().unwrap();
        for cluster in ["a", "b", "c"] {
            let in_search = splits
                .search
                .iter()
                .filter(|id| splits.cluster(id) == cluster)
                .count();
            assert_eq!(in_search, 3, "cluster {cluster}: {:?}", splits.search);
            let in_gate = splits
                .gate
                .iter()
                .filter(|id| splits.cluster(id) == cluster)
                .count();
            assert_eq!(in_gate, 2, "cluster {cluster}: {:?}", splits.gate);
        }
        let again = EvolutionSplits::from_pools("env", &pools, sizes(9, 6), 42).unwrap();
        assert_eq!(again, splits);
        let other = EvolutionSplits::from_pools("env", &pools, sizes(9, 6), 43).unwrap();
        assert_ne!(other.search, splits.search);
        assert_eq!(splits.role_of(&splits.gate[0]), Some(SplitRole::Gate));
        assert_eq!(splits.role_of("test/a/0003"), Some(SplitRole::HeldOut));
        assert_eq!(splits.role_of("nowhere"), None);
    }

    #[test]
    fn bad_sizes_and_a_shared_held_out_split_are_errors() {
        let pools = pools();
        let error = EvolutionSplits::from_pools("env", &pools, sizes(50, 20), 1).unwrap_err();
        assert!(
            matches!(
                error,
                SplitError::Size {
                    role: "gate",
                    available: 10,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains("after the search draw"),
            "{error}"
        );
        let error = EvolutionSplits::from_pools("env", &pools, sizes(0, 2), 1).unwrap_err();
        assert!(matches!(error, SplitError::Size { role: "search", .. }));
        let mut shared = pools.clone();
        shared.sources = EvolutionSources::new("train", "test", "test");
        assert!(matches!(
            EvolutionSplits::from_pools("env", &shared, sizes(2, 2), 1),
            Err(SplitError::HeldOutShared { role: "gate", .. })
        ));
        let mut splits = EvolutionSplits::from_pools("env", &pools, sizes(2, 2), 1).unwrap();
        splits.gate.push(splits.held_out[0].clone());
        assert!(matches!(
            splits.check_disjoint(),
            Err(SplitError::Overlap {
                second: "held-out",
                ..
            })
        ));
    }

    #[test]
    fn real_environments_give_disjoint_splits() {
        let ctx = kiln_environments::EnvContext {
            data_dir: kiln_environments::default_data_dir(),
            ..Default::default()
        };
        for (env, gate_source) in [
            ("alfworld", "train"),
            ("webshop", "eval"),
            ("tau2-retail", "train"),
        ] {
            let factory = match kiln_environments::catalog::open(env, &ctx) {
                Ok(factory) => factory,
                Err(error) => {
                    assert!(std::env::var("CI").is_err(), "{env}: {error}");
                    eprintln!("skipping {env}: {error}");
                    continue;
                }
            };
            let splits = EvolutionSplits::draw(factory.as_ref(), sizes(12, 8), 7).unwrap();
            assert_eq!(splits.gate_source, gate_source);
            assert_eq!((splits.search.len(), splits.gate.len()), (12, 8));
            splits.check_disjoint().unwrap();
            let held_out_split = factory.task_ids(&splits.held_out_source).unwrap();
            assert_eq!(splits.held_out, held_out_split, "{env}");
            if env == "alfworld" {
                let types: BTreeSet<&str> =
                    splits.search.iter().map(|id| splits.cluster(id)).collect();
                assert_eq!(types.len(), 6, "{:?}", splits.search);
                assert!(splits.search.iter().all(|id| id.starts_with("train/")));
                assert_eq!(splits.held_out_source, "valid_unseen");
            }
            if env == "tau2-retail" {
                let train = factory.task_ids("train").unwrap();
                assert!(
                    splits
                        .search
                        .iter()
                        .chain(&splits.gate)
                        .all(|id| train.contains(id))
                );
            }
        }
    }
}
