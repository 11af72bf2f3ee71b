//! The `kiln` binary: the composition root. Parses the command line, sets up logging, and hands
//! each subcommand to the library crates.

mod args;
mod commands;
mod forbidden;
mod logging;
mod progress;
mod selection;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, EvolveCommand};

/// Exit status for bad input (as clap uses for bad arguments).
pub const EXIT_INPUT: u8 = 2;
/// Exit status for a failure after the inputs were accepted.
pub const EXIT_FAILURE: u8 = 1;

/// Bad input: a flag, file or id that is not what was expected. The message names the input.
#[derive(Debug)]
pub struct InputError(String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// An [`InputError`] as an `anyhow::Error`.
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = logging::init(&cli.logging) {
        return report_error(&error);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return report_error(&anyhow::anyhow!("cannot start the tokio runtime: {error}"));
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => report_error(&error),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => commands::run::run(args).await,
        Command::Envs => commands::envs::envs().map(|()| ExitCode::SUCCESS),
        Command::Generate(args) => commands::generate::generate(args).await,
        Command::Harness(command) => commands::harness::harness(command),
        Command::Worker(args) => commands::worker::worker(args).await,
        Command::Coordinator(args) => commands::coordinator::coordinator(args).await,
        Command::Gaia(command) => commands::gaia::gaia(command),
        Command::Wiki(command) => commands::wiki::wiki(command).await,
        Command::Report { dir } => commands::report::report(&dir).map(|()| ExitCode::SUCCESS),
        Command::Evolve(args) => match args.command {
            Some(EvolveCommand::Check(args)) => commands::evolve_check::check(args),
            Some(EvolveCommand::Replay { dir }) => commands::evolve::replay(&dir).await,
            None => commands::evolve::evolve(args.run).await,
        },
        Command::Train(args) => commands::train::train(args).await,
    }
}

fn report_error(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    if error.downcast_ref::<InputError>().is_some() {
        return ExitCode::from(EXIT_INPUT);
    }
    ExitCode::from(EXIT_FAILURE)
}
