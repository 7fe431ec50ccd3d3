//! What one invocation used and wrote: its [`Trace`].
//!
//! Every adapter measures the same things — the time to instantiate, the CPU time spent polling the guest,
//! the peak linear memory, the fuel burnt — and collects the guest's log streams. The caller passes a
//! [`Tracer`] and gets the trace once the instance is gone, which for an http component that streams its
//! body is after the response has been returned.

use crate::host::output::CappedOutput;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use wafer_api::LogLevel;

/// The resources one invocation used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Time to create the instance from its pre-instantiated form.
    pub instantiate: Duration,
    /// CPU time the host spent running the guest (and host calls made for it).
    pub cpu: Duration,
    /// The most linear memory the instance held, in bytes.
    pub peak_memory_bytes: u64,
    /// Fuel the guest burnt, when the engine meters fuel.
    pub fuel_consumed: Option<u64>,
}

/// Which guest stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (logged for http components, whose answer is their response).
    Stdout,
    /// Standard error.
    Stderr,
    /// A logging interface: `wasi:logging`, proxy-wasm's `proxy_log`, and the host's notes on refused
    /// capability calls.
    Log,
}

impl Stream {
    /// `stdout`, `stderr` or `log`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log => "log",
        }
    }

    /// The line `text` captured from this stream: a logging interface's own level, or the level a
    /// standard stream's line announces (`info` when it announces none).
    pub fn line(self, text: &str) -> LogLine {
        let level = LogLevel::announced(text);
        let text = match self {
            // Written by CappedOutput::log as `[level] line`.
            Stream::Log => text.split_once("] ").map_or(text, |(_, line)| line),
            Stream::Stdout | Stream::Stderr => text,
        };
        LogLine {
            stream: self,
            level: level.unwrap_or_default(),
            text: text.to_string(),
        }
    }
}

/// One line a guest wrote to a log stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The stream it came from.
    pub stream: Stream,
    /// Its severity.
    pub level: LogLevel,
    /// The line, without its newline; invalid UTF-8 replaced with U+FFFD.
    pub text: String,
}

/// What one invocation used and logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Its resource use.
    pub usage: Usage,
    /// The lines it logged, in order per stream.
    pub logs: Vec<LogLine>,
    /// Whether a log stream went past its cap and lost its end.
    pub logs_truncated: bool,
}

impl Trace {
    /// A trace of `usage` with the lines of the given captured streams.
    pub(crate) fn new(usage: Usage, streams: &[(Stream, &CappedOutput)]) -> Self {
        let mut trace = Trace {
            usage,
            ..Default::default()
        };
        for (stream, output) in streams {
            trace.logs.extend(
                String::from_utf8_lossy(&output.contents())
                    .lines()
                    .map(|text| stream.line(text)),
            );
            trace.logs_truncated |= output.truncated();
        }
        trace
    }
}

/// Where an invocation's [`Trace`] goes once its instance is gone.
#[derive(Debug, Default)]
pub struct Tracer(Option<tokio::sync::oneshot::Sender<Trace>>);

impl Tracer {
    /// A tracer and the receiver its trace arrives on.
    pub fn channel() -> (Self, tokio::sync::oneshot::Receiver<Trace>) {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        (Self(Some(sender)), receiver)
    }

    /// A tracer that discards the trace.
    pub fn discard() -> Self {
        Self(None)
    }

    pub fn send(self, trace: Trace) {
        if let Some(sender) = self.0 {
            // The caller may have stopped waiting; the trace is then of no use to anyone.
            let _ = sender.send(trace);
        }
    }
}

/// A future that adds up the CPU time its polls take on the polling thread, so time spent waiting (for
/// host I/O, for other tasks on the thread) is not counted.
pub(crate) struct CpuTimed<F> {
    inner: Pin<Box<F>>,
    spent: Duration,
}

impl<F: Future> CpuTimed<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            spent: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let before = thread_cpu_time();
        let polled = self.inner.as_mut().poll(cx);
        self.spent += thread_cpu_time().saturating_sub(before);
        polled.map(|output| (output, self.spent))
    }
}

/// The CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec, and CLOCK_THREAD_CPUTIME_ID is supported on every
    // platform wafer builds for (Linux); on failure `now` stays zero, which only under-reports.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now);
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cpu_time_counts_work_and_not_waiting() {
        // The loop runs until this thread has used 30 ms of CPU, however busy the machine is.
        let (_, busy) = CpuTimed::new(async {
            let until = thread_cpu_time() + Duration::from_millis(30);
            let mut x = 0u64;
            while thread_cpu_time() < until {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
        .await;
        let (_, idle) = CpuTimed::new(tokio::time::sleep(Duration::from_millis(30))).await;
        assert!(
            busy >= Duration::from_millis(30),
            "busy loop counted {busy:?}"
        );
        assert!(
            idle < Duration::from_millis(10),
            "sleeping counted {idle:?}"
        );
    }

    #[test]
    fn traces_split_streams_into_lines() {
        let out = CappedOutput::new(5);
        let err = CappedOutput::new(100);
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            out.clone().write_all(b"a\nbcdefgh").await.unwrap();
            err.clone().write_all(b"oops\n\nend").await.unwrap();
        });
        let trace = Trace::new(
            Usage::default(),
            &[(Stream::Stdout, &out), (Stream::Stderr, &err)],
        );
        let lines: Vec<_> = trace
            .logs
            .iter()
            .map(|l| (l.stream, l.text.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (Stream::Stdout, "a"),
                (Stream::Stdout, "bcd"),
                (Stream::Stderr, "oops"),
                (Stream::Stderr, ""),
                (Stream::Stderr, "end"),
            ]
        );
        assert!(trace.logs_truncated);
    }
}
