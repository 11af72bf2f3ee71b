//! τ² episodes on the real data, through the `Environment` API: termination rules and limits,
//! the reward components (DB, COMMUNICATE, unjudged and judged NL assertions), the user modes,
//! the catalog. Needs `ops/setup tau2`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_environments::tau2::Domain;
use kiln_environments::tau2::env::{MAX_STEPS, Tau2Factory};
use kiln_environments::tau2::user::{GREETING, SOLO_NOTE, STOP, TRANSFER};
use kiln_environments::{
    AuxModel, EnvContext, EnvErrorKind, Environment, EnvironmentFactory, catalog, default_data_dir,
};
use kiln_protocol::{
    Action, Message, ModelSpec, Observation, StepResult, TaskSpec, Termination, ToolCall,
};
use serde_json::{Value, json};

fn context() -> EnvContext {
    EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    }
}

fn spec(env: &str, task_id: &str, options: Value) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "episode-tests".to_string(),
        env: env.to_string(),
        split: "base".to_string(),
        task_id: task_id.to_string(),
        attempt: 0,
        harness_hash: "none".to_string(),
        model: ModelSpec::Oracle,
        env_options: options,
        seed: 0,
        timeout_s: 0,
    }
}

async fn started(env_id: &str, task_id: &str, options: Value) -> Box<dyn Environment> {
    let factory = catalog::open(env_id, &context()).unwrap_or_else(|error| panic!("{error}"));
    let spec = spec(env_id, task_id, options);
    let mut env = factory.create(&spec.env_options).unwrap();
    env.reset(&spec).await.unwrap();
    env
}

fn tool(name: &str, arguments: Value) -> Action {
    Action::ToolCall {
        call: ToolCall {
            id: format!("call-{name}"),
            name: name.to_string(),
            arguments,
        },
    }
}

fn say(text: &str) -> Action {
    Action::Message {
        text: text.to_string(),
    }
}

fn gold_calls(env: &dyn Environment) -> Vec<Action> {
    env.oracle_plan()
        .unwrap()
        .into_iter()
        .filter(|action| matches!(action, Action::ToolCall { .. }))
        .collect()
}

async fn step_all(env: &mut dyn Environment, actions: &[Action]) -> Vec<StepResult> {
    let mut results = Vec::new();
    for action in actions {
        results.push(env.step(action).await.unwrap());
    }
    results
}

#[tokio::test]
async fn reset_opens_with_policy_tools_greeting_and_the_users_first_message() {
    let factory = catalog::open("tau2-retail", &context()).unwrap();
    let retail_spec = spec("tau2-retail", "0", json!({"user": "scripted"}));
    let mut env = factory.create(&retail_spec.env_options).unwrap();
    assert!(env.oracle_plan().is_none(), "no plan before reset");
    let info = env.reset(&retail_spec).await.unwrap();
    let policy =
        std::fs::read_to_string(default_data_dir().join("data/tau2/retail/policy.md")).unwrap();
    assert_eq!(info.env, "tau2-retail");
    assert_eq!(info.instructions, policy);
    assert_eq!(info.tools.len(), 16);
    assert_eq!(info.opening[0], Message::assistant(GREETING));
    assert!(
        info.opening[1].content.contains("#W2378156"),
        "{}",
        info.opening[1].content
    );

    let plan = env.oracle_plan().unwrap();
    let Action::ToolCall { call } = &plan[0] else {
        panic!("the plan starts with the gold actions")
    };
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("gold-0", "find_user_id_by_name_zip")
    );
    assert_eq!(plan.last(), Some(&say(STOP)));

    let airline = catalog::open("tau2-airline", &context()).unwrap();
    let airline_spec = spec("tau2-airline", "0", Value::Null);
    let mut env = airline.create(&Value::Null).unwrap();
    assert_eq!(env.reset(&airline_spec).await.unwrap().tools.len(), 14);
}

