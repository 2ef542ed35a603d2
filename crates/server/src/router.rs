//! The route table: every URL wharf answers, in one place.

use std::sync::Arc;

use axum::{Router, middleware, routing::get};

use crate::{
    actions::{
        download_crate::download_crate,
        get_config_json::get_config_json,
        get_index_file::get_index_file,
        get_registry_status::get_registry_status,
        health::{healthz, readyz, show_metrics, show_status},
        show_dashboard::show_dashboard,
    },
    error::ApiError,
    registry::AppState,
    request_log::log_request,
};

/// Builds the router. `GET` routes answer `HEAD` too.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(show_dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status.json", get(show_status))
        .route("/metrics", get(show_metrics))
        .route("/{registry}/status.json", get(get_registry_status))
        .route("/{registry}/index/config.json", get(get_config_json))
        .route("/{registry}/index/{*path}", get(get_index_file))
        .route("/{registry}/crates/{name}/{file}", get(download_crate))
        .fallback(|| async {
            ApiError::not_found("no such path on this wharf server; see / for what it serves")
        })
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}
