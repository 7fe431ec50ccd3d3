//! Async delivery end to end: dead letters kept and redriven, destinations (surviving a crash),
//! event age, queue bounds and idempotent submission.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn deploy_flaky(server: &Server, name: &str, config: Value) {
    server.deploy_ok(name, fixture("flaky.wasm"), config).await;
}

/// The executions of `name` in `status`.
async fn executions_in(server: &Server, name: &str, status: &str) -> Vec<Value> {
    let (code, page) = server
        .get_json(&format!(
            "/v1/functions/{name}/executions?status={status}&limit=1000"
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{page}");
    page["executions"].as_array().cloned().unwrap_or_default()
}

/// Waits for the first execution of `name` in `status` (`what` says what it is) and returns it.
async fn first_in(server: &Server, name: &str, status: &str, what: &str) -> Value {
    wait_for(what, Duration::from_secs(60), || async {
        executions_in(server, name, status).await.into_iter().next()
    })
    .await
}

#[tokio::test]
async fn dead_executions_keep_their_request_and_are_retried_or_redriven_once_fixed() {
    let server = Server::start();
    deploy_flaky(
        &server,
        "orders",
        json!({"max_attempts": 2, "retry_backoff_ms": 10}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = format!("order {i}");
        ids.push(
            server
                .invoke_async("orders", "&fail_unless=HEALED", &body)
                .await,
        );
    }
    for id in &ids {
        let e = server.finished_execution(id).await;
        assert_eq!(
            (e["status"].as_str(), e["attempts"].as_u64()),
            (Some("dead"), Some(2)),
            "{e}"
        );
    }
    assert_eq!(executions_in(&server, "orders", "dead").await.len(), 3);
    let out = server.cli(&["executions", "orders", "--status", "dead"]);
    assert_eq!(stdout(&out).matches("dead").count(), 3, "{}", stdout(&out));

    // Only a dead letter can be retried: unknown and succeeded executions cannot.
    let (status, body) = server
        .call_json(Method::POST, "/v1/executions/nope/retry", "")
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    // The operator fixes the fault; a retry runs the same execution again with its request.
    let out = server.cli(&["config", "orders", "--var", "HEALED=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = server
        .call_json(
            Method::POST,
            &format!("/v1/executions/{}/retry", ids[0]),
            "",
        )
        .await;
    assert_eq!(
        (status, body["execution_id"].as_str()),
        (StatusCode::ACCEPTED, Some(ids[0].as_str()))
    );
    let e = server.finished_execution(&ids[0]).await;
    assert_eq!(
        (e["status"].as_str(), e["attempts"].as_u64()),
        (Some("succeeded"), Some(3)),
        "{e}"
    );
    assert_eq!(
        e["output"], "ok on attempt 3: order 0\n",
        "the original request ran again"
    );
    let (status, body) = server
        .call_json(
            Method::POST,
            &format!("/v1/executions/{}/retry", ids[0]),
            "",
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "not_retryable");

    // A redrive takes the rest.
    let out = server.cli(&["redrive", "orders", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let redriven: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(redriven["redriven"], 2);
    for (i, id) in ids.iter().enumerate().skip(1) {
        let e = server.finished_execution(id).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["output"], format!("ok on attempt 3: order {i}\n"));
    }
    assert!(executions_in(&server, "orders", "dead").await.is_empty());
    let (status, body) = server
        .call_json(Method::POST, "/v1/functions/orders/redrive?since=1h", "")
        .await;
    assert_eq!(
        (status, body["redriven"].as_u64()),
        (StatusCode::OK, Some(0))
    );
    let (status, body) = server
        .call_json(Method::POST, "/v1/functions/nobody/redrive", "")
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server
        .call_json(Method::POST, "/v1/functions/orders/redrive?since=soon", "")
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn destinations_get_the_record_of_a_success_and_of_a_failure() {
    let sink = CallbackSink::start();
    let server = Server::start();
    // A private function is a destination too: the deploy that named it authorised its calls.
    deploy_flaky(&server, "audit", json!({"private": true})).await;
    deploy_flaky(
        &server,
        "billing",
        json!({
            "max_attempts": 1,
            "on_success": {"function": "audit"},
            "on_failure": {"url": format!("{}/failed", sink.url)},
            "allowed_outbound_hosts": [sink.url],
        }),
    )
    .await;
    let ok = server.invoke_async("billing", "", "paid").await;
    let record = first_in(&server, "audit", "succeeded", "the destination's execution").await;
    assert_eq!(record["trigger"], "destination", "{record}");
    let output = record["output"].as_str().unwrap_or_default();
    let delivered: Value =
        serde_json::from_str(output.trim_start_matches("ok on attempt 1: ").trim_end())
            .unwrap_or_else(|e| panic!("the record as the body ({e}): {output}"));
    assert_eq!(
        (delivered["id"].as_str(), delivered["status"].as_str()),
        (Some(ok.as_str()), Some("succeeded"))
    );
    assert_eq!(delivered["output"], "ok on attempt 1: paid\n");

    let failed = server
        .invoke_async("billing", "&fail=always", "declined")
        .await;
    let body = sink.record_of(&failed, "the failure's delivery").await;
    assert_eq!(body["status"], "dead");
    let e = wait_for(
        "the delivery to be recorded",
        Duration::from_secs(30),
        || async {
            let (_, e) = server.get_json(&format!("/v1/executions/{failed}")).await;
            (e["destination_state"] == "delivered").then_some(e)
        },
    )
    .await;
    assert_eq!(e["status"], "dead");
    assert!(
        server
            .metric("wafer_destinations_total{result=\"delivered\"}")
            .await
            >= 2
    );

    // A destination URL no host rule allows, and a destination that is no function name, are
    // refused at deploy.
    for config in [
        json!({"on_failure": {"url": "http://203.0.113.9/x"}}),
        json!({"on_success": {"function": "Not A Name"}}),
    ] {
        let (status, body) = server.deploy("leaky", fixture("flaky.wasm"), config).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    }
}

#[tokio::test]
async fn a_destination_loop_ends_after_four_hops() {
    let server = Server::start();
    deploy_flaky(&server, "echo", json!({"on_success": {"function": "echo"}})).await;
    server.invoke_async("echo", "", "start").await;
    let chain = wait_for("the chain to end", Duration::from_secs(60), || async {
        let runs = executions_in(&server, "echo", "succeeded").await;
        let settled = runs.iter().all(|e| e["destination_state"] != "pending");
        (runs.len() == 5 && settled).then_some(runs)
    })
    .await;
    let by_trigger = |t: &str| chain.iter().filter(|e| e["trigger"] == t).count();
    assert_eq!((by_trigger("async"), by_trigger("destination")), (1, 4));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        executions_in(&server, "echo", "succeeded").await.len(),
        5,
        "no fifth hop"
    );
    assert!(
        server
            .logs()
            .contains("the chain of destinations is 4 long"),
        "logged"
    );
}

#[tokio::test]
async fn a_destination_owed_when_the_node_is_killed_is_delivered_after_its_restart() {
    // A port nothing listens on yet: the URL destination fails until the sink starts there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let server = Server::start();
    deploy_flaky(
        &server,
        "jobs",
        json!({
            "max_attempts": 1,
            "on_success": {"function": "later"},
            "on_failure": {"url": format!("{url}/failed")},
            "allowed_outbound_hosts": [url],
        }),
    )
    .await;
    let ok = server.invoke_async("jobs", "", "fine").await;
    let failed = server.invoke_async("jobs", "&fail=always", "broken").await;
    for id in [&ok, &failed] {
        server.finished_execution(id).await;
    }
    // Neither can be delivered yet: `later` does not exist, the sink is down. Both stay owed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in [&ok, &failed] {
        let (_, e) = server.get_json(&format!("/v1/executions/{id}")).await;
        assert_eq!(e["destination_state"], "pending", "{e}");
    }
    let server = server.restart();
    let sink = CallbackSink::start_on(port);
    deploy_flaky(&server, "later", json!({})).await;
    let record = first_in(&server, "later", "succeeded", "the success's destination").await;
    assert_eq!(record["trigger"], "destination");
    sink.record_of(&failed, "the failure's delivery").await;
    // Settled once each: nothing is delivered twice.
    for id in [&ok, &failed] {
        wait_for(
            "the delivery to settle",
            Duration::from_secs(30),
            || async {
                let (_, e) = server.get_json(&format!("/v1/executions/{id}")).await;
                (e["destination_state"] == "delivered").then_some(())
            },
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_later = executions_in(&server, "later", "succeeded").await.len();
    let to_sink = sink
        .bodies()
        .iter()
        .filter(|b| b["id"] == failed.as_str())
        .count();
    println!("deliveries after the crash: {to_later} to the function, {to_sink} to the URL");
    assert_eq!((to_later, to_sink), (1, 1));
}

#[tokio::test]
async fn an_execution_waiting_past_its_age_expires_unrun_and_a_full_queue_refuses() {
    let sink = CallbackSink::start();
    // One worker, held by a spinning function: everything else waits.
    let server = Server::start_with(&["--workers", "1"]);
    server
        .deploy_ok(
            "spin",
            spin_wat(),
            json!({"timeout_ms": 1500, "max_attempts": 1, "max_queued": 1}),
        )
        .await;
    deploy_flaky(
        &server,
        "fresh",
        json!({
            "max_event_age_ms": 300,
            "on_failure": {"url": sink.url},
            "allowed_outbound_hosts": [sink.url],
        }),
    )
    .await;
    let spinning = server.invoke_async("spin", "", "").await;
    wait_for("the spinner to run", Duration::from_secs(30), || async {
        let (_, e) = server.get_json(&format!("/v1/executions/{spinning}")).await;
        (e["status"] == "running").then_some(())
    })
    .await;
    let stale = server.invoke_async("fresh", "", "too late").await;
    // `spin` has one waiting now (the running one is not waiting): the next is refused.
    server.invoke_async("spin", "", "").await;
    let (status, headers, body) = server
        .call(Method::POST, "/v1/functions/spin/invoke?async=true", "")
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert!(body.contains("queue_full"), "{body}");
    let (_, all) = server.get_json("/v1/functions/spin/executions").await;
    assert_eq!(
        all["executions"].as_array().map(Vec::len),
        Some(2),
        "nothing stored"
    );

    let e = server.finished_execution(&stale).await;
    assert_eq!(
        (e["status"].as_str(), e["attempts"].as_u64()),
        (Some("expired"), Some(1)),
        "{e}"
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap_or_default()
            .contains("max_event_age_ms"),
        "{e}"
    );
    assert!(e["usage"].is_null(), "it never ran");
    assert_eq!(
        server
            .metric("wafer_expired_executions_total{function=\"fresh\"}")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("wafer_queue_full_total{function=\"spin\"}")
            .await,
        1
    );
    wait_for(
        "on_failure to get the expired record",
        Duration::from_secs(30),
        || async {
            sink.bodies()
                .into_iter()
                .find(|b| b["id"] == stale.as_str() && b["status"] == "expired")
        },
    )
    .await;
    // An expired execution is a dead letter: listed, and retried with its request (once the worker
    // is free, so it does not expire again).
    assert_eq!(executions_in(&server, "fresh", "expired").await.len(), 1);
    wait_for("the spinners to end", Duration::from_secs(30), || async {
        let (_, queue) = server.get_json("/v1/queue").await;
        (queue["queued"] == 0 && queue["running"] == 0).then_some(())
    })
    .await;
    let out = server.cli(&["retry", &stale]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = server.finished_execution(&stale).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["output"], "ok on attempt 2: too late\n");
}

#[tokio::test]
async fn an_idempotency_key_makes_concurrent_submissions_one_execution() {
    let server = Server::start();
    deploy_flaky(&server, "pay", json!({})).await;
    let submit = |body: &'static str| {
        server.call_with(
            Method::POST,
            "/v1/functions/pay/invoke?async=true",
            &[("idempotency-key", "payment-42")],
            body,
        )
    };
    let answers = futures_util::future::join_all((0..16).map(|_| submit("100 EUR"))).await;
    let mut ids = std::collections::BTreeSet::new();
    for (status, _, body) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
        let reply: Value = serde_json::from_str(body).expect("json");
        ids.insert(
            reply["execution_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(ids.len(), 1, "one execution: {ids:?}");
    let id = ids.into_iter().next().unwrap_or_default();
    let e = server.finished_execution(&id).await;
    assert_eq!(e["output"], "ok on attempt 1: 100 EUR\n");
    let (_, page) = server.get_json("/v1/functions/pay/executions").await;
    assert_eq!(
        page["executions"].as_array().map(Vec::len),
        Some(1),
        "it ran once"
    );
    // The same key again, after it ran: the same execution; with another body: refused.
    let (status, _, body) = submit("100 EUR").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(body.contains(&id), "{body}");
    let (status, _, body) = submit("200 EUR").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("idempotency_key_reused"), "{body}");
    let out = server.cli(&[
        "invoke",
        "pay",
        "--async",
        "--idempotency-key",
        "payment-42",
        "--data",
        "100 EUR",
        "-o",
        "json",
    ]);
    let reply: Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(reply["execution_id"], id.as_str());
}
