//! The `docker` sandbox: one container per episode running `kiln-env-server` with its stdio
//! attached, from the locally built image `kiln/env-server:<version>` (`ops/images`).
//!
//! Containers run with no network unless the task asks for one, memory / CPU / pids limits (swap
//! equal to memory, so the memory limit is real), a read-only root filesystem with a tmpfs at
//! `/tmp`, every capability dropped, `no-new-privileges`, a non-root user, `$KILN_HOME/data`
//! mounted read-only at `/kiln/data`, and the labels `kiln.run`, `kiln.worker`,
//! `kiln.sandbox=env-server`, `kiln.env` and `kiln.task`. The container is removed when the
//! episode closes it, when its environment is dropped, and otherwise by the reaper.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions,
    RemoveContainerOptions, StartContainerOptions,
};
use futures::StreamExt;
use kiln_environments::env_server::{ExitProbe, RemoteConfig, RemoteEnvironment};
use kiln_protocol::names::{LABEL_RUN, LABEL_WORKER, image_name};
use tokio::io::AsyncWriteExt;

use super::pool::WarmPool;
use super::stderr_tail::StderrTail;
use super::{
    Sandbox, SandboxError, SandboxErrorKind, SandboxLease, SandboxProvider, SandboxRequest,
};

/// Label marking Kiln's sandbox containers (value `env-server`).
pub const LABEL_SANDBOX: &str = "kiln.sandbox";
/// Label with the environment id.
pub const LABEL_ENV: &str = "kiln.env";
/// Label with the task id.
pub const LABEL_TASK: &str = "kiln.task";
/// Where the image puts the binary (see `ops/images`).
pub const CONTAINER_BINARY: &str = "/usr/local/bin/kiln-env-server";
/// Kiln's data root inside the container; the host's `$KILN_HOME/data` is mounted at `/kiln/data`.
pub const CONTAINER_DATA_ROOT: &str = "/kiln";
/// The image's non-root user (uid:gid).
pub const SANDBOX_USER: &str = "65532:65532";

/// The env-server image of this Kiln version: `kiln/env-server:<version>`.
pub fn default_image() -> String {
    image_name("env-server", env!("CARGO_PKG_VERSION"))
}

/// Resource limits of one sandbox container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerLimits {
    /// Memory limit (and memory+swap limit) in MiB.
    pub memory_mib: u64,
    /// CPUs (fractional allowed).
    pub cpus: f64,
    /// Maximum number of processes/threads.
    pub pids: i64,
    /// Size of the `/tmp` tmpfs in MiB.
    pub tmpfs_mib: u64,
}

impl Default for ContainerLimits {
    fn default() -> Self {
        Self {
            memory_mib: 1024,
            cpus: 1.0,
            pids: 256,
            tmpfs_mib: 64,
        }
    }
}

/// How a [`DockerProvider`] creates containers.
#[derive(Debug, Clone)]
pub struct DockerSandboxConfig {
    /// Image to run; default [`default_image`].
    pub image: String,
    /// Value of the `kiln.worker` label; the reaper removes containers by it.
    pub worker_id: String,
    /// The host's Kiln data root (`$KILN_HOME`); `<data_dir>/data` is mounted read-only.
    pub data_dir: PathBuf,
    pub limits: ContainerLimits,
    /// User the env-server runs as (`uid:gid`); default the image's non-root user.
    pub user: String,
    /// How long a started container gets to say hello.
    pub hello_timeout: Duration,
    /// Containers kept started and waiting (0 = no warm pool; every episode starts its own).
    pub warm_pool: usize,
    /// `kiln.run` label of warm-pool containers: they are started before any task, so they cannot
    /// carry the run id. `kiln.worker` is always set, so [`super::reap`] covers them.
    pub pool_run_label: String,
}

impl DockerSandboxConfig {
    /// Defaults: [`default_image`], [`ContainerLimits::default`], user [`SANDBOX_USER`], 30 s hello
    /// timeout, no warm pool.
    pub fn new(worker_id: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            image: default_image(),
            worker_id: worker_id.into(),
            data_dir: data_dir.into(),
            limits: ContainerLimits::default(),
            user: SANDBOX_USER.to_string(),
            hello_timeout: Duration::from_secs(30),
            warm_pool: 0,
            pool_run_label: "warm-pool".to_string(),
        }
    }
}

