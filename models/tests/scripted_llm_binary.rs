//! The `kiln-scripted-llm` binary serves a script file in its own process, as the `kiln` binary's
//! integration tests use it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kiln_models::testing::{Matcher, RecordedRequest, Rule, Script, ScriptedResponse};
use kiln_models::{ChatModel, ChatRequest, OpenAiChat, OpenAiConfig};
use kiln_protocol::Message;
use serde_json::json;

/// Kills the server process when the test ends, even on failure.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_a_script_file_and_exposes_recorded_requests() {
    let script = Script::new(vec![Rule::when(
        Matcher::LastMessageContains {
            text: "weather".into(),
        },
        ScriptedResponse::tool_call("get_weather", json!({"city": "Lyon"})),
    )])
    .with_default(ScriptedResponse::text("I can only talk about the weather."));
    let directory = tempfile::tempdir().unwrap();
    let script_path = directory.path().join("script.json");
    std::fs::write(&script_path, serde_json::to_string_pretty(&script).unwrap()).unwrap();

    let child = Command::new(env!("CARGO_BIN_EXE_kiln-scripted-llm"))
        .arg("--script")
        .arg(&script_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("kiln-scripted-llm starts");
    let mut process = ServerProcess(child);
    let mut first_line = String::new();
    BufReader::new(process.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let base_url = first_line.trim().to_string();
    assert!(
        base_url.starts_with("http://127.0.0.1:") && base_url.ends_with("/v1"),
        "{base_url}"
    );

    let mut config = OpenAiConfig::new("scripted", &base_url);
    config.api_key = None;
    let chat = OpenAiChat::new(config).unwrap();
    chat.preflight().await.unwrap();
    let weather = ChatRequest {
        messages: vec![Message::user("what's the weather?")],
        ..ChatRequest::default()
    };
    let reply = chat.chat(&weather).await.unwrap();
    assert_eq!(reply.message.tool_calls[0].name, "get_weather");
    assert_eq!(
        reply.message.tool_calls[0].arguments,
        json!({"city": "Lyon"})
    );
    let other = ChatRequest {
        messages: vec![Message::user("tell me a joke")],
        ..ChatRequest::default()
    };
    assert_eq!(
        chat.chat(&other).await.unwrap().message.content,
        "I can only talk about the weather."
    );

    let recorded: Vec<RecordedRequest> = reqwest::get(format!("{base_url}/_scripted/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        recorded[0].body["messages"][0]["content"],
        "what's the weather?"
    );
    assert_eq!(recorded[1].body["messages"][0]["content"], "tell me a joke");
}

#[test]
fn binary_rejects_a_missing_script_file() {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln-scripted-llm"))
        .args(["--script", "/nonexistent/kiln/script.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/kiln/script.json"), "{stderr}");
}
