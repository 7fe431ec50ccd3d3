//! Crash safety of the async queue: the server is killed with SIGKILL while it works through 1,000
//! acknowledged invocations, restarted, and every one of them must complete exactly once as far as the
//! records go; re-runs are limited to the attempts that were running at the kill, or had run and waited
//! for their record's commit (at least once delivery).

mod common;

use common::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const INVOCATIONS: usize = 1000;
const WORKERS: u64 = 2;

#[tokio::test]
async fn a_kill_mid_queue_loses_no_acknowledged_invocation() {
    let sink = CallbackSink::start();
    let server = Server::start_with(&["--workers", &WORKERS.to_string()]);
    server
        .deploy_ok(
            "flaky",
            fixture("flaky.wasm"),
            json!({"allowed_outbound_hosts": [sink.url]}),
        )
        .await;
    let callback = format!("&callback_url={}/done", sink.url);
    let mut ids = Vec::with_capacity(INVOCATIONS);
    for chunk in 0..INVOCATIONS / 50 {
        let submits = (0..50).map(|i| {
            let body = format!("job {}", chunk * 50 + i);
            let (server, callback) = (&server, &callback);
            async move { server.invoke_async("flaky", callback, &body).await }
        });
        ids.extend(futures_util::future::join_all(submits).await);
    }
    assert_eq!(ids.len(), INVOCATIONS);

    // Kill it once some, but not all, have finished.
    let done_before = wait_for(
        "the queue to be part-way",
        Duration::from_secs(60),
        || async {
            let (_, stats) = server.get_json("/v1/functions/flaky/stats").await;
            let succeeded = stats["by_status"]["succeeded"].as_u64().unwrap_or(0);
            (succeeded > 0).then_some(succeeded)
        },
    )
    .await;
    let server = server.restart();
    println!("killed with {done_before} of {INVOCATIONS} recorded as succeeded");

    let stats = wait_for(
        "every invocation to finish",
        Duration::from_secs(300),
        || async {
            let (_, stats) = server.get_json("/v1/functions/flaky/stats").await;
            (stats["by_status"]["succeeded"].as_u64() == Some(INVOCATIONS as u64)).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["count"], INVOCATIONS as u64, "{stats}");

    let (_, page) = server
        .get_json("/v1/functions/flaky/executions?limit=1000")
        .await;
    let executions = page["executions"].as_array().unwrap();
    let mut reruns = 0;
    for e in executions {
        assert_eq!(e["status"], "succeeded", "{e}");
        reruns += e["attempts"].as_u64().unwrap() - 1;
    }
    let mut listed: Vec<&str> = executions
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut submitted: Vec<&str> = ids.iter().map(String::as_str).collect();
    submitted.sort();
    assert_eq!(
        listed, submitted,
        "the records are exactly the acknowledged invocations"
    );
    // A worker takes its next execution while the last one's record waits for the journal's commit:
    // at the kill each worker holds at most one of each.
    assert!(
        reruns <= 2 * WORKERS,
        "only attempts running or unrecorded at the kill run again: {reruns}"
    );

    // Every execution's callback arrives, marked succeeded; duplicates only from deliveries cut off by
    // the kill.
    let bodies = wait_for("every callback", Duration::from_secs(120), || async {
        let bodies = sink.bodies();
        let delivered: std::collections::HashSet<String> = bodies
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect();
        (delivered.len() == INVOCATIONS).then_some(bodies)
    })
    .await;
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for body in &bodies {
        assert_eq!(body["status"], "succeeded", "{body}");
        *per_id.entry(body["id"].as_str().unwrap()).or_default() += 1;
    }
    let duplicates = bodies.len() - per_id.len();
    println!(
        "after the restart: {} succeeded, {reruns} re-run attempts, {} callbacks ({duplicates} repeated)",
        INVOCATIONS,
        bodies.len()
    );
    assert!(duplicates <= 32, "{duplicates} repeated callbacks");
}
