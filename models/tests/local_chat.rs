//! `LocalChat` and its engine on the real SmolLM2 model: answers, sampling, stop sequences,
//! log-probabilities, scoring, batching and prefix reuse.

use std::sync::OnceLock;

use kiln_models::local::engine::{EngineConfig, FinishReason, GenerationParams};
use kiln_models::local::sampling::SamplingConfig;
use kiln_models::local::{LocalChat, LocalChatOptions};
use kiln_models::{ChatModel, ChatRequest, ModelErrorKind};
use kiln_protocol::{Message, SamplingParams, ToolSchema};
use serde_json::json;

/// One model shared by the tests of this file (they also exercise its batching by running at the
/// same time).
fn shared() -> &'static LocalChat {
    static CHAT: OnceLock<LocalChat> = OnceLock::new();
    CHAT.get_or_init(|| load(EngineConfig::default()))
}

fn load(engine: EngineConfig) -> LocalChat {
    LocalChat::load_spec(
        "smollm2",
        &LocalChatOptions {
            engine,
            ..LocalChatOptions::default()
        },
    )
    .expect("the model is installed by `ops/setup model`")
}

fn request(user: &str, sampling: SamplingParams) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(user)],
        sampling,
        ..ChatRequest::default()
    }
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..SamplingParams::default()
    }
}

fn prompt_ids(chat: &LocalChat, user: &str) -> Vec<u32> {
    let text = chat.render_prompt(&[Message::user(user)], &[]).unwrap();
    chat.encode(&text)
}

#[tokio::test]
async fn greedy_answer_to_the_capital_of_france_is_paris() {
    // Without a system message: with the template's default one ("You are a helpful AI assistant
    // named SmolLM…") this 135M model answers in rambling French, in llama.cpp too.
    let chat = shared();
    let prompt = chat.encode(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    );
    let generation = chat
        .engine()
        .generate(prompt, GenerationParams::default())
        .await
        .unwrap();
    assert!(generation.text.contains("Paris"), "{:?}", generation.text);
    assert_eq!(generation.finish, FinishReason::Stop);
}

#[tokio::test]
async fn chat_records_prompt_and_completion_tokens() {
    let chat = shared();
    let user = "Name a fruit that is yellow.";
    let response = chat.chat(&request(user, greedy(48))).await.unwrap();
    let tokens = response.tokens.expect("local models record tokens");
    assert_eq!(tokens.prompt_ids, prompt_ids(chat, user));
    assert_eq!(
        tokens.completion_ids.len(),
        tokens.completion_logprobs.len()
    );
    assert_eq!(
        response.usage.completion_tokens,
        tokens.completion_ids.len() as u64
    );
    assert_eq!(response.usage.prompt_tokens, tokens.prompt_ids.len() as u64);
    assert_eq!(response.usage.calls, 1);
    assert!(
        tokens
            .completion_logprobs
            .iter()
            .all(|&lp| lp <= 0.0 && lp.is_finite())
    );
    let decoded = chat.tokenizer().decode_with(&tokens.completion_ids, false);
    assert!(decoded.starts_with(&response.message.content));
    if response.finish_reason.as_deref() == Some("stop") {
        // The end-of-turn token is recorded (the policy chose it) but not shown.
        let last = *tokens.completion_ids.last().unwrap();
        assert!(chat.tokenizer().is_end_of_generation(last));
        assert!(!response.message.content.contains("<|im_end|>"));
    } else {
        assert_eq!(response.finish_reason.as_deref(), Some("length"));
        assert_eq!(tokens.completion_ids.len(), 48);
    }
}

#[tokio::test]
async fn seeded_sampling_is_reproducible() {
    let chat = shared();
    let sampled = |seed| {
        request(
            "Invent a name for a cat.",
            SamplingParams {
                temperature: 1.0,
                top_p: 0.95,
                max_tokens: 24,
                seed: Some(seed),
            },
        )
    };
    let first = chat.chat(&sampled(7)).await.unwrap().tokens.unwrap();
    let again = chat.chat(&sampled(7)).await.unwrap().tokens.unwrap();
    assert_eq!(first.completion_ids, again.completion_ids);
    assert_eq!(first.completion_logprobs, again.completion_logprobs);
    let mut distinct = std::collections::HashSet::new();
    for seed in 1..=4 {
        distinct.insert(
            chat.chat(&sampled(seed))
                .await
                .unwrap()
                .tokens
                .unwrap()
                .completion_ids,
        );
    }
    assert!(distinct.len() > 1, "four seeds gave the same completion");
}

