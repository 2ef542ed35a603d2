//! The one middleware every request passes: it records the request's metrics
//! (count, bytes, latency) and, when enabled, logs one compact line:
//! `GET /crates-io/index/se/rd/serde 200 412B 0.3ms`.

use std::{sync::Arc, time::Instant};

use axum::{
    body::HttpBody,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use tracing::{Level, info};

use crate::metrics::{RequestMetrics, RequestTarget};

/// Records the request's metrics once it has been answered, and logs it at
/// info under `wharf::access`. Recording allocates nothing: the counters are
/// built at start and found by the path's first segment before the request
/// is handed on.
pub async fn log_request(
    State(metrics): State<Option<Arc<RequestMetrics>>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let target = metrics.as_deref().map(|m| m.target(request.uri().path()));
    if !tracing::enabled!(target: "wharf::access", Level::INFO) {
        let response = next.run(request).await;
        record(&target, &response, started);
        return response;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    record(&target, &response, started);
    let size = response
        .body()
        .size_hint()
        .exact()
        .map_or_else(|| "-".to_owned(), |n| format!("{n}B"));
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    info!(target: "wharf::access", "{method} {path} {} {size} {ms:.1}ms", response.status().as_u16());
    response
}

fn record(target: &Option<RequestTarget<'_>>, response: &Response, started: Instant) {
    if let Some(target) = target {
        // A streamed body counts what is known of it when the head is sent.
        let bytes = response.body().size_hint().lower();
        target.record(response.status().as_u16(), bytes, started.elapsed());
    }
}