#[tokio::test]
async fn stepping_outside_an_episode_is_a_state_error() {
    let factory = catalog::open("tau2-airline", &context()).unwrap();
    let mut env = factory.create(&Value::Null).unwrap();
    assert_eq!(
        env.step(&say("hello")).await.unwrap_err().kind(),
        EnvErrorKind::State
    );
    assert_eq!(
        env.evaluate(Termination::AgentStop)
            .await
            .unwrap_err()
            .kind(),
        EnvErrorKind::State
    );

    let mut env = started("tau2-airline", "3", json!({"user": "none"})).await;
    let result = env.step(&say(STOP)).await.unwrap();
    assert!(result.done);
    assert_eq!(result.termination, Some(Termination::AgentStop));
    assert_eq!(
        env.step(&say("one more thing")).await.unwrap_err().kind(),
        EnvErrorKind::State
    );

    let unknown = spec("tau2-airline", "no-such-task", Value::Null);
    assert_eq!(
        env.reset(&unknown).await.unwrap_err().kind(),
        EnvErrorKind::UnknownTask
    );
}

#[tokio::test]
async fn ten_tool_errors_end_the_episode_with_reward_zero() {
    let mut env = started("tau2-retail", "57", json!({"user": "none"})).await;
    let bad = tool("get_order_details", json!({"order_id": "#W0000000"}));
    let results = step_all(env.as_mut(), &vec![bad; 10]).await;
    for result in &results[..9] {
        let Observation::ToolResult {
            content, is_error, ..
        } = &result.observation
        else {
            panic!()
        };
        assert!(*is_error && content.starts_with("Error: "), "{content}");
        assert!(!result.done);
    }
    assert!(results[9].done);
    assert_eq!(results[9].termination, Some(Termination::TooManyErrors));
    let evaluation = env.evaluate(Termination::TooManyErrors).await.unwrap();
    assert_eq!(evaluation.reward, 0.0);
    assert!(!evaluation.success && !evaluation.success_judged_only);
    assert!(
        evaluation.components.is_empty(),
        "τ² does not grade an episode ended by a limit"
    );
    assert!(
        evaluation.db_hash.is_some(),
        "the final DB hash is recorded anyway"
    );
}

#[tokio::test]
async fn the_step_limit_counts_messages_as_tau2_does() {
    // reset = 1 (the user's first message); each tool call = 2 (call and result).
    let mut env = started("tau2-airline", "3", json!({"user": "scripted"})).await;
    let cheap = tool("calculate", json!({"expression": "1 + 1"}));
    let calls = (MAX_STEPS as usize - 1) / 2;
    let results = step_all(env.as_mut(), &vec![cheap; calls]).await;
    assert!(
        results.iter().all(|result| !result.done),
        "{} steps are under the limit",
        1 + 2 * calls
    );
    assert_eq!(results.last().unwrap().info["steps"], json!(MAX_STEPS - 1));
    // The agent's message is step 200: the episode ends before the user answers.
    let result = env.step(&say("Let me check something.")).await.unwrap();
    assert!(result.done);
    assert_eq!(result.termination, Some(Termination::MaxSteps));
    assert!(!matches!(result.observation, Observation::User { .. }));
    assert_eq!(
        env.evaluate(Termination::MaxSteps).await.unwrap().reward,
        0.0
    );

    let mut env = started(
        "tau2-airline",
        "3",
        json!({"user": "scripted", "max_steps": 4}),
    )
    .await;
    let first = env
        .step(&say("Could you tell me your user id?"))
        .await
        .unwrap();
    assert!(!first.done, "steps 2 and 3");
    let Observation::User { text } = &first.observation else {
        panic!()
    };
    assert!(text.contains("anya_garcia_5901"), "{text}");
    assert_eq!(
        env.step(&say("Thanks.")).await.unwrap().termination,
        Some(Termination::MaxSteps)
    );
}

