//! For tests (feature `testing`): a containerd of the test's own, and a busybox image to run in it.
//!
//! [`TestContainerd::start`] runs containerd as root with its root, state and socket in a temporary
//! directory, and stops it by PID when dropped, unmounting what it left. Without containerd, runc or
//! root it says why and returns `None` — unless `CI` is set, where that is a failure: CI installs them.

use crate::tarball::digest_of;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A containerd of the test's own, stopped and cleaned away on drop.
pub struct TestContainerd {
    dir: tempfile::TempDir,
    process: Child,
}

impl TestContainerd {
    /// Starts containerd, with `configure` given its temporary directory and its command to add to
    /// (environment its shims inherit, a `PATH` to find shims on), or says why it cannot.
    pub fn start(configure: impl FnOnce(&Path, &mut Command)) -> Option<Self> {
        let missing = if !on_path("containerd") || !on_path("ctr") || !on_path("runc") {
            Some("containerd, ctr and runc must be installed (apt install containerd runc)")
        } else if unsafe { libc::geteuid() } != 0 {
            Some("containerd needs root")
        } else {
            None
        };
        if let Some(reason) = missing {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the containerd tests: {reason}"
            );
            eprintln!("skipping a containerd test: {reason}");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("wafer-containerd-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{0}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
            root.display()
        );
        std::fs::write(root.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(root.join("containerd.log")).expect("log");
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        configure(root, &mut command);
        let process = command.spawn().expect("start containerd");
        let containerd = Self { dir, process };
        let started = Instant::now();
        while !containerd.ctr("default", &["version"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "containerd did not come up: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(containerd)
    }

    /// Its socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// A directory of the test's own beside it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --namespace NAMESPACE ARGS`, not run yet.
    pub fn command(&self, namespace: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args);
        command
    }

    /// Makes container `id` in `namespace` name `image` as the image it was made from, as containerd
    /// 1.7 records a container made from a wasm OCI artifact (which `ctr` 1.6 cannot create, since it
    /// unpacks every image it runs).
    pub fn set_image(&self, namespace: &str, id: &str, image: &str) {
        use containerd_client::services::v1::containers_client::ContainersClient;
        use containerd_client::services::v1::{Container, UpdateContainerRequest};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let channel = containerd_client::connect(self.socket())
                .await
                .expect("connect to containerd");
            let mut request = containerd_client::tonic::Request::new(UpdateContainerRequest {
                container: Some(Container {
                    id: id.into(),
                    image: image.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["image".into()],
                }),
            });
            request.metadata_mut().insert(
                "containerd-namespace",
                namespace.parse().expect("a namespace"),
            );
            ContainersClient::new(channel)
                .update(request)
                .await
                .expect("update the container's image");
        });
    }

    /// Runs `ctr --namespace NAMESPACE ARGS` with no input.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> Output {
        self.command(namespace, args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }
}

/// Stops the shims of the containerd at `socket` that outlived it, with their containers. A task still
/// being made when the test ended (a warm container its server was creating as it was killed) is in
/// no list the clean-up reads, and its shim would wait on for ever, holding a created container. Each
/// shim names its containerd, namespace and container in its arguments; runc removes the container
/// (its processes, cgroup and state) from the root containerd's runc shims keep it under.
fn stop_orphaned_shims(socket: &Path) {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return;
    };
    for process in processes.flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(process.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
        };
        let shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
        if !shim || value("-address").map(Path::new) != Some(socket) {
            continue;
        }
        if let (Some(namespace), Some(id)) = (value("-namespace"), value("-id")) {
            let root = format!("/run/containerd/runc/{namespace}");
            let _ = Command::new("runc")
                .args(["--root", &root, "delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        let namespaces = self.ctr("default", &["namespaces", "ls", "--quiet"]);
        for namespace in String::from_utf8_lossy(&namespaces.stdout).lines() {
            // Tasks left by a failed assertion: kill them so their shims exit and their mounts go.
            let tasks = self.ctr(namespace, &["tasks", "ls", "--quiet"]);
            for id in String::from_utf8_lossy(&tasks.stdout).lines() {
                self.ctr(namespace, &["tasks", "kill", "--signal", "SIGKILL", id]);
                std::thread::sleep(Duration::from_millis(200));
                self.ctr(namespace, &["tasks", "rm", "--force", id]);
                self.ctr(namespace, &["containers", "rm", id]);
            }
        }
        unsafe { libc::kill(self.process.id() as i32, libc::SIGTERM) };
        let _ = self.process.wait();
        stop_orphaned_shims(&self.socket());
        // Snapshots containerd left mounted under its root keep the directory from being removed.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(&root))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            if let Ok(point) = std::ffi::CString::new(point) {
                unsafe { libc::umount2(point.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Whether `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// The busybox applets the test image links.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "env", "sleep", "head", "dd", "id", "ls", "nc", "httpd", "true", "wget",
    "mkdir", "chmod", "printf",
];

/// An OCI image layout tarball of Debian's static busybox (`apt install busybox-static`): one layer
/// with `/bin/busybox`, its applets and an empty `/tmp` (mode 1777, as images have it), and `Cmd` `["/bin/sh"]`.
pub fn busybox_layout(name: &str) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (apt install busybox-static)");
    let mut layer = tar::Builder::new(Vec::new());
    let dir = |layer: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        header.set_cksum();
        layer
            .append_data(&mut header, path, std::io::empty())
            .expect("dir");
    };
    dir(&mut layer, "bin", 0o755);
    // runc gives a tmpfs the mode of the directory it is mounted on: images keep /tmp at 1777.
    dir(&mut layer, "tmp", 0o1777);
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(busybox.len() as u64);
    header.set_cksum();
    layer
        .append_data(&mut header, "bin/busybox", &busybox[..])
        .expect("busybox");
    for applet in APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        layer
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("applet");
    }
    let layer = layer.into_inner().expect("layer");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(&layer), "size": layer.len()}],
    }))
    .expect("manifest");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest_of(&manifest), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": name}}],
    }))
    .expect("index");
    let mut tarball = tar::Builder::new(Vec::new());
    let mut add = |path: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        tarball
            .append_data(&mut header, path, bytes)
            .expect("entry");
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in [&manifest, &config, &layer] {
        let hex = &digest_of(blob)["sha256:".len()..];
        add(format!("blobs/sha256/{hex}"), blob);
    }
    tarball.into_inner().expect("tarball")
}