#[tokio::test]
async fn stop_sequences_and_max_tokens_end_the_generation() {
    let chat = shared();
    let prompt = "Describe the sea in three sentences.";
    let full = chat
        .chat(&request(prompt, greedy(60)))
        .await
        .unwrap()
        .message
        .content;
    // A stop sequence from the middle of the greedy text, spanning several characters.
    let middle = full.char_indices().nth(full.chars().count() / 2).unwrap().0;
    let stop: String = full[middle..].chars().take(6).collect();
    let cut = full.find(&stop).unwrap();
    let mut stopped = request(prompt, greedy(60));
    stopped.stop = vec![stop.clone()];
    let response = chat.chat(&stopped).await.unwrap();
    assert_eq!(response.message.content, full[..cut], "stop {stop:?}");
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));

    let short = chat.chat(&request(prompt, greedy(5))).await.unwrap();
    assert_eq!(short.finish_reason.as_deref(), Some("length"));
    assert_eq!(short.tokens.unwrap().completion_ids.len(), 5);
    assert!(full.starts_with(&short.message.content));
}

#[tokio::test]
async fn logprobs_match_a_rescore_of_the_same_tokens_at_the_sampling_temperature() {
    let chat = shared();
    let prompt = prompt_ids(chat, "Write a short poem about rain.");
    let params = GenerationParams {
        max_tokens: 24,
        sampling: SamplingConfig {
            temperature: 0.8,
            top_p: 0.9,
            seed: Some(3),
        },
        stop: Vec::new(),
    };
    let generation = chat
        .engine()
        .generate(prompt.clone(), params)
        .await
        .unwrap();
    assert!(generation.completion_logprobs.iter().all(|&lp| lp <= 0.0));
    assert_eq!(generation.logprob_temperature, 0.8);
    let ids = vec![generation.completion_ids.clone()];
    let tempered = chat
        .engine()
        .score_at(prompt.clone(), ids.clone(), 0.8)
        .await
        .unwrap();
    assert_eq!(tempered[0].len(), generation.completion_ids.len());
    for (generated, scored) in generation.completion_logprobs.iter().zip(&tempered[0]) {
        assert!((generated - scored).abs() < 1e-3, "{generated} vs {scored}");
    }
    // At temperature 1 the same tokens score differently: the recorded values are the tempered
    // policy's, which the trainer reproduces by dividing its logits by 0.8.
    let untempered = chat.engine().score(prompt, ids).await.unwrap();
    let differing = generation
        .completion_logprobs
        .iter()
        .zip(&untempered[0])
        .filter(|(a, b)| (*a - *b).abs() > 1e-3)
        .count();
    assert!(differing > 0, "tempering changed no log-probability");
}

#[tokio::test]
async fn score_prefers_the_right_answer() {
    let chat = shared();
    let messages = [Message::user(
        "What is the capital of France? Answer with one word.",
    )];
    let candidates = [
        "Paris".to_string(),
        "Banana".to_string(),
        "Tuesday".to_string(),
    ];
    let scores = chat.score(&messages, &candidates).await.unwrap();
    assert_eq!(scores.len(), 3);
    assert!(scores[0].logprob > scores[1].logprob, "{scores:?}");
    assert!(scores[0].logprob > scores[2].logprob, "{scores:?}");
    // The answer's tokens plus the end-of-turn token.
    assert!(
        scores.iter().all(|s| s.tokens >= 2 && s.logprob < 0.0),
        "{scores:?}"
    );
}

