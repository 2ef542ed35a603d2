//! `GET /{R}/api/v1/crates?q=…&per_page=…`: `cargo search`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{error::ApiError, registry::AppState};

/// The query cargo sends.
#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    per_page: Option<u32>,
    page: Option<u32>,
}

/// Finds crates whose name or description holds the query, names first;
/// for a client with grants, only among the crates it may see.
pub async fn search_crates(
    State(state): State<Arc<AppState>>,
    Path(registry): Path<String>,
    headers: axum::http::HeaderMap,
    addr: super::ClientAddr,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let principal = state
        .registry(&registry)?
        .authorize(&headers, addr.0)
        .await?;
    let hosted = state.hosted(&registry)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let per_page = query.per_page.unwrap_or(10).clamp(1, 100);
    let page = query.page.unwrap_or(1).max(1);
    // A client with grants searches only what it may see: the database
    // counts and pages among those crates, so neither `total` nor the pages
    // tell it that others exist.
    let grants = principal
        .as_ref()
        .filter(|p| !p.grants.is_empty())
        .map(|p| p.grants.as_slice());
    let (hits, total) = hosted
        .db
        .crates(&registry)
        .search_within(&query.q, grants, per_page, page)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // The database's filter and the glob matcher agree (both fold case and
    // `-`/`_`); this check only makes sure a disagreement could hide a crate,
    // never show one.
    let crates: Vec<Value> = hits
        .into_iter()
        .filter(|hit| principal.as_ref().is_none_or(|p| p.may_see(&hit.name)))
        .map(|hit| {
            json!({
                "name": hit.name,
                "max_version": hit.max_version,
                "description": hit.description,
            })
        })
        .collect();
    Ok(Json(
        json!({ "crates": crates, "meta": { "total": total } }),
    ))
}
