//! Kiln's side of `ops/bench/llm`: prefill and generation throughput of the embedded model on the
//! prompts in a JSON file (a list of strings, already in the chat format), printed as one JSON
//! object on stdout.
//!
//! - single sequence: for each prompt, a fresh cache, the prompt in one forward pass (prefill),
//!   then `--tokens` greedy tokens one at a time (end-of-generation tokens do not stop it, so
//!   every prompt decodes the same number of tokens, as on the llama.cpp side);
//! - batched: every prompt submitted at once to the engine (continuous batching, greedy,
//!   `--tokens` each, stopping at end-of-generation), aggregate generated tokens per second.
//!
//! `cargo run --release -p kiln-models --example llm_bench -- --model PATH --prompts FILE
//! [--tokens N] [--batch N]`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kiln_models::local::engine::{Engine, EngineConfig, GenerationParams};
use kiln_models::local::llama::{ForwardMode, LlamaModel, LogitsWanted, SequenceInput};
use kiln_models::local::sampling::argmax;
use kiln_models::local::{LocalModelFiles, device};

struct Args {
    model: PathBuf,
    prompts: PathBuf,
    tokens: usize,
    batch: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: kiln_models::local::smollm2_path(&kiln_models::local::kiln_home()),
        prompts: PathBuf::new(),
        tokens: 64,
        batch: 8,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.model = value.into(),
            "--prompts" => args.prompts = value.into(),
            "--tokens" => args.tokens = value.parse().expect("--tokens N"),
            "--batch" => args.batch = value.parse().expect("--batch N"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let prompts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&args.prompts).expect("read prompts"))
            .expect("prompts: a JSON list of strings");
    let files = LocalModelFiles::load(&args.model).expect("load model files");
    let device = device::select_device(device::DevicePreference::Auto).expect("device");
    let model = LlamaModel::load(&files.gguf, &device, ForwardMode::Fast).expect("load model");
    let encoded: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| files.tokenizer.encode(p, true, true))
        .collect();

    // Warm-up (thread pool start, page faults).
    single(&model, &encoded[0], 4);
    let (mut prefill_tokens, mut prefill_s, mut gen_tokens, mut gen_s) = (0, 0.0, 0, 0.0);
    let mut gen_cpu_s = 0.0;
    let mut first_completion = Vec::new();
    for prompt in &encoded {
        let (prefill, generation, completion) = single(&model, prompt, args.tokens);
        prefill_tokens += prompt.len();
        prefill_s += prefill;
        gen_tokens += args.tokens;
        gen_s += generation.wall;
        gen_cpu_s += generation.cpu;
        if first_completion.is_empty() {
            first_completion = completion;
        }
    }

    let tokenizer = Arc::new(files.tokenizer);
    let sample_text = tokenizer.decode(&first_completion);
    let engine = Engine::start(
        model,
        tokenizer,
        EngineConfig {
            max_batch: args.batch,
            prefix_cache_bytes: 0,
            ..EngineConfig::default()
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (batched_tokens, batched_s) = runtime.block_on(batched(&engine, &encoded, args.tokens));

    let report = serde_json::json!({
        "threads": candle_core::utils::get_num_threads(),
        "device": device::device_name(&device),
        "prompts": encoded.len(),
        "prefill_tokens": prefill_tokens,
        "prefill_tok_s": prefill_tokens as f64 / prefill_s,
        "generated_tokens": gen_tokens,
        "generation_tok_s": gen_tokens as f64 / gen_s,
        "generation_cpu_tok_s": gen_tokens as f64 / gen_cpu_s,
        "batched_sequences": encoded.len().min(args.batch),
        "batched_generated_tokens": batched_tokens,
        "batched_tok_s": batched_tokens as f64 / batched_s,
        "first_completion": sample_text,
    });
    println!("{report}");
}

/// Seconds of generation: wall clock, and CPU time of the calling thread (which does all the work
/// with one thread; on a loaded machine it leaves out the time other processes had the core).
struct Timing {
    wall: f64,
    cpu: f64,
}

/// (prefill seconds, generation timing, generated ids) for one prompt from an empty cache.
fn single(model: &LlamaModel, prompt: &[u32], tokens: usize) -> (f64, Timing, Vec<u32>) {
    let mut cache = model.new_cache();
    let started = Instant::now();
    let logits = forward(model, &mut cache, prompt);
    let prefill = started.elapsed().as_secs_f64();
    let mut next = argmax(&logits);
    let mut completion = vec![next];
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    for _ in 1..tokens {
        let logits = forward(model, &mut cache, &[next]);
        next = argmax(&logits);
        completion.push(next);
    }
    let timing = Timing {
        wall: started.elapsed().as_secs_f64(),
        cpu: thread_cpu_seconds() - cpu_started,
    };
    (prefill, timing, completion)
}

/// On-CPU time of the calling thread (Linux `/proc/thread-self/schedstat`, in nanoseconds); NaN
/// where it cannot be read.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |nanos| nanos / 1e9)
}

fn forward(
    model: &LlamaModel,
    cache: &mut kiln_models::local::llama::KvCache,
    tokens: &[u32],
) -> Vec<f32> {
    let mut inputs = [SequenceInput {
        tokens,
        cache,
        logits: LogitsWanted::Last,
    }];
    let mut out = model.forward(&mut inputs).expect("forward");
    out.remove(0).pop().expect("logits")
}

async fn batched(engine: &Engine, prompts: &[Vec<u32>], tokens: usize) -> (usize, f64) {
    let started = Instant::now();
    let runs = prompts.iter().map(|prompt| {
        engine.generate(
            prompt.clone(),
            GenerationParams {
                max_tokens: tokens,
                ..GenerationParams::default()
            },
        )
    });
    let results = futures::future::join_all(runs).await;
    let elapsed = started.elapsed().as_secs_f64();
    let generated = results
        .into_iter()
        .map(|r| r.expect("generation").completion_ids.len())
        .sum();
    (generated, elapsed)
}
