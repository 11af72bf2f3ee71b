//! The environments Kiln knows, by id: what `kiln envs` lists and what `--env` accepts.
//!
//! Factories load their data lazily, so listing them is cheap; [`open`] loads eagerly so that a
//! missing installation is reported before any work is dispatched.

use std::sync::Arc;

use crate::agentgym;
use crate::alfworld::{self, AlfworldFactory};
use crate::faults;
use crate::tau2::Domain;
use crate::tau2::env::{Tau2Factory, env_id};
use crate::webshop::WebShopFactory;
use crate::{EnvContext, EnvError, EnvErrorKind, EnvironmentFactory};

/// Every environment id, in listing order (AgentGym servers, `agentgym:<name>@<url>`, and GAIA
/// datasets, `gaia:PATH`, are not listed: they need a URL or a path).
pub fn known_ids() -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = TAU2_DOMAINS.iter().map(|domain| env_id(*domain)).collect();
    ids.push(alfworld::ENV_ID);
    ids.push(crate::webshop::ENV_ID);
    ids.push(faults::ENV_ID);
    ids
}

const TAU2_DOMAINS: [Domain; 2] = [Domain::Retail, Domain::Airline];

/// One factory per known environment. Their data is loaded on first use; a factory whose data is
/// missing lists no splits and fails `create`/`task_ids` with a [`EnvErrorKind::Data`] error.
pub fn factories(ctx: &EnvContext) -> Vec<Arc<dyn EnvironmentFactory>> {
    let mut factories: Vec<Arc<dyn EnvironmentFactory>> = TAU2_DOMAINS
        .iter()
        .map(|domain| Arc::new(Tau2Factory::new(*domain, ctx)) as Arc<dyn EnvironmentFactory>)
        .collect();
    factories.push(Arc::new(AlfworldFactory::new(ctx)));
    factories.push(Arc::new(WebShopFactory::new()));
    factories.push(Arc::new(faults::FaultsFactory));
    factories
}

/// The factory of `env_id`, with its data loaded. Unknown ids are [`EnvErrorKind::UnknownEnv`]
/// (listing the known ids); missing data is [`EnvErrorKind::Data`] saying which `ops/setup`
/// component to run. `agentgym:<env>@<url>` opens a client for an AgentGym server (no I/O here).
pub fn open(
    env_id_wanted: &str,
    ctx: &EnvContext,
) -> Result<Arc<dyn EnvironmentFactory>, EnvError> {
    if agentgym::is_agentgym(env_id_wanted) {
        return agentgym::open(env_id_wanted);
    }
    if crate::gaia::is_gaia(env_id_wanted) {
        return Ok(Arc::new(crate::gaia::GaiaFactory::open(env_id_wanted)?));
    }
    if env_id_wanted == alfworld::ENV_ID {
        let factory = AlfworldFactory::new(ctx);
        factory.generator()?;
        return Ok(Arc::new(factory));
    }
    if env_id_wanted == crate::webshop::ENV_ID {
        let factory = WebShopFactory::new();
        // Generate the catalog now, as `open` loads every environment's data eagerly.
        let _ = factory.shop();
        return Ok(Arc::new(factory));
    }
    if env_id_wanted == faults::ENV_ID {
        return Ok(Arc::new(faults::FaultsFactory));
    }
    let Some(domain) = TAU2_DOMAINS
        .into_iter()
        .find(|domain| env_id(*domain) == env_id_wanted)
    else {
        return Err(EnvError::new(
            EnvErrorKind::UnknownEnv,
            format!(
                "unknown environment `{env_id_wanted}`; known environments: {}",
                known_ids().join(", ")
            ),
        ));
    };
    let factory = Tau2Factory::new(domain, ctx);
    factory.data()?;
    Ok(Arc::new(factory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_list_the_known_ones() {
        let error = open("tau3-retail", &EnvContext::default()).err().unwrap();
        assert_eq!(error.kind(), EnvErrorKind::UnknownEnv);
        assert!(
            error
                .to_string()
                .contains("tau2-retail, tau2-airline, alfworld, webshop, debug-faults"),
            "{error}"
        );
    }

    #[test]
    fn missing_data_is_reported_at_open_and_listing_still_works() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = EnvContext {
            data_dir: dir.path().to_path_buf(),
            ..EnvContext::default()
        };
        let error = open("tau2-retail", &ctx).err().unwrap();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(error.to_string().contains("run ops/setup tau2"), "{error}");

        let listed = factories(&ctx);
        let ids: Vec<&str> = listed.iter().map(|factory| factory.id()).collect();
        assert_eq!(
            ids,
            [
                "tau2-retail",
                "tau2-airline",
                "alfworld",
                "webshop",
                "debug-faults"
            ]
        );
        assert!(listed[0].splits().is_empty());
        assert_eq!(
            listed[0].task_ids("test").unwrap_err().kind(),
            EnvErrorKind::Data
        );
        assert_eq!(
            listed[1]
                .create(&serde_json::Value::Null)
                .err()
                .unwrap()
                .kind(),
            EnvErrorKind::Data
        );
    }

    #[test]
    fn agentgym_ids_name_a_server() {
        let target = agentgym::parse_target("agentgym:webshop@http://127.0.0.1:36001").unwrap();
        assert_eq!(target.env, "webshop");
        assert_eq!(target.url, "http://127.0.0.1:36001");
        assert!(!agentgym::is_agentgym("webshop"));
        let factory = open(
            "agentgym:webshop@http://127.0.0.1:36001/",
            &EnvContext::default(),
        )
        .unwrap();
        assert_eq!(factory.id(), "agentgym:webshop@http://127.0.0.1:36001");
        assert_eq!(factory.task_ids("test").unwrap().len(), 500);
        for bad in [
            "agentgym:webshop",
            "agentgym:nope@http://x",
            "agentgym:webshop@ftp://x",
        ] {
            let error = open(bad, &EnvContext::default()).err().unwrap();
            assert!(
                matches!(
                    error.kind(),
                    EnvErrorKind::UnknownEnv | EnvErrorKind::InvalidOptions
                ),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn evolution_sources_name_real_splits_and_keep_held_out_apart() {
        let ctx = EnvContext {
            data_dir: crate::default_data_dir(),
            ..EnvContext::default()
        };
        for id in ["alfworld", "webshop", "tau2-retail", "tau2-airline"] {
            let Ok(factory) = open(id, &ctx) else {
                // tau2/alfworld data comes from ops/setup; CI installs it.
                assert!(std::env::var("CI").is_err(), "{id}: data missing in CI");
                eprintln!("skipping {id}: data not installed");
                continue;
            };
            let sources = factory.evolution_sources().expect(id);
            assert_ne!(sources.held_out, sources.search, "{id}");
            assert_ne!(sources.held_out, sources.gate, "{id}");
            for split in [&sources.search, &sources.gate, &sources.held_out] {
                assert!(!factory.task_ids(split).unwrap().is_empty(), "{id}/{split}");
            }
        }
        assert!(faults::FaultsFactory.evolution_sources().is_none());
        let alfworld = open("alfworld", &ctx);
        if let Ok(alfworld) = alfworld {
            assert_eq!(
                alfworld.task_cluster("train/pick_heat_then_place_in_recep/0003"),
                "pick_heat_then_place_in_recep"
            );
            assert_eq!(alfworld.task_cluster("nonsense"), "");
        }
    }
}
