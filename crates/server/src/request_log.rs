//! One compact log line per request: `GET /crates-io/index/se/rd/serde 200 412B 0.3ms`.

use std::time::Instant;

use axum::{body::HttpBody, extract::Request, middleware::Next, response::Response};
use tracing::{Level, info};

/// Logs the request once it has been answered, at info under `wharf::access`.
pub async fn log_request(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "wharf::access", Level::INFO) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let size = response
        .body()
        .size_hint()
        .exact()
        .map_or_else(|| "-".to_owned(), |n| format!("{n}B"));
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    info!(target: "wharf::access", "{method} {path} {} {size} {ms:.1}ms", response.status().as_u16());
    response
}
