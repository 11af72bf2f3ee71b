//! The `probe` mode of `debug-faults`: the environment looks at the sandbox it runs in from the
//! inside and reports what it finds, so tests check container hardening by its effects rather
//! than by reading back the settings Kiln asked for. The env-server image has no shell, so the
//! probes are this code, run by the env-server itself.
//!
//! Each probe reads `/proc` or tries the forbidden thing and records the result; nothing here
//! panics, and a probe that cannot run says why in its field.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// Threads the pids probe starts at most (each with a small stack), so the probe stays bounded
/// where no pids limit applies.
pub const MAX_PROBE_THREADS: usize = 256;

/// TEST-NET-1 (RFC 5737): never routed, so only "unreachable" or a timeout can come back.
const OUTSIDE_ADDRESS: &str = "192.0.2.1:80";

/// Runs every probe; the report is a JSON object (see the fields below).
pub fn probe_sandbox() -> Value {
    json!({
        "identity": identity(),
        "root_write": write_result("/kiln-probe"),
        "usr_write": write_result("/usr/local/bin/kiln-probe"),
        "tmp_write": write_result("/tmp/kiln-probe"),
        "interfaces": interfaces(),
        "outside_connect": outside_connect(),
        "pids": pids(),
        "mounts": mounts(),
    })
}

/// Uid, gid, effective capabilities and no_new_privs from `/proc/self/status`.
fn identity() -> Value {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => status,
        Err(error) => return json!({ "error": error.to_string() }),
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let first_number = |name: &str| {
        field(name)
            .first()
            .and_then(|value| value.parse::<u64>().ok())
    };
    json!({
        "uid": first_number("Uid:"),
        "gid": first_number("Gid:"),
        "cap_eff": field("CapEff:").first().copied(),
        "no_new_privs": first_number("NoNewPrivs:"),
    })
}

/// Creating `path`: `{"ok": true}` or the error with its errno.
fn write_result(path: &str) -> Value {
    match std::fs::write(path, b"probe") {
        Ok(()) => {
            let _ = std::fs::remove_file(path);
            json!({ "ok": true })
        }
        Err(error) => {
            json!({ "ok": false, "errno": error.raw_os_error(), "error": error.to_string() })
        }
    }
}

/// Network interfaces the process sees (`/proc/net/dev`).
fn interfaces() -> Value {
    match std::fs::read_to_string("/proc/net/dev") {
        Ok(table) => Value::from(
            table
                .lines()
                .skip(2)
                .filter_map(|line| line.split(':').next())
                .map(|name| name.trim().to_string())
                .collect::<Vec<_>>(),
        ),
        Err(error) => json!({ "error": error.to_string() }),
    }
}

/// A TCP connection to an address outside the container.
fn outside_connect() -> Value {
    let address: SocketAddr = OUTSIDE_ADDRESS.parse().expect("a valid socket address");
    match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
        Ok(_) => json!({ "ok": true }),
        Err(error) => json!({
            "ok": false,
            "timed_out": error.kind() == ErrorKind::TimedOut,
            "errno": error.raw_os_error(),
            "error": error.to_string(),
        }),
    }
}

/// Starts threads (each a task in the pids cgroup) until one fails or [`MAX_PROBE_THREADS`]
/// run; reports how many ran, the spawn error and the cgroup's `pids.max`.
fn pids() -> Value {
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut threads = Vec::new();
    let mut spawn_error = None;
    while threads.len() < MAX_PROBE_THREADS {
        let gate = gate.clone();
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            // Blocked until the probe ends, so every thread counts at the same time.
            .spawn(move || drop(gate.lock()));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => {
                spawn_error =
                    Some(json!({ "errno": error.raw_os_error(), "error": error.to_string() }));
                break;
            }
        }
    }
    let started = threads.len();
    drop(held);
    for thread in threads {
        let _ = thread.join();
    }
    let limit = ["/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_string());
    json!({ "threads_started": started, "spawn_error": spawn_error, "pids_max": limit })
}

/// Mount points with their options (`/proc/self/mounts`).
fn mounts() -> Value {
    match std::fs::read_to_string("/proc/self/mounts") {
        Ok(table) => Value::from(
            table
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    match fields.as_slice() {
                        [source, point, kind, options, ..] => Some(json!({
                            "source": source,
                            "point": point,
                            "type": kind,
                            "read_only": options.split(',').any(|option| option == "ro"),
                        })),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>(),
        ),
        Err(error) => json!({ "error": error.to_string() }),
    }
}
