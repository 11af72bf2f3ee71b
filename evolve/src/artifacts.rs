//! The evolution directory's per-round files:
//!
//! ```text
//! <dir>/INDEX.md                       one line per round, with links
//! <dir>/journal.md                     appended per round: what was proposed and why
//! <dir>/splits.json                    the frozen splits
//! <dir>/R<n>/digests.jsonl             one TaskDigest per line
//! <dir>/R<n>/landscape.md|.json        the Planner's landscape
//! <dir>/R<n>/candidates/C-R<n>-NN.toml the child harness (parent + edits), canonical TOML
//! <dir>/R<n>/candidates/C-R<n>-NN.md   its manifest: edits, evidence, predictions, attribution
//! <dir>/R<n>/rejected.md               proposals that never became candidates, with reasons
//! ```
//!
//! Files are written whole (temporary file, then rename), so an interrupted round leaves either
//! the old or the new version of each file.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_harness::{HarnessSpec, apply_edits, builtin_registry};

use crate::candidate::Candidate;
use crate::digest::TaskDigest;
use crate::evolver::Proposals;
use crate::plan::{Landscape, bucket_name};
use crate::splits::EvolutionSplits;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("candidate {id}: {message}")]
    Candidate { id: String, message: String },
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), ArtifactError> {
    let io = |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    let temporary = path.with_extension("tmp~");
    fs::write(&temporary, text).map_err(io)?;
    fs::rename(&temporary, path).map_err(io)
}

/// `R<n>`.
pub fn round_dir(dir: &Path, round: u32) -> PathBuf {
    dir.join(format!("R{round}"))
}

/// Writes `splits.json`.
pub fn write_splits(dir: &Path, splits: &EvolutionSplits) -> Result<PathBuf, ArtifactError> {
    let path = dir.join("splits.json");
    let text = serde_json::to_string_pretty(splits).expect("splits serialize");
    write(&path, &text)?;
    Ok(path)
}

/// What one round produced before the critic and the gate.
pub struct RoundFiles<'a> {
    pub round: u32,
    pub parent: &'a HarnessSpec,
    pub digests: &'a [TaskDigest],
    pub landscape: &'a Landscape,
    pub proposals: &'a Proposals,
}

/// Writes `R<n>/` and updates `INDEX.md` and `journal.md`. Returns the round directory.
pub fn write_round(dir: &Path, files: &RoundFiles<'_>) -> Result<PathBuf, ArtifactError> {
    let round_dir = round_dir(dir, files.round);
    let digests: String = files
        .digests
        .iter()
        .map(|digest| serde_json::to_string(digest).expect("digests serialize") + "\n")
        .collect();
    write(&round_dir.join("digests.jsonl"), &digests)?;
    write(
        &round_dir.join("landscape.md"),
        &files.landscape.to_markdown(),
    )?;
    write(
        &round_dir.join("landscape.json"),
        &files.landscape.to_json(),
    )?;
    let registry = builtin_registry();
    for candidate in &files.proposals.candidates {
        let child = apply_edits(files.parent, &candidate.edits, &registry).map_err(|error| {
            ArtifactError::Candidate {
                id: candidate.id().to_string(),
                message: error.to_string(),
            }
        })?;
        let toml = toml::to_string(&child).map_err(|error| ArtifactError::Candidate {
            id: candidate.id().to_string(),
            message: format!("cannot serialize the child harness: {error}"),
        })?;
        let candidates = round_dir.join("candidates");
        write(&candidates.join(format!("{}.toml", candidate.id())), &toml)?;
        write(
            &candidates.join(format!("{}.md", candidate.id())),
            &manifest_markdown(candidate),
        )?;
    }
    write(
        &round_dir.join("rejected.md"),
        &rejected_markdown(files.proposals),
    )?;
    write_index(dir)?;
    append_journal(dir, files)?;
    Ok(round_dir)
}

