//! The accept loop: HTTP/1.1 connections with bounds on how many are open,
//! how long one may sit idle or send its request head, and how long a
//! request body may pause.
//!
//! `axum::serve` has none of these, and without them idle connections, a
//! request line sent a byte at a time, or a publish body that stops
//! half-way each held a file descriptor for ever, until about 20,000 of them
//! used up the process's limit and `/healthz` stopped answering. hyper's
//! header-read timeout is armed whenever a connection waits for a request
//! head, after it opens and after each response, so one timer bounds both
//! a keep-alive connection's idle time and a slow request head.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{info, warn};
use wharf_config::Connections;

use crate::{
    dispatch::Dispatch,
    idle::{IdleIo, Watch},
    metrics::Counter,
    zero_copy,
};

/// File descriptors kept for everything but client connections and memory
/// files ([`zero_copy::max_files`]): storage, the database, upstream
/// requests, logs.
const RESERVED_FDS: u64 = 512;

/// Connection counters, for `/metrics` and `/status.json`.
#[derive(Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted and closed at once because `max` were open.
    pub refused: Counter,
    /// Connections closed because their request head or body did not come
    /// in time (idle keep-alive connections included).
    pub timed_out: Counter,
    /// The bound in force (`max`, lowered to fit the file limit).
    pub max: AtomicU64,
}

/// Raises this process's soft limit on open files to its hard limit, so that
/// a server is bounded by `[connections] max` rather than by a low default;
/// returns the soft limit now in force.
pub fn raise_file_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// `max`, lowered to what the process's file limit leaves for connections.
fn effective_max(max: usize) -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(u64::MAX);
    let reserved = RESERVED_FDS + zero_copy::max_files() as u64;
    let room = usize::try_from(soft.saturating_sub(reserved).max(16)).unwrap_or(usize::MAX);
    if room < max {
        warn!(
            connections.max = max,
            file_limit = soft,
            connections.used = room,
            "the open-file limit leaves room for fewer connections than [connections] max; raise the hard limit (ulimit -Hn, LimitNOFILE=) to serve more"
        );
    }
    max.min(room)
}

/// Serves `dispatch` on `listener` within `limits` until `shutdown` completes,
/// then closes idle connections and waits for requests under way.
pub async fn serve_connections(
    listener: TcpListener,
    dispatch: Dispatch,
    limits: &Connections,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = effective_max(limits.max);
    stats.max.store(max as u64, Ordering::Relaxed);
    let slots = Arc::new(Semaphore::new(max));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The head's timeout is the IO's, not hyper's (see `idle`).
    builder.header_read_timeout(None).keep_alive(true);
    let (idle_timeout, body_timeout) = (limits.idle_timeout, limits.body_timeout);
    let graceful = GracefulShutdown::new();
    let refusals = RefusalLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before
                    // it was accepted): wait a little rather than spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.inc();
            refusals.note(max);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let dispatch = dispatch.clone();
        let watch = Arc::new(Watch::default());
        let io = IdleIo::new(
            TokioIo::new(zero_copy::Socket::new(stream)),
            idle_timeout,
            watch.clone(),
        );
        let service = hyper::service::service_fn({
            let watch = watch.clone();
            move |request: Request<Incoming>| {
                let busy = watch.busy();
                let response = dispatch.call(request, peer, body_timeout);
                async move {
                    let response = response.await;
                    drop(busy);
                    response
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service));
        let stats = stats.clone();
        stats.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // hyper ends a connection that fails while idle without an error.
            let _ = connection.await;
            if watch.timed_out() {
                stats.timed_out.inc();
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    info!(
        open = stats.open.load(Ordering::Relaxed),
        "closing idle connections, waiting for requests under way"
    );
    graceful.shutdown().await;
    Ok(())
}

/// Logs refused connections at most every ten seconds, with how many.
#[derive(Default)]
struct RefusalLog {
    last: Mutex<Option<(Instant, u64)>>,
}

impl RefusalLog {
    fn note(&self, max: usize) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match &mut *last {
            Some((at, count)) if now.duration_since(*at) < Duration::from_secs(10) => *count += 1,
            _ => {
                let earlier = last.map_or(0, |(_, count)| count);
                warn!(
                    connections.max = max,
                    refused_since_last_report = earlier + 1,
                    "connection limit reached: new connections are closed at once ([connections] max)"
                );
                *last = Some((now, 0));
            }
        }
    }
}
