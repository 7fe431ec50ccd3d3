//! The OCI runtime specification a function's container runs under (runtime-spec 1.0, what runc reads
//! as `config.json`): who the process is, what it sees, and the limits the kernel holds it to.
//!
//! Every container gets, whatever its image asks: a non-root user unless the function's config names
//! another, every capability dropped, `noNewPrivileges`, a read-only root file system with a small
//! tmpfs at `/tmp`, its own PID, IPC, UTS, mount and **network** namespaces (a new network namespace
//! holds only its own loopback interface: no route anywhere, the host's loopback included),
//! no devices beyond the standard few, and its cgroup limits: memory (swap included), CPU quota, pids.

use crate::entry;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The user a container runs as unless its function says otherwise: `nobody`.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// The scheduling period the CPU quota is a share of.
const CPU_PERIOD: Duration = Duration::from_millis(100);

/// What one container may do and use.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Memory, swap included, in bytes.
    pub memory: u64,
    /// CPU in millicores (1000 = one core), or no quota.
    pub cpu_millis: Option<u32>,
    /// The most processes and threads at once.
    pub pids: u32,
    /// The size of the `/tmp` tmpfs, in bytes.
    pub tmp: u64,
}

/// The process a container runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    /// The program and its arguments.
    pub args: Vec<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// User and group ids.
    pub user: (u32, u32),
    /// The entry program ([`crate::entry`]) on the host, when the process is to be started through it:
    /// it is mounted read-only at [`entry::MOUNTED_AT`] and runs first, with `args` as its own.
    pub entry: Option<PathBuf>,
}

/// The runtime specification of a container whose cgroup is `cgroup` (a path such as `/wafer/ID`).
pub fn runtime_spec(process: &Process, limits: &Limits, cgroup: &str) -> Value {
    let (uid, gid) = process.user;
    let cpu = limits.cpu_millis.map(|millis| {
        let period = CPU_PERIOD.as_micros() as u64;
        json!({"quota": (u64::from(millis) * period / 1000).max(1000), "period": period})
    });
    let mut args = process.args.clone();
    let mut mounts = standard_mounts(limits);
    if let Some(program) = &process.entry {
        args.insert(0, entry::MOUNTED_AT.to_string());
        mounts.push(json!({"destination": entry::MOUNTED_AT, "type": "bind",
            "source": program, "options": ["rbind", "ro", "nosuid", "nodev"]}));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": process.env,
            "cwd": process.cwd,
            "capabilities": {
                "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "wafer",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": limits.memory, "swap": limits.memory},
                "cpu": cpu,
                "pids": {"limit": limits.pids}
            },
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// The file systems every container gets.
fn standard_mounts(limits: &Limits) -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
            "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", format!("size={}", limits.tmp)]}),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cpu_millis: Option<u32>) -> Value {
        let process = Process {
            args: vec!["/bin/sh".into(), "-c".into(), "cat".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: NOBODY,
            entry: None,
        };
        let limits = Limits {
            memory: 64 << 20,
            cpu_millis,
            pids: 32,
            tmp: 16 << 20,
        };
        runtime_spec(&process, &limits, "/wafer/c1")
    }

    #[test]
    fn a_container_is_unprivileged_read_only_and_alone_on_its_network() {
        let spec = spec(None);
        assert_eq!(spec["process"]["user"], json!({"uid": 65534, "gid": 65534}));
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(spec["process"]["capabilities"]["effective"], json!([]));
        assert_eq!(spec["root"]["readonly"], true);
        let namespaces = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(namespaces.contains(&json!({"type": "network"})));
        let tmp = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .unwrap();
        assert!(tmp["options"]
            .as_array()
            .unwrap()
            .contains(&json!("size=16777216")));
    }

    #[test]
    fn limits_become_cgroup_resources() {
        let spec = spec(Some(250));
        let resources = &spec["linux"]["resources"];
        assert_eq!(resources["memory"]["limit"], 64 << 20);
        assert_eq!(
            resources["memory"]["swap"],
            64 << 20,
            "no swap beyond the limit"
        );
        assert_eq!(resources["cpu"], json!({"quota": 25000, "period": 100000}));
        assert_eq!(resources["pids"]["limit"], 32);
        assert_eq!(spec["linux"]["cgroupsPath"], "/wafer/c1");
        assert_eq!(self::spec(None)["linux"]["resources"]["cpu"], Value::Null);
    }
}
