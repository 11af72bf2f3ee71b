//! The AgentGym ALFWorld client against a real local HTTP server speaking AgentGym's ALFWorld API
//! (routes, id field `id`, HTTP-200 `{"error": ...}` bodies, the welcome-less reset observation),
//! which hosts Kiln's own generated ALFWorld games: game `i` is `valid_unseen` task `i`.
//! Needs `ops/setup alfworld`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kiln_environments::agentgym::alfworld::AgentGymAlfworldFactory;
use kiln_environments::agentgym::parse_target;
use kiln_environments::alfworld::data::AlfworldData;
use kiln_environments::alfworld::{DEFAULT_SEED, Generator, Split, World};
use kiln_environments::{EnvErrorKind, Environment, EnvironmentFactory, catalog, default_data_dir};
use kiln_protocol::{Action, ModelSpec, TaskSpec, Termination};
use serde_json::{Value, json};

/// One environment on the server, as AgentGym's `ALFWorld_Wrapper` keeps it.
struct Slot {
    world: Option<World>,
    game: Option<usize>,
    observation: String,
    actions: Vec<String>,
    done: bool,
    reward: f64,
}

struct Server {
    generator: Generator,
    games: Vec<String>,
    envs: Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
    /// Answer this many requests with HTTP 503 before serving again.
    unavailable: AtomicU32,
    requests: AtomicU32,
    creates: AtomicU32,
}

type Shared = Arc<Server>;

impl Server {
    fn gate(&self) -> Option<Response> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let pending = self.unavailable.load(Ordering::SeqCst);
        if pending == 0 {
            return None;
        }
        self.unavailable.store(pending - 1, Ordering::SeqCst);
        Some((StatusCode::SERVICE_UNAVAILABLE, "busy").into_response())
    }
}

fn error(message: String) -> Response {
    Json(json!({ "error": message })).into_response()
}

async fn hello() -> Json<&'static str> {
    Json("This is environment AlfWorld.")
}

async fn create(State(server): State<Shared>) -> Response {
    if let Some(busy) = server.gate() {
        return busy;
    }
    server.creates.fetch_add(1, Ordering::SeqCst);
    let id = server.next_id.fetch_add(1, Ordering::SeqCst);
    server.envs.lock().unwrap().insert(
        id,
        Slot {
            world: None,
            game: None,
            observation: String::new(),
            actions: Vec::new(),
            done: false,
            reward: 0.0,
        },
    );
    Json(json!({ "id": id })).into_response()
}

