//! `OpenAiChat` against a real HTTP server (`ScriptedServer`): request mapping, parsing, retries,
//! timeouts and error reporting.

use std::time::{Duration, Instant};

use kiln_models::testing::{Rule, Script, ScriptedResponse, ScriptedServer};
use kiln_models::{
    ChatModel, ChatRequest, ModelErrorKind, OpenAiChat, OpenAiConfig, RetryPolicy, factory_for,
};
use kiln_protocol::{Message, ModelSpec, Role, SamplingParams, ToolCall, ToolSchema, Usage};
use serde_json::{Value, json};

/// A config without a key and with millisecond backoffs, so retry tests stay fast.
fn config(base_url: &str) -> OpenAiConfig {
    let mut config = OpenAiConfig::new("test-model", base_url);
    config.api_key = None;
    config.retry = RetryPolicy {
        max_retries: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(5),
    };
    config
}

async fn serve(script: Script) -> (ScriptedServer, OpenAiChat) {
    let server = ScriptedServer::start(script)
        .await
        .expect("scripted server starts");
    let chat = OpenAiChat::new(config(&server.base_url())).expect("client builds");
    (server, chat)
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::system("You are terse."), Message::user(text)],
        ..ChatRequest::default()
    }
}

fn lookup_tool() -> ToolSchema {
    ToolSchema {
        name: "get_order_details".into(),
        description: "Get the status and details of an order.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"]
        }),
    }
}

#[tokio::test]
async fn normal_reply_is_parsed_and_request_carries_sampling() {
    let script = Script::new(vec![Rule::always(ScriptedResponse::Reply {
        content: Some("Paris.".into()),
        tool_calls: Vec::new(),
        usage: Some(Usage {
            prompt_tokens: 21,
            completion_tokens: 2,
            calls: 0,
        }),
    })]);
    let (server, chat) = serve(script).await;
    let mut request = ask("Capital of France?");
    request.sampling = SamplingParams {
        temperature: 0.7,
        top_p: 0.95,
        max_tokens: 32,
        seed: Some(42),
    };
    request.stop = vec!["\n\n".into()];

    let response = chat.chat(&request).await.unwrap();

    assert_eq!(response.message.role, Role::Assistant);
    assert_eq!(response.message.content, "Paris.");
    assert!(response.message.tool_calls.is_empty());
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        response.usage,
        Usage {
            prompt_tokens: 21,
            completion_tokens: 2,
            calls: 1
        }
    );
    let bodies = server.requests();
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    assert_eq!(body["model"], "test-model");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Capital of France?"}
        ])
    );
    assert!(body.get("tools").is_none());
    assert_eq!(body["max_tokens"], 32);
    assert_eq!(body["seed"], 42);
    assert_eq!(body["stop"], json!(["\n\n"]));
    assert!((body["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert!((body["top_p"].as_f64().unwrap() - 0.95).abs() < 1e-6);
    assert_eq!(server.recorded()[0].authorization, None);
}

#[tokio::test]
async fn native_tool_calls_round_trip() {
    let script = Script::new(vec![Rule::always(ScriptedResponse::tool_call(
        "get_order_details",
        json!({"order_id": "#W2378156"}),
    ))]);
    let (server, chat) = serve(script).await;
    let earlier = ToolCall {
        id: "call_prev".into(),
        name: "find_user_id_by_email".into(),
        arguments: json!({"email": "yusuf.rossi@example.com"}),
    };
    let request = ChatRequest {
        messages: vec![
            Message::user("Where is my order #W2378156?"),
            Message::assistant_tool_calls("", vec![earlier.clone()]),
            Message::tool_result(&earlier, "yusuf_rossi_9620"),
        ],
        tools: vec![lookup_tool()],
        ..ChatRequest::default()
    };

    let response = chat.chat(&request).await.unwrap();

    let calls = &response.message.tool_calls;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "get_order_details");
    assert_eq!(calls[0].arguments, json!({"order_id": "#W2378156"}));
    assert!(!calls[0].id.is_empty());
    assert_eq!(response.message.content, "");
    assert_eq!(response.finish_reason.as_deref(), Some("tool_calls"));

    let body = &server.requests()[0];
    assert_eq!(
        body["tools"],
        json!([{
            "type": "function",
            "function": {
                "name": "get_order_details",
                "description": "Get the status and details of an order.",
                "parameters": lookup_tool().parameters,
            }
        }])
    );
    let assistant = &body["messages"][1];
    assert_eq!(assistant["role"], "assistant");
    assert!(
        assistant["content"].is_null(),
        "empty content with tool calls is null: {assistant}"
    );
    let sent_call = &assistant["tool_calls"][0];
    assert_eq!(sent_call["id"], "call_prev");
    assert_eq!(sent_call["type"], "function");
    assert_eq!(sent_call["function"]["name"], "find_user_id_by_email");
    let sent_arguments: Value =
        serde_json::from_str(sent_call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(sent_arguments, earlier.arguments);
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "content": "yusuf_rossi_9620", "tool_call_id": "call_prev"})
    );
}