/// A Docker client with the API version negotiated (the daemon here speaks 1.41).
pub async fn connect_docker() -> Result<Docker, SandboxError> {
    let docker = Docker::connect_with_local_defaults().map_err(|error| {
        SandboxError::new(
            SandboxErrorKind::DockerUnavailable,
            format!("cannot connect to the Docker daemon: {error}"),
        )
    })?;
    docker.negotiate_version().await.map_err(|error| {
        SandboxError::new(
            SandboxErrorKind::DockerUnavailable,
            format!("the Docker daemon is not answering ({error}); is it running?"),
        )
    })
}

/// The container spec for `request`: limits, security settings, labels, network, mount. Pure, so
/// the settings are testable without a daemon.
pub fn container_body(
    config: &DockerSandboxConfig,
    request: &SandboxRequest,
) -> ContainerCreateBody {
    let limits = config.limits;
    let memory = (limits.memory_mib * 1024 * 1024) as i64;
    let labels = HashMap::from([
        (LABEL_RUN.to_string(), request.run_id.clone()),
        (LABEL_WORKER.to_string(), config.worker_id.clone()),
        (LABEL_SANDBOX.to_string(), "env-server".to_string()),
        (LABEL_ENV.to_string(), request.env.clone()),
        (LABEL_TASK.to_string(), request.task_id.clone()),
    ]);
    let host_data = config.data_dir.join("data");
    let binds = host_data.is_dir().then(|| {
        vec![format!(
            "{}:{CONTAINER_DATA_ROOT}/data:ro",
            host_data.display()
        )]
    });
    let host_config = HostConfig {
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some((limits.cpus * 1e9) as i64),
        pids_limit: Some(limits.pids),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,size={}m", limits.tmpfs_mib),
        )])),
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        network_mode: Some(
            request
                .network
                .clone()
                .unwrap_or_else(|| "none".to_string()),
        ),
        binds,
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(config.image.clone()),
        cmd: Some(vec![
            CONTAINER_BINARY.to_string(),
            "--data-dir".to_string(),
            CONTAINER_DATA_ROOT.to_string(),
        ]),
        user: Some(config.user.clone()),
        env: Some(vec!["KILN_LOG=info".to_string()]),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // The env-server sees EOF when the host's attach ends, and exits.
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Creates, attaches and starts containers; shared by the provider and its warm pool.
pub(crate) struct ContainerStarter {
    pub(crate) docker: Docker,
    pub(crate) config: DockerSandboxConfig,
}

/// A started container and whether its output stream is still open.
pub(crate) struct Started {
    pub(crate) sandbox: Sandbox,
    pub(crate) alive: Arc<AtomicBool>,
}

