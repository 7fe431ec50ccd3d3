//! A guest's captured stdout or stderr: the first `cap` bytes are kept, the rest are dropped and the
//! stream remembers that it was truncated.
//!
//! wasmtime-wasi's own memory pipe traps the guest when it fills up; a FaaS platform should instead end
//! the flood quietly and say so (a command reply's `*_truncated` flags, a WAGI 502).

use bytes::{Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wafer_api::LogLevel;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The most a guest may hand over in one write; writes are accepted whole, then trimmed to the cap.
const WRITE_BUDGET: usize = 64 * 1024;

/// A capped in-memory output stream; clones share one buffer.
#[derive(Clone)]
pub(crate) struct CappedOutput {
    state: Arc<Mutex<State>>,
}

struct State {
    buffer: BytesMut,
    cap: usize,
    truncated: bool,
}

impl CappedOutput {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                buffer: BytesMut::new(),
                cap,
                truncated: false,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What was kept.
    pub(crate) fn contents(&self) -> Bytes {
        self.state().buffer.clone().freeze()
    }

    /// Forgets what was written, and that anything was dropped.
    pub(crate) fn clear(&self) {
        let mut state = self.state();
        state.buffer.clear();
        state.truncated = false;
    }

    /// Whether anything was dropped past the cap.
    pub(crate) fn truncated(&self) -> bool {
        self.state().truncated
    }

    /// Keeps what fits under the cap; returns how many bytes were offered.
    pub(crate) fn append(&self, bytes: &[u8]) -> usize {
        let mut state = self.state();
        let room = state.cap.saturating_sub(state.buffer.len());
        if bytes.len() > room {
            state.truncated = true;
        }
        let kept = bytes.len().min(room);
        state.buffer.extend_from_slice(&bytes[..kept]);
        bytes.len()
    }

    /// Appends `message` to a log stream ([`crate::Stream::Log`]), every line marked with `level` the way
    /// [`crate::Trace`] reads it back.
    pub(crate) fn log(&self, level: LogLevel, message: &str) {
        let mut text = String::with_capacity(message.len() + 16);
        for line in message.lines() {
            text.push_str(&format!("[{level}] {line}\n"));
        }
        self.append(text.as_bytes());
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.append(buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_flags_the_rest() {
        let out = CappedOutput::new(5);
        let mut stream = out.clone();
        stream.write(Bytes::from_static(b"abc")).unwrap();
        assert!(!out.truncated());
        stream.write(Bytes::from_static(b"defgh")).unwrap();
        stream.write(Bytes::from_static(b"ij")).unwrap();
        assert_eq!(out.contents(), Bytes::from_static(b"abcde"));
        assert!(out.truncated());
    }
}
