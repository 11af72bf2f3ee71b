//! The WebShop-format environment on the standard synthetic catalog: page text, action rules,
//! invalid actions, the expert on every split, a random agent, partial rewards, task ids.

use std::collections::BTreeSet;

use kiln_environments::webshop::pages::SEP;
use kiln_environments::webshop::reward::reward;
use kiln_environments::webshop::rng::Rng;
use kiln_environments::webshop::session::Session;
use kiln_environments::webshop::{ENV_ID, Shop, WebShopFactory, oracle_actions};
use kiln_environments::{EnvContext, EnvErrorKind, Environment, EnvironmentFactory, catalog};
use kiln_protocol::{Action, ModelSpec, Observation, StepResult, TaskSpec, Termination};
use serde_json::{Value, json};

fn spec(task_id: &str) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "webshop-tests".to_string(),
        env: ENV_ID.to_string(),
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

fn text(result: &StepResult) -> &str {
    match &result.observation {
        Observation::Text { text } => text,
        other => panic!("expected text, got {other:?}"),
    }
}

async fn started(task: &str, options: Value) -> Box<dyn Environment> {
    let factory = WebShopFactory::new();
    let mut env = factory.create(&options).unwrap();
    env.reset(&spec(task)).await.unwrap();
    env
}

#[tokio::test]
async fn pages_render_in_simple_text_mode() {
    let shop = Shop::standard();
    let factory = WebShopFactory::new();
    let mut env = factory.create(&Value::Null).unwrap();
    let info = env.reset(&spec("7")).await.unwrap();
    let goal = &shop.goals()[7];
    let instruction = &goal.instruction_text;
    assert_eq!(
        info.opening[0].content,
        format!("WebShop [SEP] Instruction: [SEP] {instruction} [SEP] Search")
    );
    assert_eq!(info.admissible_actions.unwrap(), ["search[...]"]);

    // Results: page 1 of a broad query, then page 2.
    let result = env.step(&say("search[Women Shoes]")).await.unwrap();
    let hits = shop.search("women shoes");
    assert_eq!(hits.len(), 50);
    let mut expected = vec![
        "Instruction:".to_string(),
        instruction.clone(),
        "Back to Search".to_string(),
        "Page 1 (Total results: 50)".to_string(),
        "Next >".to_string(),
    ];
    for &hit in &hits[..10] {
        let product = shop.product(hit);
        expected.extend([
            product.asin.clone(),
            product.name.clone(),
            product.price_tag(),
        ]);
    }
    assert_eq!(text(&result), expected.join(SEP));
    let admissible = result.admissible_actions.clone().unwrap();
    assert_eq!(admissible[..2], ["click[back to search]", "click[next >]"]);
    assert_eq!(admissible.len(), 12);
    assert_eq!(result.info["has_search_bar"], json!(false));
    assert!(!result.done);

    let page2 = env.step(&say("click[Next >]")).await.unwrap();
    assert!(text(&page2).contains(&format!(
        "Page 2 (Total results: 50) [SEP] < Prev [SEP] Next > [SEP] {}",
        shop.product(hits[10]).asin
    )));
    let page5 = {
        for _ in 0..2 {
            env.step(&say("click[next >]")).await.unwrap();
        }
        env.step(&say("click[next >]")).await.unwrap()
    };
    assert!(text(&page5).contains("Page 5 (Total results: 50) [SEP] < Prev [SEP] "));
    assert!(!text(&page5).contains("Next >"));

    // Item page of the 41st hit.
    let item = shop.product(hits[40]);
    let result = env
        .step(&say(&format!("click[{}]", item.asin.to_lowercase())))
        .await
        .unwrap();
    let mut expected = vec![
        "Instruction:".to_string(),
        instruction.clone(),
        "Back to Search".to_string(),
        "< Prev".to_string(),
    ];
    for (name, values) in &item.options {
        expected.push(name.clone());
        expected.extend(values.iter().cloned());
    }
    expected.extend([
        item.name.clone(),
        format!("Price: {}", item.price_tag()),
        "Rating: N.A.".to_string(),
        "Description".to_string(),
        "Features".to_string(),
        "Reviews".to_string(),
        "Buy Now".to_string(),
    ]);
    let item_page = expected.join(SEP);
    assert_eq!(text(&result), item_page);

    // Sub-pages, and "< Prev" back to the item.
    let head = format!("Instruction: [SEP] {instruction} [SEP] Back to Search [SEP] < Prev");
    let description = env.step(&say("click[description]")).await.unwrap();
    assert_eq!(
        text(&description),
        format!("{head} [SEP] {}", item.description)
    );
    env.step(&say("click[< prev]")).await.unwrap();
    let features = env.step(&say("click[Features]")).await.unwrap();
    assert_eq!(
        text(&features),
        format!("{head} [SEP] {}", item.bullet_points.join(SEP))
    );
    env.step(&say("click[< prev]")).await.unwrap();
    let reviews = env.step(&say("click[reviews]")).await.unwrap();
    assert_eq!(text(&reviews), head);
    let back = env.step(&say("click[< prev]")).await.unwrap();
    assert_eq!(text(&back), item_page);
    // "< Prev" on the item returns to its results page.
    let results = env.step(&say("click[< prev]")).await.unwrap();
    assert!(text(&results).contains("Page 5 (Total results: 50)"));
}

