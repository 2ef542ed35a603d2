//! `GET /{R}/index/config.json`: the one index file wharf writes itself.

use std::sync::Arc;

use axum::{
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{error::ApiError, registry::AppState};

/// Serves the registry's `config.json`, whose `dl` points at this server.
pub async fn get_config_json(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    addr: super::ClientAddr,
) -> Result<Response, ApiError> {
    let Path(registry) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let registry = state.registry(&registry)?;
    registry.authorize(&headers, addr.0).await?;
    let tag = format!("{:x}", fxhash(registry.config_json()));
    let etag = HeaderValue::from_str(&format!("\"{tag}\"")).expect("hex is a valid header");
    if super::if_none_match(&headers, &tag) == Some(true) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(if registry.is_private() {
                    "private, no-cache"
                } else {
                    "public, no-cache"
                }),
            ),
            (header::ETAG, etag),
        ],
        registry.config_json().clone(),
    )
        .into_response())
}

/// A small stable hash for a tag of a file that is rendered once per start.
fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}
