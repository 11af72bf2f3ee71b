//! The AgentGym WebShop client against a real local HTTP server speaking AgentGym's WebShop API
//! (routes, `env_idx`, the stale reset reply, 503s), hosting Kiln's own WebShop environment.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_environments::agentgym::webshop::AgentGymWebShopFactory;
use kiln_environments::webshop::{Shop, WebShopEnvironment, WebShopOptions, oracle_actions};
use kiln_environments::{EnvContext, EnvErrorKind, EnvironmentFactory, catalog};
use kiln_protocol::{Action, ModelSpec, Observation, TaskSpec, Termination};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The server's state: AgentGym's id → env map, and how many 503s `/create` still owes.
struct Server {
    envs: Mutex<HashMap<i64, WebShopEnvironment>>,
    next_id: AtomicU32,
    busy_creates: AtomicU32,
    create_calls: AtomicU32,
}

/// `env_idx` from an `env_idx=N` query (-1 when missing: answered as an unknown env).
fn env_idx(query: Option<String>) -> i64 {
    query
        .as_deref()
        .and_then(|query| query.strip_prefix("env_idx="))
        .and_then(|id| id.parse().ok())
        .unwrap_or(-1)
}

#[derive(Deserialize)]
struct ResetBody {
    env_idx: i64,
    session_id: Option<usize>,
}

#[derive(Deserialize)]
struct StepBody {
    env_idx: i64,
    action: String,
}

fn error_body(message: String) -> Response {
    Json(json!({"error": message})).into_response()
}

async fn create(State(server): State<Arc<Server>>) -> Response {
    server.create_calls.fetch_add(1, Ordering::SeqCst);
    if server
        .busy_creates
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let id = i64::from(server.next_id.fetch_add(1, Ordering::SeqCst));
    let env = WebShopEnvironment::new(Shop::standard(), WebShopOptions { max_steps: 100 });
    server.envs.lock().await.insert(id, env);
    Json(json!(id)).into_response()
}

async fn reset(State(server): State<Arc<Server>>, Json(body): Json<ResetBody>) -> Response {
    let mut envs = server.envs.lock().await;
    let Some(env) = envs.get_mut(&body.env_idx) else {
        return error_body(format!("no env {}", body.env_idx));
    };
    // AgentGym answers the observation from before the reset: stale.
    let stale = env.observation().unwrap_or_default();
    match env.start(body.session_id.unwrap_or(0)) {
        Ok(_) => Json(json!([stale, null])).into_response(),
        Err(error) => error_body(error.to_string()),
    }
}

async fn step(State(server): State<Arc<Server>>, Json(body): Json<StepBody>) -> Response {
    let mut envs = server.envs.lock().await;
    let Some(env) = envs.get_mut(&body.env_idx) else {
        return error_body(format!("no env {}", body.env_idx));
    };
    match env.step_text(&body.action) {
        Ok(result) => {
            let Observation::Text { text } = result.observation else {
                return error_body("not text".into());
            };
            Json(json!({"state": text, "reward": result.info["reward"], "done": result.done, "info": null}))
                .into_response()
        }
        Err(error) => error_body(error.to_string()),
    }
}

async fn observation(State(server): State<Arc<Server>>, RawQuery(query): RawQuery) -> Response {
    let id = env_idx(query);
    let envs = server.envs.lock().await;
    match envs.get(&id).and_then(WebShopEnvironment::observation) {
        Some(text) => Json(json!(text)).into_response(),
        None => error_body(format!("no env {id}")),
    }
}

async fn available_actions(
    State(server): State<Arc<Server>>,
    RawQuery(query): RawQuery,
) -> Response {
    let id = env_idx(query);
    let envs = server.envs.lock().await;
    let Some(env) = envs.get(&id) else {
        return error_body(format!("no env {id}"));
    };
    let Some(session) = env.session() else {
        return error_body(format!("env {id} was never reset"));
    };
    Json(json!({
        "has_search_bar": session.has_search_bar(),
        "clickables": session.clickables(env.shop()),
    }))
    .into_response()
}

/// Starts the server on a free local port; returns its URL and state.
async fn serve(busy_creates: u32) -> (String, Arc<Server>) {
    let server = Arc::new(Server {
        envs: Mutex::new(HashMap::new()),
        next_id: AtomicU32::new(0),
        busy_creates: AtomicU32::new(busy_creates),
        create_calls: AtomicU32::new(0),
    });
    let app = Router::new()
        .route("/", get(|| async { Json(json!("ok")) }))
        .route("/create", post(create))
        .route("/reset", post(reset))
        .route("/step", post(step))
        .route("/observation", get(observation))
        .route("/available_actions", get(available_actions))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), server)
}