impl ContainerStarter {
    /// create → attach → start → hello. A container that fails any step is removed.
    pub(crate) async fn start(&self, request: &SandboxRequest) -> Result<Started, SandboxError> {
        let body = container_body(&self.config, request);
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|error| {
                let kind = if is_not_found(&error) {
                    SandboxErrorKind::ImageMissing
                } else {
                    SandboxErrorKind::Start
                };
                SandboxError::new(
                    kind,
                    format!(
                        "cannot create a container from {}: {error}{}",
                        self.config.image,
                        if kind == SandboxErrorKind::ImageMissing {
                            "; build the image with ops/images"
                        } else {
                            ""
                        }
                    ),
                )
            })?;
        let mut lease = DockerLease::new(self.docker.clone(), created.id.clone());
        match self.attach_and_start(&created.id).await {
            Ok(started) => Ok(Started {
                sandbox: Sandbox {
                    remote: started.0,
                    lease: Box::new(lease),
                },
                alive: started.1,
            }),
            Err(error) => {
                lease.release(false).await;
                Err(error)
            }
        }
    }

    async fn attach_and_start(
        &self,
        id: &str,
    ) -> Result<(RemoteEnvironment, Arc<AtomicBool>), SandboxError> {
        let short = short_id(id);
        let attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(|error| {
                SandboxError::new(
                    SandboxErrorKind::Start,
                    format!("cannot attach to container {short}: {error}"),
                )
            })?;
        let tail = Arc::new(StderrTail::default());
        let alive = Arc::new(AtomicBool::new(true));
        let (mut pipe_in, pipe_out) = tokio::io::duplex(1 << 20);
        let mut output = attached.output;
        let collector = tail.clone();
        let still_alive = alive.clone();
        let source = format!("container {short}");
        tokio::spawn(async move {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message }) => {
                        if pipe_in.write_all(&message).await.is_err() {
                            break;
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => collector.push(&message, &source),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(sandbox = %source, %error, "attach stream ended");
                        break;
                    }
                }
            }
            still_alive.store(false, Ordering::SeqCst);
        });
        self.docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|error| {
                SandboxError::new(
                    SandboxErrorKind::Start,
                    format!("cannot start container {short}: {error}"),
                )
            })?;
        let probe = Arc::new(ContainerProbe {
            docker: self.docker.clone(),
            id: id.to_string(),
            tail,
            memory_mib: self.config.limits.memory_mib,
        });
        let config = RemoteConfig {
            call_timeout: self.config.hello_timeout,
            ..RemoteConfig::default()
        };
        let remote =
            RemoteEnvironment::connect_with_probe(pipe_out, attached.input, config, Some(probe))
                .await
                .map_err(|error| {
                    SandboxError::new(
                        SandboxErrorKind::Handshake,
                        format!("container {short} from {}: {error}", self.config.image),
                    )
                })?;
        Ok((remote, alive))
    }
}

/// Runs each episode's environment in its own container, from the warm pool when one is ready.
pub struct DockerProvider {
    starter: Arc<ContainerStarter>,
    pool: Option<WarmPool>,
}

impl DockerProvider {
    /// Connects to the daemon (negotiating the API version), checks that the image exists, and
    /// starts the warm pool if `config.warm_pool > 0`.
    pub async fn connect(config: DockerSandboxConfig) -> Result<Self, SandboxError> {
        let docker = connect_docker().await?;
        if let Err(error) = docker.inspect_image(&config.image).await {
            let kind = if is_not_found(&error) {
                SandboxErrorKind::ImageMissing
            } else {
                SandboxErrorKind::Docker
            };
            return Err(SandboxError::new(
                kind,
                format!(
                    "image {} is not available ({error}); build it with ops/images",
                    config.image
                ),
            ));
        }
        let wanted = config.warm_pool;
        let starter = Arc::new(ContainerStarter { docker, config });
        let pool = (wanted > 0).then(|| WarmPool::start(starter.clone(), wanted));
        Ok(Self { starter, pool })
    }

    pub fn docker(&self) -> &Docker {
        &self.starter.docker
    }

    pub fn config(&self) -> &DockerSandboxConfig {
        &self.starter.config
    }

    /// A new container for `request`, bypassing the warm pool.
    pub async fn start_cold(&self, request: &SandboxRequest) -> Result<Sandbox, SandboxError> {
        Ok(self.starter.start(request).await?.sandbox)
    }

    /// A ready container from the warm pool, if one is waiting (never blocks on a start).
    pub fn take_warm(&self) -> Option<Sandbox> {
        self.pool.as_ref()?.take()
    }

    /// Containers waiting in the warm pool.
    pub fn warm_ready(&self) -> usize {
        self.pool.as_ref().map_or(0, WarmPool::ready)
    }

    /// Waits until the warm pool holds `count` ready containers or `limit` passes; returns the
    /// number ready.
    pub async fn wait_warm(&self, count: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        while self.warm_ready() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.warm_ready()
    }

    /// Stops refilling the warm pool and removes its waiting containers.
    pub async fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown().await;
        }
    }

    /// Removes every container labelled with this provider's worker id (see [`super::reap`]).
    pub async fn reap_own(&self) -> Result<usize, SandboxError> {
        super::reap(self.docker(), &self.starter.config.worker_id).await
    }
}

#[async_trait]
impl SandboxProvider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// A warm container when the task needs no network and one is ready; otherwise a cold start.
    async fn acquire(&self, request: &SandboxRequest) -> Result<Sandbox, SandboxError> {
        if request.network.is_none()
            && let Some(sandbox) = self.take_warm()
        {
            return Ok(sandbox);
        }
        self.start_cold(request).await
    }
}

