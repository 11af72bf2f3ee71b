//! `kiln-scripted-llm --script FILE [--port PORT]`: serves a scripted OpenAI-compatible model.
//!
//! For integration tests that run the `kiln` binary against a model in another process. Prints the
//! base URL (`http://127.0.0.1:PORT/v1`) as the first line of stdout once the port is bound, then
//! serves until interrupted (Ctrl-C or SIGTERM). The script format is `kiln_models::testing::Script`
//! in JSON.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use kiln_models::testing::{Script, ScriptedServer};

const USAGE: &str = "usage: kiln-scripted-llm --script FILE.json [--port PORT]";

/// Parsed command line.
#[derive(Debug, PartialEq)]
struct Args {
    script: PathBuf,
    port: u16,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut script = None;
    let mut port = 0;
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("`{flag}` needs a value"));
        match flag.as_str() {
            "--script" => script = Some(PathBuf::from(value()?)),
            "--port" => {
                let text = value()?;
                port = text
                    .parse()
                    .map_err(|_| format!("`--port {text}`: expected a port number"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let script = script.ok_or("missing `--script FILE`")?;
    Ok(Args { script, port })
}

fn load_script(path: &PathBuf) -> Result<Script, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|error| format!("{} is not a valid script: {error}", path.display()))
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("kiln-scripted-llm: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let script = match load_script(&args.script) {
        Ok(script) => script,
        Err(message) => {
            eprintln!("kiln-scripted-llm: {message}");
            return ExitCode::from(2);
        }
    };
    let address = SocketAddr::from(([127, 0, 0, 1], args.port));
    let server = match ScriptedServer::start_on(address, script).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("kiln-scripted-llm: cannot listen on {address}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", server.base_url());
    wait_for_shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn parses_script_and_port() {
        assert_eq!(
            args(&["--script", "s.json", "--port", "8123"]),
            Ok(Args {
                script: "s.json".into(),
                port: 8123
            })
        );
        assert_eq!(args(&["--script", "s.json"]).unwrap().port, 0);
    }

    #[test]
    fn rejects_bad_arguments_by_name() {
        assert!(args(&[]).unwrap_err().contains("--script"));
        assert!(args(&["--script"]).unwrap_err().contains("--script"));
        assert!(
            args(&["--script", "s", "--port", "http"])
                .unwrap_err()
                .contains("http")
        );
        assert!(args(&["--verbose"]).unwrap_err().contains("--verbose"));
    }
}
