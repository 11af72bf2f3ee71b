//! `kiln-env-server [--data-dir DIR]`: serves one environment session (the env-server protocol,
//! JSON lines) on stdin/stdout and exits at `close` or at the end of stdin. Logs go to stderr
//! (filter with `KILN_LOG`, default `info`). The worker runs it as a subprocess or as the command
//! of a sandbox container.
//!
//! Exit status: 0 after a clean session, 2 for bad arguments, 1 when the host connection broke.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_environments::env_server::{ServeOptions, serve};
use kiln_environments::{default_data_dir, faults};

const USAGE: &str = concat!(
    "usage: kiln-env-server [--data-dir DIR]\n",
    "serves one Kiln environment session on stdin/stdout (JSON lines); logs to stderr\n",
    "  --data-dir DIR   Kiln's data root (default: $KILN_HOME, else ~/.cache/kiln)\n",
    "  --version        prints the version",
);

fn main() -> ExitCode {
    let data_dir = match parse_args(std::env::args().skip(1)) {
        Ok(Some(dir)) => dir,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kiln-env-server: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // This process is the sandbox: the debug-faults fixture may crash it or exhaust its memory.
    faults::enable_process_faults();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kiln-env-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let options = ServeOptions::new(data_dir);
    tracing::debug!(data_dir = %options.data_dir.display(), version = %options.server_version, "env-server starting");
    let served = runtime.block_on(serve(tokio::io::stdin(), tokio::io::stdout(), options));
    let code = match served {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "env-server session failed");
            1
        }
    };
    // Tokio's stdin reads on a blocking thread that would keep the runtime's shutdown waiting for
    // one more line; the session is over, so leave now.
    std::process::exit(code);
}

/// The data directory, or None when `--version`/`--help` was answered.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<PathBuf>, String> {
    let mut data_dir = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data-dir" => {
                let dir = args
                    .next()
                    .ok_or_else(|| "--data-dir needs a directory".to_string())?;
                data_dir = Some(PathBuf::from(dir));
            }
            "--version" => {
                println!("kiln-env-server {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(data_dir.unwrap_or_else(default_data_dir)))
}
