//! End-to-end: outbound HTTP reaches only the hosts a function is granted.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tiny HTTP server on loopback that answers `hello` and counts its connections.
async fn upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    (port, connections)
}

#[tokio::test]
async fn outbound_requests_reach_only_allowed_hosts() {
    let (port, connections) = upstream().await;
    let server = Server::start();
    let fetch = example("http-fetch-js/hello.wasm");
    let target = format!("127.0.0.1:{port}");
    server
        .deploy_ok(
            "allowed",
            fetch.clone(),
            json!({"allowed_outbound_hosts": [target]}),
        )
        .await;
    server.deploy_ok("denied", fetch.clone(), json!({})).await;
    // A wildcard that matches the address still may not reach a loopback host.
    server
        .deploy_ok(
            "wildcard",
            fetch,
            json!({"allowed_outbound_hosts": ["*.0.0.1"]}),
        )
        .await;
    let url = format!("url=http://127.0.0.1:{port}/x");

    let (status, body) = server.get_text(&format!("/fn/allowed?{url}")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "200 hello"));
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    for name in ["denied", "wildcard"] {
        let (status, body) = server.get_text(&format!("/fn/{name}?{url}")).await;
        assert_eq!(status, 502, "{name}: {body}");
        assert!(body.starts_with("fetch failed"), "{name}: {body}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "a refused request connected"
    );
    assert_eq!(server.metric("wafer_compilations_total").await, 1);
}

#[tokio::test]
async fn malformed_outbound_hosts_are_refused_at_deploy() {
    let server = Server::start();
    let (status, body) = server
        .deploy(
            "bad",
            example("http-fetch-js/hello.wasm"),
            json!({"allowed_outbound_hosts": ["ftp://example.com"]}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
}
