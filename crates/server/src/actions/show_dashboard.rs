//! `/`: a page that tells a person what this server is and how to use it.

use std::sync::Arc;

use axum::{extract::State, response::Html};

use crate::registry::{AppState, Registry};

/// The dashboard: registries, their upstreams, and the cargo configuration.
pub async fn show_dashboard(State(state): State<Arc<AppState>>) -> Html<String> {
    let mut rows = String::new();
    let mut snippet = String::new();
    for (name, registry) in &state.registries {
        let (kind, upstreams): (&str, Vec<String>) = match registry {
            Registry::Cache(cache) => (
                "cache",
                cache
                    .upstreams
                    .health()
                    .iter()
                    .map(|h| format!("{} ({})", escape(&h.url), if h.up { "up" } else { "down" }))
                    .collect(),
            ),
            Registry::Hosted(hosted) => (
                "hosted",
                vec![format!(
                    "database: {}; tokens: <a href=\"/{1}/me\">/{1}/me</a>",
                    format!("{:?}", hosted.db.backend()).to_lowercase(),
                    escape(name)
                )],
            ),
            Registry::Mirror(_) => (
                "mirror",
                vec![format!(
                    "<a href=\"/{0}/status.json\">/{0}/status.json</a>",
                    escape(name)
                )],
            ),
        };
        let access = registry.access();
        let mut notes = vec![if access.auth_required {
            "credentials required".to_owned()
        } else {
            "open".to_owned()
        }];
        if let Some(policy) = &access.policy {
            notes.push(escape(&policy.describe()));
            if let Some(pending) = policy.pending_approvals().await {
                notes.push(format!(
                    "{pending} waiting for approval (<code>wharf approvals list --registry {}</code>)",
                    escape(name)
                ));
            }
        }
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{kind}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(&state.index_url(name)),
            upstreams.join("<br>"),
            notes.join("<br>")
        ));
        snippet.push_str(&escape(&crate::cargo_config_for(&state, name)));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>wharf</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}td,th{{padding:.3em .8em;text-align:left}}pre{{background:#f4f4f4;padding:1em}}</style></head>\
         <body><h1>wharf</h1><p>Registries served by this server (data in <code>{}</code>, up {} s). \
         Machine-readable: <a href=/status.json>status.json</a>, <a href=/metrics>metrics</a>.</p>\
         <table><tr><th>registry</th><th>kind</th><th>index</th><th>upstreams</th><th>access</th></tr>{rows}</table>\
         <h2>Use it from cargo</h2><p>Add to <code>.cargo/config.toml</code>:</p><pre>{snippet}</pre></body></html>",
        escape(&state.data_dir.display().to_string()),
        state.started.elapsed().as_secs(),
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
