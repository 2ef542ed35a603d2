//! Raw HTTP/1.1 requests over a plain TCP stream.
//!
//! Client libraries normalise what they send (`/a/../b` becomes `/b`, `%00` may be
//! refused), so tests of a server's path validation write the request bytes themselves.
//! Every function here connects to the given address only; tests pass `127.0.0.1`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw exchange may take, from connect to the server closing the connection.
pub const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// One response read from the wire until the server closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code of the status line; 0 when the server closed without answering.
    pub status: u16,
    /// The status line and headers, without the blank line that ends them.
    pub head: String,
    /// Everything after the blank line, exactly as received (a chunked body stays
    /// chunked; a truncated body stays truncated).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The value of the first header called `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    /// The whole response as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        if self.head.is_empty() {
            return String::from_utf8_lossy(&self.body).into_owned();
        }
        format!(
            "{}\r\n\r\n{}",
            self.head,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// Sends `request_line_and_headers` verbatim and returns the status code and the whole
/// response text.
///
/// Lines should be separated by `\r\n`; a trailing blank line is optional. `Host` and
/// `Connection: close` are appended when the text does not set them, so the server
/// closes the connection after answering. The status is 0 if the server closed without
/// a status line.
///
/// # Panics
///
/// When the connection fails or no complete response arrives within [`RAW_TIMEOUT`];
/// use [`raw_response`] to inspect those cases.
pub async fn raw_request(addr: SocketAddr, request_line_and_headers: &str) -> (u16, String) {
    match raw_response(addr, request_line_and_headers).await {
        Ok(response) => (response.status, response.text()),
        Err(err) => panic!("raw request to {addr} failed: {err}"),
    }
}

/// Like [`raw_request`], but returns the response split into head and raw body bytes,
/// and returns connection failures and the timeout as errors.
pub async fn raw_response(
    addr: SocketAddr,
    request_line_and_headers: &str,
) -> io::Result<RawResponse> {
    let request = complete_request(addr, request_line_and_headers);
    tokio::time::timeout(RAW_TIMEOUT, exchange(addr, request.as_bytes()))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete response within {RAW_TIMEOUT:?}"),
            )
        })?
}

/// Adds the headers [`raw_request`] promises (`Host`, `Connection: close`) when missing,
/// and the blank line that ends the head.
pub fn complete_request(addr: SocketAddr, request_line_and_headers: &str) -> String {
    let head = request_line_and_headers.trim_end_matches(['\r', '\n']);
    let has_header = |name: &str| {
        head.lines().skip(1).any(|line| {
            line.split_once(':')
                .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case(name))
        })
    };
    let mut out = head.to_owned();
    if !has_header("host") {
        out.push_str(&format!("\r\nHost: {addr}"));
    }
    if !has_header("connection") {
        out.push_str("\r\nConnection: close");
    }
    out.push_str("\r\n\r\n");
    out
}

/// Splits raw response bytes into a [`RawResponse`].
pub fn parse_response(bytes: &[u8]) -> RawResponse {
    let (head, body) = match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => (&bytes[..end], &bytes[end + 4..]),
        None => (bytes, &[][..]),
    };
    let head = String::from_utf8_lossy(head).into_owned();
    let status = head
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    RawResponse {
        status,
        head,
        body: body.to_vec(),
    }
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            // A reset after part of a response still leaves something to inspect;
            // fault-injection tests rely on seeing those partial responses.
            Err(_) if !received.is_empty() => break,
            Err(err) => return Err(err),
        }
    }
    Ok(parse_response(&received))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_request_adds_missing_headers_only() {
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(
            complete_request(addr, "GET /a/../b HTTP/1.1"),
            "GET /a/../b HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            complete_request(
                addr,
                "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            ),
            "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn parse_response_splits_head_and_body() {
        let response = parse_response(b"HTTP/1.1 404 Not Found\r\nX-A: 1\r\n\r\nbody");
        assert_eq!(response.status, 404);
        assert_eq!(response.header("x-a"), Some("1"));
        assert_eq!(response.body, b"body");
        assert_eq!(parse_response(b"").status, 0);
    }
}
