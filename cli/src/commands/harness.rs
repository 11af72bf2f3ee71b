//! `kiln harness validate|show|diff`: thin formatting over kiln-harness's command functions.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_harness::commands::{diff_files, show_file, validate_file};

use crate::args::HarnessCommand;
use crate::input_error;

pub fn harness(command: HarnessCommand) -> anyhow::Result<ExitCode> {
    match command {
        HarnessCommand::Validate { files } => Ok(validate(&files)),
        HarnessCommand::Show { files } => {
            for file in &files {
                let text = show_file(file).map_err(|error| input_error(error.to_string()))?;
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        HarnessCommand::Diff { before, after } => {
            let diff =
                diff_files(&before, &after).map_err(|error| input_error(error.to_string()))?;
            print!("{diff}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Checks every file (not stopping at the first bad one); fails if any is invalid.
fn validate(files: &[PathBuf]) -> ExitCode {
    let mut invalid = 0;
    for file in files {
        match validate_file(file) {
            Ok(report) => println!("{report}"),
            Err(error) => {
                invalid += 1;
                eprintln!("error: {error}");
            }
        }
    }
    if invalid > 0 {
        eprintln!("{invalid} of {} harness files are invalid", files.len());
        return ExitCode::from(crate::EXIT_INPUT);
    }
    ExitCode::SUCCESS
}
