#![doc = include_str!("../README.md")]

mod actions;
mod alerts;
mod auth;
mod cache;
mod client_addr;
mod dashboard;
mod dispatch;
mod encoding;
mod error;
mod flight;
mod hosted;
mod idle;
mod lease;
mod listen;
mod logging;
mod metrics;
mod mirror;
pub mod owner_dump;
mod policy;
mod redirect;
mod registry;
mod request_log;
mod router;
mod shards;
mod stats;
mod stored;
mod zero_copy;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tracing::warn;
use wharf_config::{Config, DEFAULT_REGISTRY};

pub use dashboard::human_bytes;
pub use error::ApiError;
pub use lease::{Leased, PassLease, full_pass_due};
pub use listen::{ConnectionStats, raise_file_limit};
pub use logging::{LogGuard, init_logging};
pub use metrics::RequestMetrics;
pub use registry::{AppState, Registry, USER_AGENT, open_store};
pub use router::router;
pub use stats::{Clock, Downloader, StatsRecorder, TEST_NOW_VAR, test_now_from_env};

/// Serves `state` on `listener` until `shutdown` completes, then lets requests
/// under way finish. The caller binds the listener, so tests can bind port 0.
/// Connections are bounded by the configuration's `[connections]`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.connection_limits.clone();
    let connections = state.connections.clone();
    // Statistics are written while the server runs, and once more after
    // the last request, so a clean stop loses no count.
    let stop = tokio_util::sync::CancellationToken::new();
    let flusher = tokio::spawn(
        state
            .stats
            .clone()
            .run(state.requests.clone(), stop.clone()),
    );
    let served = listen::serve_connections(
        listener,
        dispatch::Dispatch::new(state),
        &limits,
        connections,
        shutdown,
    )
    .await;
    stop.cancel();
    if let Err(e) = flusher.await {
        warn!(error = %e, "the statistics writer stopped");
    }
    served
}

/// The URL clients reach the server at: `public_url` when configured, else
/// derived from the address actually bound.
pub fn public_url(config: &Config, bound: SocketAddr) -> String {
    if let Some(url) = &config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    if bound.ip().is_unspecified() {
        warn!(listen = %bound, "listening on all addresses without public_url; config.json will name 127.0.0.1, which other machines cannot reach: set public_url");
        return format!("http://127.0.0.1:{}", bound.port());
    }
    format!("http://{bound}")
}

/// The `.cargo/config.toml` lines that make cargo use registry `name`. Caches
/// and mirrors stand in for crates.io, so cargo is told to replace crates.io
/// with them (Cargo.lock keeps naming crates.io); one that needs credentials
/// is named as a registry, so cargo sends it its token.
pub fn cargo_config_for(state: &AppState, name: &str) -> String {
    let url = state.index_url(name);
    if matches!(
        state.registries.get(name),
        Some(registry::Registry::Hosted(_))
    ) {
        // A hosted registry is a registry of its own, named in dependencies;
        // cargo sends its token only through a credential provider.
        return format!(
            "[registries.{name}]\nindex = \"{url}\"\ncredential-provider = \"cargo:token\"\n# then: cargo login --registry {name}; cargo publish --registry {name}\n"
        );
    }
    if state
        .registries
        .get(name)
        .is_some_and(|registry| registry.access().auth_required)
    {
        // Cargo sends credentials only to a registry it knows by name, so
        // crates.io is replaced with one, and its token set for it.
        return format!(
            "[source.crates-io]\nreplace-with = \"{name}\"\n\n[registries.{name}]\nindex = \"{url}\"\ncredential-provider = \"cargo:token\"\n# then: cargo login --registry {name}, with the token from `wharf clients add NAME --registry {name}`\n"
        );
    }
    let source = if name == DEFAULT_REGISTRY {
        "wharf".to_owned()
    } else {
        format!("wharf-{name}")
    };
    format!(
        "[source.crates-io]\nreplace-with = \"{source}\"\n\n[source.{source}]\nregistry = \"{url}\"\n"
    )
}
