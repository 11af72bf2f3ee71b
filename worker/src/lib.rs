//! The Kiln worker: takes tasks from a [`Transport`], runs their episodes, publishes
//! [`TaskResult`]s and settles the leases.
//!
//! - [`transport`]: the lease-based transport abstraction (JetStream-shaped) and
//!   [`in_process`], the embedded implementation on tokio primitives, and [`nats`], the
//!   distributed one on NATS JetStream ([`testing`] starts a real nats-server for tests);
//! - [`harness_store`]: harness specs by content hash;
//! - [`worker`]: the slot loop, with panic and timeout isolation per episode, and [`episode`], its
//!   default episode runner (kiln-harness's loop);
//! - [`aux_model`]: the adapter that gives environments a chat model as their simulated user or
//!   judge;
//! - [`sandbox`]: env-servers in subprocesses or Docker containers, behind an `EnvResolver`.

pub mod aux_model;
pub mod episode;
pub mod failure;
pub mod harness_store;
pub mod in_process;
pub mod nats;
pub mod resolve;
pub mod sandbox;
pub mod testing;
pub mod transport;
pub mod worker;

pub use aux_model::ChatAuxModel;
pub use episode::HarnessEpisodeRunner;
pub use failure::{TaskFailure, failure_result};
pub use harness_store::{HarnessStore, InMemoryHarnessStore};
pub use in_process::{InProcessTransport, TransportStats};
pub use nats::{NatsHarnessStore, NatsOptions, NatsTransport};
pub use resolve::{BackendModelResolver, CatalogEnvResolver, EnvResolver, ModelResolver};
pub use transport::{TaskLease, TaskResult, Transport, TransportError, TransportErrorKind};
pub use worker::{
    Episode, EpisodeRunner, WorkerAbandon, WorkerConfig, WorkerDeps, WorkerStats, run_worker,
    run_worker_abandonable,
};
