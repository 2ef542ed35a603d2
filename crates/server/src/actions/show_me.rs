//! `GET /{R}/me`: where `cargo login` sends people for credentials.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::Html,
};

use crate::{
    error::ApiError,
    registry::{AppState, Registry},
};

/// Says how to get credentials for this registry.
pub async fn show_me(
    State(state): State<Arc<AppState>>,
    Path(registry): Path<String>,
) -> Result<Html<String>, ApiError> {
    let how = match state.registry(&registry)? {
        Registry::Hosted(_) => format!(
            "<p>Tokens are made by the server's operator:</p>\
             <pre>wharf token create --registry {registry} --user YOUR-NAME</pre>\
             <p>(or, for a client with its own grants, <code>wharf clients add NAME --registry {registry}</code>)\
             prints a token once. <code>wharf token list</code> and <code>wharf token revoke</code> manage them.</p>"
        ),
        _ => format!(
            "<p>Credentials for this registry are given out by the server's operator:</p>\
             <pre>wharf clients add YOUR-NAME --registry {registry}</pre>\
             <p>prints the lines your cargo configuration needs, and the token, once.</p>"
        ),
    };
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>wharf: credentials for {registry}</title>\
         <h1>Credentials for registry <code>{registry}</code></h1>{how}\
         <p>Then, on your machine:</p><pre>cargo login --registry {registry}</pre><p>and paste the token.</p>"
    )))
}
