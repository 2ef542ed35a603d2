//! `GET /.well-known/wharf-mirrors.toml`: the mirror list this server
//! publishes (`mirror_list` in its config), for `wharf mirrors`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use crate::{error::ApiError, registry::AppState};

/// Serves the configured mirror list as it is on disk.
pub async fn get_mirror_list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let Some(list) = &state.mirror_list else {
        return Err(ApiError::not_found(
            "this server publishes no mirror list (set mirror_list in its config)",
        ));
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/toml"),
        )],
        list.clone(),
    )
        .into_response())
}