#[tokio::test]
async fn communicate_needs_every_string_in_an_agent_message() {
    // Airline task 7 must communicate "1628"; replaying its gold calls gets the DB part right.
    for (message, expected) in [
        ("The total refund is 1,628 dollars.", 1.0),
        ("The total refund is large.", 0.0),
    ] {
        let mut env = started("tau2-airline", "7", json!({"user": "none"})).await;
        let mut actions = gold_calls(env.as_ref());
        actions.push(say(message));
        actions.push(say(STOP));
        step_all(env.as_mut(), &actions).await;
        let evaluation = env.evaluate(Termination::AgentStop).await.unwrap();
        assert_eq!(
            evaluation.components["COMMUNICATE"].value,
            Some(expected),
            "{message}"
        );
        assert_eq!(evaluation.components["DB"].value, Some(1.0));
        assert_eq!(evaluation.success, expected == 1.0);
    }
}

#[tokio::test]
async fn a_forbidden_write_fails_the_db_component_and_a_failed_write_does_not() {
    // Retail task 57 has gold actions `[]`: the DB must not change.
    let mut env = started("tau2-retail", "57", json!({"user": "none"})).await;
    let failed = tool(
        "cancel_pending_order",
        json!({"order_id": "#W0000000", "reason": "no longer needed"}),
    );
    let result = env.step(&failed).await.unwrap();
    assert!(matches!(
        result.observation,
        Observation::ToolResult { is_error: true, .. }
    ));
    env.step(&say(STOP)).await.unwrap();
    let evaluation = env.evaluate(Termination::AgentStop).await.unwrap();
    assert_eq!(
        evaluation.components["DB"].value,
        Some(1.0),
        "{:?}",
        evaluation.components["DB"].detail
    );

    let mut env = started("tau2-retail", "57", json!({"user": "none"})).await;
    let write = tool(
        "modify_user_address",
        json!({"user_id": "noah_patel_6952", "address1": "1 Main St", "address2": "", "city": "Seattle",
               "country": "USA", "state": "WA", "zip": "98195"}),
    );
    let result = env.step(&write).await.unwrap();
    assert!(
        matches!(
            result.observation,
            Observation::ToolResult {
                is_error: false,
                ..
            }
        ),
        "{:?}",
        result.observation
    );
    env.step(&say(STOP)).await.unwrap();
    let evaluation = env.evaluate(Termination::AgentStop).await.unwrap();
    assert_eq!(evaluation.components["DB"].value, Some(0.0));
    assert!(!evaluation.success);
}

/// A judge that answers every assertion with the same verdict and counts its calls.
struct FixedJudge {
    met: bool,
    calls: Mutex<usize>,
}

#[async_trait]
impl AuxModel for FixedJudge {
    fn label(&self) -> String {
        "fixed-judge".to_string()
    }
    async fn complete(&self, messages: &[Message]) -> Result<String, String> {
        *self.calls.lock().unwrap() += 1;
        let outcomes: Vec<String> = serde_json::from_str(
            messages[1]
                .content
                .split("expectedOutcomes:\n")
                .nth(1)
                .unwrap(),
        )
        .unwrap();
        let results: Vec<Value> =
            outcomes.iter().map(|outcome| json!({"expectedOutcome": outcome, "reasoning": "fixed", "metExpectation": self.met})).collect();
        Ok(json!({ "results": results }).to_string())
    }
}

async fn oracle_evaluation(ctx: &EnvContext, task_id: &str) -> kiln_environments::Evaluation {
    let factory = Tau2Factory::new(Domain::Retail, ctx);
    let spec = spec("tau2-retail", task_id, json!({"user": "none"}));
    let mut env = factory.create(&spec.env_options).unwrap();
    env.reset(&spec).await.unwrap();
    let plan = env.oracle_plan().unwrap();
    step_all(env.as_mut(), &plan).await;
    env.evaluate(Termination::AgentStop).await.unwrap()
}

