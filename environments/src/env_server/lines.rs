//! Bounded JSON-line reading and writing.

use kiln_protocol::env_server::MAX_LINE_BYTES;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the stream ended in the middle of a line ({0} bytes without a newline)")]
    Truncated(usize),
    #[error("a line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    #[error("a line that is not UTF-8")]
    NotUtf8,
}

/// Reads `\n`-terminated lines of at most [`MAX_LINE_BYTES`].
pub struct LineReader<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            inner: BufReader::new(reader),
            line: Vec::new(),
        }
    }

    /// The next line without its newline (and without a trailing `\r`), or `None` at a clean end
    /// of stream. Not cancel-safe: a cancelled read loses the partial line.
    pub async fn next_line(&mut self) -> Result<Option<String>, LineError> {
        self.line.clear();
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.line.is_empty() {
                    return Ok(None);
                }
                return Err(LineError::Truncated(self.line.len()));
            }
            if let Some(end) = available.iter().position(|byte| *byte == b'\n') {
                self.line.extend_from_slice(&available[..end]);
                self.inner.consume(end + 1);
                break;
            }
            let taken = available.len();
            self.line.extend_from_slice(available);
            self.inner.consume(taken);
            if self.line.len() > MAX_LINE_BYTES {
                return Err(LineError::TooLong);
            }
        }
        if self.line.len() > MAX_LINE_BYTES {
            return Err(LineError::TooLong);
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let line = std::mem::take(&mut self.line);
        String::from_utf8(line)
            .map(Some)
            .map_err(|_| LineError::NotUtf8)
    }
}

/// Writes `value` as one JSON line and flushes.
pub async fn write_line<W, T>(writer: &mut W, value: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize,
{
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_split_on_newlines_and_a_cut_line_is_an_error() {
        let input: &[u8] = b"{\"a\":1}\r\n\n{\"b\":2}\npartial";
        let mut reader = LineReader::new(input);
        assert_eq!(reader.next_line().await.unwrap().unwrap(), "{\"a\":1}");
        assert_eq!(reader.next_line().await.unwrap().unwrap(), "");
        assert_eq!(reader.next_line().await.unwrap().unwrap(), "{\"b\":2}");
        let error = reader.next_line().await.unwrap_err();
        assert!(matches!(error, LineError::Truncated(7)), "{error}");

        let mut empty = LineReader::new(&b""[..]);
        assert!(empty.next_line().await.unwrap().is_none());
        let mut bad = LineReader::new(&b"\xff\xfe\n"[..]);
        assert!(matches!(
            bad.next_line().await.unwrap_err(),
            LineError::NotUtf8
        ));
    }
}
