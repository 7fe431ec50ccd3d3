//! Execution records, the async queue, logs, metrics, cron and the API description, end to end.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn deploy_flaky(server: &Server, config: Value) {
    server
        .deploy_ok("flaky", fixture("flaky.wasm"), config)
        .await;
}

#[tokio::test]
async fn an_async_invocation_is_acknowledged_then_runs_with_a_full_record() {
    let server = Server::start();
    deploy_flaky(&server, json!({})).await;
    let id = server.invoke_async("flaky", "", "hello").await;
    let e = server.finished_execution(&id).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        (e["trigger"].as_str(), e["attempts"].as_u64()),
        (Some("async"), Some(1))
    );
    assert_eq!(e["http_status"], 200);
    assert_eq!(e["output"], "ok on attempt 1: hello\n");
    assert!(e["usage"]["cpu_us"].as_u64().is_some(), "{e}");
    assert!(
        e["usage"]["peak_memory_bytes"].as_u64().unwrap() >= 65536,
        "{e}"
    );
    assert!(e["usage"]["instantiate_us"].as_u64().is_some(), "{e}");
    assert!(e["duration_ms"].as_f64().unwrap() > 0.0);
    for field in ["queued_at", "started_at", "finished_at"] {
        assert!(e[field].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    let logs: Vec<&str> = e["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap())
        .collect();
    assert_eq!(logs, [format!("execution {id} attempt 1")], "{e}");
}

#[tokio::test]
async fn a_failing_attempt_is_retried_with_backoff_until_it_succeeds() {
    let server = Server::start();
    deploy_flaky(&server, json!({"max_attempts": 5, "retry_backoff_ms": 50})).await;
    let id = server.invoke_async("flaky", "&fail_until=3", "").await;
    let e = server.finished_execution(&id).await;
    assert_eq!(
        (e["status"].as_str(), e["attempts"].as_u64()),
        (Some("succeeded"), Some(3)),
        "{e}"
    );
    assert_eq!(e["output"], "ok on attempt 3: \n");
    assert_eq!(
        server
            .metric("wafer_retries_total{function=\"flaky\"}")
            .await,
        2
    );
}

#[tokio::test]
async fn an_execution_that_fails_every_attempt_is_dead() {
    let server = Server::start();
    deploy_flaky(&server, json!({"max_attempts": 2, "retry_backoff_ms": 10})).await;
    let id = server.invoke_async("flaky", "&fail=always", "").await;
    let e = server.finished_execution(&id).await;
    assert_eq!(
        (e["status"].as_str(), e["attempts"].as_u64()),
        (Some("dead"), Some(2)),
        "{e}"
    );
    assert_eq!(e["http_status"], 500);
    assert_eq!(
        server
            .metric("wafer_dead_executions_total{function=\"flaky\"}")
            .await,
        1
    );
    // The queue's view lists it among the dead, with nothing left waiting.
    let (status, queue) = server.get_json("/v1/queue").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (queue["queued"].as_u64(), queue["running"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(queue["dead"][0]["id"], id.as_str(), "{queue}");
    assert_eq!(queue["retrying"].as_array().map(Vec::len), Some(0));
    // Unknown functions and bad parameters are refused before anything is stored.
    let (status, body) = server
        .call_json(Method::POST, "/v1/functions/nope/invoke?async=true", "")
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server.get_json("/v1/executions/nope").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_finished_execution_is_posted_to_an_allowed_callback_only() {
    let sink = CallbackSink::start();
    let server = Server::start();
    deploy_flaky(&server, json!({"allowed_outbound_hosts": [sink.url]})).await;
    let callback = format!("&callback_url={}/done", sink.url);
    let id = server.invoke_async("flaky", &callback, "ping").await;
    let body = sink.record_of(&id, "the callback").await;
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["output"], "ok on attempt 1: ping\n");
    let e = wait_for(
        "the callback to be marked",
        Duration::from_secs(30),
        || async {
            let (_, e) = server.get_json(&format!("/v1/executions/{id}")).await;
            (e["callback_state"] == "delivered").then_some(e)
        },
    )
    .await;
    assert_eq!(e["callback_url"], format!("{}/done", sink.url));

    let (status, reply) = server
        .call_json(
            Method::POST,
            "/v1/functions/flaky/invoke?async=true&callback_url=http://203.0.113.9/hook",
            "",
        )
        .await;
    assert_error(status, &reply, StatusCode::BAD_REQUEST, "invalid_callback");
}

#[tokio::test]
async fn sync_calls_are_recorded_and_listed_newest_first_in_pages() {
    let server = Server::start();
    deploy_flaky(&server, json!({})).await;
    let mut ids = Vec::new();
    for path in [
        "/fn/flaky",
        "/fn/flaky?fail=always",
        "/fn/flaky",
        "/fn/flaky",
    ] {
        let (_, headers, _) = server.call(Method::GET, path, "").await;
        ids.push(
            headers["x-wafer-execution-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    let (status, _, _) = server
        .call(Method::POST, "/v1/functions/flaky/invoke", "x")
        .await;
    assert_eq!(status, StatusCode::OK);
    let list = wait_for("five records", Duration::from_secs(30), || async {
        let (_, list) = server
            .get_json("/v1/functions/flaky/executions?limit=3")
            .await;
        let next = list["next"].as_str()?.to_string();
        let (_, rest) = server
            .get_json(&format!(
                "/v1/functions/flaky/executions?limit=3&before={next}"
            ))
            .await;
        let mut all = list["executions"].as_array()?.clone();
        all.extend(rest["executions"].as_array()?.iter().cloned());
        (all.len() == 5).then_some(all)
    })
    .await;
    assert_eq!(list[0]["trigger"], "api");
    let listed: Vec<&str> = list[1..]
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    let (_, failed) = server
        .get_json("/v1/functions/flaky/executions?status=failed")
        .await;
    let failed = failed["executions"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0]["id"].as_str(), failed[0]["http_status"].as_u64()),
        (Some(ids[1].as_str()), Some(500))
    );
    let (status, body) = server
        .get_json("/v1/functions/flaky/executions?status=sideways")
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

    let stats = server.cli(&["stats", "flaky"]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    assert!(
        stdout(&stats).contains("flaky: 5 executions (1 failed, 4 succeeded)"),
        "{}",
        stdout(&stats)
    );
    let shown = server.cli(&["execution", &ids[1]]);
    let text = stdout(&shown);
    assert!(
        text.contains("status     failed") && text.contains("failing on purpose"),
        "{text}"
    );
}

#[tokio::test]
async fn logs_are_kept_per_execution_and_followed_live() {
    let server = Server::start();
    deploy_flaky(&server, json!({})).await;
    let (_, headers, _) = server.call(Method::GET, "/fn/flaky", "").await;
    let first = headers["x-wafer-execution-id"]
        .to_str()
        .unwrap()
        .to_string();
    wait_for("the first log line", Duration::from_secs(30), || async {
        let (_, logs) = server.get_json("/v1/functions/flaky/logs").await;
        let lines = logs["logs"].as_array()?;
        (lines.len() == 1 && lines[0]["execution_id"] == first.as_str()).then_some(())
    })
    .await;

    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["logs", "flaky", "-f"])
        .env("WAFER_SERVER", &server.url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wafer logs -f");
    let stdout = follower.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let next_line = || {
        received
            .recv_timeout(Duration::from_secs(30))
            .expect("a followed line")
    };
    assert!(next_line().contains(&format!("{first} stderr info: execution {first} attempt 1")));
    let (_, headers, _) = server.call(Method::GET, "/fn/flaky?fail=always", "").await;
    let second = headers["x-wafer-execution-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(next_line().ends_with(&format!(
        "{second} stderr info: execution {second} attempt 1"
    )));
    assert!(next_line().ends_with(&format!("{second} stderr info: failing on purpose")));
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[tokio::test]
async fn metrics_count_cold_and_warm_starts_and_the_queue() {
    let server = Server::start();
    deploy_flaky(&server, json!({})).await;
    let start =
        |kind: &str| format!("wafer_instance_starts_total{{function=\"flaky\",start=\"{kind}\"}}");
    server.call(Method::GET, "/fn/flaky", "").await;
    assert_eq!(server.metric(&start("cold")).await, 1);
    server.call(Method::GET, "/fn/flaky", "").await;
    server.call(Method::GET, "/fn/flaky", "").await;
    assert_eq!(server.metric(&start("warm")).await, 2);
    assert_eq!(server.metric("wafer_queue_depth").await, 0);
    let id = server.invoke_async("flaky", "", "").await;
    server.finished_execution(&id).await;
    assert_eq!(
        server
            .metric("wafer_invocations_total{function=\"flaky\",kind=\"wagi\",status=\"200\"}")
            .await,
        4
    );
}

#[tokio::test]
async fn a_schedule_runs_the_function_as_cron_executions() {
    let server = Server::start();
    let (status, body) = server
        .deploy(
            "flaky",
            fixture("flaky.wasm"),
            json!({"schedule": "every minute"}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    deploy_flaky(&server, json!({"schedule": "* * * * * *"})).await;
    let cron = wait_for("two cron executions", Duration::from_secs(30), || async {
        let (_, list) = server
            .get_json("/v1/functions/flaky/executions?status=succeeded")
            .await;
        let runs = list["executions"].as_array()?.clone();
        (runs.len() >= 2).then_some(runs)
    })
    .await;
    assert!(cron.iter().all(|e| e["trigger"] == "cron"), "{cron:?}");
    // The schedule survives a restart.
    let server = server.restart();
    let before = cron.len();
    wait_for(
        "a cron execution after the restart",
        Duration::from_secs(30),
        || async {
            let (_, list) = server
                .get_json("/v1/functions/flaky/executions?limit=1000")
                .await;
            (list["executions"].as_array()?.len() > before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_api_description_lists_every_route_and_renders_offline() {
    let server = Server::start();
    let (status, doc) = server.get_json("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/functions", "get"),
        ("/v1/functions/{name}", "get"),
        ("/v1/functions/{name}", "delete"),
        ("/v1/functions/{name}/versions", "get"),
        ("/v1/functions/{name}/versions", "post"),
        ("/v1/apps", "post"),
        ("/v1/functions/{name}/rollback", "post"),
        ("/v1/functions/{name}/aliases", "get"),
        ("/v1/functions/{name}/aliases/{alias}", "get"),
        ("/v1/functions/{name}/aliases/{alias}", "put"),
        ("/v1/functions/{name}/aliases/{alias}", "delete"),
        ("/v1/functions/{name}/invoke", "post"),
        ("/v1/executions/{id}/retry", "post"),
        ("/v1/functions/{name}/redrive", "post"),
        ("/2015-03-31/functions", "get"),
        ("/2015-03-31/functions/{FunctionName}", "get"),
        ("/2015-03-31/functions/{FunctionName}/invocations", "post"),
        ("/v1/functions/{name}/executions", "get"),
        ("/v1/functions/{name}/logs", "get"),
        ("/v1/functions/{name}/stats", "get"),
        ("/v1/stats", "get"),
        ("/v1/queue", "get"),
        ("/v1/executions/{id}", "get"),
        ("/v1/functions/{name}/config", "get"),
        ("/v1/functions/{name}/config", "put"),
        ("/v1/kv/{store}", "get"),
        ("/v1/kv/{store}/{key}", "get"),
        ("/v1/kv/{store}/{key}", "put"),
        ("/v1/kv/{store}/{key}", "delete"),
        ("/fn/{name}", "post"),
        ("/fn/{name}/{rest}", "get"),
        ("/healthz", "get"),
        ("/v1/nodes", "get"),
        ("/metrics", "get"),
        ("/api/openapi.json", "get"),
        ("/api/docs", "get"),
        ("/v1/keys", "post"),
        ("/v1/keys", "get"),
        ("/v1/keys/{key_id}", "get"),
        ("/v1/keys/{key_id}/revoke", "post"),
        ("/v1/audit", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(paths.len(), 33, "{:?}", paths.keys().collect::<Vec<_>>());
    // Management routes document 403 (a key's scope; on writes, the cross-site refusal too); guests'
    // routes do not have it.
    let responses = |path: &str, method: &str| paths[path][method]["responses"].clone();
    assert!(responses("/v1/functions/{name}/versions", "post")
        .get("403")
        .is_some());
    assert!(responses("/v1/kv/{store}/{key}", "delete")
        .get("403")
        .is_some());
    assert!(responses("/v1/apps", "post").get("403").is_some());
    let read_403 = responses("/v1/functions", "get")["403"]["description"].to_string();
    assert!(
        read_403.contains("forbidden") && !read_403.contains("cross_site"),
        "{read_403}"
    );
    assert!(responses("/fn/{name}", "post").get("403").is_none());
    for schema in [
        "Execution",
        "FunctionConfig",
        "ErrorBody",
        "ExecutionStats",
        "StatsWindow",
        "AsyncAccepted",
        "Alias",
        "AliasList",
        "Redriven",
        "Destination",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
    let (status, page) = server.get_text("/api/docs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("fetch(\"openapi.json\")"));
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "the page must not load anything"
    );
}

#[tokio::test]
async fn stats_windows_count_every_attempt_and_outlive_pruned_records() {
    let server = Server::start();
    server
        .deploy_ok(
            "steady",
            wagi_wat("Content-Type: text/plain\n\nok"),
            json!({}),
        )
        .await;
    server.deploy_ok("broken", trap_wat(), json!({})).await;
    for _ in 0..6 {
        let (status, _, _) = server.call(Method::GET, "/fn/steady", "").await;
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..2 {
        let (status, _, _) = server.call(Method::GET, "/fn/broken", "").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    // The sync records are written after the answers: wait for them to show in the window.
    let window = |name: &'static str| {
        let server = &server;
        async move {
            let (status, stats) = server
                .get_json(&format!("/v1/functions/{name}/stats?since=15m"))
                .await;
            assert_eq!(status, StatusCode::OK, "{stats}");
            stats
        }
    };
    wait_for(
        "six attempts in the window",
        Duration::from_secs(10),
        || async { (window("steady").await["window"]["invocations"] == 6).then_some(()) },
    )
    .await;
    // An async attempt counts too.
    let id = server.invoke_async("steady", "", "").await;
    server.finished_execution(&id).await;
    let steady = wait_for("the async attempt", Duration::from_secs(10), || async {
        let stats = window("steady").await;
        (stats["window"]["invocations"] == 7).then_some(stats)
    })
    .await;
    let w = &steady["window"];
    assert_eq!(
        (w["succeeded"].as_u64(), w["failed"].as_u64()),
        (Some(7), Some(0))
    );
    assert_eq!(w["error_rate"], 0.0);
    assert_eq!(w["bucket_seconds"], 60);
    let buckets = w["buckets"].as_array().unwrap();
    assert!((15..=16).contains(&buckets.len()), "{}", buckets.len());
    let last_two: u64 = buckets[buckets.len() - 2..]
        .iter()
        .map(|b| b["succeeded"].as_u64().unwrap())
        .sum();
    assert_eq!(last_two, 7, "the last minutes hold them: {buckets:?}");
    assert!(w["p50_ms"].as_f64().unwrap() > 0.0 && w["p99_ms"].as_f64().is_some());
    let broken = wait_for("two failures", Duration::from_secs(10), || async {
        let stats = window("broken").await;
        (stats["window"]["failed"] == 2).then_some(stats)
    })
    .await;
    assert_eq!(broken["window"]["error_rate"], 1.0);
    // Every function's last quarter hour at once, for the console's overview.
    let (status, overview) = server.get_json("/v1/stats?since=15m").await;
    assert_eq!(status, StatusCode::OK);
    let rows = overview["functions"].as_array().unwrap();
    let counts: Vec<(&str, u64, f64)> = rows
        .iter()
        .map(|r| {
            let name = r["function"].as_str().unwrap();
            (
                name,
                r["invocations"].as_u64().unwrap(),
                r["error_rate"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [("broken", 2, 1.0), ("steady", 7, 0.0)]);
    let (status, body) = server.get_json("/v1/stats?since=forever").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    // Without `since` the summary is what it was.
    let (_, plain) = server.get_json("/v1/functions/steady/stats").await;
    assert!(plain.get("window").is_none());
    assert_eq!(plain["count"], 7);
    // Hourly buckets over a day.
    let (_, day) = server
        .get_json("/v1/functions/steady/stats?since=24h&bucket=1h")
        .await;
    assert_eq!(day["window"]["bucket_seconds"], 3600);
    assert_eq!(day["window"]["invocations"], 7);
    for bad in [
        "since=0",
        "since=3d",
        "since=soon",
        "since=1h&bucket=90s",
        "since=10m&bucket=1h",
        "bucket=1m",
    ] {
        let (status, body) = server
            .get_json(&format!("/v1/functions/steady/stats?{bad}"))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }

    let out = server.cli(&["stats", "broken", "--since", "15m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("last 15m: 2 invocations, 2 failed (100.0%)"),
        "{}",
        stdout(&out)
    );

    // Records pruned to two per function: the window still counts all seven (flushed at the stop).
    let server = server.restart_gracefully_with(&["--retain", "2"]);
    let pruned = wait_for("records pruned", Duration::from_secs(10), || async {
        let (_, stats) = server.get_json("/v1/functions/steady/stats?since=1h").await;
        (stats["count"] == 2).then_some(stats)
    })
    .await;
    assert_eq!(pruned["window"]["invocations"], 7, "{pruned}");
}
