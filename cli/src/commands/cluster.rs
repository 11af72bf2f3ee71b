//! What the cluster commands share: connecting to NATS, naming processes, shutdown signals.

use std::time::Duration;

use kiln_worker::{NatsOptions, NatsTransport};

use crate::args::NatsArgs;
use crate::input_error;

/// The transport options from the command line.
pub fn nats_options(args: &NatsArgs) -> NatsOptions {
    NatsOptions {
        lease: Duration::from_secs(args.lease_s.max(1)),
        max_deliver: args.max_deliver,
        duplicate_window: Duration::from_secs(args.duplicate_window_s.max(1)),
        ..NatsOptions::default()
    }
}

/// Connects to the cluster; an unreachable server or a bad option is an input error naming `--nats`.
pub async fn connect(url: &str, options: NatsOptions) -> anyhow::Result<NatsTransport> {
    NatsTransport::connect(url, options)
        .await
        .map_err(|error| input_error(format!("--nats {url}: {error}")))
}

/// Connects as a client of the cluster (`kiln run --nats`), leaving the streams and the shared
/// consumer as its workers and coordinator configured them.
pub async fn attach(url: &str) -> anyhow::Result<NatsTransport> {
    NatsTransport::attach(url, NatsOptions::default())
        .await
        .map_err(|error| input_error(format!("--nats {url}: {error}")))
}

/// `<hostname>-<pid>`: unique per process on a host, readable in logs.
pub fn default_process_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "kiln".to_string());
    format!("{host}-{}", std::process::id())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut terminate) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
