//! Which of its two modes the shim runs in, decided once per shim process, just before containerd
//! creates its first container (for Kubernetes, the pod's sandbox; one shim serves a whole pod).
//!
//! **Agent mode** when a node agent is named and answers: the runtime option `node_agent` (CRI's
//! `[...runtimes.wafer.options]`, which containerd hands the shim's `start` command on its stdin as a
//! `runtimeoptions.v1.Options` message whose TOML body holds it), or else `WAFER_NODE_AGENT` in
//! containerd's environment, which its shims inherit. (`ctr run --runtime-config-path` sends a file's
//! path instead of a body; runwasi's shim library, which both modes stand on, refuses that at Create,
//! so with `ctr` the environment is the way.) **Per-process mode** otherwise — no agent named,
//! or one named that does not answer — as runwasi's shims run. Either way the choice goes to
//! containerd's log.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;

/// The variable naming the agent's socket, set in containerd's environment or by `start` from the
/// runtime options for the shim process it spawns.
pub const ENV: &str = "WAFER_NODE_AGENT";

/// The runtime option naming the agent's socket.
pub const OPTION: &str = "node_agent";

/// How this shim runs its containers' functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// In the node agent listening on this socket.
    Agent(PathBuf),
    /// In each container's own process.
    Process,
}

/// Decides the mode from the command line, the runtime options and the environment. Call it first in
/// `main`, while the process has one thread: `start` may set [`ENV`] for the shim it spawns.
pub fn choose() -> Mode {
    let args: Vec<_> = std::env::args_os().collect();
    let action = containerd_shim::parse(args.get(1..).unwrap_or_default())
        .map(|flags| flags.action)
        .unwrap_or_default();
    match action.as_str() {
        "start" => {
            if let Some(socket) = socket_from_options() {
                // `main` calls this before any other thread exists.
                std::env::set_var(ENV, socket);
            }
            Mode::Process
        }
        // The shim's own process: it serves containerd's task API.
        "" => match std::env::var_os(ENV).filter(|s| !s.is_empty()) {
            Some(socket) => {
                let socket = PathBuf::from(socket);
                match std::os::unix::net::UnixStream::connect(&socket) {
                    Ok(_) => {
                        log(&format!(
                            "node agent at {}: containers' functions run there",
                            socket.display()
                        ));
                        Mode::Agent(socket)
                    }
                    Err(e) => {
                        log(&format!(
                            "node agent at {} unreachable ({e}): running containers' functions in \
                             their own processes",
                            socket.display()
                        ));
                        Mode::Process
                    }
                }
            }
            None => Mode::Process,
        },
        _ => Mode::Process,
    }
}

/// The `node_agent` runtime option from the options containerd writes to `start`'s stdin, if any.
fn socket_from_options() -> Option<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return None;
    }
    let mut bytes = Vec::new();
    stdin.take(1 << 20).read_to_end(&mut bytes).ok()?;
    let body = runtime_options_body(&bytes)?;
    let table: toml::Table = toml::from_str(&body).ok()?;
    table.get(OPTION)?.as_str().map(str::to_string)
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// containerd's `runtimeoptions.v1.Options`, of which the shim reads the TOML of the runtime's options
/// table (its other fields, a type and the path of a file with the options, go unread, as runwasi's
/// shim library leaves them).
#[derive(Clone, PartialEq, prost::Message)]
struct RuntimeOptions {
    #[prost(string, tag = "3")]
    config_body: String,
}

/// The TOML text of runtime options encoded as an `Any` holding `runtimeoptions.v1.Options`.
fn runtime_options_body(bytes: &[u8]) -> Option<String> {
    use prost::Message as _;
    let any = Any::decode(bytes).ok()?;
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return None;
    }
    RuntimeOptions::decode(any.value.as_slice())
        .ok()
        .map(|options| options.config_body)
}

/// A line in containerd's log, through the `log` FIFO containerd reads in the bundle (the working
/// directory of every shim command), when it is there.
fn log(message: &str) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log");
    if let Ok(mut fifo) = fifo {
        let _ = writeln!(
            fifo,
            "level=info msg={message:?} runtime=io.containerd.wafer.v1"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn any(options: RuntimeOptions) -> Vec<u8> {
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: options.encode_to_vec(),
        }
        .encode_to_vec()
    }

    #[test]
    fn the_socket_comes_from_the_options_body() {
        let body = any(RuntimeOptions {
            config_body: "SystemdCgroup = true\nnode_agent = \"/run/wafer/node.sock\"\n".into(),
        });
        let text = runtime_options_body(&body).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table[OPTION].as_str(), Some("/run/wafer/node.sock"));
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
        }
        .encode_to_vec();
        assert_eq!(runtime_options_body(&runc), None);
        assert_eq!(runtime_options_body(b"\xff\xff"), None);
    }
}
