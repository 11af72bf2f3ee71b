//! The trainer's model on the real SmolLM2 file that `ops/setup model` installs under
//! `$KILN_HOME/models/` (the test fails, saying so, when it is missing): fresh LoRA equals the
//! base, and the trainer's log-probabilities against kiln-models' f32 reference path and against
//! the inference engine that produces the workers' behaviour log-probabilities.

use std::sync::Arc;

use candle_core::{DType, Device};
use kiln_models::local::llama::{ForwardMode, LlamaModel};
use kiln_models::local::{Engine, EngineConfig, LocalModelFiles, kiln_home, smollm2_path};
use kiln_trainer::llama::{BaseModel, Llama};
use kiln_trainer::lora::LoraConfig;

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn trainer_logprobs_match_the_engine(device: &Device) {
    let path = smollm2_path(&kiln_home());
    assert!(
        path.is_file(),
        "{} is missing: run `ops/setup model` (or set KILN_HOME to the cache that has it)",
        path.display()
    );
    let files = LocalModelFiles::load(&path).unwrap();
    let prompt_text = "<|im_start|>user\nName a large animal that lives in the ocean.<|im_end|>\n<|im_start|>assistant\n";
    let prompt = files.tokenizer.encode(prompt_text, true, true);
    let completion = files.tokenizer.encode(
        "The blue whale is the largest animal on Earth.<|im_end|>",
        false,
        true,
    );
    assert!(completion.len() > 8);

    let base = BaseModel::from_gguf(&path, DType::F32, device).unwrap();
    assert_eq!(base.hash.len(), 64);
    assert!(
        base.output.is_none(),
        "SmolLM2's head is tied to its embeddings"
    );
    let trainer = Llama::with_new_lora(base, LoraConfig::default()).unwrap();
    let (picked, _) = trainer
        .token_log_probs(&prompt, &completion, 1.0, true)
        .unwrap();
    let ours = picked.to_vec1::<f32>().unwrap();
    // Fresh adapters (B = 0) leave the base's log-probabilities bit for bit.
    let base_only = Llama::new(trainer.base.clone(), None).unwrap();
    let (plain, _) = base_only
        .token_log_probs(&prompt, &completion, 1.0, true)
        .unwrap();
    assert_eq!(plain.to_vec1::<f32>().unwrap(), ours);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let score = |mode: ForwardMode| {
        let model = LlamaModel::load(&files.gguf, device, mode).unwrap();
        let tokenizer = Arc::new(LocalModelFiles::load(&path).unwrap().tokenizer);
        let engine = Engine::start(model, tokenizer, EngineConfig::default());
        runtime
            .block_on(engine.score(prompt.clone(), vec![completion.clone()]))
            .unwrap()
            .remove(0)
    };
    // kiln-models' differentiable path: the same dequantized f32 weights, other code.
    let reference = score(ForwardMode::Differentiable);
    let reference_gap = max_abs(&ours, &reference);
    // The engine the workers run: Q4_1/Q8_0 kernels that also quantize activations to 8 bits.
    let engine = score(ForwardMode::Fast);
    let engine_gap = max_abs(&ours, &engine);
    let mean_gap = ours
        .iter()
        .zip(&engine)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / ours.len() as f32;
    println!(
        "{} tokens: max |Δlogprob| vs f32 reference {reference_gap:.2e}; vs engine (fast path) \
         max {engine_gap:.3}, mean {mean_gap:.3}",
        ours.len()
    );
    assert!(
        reference_gap < 2e-3,
        "vs the f32 reference path: {reference_gap}"
    );
    // Measured 2026-12-02 on the CPU: see the report; the bound leaves room for other devices.
    assert!(engine_gap < 0.5, "vs the engine: {engine_gap}");
    assert!(mean_gap < 0.1, "vs the engine, mean: {mean_gap}");
}
kiln_models::test_device!(
    trainer_logprobs_match_the_engine,
    trainer_logprobs_match_the_engine_cpu,
    trainer_logprobs_match_the_engine_cuda
);
