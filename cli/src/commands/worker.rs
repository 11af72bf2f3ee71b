//! `kiln worker`: pulls tasks of any run from the cluster's shared consumer and runs their
//! episodes on `--slots` slots. SIGTERM (or Ctrl-C) drains: no new task is taken, running episodes
//! finish for up to `--drain-timeout-s`, then their tasks are handed back (nak) so other workers
//! take them at once; a second signal hands them back immediately.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kiln_environments::{EnvContext, default_data_dir};
use kiln_worker::{
    BackendModelResolver, CatalogEnvResolver, EnvResolver, HarnessEpisodeRunner, Transport,
    WorkerAbandon, WorkerConfig, WorkerDeps, WorkerStats, run_worker_abandonable,
};

use crate::args::WorkerArgs;
use crate::commands::cluster::{connect, default_process_id, nats_options, shutdown_signal};
use crate::commands::sandbox::{sandboxed_resolver, shut_down};
use crate::input_error;

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if args.slots == 0 {
        return Err(input_error("--slots 0: expected at least 1"));
    }
    let id = args.id.clone().unwrap_or_else(default_process_id);
    let transport = connect(&args.nats.nats, nats_options(&args.nats)).await?;
    let harnesses = transport.harness_store().await?;
    let context = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    let (environments, docker) =
        match sandboxed_resolver(&args.sandbox, &id, context.clone()).await? {
            Some((resolver, docker)) => (resolver, docker),
            None => (
                Arc::new(CatalogEnvResolver::new(context)) as Arc<dyn EnvResolver>,
                None,
            ),
        };
    let deps = WorkerDeps {
        transport: Arc::new(transport.clone()),
        harnesses: Arc::new(harnesses),
        environments,
        models: Arc::new(BackendModelResolver::new()),
        runner: Arc::new(HarnessEpisodeRunner::new()),
    };
    let abandon = WorkerAbandon::new();
    let mut config = WorkerConfig::new(id.clone(), args.slots);
    // Several heartbeats per lease, so a long episode never loses its task to a short lease.
    config.heartbeat_interval =
        Duration::from_secs_f64((args.nats.lease_s.max(1) as f64 / 3.0).min(10.0));
    let mut running = tokio::spawn(run_worker_abandonable(config, deps, abandon.clone()));
    eprintln!(
        "kiln worker {id}: {} slots, tasks from {}",
        args.slots, args.nats.nats
    );
    tokio::select! {
        stats = &mut running => {
            shut_down(docker).await;
            return Ok(finished(&id, stats?));
        }
        _ = shutdown_signal() => {}
    }
    let drain = Duration::from_secs(args.drain_timeout_s);
    eprintln!(
        "kiln worker {id}: draining; running episodes may finish for {}s (signal again to hand them back now)",
        drain.as_secs()
    );
    transport.close().await;
    tokio::select! {
        stats = &mut running => {
            shut_down(docker).await;
            return Ok(finished(&id, stats?));
        }
        _ = tokio::time::sleep(drain) => {
            eprintln!("kiln worker {id}: drain timeout; handing running tasks back");
        }
        _ = shutdown_signal() => {
            eprintln!("kiln worker {id}: handing running tasks back");
        }
    }
    abandon.abandon();
    let stats = running.await?;
    shut_down(docker).await;
    Ok(finished(&id, stats))
}

fn finished(id: &str, stats: WorkerStats) -> ExitCode {
    eprintln!(
        "kiln worker {id}: stopped; {} tasks completed ({} with errors), {} handed back",
        stats.completed, stats.failed, stats.requeued
    );
    ExitCode::SUCCESS
}
