//! `GET /{R}/me`: where `cargo login` sends people for a token.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::Html,
};

use crate::{error::ApiError, registry::AppState};

/// Says how to get a token for this registry.
pub async fn show_me(
    State(state): State<Arc<AppState>>,
    Path(registry): Path<String>,
) -> Result<Html<String>, ApiError> {
    state.hosted(&registry)?;
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>wharf: tokens for {registry}</title>\
         <h1>Tokens for registry <code>{registry}</code></h1>\
         <p>Tokens are made by the server's operator:</p>\
         <pre>wharf token create --registry {registry} --user YOUR-NAME</pre>\
         <p>prints a token once. Then, on your machine:</p>\
         <pre>cargo login --registry {registry}</pre>\
         <p>and paste it. <code>wharf token list</code> and <code>wharf token revoke</code> manage them.</p>"
    )))
}
