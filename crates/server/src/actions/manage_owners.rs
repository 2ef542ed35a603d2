//! `GET`, `PUT` and `DELETE /{R}/api/v1/crates/{name}/owners`: `cargo owner`.
//!
//! A change names at most [`MAX_OWNERS_PER_CHANGE`] users in a body of at
//! most [`MAX_OWNERS_BODY_BYTES`]: both bounds are checked before any name
//! is looked at, so a huge list costs a refusal, not a transaction.

use std::sync::Arc;

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::HeaderMap,
};
use serde::Deserialize;
use serde_json::{Value, json};
use wharf_db::{MAX_OWNERS_PER_CHANGE, MAX_USER_LEN, User};

use crate::{error::ApiError, registry::AppState};

/// The largest owners body read: room for [`MAX_OWNERS_PER_CHANGE`] names of
/// the longest length, quoted and separated, and some white space.
pub const MAX_OWNERS_BODY_BYTES: usize = 1024 + MAX_OWNERS_PER_CHANGE * (MAX_USER_LEN + 4);

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
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let hosted = state.hosted(&registry)?;
    let user = hosted
        .authenticate_writer(&headers, addr.0)
        .await?
        .user
        .clone();
    let users = users_of(body).await?;
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
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let hosted = state.hosted(&registry)?;
    let user = hosted
        .authenticate_writer(&headers, addr.0)
        .await?
        .user
        .clone();
    let users = users_of(body).await?;
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

/// The users a body names, bounded in bytes and in number.
async fn users_of(body: Body) -> Result<Vec<User>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_OWNERS_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::too_large(format!(
                "the owners request is larger than {MAX_OWNERS_BODY_BYTES} bytes; name at most {MAX_OWNERS_PER_CHANGE} users at a time"
            ))
        })?;
    let body: OwnersBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"users\": [\"name\", ...]}}: {e}"))
    })?;
    if body.users.len() > MAX_OWNERS_PER_CHANGE {
        return Err(ApiError::bad_request(format!(
            "{} users in one owners change; send at most {MAX_OWNERS_PER_CHANGE} at a time",
            body.users.len()
        )));
    }
    body.users
        .iter()
        .map(|u| User::new(u).map_err(|e| ApiError::bad_request(e.to_string())))
        .collect()
}
