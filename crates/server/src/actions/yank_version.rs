//! `DELETE /{R}/api/v1/crates/{name}/{version}/yank` and
//! `PUT /{R}/api/v1/crates/{name}/{version}/unyank`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
};
use serde_json::{Value, json};

use crate::{error::ApiError, registry::AppState};

/// Marks a version yanked: cargo no longer picks it for new lockfiles.
pub async fn yank_version(
    state: State<Arc<AppState>>,
    path: Path<(String, String, String)>,
    headers: HeaderMap,
    addr: super::ClientAddr,
) -> Result<Json<Value>, ApiError> {
    set_yanked(state, path, headers, addr, true).await
}

/// Clears the yank of a version.
pub async fn unyank_version(
    state: State<Arc<AppState>>,
    path: Path<(String, String, String)>,
    headers: HeaderMap,
    addr: super::ClientAddr,
) -> Result<Json<Value>, ApiError> {
    set_yanked(state, path, headers, addr, false).await
}

async fn set_yanked(
    State(state): State<Arc<AppState>>,
    Path((registry, name, version)): Path<(String, String, String)>,
    headers: HeaderMap,
    addr: super::ClientAddr,
    yanked: bool,
) -> Result<Json<Value>, ApiError> {
    let hosted = state.hosted(&registry)?;
    let user = hosted
        .authenticate_writer(&headers, addr.0)
        .await?
        .user
        .clone();
    hosted
        .db
        .crates(&registry)
        .set_yanked(&name, &version, yanked, &user)
        .await
        .map_err(|e| ApiError::from_kind(e.kind(), e.to_string()))?;
    hosted.forget(&name);
    tracing::info!(registry = %registry, krate.name = %name, krate.vers = %version, yanked, user = %user, "yank flag set");
    Ok(Json(json!({ "ok": true })))
}
