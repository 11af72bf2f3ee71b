//! The trainer on a tiny random Llama (2 blocks, grouped KV heads, tied embeddings): LoRA at
//! initialization, gradients against finite differences in f64, what the optimizer touches,
//! micro-batching, zero-variance groups and checkpoints. Each test runs on the CPU, and on CUDA
//! too when built with the `cuda` feature.

use candle_core::{DType, Device, Tensor, Var};
use kiln_trainer::checkpoint::{self, CheckpointInfo, CheckpointKind};
use kiln_trainer::grpo::{Aggregation, GrpoConfig, GrpoTrainer, Sample, Segment, group_advantages};
use kiln_trainer::llama::{Llama, random_base, tiny_config};
use kiln_trainer::lora::{LoraConfig, Target};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn lora_config() -> LoraConfig {
    LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: Target::ALL.to_vec(),
        seed: 3,
    }
}

fn tiny(dtype: DType, device: &Device) -> Llama {
    let base = random_base(tiny_config(), 11, 0.3, dtype, device).unwrap();
    Llama::with_new_lora(base, lora_config()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Random ids; the behaviour logprobs are the model's own plus noise of ±`noise` (so ratios
/// start near 1, inside the clip range).
fn segment(
    model: &Llama,
    rng: &mut StdRng,
    prompt: usize,
    completion: usize,
    noise: f64,
) -> Segment {
    let vocab = model.config().vocab_size as u32;
    let prompt_ids: Vec<u32> = (0..prompt).map(|_| rng.gen_range(0..vocab)).collect();
    let completion_ids: Vec<u32> = (0..completion).map(|_| rng.gen_range(0..vocab)).collect();
    let (picked, _) = model
        .token_log_probs(&prompt_ids, &completion_ids, 1.0, true)
        .unwrap();
    let behaviour_logprobs = picked
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .into_iter()
        .map(|lp| (lp + rng.gen_range(-noise..noise)).min(0.0) as f32)
        .collect();
    let mut loss_mask = vec![1.0; completion];
    // A harness token inside the completion is not trained.
    if completion > 2 {
        loss_mask[1] = 0.0;
    }
    Segment {
        prompt_ids,
        completion_ids,
        behaviour_logprobs,
        loss_mask,
    }
}

/// Two tasks × three attempts with different rewards, one or two segments each.
fn batch(model: &Llama, seed: u64) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rewards = [("a", [1.0, 0.0, 0.5]), ("b", [0.0, 1.0, 1.0])];
    let mut samples = Vec::new();
    for (task, values) in rewards {
        for (attempt, reward) in values.into_iter().enumerate() {
            let segments = (0..1 + attempt % 2)
                .map(|_| segment(model, &mut rng, 5 + attempt, 4, 0.05))
                .collect();
            samples.push(Sample {
                task_id: task.to_string(),
                harness_hash: format!("h{attempt}"),
                checkpoint: "base".to_string(),
                reward,
                segments,
            });
        }
    }
    samples
}

fn randomize_b(model: &Llama, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for (name, var) in model.lora.as_ref().unwrap().named_vars() {
        if name.ends_with("lora_b") {
            let values: Vec<f64> = (0..var.elem_count())
                .map(|_| rng.gen_range(-0.2..0.2))
                .collect();
            let tensor = Tensor::from_vec(values, var.shape(), var.device())
                .unwrap()
                .to_dtype(var.dtype())
                .unwrap();
            var.set(&tensor).unwrap();
        }
    }
}

fn lora_zero_init_logits_equal_the_base(device: &Device) {
    let with_lora = tiny(DType::F32, device);
    let base_only = Llama::new(with_lora.base.clone(), None).unwrap();
    let ids = [1, 5, 9, 3, 30, 2, 7];
    let a = with_lora.logits(&ids).unwrap();
    let b = base_only.logits(&ids).unwrap();
    assert_eq!(a.dims(), [7, 32]);
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    // And adapters do change the output once B is not zero.
    randomize_b(&with_lora, 1);
    assert!(max_abs_diff(&with_lora.logits(&ids).unwrap(), &b) > 1e-3);
}
kiln_models::test_device!(
    lora_zero_init_logits_equal_the_base,
    lora_zero_init_logits_equal_the_base_cpu,
    lora_zero_init_logits_equal_the_base_cuda
);

fn temperature_divides_the_logits(device: &Device) {
    let model = tiny(DType::F32, device);
    let (prompt, completion) = ([3u32, 4, 5], [6u32, 7]);
    let hot = model
        .completion_log_probs(&prompt, &completion, 0.5, true)
        .unwrap();
    let hidden = model.hidden_states(&[3, 4, 5, 6], true).unwrap();
    let logits = model.logits_of(&hidden.narrow(0, 2, 2).unwrap()).unwrap();
    let expected = candle_nn::ops::log_softmax(&(logits * 2.0).unwrap(), 1).unwrap();
    assert!(max_abs_diff(&hot, &expected) < 1e-5);
}
kiln_models::test_device!(
    temperature_divides_the_logits,
    temperature_divides_the_logits_cpu,
    temperature_divides_the_logits_cuda
);

/// Central differences of the GRPO loss (clipped ratio, temperature 0.7, GQA, tied embeddings)
/// against backprop, in f64: LoRA parameters with the k3 KL term, and (full fine-tune, where the
/// KL term is refused) every base weight too.
fn gradients_match_finite_differences_in_f64(device: &Device) {
    check_gradients(device, false);
    check_gradients(device, true);
}

fn check_gradients(device: &Device, full: bool) {
    let mut model = tiny(DType::F64, device);
    randomize_b(&model, 2);
    let base_vars = if full {
        model.base.make_trainable().unwrap()
    } else {
        Vec::new()
    };
    if full {
        let refused = GrpoTrainer::new(
            model.clone(),
            base_vars.iter().map(|(_, v)| v.clone()).collect(),
            GrpoConfig {
                kl_beta: 0.1,
                ..GrpoConfig::default()
            },
        );
        assert!(refused.is_err());
    }
    let config = GrpoConfig {
        kl_beta: if full { 0.0 } else { 0.1 },
        temperature: 0.7,
        micro_batch: 2,
        ..GrpoConfig::default()
    };
    let samples = batch(&model, 5);
    let mut vars: Vec<(String, Var)> = model.lora.as_ref().unwrap().named_vars();
    vars.extend(base_vars);
    let trainer = GrpoTrainer::new(
        model,
        vars.iter().map(|(_, v)| v.clone()).collect(),
        config.clone(),
    )
    .unwrap();
    let pairs: Vec<(&str, f64)> = samples
        .iter()
        .map(|s| (s.task_id.as_str(), s.reward))
        .collect();
    let advantages = group_advantages(&pairs, config.advantage_eps).unwrap();
    let scheduled = trainer.schedule(&samples, &advantages).unwrap();
    let loss = || trainer.gradients(&scheduled, 2).unwrap().loss;
    let analytic = trainer.gradients(&scheduled, 2).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let h = 1e-6;
    let mut checked = 0;
    for (index, (name, var)) in vars.iter().enumerate() {
        let grad = analytic.grads[index]
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let original = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for _ in 0..2 {
            let at = rng.gen_range(0..original.len());
            let mut shifted = original.clone();
            let mut eval = |value: f64| {
                shifted[at] = value;
                var.set(&Tensor::from_vec(shifted.clone(), var.shape(), device).unwrap())
                    .unwrap();
                loss()
            };
            let numeric = (eval(original[at] + h) - eval(original[at] - h)) / (2.0 * h);
            var.set(&Tensor::from_vec(original.clone(), var.shape(), device).unwrap())
                .unwrap();
            let error = (numeric - grad[at]).abs();
            assert!(
                error <= 1e-6 + 1e-4 * numeric.abs(),
                "{name}[{at}]: backprop {} vs finite difference {numeric}",
                grad[at]
            );
            checked += 1;
        }
    }
    assert!(checked >= 56, "checked {checked} coordinates");
}
kiln_models::test_device!(
    gradients_match_finite_differences_in_f64,
    gradients_match_finite_differences_in_f64_cpu,
    gradients_match_finite_differences_in_f64_cuda
);

fn every_adapter_parameter_trains_and_no_base_weight_changes(device: &Device) {
    let model = tiny(DType::F32, device);
    let samples = batch(&model, 6);
    let base_before: Vec<(String, Vec<f32>)> = model
        .base
        .named_tensors()
        .into_iter()
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    let config = GrpoConfig {
        lr: 1e-2,
        ..GrpoConfig::default()
    };
    let mut trainer = GrpoTrainer::lora(model, config).unwrap();
    let before: Vec<Vec<f32>> = trainer
        .vars()
        .iter()
        .map(|v| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect();
    let mut last_grads = Vec::new();
    for _ in 0..3 {
        let metrics = trainer.step(&samples).unwrap();
        assert!(!metrics.skipped && metrics.loss.is_finite() && metrics.grad_norm > 0.0);
        assert_eq!(metrics.trained_samples, 6);
        last_grads = {
            let pairs: Vec<(&str, f64)> = samples
                .iter()
                .map(|s| (s.task_id.as_str(), s.reward))
                .collect();
            let adv = group_advantages(&pairs, 1e-4).unwrap();
            let scheduled = trainer.schedule(&samples, &adv).unwrap();
            trainer.gradients(&scheduled, 4).unwrap().grads
        };
    }
    let named = trainer.model.lora.as_ref().unwrap().named_vars();
    assert_eq!(named.len(), trainer.vars().len());
    for (((name, var), old), grad) in named.iter().zip(&before).zip(&last_grads) {
        let now = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let moved = now.iter().zip(old).filter(|(a, b)| a != b).count();
        assert!(moved > 0, "{name} did not change");
        let grad = grad
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm: f32 = grad.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "{name}: zero gradient");
    }
    for ((name, before), (_, after)) in base_before.iter().zip(trainer.model.base.named_tensors()) {
        assert_eq!(
            before,
            &after.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "base weight {name} changed"
        );
    }
}
kiln_models::test_device!(
    every_adapter_parameter_trains_and_no_base_weight_changes,
    every_adapter_parameter_trains_and_no_base_weight_changes_cpu,
    every_adapter_parameter_trains_and_no_base_weight_changes_cuda
);

fn micro_batch_one_and_two_give_the_same_loss_and_gradients(device: &Device) {
    let model = tiny(DType::F32, device);
    randomize_b(&model, 4);
    for aggregation in [
        Aggregation::TokenMean,
        Aggregation::SequenceMean,
        Aggregation::Constant(8.0),
    ] {
        let config = GrpoConfig {
            aggregation,
            ..GrpoConfig::default()
        };
        let trainer = GrpoTrainer::lora(model.clone(), config).unwrap();
        let samples = batch(&trainer.model, 7);
        let pairs: Vec<(&str, f64)> = samples
            .iter()
            .map(|s| (s.task_id.as_str(), s.reward))
            .collect();
        let adv = group_advantages(&pairs, 1e-4).unwrap();
        let scheduled = trainer.schedule(&samples, &adv).unwrap();
        assert!(scheduled.len() >= 8);
        let one = trainer.gradients(&scheduled, 1).unwrap();
        let two = trainer.gradients(&scheduled, 2).unwrap();
        let all = trainer.gradients(&scheduled, scheduled.len()).unwrap();
        assert!(one.loss.abs() > 1e-4, "{aggregation:?}: a trivial loss");
        for other in [&two, &all] {
            assert!((one.loss - other.loss).abs() <= 1e-6, "{aggregation:?}");
            for (a, b) in one.grads.iter().zip(&other.grads) {
                let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
                assert!(max_abs_diff(a, b) <= 1e-5, "{aggregation:?}");
            }
        }
    }
}
kiln_models::test_device!(
    micro_batch_one_and_two_give_the_same_loss_and_gradients,
    micro_batch_one_and_two_give_the_same_loss_and_gradients_cpu,
    micro_batch_one_and_two_give_the_same_loss_and_gradients_cuda
);

fn zero_variance_groups_give_no_nan_and_no_update(device: &Device) {
    let model = tiny(DType::F32, device);
    let mut samples = batch(&model, 8);
    for sample in &mut samples {
        sample.reward = if sample.task_id == "a" { 1.0 } else { 0.0 };
    }
    let mut trainer = GrpoTrainer::lora(
        model,
        GrpoConfig {
            kl_beta: 0.1,
            ..GrpoConfig::default()
        },
    )
    .unwrap();
    let before: Vec<Vec<f32>> = trainer
        .vars()
        .iter()
        .map(|v| v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect();
    let metrics = trainer.step(&samples).unwrap();
    assert_eq!(metrics.frac_zero_std, 1.0);
    assert_eq!(metrics.trained_samples, 0);
    assert_eq!(
        (metrics.loss, metrics.tokens, metrics.grad_norm),
        (0.0, 0, 0.0)
    );
    for value in [
        metrics.clip_fraction,
        metrics.approx_kl,
        metrics.ratio_mean,
        metrics.entropy,
    ] {
        assert!(value.is_finite());
    }
    assert!(!metrics.skipped);
    for (var, old) in trainer.vars().iter().zip(&before) {
        assert_eq!(&var.flatten_all().unwrap().to_vec1::<f32>().unwrap(), old);
    }
    // One live group among dead ones: only it trains.
    samples[0].reward = 0.0;
    let metrics = trainer.step(&samples).unwrap();
    assert_eq!(metrics.frac_zero_std, 0.5);
    assert_eq!(metrics.trained_samples, 3);
    assert!(metrics.loss.is_finite() && metrics.grad_norm > 0.0);
}
kiln_models::test_device!(
    zero_variance_groups_give_no_nan_and_no_update,
    zero_variance_groups_give_no_nan_and_no_update_cpu,
    zero_variance_groups_give_no_nan_and_no_update_cuda
);

fn checkpoint_save_load_gives_identical_logits(device: &Device) {
    let model = tiny(DType::F32, device);
    let samples = batch(&model, 10);
    let mut trainer = GrpoTrainer::lora(
        model,
        GrpoConfig {
            lr: 1e-2,
            ..GrpoConfig::default()
        },
    )
    .unwrap();
    let metrics = trainer.step(&samples).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let info = |step| CheckpointInfo {
        base_model: "random".to_string(),
        lineage: vec!["parent".to_string()],
        step,
        grpo: trainer.config.clone(),
        metrics: vec![metrics.clone()],
        runs: vec!["runs/x".to_string()],
    };
    let manifest =
        checkpoint::save(dir.path(), &trainer.model, CheckpointKind::Lora, info(1)).unwrap();
    let path = dir.path().join(&manifest.id);
    assert!(path.join("adapter.safetensors").is_file());
    let read = checkpoint::read_manifest(&path).unwrap();
    assert_eq!(read, manifest);
    assert_eq!(read.lineage, ["parent"]);
    assert_eq!(read.base_model_sha256, "random-11");
    let fresh_base = random_base(tiny_config(), 11, 0.3, DType::F32, device).unwrap();
    let (loaded, _) = checkpoint::load(&path, fresh_base).unwrap();
    let ids = [4, 8, 15, 16, 23, 31];
    let expected = trainer.model.logits(&ids).unwrap();
    let untrained = Llama::new(trainer.model.base.clone(), None)
        .unwrap()
        .logits(&ids)
        .unwrap();
    assert!(
        max_abs_diff(&expected, &untrained) > 0.0,
        "the step changed nothing"
    );
    assert_eq!(max_abs_diff(&loaded.logits(&ids).unwrap(), &expected), 0.0);
    // Another base model is refused.
    let other = random_base(tiny_config(), 12, 0.3, DType::F32, device).unwrap();
    let error = checkpoint::load(&path, other).unwrap_err();
    assert!(error.to_string().contains("random-12"), "{error}");

    // A full fine-tune checkpoint round-trips too.
    let mut full = Llama::new(
        random_base(tiny_config(), 11, 0.3, DType::F32, device).unwrap(),
        None,
    )
    .unwrap();
    let vars = full.base.make_trainable().unwrap();
    let mut trainer = GrpoTrainer::new(
        full.clone(),
        vars.into_iter().map(|(_, v)| v).collect(),
        GrpoConfig::default(),
    )
    .unwrap();
    trainer.step(&samples).unwrap();
    full = trainer.model.clone();
    let manifest = checkpoint::save(dir.path(), &full, CheckpointKind::Full, info(2)).unwrap();
    let fresh_base = random_base(tiny_config(), 11, 0.3, DType::F32, device).unwrap();
    let (loaded, _) = checkpoint::load(&dir.path().join(&manifest.id), fresh_base).unwrap();
    assert_eq!(
        max_abs_diff(&loaded.logits(&ids).unwrap(), &full.logits(&ids).unwrap()),
        0.0
    );
    assert!(max_abs_diff(&full.logits(&ids).unwrap(), &untrained) > 0.0);
}
kiln_models::test_device!(
    checkpoint_save_load_gives_identical_logits,
    checkpoint_save_load_gives_identical_logits_cpu,
    checkpoint_save_load_gives_identical_logits_cuda
);
