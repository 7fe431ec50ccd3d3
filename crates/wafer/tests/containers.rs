//! Container functions end to end: the real `wafer serve` with a containerd of the test's own, images
//! made from Debian's `busybox-static`, and runc running them. Without containerd (or root) these skip
//! with a message, unless `CI` is set.

mod common;

use common::containers::{deploy_image, Setup};
use common::registry::Registry;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use wafer_container::containerd::NAMESPACE;
use wafer_container::testing::{busybox_layout, TestContainerd};

#[tokio::test]
async fn job_containers_get_the_request_and_answer_with_their_output() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let server = &setup.server;
    let version = setup
        .deploy_ok(
            "echo",
            "echo \"$REQUEST_METHOD $PATH_INFO $QUERY_STRING $HTTP_X_GREETING $COLOUR\"; id -u; cat; \
             echo to-stderr >&2",
            json!({"env": {"COLOUR": "blue"}}),
        )
        .await;
    assert_eq!(version["kind"], "container");
    let image = version["config"]["image"]
        .as_str()
        .expect("the image digest");
    assert!(image.starts_with("sha256:"), "{image}");

    let (status, headers, body) = server
        .call_with(
            reqwest::Method::POST,
            "/fn/echo/some/path?a=1",
            &[("x-greeting", "hej")],
            "the body",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-wafer-kind"], "command");
    let reply: Value = serde_json::from_str(&body).expect("job JSON");
    assert_eq!(reply["exit_code"], 0);
    assert_eq!(
        reply["stdout"],
        "POST /some/path a=1 hej blue\n65534\nthe body"
    );
    assert_eq!(reply["stderr"], "to-stderr\n");
    assert_eq!(reply["stdout_truncated"], false);

    // Its record has what the cgroup measured, and stderr as its log.
    let id = headers["x-wafer-execution-id"]
        .to_str()
        .expect("id")
        .to_string();
    let record = wait_for("the record", Duration::from_secs(10), || async {
        let (status, body) = server.get_json(&format!("/v1/executions/{id}")).await;
        (status == StatusCode::OK).then_some(body)
    })
    .await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(
        record["usage"]["peak_memory_bytes"].as_u64().unwrap_or(0) > 0,
        "{record}"
    );
    let (_, logs) = server.get_json("/v1/functions/echo/logs").await;
    assert!(logs.to_string().contains("to-stderr"), "{logs}");

    // Exit codes come through; a version is immutable and rollback returns to it.
    setup.deploy_ok("echo", "exit 3", json!({})).await;
    let (_, reply) = server
        .call_json(reqwest::Method::POST, "/fn/echo", "")
        .await;
    assert_eq!(reply["exit_code"], 3, "{reply}");
    let (status, _) = server
        .call_json(
            reqwest::Method::POST,
            "/v1/functions/echo/rollback",
            "{\"version\": 1}",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, reply) = server
        .call_json(reqwest::Method::POST, "/fn/echo", "")
        .await;
    assert_eq!(reply["exit_code"], 0, "{reply}");
    let (_, versions) = server.get_json("/v1/functions/echo/versions").await;
    assert_eq!(versions["versions"][0]["config"]["image"], image);
    setup.no_containers_left().await;
}

#[tokio::test]
async fn the_kernel_holds_containers_to_their_limits_and_their_network() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let server = &setup.server;
    // Over its memory: 500 memory_limit.
    setup
        .deploy_ok(
            "hog",
            "dd if=/dev/zero of=/dev/null bs=96M count=1",
            json!({"memory_mb": 32}),
        )
        .await;
    let (status, body) = server.call_json(reqwest::Method::POST, "/fn/hog", "").await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "memory_limit",
    );

    // Past its timeout: killed, 504.
    setup
        .deploy_ok("sleeper", "sleep 60", json!({"timeout_ms": 1000}))
        .await;
    let (status, body) = server
        .call_json(reqwest::Method::POST, "/fn/sleeper", "")
        .await;
    assert_error(status, &body, StatusCode::GATEWAY_TIMEOUT, "timeout");

    // wafer's own listener on the host's loopback is out of reach.
    let port = server.url.rsplit(':').next().expect("port").to_string();
    setup
        .deploy_ok(
            "probe",
            &format!("echo 'GET /healthz HTTP/1.0' | nc 127.0.0.1 {port} && echo reached"),
            json!({}),
        )
        .await;
    let (_, reply) = server
        .call_json(reqwest::Method::POST, "/fn/probe", "")
        .await;
    assert_ne!(reply["exit_code"], 0, "{reply}");
    assert!(
        !reply["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("reached"),
        "{reply}"
    );

    // A read-only root; a non-root user may not become root.
    setup
        .deploy_ok("writer", "echo x > /bin/x", json!({}))
        .await;
    let (_, reply) = server
        .call_json(reqwest::Method::POST, "/fn/writer", "")
        .await;
    assert!(
        reply["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only"),
        "{reply}"
    );
    setup.no_containers_left().await;
}

