//! The one place cargo-shaped error responses are made.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

/// An error answered to a client as `{"errors":[{"detail":"..."}]}`, the shape
/// cargo prints to its user.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message cargo shows.
    pub detail: String,
    /// For a 401: where cargo's login flow sends the user
    /// (`WWW-Authenticate: Cargo login_url="..."`).
    pub login_url: Option<String>,
    /// For a 429 or 503: seconds until trying again makes sense (`Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            login_url: None,
            retry_after_secs: None,
        }
    }

    /// 401: credentials are needed; cargo starts its login flow on this.
    pub fn unauthorized(detail: impl Into<String>, login_url: &str) -> Self {
        Self {
            login_url: Some(login_url.to_owned()),
            ..Self::new(StatusCode::UNAUTHORIZED, detail)
        }
    }

    /// 403: the credentials are not good enough for this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, detail)
    }

    /// 429: this client must wait `retry_after_secs` before trying again.
    pub fn too_many_requests(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// 503: the server cannot take this now; worth retrying after
    /// `retry_after_secs`.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, detail)
        }
    }

    /// 413: the upload is larger than the registry accepts.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
    }

    /// The status that fits a database refusal of `kind`.
    pub fn from_kind(kind: wharf_db::ErrorKind, detail: impl Into<String>) -> Self {
        let status = match kind {
            wharf_db::ErrorKind::NotFound => StatusCode::NOT_FOUND,
            wharf_db::ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            // crates.io answers 400 to a version that exists; cargo shows it.
            wharf_db::ErrorKind::Conflict | wharf_db::ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            wharf_db::ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, detail)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 502: the upstream failed or sent something unusable.
    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, detail)
    }

    /// 500: wharf itself failed (storage, a bug).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

/// When storage unavailability was last logged (seconds since the Unix
/// epoch): an outage is logged once a minute, not on every request.
static STORAGE_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl From<wharf_storage::StoreError> for ApiError {
    /// A store that cannot be used (full, read-only, unreachable) is the
    /// server's problem: 503, worth retrying, never blamed on an upstream.
    /// Anything else is a 500. Either way the message names what failed.
    fn from(e: wharf_storage::StoreError) -> Self {
        if e.is_unavailable() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let last = STORAGE_LOGGED.load(std::sync::atomic::Ordering::Relaxed);
            if now >= last + 60
                && STORAGE_LOGGED
                    .compare_exchange(
                        last,
                        now,
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                    )
                    .is_ok()
            {
                tracing::error!(error = %e, "storage is unavailable: answering 503 (logged at most once a minute)");
            }
            return Self::unavailable(
                format!("{e}; this server cannot use its storage now, try again later"),
                10,
            );
        }
        tracing::warn!(error = %e, "storage failed");
        Self::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({ "errors": [{ "detail": self.detail }] })),
        )
            .into_response();
        if let Some(url) = &self.login_url
            && let Ok(value) =
                axum::http::HeaderValue::from_str(&format!("Cargo login_url=\"{url}\""))
        {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, value);
        }
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.detail)
    }
}
