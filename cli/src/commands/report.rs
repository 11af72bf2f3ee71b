//! `kiln report DIR`: regenerate `report.md` from the run's files and print the summary.

use std::path::Path;

use kiln_coordinator::{render_summary, write_run_report};

use crate::input_error;

pub fn report(dir: &Path) -> anyhow::Result<()> {
    let (config, stats) = write_run_report(dir).map_err(|error| input_error(error.to_string()))?;
    println!("{}", render_summary(&config, &stats, dir));
    Ok(())
}
