//! What agent mode reads of a container: from its runtime spec, the arguments, environment, root,
//! network namespace and limits; from its root filesystem, the wasm file and `/wafer.json`.
//!
//! In per-process mode the function reads its files inside the container, after its root has been
//! switched. In agent mode the shim reads them from the host, as root, so every path is resolved with
//! `openat2(RESOLVE_IN_ROOT)`: a symbolic link in an image resolves inside the image's root, never to
//! a file of the host's.

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use wafer_api::FunctionConfig;

/// The annotation CRI puts on a pod's sandbox container.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The network a container's function listens in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// The host's: the spec asks for no network namespace (`ctr run --net-host`, `hostNetwork: true`).
    Host,
    /// The namespace at this path (a pod's, pinned by CRI, or `ctr run --with-ns network:PATH`).
    Namespace(PathBuf),
    /// A new namespace of its own, reachable by nothing: the spec asks for one without naming it.
    New,
}

/// One container, as agent mode needs it.
#[derive(Debug, Clone)]
pub struct Container {
    /// `process.args`: the wasm file (with an optional `#export`), then the function's arguments.
    pub args: Vec<String>,
    /// `process.env`, `KEY=VALUE`.
    pub env: Vec<String>,
    /// `process.cwd`, where a relative wasm path starts.
    pub cwd: PathBuf,
    /// The root filesystem on the host.
    pub rootfs: PathBuf,
    /// Where it listens.
    pub network: Network,
    /// `linux.resources.memory.limit`, in bytes.
    pub memory_limit: Option<u64>,
    /// `linux.resources.cpu.quota / period`, in cores.
    pub cpu_limit: Option<f64>,
    /// Whether it is a pod's sandbox (its pause container), which runs nothing.
    pub sandbox: bool,
}

impl Container {
    /// Reads the runtime spec of the bundle at `bundle`.
    pub fn from_bundle(bundle: &Path) -> Result<Self, String> {
        let spec = Spec::load(bundle.join("config.json"))
            .map_err(|e| format!("cannot read the runtime spec: {e}"))?;
        Ok(Self::from_spec(&spec, bundle))
    }

