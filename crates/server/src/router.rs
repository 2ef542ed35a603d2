//! The route table: every URL wharf answers, in one place.

use std::sync::Arc;

use axum::{
    Router, middleware,
    routing::{delete, get, put},
};

use crate::{
    actions::{
        download_crate::download_crate,
        get_config_json::get_config_json,
        get_index_file::get_index_file,
        get_mirror_list::get_mirror_list,
        get_registry_status::get_registry_status,
        health::{healthz, readyz, show_metrics, show_status},
        manage_owners::{add_owners, list_owners, remove_owners},
        publish_crate::publish_crate,
        search_crates::search_crates,
        show_dashboard::show_dashboard,
        show_me::show_me,
        yank_version::{unyank_version, yank_version},
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
        .route("/.well-known/wharf-mirrors.toml", get(get_mirror_list))
        .route("/{registry}/{file}", get(get_registry_status))
        .route("/{registry}/index/config.json", get(get_config_json))
        .route("/{registry}/index/{*path}", get(get_index_file))
        .route("/{registry}/crates/{name}/{file}", get(download_crate))
        // Cargo's web API, for hosted registries (`api` in their config.json).
        .route("/{registry}/me", get(show_me))
        .route("/{registry}/api/v1/crates", get(search_crates))
        .route("/{registry}/api/v1/crates/new", put(publish_crate))
        .route(
            "/{registry}/api/v1/crates/{name}/{version}/yank",
            delete(yank_version),
        )
        .route(
            "/{registry}/api/v1/crates/{name}/{version}/unyank",
            put(unyank_version),
        )
        .route(
            "/{registry}/api/v1/crates/{name}/owners",
            get(list_owners).put(add_owners).delete(remove_owners),
        )
        .fallback(|| async {
            ApiError::not_found("no such path on this wharf server; see / for what it serves")
        })
        .layer(middleware::from_fn_with_state(
            state.requests.clone(),
            log_request,
        ))
        .with_state(state)
}
