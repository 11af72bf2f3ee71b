//! The env-server: any catalog environment served over JSON lines (the protocol in
//! [`kiln_protocol::env_server`]), and the host side that drives one.
//!
//! - [`serve`] runs one session on a reader/writer pair (the `kiln-env-server` binary uses its
//!   stdin/stdout; tests use an in-memory duplex). The environment's simulated user and judge are
//!   forwarded to the host as `aux` requests.
//! - [`RemoteEnvironment`] is an [`Environment`](crate::Environment) over such a connection: a
//!   subprocess's pipes or a container's attached stdio. Every way the connection can fail (EOF,
//!   broken pipe, a garbage line, no answer in time, a protocol mismatch) is an
//!   [`EnvErrorKind::Crashed`](crate::EnvErrorKind::Crashed) error naming what happened, with the
//!   process's exit status and last stderr lines when an [`ExitProbe`] can tell them.

mod lines;
mod remote;
mod server;
mod wire;

pub use lines::{LineError, LineReader, write_line};
pub use remote::{ExitProbe, RemoteConfig, RemoteEnvironment};
pub use server::{ServeOptions, serve};
pub use wire::{evaluation_from_wire, evaluation_to_wire, kind_from_wire, kind_to_wire};
