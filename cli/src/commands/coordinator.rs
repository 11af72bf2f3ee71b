//! `kiln coordinator`: executes the runs submitted to the cluster until SIGTERM/SIGINT.

use std::process::ExitCode;

use kiln_coordinator::{CoordinatorService, RunRegistry};

use crate::args::CoordinatorArgs;
use crate::commands::cluster::{connect, default_process_id, nats_options, shutdown_signal};

pub async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let id = args.id.clone().unwrap_or_else(default_process_id);
    let transport = connect(&args.nats.nats, nats_options(&args.nats)).await?;
    let harnesses = transport.harness_store().await?;
    let registry = RunRegistry::open(transport.client()).await?;
    std::fs::create_dir_all(&args.runs_dir).map_err(|error| {
        crate::input_error(format!(
            "--runs-dir {}: cannot create it: {error}",
            args.runs_dir.display()
        ))
    })?;
    eprintln!(
        "kiln coordinator {id}: executing runs submitted to {}, run directories in {}",
        args.nats.nats,
        args.runs_dir.display()
    );
    let service = CoordinatorService {
        id,
        runs_dir: args.runs_dir,
        transport,
        harnesses,
        registry,
    };
    service.serve(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
