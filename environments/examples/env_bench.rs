//! Environment throughput without a model: how many environment steps per second Kiln's text
//! environments sustain, through the same `Environment` API an episode uses (reset, step with
//! admissible actions every step, evaluate). `ops/bench/envs` builds and runs it.
//!
//! ```text
//! cargo run --release -p kiln-environments --example env_bench -- alfworld [--split S] [--repeat N]
//! ```
//!
//! `alfworld`: for each split (or the one given), every task is reset (generated from its seed),
//! then played by two policies: the expert (its plan to the goal) and a seeded uniformly random
//! agent over the admissible commands (50 steps or the goal). Each pass is timed; the best of
//! `--repeat` passes is reported as `key=value` lines and a table. There is no same-run baseline:
//! the reference ALFWorld (TextWorld) cannot run here without the official game files.

use std::time::{Duration, Instant};

use kiln_environments::alfworld::generate::Rng;
use kiln_environments::alfworld::{AlfworldFactory, Split};
use kiln_environments::{EnvContext, Environment, default_data_dir};
use kiln_protocol::{Action, ModelSpec, TaskSpec, Termination};
use serde_json::Value;

struct Args {
    env: String,
    split: Option<String>,
    repeat: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let env = raw
        .next()
        .ok_or("usage: env_bench <alfworld> [--split S] [--repeat N]")?;
    let mut args = Args {
        env,
        split: None,
        repeat: 3,
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--split" => args.split = Some(value()?),
            "--repeat" => {
                let text = value()?;
                args.repeat = text
                    .parse()
                    .ok()
                    .filter(|repeat| *repeat > 0)
                    .ok_or_else(|| format!("--repeat expects a positive integer, got `{text}`"))?;
            }
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    Ok(args)
}

fn spec(task_id: &str) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "env-bench".to_string(),
        env: "alfworld".to_string(),
        split: String::new(),
        task_id: task_id.to_string(),
        attempt: 0,
        harness_hash: "none".to_string(),
        model: ModelSpec::Oracle,
        env_options: Value::Null,
        seed: 0,
        timeout_s: 0,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Policy {
    Expert,
    Random,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Expert => "expert",
            Policy::Random => "random",
        }
    }
}

/// One pass over `ids`: reset, play, evaluate. Returns (elapsed, steps, successes).
async fn pass(
    env: &mut dyn Environment,
    ids: &[String],
    policy: Policy,
) -> Result<(Duration, u64, usize), String> {
    let mut rng = Rng::new(11);
    let mut steps = 0;
    let mut solved = 0;
    let started = Instant::now();
    for id in ids {
        let info = env
            .reset(&spec(id))
            .await
            .map_err(|error| error.to_string())?;
        let mut admissible = info.admissible_actions.unwrap_or_default();
        let plan = env.oracle_plan().unwrap_or_default();
        let mut termination = Termination::MaxSteps;
        for index in 0.. {
            let action = match policy {
                Policy::Expert => match plan.get(index) {
                    Some(action) => action.clone(),
                    None => break,
                },
                Policy::Random => Action::Message {
                    text: rng.pick(&admissible).cloned().unwrap_or_default(),
                },
            };
            let result = env.step(&action).await.map_err(|error| error.to_string())?;
            steps += 1;
            admissible = result.admissible_actions.unwrap_or_default();
            if result.done {
                termination = result.termination.unwrap_or(Termination::MaxSteps);
                break;
            }
        }
        let evaluation = env
            .evaluate(termination)
            .await
            .map_err(|error| error.to_string())?;
        solved += usize::from(evaluation.success);
    }
    Ok((started.elapsed(), steps, solved))
}

async fn bench_alfworld(args: &Args) -> Result<(), String> {
    let ctx = EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    };
    let factory = AlfworldFactory::new(&ctx);
    let generator = factory.generator().map_err(|error| error.to_string())?;
    let splits: Vec<Split> = match &args.split {
        Some(name) => vec![Split::from_name(name).ok_or_else(|| {
            format!("alfworld has no split `{name}`; splits: train, valid_seen, valid_unseen")
        })?],
        None => Split::ALL.to_vec(),
    };
    let mut rows = Vec::new();
    for split in splits {
        let ids = split.task_ids();
        // Generation alone: what a reset costs before any step.
        let mut best_generate = Duration::MAX;
        for _ in 0..args.repeat {
            let started = Instant::now();
            for id in &ids {
                generator.task(id).map_err(|error| error.to_string())?;
            }
            best_generate = best_generate.min(started.elapsed());
        }
        println!(
            "env=alfworld split={} tasks={} generate_best_seconds={:.6} resets_per_second={:.0}",
            split.name(),
            ids.len(),
            best_generate.as_secs_f64(),
            ids.len() as f64 / best_generate.as_secs_f64()
        );
        for policy in [Policy::Expert, Policy::Random] {
            let mut env = factory
                .create_alfworld(&Value::Null)
                .map_err(|error| error.to_string())?;
            let mut best: Option<(Duration, u64, usize)> = None;
            for _ in 0..args.repeat {
                let result = pass(&mut env, &ids, policy).await?;
                if best.is_none_or(|(elapsed, _, _)| result.0 < elapsed) {
                    best = Some(result);
                }
            }
            let (elapsed, steps, solved) = best.expect("repeat is positive");
            let per_second = steps as f64 / elapsed.as_secs_f64();
            println!(
                "env=alfworld split={} policy={} tasks={} steps={steps} solved={solved} best_seconds={:.6} steps_per_second={per_second:.0}",
                split.name(),
                policy.name(),
                ids.len(),
                elapsed.as_secs_f64()
            );
            rows.push((
                split.name(),
                policy.name(),
                ids.len(),
                steps,
                solved,
                elapsed,
                per_second,
            ));
        }
    }
    println!();
    println!(
        "alfworld through the Environment API (reset + steps with admissible commands + evaluate), best of {}:",
        args.repeat
    );
    println!(
        "{:<13} {:<7} {:>6} {:>7} {:>7} {:>9} {:>11}",
        "split", "policy", "tasks", "steps", "solved", "seconds", "steps/s"
    );
    for (split, policy, tasks, steps, solved, elapsed, per_second) in rows {
        println!(
            "{split:<13} {policy:<7} {tasks:>6} {steps:>7} {solved:>7} {:>9.3} {per_second:>11.0}",
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let result = match parse_args() {
        Ok(args) => match args.env.as_str() {
            "alfworld" => bench_alfworld(&args).await,
            other => Err(format!(
                "env_bench: no benchmark for `{other}` (known: alfworld)"
            )),
        },
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        eprintln!("env_bench: {error}");
        std::process::exit(2);
    }
}
