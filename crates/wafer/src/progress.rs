//! Progress for long work, on a terminal only: an upload as a bar, then the wait for the server (its
//! compile) as a spinner with the time so far; other long steps (a registry push or pull, a local
//! compile) as a named spinner. Off a terminal — a pipe, a file, CI — nothing extra is printed.

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// The size of the pieces an upload is sent in, each advancing its bar.
const PIECE: usize = 64 * 1024;

/// How often a spinner turns.
const TICK: Duration = Duration::from_millis(100);

/// A step shown on stderr while it lasts, if stderr is a terminal.
pub struct Step(Option<ProgressBar>);

impl Step {
    /// A spinner naming `what` ("compiling app.wasm"), with the time it has taken so far.
    pub fn spinner(what: &str) -> Self {
        Self(std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner().with_message(what.to_string());
            bar.set_style(spinner_style());
            bar.enable_steady_tick(TICK);
            bar
        }))
    }

    /// A bar for an upload of `total` bytes named `what`.
    pub fn upload(what: &str, total: u64) -> Self {
        Self(std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total).with_message(what.to_string());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        }))
    }

    /// `bytes` as a request body that advances this step's bar as it is sent; once all is sent, the
    /// bar becomes a spinner naming `then` ("compiling on the server") until the step ends.
    pub fn body(&self, bytes: Vec<u8>, then: &str) -> reqwest::Body {
        let Some(bar) = self.0.clone() else {
            return bytes.into();
        };
        let then = then.to_string();
        let bytes = Bytes::from(bytes);
        let count = bytes.len().div_ceil(PIECE).max(1);
        let pieces = (0..count).map(move |i| {
            let piece = bytes.slice(i * PIECE..((i + 1) * PIECE).min(bytes.len()));
            bar.inc(piece.len() as u64);
            if i + 1 == count {
                bar.set_style(spinner_style());
                bar.set_message(then.clone());
                bar.reset_elapsed();
                bar.enable_steady_tick(TICK);
            }
            Ok::<_, std::io::Error>(piece)
        });
        reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn off_a_terminal_a_body_is_the_bytes_as_they_are() {
        if std::io::stderr().is_terminal() {
            return;
        }
        let step = Step::upload("uploading", 3);
        assert!(step.0.is_none());
        let body = step.body(b"abc".to_vec(), "compiling");
        assert_eq!(body.as_bytes(), Some(&b"abc"[..]));
    }
}
