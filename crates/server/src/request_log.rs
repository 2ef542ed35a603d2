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

/// The target of the access lines.
pub(crate) const ACCESS: &str = "wharf::access";

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
            line: tracing::enabled!(target: ACCESS, Level::INFO)
                .then(|| (request.method().clone(), path.to_owned())),
        }
    }

    /// Records the answer, and logs it at info under `wharf::access`.
    pub(crate) fn finish(self, response: &Response) {
        let elapsed = self.started.elapsed();
        if let Some(target) = &self.target {
            // A streamed body counts what is known of it when the head is sent.
            let bytes = response.body().size_hint().lower();
            target.record(response.status().as_u16(), bytes, elapsed);
        }
        let Some((method, path)) = self.line else {
            return;
        };
        let line = format_args!(
            "{method} {path} {} {} {}ms",
            response.status().as_u16(),
            Size(response.body().size_hint().exact()),
            Millis(elapsed),
        );
        if !crate::logging::access(line) {
            info!(target: ACCESS, "{line}");
        }
    }
}

/// A body's size, `412B`, or `-` when it is streamed.
struct Size(Option<u64>);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}B"),
            None => f.write_str("-"),
        }
    }
}

/// A duration in milliseconds to a tenth, `0.3`, without floating point.
struct Millis(std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0.as_micros() + 50) / 100;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Millis, Size};

    #[test]
    fn sizes_and_milliseconds_read_as_before() {
        assert_eq!(Size(Some(412)).to_string(), "412B");
        assert_eq!(Size(None).to_string(), "-");
        for (micros, shown) in [
            (0, "0.0"),
            (49, "0.0"),
            (50, "0.1"),
            (349, "0.3"),
            (12_345, "12.3"),
            (1_999_960, "2000.0"),
        ] {
            assert_eq!(
                Millis(Duration::from_micros(micros)).to_string(),
                shown,
                "{micros} us"
            );
        }
    }
}
