//! Operational endpoints: `/healthz`, `/v1/nodes` and `/metrics` (Prometheus text format).

use crate::app::App;
use crate::error::Error;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use std::fmt::Write;
use std::sync::Arc;
use wafer_api::{ErrorBody, NodeInfo, NodeList};

/// `GET /healthz`: the server is up and serving.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`")))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /v1/nodes`: the nodes sharing this server's database heard from lately (on the embedded
/// database, this one alone), with how far each has caught up.
#[utoipa::path(get, path = "/v1/nodes", operation_id = "listNodes", tag = "operations",
    responses((status = 200, body = NodeList), (status = 503, body = ErrorBody)))]
pub async fn nodes(State(app): State<Arc<App>>) -> Result<Json<NodeList>, Error> {
    let feed = app.feed().await?;
    let nodes = app
        .nodes()
        .await?
        .into_iter()
        .map(|node| NodeInfo {
            this_node: node.beat.id == app.node,
            id: node.beat.id,
            address: node.beat.address,
            version: node.beat.version,
            started_at: node.started_at,
            heartbeat_at: node.heartbeat_at,
            applied: node.beat.applied,
            lagging: node.beat.lagging,
        })
        .collect();
    Ok(Json(NodeList { nodes, feed }))
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let stats = app.engine.stats();
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "wafer_functions",
        "gauge",
        "Functions with a live version.",
        &app.registry.len(),
    );
    metric(
        "wafer_active_instances",
        "gauge",
        "Invocations running now.",
        &app.admission.active(),
    );
    if let Some(rss) = resident_bytes() {
        metric(
            "wafer_process_resident_bytes",
            "gauge",
            "Resident memory of the wafer process.",
            &rss,
        );
    }
    metric(
        "wafer_compilations_total",
        "counter",
        "Wasm binaries compiled to optimized machine code.",
        &stats.compiled,
    );
    metric(
        "wafer_baseline_compilations_total",
        "counter",
        "Wasm binaries compiled by the baseline compiler, to answer before their optimizing compile.",
        &stats.compiled_baseline,
    );
    metric(
        "wafer_baseline_modules",
        "gauge",
        "Modules running baseline code while their optimizing compile waits or runs.",
        &app.tier_ups.pending(),
    );
    metric(
        "wafer_artifact_loads_total",
        "counter",
        "Compiled artifacts loaded from disk without compiling.",
        &stats.loaded,
    );
    let code = app.code.stats();
    metric(
        "wafer_code_cache_modules",
        "gauge",
        "Modules whose compiled code is loaded (see --code-cache-modules).",
        &code.modules,
    );
    metric(
        "wafer_code_cache_bytes",
        "gauge",
        "Bytes of compiled code loaded (see --code-cache-size).",
        &code.bytes,
    );
    metric(
        "wafer_code_cache_evictions_total",
        "counter",
        "Modules whose code was dropped to stay within the code cache's budget.",
        &code.evicted,
    );
    if let Some(cache) = app.engine.compile_cache_stats() {
        metric(
            "wafer_compile_cache_hits_total",
            "counter",
            "Wasm functions whose machine code a compile took from the compile cache.",
            &cache.hits,
        );
        metric(
            "wafer_compile_cache_misses_total",
            "counter",
            "Wasm functions compiled because the compile cache did not hold them.",
            &cache.misses,
        );
        metric(
            "wafer_compile_cache_bytes",
            "gauge",
            "Machine code the compile cache holds on disk (see --compile-cache-size).",
            &cache.bytes,
        );
    }
    metric(
        "wafer_idle_instances",
        "gauge",
        "Instances kept between requests for functions that set reuse.",
        &stats.idle,
    );
    metric(
        "wafer_instance_pool_slots",
        "gauge",
        "Instance slots of the pooling allocator (0: instances are allocated on demand).",
        &app.engine.pool_slots().unwrap_or(0),
    );
    match app.executions.queue_stats().await {
        Ok(queue) => {
            metric(
                "wafer_queue_depth",
                "gauge",
                "Async and cron executions waiting to run, retries included.",
                &queue.queued,
            );
            metric(
                "wafer_queue_running",
                "gauge",
                "Async and cron executions running now.",
                &queue.running,
            );
            let age = queue.oldest_age.map_or(0.0, |age| age.as_secs_f64());
            metric(
                "wafer_queue_oldest_age_seconds",
                "gauge",
                "Age of the oldest waiting execution.",
                &age,
            );
        }
        Err(e) => tracing::error!("cannot read the queue for /metrics: {e}"),
    }
    metric(
        "wafer_execution_records_dropped_total",
        "counter",
        "Sync execution records dropped because the journal was behind.",
        &app.journal.dropped(),
    );
    app.metrics.render(&mut text);
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
}

/// The process's resident set size, from `/proc/self/status` (Linux only).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
