//! A real `nats-server` for tests: JetStream on, a free loopback port, its own store directory,
//! killed on drop.
//!
//! Tests that need NATS start one of these instead of assuming a server is running, and fail
//! loudly (never skip) when the binary from `ops/setup nats` is missing, so CI cannot pass
//! without exercising the real server. Public so the coordinator's and the CLI's tests can use
//! the same helper.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a started server gets to accept connections before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Payload limit of the test server. Trajectories can exceed the server's 1 MiB default; the
/// transport sends results uncompressed, so deployments raise `max_payload` the same way.
pub const TEST_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// A running `nats-server -js` on 127.0.0.1, owned by one test.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free loopback port with a fresh store directory and waits until it
    /// accepts connections.
    ///
    /// Panics when `$KILN_HOME/bin/nats-server` is missing (run `ops/setup nats`) or the server
    /// does not come up: a test that needs NATS must not pass without it.
    pub fn start() -> Self {
        let binary = nats_server_binary();
        assert!(
            binary.is_file(),
            "nats-server not found at {}: run ops/setup nats",
            binary.display()
        );
        let dir = fresh_dir();
        let port = free_port();
        write_config(&dir);
        let mut server = Self {
            binary,
            port,
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across restarts, removed on drop).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Kills the server and starts it again on the same port with the same store, as a crash
    /// and recovery would; JetStream state on disk survives.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server without starting it again (until [`NatsServer::restart`]).
    pub fn stop(&mut self) {
        self.kill();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).expect("create server log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.join("server.conf"))
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server exited with {status} before accepting connections:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "nats-server did not accept connections on port {} within {READY_TIMEOUT:?}:\n{}",
            self.port,
            self.log()
        );
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `$KILN_HOME/bin/nats-server`, with `KILN_HOME` defaulting to `~/.cache/kiln` as in `ops/setup`.
pub fn nats_server_binary() -> PathBuf {
    kiln_home().join("bin").join("nats-server")
}

fn kiln_home() -> PathBuf {
    if let Some(home) = std::env::var_os("KILN_HOME") {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache").join("kiln")
}

/// A port the OS just handed out on loopback; free unless another process races for it.
fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port for nats-server");
    listener.local_addr().expect("local address").port()
}

/// A new directory under the system temp dir, unique per process and call.
fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "kiln-nats-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(unique);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("store")).expect("create nats-server store directory");
    dir
}

fn write_config(dir: &Path) {
    let mut file = std::fs::File::create(dir.join("server.conf")).expect("create server.conf");
    writeln!(file, "max_payload: {TEST_MAX_PAYLOAD}").expect("write server.conf");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_accepts_connections_restarts_on_the_same_port_and_cleans_up() {
        let mut server = NatsServer::start();
        let port = server.port();
        assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("server accepts connections");

        server.restart();
        assert_eq!(server.port(), port);
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("restarted server accepts");

        let dir = server.dir.clone();
        drop(server);
        assert!(!dir.exists(), "store directory removed on drop");
        assert!(
            TcpStream::connect_timeout(
                &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                Duration::from_millis(200)
            )
            .is_err(),
            "server killed on drop"
        );
    }
}
