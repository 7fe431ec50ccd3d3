//! Container functions under test: the real `wafer serve` wired to a containerd of the test's own,
//! and images made from Debian's `busybox-static`.

use super::{wait_for, Server, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use wafer_container::containerd::NAMESPACE;
use wafer_container::testing::{busybox_layout, TestContainerd};

/// A server wired to a containerd of its own.
pub struct Setup {
    pub server: Server,
    pub daemon: TestContainerd,
    pub image: Vec<u8>,
}

impl Setup {
    /// A server and its containerd, or `None` (after a message) where containerd cannot run.
    pub fn start() -> Option<Setup> {
        let daemon = TestContainerd::start(|_, _| {})?;
        let server =
            Server::start_with(&["--containerd-socket", &daemon.socket().to_string_lossy()]);
        Some(Setup {
            server,
            daemon,
            image: busybox_layout("busybox:test"),
        })
    }

    /// Deploys the busybox image as `name` running `script` under `sh -c`, with `config` on top.
    pub async fn deploy(&self, name: &str, script: &str, config: Value) -> (StatusCode, Value) {
        let mut merged = json!({"kind": "container", "args": ["/bin/sh", "-c", script]});
        if let (Some(merged), Some(extra)) = (merged.as_object_mut(), config.as_object()) {
            merged.extend(extra.clone());
        }
        deploy_image(&self.server, name, self.image.clone(), merged).await
    }

    pub async fn deploy_ok(&self, name: &str, script: &str, config: Value) -> Value {
        let (status, body) = self.deploy(name, script, config).await;
        assert_eq!(status, StatusCode::CREATED, "deploy {name}: {body}");
        body
    }

    /// The ids of the containers in wafer's namespace.
    pub fn containers(&self) -> Vec<String> {
        let listed = self.daemon.ctr(NAMESPACE, &["containers", "ls", "--quiet"]);
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until there are `n` containers in wafer's namespace.
    pub async fn containers_are(&self, n: usize, what: &str) {
        wait_for(what, Duration::from_secs(30), || async {
            (self.containers().len() == n).then_some(())
        })
        .await;
    }

    pub async fn no_containers_left(&self) {
        self.containers_are(0, "every container to be removed")
            .await;
    }
}

/// Deploys an image tarball with `config` as the `image` part of a multipart deploy.
pub async fn deploy_image(
    server: &Server,
    name: &str,
    image: Vec<u8>,
    config: Value,
) -> (StatusCode, Value) {
    server
        .deploy_as("image", name, image, &[("config", config)])
        .await
}