#[tokio::test]
async fn batched_candidate_scores_equal_one_by_one_scores() {
    let chat = load(EngineConfig::default());
    let messages = [
        Message::system("You are an agent in a house. Write one line: Action: <action>"),
        Message::user("Your task is to: cool an apple. You see a fridge 1 and a cabinet 2."),
    ];
    let candidates: Vec<String> = [
        "Action: go to fridge 1",
        "Action: go to cabinet 2",
        "Action: look",
        "Action: inventory",
        "Action: take apple 1 from countertop 1",
    ]
    .iter()
    .map(|text| text.to_string())
    .collect();
    let together = chat.score(&messages, &candidates).await.unwrap();
    let stats = chat.engine().stats();
    assert!(
        stats
            .batched_scores
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    for (candidate, batched) in candidates.iter().zip(&together) {
        let alone = chat
            .score(&messages, std::slice::from_ref(candidate))
            .await
            .unwrap();
        assert_eq!(alone[0].tokens, batched.tokens, "{candidate}");
        // Same arithmetic per row; only the attention's summation order over rows differs.
        assert!(
            (alone[0].logprob - batched.logprob).abs() < 1e-3,
            "{candidate}: {} alone vs {} batched",
            alone[0].logprob,
            batched.logprob
        );
    }
}

#[tokio::test]
async fn batched_generation_gives_the_same_greedy_text_as_one_at_a_time() {
    let chat = shared();
    let prompts = [
        "What is the largest planet?",
        "Name three colors.",
        "Say hello in French.",
        "Write a sentence about a dog.",
    ];
    let mut one_at_a_time = Vec::new();
    for prompt in prompts {
        one_at_a_time.push(chat.chat(&request(prompt, greedy(32))).await.unwrap());
    }
    let requests: Vec<_> = prompts.iter().map(|p| request(p, greedy(32))).collect();
    let together = futures::future::join_all(requests.iter().map(|r| chat.chat(r))).await;
    for ((prompt, alone), batched) in prompts.iter().zip(&one_at_a_time).zip(together) {
        let batched = batched.unwrap();
        assert_eq!(batched.message.content, alone.message.content, "{prompt}");
        // The same tokens and log-probabilities; only how much of the prompt came from the prefix
        // cache may differ (the second time a prompt is seen, it is reused).
        let (batched, alone) = (batched.tokens.unwrap(), alone.tokens.clone().unwrap());
        assert_eq!(batched.prompt_ids, alone.prompt_ids, "{prompt}");
        assert_eq!(batched.completion_ids, alone.completion_ids, "{prompt}");
        assert_eq!(
            batched.completion_logprobs, alone.completion_logprobs,
            "{prompt}"
        );
    }
    let stats = chat.engine().stats();
    assert!(
        stats
            .max_batch_seen
            .load(std::sync::atomic::Ordering::Relaxed)
            > 1
    );
}

#[tokio::test]
async fn the_next_step_of_a_conversation_reuses_its_prefix() {
    let chat = load(EngineConfig::default());
    let fresh = load(EngineConfig {
        prefix_cache_bytes: 0,
        ..EngineConfig::default()
    });
    let mut messages = vec![Message::user("What is the capital of France?")];
    let first = chat
        .chat(&ChatRequest {
            messages: messages.clone(),
            sampling: greedy(32),
            ..ChatRequest::default()
        })
        .await
        .unwrap();
    let first_prompt = first.tokens.unwrap().prompt_ids;
    messages.push(first.message);
    messages.push(Message::user("And the capital of Germany?"));
    let text = chat.render_prompt(&messages, &[]).unwrap();
    let prompt = chat.encode(&text);
    let params = GenerationParams {
        max_tokens: 24,
        ..GenerationParams::default()
    };
    let reused = chat
        .engine()
        .generate(prompt.clone(), params.clone())
        .await
        .unwrap();
    assert!(
        reused.reused_prompt_tokens >= first_prompt.len(),
        "reused {} of a {}-token first prompt",
        reused.reused_prompt_tokens,
        first_prompt.len()
    );
    let recomputed = fresh.engine().generate(prompt, params).await.unwrap();
    assert_eq!(recomputed.reused_prompt_tokens, 0);
    assert_eq!(reused.completion_ids, recomputed.completion_ids);
    assert!(reused.text.contains("Berlin"), "{:?}", reused.text);
}

/// A ReAct-style episode of `steps` calls: a system prompt and a task, then each reply followed
/// by a new observation. Returns every response.
async fn episode(chat: &LocalChat, task: &str, steps: usize) -> Vec<kiln_models::ChatResponse> {
    let mut messages = vec![
        Message::system("You are an agent in a house. Be brief. Write one line: Action: <action>"),
        Message::user(task),
    ];
    let mut responses = Vec::new();
    for step in 0..steps {
        let response = chat
            .chat(&ChatRequest {
                messages: messages.clone(),
                sampling: greedy(12),
                stop: vec!["\n".to_string()],
                ..ChatRequest::default()
            })
            .await
            .unwrap();
        messages.push(response.message.clone());
        messages.push(Message::user(format!(
            "Observation: You arrive at cabinet {step}. On it you see a mug {step}."
        )));
        responses.push(response);
    }
    responses
}

#[tokio::test]
async fn each_step_of_an_episode_computes_only_its_new_prompt_tokens() {
    let chat = load(EngineConfig::default());
    let fresh = load(EngineConfig {
        prefix_cache_bytes: 0,
        ..EngineConfig::default()
    });
    let task = "Your task is to: put a mug in the cabinet.";
    let cached = episode(&chat, task, 5).await;
    let recomputed = episode(&fresh, task, 5).await;
    let records: Vec<_> = cached.iter().map(|r| r.tokens.clone().unwrap()).collect();
    assert_eq!(records[0].reused_prompt_tokens, 0);
    for pair in records.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        let new_tokens = (next.prompt_ids.len() - previous.prompt_ids.len()) as u64;
        assert!(
            next.computed_prompt_tokens() <= new_tokens,
            "computed {} of a {}-token prompt; {} tokens are new",
            next.computed_prompt_tokens(),
            next.prompt_ids.len(),
            new_tokens
        );
        assert!(next.prompt_ids.starts_with(&previous.prompt_ids));
    }
    // Reuse changes nothing in the greedy outputs: the same prompts, the same tokens.
    for (with_cache, without) in cached.iter().zip(&recomputed) {
        let (a, b) = (
            with_cache.tokens.as_ref().unwrap(),
            without.tokens.as_ref().unwrap(),
        );
        assert_eq!(a.prompt_ids, b.prompt_ids);
        assert_eq!(a.completion_ids, b.completion_ids);
        assert_eq!(b.reused_prompt_tokens, 0);
    }
    // Another episode with the same system prompt starts from the shared part of the cache.
    let other = episode(&chat, "Your task is to: find a key.", 1).await;
    let first = other[0].tokens.as_ref().unwrap();
    let system_tokens = chat
        .encode(
            &chat
                .render_prompt(
                    &[Message::system(
                        "You are an agent in a house. Be brief. Write one line: Action: <action>",
                    )],
                    &[],
                )
                .unwrap(),
        )
        .len() as u64;
    assert!(
        first.reused_prompt_tokens + 8 >= system_tokens,
        "reused {} tokens; the system prompt has about {system_tokens}",
        first.reused_prompt_tokens
    );
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_refused_with_both_lengths() {
    let chat = shared();
    let context = chat.engine().context_length();
    let long = "word ".repeat(context + 100);
    let prompt_len = prompt_ids(chat, &long).len();
    let error = chat.chat(&request(&long, greedy(4))).await.unwrap_err();
    assert_eq!(error.kind(), ModelErrorKind::ContextOverflow);
    let message = error.to_string();
    assert!(message.contains(&prompt_len.to_string()), "{message}");
    assert!(message.contains(&context.to_string()), "{message}");
}

#[tokio::test]
async fn offered_tools_are_described_in_the_prompt() {
    let chat = shared();
    let mut tool_request = request("Look up order #W1.", greedy(40));
    tool_request.tools = vec![ToolSchema {
        name: "get_order".to_string(),
        description: "Returns an order by id.".to_string(),
        parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
    }];
    let response = chat.chat(&tool_request).await.unwrap();
    let prompt = chat
        .tokenizer()
        .decode(&response.tokens.unwrap().prompt_ids);
    assert!(prompt.contains("\"name\":\"get_order\""), "{prompt}");
    assert!(
        prompt.contains("<tool_call>{\"name\": \"TOOL_NAME\""),
        "{prompt}"
    );
    // The template's own default system prompt is replaced by the tool description.
    assert!(
        prompt.starts_with("<|im_start|>system\n# Tools"),
        "{prompt}"
    );
}