    fn from_spec(spec: &Spec, bundle: &Path) -> Self {
        let process = spec.process().as_ref();
        let root = spec
            .root()
            .as_ref()
            .map_or_else(|| PathBuf::from("rootfs"), |r| r.path().clone());
        let linux = spec.linux().as_ref();
        let network = match linux
            .and_then(|l| l.namespaces().as_ref())
            .and_then(|namespaces| {
                namespaces
                    .iter()
                    .find(|n| n.typ() == LinuxNamespaceType::Network)
            }) {
            None => Network::Host,
            Some(namespace) => match namespace.path() {
                Some(path) => Network::Namespace(path.clone()),
                None => Network::New,
            },
        };
        let resources = linux.and_then(|l| l.resources().as_ref());
        let memory_limit = resources
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .and_then(|limit| u64::try_from(limit).ok())
            .filter(|limit| *limit > 0);
        let cpu_limit = resources.and_then(|r| r.cpu().as_ref()).and_then(|cpu| {
            let (quota, period) = (cpu.quota()?, cpu.period()?);
            (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
        });
        let sandbox = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINER_TYPE))
            .is_some_and(|t| t == "sandbox");
        Self {
            args: process.and_then(|p| p.args().clone()).unwrap_or_default(),
            env: process.and_then(|p| p.env().clone()).unwrap_or_default(),
            cwd: process.map_or_else(|| PathBuf::from("/"), |p| p.cwd().clone()),
            rootfs: bundle.join(root),
            network,
            memory_limit,
            cpu_limit,
            sandbox,
        }
    }

    /// The function's name: the wasm file's name without its extension.
    pub fn name(&self) -> String {
        Path::new(self.entry())
            .file_stem()
            .map_or_else(|| "function".into(), |s| s.to_string_lossy().into_owned())
    }

    /// The wasm file as the first argument names it, without a `#export` suffix.
    fn entry(&self) -> &str {
        let first = self.args.first().map_or("", String::as_str);
        first.split_once('#').map_or(first, |(path, _)| path)
    }

    /// Opens the wasm file inside the root filesystem: a path with a `/` from the working directory, a
    /// bare name from the container's `PATH` and then the working directory.
    pub fn open_wasm(&self) -> Result<File, String> {
        let entry = self.entry();
        if entry.is_empty() {
            return Err("the container has no arguments: its first names the wasm file".into());
        }
        let root = File::open(&self.rootfs)
            .map_err(|e| format!("cannot open the root filesystem: {e}"))?;
        let mut candidates = Vec::new();
        if entry.contains('/') {
            candidates.push(self.cwd.join(entry));
        } else {
            let path = self
                .env
                .iter()
                .find_map(|e| e.strip_prefix("PATH="))
                .unwrap_or_default();
            candidates.extend(
                path.split(':')
                    .filter(|d| !d.is_empty())
                    .map(|d| Path::new(d).join(entry)),
            );
            candidates.push(self.cwd.join(entry));
        }
        for candidate in &candidates {
            match open_in_root(&root, candidate) {
                Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => return Ok(file),
                _ => continue,
            }
        }
        Err(format!(
            "the wasm file `{entry}` is not in the container's root filesystem"
        ))
    }

    /// The image's `/wafer.json`, or `None` when it has none.
    pub fn read_config(&self) -> Result<Option<FunctionConfig>, String> {
        let root = File::open(&self.rootfs)
            .map_err(|e| format!("cannot open the root filesystem: {e}"))?;
        let file = match open_in_root(&root, Path::new(wafer_api::oci::CONFIG_PATH)) {
            Ok(file) if file.metadata().is_ok_and(|m| m.is_file()) => file,
            Ok(_) => {
                return Err(format!(
                    "/{} is not a regular file",
                    wafer_api::oci::CONFIG_PATH
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open /{}: {e}", wafer_api::oci::CONFIG_PATH)),
        };
        let cap = wafer_node::function::MAX_CONFIG_BYTES;
        let mut bytes = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read /{}: {e}", wafer_api::oci::CONFIG_PATH))?;
        if bytes.len() as u64 > cap {
            return Err(format!(
                "/{} is over {cap} bytes",
                wafer_api::oci::CONFIG_PATH
            ));
        }
        wafer_node::function::parse_config(&bytes).map(Some)
    }
}

/// Opens `path` for reading with `root` as `/`: `..` and symbolic links never leave it, and a FIFO an
/// image placed there does not hold the open (reads of a regular file ignore `O_NONBLOCK`).
fn open_in_root(root: &File, path: &Path) -> std::io::Result<File> {
    use std::os::unix::ffi::OsStrExt as _;
    let relative = path.strip_prefix("/").unwrap_or(path);
    let name = std::ffi::CString::new(relative.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: open_how is plain data; zero is "no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `root` is an open directory, `name` a NUL-terminated string and `how` an open_how, all
    // alive across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_spec_gives_args_network_and_limits() {
        let spec = spec(
            r#"{"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                "process": {"cwd": "/", "args": ["/app.wasm#run", "x"], "env": ["A=1"], "user": {"uid": 0, "gid": 0}},
                "annotations": {"io.kubernetes.cri.container-type": "container"},
                "linux": {"namespaces": [{"type": "network", "path": "/var/run/netns/pod"}, {"type": "mount"}],
                          "resources": {"memory": {"limit": 134217728}, "cpu": {"quota": 50000, "period": 100000}}}}"#,
        );
        let container = Container::from_spec(&spec, Path::new("/bundle"));
        assert_eq!(container.rootfs, Path::new("/bundle/rootfs"));
        assert_eq!(container.name(), "app");
        assert_eq!(container.entry(), "/app.wasm");
        assert_eq!(
            container.network,
            Network::Namespace("/var/run/netns/pod".into())
        );
        assert_eq!(container.memory_limit, Some(128 << 20));
        assert_eq!(container.cpu_limit, Some(0.5));
        assert!(!container.sandbox);
        let host = spec_without_network();
        assert_eq!(
            Container::from_spec(&host, Path::new("/b")).network,
            Network::Host
        );
    }

    fn spec_without_network() -> Spec {
        spec(
            r#"{"ociVersion": "1.0.2", "process": {"cwd": "/", "args": ["f.wasm"], "user": {"uid": 0, "gid": 0}},
                "annotations": {"io.kubernetes.cri.container-type": "sandbox"},
                "linux": {"namespaces": [{"type": "mount"}]}}"#,
        )
    }

    #[test]
    fn files_are_found_inside_the_root_and_links_stay_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::write(rootfs.join("bin/f.wasm"), b"\0asm").unwrap();
        std::fs::write(dir.path().join("secret"), b"host").unwrap();
        // A link that would leave the root on the host resolves inside it.
        std::os::unix::fs::symlink("/../../secret", rootfs.join("wafer.json")).unwrap();
        let mut container = Container::from_spec(&spec_without_network(), dir.path());
        assert!(container.sandbox);
        container.env = vec!["PATH=/usr/bin:/bin".into()];
        let mut bytes = Vec::new();
        container
            .open_wasm()
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, b"\0asm");
        assert_eq!(
            container.read_config().unwrap(),
            None,
            "the link's target is not in the root"
        );
        container.args = vec!["missing.wasm".into()];
        assert!(container.open_wasm().unwrap_err().contains("missing.wasm"));
        std::fs::remove_file(rootfs.join("wafer.json")).unwrap();
        // A FIFO in place of a file is refused without waiting for a writer.
        let fifo = std::ffi::CString::new(rootfs.join("wafer.json").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(container
            .read_config()
            .unwrap_err()
            .contains("not a regular file"));
        std::fs::remove_file(rootfs.join("wafer.json")).unwrap();
        std::fs::write(rootfs.join("wafer.json"), br#"{"kind": "wagi"}"#).unwrap();
        assert_eq!(
            container.read_config().unwrap().unwrap().kind,
            Some(wafer_api::Kind::Wagi)
        );
    }
}
