//! The `process` sandbox: `kiln-env-server` as a local subprocess. It isolates crashes (a
//! crashing or hung environment costs its process, not the worker) but not resources or files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_environments::env_server::{ExitProbe, RemoteConfig, RemoteEnvironment};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::stderr_tail::StderrTail;
use super::{
    Sandbox, SandboxError, SandboxErrorKind, SandboxLease, SandboxProvider, SandboxRequest,
};

/// The env-server binary's file name.
pub const ENV_SERVER_BINARY: &str = "kiln-env-server";

/// How long a process gets to exit on its own (after `close`, or after breaking the connection)
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Starts `kiln-env-server --data-dir DIR` subprocesses.
pub struct ProcessProvider {
    binary: PathBuf,
    data_dir: PathBuf,
    hello_timeout: Duration,
}

impl ProcessProvider {
    /// `binary`: the env-server to run; None looks next to the current executable (and its parent
    /// folder, where cargo puts binaries for test executables), then on `PATH`. `data_dir` is
    /// Kiln's data root (`$KILN_HOME`).
    pub fn new(
        binary: Option<PathBuf>,
        data_dir: impl Into<PathBuf>,
    ) -> Result<Self, SandboxError> {
        let binary = match binary {
            Some(binary) if binary.is_file() => binary,
            Some(binary) => {
                return Err(SandboxError::new(
                    SandboxErrorKind::BinaryMissing,
                    format!("env-server binary {} does not exist", binary.display()),
                ));
            }
            None => locate_env_server().ok_or_else(|| {
                SandboxError::new(
                    SandboxErrorKind::BinaryMissing,
                    format!(
                        "{ENV_SERVER_BINARY} not found next to {} nor on PATH; build it with `cargo build -p kiln-environments --bin {ENV_SERVER_BINARY}`",
                        std::env::current_exe()
                            .map(|exe| exe.display().to_string())
                            .unwrap_or_else(|_| "the current executable".into())
                    ),
                )
            })?,
        };
        Ok(Self {
            binary,
            data_dir: data_dir.into(),
            hello_timeout: Duration::from_secs(30),
        })
    }

    /// The binary this provider runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

/// `kiln-env-server` next to the current executable, in its parent folder, or on `PATH`.
pub fn locate_env_server() -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for candidate in [
            dir.join(ENV_SERVER_BINARY),
            dir.join("..").join(ENV_SERVER_BINARY),
        ] {
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(ENV_SERVER_BINARY))
        .find(|candidate| candidate.is_file())
}

#[async_trait]
impl SandboxProvider for ProcessProvider {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn acquire(&self, request: &SandboxRequest) -> Result<Sandbox, SandboxError> {
        if let Some(network) = &request.network {
            tracing::debug!(%network, "process sandboxes share the host network; network option ignored");
        }
        let mut child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("KILN_RUN", &request.run_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                SandboxError::new(
                    SandboxErrorKind::Start,
                    format!("cannot start {}: {error}", self.binary.display()),
                )
            })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SandboxError::new(
                SandboxErrorKind::Start,
                "the env-server's stdio pipes were not created",
            ));
        };
        let tail = Arc::new(StderrTail::default());
        let source = format!("process {pid}");
        let collector = tail.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stderr.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                collector.push(&buffer[..read], &source);
            }
        });
        let child = Arc::new(Mutex::new(child));
        let probe = Arc::new(ProcessProbe {
            child: child.clone(),
            tail,
        });
        let config = RemoteConfig {
            call_timeout: self.hello_timeout,
            ..RemoteConfig::default()
        };
        let mut lease = ProcessLease { child, pid };
        match RemoteEnvironment::connect_with_probe(stdout, stdin, config, Some(probe)).await {
            Ok(remote) => Ok(Sandbox {
                remote,
                lease: Box::new(lease),
            }),
            Err(error) => {
                lease.release(false).await;
                Err(SandboxError::new(
                    SandboxErrorKind::Handshake,
                    format!("{} (process {pid}): {error}", self.binary.display()),
                ))
            }
        }
    }
}

/// Explains how a subprocess ended: exit status and last stderr lines.
struct ProcessProbe {
    child: Arc<Mutex<Child>>,
    tail: Arc<StderrTail>,
}

#[async_trait]
impl ExitProbe for ProcessProbe {
    async fn describe_exit(&self) -> Option<String> {
        let waited = {
            let mut child = self.child.lock().await;
            tokio::time::timeout(EXIT_GRACE, child.wait()).await
        };
        let status = match waited {
            Ok(Ok(status)) => describe_status(status),
            Ok(Err(error)) => format!("exit status unknown: {error}"),
            Err(_) => "the process is still running".to_string(),
        };
        // Let the stderr collector catch the last lines written before the exit.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some(match self.tail.summary() {
            Some(stderr) => format!("{status}; last stderr: {stderr}"),
            None => status,
        })
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("the process was killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("the process exited with status {code}"),
        None => format!("the process ended: {status}"),
    }
}

/// Waits for the process to exit after `close`, killing it after [`EXIT_GRACE`]. On drop the
/// child is killed (`kill_on_drop`).
struct ProcessLease {
    child: Arc<Mutex<Child>>,
    pid: u32,
}

#[async_trait]
impl SandboxLease for ProcessLease {
    fn describe(&self) -> String {
        format!("process {}", self.pid)
    }

    async fn release(&mut self, clean: bool) {
        let mut child = self.child.lock().await;
        if clean && let Ok(Ok(_)) = tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            return;
        }
        if let Err(error) = child.kill().await {
            tracing::warn!(pid = self.pid, %error, "cannot kill the env-server process");
        }
    }
}
