//! The hostile suite: every attack runs while good traffic flows to another function. Each attack must get
//! its documented status, every good request must succeed, the server's memory must come back to its
//! baseline, and no guest may see another function's environment.

mod common;

use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Attack {
    name: &'static str,
    /// The path below `/fn/{name}` that triggers it.
    path: &'static str,
    module: Vec<u8>,
    config: serde_json::Value,
    status: u16,
    code: &'static str,
}

fn attacks() -> Vec<Attack> {
    let attack = |name, module, config, status, code| Attack {
        name,
        path: "",
        module,
        config,
        status,
        code,
    };
    vec![
        attack(
            "infinite-loop",
            spin_wat(),
            json!({"timeout_ms": 1000}),
            504,
            "timeout",
        ),
        attack(
            "memory-bomb",
            wat(r#"(module (memory 1) (func (export "_start")
                (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable))"#),
            json!({"memory_mb": 64}),
            500,
            "memory_limit",
        ),
        attack(
            "greedy-memory",
            wat(r#"(module (memory 4096) (func (export "_start")))"#),
            json!({"memory_mb": 64}),
            500,
            "memory_limit",
        ),
        attack("unreachable", trap_wat(), json!({}), 500, "trap"),
        attack(
            "stack-overflow",
            wat(r#"(module (func $f (export "_start") (call $f)))"#),
            json!({}),
            500,
            "trap",
        ),
        attack(
            "out-of-bounds",
            wat(
                r#"(module (memory 1) (func (export "_start") (drop (i32.load (i32.const 1000000)))))"#,
            ),
            json!({}),
            500,
            "trap",
        ),
        attack(
            "stdout-flood",
            flood_wat(1600),
            json!({}),
            502,
            "bad_response",
        ),
        attack(
            "not-cgi",
            wagi_wat("garbage without headers"),
            json!({}),
            502,
            "bad_response",
        ),
        c_attack("c-malloc-bomb", "/malloc", 500, "memory_limit"),
        c_attack("c-abort", "/abort", 500, "trap"),
        c_attack("c-recursion", "/recurse", 500, "trap"),
        c_attack("c-busy-loop", "/spin", 504, "timeout"),
    ]
}

/// An attack by the C guest in `fixtures/hostile.c`, picked by path.
fn c_attack(name: &'static str, path: &'static str, status: u16, code: &'static str) -> Attack {
    Attack {
        name,
        path,
        module: hostile_c(),
        config: json!({"memory_mb": 32, "timeout_ms": 1000}),
        status,
        code,
    }
}

fn hostile_c() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run examples/build.sh test-fixtures)",
            path.display()
        )
    })
}

#[tokio::test]
async fn attacks_end_only_themselves_while_good_traffic_flows() {
    let server = Server::start();
    server
        .deploy_ok(
            "good",
            wagi_wat("Content-Type: text/plain\n\nfine"),
            json!({}),
        )
        .await;
    let attacks = attacks();
    for attack in &attacks {
        server
            .deploy_ok(attack.name, attack.module.clone(), attack.config.clone())
            .await;
    }
    // Warm up, then take the baseline.
    for _ in 0..20 {
        assert_eq!(server.get_text("/fn/good").await.1, "fine");
    }
    let baseline = server.metric("wafer_process_resident_bytes").await;

    let done = AtomicBool::new(false);
    let (ok, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let good_traffic = async {
        while !done.load(Ordering::SeqCst) {
            let (status, body) = server.get_text("/fn/good").await;
            if status == 200 && body == "fine" {
                ok.fetch_add(1, Ordering::SeqCst);
            } else {
                failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    };
    let run_attacks = async {
        let mut report = Vec::new();
        for round in 0..3 {
            for attack in &attacks {
                let started = Instant::now();
                let path = format!("/fn/{}{}", attack.name, attack.path);
                let (status, body) = server.get_json(&path).await;
                let took = started.elapsed();
                assert_eq!(status.as_u16(), attack.status, "{}: {body}", attack.name);
                assert_eq!(
                    body["error"]["code"], attack.code,
                    "{}: {body}",
                    attack.name
                );
                if round == 0 {
                    report.push((attack.name, status.as_u16(), attack.code, took));
                }
            }
        }
        done.store(true, Ordering::SeqCst);
        report
    };
    let ((), report) = tokio::join!(good_traffic, run_attacks);

    eprintln!("| attack | status | code | time to fail |\n|---|---|---|---|");
    for (name, status, code, took) in &report {
        eprintln!("| {name} | {status} | {code} | {} ms |", took.as_millis());
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!("good requests during the attacks: {ok} succeeded, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0, "good traffic failed during the attacks");

    // Memory comes back: every attacker's instance is gone. Allocators keep some pages, so the bound is
    // generous, but a leaked 64 MiB instance per attack would blow through it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let rss = server.metric("wafer_process_resident_bytes").await;
        if rss <= baseline + 128 * 1024 * 1024 || Instant::now() > deadline {
            break rss;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "resident memory: {} MiB before, {} MiB after",
        baseline >> 20,
        after >> 20
    );
    assert!(
        after <= baseline + 128 * 1024 * 1024,
        "memory did not come back: {baseline} -> {after}"
    );
}

#[tokio::test]
async fn no_guest_sees_another_functions_or_the_hosts_environment() {
    let server = Server::start();
    server
        .deploy_ok(
            "victim",
            wagi_wat("Content-Type: text/plain\n\nv"),
            json!({"env": {"SECRET": "hunter2-victim"}}),
        )
        .await;
    server
        .deploy_ok("snoop", env_dumper(), json!({"env": {"MINE": "snoop-own"}}))
        .await;
    let (status, body) = server.get_text("/fn/snoop").await;
    assert_eq!(status, 200, "{body}");
    let vars: Vec<&str> = body.split('\0').filter(|v| !v.is_empty()).collect();
    assert!(vars.contains(&"MINE=snoop-own"), "{vars:?}");
    assert!(vars.contains(&"REQUEST_METHOD=GET"), "{vars:?}");
    assert!(!body.contains("hunter2"), "{body}");
    for host_var in ["PATH=", "HOME=", "CARGO", "WAFER_"] {
        assert!(
            !vars.iter().any(|v| v.starts_with(host_var)),
            "{host_var} leaked: {vars:?}"
        );
    }
}

#[tokio::test]
async fn a_guest_that_never_reads_its_body_still_answers() {
    let server = Server::start();
    server.deploy_ok("lazy", hostile_c(), json!({})).await;
    let (status, _, body) = server
        .call(
            reqwest::Method::POST,
            "/fn/lazy/noread",
            &"x".repeat(1 << 20),
        )
        .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "calm\n"));
}
