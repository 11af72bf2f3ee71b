//! `kiln evolve check CANDIDATE.toml --base BASE.toml --env E [--manifest FILE]`: the Critic's
//! static checks on one candidate. Exit 0 when it would go on to the gate, 1 when rejected,
//! 2 on bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kiln_environments::{EnvContext, default_data_dir};
use kiln_evolve::Manifest;
use kiln_evolve::critic::{CriticContext, CriticVerdict, review};
use kiln_harness::HarnessSpec;
use kiln_harness::spec::{SpecFormat, parse_spec};

use crate::args::EvolveCheckArgs;
use crate::forbidden::forbidden_literals;
use crate::input_error;

/// Exit code of a rejected candidate.
pub const EXIT_REJECTED: u8 = 1;

pub fn check(args: EvolveCheckArgs) -> anyhow::Result<ExitCode> {
    let child = read_spec(&args.candidate)?;
    let parent = read_spec(&args.base)?;
    let manifest = args.manifest.as_deref().map(read_manifest).transpose()?;
    let search = args.search_tasks.as_deref().map(read_ids).transpose()?;
    let ctx = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    let forbidden = forbidden_literals(&args.env, &ctx, search.as_ref())
        .map_err(|error| input_error(format!("--env {}: {error:#}", args.env)))?;
    let seed = args.seed.as_deref().map(read_spec).transpose()?;
    let context = CriticContext {
        forbidden,
        search_split: search,
        seed,
        script_files: script_files(&child, &args.candidate),
        ..CriticContext::default()
    };
    let verdict = review(&parent, &child, manifest.as_ref(), &context);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", render(&args.candidate, &verdict));
    }
    Ok(if verdict.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REJECTED)
    })
}

/// Parses a harness file's shape only: a candidate that fails validation (an unknown kind, a
/// script before scripts are built) is still checked; the gate's canonical stage rejects it.
fn read_spec(path: &Path) -> anyhow::Result<HarnessSpec> {
    let format = SpecFormat::from_path(path).map_err(|error| input_error(error.to_string()))?;
    let text = std::fs::read_to_string(path)
        .map_err(|error| input_error(format!("{}: cannot read: {error}", path.display())))?;
    parse_spec(&text, format).map_err(|error| input_error(error.with_file(path).to_string()))
}

fn read_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| input_error(format!("{}: cannot read: {error}", path.display())))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|error| {
        input_error(format!(
            "{}: not a candidate manifest (candidate_id, buckets, operator, …): {error}",
            path.display()
        ))
    })
}

/// One task id per line (blank lines and `#` comments skipped).
fn read_ids(path: &Path) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))
        .map_err(|error| input_error(format!("{error:#}")))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Sources of script files the candidate references, read next to the candidate file. A path
/// that leaves that directory is not read (the critic rejects it as file access).
fn script_files(child: &HarnessSpec, candidate: &Path) -> BTreeMap<String, String> {
    let dir = candidate.parent().unwrap_or(Path::new("."));
    child
        .processors
        .iter()
        .filter(|p| p.kind == "script")
        .filter_map(|p| p.config.get("file")?.as_str().map(str::to_string))
        .filter(|path| !path.starts_with('/') && !path.split(['/', '\\']).any(|part| part == ".."))
        .filter_map(|path| {
            let text = std::fs::read_to_string(dir.join(&path)).ok()?;
            Some((path, text))
        })
        .collect()
}

fn render(candidate: &Path, verdict: &CriticVerdict) -> String {
    let mut out = String::new();
    let name = verdict
        .candidate_id
        .clone()
        .unwrap_or_else(|| candidate.display().to_string());
    let decision = if verdict.accepted() {
        "accept (goes on to the gate)"
    } else {
        "reject"
    };
    out.push_str(&format!("{name}: {decision}\n"));
    for reason in &verdict.reasons {
        let kind = serde_json::to_value(reason.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match &reason.processor {
            Some(id) => out.push_str(&format!(
                "  [{kind}] processor `{id}`: {}\n",
                reason.message
            )),
            None => out.push_str(&format!("  [{kind}] {}\n", reason.message)),
        }
    }
    for change in &verdict.budget.changes {
        out.push_str(&format!(
            "  budget {}: {} -> {} ({}{})\n",
            change.setting,
            change
                .before
                .as_ref()
                .map_or("unbounded".to_string(), ToString::to_string),
            change
                .after
                .as_ref()
                .map_or("unbounded".to_string(), ToString::to_string),
            change.note,
            if change.rejected { ", rejected" } else { "" }
        ));
    }
    if verdict.budget.charge > 0.0 {
        out.push_str(&format!(
            "  budget charge against the gain: {:.4}\n",
            verdict.budget.charge
        ));
    }
    if let Some(concern) = &verdict.strategy_concern {
        out.push_str(&format!("  strategy concern: {concern}\n"));
    }
    for note in &verdict.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    let buckets: Vec<String> = verdict
        .touched_buckets
        .iter()
        .map(|b| format!("{b:?}").to_lowercase())
        .collect();
    out.push_str(&format!("  buckets touched: {}\n", buckets.join(", ")));
    out
}
