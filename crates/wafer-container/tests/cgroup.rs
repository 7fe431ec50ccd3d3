//! The cgroup reader against this machine's kernel: a process placed in a cgroup of the test's own
//! touches memory and spends CPU, and what the reader reports is what it did; under a memory limit the
//! kernel kills it and the reader counts the kill.
//!
//! Making cgroups needs root; without it the test says why and passes, unless `CI` is set.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use wafer_container::cgroup::{Cgroups, Layout};

/// A cgroup of the test's own in the memory and CPU-accounting hierarchies, removed on drop.
struct TestCgroup {
    cgroups: Cgroups,
    path: String,
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    fn create(name: &str) -> Option<Self> {
        let skip = |reason: String| {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the cgroup test: {reason}"
            );
            eprintln!("skipping the cgroup test: {reason}");
            None
        };
        let cgroups = match Cgroups::detect() {
            Ok(cgroups) => cgroups,
            Err(e) => return skip(e.to_string()),
        };
        let path = format!("/wafer-test/{name}-{}", std::process::id());
        let controllers: &[&str] = match cgroups.layout() {
            Layout::V1 => &["memory", "cpuacct"],
            Layout::V2 => &["memory"],
        };
        let mut dirs = Vec::new();
        for controller in controllers {
            let dir = cgroups.dir(controller, &path);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return skip(format!("cannot make {} (root needed): {e}", dir.display()));
            }
            dirs.push(dir);
        }
        Some(Self {
            cgroups,
            path,
            dirs,
        })
    }

    fn limit_memory(&self, bytes: u64) {
        let memory = self.cgroups.dir("memory", &self.path);
        match self.cgroups.layout() {
            Layout::V1 => {
                std::fs::write(memory.join("memory.limit_in_bytes"), bytes.to_string()).unwrap();
                // Without swap accounting the limit is memory alone; with it, keep swap out too.
                let _ = std::fs::write(
                    memory.join("memory.memsw.limit_in_bytes"),
                    bytes.to_string(),
                );
            }
            Layout::V2 => {
                std::fs::write(memory.join("memory.max"), bytes.to_string()).unwrap();
                let _ = std::fs::write(memory.join("memory.swap.max"), "0");
            }
        }
    }

    /// Runs a Python program inside the cgroup; whether it exited on its own.
    fn run_python(&self, program: &str) -> bool {
        let joins: String = self
            .dirs
            .iter()
            .map(|dir| format!("echo $$ > {}/cgroup.procs && ", dir.display()))
            .collect();
        Command::new("sh")
            .arg("-c")
            .arg(format!("{joins}exec python3 -c '{program}'"))
            .status()
            .expect("run sh")
            .success()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// Touches every page of `MiB` mebibytes, then spins for a quarter of a second.
fn program(mib: u64) -> String {
    format!(
        "import time\nx = bytearray({mib} << 20)\nx[::4096] = b\"\\x01\" * (len(x) // 4096)\n\
         end = time.process_time() + 0.25\nwhile time.process_time() < end: pass"
    )
}

#[test]
fn a_cgroups_peak_memory_and_cpu_time_are_what_its_process_used() {
    let Some(cgroup) = TestCgroup::create("usage") else {
        return;
    };
    assert!(cgroup.run_python(&program(64)), "the program ran");
    let usage = cgroup.cgroups.usage(&cgroup.path).expect("usage");
    println!("{:?}: {usage:?}", cgroup.cgroups.layout());
    let peak = usage.peak_memory.expect("this kernel reports a peak");
    assert!(
        (64 << 20..1 << 30).contains(&peak),
        "peak {peak} for 64 MiB touched"
    );
    let cpu = usage.cpu.expect("this kernel reports CPU time");
    assert!(cpu >= Duration::from_millis(200), "cpu {cpu:?}");
    assert_eq!(usage.oom_kills, 0);
}

#[test]
fn a_process_over_its_memory_limit_is_killed_and_counted() {
    let Some(cgroup) = TestCgroup::create("oom") else {
        return;
    };
    cgroup.limit_memory(32 << 20);
    assert!(
        !cgroup.run_python(&program(128)),
        "128 MiB under a 32 MiB limit must not finish"
    );
    let usage = cgroup.cgroups.usage(&cgroup.path).expect("usage");
    println!("{:?}: {usage:?}", cgroup.cgroups.layout());
    assert_eq!(usage.oom_kills, 1, "{usage:?}");
    assert!(usage.peak_memory.is_some_and(|peak| peak <= 32 << 20));
}