#[tokio::test]
async fn nl_assertions_are_unjudged_without_a_judge_and_decided_with_one() {
    // Retail task 2 has NL assertions and a DB part the oracle gets right.
    let unjudged = oracle_evaluation(&context(), "2").await;
    let nl = &unjudged.components["NL_ASSERTION"];
    assert!(nl.unjudged && nl.value.is_none());
    assert_eq!(
        unjudged.reward, 1.0,
        "the reward is the product of the judged components"
    );
    assert!(!unjudged.success && unjudged.success_judged_only);

    for met in [true, false] {
        let judge = Arc::new(FixedJudge {
            met,
            calls: Mutex::new(0),
        });
        let ctx = EnvContext {
            judge_model: Some(judge.clone()),
            ..context()
        };
        let judged = oracle_evaluation(&ctx, "2").await;
        assert_eq!(*judge.calls.lock().unwrap(), 1);
        assert_eq!(
            judged.components["NL_ASSERTION"].value,
            Some(if met { 1.0 } else { 0.0 })
        );
        assert_eq!(judged.success, met);
        assert_eq!(judged.reward, if met { 1.0 } else { 0.0 });
    }
}

#[tokio::test]
async fn a_transfer_makes_the_scripted_user_leave_and_is_graded() {
    // Retail task 50's only gold action is transfer_to_human_agents.
    let mut env = started("tau2-retail", "50", json!({"user": "scripted"})).await;
    let actions = gold_calls(env.as_ref());
    step_all(env.as_mut(), &actions).await;
    let result = env
        .step(&say("I am transferring you to a human agent."))
        .await
        .unwrap();
    assert_eq!(
        result.observation,
        Observation::User {
            text: TRANSFER.to_string()
        }
    );
    assert_eq!(result.termination, Some(Termination::Transfer));
    let evaluation = env.evaluate(Termination::Transfer).await.unwrap();
    assert_eq!(evaluation.components["DB"].value, Some(1.0));
    assert!(evaluation.success, "{:?}", evaluation.components);

    let out_of_scope = env.evaluate(Termination::OutOfScope).await.unwrap();
    assert_eq!(
        out_of_scope.reward, 0.0,
        "an out-of-scope stop is an aborted run"
    );
}

#[tokio::test]
async fn the_scripted_user_answers_from_the_task_and_stops_when_served() {
    // Airline task 3: Anya Garcia asks about her baggage allowance; nothing to write.
    let mut env = started("tau2-airline", "3", json!({"user": "scripted"})).await;
    let reply = env
        .step(&say("Could you give me your user id, please?"))
        .await
        .unwrap();
    let Observation::User { text } = &reply.observation else {
        panic!()
    };
    assert!(text.contains("anya_garcia_5901"), "{text}");
    let actions = gold_calls(env.as_ref());
    step_all(env.as_mut(), &actions).await;
    let mut last = env
        .step(&say(
            "You can bring 4 suitcases. Is there anything else I can help you with?",
        ))
        .await
        .unwrap();
    if !last.done {
        last = env.step(&say("Have a great day!")).await.unwrap();
    }
    assert_eq!(
        last.termination,
        Some(Termination::UserStop),
        "{:?}",
        last.observation
    );
    assert!(last.observation.text().contains(STOP));
    assert!(env.evaluate(Termination::UserStop).await.unwrap().success);
}

#[tokio::test]
async fn solo_mode_answers_text_with_a_fixed_note() {
    let mut env = started("tau2-airline", "3", json!({"user": "none"})).await;
    let result = env.step(&say("Hello, are you there?")).await.unwrap();
    assert_eq!(
        result.observation,
        Observation::User {
            text: SOLO_NOTE.to_string()
        }
    );
    assert!(!result.done);
}

