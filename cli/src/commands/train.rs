//! `kiln train`: cross-harness GRPO on recorded runs, offline.

use std::process::ExitCode;

use anyhow::Context;
use kiln_models::local::device::{DevicePreference, select_device};
use kiln_trainer::train::TrainErrorKind;
use kiln_trainer::{Aggregation, GrpoConfig, LoraConfig, StepMetrics, TrainOptions};

use crate::args::TrainArgs;
use crate::input_error;

pub async fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let options = options(&args)?;
    let report = tokio::task::spawn_blocking(move || {
        println!(
            "{:>5} {:>9} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8}",
            "step",
            "loss",
            "reward",
            "r_std",
            "0std",
            "clip",
            "kl",
            "gnorm",
            "ratio",
            "r_max",
            "entropy",
            "tok/s"
        );
        kiln_trainer::train_offline(&options, print_step)
    })
    .await
    .context("the training thread panicked")?;
    let report = match report {
        Ok(report) => report,
        Err(error) if error.kind() == TrainErrorKind::Input => {
            return Err(input_error(error.to_string()));
        }
        Err(error) => return Err(error.into()),
    };
    let composition = &report.composition;
    println!(
        "buffer: {} episodes of {} tasks, {} model turns, {} trained tokens; {} episodes skipped, \
         {} over-long turns left out; {} trained parameters",
        composition.episodes,
        composition.tasks,
        composition.segments,
        composition.trained_tokens,
        report.skipped_episodes,
        report.skipped_long_segments,
        report.parameters
    );
    for (harness, count) in &composition.by_harness {
        println!("  harness {harness}: {count} episodes");
    }
    for (checkpoint, count) in &composition.by_checkpoint {
        println!("  checkpoint {checkpoint}: {count} episodes");
    }
    for manifest in &report.checkpoints {
        println!(
            "checkpoint {}",
            args.out.join(&manifest.id).join("manifest.json").display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_step(m: &StepMetrics) {
    println!(
        "{:>5} {:>9.5} {:>7.3} {:>7.3} {:>6.2} {:>6.3} {:>8.5} {:>8.4} {:>7.4} {:>7.3} {:>8.3} {:>8.1}{}",
        m.step,
        m.loss,
        m.reward_mean,
        m.reward_std,
        m.frac_zero_std,
        m.clip_fraction,
        m.approx_kl,
        m.grad_norm,
        m.ratio_mean,
        m.ratio_max,
        m.entropy,
        m.tokens_per_s,
        if m.skipped {
            "  (skipped: non-finite)"
        } else {
            ""
        }
    );
}

fn aggregation(text: &str) -> anyhow::Result<Aggregation> {
    match text {
        "token-mean" => Ok(Aggregation::TokenMean),
        "sequence-mean" => Ok(Aggregation::SequenceMean),
        other => match other.strip_prefix("constant:").map(str::parse::<f64>) {
            Some(Ok(tokens)) => Ok(Aggregation::Constant(tokens)),
            _ => Err(input_error(format!(
                "--aggregation `{other}`: expected token-mean, sequence-mean or constant:TOKENS"
            ))),
        },
    }
}

fn options(args: &TrainArgs) -> anyhow::Result<TrainOptions> {
    let lora = match args.lora_rank {
        0 => None,
        rank => Some(LoraConfig {
            rank,
            alpha: args.lora_alpha.unwrap_or(2.0 * rank as f64),
            targets: kiln_trainer::lora::parse_targets(&args.lora_targets)
                .map_err(|e| input_error(format!("--lora-targets: {e}")))?,
            seed: 0,
        }),
    };
    let grpo = GrpoConfig {
        lr: args.lr,
        weight_decay: args.weight_decay,
        clip_low: args.clip_low,
        clip_high: args.clip_high,
        aggregation: aggregation(&args.aggregation)?,
        kl_beta: args.kl_beta,
        tis_cap: args.tis_cap,
        temperature: args.temperature,
        max_grad_norm: args.max_grad_norm,
        micro_batch: args.micro_batch,
        ..GrpoConfig::default()
    };
    let device = select_device(DevicePreference::Auto).context("selecting the device")?;
    Ok(TrainOptions {
        model: args.model.clone(),
        runs: args.runs.clone(),
        out: args.out.clone(),
        steps: args.steps,
        lora,
        grpo,
        buffer_capacity: args.buffer,
        staleness: args.staleness,
        max_segment_tokens: args.max_segment_tokens,
        checkpoint_every: args.checkpoint_every,
        init: args.init.clone(),
        device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregation_names_parse() {
        assert_eq!(aggregation("token-mean").unwrap(), Aggregation::TokenMean);
        assert_eq!(
            aggregation("constant:512").unwrap(),
            Aggregation::Constant(512.0)
        );
        let error = aggregation("mean").unwrap_err();
        assert!(error.to_string().contains("--aggregation"), "{error}");
    }
}
