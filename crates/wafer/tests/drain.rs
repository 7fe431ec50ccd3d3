//! Graceful stops: SIGTERM under steady load answers every request already in flight, finishes or
//! gives back every running async attempt, exits 0, and every acknowledged async execution completes
//! after a restart — once. A second signal during the drain stops the process at once.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a client's request ended.
enum Outcome {
    /// An answer, with its status and, for an async submission, the execution id.
    Answered(StatusCode, Option<String>),
    /// No answer: the connection was refused or closed.
    Refused(String),
}

/// One request of the load: when it was sent, and how it ended.
struct Sent {
    at: Instant,
    done: Instant,
    sync: bool,
    outcome: Outcome,
}

/// Sends requests one after another until `stop` is set or the server stops answering: a sync call
/// that takes 300 ms, or an async submission of one that takes 200 ms every 100 ms.
async fn client(url: String, sync: bool, stop: Arc<AtomicBool>, sent: Arc<Mutex<Vec<Sent>>>) {
    let http = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        let request = match sync {
            true => http.get(format!("{url}/fn/slow-sync")),
            false => http.post(format!("{url}/v1/functions/slow-async/invoke?async=true")),
        };
        let outcome = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let id = match sync {
                    true => None,
                    false => response
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|reply| reply["execution_id"].as_str().map(String::from)),
                };
                Outcome::Answered(status, id)
            }
            Err(e) => Outcome::Refused(e.to_string()),
        };
        let refused = matches!(outcome, Outcome::Refused(_));
        let done = Instant::now();
        sent.lock().unwrap().push(Sent {
            at,
            done,
            sync,
            outcome,
        });
        if refused {
            return;
        }
        // Submissions at about the rate the workers keep up with, so a restart finishes them soon.
        if !sync {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_load_answers_what_is_in_flight_and_loses_no_acknowledged_execution() {
    let mut server = Server::start_with(&["--workers", "4", "--grace", "20s"]);
    let answer = "Content-Type: text/plain\n\nslept\n";
    server
        .deploy_ok("slow-sync", sleep_wat(300, answer), json!({}))
        .await;
    server
        .deploy_ok("slow-async", sleep_wat(200, answer), json!({}))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(client(
                server.url.clone(),
                i % 2 == 0,
                stop.clone(),
                sent.clone(),
            ))
        })
        .collect();
    // Steady load, then the stop while some of it is in flight and async work is queued behind it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let signalled = Instant::now();
    let exited = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    let (server, status) = exited.await.unwrap();
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; log:\n{}",
        server.logs()
    );
    println!("stopped in {took:?}");

    // Every request sent well before the signal was answered, and nothing was answered with an error:
    // a request sent about when the listener closed may find it closed, never half served.
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let settled = signalled - Duration::from_millis(100);
    let mut in_flight = 0;
    let mut ids = Vec::new();
    for request in &sent {
        match &request.outcome {
            Outcome::Answered(status, id) => {
                let want = match request.sync {
                    true => StatusCode::OK,
                    false => StatusCode::ACCEPTED,
                };
                assert_eq!(*status, want, "log:\n{}", server.logs());
                ids.extend(id.clone());
                if request.at < signalled && request.done > signalled {
                    in_flight += 1;
                }
            }
            Outcome::Refused(e) => assert!(
                request.at >= settled,
                "a request sent {:?} before the stop got no answer: {e}",
                signalled - request.at
            ),
        }
    }
    assert_eq!(
        ids.len(),
        sent.iter()
            .filter(|r| !r.sync && matches!(r.outcome, Outcome::Answered(..)))
            .count(),
        "every 202 names its execution"
    );
    // Every attempt ended within the grace: none was cut short.
    assert!(
        server.logs().contains("released=0"),
        "log:\n{}",
        server.logs()
    );
    assert!(in_flight > 0, "no request was in flight at the stop");
    println!(
        "{} requests, {} of them in flight at the stop and answered, {} async acknowledged",
        sent.len(),
        in_flight,
        ids.len()
    );

    // After a restart every acknowledged execution completes, each with one attempt.
    let server = server.restart_with(&["--workers", "4"]);
    for id in &ids {
        succeeds_once(&server, id).await;
    }
}

/// Waits for execution `id` to finish, and checks it succeeded on its first counted attempt.
async fn succeeds_once(server: &Server, id: &str) {
    let done = wait_for(
        "an acknowledged execution to finish",
        Duration::from_secs(120),
        || async {
            let (_, e) = server.get_json(&format!("/v1/executions/{id}")).await;
            (e["status"] != "queued" && e["status"] != "running").then_some(e)
        },
    )
    .await;
    assert_eq!(
        (&done["status"], &done["attempts"]),
        (&json!("succeeded"), &json!(1)),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_longer_than_the_grace_goes_back_to_the_queue_without_counting() {
    let mut server = Server::start_with(&["--grace", "1s"]);
    server
        .deploy_ok(
            "slow",
            sleep_wat(10_000, "Content-Type: text/plain\n\nslept\n"),
            json!({"max_attempts": 1, "timeout_ms": 60000}),
        )
        .await;
    let id = server.invoke_async("slow", "", "").await;
    wait_for("the attempt to run", Duration::from_secs(30), || async {
        let (_, e) = server.get_json(&format!("/v1/executions/{id}")).await;
        (e["status"] == "running").then_some(())
    })
    .await;
    // A sync call of it too, which the stop cuts off at the end of the grace.
    let call = server.http.get(server.at("/fn/slow")).send();
    let call = tokio::spawn(call);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let status = server.terminate();
    let took = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; log:\n{}",
        server.logs()
    );
    assert!(call.await.unwrap().is_err(), "the call was answered");
    // It waited for neither: it stopped at the end of its grace.
    assert!(
        took < Duration::from_secs(6),
        "stopped after {took:?}; log:\n{}",
        server.logs()
    );
    assert!(
        server.logs().contains("were cut off") && server.logs().contains("released=1"),
        "log:\n{}",
        server.logs()
    );

    // Its only attempt was cut short, not failed: it runs again after the restart, as attempt 1.
    let server = server.restart_with(&[]);
    succeeds_once(&server, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_stops_at_once() {
    let mut server = Server::start_with(&["--grace", "60s"]);
    server
        .deploy_ok(
            "slow",
            sleep_wat(30_000, "Content-Type: text/plain\n\nslept\n"),
            json!({"timeout_ms": 60000}),
        )
        .await;
    let call = tokio::spawn(server.http.get(server.at("/fn/slow")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    wait_for("the drain to start", Duration::from_secs(10), || async {
        server.logs().contains("stopping:").then_some(())
    })
    .await;
    let signalled = Instant::now();
    let status = server.terminate();
    let took = signalled.elapsed();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "log:\n{}",
        server.logs()
    );
    // The first signal alone would have waited for the 30 s call, within its 60 s of grace.
    assert!(
        took < Duration::from_secs(10),
        "stopped {took:?} after the second signal; log:\n{}",
        server.logs()
    );
    assert!(
        server.logs().contains("a second stop signal"),
        "{}",
        server.logs()
    );
    assert!(call.await.unwrap().is_err(), "the call was cut off");
}