#[tokio::test]
async fn buying_ends_on_the_done_page_with_the_reward() {
    let shop = Shop::standard();
    let goal = &shop.goals()[3];
    let mut env = started("3", Value::Null).await;
    let plan = env.oracle_plan().unwrap();
    let mut last = None;
    for action in &plan {
        last = Some(env.step(action).await.unwrap());
    }
    let last = last.unwrap();
    assert!(last.done);
    assert_eq!(last.termination, Some(Termination::EnvDone));
    assert_eq!(last.info["reward"], json!(1.0));
    let options: Vec<String> = goal
        .goal_options
        .iter()
        .map(|(name, value)| format!("'{name}': '{value}'"))
        .collect();
    assert_eq!(
        text(&last),
        format!(
            "Thank you for shopping with us! [SEP] Your code: [SEP] None [SEP] (Paste it in your MTurk interface.) \
             [SEP] Purchased [SEP] asin [SEP] {} [SEP] options [SEP] {{{}}} [SEP] Reward [SEP] \
             Your score (min 0.0, max 1.0) [SEP] 1.0",
            goal.asin,
            options.join(", ")
        )
    );
    let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
    assert_eq!(evaluation.reward, 1.0);
    assert!(evaluation.success);
    assert_eq!(evaluation.info["catalog"], json!("synthetic catalog"));
    for component in ["type", "attributes", "price"] {
        assert_eq!(
            evaluation.components[component].value,
            Some(1.0),
            "{component}"
        );
    }
    let error = env.step(&say("click[back to search]")).await.unwrap_err();
    assert_eq!(error.kind(), EnvErrorKind::State);
}

#[tokio::test]
async fn invalid_actions_change_nothing() {
    let mut env = started("11", Value::Null).await;
    let start = env.step(&say("click[search]")).await.unwrap();
    let start_text = text(&start).to_string();
    assert!(start_text.starts_with("WebShop [SEP] Instruction:"));
    assert!(
        start.info["invalid"]
            .as_str()
            .unwrap()
            .contains("not clickable")
    );
    for bad in [
        "click[",
        "search[]",
        "buy[it]",
        "hello",
        "click[buy now]",
        "click[next >]",
    ] {
        let result = env.step(&say(bad)).await.unwrap();
        assert_eq!(text(&result), start_text, "{bad}");
        assert_eq!(result.info["reward"], json!(0.0));
        assert!(result.info["invalid"].is_string(), "{bad}");
        assert!(!result.done, "{bad}");
    }
    let results = env.step(&say("search[yoga mat]")).await.unwrap();
    let results_text = text(&results).to_string();
    assert!(results.info.get("invalid").is_none());
    for bad in [
        "search[running shoes]",
        "click[search]",
        "click[b0nothere00]",
        "click[< prev]",
        "click[buy now]",
        "click[description]",
        "click[x]y",
    ] {
        let result = env.step(&say(bad)).await.unwrap();
        assert_eq!(text(&result), results_text, "{bad}");
        assert_eq!(result.info["reward"], json!(0.0));
        assert!(result.info["invalid"].is_string(), "{bad}");
    }
}

