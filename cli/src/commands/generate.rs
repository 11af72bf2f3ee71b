//! `kiln generate`: one completion from any model backend, for checking a model spec by hand (a
//! user message in, the assistant's reply on stdout, token counts and speed on stderr).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use kiln_models::{ChatRequest, factory_for};
use kiln_protocol::{Message, ModelSpec, SamplingParams};

use crate::args::GenerateArgs;
use crate::input_error;

pub async fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let spec: ModelSpec = args
        .model
        .parse()
        .map_err(|error: kiln_protocol::ModelSpecError| input_error(error.to_string()))?;
    let factory = factory_for(&spec).with_context(|| format!("model `{spec}`"))?;
    factory
        .preflight()
        .await
        .with_context(|| format!("model `{spec}` is not usable"))?;
    let model = factory
        .for_episode(None)
        .with_context(|| format!("model `{spec}` cannot generate free text"))?;
    let request = chat_request(&args);
    let started = Instant::now();
    let response = model
        .chat(&request)
        .await
        .with_context(|| format!("model `{spec}`"))?;
    let elapsed = started.elapsed().as_secs_f64();
    println!("{}", response.message.content);
    for call in &response.message.tool_calls {
        println!("tool call: {}({})", call.name, call.arguments);
    }
    eprintln!(
        "{} prompt + {} completion tokens in {elapsed:.2}s ({:.1} tokens/s), finish: {}",
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        response.usage.completion_tokens as f64 / elapsed.max(1e-9),
        response.finish_reason.as_deref().unwrap_or("unknown"),
    );
    Ok(ExitCode::SUCCESS)
}

/// The request `args` describe: an optional system message, then the prompt as a user message.
fn chat_request(args: &GenerateArgs) -> ChatRequest {
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::system(system));
    }
    messages.push(Message::user(&args.prompt));
    ChatRequest {
        messages,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            max_tokens: args.max_tokens,
            seed: args.seed,
        },
        ..ChatRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_carries_the_prompt_and_sampling() {
        let args = GenerateArgs {
            model: "local:smollm2".to_string(),
            max_tokens: 12,
            temperature: 0.5,
            top_p: 0.9,
            seed: Some(4),
            system: Some("Be brief.".to_string()),
            prompt: "Hi".to_string(),
        };
        let request = chat_request(&args);
        assert_eq!(
            request.messages,
            [Message::system("Be brief."), Message::user("Hi")]
        );
        assert_eq!(request.sampling.max_tokens, 12);
        assert_eq!(request.sampling.seed, Some(4));
        assert_eq!(request.sampling.temperature, 0.5);
        assert!(request.tools.is_empty());
    }
}
