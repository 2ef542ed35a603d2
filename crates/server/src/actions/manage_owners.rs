//! `GET`, `PUT` and `DELETE /{R}/api/v1/crates/{name}/owners`: `cargo owner`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_db::User;

use crate::{error::ApiError, registry::AppState};

/// The body of `cargo owner --add/--remove`.
#[derive(Deserialize)]
pub struct OwnersBody {
    users: Vec<String>,
}

/// Lists the owners of a crate.
pub async fn list_owners(
    State(state): State<Arc<AppState>>,
    Path((registry, name)): Path<(String, String)>,
    headers: HeaderMap,
    addr: super::ClientAddr,
) -> Result<Json<Value>, ApiError> {
    let principal = state
        .registry(&registry)?
        .authorize(&headers, addr.0)
        .await?;
    if principal.is_some_and(|p| !p.may_see(&name)) {
        return Err(ApiError::not_found(format!("no crate named `{name}`")));
    }
    let hosted = state.hosted(&registry)?;
    let owners = hosted
        .db
        .owners(&registry)
        .list(&name)
        .await
        .map_err(|e| ApiError::from_kind(e.kind(), e.to_string()))?;
    let users: Vec<Value> = owners
        .iter()
        .enumerate()
        .map(|(i, user)| json!({ "id": i + 1, "login": user.as_str(), "name": null }))
        .collect();
    Ok(Json(json!({ "users": users })))
}

/// Adds owners to a crate; only an owner may.
pub async fn add_owners(
    State(state): State<Arc<AppState>>,
    Path((registry, name)): Path<(String, String)>,
    headers: HeaderMap,
    addr: super::ClientAddr,
    body: Result<Json<OwnersBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let hosted = state.hosted(&registry)?;
    let user = hosted
        .authenticate_writer(&headers, addr.0)
        .await?
        .user
        .clone();
    let users = users_of(body)?;
    hosted
        .db
        .owners(&registry)
        .add(&name, &users, &user)
        .await
        .map_err(|e| ApiError::from_kind(e.kind(), e.to_string()))?;
    let names: Vec<&str> = users.iter().map(User::as_str).collect();
    Ok(Json(json!({
        "ok": true,
        "msg": format!("{} now own{} crate {name}", names.join(", "), if names.len() == 1 { "s" } else { "" }),
    })))
}

/// Removes owners from a crate; only an owner may, and never the last one.
pub async fn remove_owners(
    State(state): State<Arc<AppState>>,
    Path((registry, name)): Path<(String, String)>,
    headers: HeaderMap,
    addr: super::ClientAddr,
    body: Result<Json<OwnersBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let hosted = state.hosted(&registry)?;
    let user = hosted
        .authenticate_writer(&headers, addr.0)
        .await?
        .user
        .clone();
    let users = users_of(body)?;
    hosted
        .db
        .owners(&registry)
        .remove(&name, &users, &user)
        .await
        .map_err(|e| ApiError::from_kind(e.kind(), e.to_string()))?;
    Ok(Json(
        json!({ "ok": true, "msg": "owners successfully removed" }),
    ))
}

fn users_of(
    body: Result<Json<OwnersBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Vec<User>, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"users\": [\"name\", ...]}}: {}",
            e.body_text()
        ))
    })?;
    body.users
        .iter()
        .map(|u| User::new(u).map_err(|e| ApiError::bad_request(e.to_string())))
        .collect()
}
