//! `GET /{R}/status.json`, `/{R}/manifest.json` and `/{R}/manifest.json.sig`:
//! the files at the top of a mirror's tree, as its sync wrote them.

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

/// The files a mirror's tree has at its top, and their types.
const TREE_FILES: [(&str, &str); 3] = [
    ("status.json", "application/json"),
    ("manifest.json", "application/json"),
    ("manifest.json.sig", "text/plain; charset=utf-8"),
];

/// Serves one of [`TREE_FILES`] of a mirror registry.
pub async fn get_registry_status(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, file)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some((file, content_type)) = TREE_FILES.iter().find(|(f, _)| *f == file) else {
        return Err(ApiError::not_found(
            "no such path on this wharf server; see / for what it serves",
        ));
    };
    match state.registry(&name)? {
        Registry::Mirror(mirror) => match mirror.tree_file(file).await? {
            Some(body) => Ok((
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, no-cache"),
                    ),
                ],
                body,
            )
                .into_response()),
            None if *file == "status.json" => Err(ApiError::not_found(format!(
                "mirror `{name}` has not been synced yet; run `wharf sync`"
            ))),
            None => Err(ApiError::not_found(format!(
                "mirror `{name}` publishes no signed manifest (set signing_key to sign one)"
            ))),
        },
        Registry::Cache(_) | Registry::Hosted(_) => Err(ApiError::not_found(format!(
            "`{name}` is not a mirror; its state is in /status.json"
        ))),
    }
}
