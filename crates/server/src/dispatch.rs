//! Where a connection's requests go: a plain `GET` of an index file straight
//! to its action, everything else through the router.
//!
//! Index files are most of what cargo asks for, and a hit is answered from
//! memory in a few microseconds, of which the router took as much as the
//! answer: matching the route, decoding the path into two strings, boxing
//! the handler's future and the middleware's, cloning the header map for
//! the handler, and a request extension for the peer's address. The same
//! action runs either way (credentials, policy, conditional requests,
//! encodings), and the same metrics and log line are recorded
//! ([`Logged`]); only what is left to the router differs, and the route
//! stays in the router's table for it.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request},
    response::{IntoResponse, Response},
};
use futures::future::Either;
use hyper::body::Incoming;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::{
    actions::{ClientAddr, get_index_file::serve_index_file},
    registry::AppState,
    request_log::Logged,
    router::router,
};

/// The router, and the state the index files are served from without it.
#[derive(Clone)]
pub(crate) struct Dispatch {
    state: Arc<AppState>,
    router: Router,
}

impl Dispatch {
    /// Dispatches to `state`'s registries.
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        Self {
            router: router(state.clone()),
            state,
        }
    }

    /// Answers `request`, which came from `peer`; a body the router's
    /// actions read is given up on after `body_timeout` without bytes.
    pub(crate) fn call(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        body_timeout: Duration,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + use<> {
        if request.method() == Method::GET && index_file(request.uri().path()).is_some() {
            let state = self.state.clone();
            return Either::Left(async move {
                let (registry, path) =
                    index_file(request.uri().path()).expect("checked before the future");
                let logged = Logged::start(state.requests.as_deref(), &request);
                let addr = ClientAddr::of(peer.ip(), request.headers(), &state);
                let response = serve_index_file(&state, registry, path, request.headers(), addr)
                    .await
                    .into_response();
                logged.finish(&response);
                Ok(response)
            });
        }
        let mut request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
        request.extensions_mut().insert(ConnectInfo(peer));
        // Boxed: the future of an index hit, the most common request, is
        // then no larger than it needs to be.
        Either::Right(Box::pin(self.router.clone().oneshot(request)))
    }
}

/// The registry and sparse path of an index file's URL path
/// (`/{registry}/index/{path}`, not `config.json`), as the router's route
/// would match them. A path with a percent sign is left to the router,
/// which decodes it.
fn index_file(url_path: &str) -> Option<(&str, &str)> {
    let (registry, rest) = url_path.strip_prefix('/')?.split_once('/')?;
    let path = rest.strip_prefix("index/")?;
    let plain = !registry.is_empty() && !path.is_empty() && !url_path.contains('%');
    (plain && path != "config.json").then_some((registry, path))
}

#[cfg(test)]
mod tests {
    use super::index_file;

    #[test]
    fn only_plain_index_file_paths_skip_the_router() {
        assert_eq!(
            index_file("/crates-io/index/se/rd/serde"),
            Some(("crates-io", "se/rd/serde"))
        );
        assert_eq!(index_file("/r/index/3/s/syn"), Some(("r", "3/s/syn")));
        // What the router answers itself, or decodes first.
        for path in [
            "/crates-io/index/config.json",
            "/crates-io/index/",
            "//index/se/rd/serde",
            "/crates-io/index/se/rd/ser%64e",
            "/crates-io/crates/serde/serde-1.0.0.crate",
            "/crates-io/api/v1/crates",
            "/",
            "/healthz",
            "",
        ] {
            assert_eq!(index_file(path), None, "{path}");
        }
    }
}