#[tokio::test]
async fn the_step_limit_ends_an_unpurchased_episode_with_reward_zero() {
    let mut env = started("0", json!({"max_steps": 3})).await;
    for step in 1..=3 {
        let result = env.step(&say("click[nothing]")).await.unwrap();
        assert_eq!(result.done, step == 3);
    }
    let evaluation = env.evaluate(Termination::MaxSteps).await.unwrap();
    assert_eq!(evaluation.reward, 0.0);
    assert!(!evaluation.success);
    assert_eq!(evaluation.info["invalid_actions"], json!(3));
}

#[tokio::test]
async fn unknown_task_ids_and_splits_are_errors() {
    let factory = WebShopFactory::new();
    let mut env = factory.create(&Value::Null).unwrap();
    for bad in ["3000", "-1", "abc", ""] {
        let error = env.reset(&spec(bad)).await.unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::UnknownTask, "{bad}");
        assert!(error.to_string().contains("goal indices"), "{error}");
    }
    assert_eq!(
        factory.task_ids("dev").unwrap_err().kind(),
        EnvErrorKind::UnknownSplit
    );
    let sizes: Vec<(String, usize)> = factory
        .splits()
        .into_iter()
        .map(|split| (split.name, split.tasks))
        .collect();
    assert_eq!(
        sizes,
        [
            ("test".to_string(), 500),
            ("eval".to_string(), 1000),
            ("train".to_string(), 1500)
        ]
    );
    assert_eq!(factory.task_ids("eval").unwrap()[0], "500");
    assert!(factory.description().contains("synthetic catalog"));
    let opened = catalog::open("webshop", &EnvContext::default()).unwrap();
    assert_eq!(opened.id(), "webshop");
}

/// The expert plan, applied to a bare session: the purchase's reward.
fn expert_reward(shop: &Shop, goal: usize) -> f64 {
    let plan = oracle_actions(shop, goal).unwrap_or_else(|| panic!("goal {goal}: no expert plan"));
    let mut session = Session::new(goal);
    for action in &plan {
        session
            .apply(shop, action)
            .unwrap_or_else(|invalid| panic!("goal {goal}: {action} invalid: {invalid:?}"));
    }
    session
        .purchase
        .expect("the plan ends with a purchase")
        .reward
}

#[test]
fn the_expert_succeeds_on_every_goal_of_every_split() {
    let shop = Shop::standard();
    let factory = WebShopFactory::new();
    for split in ["test", "eval", "train"] {
        let ids = factory.task_ids(split).unwrap();
        let failures: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                let reward = expert_reward(&shop, id.parse().unwrap());
                (reward != 1.0).then(|| format!("{id}: {reward}"))
            })
            .collect();
        println!(
            "expert on {split}: {} goals, {} below 1",
            ids.len(),
            failures.len()
        );
        assert!(failures.is_empty(), "{split}: {failures:?}");
    }
}

