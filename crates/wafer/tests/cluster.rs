//! Cluster mode end to end: real `wafer serve` nodes on one real PostgreSQL (a throwaway server the
//! test starts; skipped with a printed reason when PostgreSQL is not installed, except under `CI=true`).
//!
//! - a deploy, rollback, alias change or delete on any node is served by every node;
//! - `wafer nodes` lists the nodes, and a killed node drops out;
//! - the queue loses no acknowledged invocation when the node holding the most claims is killed;
//! - a node paused past its lease cannot overwrite the retry's result;
//! - a database restart mid-run loses nothing acknowledged;
//! - a per-second schedule fires once per tick whichever nodes run it;
//! - an API key created on one node works on every node, and its revocation reaches them within
//!   seconds.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use wafer_store::conformance::postgres::TestPostgres;

/// Starts `count` nodes on database `url`, named `n1`, `n2`, …, each with `extra` flags.
fn nodes(url: &str, count: usize, extra: &[&str]) -> Vec<Server> {
    (1..=count)
        .map(|i| node(url, &format!("n{i}"), extra))
        .collect()
}

fn node(url: &str, id: &str, extra: &[&str]) -> Server {
    let key = wafer_store::conformance::TEST_SECRETS_KEY;
    let mut args = vec!["--database", url, "--node-id", id, "--secrets-key", key];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// What `GET /fn/f` on `server` answers, as (status, body).
async fn answer(server: &Server, path: &str) -> (StatusCode, String) {
    server.get_text(path).await
}

/// Waits until every server answers `path` with `want` (a 200 body); returns how long the slowest took.
/// Points alias `alias` of `name` at `target` through `server`.
async fn put_alias(server: &Server, name: &str, alias: &str, target: Value) {
    let path = format!("/v1/functions/{name}/aliases/{alias}");
    let (status, body) = server
        .call_json(reqwest::Method::PUT, &path, &target.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn served_everywhere(servers: &[Server], path: &str, want: &str) -> Duration {
    let started = Instant::now();
    for server in servers {
        wait_for(
            &format!("{} to serve {want:?} at {path}", server.url),
            Duration::from_secs(15),
            || async {
                let (status, body) = answer(server, path).await;
                (status == StatusCode::OK && body == want).then_some(())
            },
        )
        .await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_any_node_is_served_by_every_node() {
    let Some(pg) = TestPostgres::shared() else {
        return;
    };
    let url = pg.create_database().await;
    let mut servers = nodes(&url, 3, &[]);
    let hello = |text: &str| wagi_wat(&format!("Content-Type: text/plain\n\n{text}"));

    servers[0].deploy_ok("f", hello("one"), json!({})).await;
    let took = served_everywhere(&servers, "/fn/f", "one").await;
    println!("deploy on n1 → served by all three in {took:?}");

    // Called on another node the moment its deploy is acknowledged, by name and by route, a new
    // function is found: a node looks at the change feed before it answers 404.
    for (i, server) in servers.iter().enumerate() {
        let name = format!("new{i}");
        let route = format!("/new/{i}");
        servers[(i + 2) % 3]
            .deploy_ok(&name, hello("new"), json!({"routes": [route]}))
            .await;
        assert_eq!(answer(server, &format!("/fn/{name}")).await.1, "new");
        let (status, body) = answer(&servers[(i + 1) % 3], &route).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "new"));
    }
    servers[1].deploy_ok("f", hello("two"), json!({})).await;
    let took = served_everywhere(&servers, "/fn/f", "two").await;
    println!("deploy on n2 → served by all three in {took:?}");

    let (status, body) = servers[1]
        .call_json(
            reqwest::Method::POST,
            "/v1/functions/f/rollback",
            &json!({"version": 1}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let took = served_everywhere(&servers, "/fn/f", "one").await;
    println!("rollback on n2 → served by all three in {took:?}");

    // Aliases set on one node route calls on every node: a new alias, and a weight on live.
    put_alias(&servers[2], "f", "beta", json!({"version": 2})).await;
    served_everywhere(&servers, "/fn/f:beta", "two").await;
    put_alias(
        &servers[0],
        "f",
        "live",
        json!({"version": 1, "weights": {"2": 1.0}}),
    )
    .await;
    let took = served_everywhere(&servers, "/fn/f", "two").await;
    println!("a canary weight on n1 → served by all three in {took:?}");
    put_alias(&servers[1], "f", "live", json!({"version": 1})).await;
    served_everywhere(&servers, "/fn/f", "one").await;
    // A candidate deployed on one node is called by its number on another at once.
    servers[0]
        .deploy_candidate("f", hello("three"), json!({}))
        .await;
    assert_eq!(answer(&servers[2], "/fn/f:3").await.1, "three");
    assert_eq!(answer(&servers[2], "/fn/f").await.1, "one");

    // A variable set on one node reaches the function on another.
    servers[2].deploy_ok("env", env_dumper(), json!({})).await;
    let (status, body) = servers[2]
        .call_json(
            reqwest::Method::PUT,
            "/v1/functions/env/config",
            &json!({"variables": {"GREETING": "hej"}}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for(
        "n1 to see the variable",
        Duration::from_secs(15),
        || async {
            let (_, body) = answer(&servers[0], "/fn/env").await;
            body.contains("GREETING=hej").then_some(())
        },
    )
    .await;

    let (status, _) = servers[2]
        .call(reqwest::Method::DELETE, "/v1/functions/f", "")
        .await
        .into_status_and_body();
    assert_eq!(status, StatusCode::NO_CONTENT);
    for server in &servers {
        wait_for("the delete everywhere", Duration::from_secs(15), || async {
            (answer(server, "/fn/f").await.0 == StatusCode::NOT_FOUND).then_some(())
        })
        .await;
    }

    // Every node lists the three; a killed one drops out once its heartbeat expires.
    let listed = servers[0].cli(&["nodes", "-o", "json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let list: Value = serde_json::from_str(&stdout(&listed)).expect("JSON");
    let ids: Vec<&str> = list["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, ["n1", "n2", "n3"], "{list}");
    let text = stdout(&servers[1].cli(&["nodes"]));
    assert!(text.contains("n2 *"), "{text}");
    servers[2].kill();
    wait_for("n3 to drop out", Duration::from_secs(30), || async {
        let (_, list) = servers[0].get_json("/v1/nodes").await;
        let ids: Vec<String> = list["nodes"]
            .as_array()?
            .iter()
            .filter_map(|n| n["id"].as_str().map(str::to_string))
            .collect();
        (ids == ["n1", "n2"]).then_some(())
    })
    .await;
}

/// `(status, headers, body)` → `(status, body)`.
trait StatusAndBody {
    fn into_status_and_body(self) -> (StatusCode, String);
}

impl StatusAndBody for (StatusCode, reqwest::header::HeaderMap, String) {
    fn into_status_and_body(self) -> (StatusCode, String) {
        (self.0, self.2)
    }
}

/// Claims held per node, read from the database.
async fn claims(url: &str) -> HashMap<String, i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .query(
            "SELECT claimed_by, COUNT(*) FROM executions WHERE status = 'running'
             GROUP BY claimed_by",
            &[],
        )
        .await
        .expect("count claims")
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect()
}

const WORKERS: &str = "4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_invocation_is_lost_when_a_node_dies() {
    const INVOCATIONS: usize = 500;
    let Some(pg) = TestPostgres::shared() else {
        return;
    };
    let url = pg.create_database().await;
    let sink = CallbackSink::start();
    let mut servers = nodes(&url, 3, &["--workers", WORKERS, "--queue-lease", "3s"]);
    servers[0]
        .deploy_ok(
            "flaky",
            fixture("flaky.wasm"),
            json!({"allowed_outbound_hosts": [sink.url]}),
        )
        .await;
    for server in &servers {
        wait_for(
            "the function everywhere",
            Duration::from_secs(15),
            || async { (answer(server, "/fn/flaky").await.0 == StatusCode::OK).then_some(()) },
        )
        .await;
    }
    let callback = format!("&callback_url={}/done", sink.url);
    let mut ids = Vec::with_capacity(INVOCATIONS);
    for chunk in 0..INVOCATIONS / 50 {
        let submits = (0..50).map(|i| {
            let n = chunk * 50 + i;
            let (server, callback) = (&servers[n % 3], &callback);
            async move {
                server
                    .invoke_async("flaky", callback, &format!("job {n}"))
                    .await
            }
        });
        ids.extend(futures_util::future::join_all(submits).await);
    }

    // Kill the node holding the most claims, part-way.
    let (victim, held) = wait_for("claims part-way", Duration::from_secs(60), || async {
        let claims = claims(&url).await;
        let (node, held) = claims.into_iter().max_by_key(|(_, n)| *n)?;
        (held > 0).then_some((node, held))
    })
    .await;
    let index = victim
        .strip_prefix('n')
        .and_then(|n| n.parse::<usize>().ok())
        .expect("a node id of this test")
        - 1;
    servers[index].kill();
    println!("killed {victim} holding {held} claims");
    let survivor = &servers[(index + 1) % 3];

    // The records of the async invocations (the probes above are recorded too, as http calls).
    let executions = wait_for(
        "every invocation to succeed",
        Duration::from_secs(240),
        || async {
            let (_, page) = survivor
                .get_json("/v1/functions/flaky/executions?limit=1000")
                .await;
            let executions: Vec<Value> = page["executions"]
                .as_array()?
                .iter()
                .filter(|e| e["trigger"] == "async")
                .cloned()
                .collect();
            let succeeded = executions.iter().filter(|e| e["status"] == "succeeded");
            (succeeded.count() == INVOCATIONS).then_some(executions)
        },
    )
    .await;
    let listed: HashSet<&str> = executions.iter().filter_map(|e| e["id"].as_str()).collect();
    let submitted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(
        listed, submitted,
        "the records are the acknowledged invocations"
    );
    let reruns: u64 = executions
        .iter()
        .map(|e| e["attempts"].as_u64().unwrap_or(1) - 1)
        .sum();
    assert!(
        reruns <= held as u64 + 4,
        "only attempts running on the killed node run again: {reruns}"
    );

    let bodies = wait_for("every callback", Duration::from_secs(120), || async {
        let bodies = sink.bodies();
        let delivered: HashSet<String> = bodies
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect();
        (delivered.len() == INVOCATIONS).then_some(bodies)
    })
    .await;
    let repeated = bodies.len() - INVOCATIONS;
    println!(
        "{INVOCATIONS} succeeded after the kill: {reruns} attempts re-run, {} callbacks ({repeated} repeated)",
        bodies.len()
    );
    assert!(repeated <= 16, "{repeated} callbacks repeated");
    assert!(bodies.iter().all(|b| b["status"] == "succeeded"));
}

/// A WAGI guest that computes for a while (about a second), then answers.
fn slow_wat() -> Vec<u8> {
    let response = "Content-Type: text/plain\n\nslow done";
    let escaped: String = response.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat(&format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "{escaped}")
            (func (export "_start") (local $i i64)
                (loop
                    (local.set $i (i64.add (local.get $i) (i64.const 1)))
                    (br_if 0 (i64.lt_u (local.get $i) (i64.const 1500000000))))
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const {len}))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = response.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_cannot_overwrite_the_retry() {
    let Some(pg) = TestPostgres::shared() else {
        return;
    };
    let url = pg.create_database().await;
    let flags = ["--queue-lease", "2s", "--timeout", "60s"];
    let first = node(&url, "n1", &flags);
    first.deploy_ok("slow", slow_wat(), json!({})).await;
    let id = first.invoke_async("slow", "", "").await;
    wait_for("the attempt to run", Duration::from_secs(30), || async {
        let (_, e) = first.get_json(&format!("/v1/executions/{id}")).await;
        (e["status"] == "running").then_some(())
    })
    .await;
    first.signal("STOP");
    let second = node(&url, "n2", &flags);
    let done = wait_for("n2 to run it again", Duration::from_secs(60), || async {
        let (_, e) = second.get_json(&format!("/v1/executions/{id}")).await;
        (e["status"] == "succeeded").then_some(e)
    })
    .await;
    assert_eq!(done["attempts"], 2, "{done}");
    first.signal("CONT");
    wait_for(
        "n1's late finish to be refused",
        Duration::from_secs(60),
        || async {
            first
                .logs()
                .contains("an attempt ended after its execution moved on")
                .then_some(())
        },
    )
    .await;
    let (_, after) = second.get_json(&format!("/v1/executions/{id}")).await;
    assert_eq!(
        (&after["status"], &after["attempts"], &after["output"]),
        (&done["status"], &done["attempts"], &done["output"]),
        "the retry's result stands"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_loses_nothing_acknowledged() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.create_database().await;
    let servers = nodes(&url, 2, &["--workers", WORKERS]);
    servers[0]
        .deploy_ok("flaky", fixture("flaky.wasm"), json!({}))
        .await;
    wait_for("the function on n2", Duration::from_secs(15), || async {
        (answer(&servers[1], "/fn/flaky").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let mut ids = Vec::new();
    let submit = |round: usize| {
        let servers = &servers;
        async move {
            let submits = (0..50).map(|i| async move {
                let server = &servers[i % 2];
                let (status, _, body) = server
                    .call(
                        reqwest::Method::POST,
                        "/v1/functions/flaky/invoke?async=true",
                        &format!("round {round} job {i}"),
                    )
                    .await;
                (status == StatusCode::ACCEPTED)
                    .then(|| serde_json::from_str::<Value>(&body).ok())
                    .flatten()
                    .and_then(|v| v["execution_id"].as_str().map(str::to_string))
            });
            futures_util::future::join_all(submits).await
        }
    };
    ids.extend(submit(0).await.into_iter().flatten());
    pg.pg_ctl("restart");
    for round in 1..4 {
        ids.extend(submit(round).await.into_iter().flatten());
    }
    println!("{} invocations acknowledged around the restart", ids.len());
    assert!(ids.len() >= 150, "the nodes serve again after the restart");
    for id in &ids {
        let e = wait_for(
            "each execution to succeed",
            Duration::from_secs(120),
            || async {
                let (status, e) = servers[1].get_json(&format!("/v1/executions/{id}")).await;
                (status == StatusCode::OK && e["status"] == "succeeded").then_some(e)
            },
        )
        .await;
        assert_eq!(e["status"], "succeeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_once_per_tick_across_the_cluster() {
    let Some(pg) = TestPostgres::shared() else {
        return;
    };
    let url = pg.create_database().await;
    let servers = nodes(&url, 3, &[]);
    servers[0]
        .deploy_ok(
            "tick",
            fixture("flaky.wasm"),
            json!({"schedule": "* * * * * *"}),
        )
        .await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, list) = servers[2]
        .get_json("/v1/functions/tick/executions?limit=1000")
        .await;
    let elapsed = started.elapsed().as_secs();
    let runs = list["executions"].as_array().expect("executions");
    assert!(runs.iter().all(|e| e["trigger"] == "cron"));
    println!(
        "{} cron executions in {elapsed} s on three nodes",
        runs.len()
    );
    assert!(
        runs.len() as u64 <= elapsed + 1 && runs.len() as u64 + 3 >= elapsed,
        "one execution per tick: {} in {elapsed} s",
        runs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_and_its_revocation_reach_every_node() {
    let Some(pg) = TestPostgres::shared() else {
        return;
    };
    let url = pg.create_database().await;
    let servers = nodes(&url, 2, &["--token", "cluster-admin"]);
    servers[0]
        .deploy_ok("f", wagi_wat("Content-Type: text/plain\n\nhi"), json!({}))
        .await;
    let (status, created) = servers[0]
        .call_json(
            reqwest::Method::POST,
            "/v1/keys",
            r#"{"scopes": ["read:f"]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (id, token) = (
        created["key"]["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    );
    let read = |server: &Server| {
        server
            .http
            .get(server.at("/v1/functions/f"))
            .bearer_auth(&token)
            .send()
    };
    // The other node has not read the keys since: a key it does not know makes it read them at once.
    let (_, listed) = servers[1].get_json("/v1/keys").await;
    println!("node 2 lists {listed}");

    let response = read(&servers[0]).await.unwrap();
    println!("node 1 answers {}", response.status());
    let response = read(&servers[1]).await.unwrap();
    let status = response.status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status,
        200,
        "{}\n{}",
        response.text().await.unwrap(),
        servers[1].logs()
    );
    let (status, _) = servers[0]
        .call_json(reqwest::Method::POST, &format!("/v1/keys/{id}/revoke"), "")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read(&servers[0]).await.unwrap().status(), 401);
    let started = Instant::now();
    wait_for(
        "the revocation to reach the other node",
        Duration::from_secs(15),
        || async { (read(&servers[1]).await.unwrap().status() == 401).then_some(()) },
    )
    .await;
    let took = started.elapsed();
    println!("the revocation reached the other node in {took:?}");
    // The audit log is the cluster's: both actions, on one node's list.
    let (_, log) = servers[1].get_json("/v1/audit").await;
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"POST /v1/keys/{key_id}/revoke"),
        "{actions:?}"
    );
    assert!(actions.contains(&"POST /v1/keys"), "{actions:?}");
}
