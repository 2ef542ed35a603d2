//! `/healthz`, `/readyz`, `/status.json` and `/metrics`.

use std::{
    fmt::Write,
    sync::{Arc, atomic::Ordering},
};

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
async fn probe_storage(store: &dyn BlobStore) -> Result<(), StoreError> {
    let key = BlobKey::new(".probe/ready").expect("a constant key is valid");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string();
    store.put(&key, Bytes::from(stamp.clone())).await?;
    match store.get(&key).await? {
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
                        .map(|(name, _, value)| (name.trim_start_matches("wharf_").trim_end_matches("_total").to_owned(), json!(value)))
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

/// Counters in the Prometheus text format.
pub async fn show_metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    // Each metric family is written as one group, as the text format requires.
    let caches: Vec<_> = state
        .registries
        .iter()
        .filter_map(|(name, registry)| match registry {
            Registry::Cache(cache) => Some((name, cache)),
            Registry::Mirror(_) | Registry::Hosted(_) => None,
        })
        .collect();
    let families = caches
        .first()
        .map(|(_, c)| c.metrics.counters().len())
        .unwrap_or(0);
    for family in 0..families {
        for (i, (registry_name, cache)) in caches.iter().enumerate() {
            let (name, help, value) = cache.metrics.counters()[family];
            if i == 0 {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            }
            let _ = writeln!(out, "{name}{{registry=\"{registry_name}\"}} {value}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP wharf_upstream_up Whether an upstream is being tried (1) or marked down (0).\n# TYPE wharf_upstream_up gauge"
    );
    for (registry_name, cache) in &caches {
        for report in cache.upstreams.health() {
            let _ = writeln!(
                out,
                "wharf_upstream_up{{registry=\"{registry_name}\",upstream=\"{}\"}} {}",
                report.url,
                u8::from(report.up)
            );
        }
    }
    let auth = &state.throttle.metrics;
    for (name, help, value) in [
        (
            "wharf_auth_failures_total",
            "Credentials that did not verify.",
            auth.failures.get(),
        ),
        (
            "wharf_auth_throttled_total",
            "Requests refused because their address was locked out after failed logins.",
            auth.throttled.get(),
        ),
        (
            "wharf_auth_lockouts_total",
            "Lockouts of a user name from an address after too many failed logins.",
            auth.lockouts.get(),
        ),
        (
            "wharf_index_compressions_total",
            "Index file bodies compressed (each content once per encoding while it is kept).",
            crate::encoding::compressions(),
        ),
        (
            "wharf_connections_refused_total",
            "Connections closed at once because [connections] max were open.",
            state.connections.refused.get(),
        ),
        (
            "wharf_connections_timed_out_total",
            "Connections closed because a request head or body did not arrive in time.",
            state.connections.timed_out.get(),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP wharf_auth_locked_addresses (Address, user name) pairs locked out now.\n# TYPE wharf_auth_locked_addresses gauge\nwharf_auth_locked_addresses {}",
        state.throttle.locked_addresses()
    );
    let _ = writeln!(
        out,
        "# HELP wharf_connections_open Client connections open now.\n# TYPE wharf_connections_open gauge\nwharf_connections_open {}",
        state.connections.open.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "wharf_uptime_seconds {}",
        state.started.elapsed().as_secs()
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        out,
    )
        .into_response()
}
