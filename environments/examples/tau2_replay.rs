//! Replays the gold actions of every τ² task (50 airline, 114 retail) and times it: for each task,
//! a fresh DB, every gold action in order (errors ignored), then the τ² DB hash. This is the work
//! τ² does to build a task's gold state; the `ops/bench/tau2-replay` script runs the Python
//! reference on the same work and compares.
//!
//! Two Kiln strategies are timed. `layout` is what the environment uses (`tau2::eval::DbLayout`): the fresh
//! DB is a pooled copy restored by replacing the records the previous task changed, and the hash
//! re-serialises only changed records. `naive` clones the whole DB and hashes all of it; it is
//! reported so the cost of the data structure itself stays visible.
//!
//! ```text
//! cargo run --release -p kiln-environments --example tau2_replay -- [--data-dir DIR] [--repeat N] [--hashes FILE]
//! ```
//!
//! Prints one `key=value` summary line per domain and strategy, and one per strategy for the
//! total; `--hashes` writes `domain<TAB>task_id<TAB>hash` lines (from `layout`, after checking
//! that `naive` gives the same) so the hashes can be checked against the reference.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_environments::default_data_dir;
use kiln_environments::tau2::Domain;
use kiln_environments::tau2::db::db_hash;
use kiln_environments::tau2::env::{DomainData, domain_dir, replay};

struct Args {
    data_dir: PathBuf,
    repeat: usize,
    hashes: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        data_dir: default_data_dir(),
        repeat: 3,
        hashes: None,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => args.data_dir = PathBuf::from(value()?),
            "--hashes" => args.hashes = Some(PathBuf::from(value()?)),
            "--repeat" => {
                let text = value()?;
                args.repeat = text
                    .parse()
                    .ok()
                    .filter(|repeat| *repeat > 0)
                    .ok_or(format!("--repeat needs a positive integer, got {text}"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other} (expected --data-dir, --repeat, --hashes)"
                ));
            }
        }
    }
    Ok(args)
}

/// One pass over a domain with the environment's strategy: `(task id, hash)` per task.
fn replay_layout(data: &DomainData) -> Vec<(String, String)> {
    data.tasks()
        .iter()
        .map(|task| {
            let gold = task
                .gold_actions()
                .iter()
                .map(|action| (action.name.as_str(), &action.arguments));
            (
                task.id.clone(),
                data.layout().replay_hash(data.domain(), gold),
            )
        })
        .collect()
}

/// One pass over a domain cloning and fully hashing the DB for every task.
fn replay_naive(data: &DomainData) -> Vec<(String, String)> {
    data.tasks()
        .iter()
        .map(|task| {
            let mut db = (**data.base_db()).clone();
            let gold = task
                .gold_actions()
                .iter()
                .map(|action| (action.name.as_str(), &action.arguments));
            replay(data.domain(), &mut db, gold);
            (task.id.clone(), db_hash(&db))
        })
        .collect()
}

/// The best of `repeat` passes and the hashes of the last one.
fn time_best(
    repeat: usize,
    pass: impl Fn() -> Vec<(String, String)>,
) -> (Duration, Vec<(String, String)>) {
    let mut best = Duration::MAX;
    let mut hashes = Vec::new();
    for _ in 0..repeat {
        let started = Instant::now();
        hashes = pass();
        best = best.min(started.elapsed());
    }
    (best, hashes)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("tau2_replay: {message}");
            std::process::exit(2);
        }
    };
    let mut lines = Vec::new();
    let mut totals = [Duration::ZERO; 2];
    let mut total_tasks = 0;
    for (label, domain) in [("airline", Domain::Airline), ("retail", Domain::Retail)] {
        let load_started = Instant::now();
        let data = match DomainData::load(&args.data_dir, domain) {
            Ok(data) => data,
            Err(error) => {
                eprintln!(
                    "tau2_replay: {error} ({})",
                    domain_dir(&args.data_dir, domain).display()
                );
                std::process::exit(1);
            }
        };
        let load = load_started.elapsed();
        // Warm the pool so both strategies start from a loaded DB.
        drop(data.layout().fresh());
        let (layout_best, hashes) = time_best(args.repeat, || replay_layout(&data));
        let (naive_best, naive_hashes) = time_best(args.repeat, || replay_naive(&data));
        if hashes != naive_hashes {
            eprintln!(
                "tau2_replay: {label}: the layout and naive strategies disagree on some hashes"
            );
            std::process::exit(1);
        }
        for (strategy, best) in [("layout", layout_best), ("naive", naive_best)] {
            println!(
                "strategy={strategy} domain={label} tasks={} best_seconds={:.6} per_task_ms={:.3} load_seconds={:.3} repeat={}",
                hashes.len(),
                best.as_secs_f64(),
                best.as_secs_f64() * 1e3 / hashes.len() as f64,
                load.as_secs_f64(),
                args.repeat
            );
        }
        totals[0] += layout_best;
        totals[1] += naive_best;
        total_tasks += hashes.len();
        lines.extend(
            hashes
                .into_iter()
                .map(|(task, hash)| format!("{label}\t{task}\t{hash}")),
        );
    }
    for (strategy, total) in [("layout", totals[0]), ("naive", totals[1])] {
        println!(
            "strategy={strategy} domain=all tasks={total_tasks} best_seconds={:.6}",
            total.as_secs_f64()
        );
    }
    if let Some(path) = args.hashes
        && let Err(error) = std::fs::write(&path, lines.join("\n") + "\n")
    {
        eprintln!("tau2_replay: cannot write {}: {error}", path.display());
        std::process::exit(1);
    }
}