#[tokio::test]
async fn cgi_containers_answer_http_and_warm_ones_start_without_being_created() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let server = &setup.server;
    setup
        .deploy_ok(
            "page",
            "printf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-Query: %s\\r\\n\\r\\n' \
             \"$QUERY_STRING\"; cat",
            json!({"cgi": true, "min_warm": 2}),
        )
        .await;
    // Two wait, created and not started.
    wait_for("two warm containers", Duration::from_secs(20), || async {
        (setup.containers().len() == 2).then_some(())
    })
    .await;
    for round in 0..3 {
        // Each call takes a warm one, and the pool fills again behind it.
        wait_for("two warm containers", Duration::from_secs(20), || async {
            (setup.containers().len() == 2).then_some(())
        })
        .await;
        let (status, headers, body) = server
            .call(
                reqwest::Method::POST,
                &format!("/fn/page?r={round}"),
                "posted",
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(headers["x-query"], format!("r={round}"));
        assert_eq!(body, "posted");
    }
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("wafer_instance_starts_total{function=\"page\",start=\"warm\"} 3"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("starts"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The pool is filled again, and a deleted function leaves nothing.
    wait_for("the pool refilled", Duration::from_secs(20), || async {
        (setup.containers().len() == 2).then_some(())
    })
    .await;
    let (status, _, _) = server
        .call(reqwest::Method::DELETE, "/v1/functions/page", "")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    setup.no_containers_left().await;
}

#[tokio::test]
async fn container_functions_run_async_and_on_a_schedule() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let server = &setup.server;
    setup
        .deploy_ok("worker", "cat; echo ' done'", json!({}))
        .await;
    let id = server.invoke_async("worker", "", "queued").await;
    let done = server.finished_execution(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");
    setup
        .deploy_ok("ticker", "echo tick", json!({"schedule": "* * * * * *"}))
        .await;
    wait_for(
        "a cron run of the container",
        Duration::from_secs(30),
        || async {
            let (_, list) = server
                .get_json("/v1/functions/ticker/executions?status=succeeded")
                .await;
            list["executions"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x["trigger"] == "cron"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_restart_after_a_crash_removes_the_containers_left_running() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let Setup {
        server,
        daemon,
        image,
    } = setup;
    let (status, body) = deploy_image(
        &server,
        "slow",
        image,
        json!({"kind": "container", "args": ["/bin/sh", "-c", "sleep 60"], "min_warm": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = server.url.clone();
    let call = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(format!("{url}/fn/slow"))
            .send()
            .await;
    });
    let listed = |daemon: &TestContainerd| {
        let out = daemon.ctr(NAMESPACE, &["containers", "ls", "--quiet"]);
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    // One running the call, one warm.
    wait_for("two containers", Duration::from_secs(20), || async {
        (listed(&daemon) >= 2).then_some(())
    })
    .await;
    let socket = daemon.socket().to_string_lossy().to_string();
    let server = server.restart_with(&["--containerd-socket", &socket]);
    call.abort();
    // The restarted node removed both, and keeps one warm again.
    wait_for("the leftovers removed", Duration::from_secs(30), || async {
        (listed(&daemon) == 1).then_some(())
    })
    .await;
    let logs = server.logs();
    assert!(
        logs.contains("removed the containers a previous run left"),
        "{logs}"
    );
}

#[tokio::test]
async fn without_containerd_a_container_deploy_is_refused_and_wasm_is_unaffected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("no-containerd.sock");
    let server = Server::start_with(&["--containerd-socket", &socket.to_string_lossy()]);
    let (status, body) = deploy_image(
        &server,
        "box",
        busybox_layout("busybox:test"),
        json!({"kind": "container", "args": ["/bin/true"]}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "containerd_unavailable",
    );
    // Nothing was stored, and wasm deploys work.
    let (status, _) = server.get_json("/v1/functions/box").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server
        .deploy_ok(
            "hello",
            wagi_wat("Content-Type: text/plain\n\nhi"),
            json!({}),
        )
        .await;
    let (status, body) = server.get_text("/fn/hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hi"));
    // Bad input is refused clearly: not an image, container settings on wasm, wasm ones on containers.
    let (status, body) = deploy_image(&server, "bad", b"not a tarball".to_vec(), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = server
        .deploy("w", wagi_wat("hi"), json!({"min_warm": 1}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    let (status, body) = deploy_image(
        &server,
        "c",
        busybox_layout("busybox:test"),
        json!({"kind": "container", "key_value_stores": ["a"]}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
}

#[tokio::test]
async fn an_image_is_pulled_from_a_registry_by_reference() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let tarball = dir.path().join("busybox.tar");
    std::fs::write(&tarball, &setup.image).expect("tarball");
    let reference = format!("{}/tools/busybox:1", registry.address);
    let pushed = setup
        .server
        .cli(&["push", &tarball.to_string_lossy(), &reference]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let deployed = setup.server.cli(&[
        "deploy",
        &format!("oci://{reference}"),
        "--kind",
        "container",
        "--name",
        "pulled",
        "--arg",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "echo pulled",
    ]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let (_, info) = setup.server.get_json("/v1/functions/pulled").await;
    let image = info["config"]["image"].as_str().expect("image");
    assert!(
        image.starts_with(&format!("oci://{reference}@sha256:")),
        "{image}"
    );
    let (_, reply) = setup
        .server
        .call_json(reqwest::Method::POST, "/fn/pulled", "")
        .await;
    assert_eq!(reply["stdout"], "pulled\n", "{reply}");
    // An unknown image is refused clearly.
    let missing = setup.server.cli(&[
        "deploy",
        &format!("oci://{}/tools/none:1", registry.address),
        "--kind",
        "container",
        "--name",
        "none",
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("cannot pull"),
        "{}",
        stderr(&missing)
    );
}
