//! [`ForbiddenLiterals`] from an environment's data: the task ids and gold strings no candidate
//! harness may contain. Only tasks outside the search split count (the search split's own gold is
//! fair game for few-shot demonstrations), and a gold string that a search task shares is not
//! banned either (the WebShop-format catalog has goals that target the same product; a search
//! demonstration naming it is not a leak); when the search split is not given, every task counts.
//!
//! What is gold, per environment (generic words are never banned: literals shorter than
//! [`MIN_LITERAL_CHARS`] are dropped, and a plain number is a task id only next to a task word):
//! - τ² (retail, airline): every string argument value of the gold actions that contains a digit
//!   (order, user, item, product, payment-method and reservation ids, zip codes, flight numbers,
//!   dates), and `communicate_info` answers that contain a digit (amounts). Names, reasons and
//!   cabin classes are words any prompt may use, so they are not banned.
//! - WebShop-format: each goal's target ASIN (the `click[asin]` of the gold path), its full
//!   instruction text, and its `name: value` option phrase when it asks for two or more options
//!   (a single option value such as "blue" is a generic word).
//! - ALFWorld-format: task ids (`valid_unseen/pick_and_place_simple/0007`), and for the
//!   valid_seen/valid_unseen tasks every window of four consecutive expert commands (a single
//!   command such as "go to cabinet 1" is shared by many games). Train tasks' plans are not
//!   generated here (3,553 expert plans): gate tasks drawn from train are covered by their ids.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use kiln_environments::EnvContext;
use kiln_environments::alfworld::{self, AlfworldFactory, Split};
use kiln_environments::tau2::Domain;
use kiln_environments::tau2::env::{DomainData, Tau2Factory, env_id};
use kiln_environments::webshop::{self, Shop};
use kiln_evolve::critic::{ForbiddenLiterals, MIN_LITERAL_CHARS};
use serde_json::Value;

/// The forbidden literals of `env`, skipping the tasks in `search` and the strings their gold
/// shares (None: skip none).
pub fn forbidden_literals(
    env: &str,
    ctx: &EnvContext,
    search: Option<&BTreeSet<String>>,
) -> Result<ForbiddenLiterals> {
    let counts = |task: &str| search.is_none_or(|search| !search.contains(task));
    let mut forbidden = literals_of(env, ctx, &counts)?;
    if let Some(search) = search {
        let public = literals_of(env, ctx, &|task: &str| search.contains(task))?;
        forbidden.allow_public(&public);
    }
    Ok(forbidden)
}

/// The gold literals of the tasks `counts` selects.
fn literals_of(
    env: &str,
    ctx: &EnvContext,
    counts: &dyn Fn(&str) -> bool,
) -> Result<ForbiddenLiterals> {
    if let Some(domain) = [Domain::Retail, Domain::Airline]
        .into_iter()
        .find(|d| env_id(*d) == env)
    {
        let factory = Tau2Factory::new(domain, ctx);
        let data = factory
            .data()
            .with_context(|| format!("loading the {env} data (run ops/setup)"))?;
        return Ok(tau2_literals(env, data, counts));
    }
    if env == webshop::ENV_ID {
        return Ok(webshop_literals(env, &Shop::standard(), counts));
    }
    if env == alfworld::ENV_ID {
        return alfworld_literals(env, ctx, counts);
    }
    anyhow::bail!(
        "no forbidden-literal builder for environment `{env}`: expected tau2-retail, tau2-airline, webshop or alfworld"
    )
}

fn has_digit(text: &str) -> bool {
    text.chars().any(|c| c.is_ascii_digit())
}

fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| strings(item, out)),
        _ => {}
    }
}

fn tau2_literals(env: &str, data: &DomainData, counts: &dyn Fn(&str) -> bool) -> ForbiddenLiterals {
    let mut forbidden = ForbiddenLiterals::new(env);
    for task in data.tasks().iter().filter(|t| counts(&t.id)) {
        forbidden.task_ids.insert(task.id.clone());
        for action in task.gold_actions() {
            for (name, value) in &action.arguments {
                let mut values = Vec::new();
                strings(value, &mut values);
                for text in values.iter().filter(|t| has_digit(t)) {
                    forbidden.add(
                        text,
                        &format!("gold argument {name} ({})", action.name),
                        &task.id,
                    );
                }
            }
        }
        for info in task.communicate_info().iter().filter(|t| has_digit(t)) {
            forbidden.add(info, "gold answer (communicate_info)", &task.id);
        }
    }
    forbidden
}

fn webshop_literals(env: &str, shop: &Shop, counts: &dyn Fn(&str) -> bool) -> ForbiddenLiterals {
    let mut forbidden = ForbiddenLiterals::new(env);
    for (index, goal) in shop.goals().iter().enumerate() {
        let id = index.to_string();
        if !counts(&id) {
            continue;
        }
        forbidden.task_ids.insert(id.clone());
        forbidden.add(&goal.asin, "target ASIN", &id);
        forbidden.add(&goal.instruction_text, "goal instruction", &id);
        if goal.goal_options.len() >= 2 {
            let phrase: Vec<String> = goal
                .goal_options
                .iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect();
            forbidden.add(&phrase.join(" and "), "goal option phrase", &id);
        }
    }
    forbidden
}

fn alfworld_literals(
    env: &str,
    ctx: &EnvContext,
    counts: &dyn Fn(&str) -> bool,
) -> Result<ForbiddenLiterals> {
    let factory = AlfworldFactory::new(ctx);
    let generator = factory
        .generator()
        .context("loading the alfworld data (run ops/setup)")?;
    let mut forbidden = ForbiddenLiterals::new(env);
    for split in [Split::Train, Split::ValidSeen, Split::ValidUnseen] {
        for id in split.task_ids() {
            if !counts(&id) {
                continue;
            }
            forbidden.add(&id, "task id", &id);
            forbidden.task_ids.insert(id.clone());
            if matches!(split, Split::Train) {
                continue;
            }
            let task = generator
                .task(&id)
                .with_context(|| format!("generating alfworld task {id}"))?;
            for window in task.expert.windows(4) {
                let text = window.join("\n");
                if text.chars().count() >= MIN_LITERAL_CHARS {
                    forbidden.add(&text, "expert plan (4 commands)", &id);
                }
            }
        }
    }
    Ok(forbidden)
}
