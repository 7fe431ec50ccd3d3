//! Containers serving HTTP (`port`), and containers reaching out through their proxy: the real
//! `wafer serve`, a containerd of the test's own, busybox `httpd` and `wget` in the containers.
//! Without containerd (or root) these skip with a message, unless `CI` is set.

mod common;

use common::containers::Setup;
use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A container that writes a CGI script to its `/tmp`, says so, and serves it with busybox `httpd`
/// on `$PORT`. The script sleeps `pause` seconds, then answers with what httpd told it.
fn web_server(pause: &str) -> String {
    [
        "mkdir -p /tmp/www/cgi-bin",
        "f=/tmp/www/cgi-bin/hi",
        "echo '#!/bin/sh' > $f",
        "echo 'echo Content-Type: text/plain' >> $f",
        "echo 'echo' >> $f",
        &format!("echo 'sleep {pause}' >> $f"),
        r#"echo 'echo "$REQUEST_METHOD $REQUEST_URI from $REMOTE_ADDR as $(id -u)"' >> $f"#,
        "chmod +x $f",
        "echo serving on $PORT",
        "exec httpd -f -p $PORT -h /tmp/www",
    ]
    .join(" && ")
}

#[tokio::test]
async fn a_container_serving_http_scales_from_zero_takes_requests_at_once_and_goes_back_to_zero() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let server = &setup.server;
    setup
        .deploy_ok(
            "web",
            &web_server("1"),
            json!({"port": 8080, "max_concurrency": 2, "max_replicas": 2,
                   "idle_timeout_ms": 1000, "timeout_ms": 20000}),
        )
        .await;
    // Nothing runs until a request comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(setup.containers().is_empty(), "{:?}", setup.containers());

    // Four at once: two instances, two requests each, all answered.
    let calls = (0..4).map(|i| {
        let http = server.http.clone();
        let url = format!("{}/fn/web/cgi-bin/hi?n={i}", server.url);
        async move {
            let response = http.get(url).send().await.expect("request");
            let status = response.status();
            let id = response.headers()["x-wafer-execution-id"]
                .to_str()
                .expect("id")
                .to_string();
            (status, response.text().await.expect("body"), id)
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, (status, body, _)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{body}");
        // The path below the mount, and the request came from wafer (on the container's own
        // loopback, which httpd sees as IPv4-mapped), to a non-root server.
        let expected = format!("GET /cgi-bin/hi?n={i} from [::ffff:127.0.0.1] as 65534\n");
        assert_eq!(body, &expected);
    }
    assert_eq!(setup.containers().len(), 2, "{:?}", setup.containers());
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("wafer_instance_starts_total{function=\"web\",start=\"cold\"}"),
        "{metrics}"
    );

    // Each instance's first line is in the record of one of its requests.
    let mut said = 0;
    for (_, _, id) in &answers {
        let execution = server.finished_execution(id).await;
        said += execution["logs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["line"] == "serving on 8080")
            .count();
        assert!(
            execution["usage"]["peak_memory_bytes"].as_u64() > Some(0),
            "{execution}"
        );
    }
    assert_eq!(said, 2);

    // Idle past its timeout, each instance is stopped: back to zero, and the next request starts one.
    setup.no_containers_left().await;
    let (status, _, body) = server
        .call(reqwest::Method::POST, "/fn/web/cgi-bin/hi", "")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("POST /cgi-bin/hi"), "{body}");
    setup.no_containers_left().await;
}

