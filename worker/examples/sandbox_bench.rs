//! Sandbox acquisition benchmark (run by `ops/bench/sandbox`): time from asking for a sandbox
//! until its env-server's hello line has arrived, for
//! - `cold`: a new container through bollard (create + attach + start + hello),
//! - `warm`: a hand-out from the warm pool (containers started and said hello in advance),
//! - `cli`: `docker run --rm -i` of the same image with the same limits, from the docker CLI,
//!   timed until the hello line is read from its stdout (the baseline).
//!
//! All three run in the same process, interleaved per repetition (cold and CLI in alternating
//! order, after the warm pool has refilled) so that daemon load affects them alike. Containers
//! are removed after each measurement (untimed).
//!
//! usage: sandbox_bench [--reps N] [--pool N] [--image IMAGE]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_environments::default_data_dir;
use kiln_worker::sandbox::docker::default_image;
use kiln_worker::sandbox::{DockerProvider, DockerSandboxConfig, SandboxProvider, SandboxRequest};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Args {
    reps: usize,
    pool: usize,
    image: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        reps: 20,
        pool: 4,
        image: default_image(),
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| iter.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--reps" => {
                args.reps = value("--reps")?
                    .parse()
                    .map_err(|e| format!("--reps: {e}"))?
            }
            "--pool" => {
                args.pool = value("--pool")?
                    .parse()
                    .map_err(|e| format!("--pool: {e}"))?
            }
            "--image" => args.image = value("--image")?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.reps == 0 || args.pool == 0 {
        return Err("--reps and --pool must be positive".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!(
                "sandbox_bench: {message}\nusage: sandbox_bench [--reps N] [--pool N] [--image IMAGE]"
            );
            std::process::exit(2);
        }
    };
    let worker = format!("bench-{}", std::process::id());
    let mut config = DockerSandboxConfig::new(&worker, default_data_dir());
    config.image = args.image.clone();
    let cold = match DockerProvider::connect(config.clone()).await {
        Ok(provider) => provider,
        Err(error) => {
            eprintln!("sandbox_bench: {error}");
            std::process::exit(1);
        }
    };
    config.warm_pool = args.pool;
    let warm = Arc::new(
        DockerProvider::connect(config.clone())
            .await
            .expect("docker provider"),
    );
    let request = SandboxRequest {
        run_id: "bench".into(),
        task_id: "bench".into(),
        env: "debug-faults".into(),
        network: None,
    };

    // One untimed round of each, so image layers and binaries are in the page cache.
    let mut sandbox = cold.start_cold(&request).await.expect("cold start");
    sandbox.lease.release(false).await;
    cli_hello(&config).await;

    let (mut cold_ms, mut warm_ms, mut cli_ms) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..args.reps {
        // A full pool before each round: its background refills must not overlap the cold and
        // CLI measurements.
        if warm.wait_warm(args.pool, Duration::from_secs(60)).await < args.pool {
            panic!("the warm pool did not refill within 60s");
        }
        // Alternate the order of the two cold paths so neither always runs after the other.
        if rep % 2 == 0 {
            cold_ms.push(time_cold(&cold, &request).await);
            cli_ms.push(millis(cli_hello(&config).await));
        } else {
            cli_ms.push(millis(cli_hello(&config).await));
            cold_ms.push(time_cold(&cold, &request).await);
        }
        let started = Instant::now();
        let mut sandbox = warm.acquire(&request).await.expect("warm hand-out");
        warm_ms.push(millis(started.elapsed()));
        sandbox.lease.release(false).await;
        eprint!("\rrep {}/{}", rep + 1, args.reps);
    }
    eprintln!();
    warm.shutdown().await;
    let _ = cold.reap_own().await;

    let (cold_50, cold_90) = percentiles(&mut cold_ms);
    let (warm_50, warm_90) = percentiles(&mut warm_ms);
    let (cli_50, cli_90) = percentiles(&mut cli_ms);
    println!(
        "sandbox acquisition until the env-server's hello, {} repetitions, image {}",
        args.reps, args.image
    );
    println!("{:<34} {:>10} {:>10}", "", "p50 ms", "p90 ms");
    println!(
        "{:<34} {:>10.2} {:>10.2}",
        "cold container (bollard)", cold_50, cold_90
    );
    println!(
        "{:<34} {:>10.3} {:>10.3}",
        "warm pool hand-out", warm_50, warm_90
    );
    println!(
        "{:<34} {:>10.2} {:>10.2}",
        "docker run --rm -i (CLI baseline)", cli_50, cli_90
    );
    println!("ratio cold/cli p50 {:.2} (goal <= 1.00)", cold_50 / cli_50);
    println!(
        "ratio warm/cli p50 {:.4}; warm p50 {:.3} ms (goal <= 5 ms)",
        warm_50 / cli_50,
        warm_50
    );
}

/// A cold start through bollard, timed until hello; the container is removed untimed.
async fn time_cold(provider: &DockerProvider, request: &SandboxRequest) -> f64 {
    let started = Instant::now();
    let mut sandbox = provider.start_cold(request).await.expect("cold start");
    let elapsed = millis(started.elapsed());
    sandbox.lease.release(false).await;
    elapsed
}

/// `docker run --rm -i` with the sandbox's settings; the time until its first stdout line.
async fn cli_hello(config: &DockerSandboxConfig) -> Duration {
    let limits = config.limits;
    let data = config.data_dir.join("data");
    let mut command = tokio::process::Command::new("docker");
    command
        .args(["run", "--rm", "-i", "--network", "none", "--read-only"])
        .args([
            "--tmpfs",
            &format!("/tmp:rw,noexec,nosuid,size={}m", limits.tmpfs_mib),
        ])
        .args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges"])
        .args(["--user", &config.user])
        .args(["--memory", &format!("{}m", limits.memory_mib)])
        .args(["--memory-swap", &format!("{}m", limits.memory_mib)])
        .args(["--cpus", &limits.cpus.to_string()])
        .args(["--pids-limit", &limits.pids.to_string()])
        .args(["--label", &format!("kiln.worker={}", config.worker_id)])
        .args(["-v", &format!("{}:/kiln/data:ro", data.display())])
        .arg(&config.image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn().expect("run the docker CLI");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("read the hello line");
    let elapsed = started.elapsed();
    assert!(
        line.contains("\"hello\""),
        "docker run printed {line:?} instead of a hello"
    );
    drop(child.stdin.take()); // EOF: the env-server exits and --rm removes the container
    let _ = child.wait().await;
    elapsed
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}
