//! `PUT /{R}/api/v1/crates/new`: `cargo publish` to a hosted registry.

use std::sync::Arc;

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, header},
};
use serde_json::{Value, json};

use crate::{error::ApiError, registry::AppState};

/// Room for the JSON metadata and the two length prefixes around the tarball.
const METADATA_ALLOWANCE: u64 = (1 << 20) + 8;

/// Checks the token, reads the body (cargo's length-prefixed JSON and
/// tarball) within the registry's size limit, validates it with crates.io's
/// rules, and publishes it.
pub async fn publish_crate(
    State(state): State<Arc<AppState>>,
    Path(registry): Path<String>,
    headers: HeaderMap,
    addr: super::ClientAddr,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let hosted = state.hosted(&registry)?;
    let principal = hosted.authenticate_writer(&headers, addr.0).await?;
    let user = principal.user.clone();
    let max = hosted.max_upload_bytes;
    let limit = max.saturating_add(METADATA_ALLOWANCE);
    let too_large = || {
        ApiError::too_large(format!(
            "the upload is larger than registry `{registry}` accepts ({max} bytes for the .crate file); make the package smaller (see `exclude` in Cargo.toml) or raise max_upload_bytes"
        ))
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            if e.to_string().contains("length limit") {
                too_large()
            } else {
                ApiError::bad_request(format!("the upload was cut off: {e}"))
            }
        })?;
    let received = body.len() as u64;
    let request =
        tokio::task::spawn_blocking(move || wharf_publish::parse_publish_body(&body, max))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| {
                // A length prefix over the limit in a short body is a
                // malformed body, not a large one.
                if e.is_too_large() && received > max {
                    ApiError::too_large(e.to_string())
                } else {
                    ApiError::bad_request(e.to_string())
                }
            })?;
    if !principal.may_see(request.name().as_str()) {
        return Err(ApiError::forbidden(format!(
            "client `{user}` may not publish `{}`: its grants on registry `{registry}` do not cover that name",
            request.name()
        )));
    }
    hosted.publish(&user, request).await?;
    Ok(Json(json!({
        "warnings": { "invalid_categories": [], "invalid_badges": [], "other": [] }
    })))
}
