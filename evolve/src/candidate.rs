//! Candidates: what an evolver proposes and what the critic and the gate judge.
//!
//! A candidate is a list of substitution-algebra edits ([`HarnessEdit`]) applied to a parent
//! harness, plus a [`Manifest`] saying why (evidence), what it should change (predicted flips) and
//! how to tell afterwards whether it fired (attribution signature). The manifest is the evolver's
//! claim; the critic trusts nothing in it that it can compute from the edits themselves (budget
//! changes, for one, come from the config diff).

use kiln_harness::HarnessEdit;
use serde::{Deserialize, Serialize};

/// The lever an edit pulls; hit rates are kept per bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    /// System prompt, strategy lines, few-shot demonstrations.
    Prompt,
    /// The tool catalogue: tools added, removed or described differently.
    Tools,
    /// Settings of existing processors (history window, decoding, admissible choice, limits).
    Config,
    /// New or replaced processors, scripts included.
    Processor,
}

/// Where in the stored rollouts a piece of evidence is: `run/task/attempt/step`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EvidencePointer {
    pub run: String,
    pub task: String,
    pub attempt: u32,
    /// None when the evidence is the whole episode (its outcome or termination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

impl std::fmt::Display for EvidencePointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.run, self.task, self.attempt)?;
        if let Some(step) = self.step {
            write!(f, "/{step}")?;
        }
        Ok(())
    }
}

/// One claim about the parent's capability, backed by trace evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapabilityEvidence {
    /// The failure signature or category the claim is about (e.g. `repeated_action_loop`).
    #[serde(rename = "type")]
    pub kind: String,
    pub claim: String,
    #[serde(default)]
    pub evidence: Vec<EvidencePointer>,
}

/// Which tasks the evolver expects to flip. Task ids are the benchmark's own, as strings; they
/// name search-split tasks only (the critic rejects gate or held-out ids here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredictedImpact {
    #[serde(default)]
    pub tasks_will_unlock: Vec<String>,
    #[serde(default)]
    pub tasks_will_stabilize: Vec<String>,
    #[serde(default)]
    pub tasks_at_risk: Vec<String>,
}

/// How the next round's traces show the edit fired: a processor that must run, or a tool that
/// must be called, at least `expected_min_calls` times per episode where it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributionSignature {
    /// `processor_invocation`, `tool_call` or `prompt_feature`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub expected_min_calls: u32,
}

/// The evolver's account of a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// `C-R{round}-{NN}`.
    pub candidate_id: String,
    pub buckets: Vec<Bucket>,
    /// The operator (rules evolver) or `llm` that produced it; lever fatigue is kept per operator.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterates_from: Option<String>,
    #[serde(default)]
    pub capability_evidence: Vec<CapabilityEvidence>,
    #[serde(default)]
    pub predicted_impact: PredictedImpact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution_signature: Option<AttributionSignature>,
    /// Free text: what the edit does and why.
    #[serde(default)]
    pub rationale: String,
}

/// A proposed harness change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub manifest: Manifest,
    /// Applied in order to the parent with [`kiln_harness::apply_edits`].
    pub edits: Vec<HarnessEdit>,
}

impl Candidate {
    /// The candidate's id, from its manifest.
    pub fn id(&self) -> &str {
        &self.manifest.candidate_id
    }
}

/// The canonical candidate id for round `round`, position `index` (0-based): `C-R3-01`.
pub fn candidate_id(round: u32, index: usize) -> String {
    format!("C-R{round}-{:02}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_ids_follow_the_manifest_convention() {
        assert_eq!(candidate_id(3, 0), "C-R3-01");
        assert_eq!(candidate_id(12, 10), "C-R12-11");
    }

    #[test]
    fn evidence_pointers_print_as_run_task_attempt_step() {
        let pointer = EvidencePointer {
            run: "r1".into(),
            task: "7".into(),
            attempt: 1,
            step: Some(4),
        };
        assert_eq!(pointer.to_string(), "r1/7/1/4");
        let whole = EvidencePointer {
            step: None,
            ..pointer
        };
        assert_eq!(whole.to_string(), "r1/7/1");
    }

    #[test]
    fn a_manifest_round_trips_through_json() {
        let manifest = Manifest {
            candidate_id: candidate_id(1, 0),
            buckets: vec![Bucket::Prompt, Bucket::Config],
            operator: "strategy_line".into(),
            iterates_from: None,
            capability_evidence: vec![],
            predicted_impact: PredictedImpact {
                tasks_will_unlock: vec!["12".into()],
                ..Default::default()
            },
            attribution_signature: Some(AttributionSignature {
                kind: "processor_invocation".into(),
                name: "visited".into(),
                expected_min_calls: 1,
            }),
            rationale: "test".into(),
        };
        let text = serde_json::to_string(&manifest).unwrap();
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, manifest);
        assert!(text.contains("\"type\":\"processor_invocation\""));
    }
}
