//! What every request passes on its way out: its metrics (count, bytes,
//! latency) are recorded and, when enabled, one compact line is logged:
//! `GET /crates-io/index/se/rd/serde 200 412B 0.3ms`.

use std::{sync::Arc, time::Instant};

use axum::{
    body::HttpBody,
    extract::{Request, State},
    http::{self, Method},
    middleware::Next,
    response::Response,
};
use tracing::{Level, info};

use crate::metrics::{RequestMetrics, RequestTarget};

/// The router's middleware: every request the router answers is [`Logged`].
pub async fn log_request(
    State(metrics): State<Option<Arc<RequestMetrics>>>,
    request: Request,
    next: Next,
) -> Response {
    let logged = Logged::start(metrics.as_deref(), &request);
    let response = next.run(request).await;
    logged.finish(&response);
    response
}

/// One request on its way: where its metrics go, when it started, and what
/// its log line names. Recording allocates nothing: the counters are built
/// at start and found by the path's first segment before the request is
/// handed on; the method and path are copied only when the line is logged.
pub(crate) struct Logged<'a> {
    target: Option<RequestTarget<'a>>,
    started: Instant,
    line: Option<(Method, String)>,
}

impl<'a> Logged<'a> {
    /// Notes `request` before it is answered.
    pub(crate) fn start<B>(
        metrics: Option<&'a RequestMetrics>,
        request: &http::Request<B>,
    ) -> Self {
        let path = request.uri().path();
        Self {
            target: metrics.map(|m| m.target(path)),
            started: Instant::now(),
            line: tracing::enabled!(target: "wharf::access", Level::INFO)
                .then(|| (request.method().clone(), path.to_owned())),
        }
    }

    /// Records the answer, and logs it at info under `wharf::access`.
    pub(crate) fn finish(self, response: &Response) {
        if let Some(target) = &self.target {
            // A streamed body counts what is known of it when the head is sent.
            let bytes = response.body().size_hint().lower();
            target.record(response.status().as_u16(), bytes, self.started.elapsed());
        }
        let Some((method, path)) = self.line else {
            return;
        };
        let size = response
            .body()
            .size_hint()
            .exact()
            .map_or_else(|| "-".to_owned(), |n| format!("{n}B"));
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        info!(target: "wharf::access", "{method} {path} {} {size} {ms:.1}ms", response.status().as_u16());
    }
}
