//! Critic checks one at a time: budget charges from the diff, widening since the seed, tool
//! permissions, manifest predictions, lever fatigue, and that every reason is reported.

use kiln_evolve::critic::{
    BudgetKind, CriticContext, ForbiddenLiterals, LeverHistory, ReasonKind, review, touched_buckets,
};
use kiln_evolve::{
    AttributionSignature, Bucket, CapabilityEvidence, EvidencePointer, Manifest, PredictedImpact,
};
use kiln_harness::HarnessSpec;
use kiln_harness::spec::{SpecFormat, parse_spec};

fn spec(text: &str) -> HarnessSpec {
    parse_spec(text, SpecFormat::Toml).unwrap()
}

fn harness(max_steps: u32, template: &str) -> HarnessSpec {
    spec(&format!(
        r#"
name = "t"
[[processor]]
id = "system"
kind = "system_prompt"
config = {{ template = "{template}" }}
[[processor]]
id = "limit"
kind = "step_limit"
config = {{ max_steps = {max_steps} }}
"#
    ))
}

fn manifest(buckets: Vec<Bucket>, operator: &str, unlock: &[&str]) -> Manifest {
    Manifest {
        candidate_id: "C-R4-01".into(),
        buckets,
        operator: operator.into(),
        iterates_from: None,
        capability_evidence: vec![CapabilityEvidence {
            kind: "step_limit_hit".into(),
            claim: "episodes end at the step limit".into(),
            evidence: vec![EvidencePointer {
                run: "r3".into(),
                task: "s1".into(),
                attempt: 0,
                step: None,
            }],
        }],
        predicted_impact: PredictedImpact {
            tasks_will_unlock: unlock.iter().map(|s| s.to_string()).collect(),
            ..PredictedImpact::default()
        },
        attribution_signature: Some(AttributionSignature {
            kind: "prompt_feature".into(),
            name: "plan".into(),
            expected_min_calls: 1,
        }),
        rationale: String::new(),
    }
}

#[test]
fn a_small_widening_is_charged_with_before_and_after() {
    let verdict = review(
        &harness(30, "{instructions}"),
        &harness(40, "{instructions}"),
        Some(&manifest(vec![Bucket::Config], "raise_steps", &["s1"])),
        &CriticContext::default(),
    );
    assert!(verdict.accepted(), "{verdict:#?}");
    let change = &verdict.budget.changes[0];
    assert_eq!(change.kind, BudgetKind::StepLimit);
    assert_eq!(change.setting, "step_limit.max_steps");
    assert_eq!(
        (
            change.before.clone().unwrap(),
            change.after.clone().unwrap()
        ),
        (30.into(), 40.into())
    );
    // 0.02 + 0.05 · log2(40/30)
    let expected = 0.02 + 0.05 * (40.0f64 / 30.0).log2();
    assert!(
        (verdict.budget.charge - expected).abs() < 1e-12,
        "{:?}",
        verdict.budget
    );
    assert_eq!(verdict.touched_buckets, [Bucket::Config]);
}

#[test]
fn widening_accumulated_since_the_seed_is_rejected() {
    // The published hack: 30 → 40 → 50, each step small.
    let context = CriticContext {
        seed: Some(harness(30, "{instructions}")),
        ..CriticContext::default()
    };
    let verdict = review(
        &harness(40, "{instructions}"),
        &harness(50, "{instructions}"),
        Some(&manifest(vec![Bucket::Config], "raise_steps", &["s1"])),
        &context,
    );
    assert!(!verdict.accepted());
    assert!(
        verdict.kinds().contains(&ReasonKind::BudgetWidening),
        "{verdict:#?}"
    );
    assert!(
        verdict.budget.changes[0].note.contains("since the seed"),
        "{:?}",
        verdict.budget
    );
}

#[test]
fn narrowing_and_renaming_are_not_widening() {
    let parent = harness(50, "{instructions}");
    let renamed = spec(
        r#"
name = "t"
[[processor]]
id = "system"
kind = "system_prompt"
config = { template = "{instructions}" }
[[processor]]
id = "budget"
kind = "step_limit"
config = { max_steps = 45 }
"#,
    );
    let verdict = review(&parent, &renamed, None, &CriticContext::default());
    assert!(verdict.budget.changes.is_empty(), "{:?}", verdict.budget);
    assert!(verdict.accepted(), "{verdict:#?}");
    assert!(verdict.notes[0].contains("no manifest"));
}

