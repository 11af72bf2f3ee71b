//! The warm pool: containers started ahead of time, their env-server waiting for its first
//! request, handed out in constant time and replenished in the background. A container is used
//! by one episode and then removed; it is never returned to the pool.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::docker::{ContainerStarter, Started};
use super::{Sandbox, SandboxRequest};

/// Back-off after a failed start, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Pre-started sandbox containers of one provider.
pub struct WarmPool {
    shared: Arc<PoolShared>,
    refiller: JoinHandle<()>,
}

struct PoolShared {
    ready: Mutex<VecDeque<Started>>,
    wanted: usize,
    refill: Notify,
}

impl PoolShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Started>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WarmPool {
    /// Starts filling a pool of `wanted` containers in the background.
    pub(crate) fn start(starter: Arc<ContainerStarter>, wanted: usize) -> Self {
        let shared = Arc::new(PoolShared {
            ready: Mutex::new(VecDeque::new()),
            wanted,
            refill: Notify::new(),
        });
        let refiller = tokio::spawn(refill(starter, shared.clone()));
        Self { shared, refiller }
    }

    /// A ready container, or None when the pool is empty. Containers whose env-server has gone
    /// away while waiting are discarded (and removed). Never waits for a start.
    pub fn take(&self) -> Option<Sandbox> {
        let taken = loop {
            let Some(started) = self.shared.lock().pop_front() else {
                break None;
            };
            if started.alive.load(Ordering::SeqCst) {
                break Some(started.sandbox);
            }
            tracing::warn!(sandbox = %started.sandbox.lease.describe(), "warm sandbox died while waiting; discarded");
            // Dropping the lease removes the container in the background.
            drop(started);
        };
        self.shared.refill.notify_one();
        taken
    }

    /// Containers ready now.
    pub fn ready(&self) -> usize {
        self.shared.lock().len()
    }

    /// Stops refilling and removes the waiting containers.
    pub async fn shutdown(&self) {
        self.refiller.abort();
        let drained: Vec<Started> = self.shared.lock().drain(..).collect();
        for mut started in drained {
            started.sandbox.lease.release(false).await;
        }
    }
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        // Waiting containers are removed by their leases' drop.
        self.refiller.abort();
    }
}

/// Keeps `wanted` containers ready, one start at a time, backing off after failures.
async fn refill(starter: Arc<ContainerStarter>, shared: Arc<PoolShared>) {
    let request = SandboxRequest {
        run_id: starter.config.pool_run_label.clone(),
        task_id: String::new(),
        env: String::new(),
        network: None,
    };
    let mut backoff = FIRST_BACKOFF;
    loop {
        while shared.lock().len() < shared.wanted {
            match starter.start(&request).await {
                Ok(started) => {
                    backoff = FIRST_BACKOFF;
                    shared.lock().push_back(started);
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "warm pool cannot start a sandbox");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        shared.refill.notified().await;
    }
}
