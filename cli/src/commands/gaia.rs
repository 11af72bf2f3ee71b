//! `kiln gaia score`, and the submission file a GAIA run writes (`submission.jsonl` in the run
//! directory: one line per task, from attempt 0).

use std::fmt::Write as _;
use std::path::Path;

use kiln_coordinator::RunConfig;
use kiln_coordinator::store::{TRAJECTORIES, read_jsonl};
use kiln_environments::gaia::submission::{
    SubmissionScore, read_submission, score_submission, submission_of,
};
use kiln_environments::gaia::{dataset, is_gaia};
use kiln_protocol::Trajectory;

use crate::args::GaiaCommand;
use crate::input_error;

/// The submission file of a GAIA run.
pub const SUBMISSION: &str = "submission.jsonl";

pub fn gaia(command: GaiaCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        GaiaCommand::Score {
            submission,
            dataset: path,
            json,
        } => {
            let lines = read_submission(&submission).map_err(|e| input_error(e.to_string()))?;
            let dataset = dataset::load(&path).map_err(|e| input_error(e.to_string()))?;
            let score =
                score_submission(&dataset, &lines).map_err(|e| input_error(e.to_string()))?;
            if json {
                for task in &score.tasks {
                    println!(
                        "{}",
                        serde_json::json!({"task_id": task.task_id, "correct": task.correct})
                    );
                }
            } else {
                print!("{}", render_score(&score));
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// The summary `kiln gaia score` prints.
pub fn render_score(score: &SubmissionScore) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "accuracy  {}/{} ({:.1}%)",
        score.correct(),
        score.tasks.len(),
        100.0 * score.accuracy()
    );
    for (level, (correct, tasks)) in score.per_level() {
        let _ = writeln!(
            out,
            "level {level}   {correct}/{tasks} ({:.1}%)",
            100.0 * correct as f64 / tasks.max(1) as f64
        );
    }
    if score.missing() > 0 {
        let _ = writeln!(
            out,
            "{} tasks had no submission line (counted wrong)",
            score.missing()
        );
    }
    if !score.unknown.is_empty() {
        let _ = writeln!(
            out,
            "{} submitted ids are not in the dataset (ignored)",
            score.unknown.len()
        );
    }
    if !score.unscored.is_empty() {
        let _ = writeln!(
            out,
            "{} submitted tasks have no ground truth (not scored)",
            score.unscored.len()
        );
    }
    out
}

/// After a GAIA run (`--env gaia:PATH`): writes `submission.jsonl` from the run's trajectories.
/// Other environments: nothing.
pub fn write_run_submission(dir: &Path, config: &RunConfig) -> anyhow::Result<()> {
    if !is_gaia(&config.env) {
        return Ok(());
    }
    let trajectories: Vec<Trajectory> = read_jsonl(&dir.join(TRAJECTORIES))?.records;
    let lines = submission_of(&trajectories, &config.tasks);
    let mut text = String::new();
    for line in &lines {
        text.push_str(&serde_json::to_string(line)?);
        text.push('\n');
    }
    let path = dir.join(SUBMISSION);
    std::fs::write(&path, text)
        .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", path.display()))?;
    eprintln!(
        "kiln: GAIA submission ({} tasks) in {}",
        lines.len(),
        path.display()
    );
    Ok(())
}