/// A candidate's manifest as Markdown, with the machine-readable manifest and edits as JSON.
pub fn manifest_markdown(candidate: &Candidate) -> String {
    let manifest = &candidate.manifest;
    let mut out = format!("# {}\n\n", manifest.candidate_id);
    let buckets: Vec<&str> = manifest.buckets.iter().map(|b| bucket_name(*b)).collect();
    let _ = writeln!(out, "- operator: `{}`", manifest.operator);
    let _ = writeln!(out, "- buckets: {}", buckets.join(", "));
    if let Some(parent) = &manifest.iterates_from {
        let _ = writeln!(out, "- iterates from: {parent}");
    }
    if let Some(signature) = &manifest.attribution_signature {
        let _ = writeln!(
            out,
            "- attribution: {} `{}` ≥ {} per episode",
            signature.kind, signature.name, signature.expected_min_calls
        );
    }
    let _ = writeln!(out, "\n{}\n\n## Edits\n", manifest.rationale);
    for edit in &candidate.edits {
        let _ = writeln!(out, "- {}", edit.describe());
    }
    out.push_str("\n## Evidence\n\n");
    for evidence in &manifest.capability_evidence {
        let pointers: Vec<String> = evidence.evidence.iter().map(|p| format!("`{p}`")).collect();
        let _ = writeln!(
            out,
            "- **{}**: {} {}",
            evidence.kind,
            evidence.claim,
            pointers.join(" ")
        );
    }
    let impact = &manifest.predicted_impact;
    out.push_str("\n## Predicted impact (search split)\n\n");
    for (label, tasks) in [
        ("unlock", &impact.tasks_will_unlock),
        ("stabilize", &impact.tasks_will_stabilize),
        ("at risk", &impact.tasks_at_risk),
    ] {
        let listed: Vec<String> = tasks.iter().map(|t| format!("`{t}`")).collect();
        let _ = writeln!(
            out,
            "- {label}: {}",
            if listed.is_empty() {
                "none".into()
            } else {
                listed.join(", ")
            }
        );
    }
    out.push_str("\n## Machine-readable\n\n```json\n");
    out.push_str(&serde_json::to_string_pretty(candidate).expect("candidates serialize"));
    out.push_str("\n```\n");
    out
}

fn rejected_markdown(proposals: &Proposals) -> String {
    let mut out = String::from("# Rejected proposals\n\n");
    if proposals.rejected.is_empty() {
        out.push_str("None.\n");
        return out;
    }
    for rejected in &proposals.rejected {
        let _ = writeln!(
            out,
            "## {} ({})\n\n{}\n\n```text\n{}\n```\n",
            rejected.candidate_id, rejected.evolver, rejected.reason, rejected.raw
        );
    }
    out
}

/// Rewrites `INDEX.md` from the round directories present.
fn write_index(dir: &Path) -> Result<(), ArtifactError> {
    let mut rounds: Vec<u32> = fs::read_dir(dir)
        .map_err(|source| ArtifactError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.strip_prefix('R')?.parse().ok())
        .collect();
    rounds.sort_unstable();
    let mut out = String::from(
        "# Evolution\n\n- [journal](journal.md)\n- [splits](splits.json)\n\n| round | landscape | candidates |\n|---|---|---|\n",
    );
    for round in rounds {
        let candidates = fs::read_dir(round_dir(dir, round).join("candidates"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
                    .count()
            })
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "| R{round} | [landscape](R{round}/landscape.md) | {candidates} |"
        );
    }
    write(&dir.join("INDEX.md"), &out)
}

