//! The last lines an env-server wrote to stderr, kept for crash messages.

use std::collections::VecDeque;
use std::sync::Mutex;

/// How many stderr lines a crash message quotes.
const KEPT_LINES: usize = 12;
/// Longest line kept, in bytes (a panic message with a huge payload stays readable).
const MAX_LINE_BYTES: usize = 500;

/// A ring of the last [`KEPT_LINES`] lines of a byte stream.
#[derive(Default)]
pub(crate) struct StderrTail {
    state: Mutex<TailState>,
}

#[derive(Default)]
struct TailState {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl StderrTail {
    /// Appends bytes; complete lines are logged at debug level and kept.
    pub(crate) fn push(&self, bytes: &[u8], source: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for &byte in bytes {
            if byte == b'\n' {
                let line = String::from_utf8_lossy(&state.partial)
                    .trim_end()
                    .to_string();
                state.partial.clear();
                tracing::debug!(sandbox = source, "env-server: {line}");
                state.lines.push_back(line);
                while state.lines.len() > KEPT_LINES {
                    state.lines.pop_front();
                }
            } else if state.partial.len() < MAX_LINE_BYTES {
                state.partial.push(byte);
            }
        }
    }

    /// The kept lines (and an unterminated last line), joined with ` | `; None when empty.
    pub(crate) fn summary(&self) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: Vec<String> = state.lines.iter().cloned().collect();
        if !state.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&state.partial).to_string());
        }
        let lines: Vec<String> = lines.into_iter().filter(|line| !line.is_empty()).collect();
        (!lines.is_empty()).then(|| lines.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_the_unterminated_one() {
        let tail = StderrTail::default();
        assert_eq!(tail.summary(), None);
        for number in 0..20 {
            tail.push(format!("line {number}\n").as_bytes(), "test");
        }
        tail.push(b"cut", "test");
        let summary = tail.summary().unwrap();
        assert!(summary.starts_with("line 8 | "), "{summary}");
        assert!(summary.ends_with("line 19 | cut"), "{summary}");
    }
}
