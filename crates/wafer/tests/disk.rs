//! A full disk: with the data directory on a small file system that fills up, deploys answer 507 and
//! leave nothing behind, async submissions are refused with 503 rather than acknowledged and lost, sync
//! calls keep working — and once there is space again everything works without a restart.

mod common;

use common::*;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a few MiB mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    at: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one, or `None` (with a message) where this process may not mount outside CI.
    fn mount() -> Option<Self> {
        let at = tempfile::tempdir().expect("a mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
            .arg(at.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the full-disk test: mounting a tmpfs failed (it runs as root)"
            );
            eprintln!("skipped: cannot mount a tmpfs here (the test needs root)");
            return None;
        }
        Some(Self { at })
    }

    fn path(&self) -> &Path {
        self.at.path()
    }

    /// Writes a file of zeros until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        let ballast = self.path().join("ballast");
        let mut file = std::fs::File::create(&ballast).expect("create the ballast");
        let chunk = vec![0u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        ballast
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.at.path()).status();
    }
}

/// The names of the files under the data directory's `modules/`.
fn module_files(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = server
        .module_files()
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_what_it_cannot_store_and_serves_on_until_space_returns() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let data = tempfile::tempdir_in(disk.path()).expect("a data directory on the small disk");
    let server = Server::start_in_dir(data, &["--compile-cache-size", "0"]);
    let hello = |text: &str| wagi_wat(&format!("Content-Type: text/plain\n\n{text}\n"));
    server.deploy_ok("hello", hello("one"), json!({})).await;
    let (status, _, _) = server.call(reqwest::Method::GET, "/fn/hello", "").await;
    assert_eq!(status, StatusCode::OK);
    let before = module_files(&server);

    let ballast = disk.fill();

    // A deploy, of a new function or a new version, is refused whole.
    for name in ["other", "hello"] {
        let (status, body) = server.deploy(name, hello("two"), json!({})).await;
        assert_error(
            status,
            &body,
            StatusCode::INSUFFICIENT_STORAGE,
            "insufficient_storage",
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("no space left"), "{body}");
    }
    assert_eq!(
        module_files(&server),
        before,
        "a refused deploy left files behind"
    );
    let (status, _) = server.get_json("/v1/functions/other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, versions) = server.get_json("/v1/functions/hello/versions").await;
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );

    // An async submission is refused, to be retried, not acknowledged.
    let response = server
        .request(
            reqwest::Method::POST,
            "/v1/functions/hello/invoke?async=true",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // Sync calls go on.
    for _ in 0..20 {
        let (status, _, text) = server.call(reqwest::Method::GET, "/fn/hello", "").await;
        assert_eq!((status, text.trim()), (StatusCode::OK, "one"));
    }

    // Space again: everything works, without a restart.
    std::fs::remove_file(&ballast).expect("remove the ballast");
    server.deploy_ok("other", hello("two"), json!({})).await;
    let (status, _, text) = server.call(reqwest::Method::GET, "/fn/other", "").await;
    assert_eq!((status, text.trim()), (StatusCode::OK, "two"));
    let id = server.invoke_async("hello", "", "").await;
    wait_for(
        "the async execution to succeed",
        std::time::Duration::from_secs(30),
        || async {
            let (_, e) = server.get_json(&format!("/v1/executions/{id}")).await;
            (e["status"] == "succeeded").then_some(())
        },
    )
    .await;
    assert!(
        server.logs().contains("no space left"),
        "the refusals were not logged:\n{}",
        server.logs()
    );
}
