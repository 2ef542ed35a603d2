//! `GET /{R}/status.json`: a mirror's last sync, as its tree records it.

use std::sync::Arc;

use axum::{
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use crate::{
    error::ApiError,
    registry::{AppState, Registry},
};

/// Serves `{R}/status.json` of a mirror registry.
pub async fn get_registry_status(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match state.registry(&name)? {
        Registry::Mirror(mirror) => match mirror.status_json().await? {
            Some(body) => Ok((
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, no-cache"),
                    ),
                ],
                body,
            )
                .into_response()),
            None => Err(ApiError::not_found(format!(
                "mirror `{name}` has not been synced yet; run `wharf sync`"
            ))),
        },
        Registry::Cache(_) | Registry::Hosted(_) => Err(ApiError::not_found(format!(
            "`{name}` is not a mirror; its state is in /status.json"
        ))),
    }
}
