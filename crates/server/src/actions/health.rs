//! `/healthz`, `/readyz`, `/status.json` and `/metrics`.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use bytes::Bytes;
use wharf_storage::{BlobKey, BlobStore, StoreError};

use crate::{
    error::ApiError,
    metrics::MirrorPass,
    mirror::MirrorRegistry,
    registry::{AppState, Registry},
};

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the listener is serving and storage takes a write and gives
/// it back; otherwise 503 with what failed (a full or read-only disk, an
/// unreachable bucket).
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match probe_storage(state.store.as_ref()).await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            (e.status, format!("not ready: {}\n", e.detail)).into_response()
        }
    }
}

/// Writes a marker blob and reads it back.
pub(crate) async fn probe_storage(store: &dyn BlobStore) -> Result<(), StoreError> {
    // One key per probe: instances sharing a bucket, and probes of one
    // process, never read each other's marker.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let key = BlobKey::new(format!(".probe/ready-{}-{n}", std::process::id()))
        .expect("a probe key of digits is valid");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string();
    store.put(&key, Bytes::from(stamp.clone())).await?;
    let back = store.get(&key).await?;
    store.delete(&key).await?;
    match back {
        Some(back) if back == stamp.as_bytes() => Ok(()),
        _ => Err(StoreError::Unavailable {
            op: "read",
            key: key.to_string(),
            reason: "a blob just written read back different or missing".into(),
        }),
    }
}

/// The state of every registry and upstream, as JSON.
pub async fn show_status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let registries: serde_json::Map<String, Value> = state
        .registries
        .iter()
        .map(|(name, registry)| {
            let value = match registry {
                Registry::Cache(cache) => json!({
                    "kind": "cache",
                    "index_url": state.index_url(name),
                    "upstreams": cache.upstreams.health().iter().map(|h| h.to_json()).collect::<Vec<_>>(),
                    "index_files_in_memory": cache.index.in_memory(),
                    "crate_files_in_memory": cache.crates.in_memory(),
                    "counters": cache.metrics.counters().iter()
                        .map(|(name, value)| (name.trim_start_matches("wharf_").to_owned(), json!(value)))
                        .collect::<serde_json::Map<_, _>>(),
                }),
                Registry::Mirror(mirror) => json!({
                    "kind": "mirror",
                    "index_url": state.index_url(name),
                    "index_files_in_memory": mirror.in_memory(),
                    "status": format!("/{name}/status.json"),
                }),
                Registry::Hosted(hosted) => json!({
                    "kind": "hosted",
                    "index_url": state.index_url(name),
                    "index_files_in_memory": hosted.in_memory(),
                    "database": format!("{:?}", hosted.db.backend()).to_lowercase(),
                }),
            };
            let mut value = value;
            let access = registry.access();
            value["auth_required"] = json!(access.auth_required);
            if let Some(policy) = &access.policy {
                value["policy"] = json!(policy.describe());
            }
            (name.clone(), value)
        })
        .collect();
    let auth = &state.throttle.metrics;
    let connections = &state.connections;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "registries": registries,
        "auth": {
            "failures": auth.failures.get(),
            "throttled": auth.throttled.get(),
            "lockouts": auth.lockouts.get(),
            "locked_addresses": state.throttle.locked_addresses(),
        },
        "connections": {
            "open": connections.open.load(Ordering::Relaxed),
            "max": connections.max.load(Ordering::Relaxed),
            "refused": connections.refused.get(),
            "timed_out": connections.timed_out.get(),
        },
    }))
}

/// Every metric, in the Prometheus text format. Gauges that describe the
/// state (upstreams up, mirror freshness, connections) are set as they are read.
pub async fn show_metrics(State(state): State<Arc<AppState>>) -> Response {
    let metrics = &state.metrics;
    for (name, registry) in &state.registries {
        match registry {
            Registry::Cache(cache) => {
                for report in cache.upstreams.health() {
                    metrics.set_upstream_up(name, &report.url, report.up);
                }
            }
            Registry::Mirror(mirror) => {
                if let Some(pass) = mirror_pass(mirror).await {
                    metrics.set_mirror_pass(name, &pass);
                }
            }
            Registry::Hosted(_) => {}
        }
    }
    metrics.set_server(
        state.throttle.locked_addresses(),
        state.connections.open.load(Ordering::Relaxed),
        state.started.elapsed().as_secs(),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        )],
        metrics.encode(),
    )
        .into_response()
}

/// What a mirror's `status.json` says of its last pass; `None` before the
/// first pass, or when the tree cannot be read (the mirror's own status
/// route reports why).
pub(crate) async fn mirror_pass(mirror: &MirrorRegistry) -> Option<MirrorPass> {
    #[derive(serde::Deserialize)]
    struct Status {
        last_success: Option<u64>,
        #[serde(default)]
        failures: u64,
        duration_ms: Option<u64>,
        synced_upstream_time: Option<u64>,
    }
    let body = mirror.tree_file("status.json").await.ok()??;
    let status: Status = serde_json::from_slice(&body).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Some(MirrorPass {
        since_success_secs: status.last_success.map(|t| now.saturating_sub(t)),
        duration_secs: status.duration_ms.map(|ms| ms as f64 / 1000.0),
        failures: status.failures,
        lag_secs: status.synced_upstream_time.map(|t| now.saturating_sub(t)),
    })
}
