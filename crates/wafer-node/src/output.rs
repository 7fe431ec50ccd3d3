//! Where a container's function writes: its stdout and stderr, as `ctr` and `kubectl logs` read them.
//!
//! In its own process a function writes to the process's own stdout and stderr, which runwasi
//! connects to the container's log FIFOs. In the node agent it writes to the FIFOs themselves: the shim
//! opens them and passes their descriptors over the agent's socket. A function serving HTTP, in
//! either, has a writer task per stream fed through a bounded queue, so a reader that stops draining
//! a FIFO (`ctr run --detach` leaves none) holds up nothing but the function's lines: past [`QUEUE`]
//! chunks waiting, lines are dropped and counted, and a note says how many once the stream is closed.
//! A command in its own process writes as any process does, waiting for its reader.

use bytes::Bytes;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wafer_engine::{LogLine, Stream};

/// Chunks a stream may have waiting for its reader before lines are dropped.
pub const QUEUE: usize = 1024;

/// How long a stopped function's output may take to reach its readers before the descriptors close.
pub const FLUSH: Duration = Duration::from_secs(2);

/// A function's stdout and stderr. Cheap to clone; a stream's descriptor is closed when the last clone
/// is gone and its queue is written out.
#[derive(Clone)]
pub struct Output {
    stdout: Sink,
    stderr: Sink,
}

#[derive(Clone)]
enum Sink {
    /// The process's own stream.
    Process(Stream),
    /// A descriptor written by a task of its own.
    Queue(Arc<Queue>),
    /// Nowhere: the container has no such stream.
    Discard,
}

struct Queue {
    chunks: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

/// The writer tasks of an [`Output`] made from descriptors; see [`Writers::flush`].
pub struct Writers(Vec<JoinHandle<()>>);

impl Output {
    /// The process's own stdout and stderr.
    pub fn process() -> Self {
        Self {
            stdout: Sink::Process(Stream::Stdout),
            stderr: Sink::Process(Stream::Stderr),
        }
    }

    /// Streams written to `stdout` and `stderr` (FIFOs or files) by tasks of their own. Call from
    /// within a tokio runtime.
    pub fn to_descriptors(stdout: Option<OwnedFd>, stderr: Option<OwnedFd>) -> (Self, Writers) {
        let mut writers = Vec::new();
        let mut sink = |fd: Option<OwnedFd>| match fd {
            Some(fd) => {
                let (chunks, inbox) = mpsc::channel(QUEUE);
                let dropped = Arc::new(AtomicU64::new(0));
                writers.push(tokio::spawn(write_out(fd, inbox, dropped.clone())));
                Sink::Queue(Arc::new(Queue { chunks, dropped }))
            }
            None => Sink::Discard,
        };
        let output = Self {
            stdout: sink(stdout),
            stderr: sink(stderr),
        };
        (output, Writers(writers))
    }

    /// The process's own stdout and stderr, written as [`Output::to_descriptors`] writes, through
    /// descriptors of their own: each is opened again (`/proc/self/fd/N`), so the writer tasks' making
    /// it non-blocking leaves the process's own descriptors as they are. A stream that cannot be opened
    /// again (a socket, or a FIFO nobody holds open for reading) stays the process's own.
    pub fn process_queued() -> (Self, Writers) {
        Self::reopened(1, 2)
    }

    /// The streams on descriptors `stdout` and `stderr` of this process, as [`Output::process_queued`]
    /// writes them.
    fn reopened(stdout: i32, stderr: i32) -> (Self, Writers) {
        let reopen = |fd: i32| {
            use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
            let path = format!("/proc/self/fd/{fd}");
            let mut options = std::fs::OpenOptions::new();
            options.append(true);
            if std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_fifo()) {
                // A FIFO with no reader fails to open (ENXIO) rather than wait for one; its writer
                // task makes it non-blocking anyway. Anything else (a file, a terminal) stays blocking,
                // written from the blocking pool.
                options.custom_flags(libc::O_NONBLOCK);
            }
            options.open(path).ok().map(OwnedFd::from)
        };
        let (stdout, stderr) = (reopen(stdout), reopen(stderr));
        let (own_stdout, own_stderr) = (stdout.is_none(), stderr.is_none());
        let (mut output, writers) = Self::to_descriptors(stdout, stderr);
        if own_stdout {
            output.stdout = Sink::Process(Stream::Stdout);
        }
        if own_stderr {
            output.stderr = Sink::Process(Stream::Stderr);
        }
        (output, writers)
    }

