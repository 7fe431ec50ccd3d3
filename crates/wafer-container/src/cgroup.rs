//! What a container used, read from its control group after (or while) it runs.
//!
//! runc puts each container in the cgroup its OCI spec names (`linux.cgroupsPath`, a path such as
//! `/wafer/ID` under every hierarchy). Machines lay cgroups out in one of two ways, and both are read:
//!
//! - **v1**, also the *hybrid* layout (a v1 hierarchy per controller plus an empty unified tree): the
//!   memory controller's `memory.max_usage_in_bytes` is the peak, the `oom_kill` line of
//!   `memory.oom_control` (Linux 4.13 and later) counts OOM kills, and `cpuacct.usage` is the CPU time in
//!   nanoseconds.
//! - **v2**, one unified hierarchy: `memory.peak` (Linux 5.19 and later), the `oom_kill` line of
//!   `memory.events`, and the `usage_usec` line of `cpu.stat`.
//!
//! A figure the kernel does not offer is `None`, never a guess.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the kernel's cgroup file systems are mounted.
pub const MOUNT: &str = "/sys/fs/cgroup";

/// How a machine's control groups are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A hierarchy per controller (`MOUNT/memory`, `MOUNT/cpuacct`, …), hybrid machines included.
    V1,
    /// One unified hierarchy at `MOUNT` with the memory controller in it.
    V2,
}

/// What one control group used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The most memory its processes held at once, in bytes.
    pub peak_memory: Option<u64>,
    /// The CPU time its processes spent, user and system.
    pub cpu: Option<Duration>,
    /// How many of its processes the kernel killed for going over its memory limit.
    pub oom_kills: u64,
}

/// The control groups of one machine.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    layout: Layout,
}

impl Cgroups {
    /// The machine's cgroups, with their layout found at [`MOUNT`].
    pub fn detect() -> io::Result<Self> {
        Self::detect_at(Path::new(MOUNT))
    }

    /// The cgroups mounted at `root`, with their layout found there: v2 when the root is a unified
    /// hierarchy holding the memory controller, v1 when a memory hierarchy of its own is mounted.
    pub fn detect_at(root: &Path) -> io::Result<Self> {
        let unified = std::fs::read_to_string(root.join("cgroup.controllers")).ok();
        let layout = if unified.is_some_and(|c| c.split_whitespace().any(|c| c == "memory")) {
            Layout::V2
        } else if root.join("memory").is_dir() {
            Layout::V1
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no memory cgroup controller under {}: neither a unified hierarchy with it nor a \
                     v1 memory hierarchy",
                    root.display()
                ),
            ));
        };
        Ok(Self {
            root: root.to_path_buf(),
            layout,
        })
    }

    /// This machine's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The directory of the cgroup at `path` (as in `linux.cgroupsPath`) in `controller`'s hierarchy;
    /// on v2 every controller shares one.
    pub fn dir(&self, controller: &str, path: &str) -> PathBuf {
        let relative = path.trim_start_matches('/');
        match self.layout {
            Layout::V1 => self.root.join(controller).join(relative),
            Layout::V2 => self.root.join(relative),
        }
    }

    /// What the cgroup at `path` used. Fails only when its memory cgroup is not there at all.
    pub fn usage(&self, path: &str) -> io::Result<Usage> {
        let memory = self.dir("memory", path);
        if !memory.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cgroup at {}", memory.display()),
            ));
        }
        Ok(match self.layout {
            Layout::V1 => Usage {
                peak_memory: number(&memory.join("memory.max_usage_in_bytes")),
                cpu: number(&self.dir("cpuacct", path).join("cpuacct.usage"))
                    .map(Duration::from_nanos),
                oom_kills: keyed(&memory.join("memory.oom_control"), "oom_kill").unwrap_or(0),
            },
            Layout::V2 => Usage {
                peak_memory: number(&memory.join("memory.peak")),
                cpu: keyed(&memory.join("cpu.stat"), "usage_usec").map(Duration::from_micros),
                oom_kills: keyed(&memory.join("memory.events"), "oom_kill").unwrap_or(0),
            },
        })
    }
}

/// A file holding one number.
fn number(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The number after `key` in a file of `key value` lines.
fn keyed(file: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok())?
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, file: &str, text: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_v1_cgroup_is_read_from_its_controllers_hierarchies() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "unified/cgroup.controllers", "\n");
        write(
            root.path(),
            "memory/wafer/c1/memory.max_usage_in_bytes",
            "7340032\n",
        );
        write(
            root.path(),
            "memory/wafer/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(root.path(), "cpuacct/wafer/c1/cpuacct.usage", "2500000\n");
        let cgroups = Cgroups::detect_at(root.path()).unwrap();
        assert_eq!(cgroups.layout(), Layout::V1);
        assert_eq!(
            cgroups.usage("/wafer/c1").unwrap(),
            Usage {
                peak_memory: Some(7 << 20),
                cpu: Some(Duration::from_micros(2500)),
                oom_kills: 1,
            }
        );
    }

    #[test]
    fn a_v2_cgroup_is_read_from_the_unified_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "cgroup.controllers",
            "cpuset cpu io memory pids\n",
        );
        write(root.path(), "wafer/c2/memory.peak", "1048576\n");
        write(
            root.path(),
            "wafer/c2/memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        write(
            root.path(),
            "wafer/c2/cpu.stat",
            "usage_usec 1200\nuser_usec 1000\nsystem_usec 200\n",
        );
        let cgroups = Cgroups::detect_at(root.path()).unwrap();
        assert_eq!(cgroups.layout(), Layout::V2);
        let usage = cgroups.usage("wafer/c2").unwrap();
        assert_eq!(usage.peak_memory, Some(1 << 20));
        assert_eq!(usage.cpu, Some(Duration::from_micros(1200)));
        assert_eq!(usage.oom_kills, 1);
    }

    #[test]
    fn what_an_older_kernel_lacks_is_none_and_a_missing_cgroup_an_error() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "cgroup.controllers", "memory pids\n");
        std::fs::create_dir_all(root.path().join("wafer/c3")).unwrap();
        let cgroups = Cgroups::detect_at(root.path()).unwrap();
        assert_eq!(cgroups.usage("/wafer/c3").unwrap(), Usage::default());
        let missing = cgroups.usage("/wafer/gone").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let empty = tempfile::tempdir().unwrap();
        assert!(Cgroups::detect_at(empty.path()).is_err());
    }
}