/// Explains how a container ended: killed for memory, its exit code, its last stderr lines.
struct ContainerProbe {
    docker: Docker,
    id: String,
    tail: Arc<StderrTail>,
    memory_mib: u64,
}

#[async_trait]
impl ExitProbe for ContainerProbe {
    async fn describe_exit(&self) -> Option<String> {
        let short = short_id(&self.id);
        let deadline = Instant::now() + Duration::from_secs(3);
        let state = loop {
            let inspected = match self
                .docker
                .inspect_container(&self.id, None::<InspectContainerOptions>)
                .await
            {
                Ok(inspected) => inspected,
                Err(error) => {
                    return Some(format!("container {short} cannot be inspected: {error}"));
                }
            };
            let state = inspected.state.unwrap_or_default();
            if state.running != Some(true) || Instant::now() >= deadline {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let status = if state.running == Some(true) {
            format!("container {short} is still running")
        } else if state.oom_killed == Some(true) {
            format!(
                "container {short} was killed for memory (limit {} MiB)",
                self.memory_mib
            )
        } else {
            match state.exit_code {
                Some(code) => format!("container {short} exited with code {code}"),
                None => format!("container {short} stopped"),
            }
        };
        Some(match self.tail.summary() {
            Some(stderr) => format!("{status}; last stderr: {stderr}"),
            None => status,
        })
    }
}

/// Removes its container on release, or in the background when dropped unreleased.
pub(crate) struct DockerLease {
    docker: Docker,
    id: String,
    released: bool,
}

impl DockerLease {
    fn new(docker: Docker, id: String) -> Self {
        Self {
            docker,
            id,
            released: false,
        }
    }
}

#[async_trait]
impl SandboxLease for DockerLease {
    fn describe(&self) -> String {
        format!("container {}", short_id(&self.id))
    }

    async fn release(&mut self, _clean: bool) {
        if self.released {
            return;
        }
        self.released = true;
        remove_container(&self.docker, &self.id).await;
    }
}

impl Drop for DockerLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (docker, id) = (self.docker.clone(), self.id.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { remove_container(&docker, &id).await });
            }
            Err(_) => tracing::warn!(
                container = %short_id(&self.id),
                "sandbox container dropped outside a runtime; left for the reaper"
            ),
        }
    }
}

/// Force-removes a container (and its anonymous volumes); a container already gone is fine.
pub(crate) async fn remove_container(docker: &Docker, id: &str) -> bool {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => true,
        Err(error) if is_not_found(&error) => true,
        Err(error) => {
            tracing::warn!(container = %short_id(id), %error, "cannot remove sandbox container");
            false
        }
    }
}

pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

pub(crate) fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_spec_is_locked_down_and_labelled() {
        let data = tempfile_dir();
        let mut config = DockerSandboxConfig::new("w1", &data);
        config.limits.memory_mib = 256;
        config.limits.cpus = 0.5;
        let request = SandboxRequest {
            run_id: "run-9".into(),
            task_id: "7".into(),
            env: "tau2-retail".into(),
            network: None,
        };
        let body = container_body(&config, &request);
        let host = body.host_config.clone().unwrap();
        assert_eq!(host.memory, Some(256 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(host.tmpfs.unwrap()["/tmp"].contains("size=64m"));
        assert_eq!(
            host.binds,
            Some(vec![format!("{}/data:/kiln/data:ro", data.display())])
        );
        assert_eq!(body.user.as_deref(), Some(SANDBOX_USER));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_RUN], "run-9");
        assert_eq!(labels[LABEL_WORKER], "w1");
        assert_eq!(labels[LABEL_SANDBOX], "env-server");

        let networked = container_body(
            &config,
            &SandboxRequest {
                network: Some("bridge".into()),
                ..request
            },
        );
        assert_eq!(
            networked.host_config.unwrap().network_mode.as_deref(),
            Some("bridge")
        );
        let _ = std::fs::remove_dir_all(&data);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-sandbox-spec-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        dir
    }
}
