//! The reaper: removes Kiln's sandbox containers by label. A worker reaps its own id at start
//! (containers a previous incarnation left when it crashed) and after a crash of a slot; a run can
//! be reaped by id when it ends.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use kiln_protocol::names::{LABEL_RUN, LABEL_WORKER};

use super::docker::{remove_container, short_id};
use super::{SandboxError, SandboxErrorKind};

/// Removes every container (running or not) labelled `kiln.worker=<worker_id>`; returns how many
/// were removed.
pub async fn reap(docker: &Docker, worker_id: &str) -> Result<usize, SandboxError> {
    reap_labelled(docker, &format!("{LABEL_WORKER}={worker_id}")).await
}

/// Removes every container labelled `kiln.run=<run_id>`, whichever worker started it.
pub async fn reap_run(docker: &Docker, run_id: &str) -> Result<usize, SandboxError> {
    reap_labelled(docker, &format!("{LABEL_RUN}={run_id}")).await
}

/// Ids of the containers carrying `label` (`key=value`).
pub async fn labelled_containers(
    docker: &Docker,
    label: &str,
) -> Result<Vec<String>, SandboxError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![label.to_string()],
        )])),
        ..Default::default()
    };
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(|error| {
            SandboxError::new(
                SandboxErrorKind::Docker,
                format!("cannot list containers labelled {label}: {error}"),
            )
        })?;
    Ok(listed
        .into_iter()
        .filter_map(|summary| summary.id)
        .collect())
}

async fn reap_labelled(docker: &Docker, label: &str) -> Result<usize, SandboxError> {
    let ids = labelled_containers(docker, label).await?;
    let mut removed = 0;
    for id in &ids {
        if remove_container(docker, id).await {
            tracing::info!(container = %short_id(id), %label, "reaped sandbox container");
            removed += 1;
        }
    }
    Ok(removed)
}
