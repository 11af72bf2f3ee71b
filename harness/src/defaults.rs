//! The default harness files shipped in `harnesses/`, embedded in the binary.

use kiln_protocol::HarnessSpec;

use crate::spec::{SpecFormat, parse_spec};

/// `harnesses/tau2.toml`: τ²-bench (native tools, text fallback, policy in the system prompt).
pub const TAU2_TOML: &str = include_str!("../../harnesses/tau2.toml");
/// `harnesses/react-text.toml`: text-only ReAct tool calls for small models.
pub const REACT_TEXT_TOML: &str = include_str!("../../harnesses/react-text.toml");

/// `harnesses/small-model.toml`: compact prompt, ReAct text tools and admissible-action choice for
/// small local models.
pub const SMALL_MODEL_TOML: &str = include_str!("../../harnesses/small-model.toml");

/// `harnesses/scripts/loop-breaker.rhai`: visited-state tracking for environments that list
/// admissible actions (a repeated action in the same state becomes an untried admissible one).
/// Used by `harnesses/small-model-loop-breaker.toml`; an evolver inserts it as a `script`
/// processor with this text as `source`.
pub const LOOP_BREAKER_RHAI: &str = include_str!("../../harnesses/scripts/loop-breaker.rhai");

/// `harnesses/gaia.toml`: GAIA (official system prompt, native tools with a text fallback).
pub const GAIA_TOML: &str = include_str!("../../harnesses/gaia.toml");

/// The built-in harness files by name (`tau2`, `react-text`, `small-model`, `gaia`) and their
/// TOML text.
pub const BUILTIN_HARNESSES: [(&str, &str); 4] = [
    ("tau2", TAU2_TOML),
    ("react-text", REACT_TEXT_TOML),
    ("small-model", SMALL_MODEL_TOML),
    ("gaia", GAIA_TOML),
];

/// A built-in harness by name.
pub fn builtin_harness(name: &str) -> Option<HarnessSpec> {
    let (_, text) = BUILTIN_HARNESSES
        .iter()
        .find(|(builtin, _)| *builtin == name)?;
    Some(parse_builtin(text))
}

/// The harness a run uses when none is given: `tau2` for τ² environments, `gaia` for GAIA
/// datasets (`gaia:PATH`), `react-text` otherwise.
pub fn default_for_env(env_id: &str) -> HarnessSpec {
    if env_id.starts_with("tau2") {
        return parse_builtin(TAU2_TOML);
    }
    if env_id.starts_with("gaia:") {
        return parse_builtin(GAIA_TOML);
    }
    parse_builtin(REACT_TEXT_TOML)
}

/// The harness a run uses when none is given, for this model: small local models
/// (`local:…`) get `small-model` (compact prompt, text tools, admissible-action choice), whose
/// prompt fits their short context; other models get [`default_for_env`].
pub fn default_for_run(env_id: &str, model: &kiln_protocol::ModelSpec) -> HarnessSpec {
    if matches!(model, kiln_protocol::ModelSpec::Local { .. }) {
        return parse_builtin(SMALL_MODEL_TOML);
    }
    default_for_env(env_id)
}

fn parse_builtin(text: &str) -> HarnessSpec {
    // The embedded files are part of the source; the tests below validate each one.
    parse_spec(text, SpecFormat::Toml).expect("embedded harness files are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Harness;
    use kiln_protocol::Hook;

    #[test]
    fn local_models_get_the_small_model_harness_by_default() {
        let local: kiln_protocol::ModelSpec = "local:smollm2".parse().unwrap();
        assert_eq!(default_for_run("tau2-retail", &local).name, "small-model");
        let oracle = kiln_protocol::ModelSpec::Oracle;
        assert_eq!(default_for_run("tau2-retail", &oracle).name, "tau2");
    }

    #[test]
    fn every_builtin_harness_is_valid_and_named_after_its_file() {
        for (name, _) in BUILTIN_HARNESSES {
            let spec = builtin_harness(name).unwrap();
            assert_eq!(spec.name, name);
            Harness::new(&spec).unwrap();
        }
        assert!(builtin_harness("nope").is_none());
    }

    #[test]
    fn the_shipped_loop_breaker_compiles_and_runs_after_the_model() {
        let program = crate::builtin::script::compile::compile(
            LOOP_BREAKER_RHAI,
            &crate::builtin::script::ScriptLimits::DEFAULT,
        )
        .unwrap_or_else(|error| panic!("{error} at {:?}", error.location()));
        assert_eq!(
            program.hooks.iter().copied().collect::<Vec<_>>(),
            [Hook::AfterModel]
        );
    }

    #[test]
    fn tau2_environments_get_the_tau2_harness() {
        assert_eq!(default_for_env("tau2-retail").name, "tau2");
        assert_eq!(default_for_env("tau2-airline").name, "tau2");
        assert_eq!(default_for_env("alfworld").name, "react-text");
        assert_eq!(default_for_env("gaia:/data/gaia").name, "gaia");
    }

    #[test]
    fn the_tau2_harness_runs_its_processors_in_the_intended_order() {
        let harness = Harness::new(&default_for_env("tau2-retail")).unwrap();
        assert_eq!(
            harness.processors_at(Hook::TaskStart),
            ["tools", "system", "recorder"]
        );
        assert_eq!(harness.processors_at(Hook::AfterModel), ["parser", "retry"]);
        assert_eq!(harness.processors_at(Hook::StepStart), ["limit"]);
        assert_eq!(harness.processors_at(Hook::StepEnd), ["loops"]);
    }
}