/// A user model that plays back canned lines and records what it was shown.
struct CannedUser {
    lines: Mutex<Vec<&'static str>>,
    seen: Mutex<Vec<Vec<Message>>>,
}

#[async_trait]
impl AuxModel for CannedUser {
    fn label(&self) -> String {
        "canned".to_string()
    }
    async fn complete(&self, messages: &[Message]) -> Result<String, String> {
        self.seen.lock().unwrap().push(messages.to_vec());
        Ok(self.lines.lock().unwrap().remove(0).to_string())
    }
}

#[tokio::test]
async fn model_user_drives_the_conversation_and_can_stop_it() {
    let model = Arc::new(CannedUser {
        lines: Mutex::new(vec![
            "I want to cancel reservation EHGLP3.",
            "Thanks, bye. ###STOP###",
        ]),
        seen: Mutex::new(Vec::new()),
    });
    let ctx = EnvContext {
        user_model: Some(model.clone()),
        ..context()
    };
    let factory = catalog::open("tau2-airline", &ctx).unwrap();
    let spec = spec("tau2-airline", "0", json!({"user": "model"}));
    let mut env = factory.create(&spec.env_options).unwrap();
    let info = env.reset(&spec).await.unwrap();
    assert_eq!(
        info.opening[1].content,
        "I want to cancel reservation EHGLP3."
    );
    let result = env.step(&say("I cannot cancel it, sorry.")).await.unwrap();
    assert_eq!(result.termination, Some(Termination::UserStop));
    let seen = model.seen.lock().unwrap().clone();
    assert!(
        seen[0][0].content.contains("emma_kim_9957"),
        "the scenario reaches the user model"
    );
    assert_eq!(
        seen[1].last().unwrap(),
        &Message::user("I cannot cancel it, sorry.")
    );

    let quitter = Arc::new(CannedUser {
        lines: Mutex::new(vec!["Never mind. ###STOP###"]),
        seen: Mutex::new(Vec::new()),
    });
    let ctx = EnvContext {
        user_model: Some(quitter),
        ..context()
    };
    let factory = catalog::open("tau2-airline", &ctx).unwrap();
    let mut env = factory.create(&spec.env_options).unwrap();
    env.reset(&spec).await.unwrap();
    let result = env.step(&say("Hello?")).await.unwrap();
    assert!(
        result.done,
        "a user that stops in its first message ends the episode at the first step"
    );
    assert_eq!(result.termination, Some(Termination::UserStop));

    let no_model = catalog::open("tau2-airline", &context()).unwrap();
    assert_eq!(
        no_model
            .create(&json!({"user": "model"}))
            .err()
            .unwrap()
            .kind(),
        EnvErrorKind::InvalidOptions
    );
}

#[test]
fn catalog_lists_splits_and_shares_one_db_per_domain() {
    let ctx = context();
    for (env_id, train, test, base) in [("tau2-airline", 30, 20, 50), ("tau2-retail", 74, 40, 114)]
    {
        let factory = catalog::open(env_id, &ctx).unwrap();
        assert_eq!(factory.task_ids("train").unwrap().len(), train);
        assert_eq!(factory.task_ids("test").unwrap().len(), test);
        assert_eq!(factory.task_ids("base").unwrap().len(), base);
        let error = factory.task_ids("validation").unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::UnknownSplit);
        assert!(error.to_string().contains("base, test, train"), "{error}");
    }
    let first = Tau2Factory::new(Domain::Retail, &ctx);
    let second = Tau2Factory::new(Domain::Retail, &ctx);
    assert!(Arc::ptr_eq(
        first.data().unwrap().base_db(),
        second.data().unwrap().base_db()
    ));
    let listed = catalog::factories(&ctx);
    assert_eq!(
        listed
            .iter()
            .map(|factory| factory.id())
            .collect::<Vec<_>>(),
        [
            "tau2-retail",
            "tau2-airline",
            "alfworld",
            "webshop",
            "debug-faults"
        ]
    );
}