#[tokio::test]
async fn min_warm_keeps_servers_running_and_a_server_that_cannot_start_is_a_clear_error() {
    let Some(mut setup) = Setup::start() else {
        return;
    };
    let server = &setup.server;
    setup
        .deploy_ok(
            "kept",
            &web_server("0"),
            json!({"port": 9000, "min_warm": 1, "idle_timeout_ms": 200}),
        )
        .await;
    setup.containers_are(1, "one instance kept running").await;
    let (status, _, body) = server
        .call(reqwest::Method::GET, "/fn/kept/cgi-bin/hi", "")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Idle well past its timeout, it is still there: it is the one kept.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tasks = setup
        .daemon
        .ctr(wafer_container::containerd::NAMESPACE, &["tasks", "ls"]);
    assert_eq!(
        setup.containers().len(),
        1,
        "{}\n{}",
        String::from_utf8_lossy(&tasks.stdout),
        server.logs()
    );
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(
        metrics.contains("wafer_instance_starts_total{function=\"kept\",start=\"warm\"} 1"),
        "{metrics}"
    );

    // A server that exits at once: 500, saying what it wrote.
    setup
        .deploy_ok(
            "broken",
            "echo no config >&2; exit 3",
            json!({"port": 8080}),
        )
        .await;
    let (status, body) = server
        .call_json(reqwest::Method::GET, "/fn/broken", "")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "function_failed",
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("status 3") && message.contains("no config"),
        "{message}"
    );
    // A server over its memory: 500 memory_limit.
    setup
        .deploy_ok(
            "hog",
            "dd if=/dev/zero of=/dev/null bs=96M count=1",
            json!({"port": 8080, "memory_mb": 32}),
        )
        .await;
    let (status, body) = server.call_json(reqwest::Method::GET, "/fn/hog", "").await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "memory_limit",
    );
    // Settings that cannot work are refused at deploy.
    let (status, body) = setup.deploy("low", "true", json!({"port": 80})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");

    // Deleting the function stops its kept instance.
    let (status, _, _) = server
        .call(reqwest::Method::DELETE, "/v1/functions/kept", "")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    setup.no_containers_left().await;

    // A server stopped gracefully takes its containers with it.
    setup
        .deploy_ok(
            "kept",
            &web_server("0"),
            json!({"port": 9000, "min_warm": 2}),
        )
        .await;
    setup.containers_are(2, "two instances kept running").await;
    setup.server.terminate();
    assert!(setup.containers().is_empty(), "{:?}", setup.containers());
}

/// A plain HTTP server on the host at `127.0.0.2` (a loopback address a container's own loopback
/// does not shadow in `NO_PROXY`), answering every request with `from the host`.
async fn host_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfrom the host\n",
                    )
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn containers_reach_only_the_hosts_they_are_allowed_and_only_through_their_proxy() {
    let Some(setup) = Setup::start() else {
        return;
    };
    let server = &setup.server;
    let port = host_server().await;
    let allowed = format!("127.0.0.2:{port}");
    let other = host_server().await;
    setup
        .deploy_ok(
            "fetch",
            &format!(
                "wget -q -O- http://{allowed}/a; \
                 wget -q -O- http://127.0.0.2:{other}/b || echo refused; \
                 printf 'CONNECT {allowed} HTTP/1.1\\r\\nHost: {allowed}\\r\\n\\r\\nGET / HTTP/1.0\\r\\n\\r\\n' \
                   | nc 127.0.0.1 3128"
            ),
            // A proxy of the function's own would lead nowhere: wafer's replaces it.
            json!({"allowed_outbound_hosts": [allowed], "env": {"http_proxy": "http://10.0.0.1:1"}}),
        )
        .await;
    let (_, reply) = server
        .call_json(reqwest::Method::POST, "/fn/fetch", "")
        .await;
    let stdout = reply["stdout"].as_str().unwrap_or_default();
    let lines: Vec<&str> = stdout.lines().collect();
    // The allowed host, through the proxy; the other refused by it; and a tunnel to the allowed one.
    assert_eq!(lines.first(), Some(&"from the host"), "{reply}");
    assert_eq!(lines.get(1), Some(&"refused"), "{reply}");
    assert!(
        stdout.contains("HTTP/1.1 200") && stdout.matches("from the host").count() == 2,
        "{reply}"
    );
    assert!(
        reply["stderr"].as_str().unwrap_or_default().contains("403"),
        "{reply}"
    );

    // Without allowed hosts there is no proxy and no way out at all.
    setup
        .deploy_ok(
            "closed",
            &format!("wget -q -T 2 -O- http://{allowed}/ || echo no way out; env | grep -i proxy"),
            json!({}),
        )
        .await;
    let (_, reply) = server
        .call_json(reqwest::Method::POST, "/fn/closed", "")
        .await;
    assert_eq!(reply["stdout"], "no way out\n", "{reply}");

    // A server may reach out too: the proxy is there before its program starts.
    setup
        .deploy_ok(
            "relay",
            &format!(
                "mkdir -p /tmp/www/cgi-bin && f=/tmp/www/cgi-bin/get && \
                 echo '#!/bin/sh' > $f && echo 'echo Content-Type: text/plain' >> $f && \
                 echo 'echo' >> $f && echo 'wget -q -O- http://{allowed}/' >> $f && chmod +x $f && \
                 exec httpd -f -p $PORT -h /tmp/www"
            ),
            json!({"port": 8080, "allowed_outbound_hosts": [allowed]}),
        )
        .await;
    let (status, _, body) = server
        .call(reqwest::Method::GET, "/fn/relay/cgi-bin/get", "")
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "from the host\n"));
}
