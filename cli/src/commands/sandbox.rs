//! `--sandbox none|process|docker`: where episodes' environments run, for `kiln run` and
//! `kiln worker`.

use std::sync::Arc;

use kiln_environments::EnvContext;
use kiln_worker::EnvResolver;
use kiln_worker::sandbox::{
    DockerProvider, DockerSandboxConfig, ProcessProvider, SandboxEnvResolver,
};

use crate::args::{SandboxArgs, SandboxKind};
use crate::input_error;

/// The environment resolver for `args`, and the Docker provider when there is one (to reap and
/// shut down). `worker_id` labels the containers (`kiln.worker`); `context` gives data directory
/// and the simulated-user and judge models.
pub async fn sandboxed_resolver(
    args: &SandboxArgs,
    worker_id: &str,
    context: EnvContext,
) -> anyhow::Result<Option<(Arc<dyn EnvResolver>, Option<Arc<DockerProvider>>)>> {
    match args.sandbox {
        SandboxKind::None => Ok(None),
        SandboxKind::Process => {
            let provider = ProcessProvider::new(None, context.data_dir.clone())
                .map_err(|error| input_error(format!("--sandbox process: {error}")))?;
            let resolver = SandboxEnvResolver::new(Arc::new(provider), context);
            Ok(Some((Arc::new(resolver), None)))
        }
        SandboxKind::Docker => {
            let mut config = DockerSandboxConfig::new(worker_id, context.data_dir.clone());
            config.warm_pool = args.warm_pool;
            config.limits.memory_mib = args.sandbox_memory_mib;
            config.limits.cpus = args.sandbox_cpus;
            let provider = DockerProvider::connect(config)
                .await
                .map_err(|error| input_error(format!("--sandbox docker: {error}")))?;
            let provider = Arc::new(provider);
            // Containers a crashed earlier process with this worker id left behind.
            let reaped = provider.reap_own().await?;
            if reaped > 0 {
                tracing::warn!(
                    worker = worker_id,
                    reaped,
                    "removed orphaned sandbox containers"
                );
            }
            let resolver = SandboxEnvResolver::new(provider.clone(), context);
            Ok(Some((Arc::new(resolver), Some(provider))))
        }
    }
}

/// Removes the warm containers and anything else of this worker's left at the end.
pub async fn shut_down(provider: Option<Arc<DockerProvider>>) {
    let Some(provider) = provider else {
        return;
    };
    provider.shutdown().await;
    if let Err(error) = provider.reap_own().await {
        tracing::warn!(%error, "cannot remove the sandbox containers");
    }
}
