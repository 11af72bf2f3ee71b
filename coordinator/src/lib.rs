//! The Kiln coordinator: the actors that run a run, the run store, and reports.
//!
//! A run is owned by a [`RunSupervisor`](supervisor::RunSupervisor) that spawns and links a
//! [`Dispatcher`](dispatcher::Dispatcher) (queues the pending tasks) and a
//! [`Collector`](collector::Collector) (records each result once, drives progress). The logic they
//! apply lives in plain modules tested without actors: [`plan`] (what to dispatch, seeds),
//! [`collection`] (dedup by (run, task, attempt)), [`backlog`] (what a restart must not queue
//! again), [`store`] (the run directory), [`report`].
//! [`run::execute_run`] and [`run::write_run_report`] are the entry points.

pub mod backlog;
pub mod collection;
pub mod collector;
pub mod config;
pub mod dispatcher;
pub mod error;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod report;
pub mod run;
pub mod service;
pub mod store;
pub mod supervisor;

#[cfg(test)]
mod testing;

pub use config::{HarnessRef, RunConfig, UserMode, config_differences};
pub use error::{CoordinatorError, CoordinatorErrorKind};
pub use progress::{NoProgress, Progress, ProgressObserver};
pub use registry::{RunRecord, RunRegistry, RunState};
pub use report::{RunStats, compute_stats, render_report, render_summary};
pub use run::{RunLaunch, execute_run, write_run_report};
pub use service::CoordinatorService;
pub use store::RunStore;
pub use supervisor::{RunRole, RunSummary};

/// The Kiln version recorded in `run.toml`.
pub const KILN_VERSION: &str = env!("CARGO_PKG_VERSION");