#[tokio::test]
async fn malformed_tool_call_arguments_are_kept_as_a_string() {
    let raw = r##"{"order_id": "#W1", "reason": "#broken"##;
    let script = Script::new(vec![Rule::always(ScriptedResponse::MalformedToolCall {
        name: "cancel_pending_order".into(),
        raw_arguments: raw.into(),
    })]);
    let (_server, chat) = serve(script).await;

    let response = chat.chat(&ask("cancel it")).await.unwrap();

    let call = &response.message.tool_calls[0];
    assert_eq!(call.name, "cancel_pending_order");
    assert_eq!(call.arguments, Value::String(raw.into()));
}

#[tokio::test]
async fn server_errors_are_retried_until_success() {
    let script = Script::new(vec![Rule::times(
        2,
        ScriptedResponse::status(500, "engine restarting"),
    )])
    .with_default(ScriptedResponse::text("back online"));
    let (server, chat) = serve(script).await;

    let response = chat.chat(&ask("hello")).await.unwrap();

    assert_eq!(response.message.content, "back online");
    assert_eq!(server.request_count(), 3);
    let bodies = server.requests();
    assert!(
        bodies.iter().all(|body| body == &bodies[0]),
        "retries resend the same request"
    );
}

#[tokio::test]
async fn persistent_server_errors_fail_after_the_retry_budget() {
    let script = Script::new(vec![Rule::always(ScriptedResponse::status(
        503,
        "overloaded",
    ))]);
    let (server, chat) = serve(script).await;

    let error = chat.chat(&ask("hello")).await.unwrap_err();

    assert_eq!(error.kind(), ModelErrorKind::Http);
    assert_eq!(server.request_count(), 5, "one attempt plus four retries");
    let message = error.to_string();
    assert!(
        message.contains("503") && message.contains("overloaded") && message.contains("5 attempts"),
        "{message}"
    );
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let script = Script::new(vec![Rule::times(
        1,
        ScriptedResponse::Status {
            code: 429,
            body: "slow down".into(),
            retry_after: Some(1),
        },
    )])
    .with_default(ScriptedResponse::text("ok"));
    let (server, chat) = serve(script).await;

    let started = Instant::now();
    let response = chat.chat(&ask("hello")).await.unwrap();

    assert_eq!(response.message.content, "ok");
    assert_eq!(server.request_count(), 2);
    // The backoff alone would be at most 10 ms; only Retry-After explains a wait of a second.
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn persistent_rate_limits_are_reported_as_such() {
    let script = Script::new(vec![Rule::always(ScriptedResponse::status(
        429,
        "quota exceeded",
    ))]);
    let server = ScriptedServer::start(script).await.unwrap();
    let mut config = config(&server.base_url());
    config.retry.max_retries = 1;
    let chat = OpenAiChat::new(config).unwrap();

    let error = chat.chat(&ask("hello")).await.unwrap_err();

    assert_eq!(error.kind(), ModelErrorKind::RateLimited);
    assert_eq!(server.request_count(), 2);
    assert!(error.to_string().contains("quota exceeded"), "{error}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let script = Script::new(vec![Rule::always(ScriptedResponse::status(
        400,
        r#"{"error": {"message": "max_tokens is too large for this model"}}"#,
    ))]);
    let (server, chat) = serve(script).await;

    let error = chat.chat(&ask("hello")).await.unwrap_err();

    assert_eq!(error.kind(), ModelErrorKind::Http);
    assert_eq!(server.request_count(), 1);
    let message = error.to_string();
    assert!(message.contains(chat.completions_url()), "{message}");
    assert!(message.contains("400"), "{message}");
    assert!(message.contains("max_tokens is too large"), "{message}");
}