fn append_journal(dir: &Path, files: &RoundFiles<'_>) -> Result<(), ArtifactError> {
    let path = dir.join("journal.md");
    let mut text = fs::read_to_string(&path).unwrap_or_else(|_| "# Journal\n".to_string());
    let header = format!("\n## Round {}\n", files.round);
    // A re-written round replaces its entry instead of repeating it.
    if let Some(start) = text.find(&header) {
        let end = text[start + header.len()..]
            .find("\n## Round ")
            .map_or(text.len(), |offset| start + header.len() + offset);
        text.replace_range(start..end, "");
    }
    let landscape = files.landscape;
    let _ = write!(
        text,
        "{header}\n{} tasks: {} solved, {} flaky, {} failed. Themes: {}.\n\n",
        landscape.tasks,
        landscape.solved,
        landscape.flaky,
        landscape.failed,
        if landscape.top_themes.is_empty() {
            "none".to_string()
        } else {
            landscape.top_themes.join("; ")
        }
    );
    for candidate in &files.proposals.candidates {
        let _ = writeln!(
            text,
            "- {} `{}`: {}",
            candidate.id(),
            candidate.manifest.operator,
            candidate.manifest.rationale
        );
    }
    for rejected in &files.proposals.rejected {
        let _ = writeln!(
            text,
            "- {} rejected: {}",
            rejected.candidate_id, rejected.reason
        );
    }
    write(&path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolver::propose_rules;
    use crate::evolver::tests::{input, world};

    #[test]
    fn a_round_directory_holds_digests_landscape_candidates_and_the_index() {
        let world = world();
        let mut proposals = propose_rules(&input(&world, 3, 9));
        proposals.rejected.push(crate::evolver::RejectedProposal {
            candidate_id: "C-R1-04".into(),
            evolver: "llm".into(),
            reason: "the reply holds no JSON object".into(),
            raw: "no idea".into(),
        });
        let dir = tempfile::tempdir().unwrap();
        write_splits(dir.path(), &world.splits).unwrap();
        let files = RoundFiles {
            round: 1,
            parent: &world.parent,
            digests: &world.digests,
            landscape: &world.landscape,
            proposals: &proposals,
        };
        let round = write_round(dir.path(), &files).unwrap();
        assert_eq!(round, dir.path().join("R1"));
        let digests = fs::read_to_string(round.join("digests.jsonl")).unwrap();
        assert_eq!(digests.lines().count(), world.digests.len());
        let back: TaskDigest = serde_json::from_str(digests.lines().next().unwrap()).unwrap();
        assert_eq!(back, world.digests[0]);
        assert_eq!(
            fs::read_to_string(round.join("landscape.md")).unwrap(),
            world.landscape.to_markdown()
        );
        for candidate in &proposals.candidates {
            let toml_path = round
                .join("candidates")
                .join(format!("{}.toml", candidate.id()));
            let child: HarnessSpec =
                toml::from_str(&fs::read_to_string(toml_path).unwrap()).unwrap();
            let expected =
                apply_edits(&world.parent, &candidate.edits, &builtin_registry()).unwrap();
            assert_eq!(child, expected);
            let manifest = fs::read_to_string(
                round
                    .join("candidates")
                    .join(format!("{}.md", candidate.id())),
            )
            .unwrap();
            assert!(manifest.starts_with(&format!("# {}\n", candidate.id())));
            assert!(manifest.contains(&candidate.manifest.operator));
            let json = manifest
                .split("```json\n")
                .nth(1)
                .unwrap()
                .split("\n```")
                .next()
                .unwrap();
            let parsed: Candidate = serde_json::from_str(json).unwrap();
            assert_eq!(&parsed, candidate);
        }
        let rejected = fs::read_to_string(round.join("rejected.md")).unwrap();
        assert!(rejected.contains("C-R1-04 (llm)") && rejected.contains("no idea"));
        let index = fs::read_to_string(dir.path().join("INDEX.md")).unwrap();
        assert!(
            index.contains(&format!(
                "| R1 | [landscape](R1/landscape.md) | {} |",
                proposals.candidates.len()
            )),
            "{index}"
        );
        // Writing the round again replaces its journal entry.
        write_round(dir.path(), &files).unwrap();
        let journal = fs::read_to_string(dir.path().join("journal.md")).unwrap();
        assert_eq!(journal.matches("## Round 1").count(), 1, "{journal}");
        assert!(journal.contains("C-R1-04 rejected"));
        assert!(dir.path().join("splits.json").exists());
    }
}