fn spec(env: &str, task_id: &str) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "agentgym-tests".to_string(),
        env: env.to_string(),
        split: "test".to_string(),
        task_id: task_id.to_string(),
        attempt: 0,
        harness_hash: "none".to_string(),
        model: ModelSpec::Oracle,
        env_options: Value::Null,
        seed: 0,
        timeout_s: 0,
    }
}

#[tokio::test]
async fn the_client_runs_an_expert_episode_through_the_server() {
    let (url, server) = serve(2).await;
    let env_id = format!("agentgym:webshop@{url}");
    let factory = catalog::open(&env_id, &EnvContext::default()).unwrap();
    assert_eq!(factory.id(), env_id);
    let mut env = factory.create(&Value::Null).unwrap();
    let shop = Shop::standard();

    for goal in [3usize, 42] {
        let info = env.reset(&spec(&env_id, &goal.to_string())).await.unwrap();
        // The fresh observation, not the stale reset reply.
        assert_eq!(
            info.opening[0].content,
            format!(
                "WebShop [SEP] Instruction: [SEP] {} [SEP] Search",
                shop.goals()[goal].instruction_text
            )
        );
        assert_eq!(info.admissible_actions.unwrap(), ["search[...]"]);
        let plan = oracle_actions(&shop, goal).unwrap();
        let mut last = None;
        for (index, action) in plan.iter().enumerate() {
            let result = env
                .step(&Action::Message {
                    text: action.clone(),
                })
                .await
                .unwrap();
            if index + 1 < plan.len() {
                assert!(!result.done);
                let admissible = result.admissible_actions.clone().unwrap();
                assert!(admissible.contains(&plan[index + 1]), "{admissible:?}");
            }
            last = Some(result);
        }
        let last = last.unwrap();
        assert!(last.done);
        assert_eq!(last.termination, Some(Termination::EnvDone));
        let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
        assert_eq!(evaluation.reward, 1.0);
        assert!(evaluation.success);
    }
    // Two 503s were retried; one server environment served both episodes.
    assert_eq!(server.create_calls.load(Ordering::SeqCst), 3);
    assert_eq!(server.envs.lock().await.len(), 1);
}

#[tokio::test]
async fn invalid_actions_and_limits_pass_through() {
    let (url, _server) = serve(0).await;
    let factory = AgentGymWebShopFactory::new(&url).unwrap();
    let mut env = factory.create(&json!({"max_steps": 2})).unwrap();
    let env_id = factory.id().to_string();
    env.reset(&spec(&env_id, "5")).await.unwrap();
    let first = env
        .step(&Action::Message {
            text: "click[buy now]".into(),
        })
        .await
        .unwrap();
    assert!(!first.done);
    assert_eq!(first.info["reward"], json!(0.0));
    assert!(
        first
            .observation
            .text()
            .starts_with("WebShop [SEP] Instruction:")
    );
    let second = env
        .step(&Action::Message {
            text: "search[yoga mat]".into(),
        })
        .await
        .unwrap();
    assert!(second.done, "the client's step limit");
    assert_eq!(second.termination, Some(Termination::MaxSteps));
    let evaluation = env.evaluate(Termination::MaxSteps).await.unwrap();
    assert_eq!(evaluation.reward, 0.0);
    assert!(!evaluation.success);

    let error = env.reset(&spec(&env_id, "first")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::UnknownTask);
    // The server reports an unknown goal as an error body.
    let error = env.reset(&spec(&env_id, "999999")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(error.to_string().contains("answered an error"), "{error}");
}

#[tokio::test]
async fn persistent_503s_and_unreachable_servers_are_clear_errors() {
    let (url, server) = serve(100).await;
    let factory = AgentGymWebShopFactory::new(&url)
        .unwrap()
        .with_retry_delay(Duration::from_millis(10));
    let mut env = factory.create(&Value::Null).unwrap();
    let error = env.reset(&spec(factory.id(), "1")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(error.to_string().contains("503"), "{error}");
    // The first try and five retries.
    assert_eq!(server.create_calls.load(Ordering::SeqCst), 6);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let factory = AgentGymWebShopFactory::new(&closed).unwrap();
    let mut env = factory.create(&Value::Null).unwrap();
    let error = env.reset(&spec(factory.id(), "1")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(error.to_string().contains(&closed), "{error}");
}