#[test]
fn timeouts_and_tool_permissions_are_budgets() {
    let parent = spec(
        r#"
name = "t"
[[processor]]
id = "helper"
kind = "script"
config = { source = "event.reply = event.reply;", timeout_ms = 1000, allowed_tools = ["search"] }
"#,
    );
    let child = spec(
        r#"
name = "t"
[[processor]]
id = "helper"
kind = "script"
config = { source = "event.reply = event.reply;", timeout_ms = 60000, allowed_tools = ["search", "buy"] }
"#,
    );
    let verdict = review(&parent, &child, None, &CriticContext::default());
    let kinds: Vec<BudgetKind> = verdict.budget.changes.iter().map(|c| c.kind).collect();
    assert!(kinds.contains(&BudgetKind::Timeout), "{:?}", verdict.budget);
    assert!(
        kinds.contains(&BudgetKind::ToolPermission),
        "{:?}",
        verdict.budget
    );
    let timeout = verdict
        .budget
        .changes
        .iter()
        .find(|c| c.kind == BudgetKind::Timeout)
        .unwrap();
    assert!(timeout.rejected);
    let tools = verdict
        .budget
        .changes
        .iter()
        .find(|c| c.kind == BudgetKind::ToolPermission)
        .unwrap();
    assert!(!tools.rejected && tools.note.contains("buy") && tools.charge > 0.0);
}

#[test]
fn predictions_outside_the_search_split_are_rejected() {
    let context = CriticContext {
        search_split: Some(["s1", "s2"].map(String::from).into()),
        ..CriticContext::default()
    };
    let verdict = review(
        &harness(50, "{instructions}"),
        &harness(50, "{instructions} Plan first."),
        Some(&manifest(
            vec![Bucket::Prompt],
            "strategy_line",
            &["s1", "g7"],
        )),
        &context,
    );
    assert!(
        verdict.kinds().contains(&ReasonKind::NonSearchPrediction),
        "{verdict:#?}"
    );
    assert!(verdict.reasons.iter().any(|r| r.message.contains("g7")));
}

#[test]
fn a_fatigued_lever_is_rejected_with_a_strategy_concern() {
    let history = vec![LeverHistory {
        operator: "strategy_line".into(),
        shipped_rounds: vec![2, 3],
        hit_rate: 0.25,
    }];
    let mut context = CriticContext {
        lever_history: history,
        round: 4,
        ..CriticContext::default()
    };
    let parent = harness(50, "{instructions}");
    let child = harness(50, "{instructions} Plan first.");
    let candidate = manifest(vec![Bucket::Prompt], "strategy_line", &["s1"]);
    let verdict = review(&parent, &child, Some(&candidate), &context);
    assert_eq!(
        verdict.kinds().into_iter().collect::<Vec<_>>(),
        [ReasonKind::LeverFatigue]
    );
    assert!(
        verdict
            .strategy_concern
            .as_deref()
            .unwrap()
            .contains("strategy_line")
    );
    // A good hit rate, or shipping long ago, is no fatigue.
    context.lever_history[0].hit_rate = 0.6;
    assert!(review(&parent, &child, Some(&candidate), &context).accepted());
    context.lever_history[0].hit_rate = 0.25;
    context.round = 8;
    assert!(review(&parent, &child, Some(&candidate), &context).accepted());
}

#[test]
fn all_reasons_are_reported_not_only_the_first() {
    let mut forbidden = ForbiddenLiterals::new("tau2-retail");
    forbidden.add("#W6390527", "gold argument order_id", "5");
    let context = CriticContext {
        forbidden,
        ..CriticContext::default()
    };
    let verdict = review(
        &harness(50, "{instructions}"),
        &harness(200, "{instructions} Use {gold_actions}. Order #W6390527."),
        Some(&manifest(vec![Bucket::Prompt], "strategy_line", &["s1"])),
        &context,
    );
    let kinds = verdict.kinds();
    for expected in [
        ReasonKind::ReadsGold,
        ReasonKind::GoldLiteral,
        ReasonKind::BudgetWidening,
        ReasonKind::UndeclaredBucket,
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected:?} missing: {verdict:#?}"
        );
    }
    let json = serde_json::to_string(&verdict).unwrap();
    assert!(json.contains("\"decision\":\"reject\""), "{json}");
}

#[test]
fn no_change_is_rejected_and_buckets_come_from_the_diff() {
    let parent = harness(50, "{instructions}");
    let verdict = review(&parent, &parent.clone(), None, &CriticContext::default());
    assert!(verdict.kinds().contains(&ReasonKind::NoChange));
    let child = harness(50, "{instructions} Plan first.");
    assert_eq!(
        touched_buckets(&parent, &child)
            .into_iter()
            .collect::<Vec<_>>(),
        [Bucket::Prompt]
    );
}
