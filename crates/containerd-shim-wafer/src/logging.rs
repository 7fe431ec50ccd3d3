//! Where the `tracing` events of wafer's crates and wasmtime go in the shim: to the `log` records the
//! containerd shim library writes to containerd's log, at the level containerd set (info, or debug
//! when containerd logs at debug), as `tracing` would send them with no subscriber — except spans.
//!
//! wasmtime-wasi opens an info-level span around every WASI preview1 call a guest makes. With no
//! subscriber, `tracing` logs each one, so every `fd_write` of a command and every call of every
//! request an HTTP function serves became a line in containerd's log, written from the guest's own
//! thread in a dozen `write`s each. [`Bridge`] declines every span, so they are neither logged nor
//! opened; events (wafer's warnings, wasmtime's errors) keep reaching the log.

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata};

/// The `tracing` subscriber of the shim's processes (see the module's documentation).
pub struct Bridge;

/// Makes [`Bridge`] the subscriber of this process and of every process forked from it. Call it first
/// in `main`.
pub fn init() {
    // Fails only when a subscriber is already set, which then stays.
    let _ = tracing::subscriber::set_global_default(Bridge);
}

fn log_level(level: &Level) -> log::Level {
    match *level {
        Level::ERROR => log::Level::Error,
        Level::WARN => log::Level::Warn,
        Level::INFO => log::Level::Info,
        Level::DEBUG => log::Level::Debug,
        Level::TRACE => log::Level::Trace,
    }
}

impl tracing::Subscriber for Bridge {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.is_span() {
            Interest::never()
        } else {
            // The log level is set after the subscriber, and may differ between the shim's processes.
            Interest::sometimes()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && log_level(metadata.level()) <= log::max_level()
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Never called: every span is declined above.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut line = Line::default();
        event.record(&mut line);
        log::logger().log(
            &log::Record::builder()
                .level(log_level(metadata.level()))
                .target(metadata.target())
                .module_path(metadata.module_path())
                .file(metadata.file())
                .line(metadata.line())
                .args(format_args!("{}{}", line.message, line.fields))
                .build(),
        );
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's message, then its other fields as ` name=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, OnceLock};

    /// A `log` logger keeping what it is given, installed once for the tests of this module.
    struct Kept(Mutex<Vec<(log::Level, String, String)>>);

    impl log::Log for Kept {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::max_level()
        }
        fn log(&self, record: &log::Record<'_>) {
            if let Ok(mut kept) = self.0.lock() {
                kept.push((
                    record.level(),
                    record.target().to_string(),
                    record.args().to_string(),
                ));
            }
        }
        fn flush(&self) {}
    }

    fn kept() -> &'static Kept {
        static KEPT: OnceLock<&'static Kept> = OnceLock::new();
        KEPT.get_or_init(|| {
            let kept: &'static Kept = Box::leak(Box::new(Kept(Mutex::new(Vec::new()))));
            log::set_logger(kept).expect("the only logger of this test binary");
            kept
        })
    }

    #[test]
    fn events_reach_the_log_at_its_level_and_spans_never_do() {
        let kept = kept();
        log::set_max_level(log::LevelFilter::Info);
        tracing::subscriber::with_default(Bridge, || {
            let span = tracing::info_span!(target: "wasmtime_wasi::p1", "fd_write", fd = 1);
            let _entered = span.enter();
            tracing::warn!(target: "wafer_engine::abi::wagi", function = "hello", "`_routes` failed");
            tracing::info!(target: "wafer_node::agent::pod", code = 3, "exited");
            tracing::debug!(target: "wafer_engine::compile_cache", "compile cache written");
        });
        let lines = kept.0.lock().unwrap().clone();
        assert_eq!(
            lines,
            vec![
                (
                    log::Level::Warn,
                    "wafer_engine::abi::wagi".to_string(),
                    "`_routes` failed function=hello".to_string()
                ),
                (
                    log::Level::Info,
                    "wafer_node::agent::pod".to_string(),
                    "exited code=3".to_string()
                ),
            ]
        );
    }
}
