//! Sandboxes: where an episode's environment runs when it does not run inside the worker.
//!
//! Every sandbox hosts one `kiln-env-server` session (the env-server protocol, JSON lines on
//! stdio) for exactly one episode, and is never reused. Providers:
//! - [`process`]: a local subprocess of the `kiln-env-server` binary (no isolation, no Docker);
//! - [`docker`]: one container per episode from `kiln/env-server:<version>` (built by
//!   `ops/images`), with resource limits, a read-only root, no capabilities, a non-root user, no
//!   network unless the task asks, labels naming run and worker; optionally a warm [`pool`] of
//!   started containers;
//! - [`reaper`]: removes the containers a (crashed) worker or a run left behind.
//!
//! The worker uses sandboxes through [`SandboxEnvResolver`], an [`EnvResolver`](crate::EnvResolver)
//! whose environments acquire their sandbox lazily in `reset` (when the task, and so the run id
//! for the labels, is known) and release it in `close` (or when dropped).

pub mod docker;
pub mod lazy;
pub mod pool;
pub mod process;
pub mod reaper;
mod stderr_tail;

use async_trait::async_trait;
use kiln_environments::env_server::RemoteEnvironment;

pub use docker::{ContainerLimits, DockerProvider, DockerSandboxConfig, connect_docker};
pub use lazy::{SandboxEnvResolver, SandboxEnvironment, SandboxOptions};
pub use process::ProcessProvider;
pub use reaper::{reap, reap_run};

/// What went wrong while acquiring or managing a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxErrorKind {
    /// The Docker daemon cannot be reached (or its API is too old).
    DockerUnavailable,
    /// The env-server image is not present locally (run `ops/images`).
    ImageMissing,
    /// The `kiln-env-server` binary was not found.
    BinaryMissing,
    /// The process or container could not be created or started.
    Start,
    /// The env-server started but did not say hello properly.
    Handshake,
    /// Another Docker API call failed (listing, removing).
    Docker,
}

/// A sandbox error. `kind()` says what failed; the message names the image, binary or container.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SandboxError {
    kind: SandboxErrorKind,
    message: String,
}

impl SandboxError {
    pub fn new(kind: SandboxErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> SandboxErrorKind {
        self.kind
    }
}

/// What a sandbox is acquired for: the labels and the network it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRequest {
    pub run_id: String,
    pub task_id: String,
    pub env: String,
    /// A Docker network to attach (`bridge`, a user network); None means no network at all.
    pub network: Option<String>,
}

/// Releases what a sandbox holds (kills the process, removes the container). Implementations also
/// release on drop, best effort, so an aborted episode leaves nothing behind.
#[async_trait]
pub trait SandboxLease: Send + Sync {
    /// `container 3f2a…` / `process 4242`, for logs and messages.
    fn describe(&self) -> String;
    /// Releases the sandbox. `clean`: the env-server was closed properly and may be let exit on
    /// its own; otherwise it is killed at once. Idempotent; failures are logged, not returned:
    /// the reaper is the backstop.
    async fn release(&mut self, clean: bool);
}

/// A started env-server, said hello, ready for `open`.
pub struct Sandbox {
    pub remote: RemoteEnvironment,
    pub lease: Box<dyn SandboxLease>,
}

/// Starts env-servers.
#[async_trait]
pub trait SandboxProvider: Send + Sync {
    /// `process` or `docker`.
    fn name(&self) -> &'static str;
    /// A fresh env-server for one episode.
    async fn acquire(&self, request: &SandboxRequest) -> Result<Sandbox, SandboxError>;
}