#[tokio::test]
async fn a_random_agent_scores_far_below_the_expert() {
    // Searches the instruction text, then clicks uniformly among the available actions.
    let factory = WebShopFactory::new();
    let shop = factory.shop().clone();
    let mut rng = Rng::new(17);
    let mut total = 0.0;
    let mut successes = 0;
    let ids = factory.task_ids("test").unwrap();
    for id in &ids {
        let mut env = factory.create(&Value::Null).unwrap();
        let info = env.reset(&spec(id)).await.unwrap();
        let goal = &shop.goals()[id.parse::<usize>().unwrap()];
        let mut admissible = info.admissible_actions.unwrap();
        loop {
            let choice = rng.pick(&admissible).clone();
            let action = if choice == "search[...]" {
                format!("search[{}]", goal.instruction_text)
            } else {
                choice
            };
            let result = env.step(&say(&action)).await.unwrap();
            if result.done {
                break;
            }
            admissible = result.admissible_actions.unwrap();
        }
        let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
        total += evaluation.reward;
        successes += usize::from(evaluation.success);
    }
    let score = 100.0 * total / ids.len() as f64;
    let success_rate = 100.0 * successes as f64 / ids.len() as f64;
    let (rule_score, rule_success) = rule_baseline(&shop, &ids);
    println!(
        "test split, {} goals, 15 steps: random agent score {score:.1}, success {success_rate:.1}%; \
         rule baseline (search the instruction, buy the first hit) score {rule_score:.1}, success {rule_success:.1}%; \
         expert score 100.0, success 100%",
        ids.len()
    );
    // Partial credit makes a random purchase worth something (as in WebShop), but far from 1.
    assert!(score < 40.0, "random score {score}");
    assert!(success_rate < 10.0, "random success {success_rate}%");
    assert!(
        rule_score < 80.0 && rule_success < 50.0,
        "rule {rule_score} {rule_success}"
    );
}

/// WebShop's rule baseline: search the instruction, open the first result, buy it as is.
fn rule_baseline(shop: &Shop, ids: &[String]) -> (f64, f64) {
    let mut total = 0.0;
    let mut successes = 0;
    for id in ids {
        let goal = id.parse::<usize>().unwrap();
        let mut session = Session::new(goal);
        let instruction = &shop.goals()[goal].instruction_text;
        session
            .apply(shop, &format!("search[{instruction}]"))
            .unwrap();
        let first = shop.product(session.hits[0]).asin.to_lowercase();
        session.apply(shop, &format!("click[{first}]")).unwrap();
        session.apply(shop, "click[buy now]").unwrap();
        let purchase = session.purchase.unwrap();
        total += purchase.reward;
        successes += usize::from(purchase.success());
    }
    let n = ids.len() as f64;
    (100.0 * total / n, 100.0 * successes as f64 / n)
}

#[test]
fn wrong_purchases_earn_partial_rewards() {
    // Buying other products for the test goals: every type factor and partial attribute/option/
    // price credit occurs.
    let shop = Shop::standard();
    let mut type_factors = BTreeSet::new();
    let mut partial_same_query = 0;
    let mut missed_price = 0;
    for goal_index in 0..40 {
        let goal = &shop.goals()[goal_index];
        for (index, product) in shop.products().iter().enumerate().step_by(4) {
            if index == goal.product {
                continue;
            }
            let chosen: Vec<String> = product.options.iter().map(|(_, v)| v[0].clone()).collect();
            let breakdown = reward(product, &chosen, goal);
            type_factors.insert((breakdown.r_type.r_type * 10.0) as u32);
            if product.query == goal.query && breakdown.reward > 0.0 && breakdown.reward < 1.0 {
                partial_same_query += 1;
            }
            missed_price += usize::from(!breakdown.price_ok);
        }
    }
    assert_eq!(
        type_factors,
        BTreeSet::from([0, 1, 5, 10]),
        "type factors ×10 seen"
    );
    assert!(partial_same_query > 100, "{partial_same_query}");
    assert!(missed_price > 100, "{missed_price}");
}

#[test]
fn the_catalog_has_the_promised_shape() {
    let shop = Shop::standard();
    assert!(shop.products().len() >= 1000);
    let categories: BTreeSet<&str> = shop
        .products()
        .iter()
        .map(|p| p.category.as_str())
        .collect();
    assert_eq!(categories.len(), 6);
    assert_eq!(shop.goals().len(), 3000);
    assert!(shop.products().iter().any(|p| p.pricing.len() == 2));
    assert!(shop.products().iter().any(|p| p.options.is_empty()));
}