async fn reset(State(server): State<Shared>, Json(body): Json<Value>) -> Response {
    if let Some(busy) = server.gate() {
        return busy;
    }
    if body["world_type"] != "Text" {
        return error(r#"world_type must be one of "Text", "Embody" and "Hybrid""#.to_string());
    }
    let id = body["id"].as_u64().unwrap_or(u64::MAX);
    let mut envs = server.envs.lock().unwrap();
    let Some(slot) = envs.get_mut(&id) else {
        return error(format!("The id {id} is not valid."));
    };
    let game = body["game"].as_u64().unwrap_or(u64::MAX) as usize;
    let Some(task_id) = server.games.get(game) else {
        return error("list index out of range".to_string());
    };
    let task = server.generator.task(task_id).unwrap();
    // AgentGym drops the welcome banner and joins the rest with single newlines.
    let intro = task.intro();
    let observation = intro.split("\n\n").skip(1).collect::<Vec<_>>().join("\n");
    let actions = task.world.admissible_commands();
    *slot = Slot {
        world: Some(task.world.clone()),
        game: Some(game),
        observation: observation.clone(),
        actions: actions.clone(),
        done: false,
        reward: 0.0,
    };
    Json(json!({
        "id": id,
        "observation": observation,
        "available_actions": actions,
        "task_type": format!("{}/{}", task.task_type.name(), task.id),
    }))
    .into_response()
}

async fn step(State(server): State<Shared>, Json(body): Json<Value>) -> Response {
    if let Some(busy) = server.gate() {
        return busy;
    }
    let id = body["id"].as_u64().unwrap_or(u64::MAX);
    let mut envs = server.envs.lock().unwrap();
    let Some(slot) = envs.get_mut(&id) else {
        return error(format!("The id {id} is not valid."));
    };
    if slot.done {
        return error(format!("The task with environment {id} has finished."));
    }
    let Some(world) = slot.world.as_mut() else {
        return error("'NoneType' object has no attribute 'step'".to_string());
    };
    let observation = world.step(body["action"].as_str().unwrap_or_default());
    let won = world.goal_met();
    slot.observation = observation.clone();
    slot.actions = world.admissible_commands();
    slot.done = won;
    slot.reward = if won { 1.0 } else { 0.0 };
    Json(json!({
        "observation": observation,
        "reward": slot.reward,
        "available_actions": slot.actions,
        "done": won,
    }))
    .into_response()
}

fn query_id(query: Option<String>) -> u64 {
    query
        .as_deref()
        .and_then(|query| query.strip_prefix("id="))
        .and_then(|id| id.parse().ok())
        .unwrap_or(u64::MAX)
}

async fn observation(State(server): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let id = query_id(query);
    match server.envs.lock().unwrap().get(&id) {
        Some(slot) => Json(json!(slot.observation)).into_response(),
        None => error(format!("The id {id} is not valid.")),
    }
}

async fn available_actions(State(server): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let id = query_id(query);
    match server.envs.lock().unwrap().get(&id) {
        Some(slot) => Json(json!(slot.actions)).into_response(),
        None => error(format!("The id {id} is not valid.")),
    }
}

async fn detail(State(server): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let id = query_id(query);
    match server.envs.lock().unwrap().get(&id) {
        Some(slot) => Json(json!({
            "world_type": "Text",
            "game": slot.game,
            "observation": slot.observation,
            "available_actions": slot.actions,
            "done": slot.done,
            "reward": slot.reward,
            "deleted": false,
        }))
        .into_response(),
        None => error(format!("The id {id} is not valid.")),
    }
}

fn generator() -> Generator {
    let data = AlfworldData::load(&default_data_dir())
        .unwrap_or_else(|error| panic!("{error} (run ops/setup alfworld)"));
    Generator::new(Arc::new(data), DEFAULT_SEED)
}

/// Starts the server on a free local port; returns its state and `agentgym:alfworld@URL`.
async fn start_server() -> (Shared, String) {
    let server = Arc::new(Server {
        generator: generator(),
        games: Split::ValidUnseen.task_ids(),
        envs: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        unavailable: AtomicU32::new(0),
        requests: AtomicU32::new(0),
        creates: AtomicU32::new(0),
    });
    let app = Router::new()
        .route("/", get(hello))
        .route("/create", post(create))
        .route("/reset", post(reset))
        .route("/step", post(step))
        .route("/observation", get(observation))
        .route("/available_actions", get(available_actions))
        .route("/detail", get(detail))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, format!("agentgym:alfworld@http://{address}"))
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

fn say(text: &str) -> Action {
    Action::Message {
        text: text.to_string(),
    }
}

fn fast_factory(env_id: &str) -> AgentGymAlfworldFactory {
    AgentGymAlfworldFactory::new(env_id, parse_target(env_id).unwrap())
        .unwrap()
        .with_retry_delay(Duration::from_millis(5))
}

#[tokio::test]
async fn the_catalog_opens_an_agentgym_server_with_its_game_splits() {
    let (_server, env_id) = start_server().await;
    let factory = catalog::open(&env_id, &Default::default()).unwrap();
    assert_eq!(factory.id(), env_id);
    let splits: Vec<(String, usize)> = factory
        .splits()
        .into_iter()
        .map(|split| (split.name, split.tasks))
        .collect();
    assert_eq!(
        splits,
        [("train".to_string(), 2420), ("test".to_string(), 200)]
    );
    assert_eq!(factory.task_ids("test").unwrap()[0], "2420");
    assert_eq!(factory.task_ids("train").unwrap()[7], "7");
    assert_eq!(
        factory.task_ids("valid_unseen").unwrap_err().kind(),
        EnvErrorKind::UnknownSplit
    );
}

#[tokio::test]
async fn an_episode_over_http_matches_the_local_game_step_for_step() {
    let (server, env_id) = start_server().await;
    let factory = catalog::open(&env_id, &Default::default()).unwrap();
    let generator = generator();
    for game in [0usize, 30, 60, 90, 120] {
        let task = generator
            .task(&Split::ValidUnseen.task_ids()[game])
            .unwrap();
        let mut local = task.world.clone();
        let mut env = factory.create(&Value::Null).unwrap();
        let info = env.reset(&spec(&env_id, &game.to_string())).await.unwrap();
        assert_eq!(info.env, env_id);
        let expected_opening = task
            .intro()
            .split("\n\n")
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(info.opening[0].content, expected_opening);
        assert_eq!(
            info.admissible_actions.unwrap(),
            local.admissible_commands()
        );
        assert!(env.oracle_plan().is_none());

        // A wrong command first: an ordinary step on the server too.
        let result = env.step(&say("dance")).await.unwrap();
        assert_eq!(result.observation.text(), "Nothing happens.");
        assert!(!result.done);
        local.step("dance");
        for (index, command) in task.expert.iter().enumerate() {
            let result = env.step(&say(command)).await.unwrap();
            assert_eq!(result.observation.text(), local.step(command), "{command}");
            assert_eq!(
                result.admissible_actions.unwrap(),
                local.admissible_commands()
            );
            assert_eq!(result.done, index + 1 == task.expert.len());
        }
        let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
        assert_eq!(evaluation.reward, 1.0);
        assert!(evaluation.success);
        assert_eq!(evaluation.info["game"], json!(game));
        // Finished: the client refuses further steps itself.
        assert_eq!(
            env.step(&say("look")).await.unwrap_err().kind(),
            EnvErrorKind::State
        );
    }
    assert_eq!(server.creates.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn resets_reuse_one_server_environment() {
    let (server, env_id) = start_server().await;
    let factory = fast_factory(&env_id);
    let mut env = factory.create_client(&Value::Null).unwrap();
    env.reset(&spec(&env_id, "1")).await.unwrap();
    env.step(&say("look")).await.unwrap();
    env.reset(&spec(&env_id, "2")).await.unwrap();
    assert_eq!(server.creates.load(Ordering::SeqCst), 1);
    assert_eq!(env.server_id(), Some(0));
    let detail = reqwest::get(format!(
        "{}/detail?id=0",
        env_id.trim_start_matches("agentgym:alfworld@")
    ))
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(detail["game"], json!(2));
}

#[tokio::test]
async fn server_errors_bad_ids_and_unreachable_servers_are_clear_errors() {
    let (_server, env_id) = start_server().await;
    let factory = fast_factory(&env_id);
    let mut env = factory.create(&Value::Null).unwrap();
    assert_eq!(
        env.step(&say("look")).await.unwrap_err().kind(),
        EnvErrorKind::State
    );
    let error = env.reset(&spec(&env_id, "kitchen-3")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::UnknownTask);
    assert!(error.to_string().contains("game indices"), "{error}");
    // An HTTP-200 error body from the server.
    let error = env.reset(&spec(&env_id, "5000")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("/reset answered an error: list index out of range"),
        "{error}"
    );

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let gone = format!("agentgym:alfworld@http://{address}");
    let mut env = fast_factory(&gone).create(&Value::Null).unwrap();
    let error = env.reset(&spec(&gone, "1")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains(&format!("http://{address}/create: request failed")),
        "{error}"
    );
}

#[tokio::test]
async fn http_503_is_retried_up_to_five_times() {
    let (server, env_id) = start_server().await;
    let factory = fast_factory(&env_id);

    server.unavailable.store(5, Ordering::SeqCst);
    let mut env = factory.create(&Value::Null).unwrap();
    env.reset(&spec(&env_id, "4")).await.unwrap();
    // 5 refused + 1 served for /create, 1 for /reset.
    assert_eq!(server.requests.load(Ordering::SeqCst), 7);

    server.requests.store(0, Ordering::SeqCst);
    server.unavailable.store(6, Ordering::SeqCst);
    let error = env.step(&say("look")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::Crashed);
    assert!(
        error
            .to_string()
            .contains("HTTP 503 Service Unavailable after 5 retries"),
        "{error}"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 6);
}