    /// Writes `bytes` to `stream` (stdout for [`Stream::Stdout`], stderr for the rest).
    pub fn write(&self, stream: Stream, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return;
        }
        let sink = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr | Stream::Log => &self.stderr,
        };
        match sink {
            Sink::Process(Stream::Stdout) => {
                let _ = std::io::stdout().lock().write_all(&bytes);
            }
            Sink::Process(_) => {
                let _ = std::io::stderr().lock().write_all(&bytes);
            }
            Sink::Queue(queue) => {
                if queue.chunks.try_send(bytes).is_err() {
                    queue.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Sink::Discard => {}
        }
    }

    /// A guest's log line: stdout lines on stdout, the rest on stderr with their level.
    pub fn line(&self, line: &LogLine) {
        match line.stream {
            Stream::Stdout => self.write(Stream::Stdout, format!("{}\n", line.text)),
            Stream::Stderr | Stream::Log => {
                self.write(Stream::Stderr, format!("[{}] {}\n", line.level, line.text))
            }
        }
    }

    /// A line of wafer's own about the function, on stderr.
    pub fn note(&self, text: &str) {
        self.write(Stream::Stderr, format!("[wafer] {text}\n"));
    }
}

impl Writers {
    /// Waits (at most `grace`) for every stream to be written out once all clones of its [`Output`] are
    /// gone, then closes the descriptors. A reader that does not drain its FIFO costs only the grace.
    pub async fn flush(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for mut writer in self.0 {
            if tokio::time::timeout_at(deadline, &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        }
    }
}

/// Writes every chunk of `inbox` to `fd` until the queue is closed, then the count of dropped chunks.
async fn write_out(fd: OwnedFd, mut inbox: mpsc::Receiver<Bytes>, dropped: Arc<AtomicU64>) {
    let mut out = Descriptor::open(fd);
    while let Some(chunk) = inbox.recv().await {
        if out.write(&chunk).await.is_err() {
            // The reader is gone: take the rest and let it go.
            while inbox.recv().await.is_some() {}
            return;
        }
    }
    let lost = dropped.load(Ordering::Relaxed);
    if lost > 0 {
        let note = format!("[wafer] {lost} writes dropped: the reader did not keep up\n");
        let _ = out.write(note.as_bytes()).await;
    }
}

/// A FIFO written without blocking a thread, or a plain file written on the blocking pool.
enum Descriptor {
    Pipe(tokio::net::unix::pipe::Sender),
    File(Arc<std::fs::File>),
}

impl Descriptor {
    fn open(fd: OwnedFd) -> Self {
        let file = std::fs::File::from(fd);
        match file
            .try_clone()
            .map(tokio::net::unix::pipe::Sender::from_file)
        {
            Ok(Ok(pipe)) => Self::Pipe(pipe),
            _ => Self::File(Arc::new(file)),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Pipe(pipe) => pipe.write_all(bytes).await,
            Self::File(file) => {
                let (file, bytes) = (file.clone(), bytes.to_vec());
                tokio::task::spawn_blocking(move || (&*file).write_all(&bytes))
                    .await
                    .map_err(std::io::Error::other)?
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd as _;
    use std::path::{Path, PathBuf};

    /// A new FIFO `name` in `dir`.
    fn fifo(dir: &Path, name: &str) -> PathBuf {
        let fifo = dir.join(name);
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        fifo
    }

    #[tokio::test]
    async fn a_stream_nobody_reads_costs_lines_not_the_writer_and_stays_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(dir.path(), "stderr");
        // Open for reading and writing, as a shim holds a task's FIFO: writes never fail, and past
        // the pipe's 64 KiB they would wait for a reader that never comes.
        let own = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let fd = own.as_raw_fd();
        let (output, writers) = Output::reopened(fd, fd);
        let line = "x".repeat(100);
        for _ in 0..(QUEUE + 2000) {
            output.line(&Stream::Stderr.line(&line));
        }
        let Sink::Queue(queue) = &output.stderr else {
            panic!("a FIFO gets a queue");
        };
        assert!(
            queue.dropped.load(Ordering::Relaxed) > 0,
            "the excess is dropped"
        );
        // SAFETY: `fd` is open for the whole test.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        assert_eq!(
            flags & libc::O_NONBLOCK,
            0,
            "the process's own descriptor still blocks"
        );
        drop(output);
        writers.flush(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn lines_reach_a_fifo_and_a_file_and_close_them() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = fifo(dir.path(), "stdout");
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || {
                let mut text = String::new();
                std::fs::File::open(fifo)
                    .unwrap()
                    .read_to_string(&mut text)
                    .unwrap();
                text
            }
        });
        let writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let file = dir.path().join("stderr");
        let errors = std::fs::File::create(&file).unwrap();
        let (output, writers) = Output::to_descriptors(Some(writer.into()), Some(errors.into()));
        output.write(Stream::Stdout, "hello\n");
        output.line(&Stream::Stderr.line("oops"));
        output.note("stopped");
        drop(output);
        writers.flush(Duration::from_secs(5)).await;
        assert_eq!(
            reader.join().unwrap(),
            "hello\n",
            "EOF once the writer is done"
        );
        let errors = std::fs::read_to_string(file).unwrap();
        assert!(
            errors.contains("oops\n") && errors.ends_with("[wafer] stopped\n"),
            "{errors}"
        );
    }
}
