//! `tracing` setup: text or JSON lines on stderr.

use tracing_subscriber::EnvFilter;

use crate::args::{LogFormat, LoggingArgs};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `--log-level`.
pub fn init(args: &LoggingArgs) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(&value)
            .map_err(|error| anyhow::anyhow!("invalid RUST_LOG `{value}`: {error}"))?,
        _ => EnvFilter::try_new(&args.log_level).map_err(|error| {
            crate::input_error(format!("invalid --log-level `{}`: {error}", args.log_level))
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the log subscriber: {error}"))
}