#[tokio::test]
async fn slow_answers_time_out() {
    let script = Script::new(vec![Rule::always(
        ScriptedResponse::text("too late").delayed(3_000),
    )]);
    let server = ScriptedServer::start(script).await.unwrap();
    let mut config = config(&server.base_url());
    config.request_timeout = Duration::from_millis(300);
    let chat = OpenAiChat::new(config).unwrap();

    let started = Instant::now();
    let error = chat.chat(&ask("hello")).await.unwrap_err();

    assert_eq!(error.kind(), ModelErrorKind::Timeout, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(server.request_count(), 1, "timeouts are not retried");
    assert!(
        error.to_string().contains(chat.completions_url()),
        "{error}"
    );
}

/// A port nothing listens on: bound, then released.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

#[tokio::test]
async fn unreachable_endpoint_is_a_connect_error_naming_the_url() {
    let base_url = closed_port_url();
    let mut config = config(&base_url);
    config.retry.max_retries = 1;
    let chat = OpenAiChat::new(config).unwrap();

    let error = chat.chat(&ask("hello")).await.unwrap_err();

    assert_eq!(error.kind(), ModelErrorKind::Connect, "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("{base_url}/chat/completions")),
        "{message}"
    );
    assert!(
        message.contains("2 attempts"),
        "connect errors are retried: {message}"
    );
}

#[tokio::test]
async fn non_json_body_is_an_invalid_response() {
    let script = Script::new(vec![Rule::always(ScriptedResponse::NotJson {
        body: "<html>gateway</html>".into(),
    })]);
    let (server, chat) = serve(script).await;

    let error = chat.chat(&ask("hello")).await.unwrap_err();

    assert_eq!(error.kind(), ModelErrorKind::InvalidResponse);
    assert_eq!(server.request_count(), 1);
    let message = error.to_string();
    assert!(
        message.contains(chat.completions_url()) && message.contains("not JSON"),
        "{message}"
    );
    assert!(message.contains("<html>gateway</html>"), "{message}");
}

#[tokio::test]
async fn api_key_is_sent_as_a_bearer_token() {
    let server = ScriptedServer::start(Script::default()).await.unwrap();
    let mut config = config(&server.base_url());
    config.api_key = Some("sk-kiln-test".into());
    let chat = OpenAiChat::new(config).unwrap();

    chat.chat(&ask("hello")).await.unwrap();

    assert_eq!(
        server.recorded()[0].authorization.as_deref(),
        Some("Bearer sk-kiln-test")
    );
}

#[tokio::test]
async fn preflight_accepts_a_listing_server_and_one_without_models_route() {
    let server = ScriptedServer::start(Script::default()).await.unwrap();
    OpenAiChat::new(config(&server.base_url()))
        .unwrap()
        .preflight()
        .await
        .unwrap();
    // `/proxy/models` is not a route of the scripted server: it answers 404, which still proves
    // the server is there.
    let without_models = server.base_url().replace("/v1", "/proxy");
    OpenAiChat::new(config(&without_models))
        .unwrap()
        .preflight()
        .await
        .unwrap();
    assert_eq!(server.request_count(), 0, "preflight sends no chat request");
}

#[tokio::test]
async fn preflight_of_an_unreachable_endpoint_names_the_url() {
    let base_url = closed_port_url();
    let spec: ModelSpec = format!("openai:qwen@{base_url}").parse().unwrap();
    let factory = factory_for(&spec).unwrap();

    let error = factory.preflight().await.unwrap_err();

    assert_eq!(error.kind(), ModelErrorKind::Connect);
    assert!(
        error.to_string().contains(&format!("{base_url}/models")),
        "{error}"
    );
}

#[tokio::test]
async fn factory_built_model_talks_to_the_server() {
    let server = ScriptedServer::start(Script::new(vec![Rule::always(ScriptedResponse::text(
        "hi there",
    ))]))
    .await
    .unwrap();
    let spec: ModelSpec = format!("openai:scripted@{}", server.base_url())
        .parse()
        .unwrap();
    let factory = factory_for(&spec).unwrap();
    factory.preflight().await.unwrap();

    let model = factory.for_episode(None).unwrap();
    let response = model.chat(&ask("hello")).await.unwrap();

    assert_eq!(response.message.content, "hi there");
    assert_eq!(model.label(), spec.label());
    assert_eq!(server.requests()[0]["model"], "scripted");
}
