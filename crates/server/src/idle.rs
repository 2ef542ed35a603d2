//! The idle and header-read timeout of a connection, kept by its IO.
//!
//! A connection that waits for a request head (after it opens, or after a
//! response) is closed once `idle_timeout` has passed since then: that
//! bounds a keep-alive connection's idle time and a request head sent a
//! byte at a time alike. While a request is being answered there is no such
//! bound (a request body has its own, `body_timeout`, between bytes), and
//! each byte written to the client starts the wait anew, so a long download
//! is never cut.
//!
//! hyper's own header-read timeout does the same with one timer per
//! request: a boxed sleep, put into tokio's timer wheel and taken out again
//! under its lock, which cost about 5% of an index hit. Here a connection
//! has one sleep for its whole life. A write only notes the time; when the
//! sleep fires, the deadline is worked out from that note, and the sleep is
//! moved on if the deadline is still ahead.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::time::{Instant, Sleep};

/// What a connection's service tells its IO, and what the IO tells the
/// accept loop.
#[derive(Default)]
pub(crate) struct Watch {
    /// A request is being answered: its service has not returned yet.
    busy: AtomicBool,
    /// The connection was closed by this timeout.
    timed_out: AtomicBool,
}

impl Watch {
    /// Marks a request as being answered until the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.store(true, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Whether the connection ended because its client let it sit.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// A request under way on a [`Watch`]ed connection.
pub(crate) struct Busy(Arc<Watch>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Relaxed);
    }
}

/// A connection's IO that fails a read with [`io::ErrorKind::TimedOut`]
/// once the client has let it wait for a request head too long.
pub(crate) struct IdleIo<T> {
    io: T,
    timeout: Duration,
    watch: Arc<Watch>,
    /// When the current wait began: the connection opened, a byte was
    /// written, or a request was answered.
    since: Instant,
    /// A request was being answered at the last read that found nothing.
    was_busy: bool,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    /// Wraps a connection's `io`, opened now, watched through `watch`.
    pub(crate) fn new(io: T, timeout: Duration, watch: Arc<Watch>) -> Self {
        let since = Instant::now();
        Self {
            io,
            timeout,
            watch,
            since,
            was_busy: false,
            sleep: Box::pin(tokio::time::sleep_until(since + timeout)),
        }
    }

    /// Called when a read found nothing: whether the wait has gone on too
    /// long. Otherwise the sleep is left armed to wake this task.
    fn waited_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        if self.watch.busy.load(Ordering::Relaxed) {
            self.was_busy = true;
            return false;
        }
        if std::mem::take(&mut self.was_busy) {
            self.since = Instant::now();
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            let deadline = self.since + self.timeout;
            if Instant::now() >= deadline {
                self.watch.timed_out.store(true, Ordering::Relaxed);
                return true;
            }
            self.sleep.as_mut().reset(deadline);
        }
        false
    }

    fn wrote(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.since = Instant::now();
        }
    }
}

impl<T: Read + Unpin> Read for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if this.waited_too_long(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the idle timeout",
            ))),
            read => read,
        }
    }
}

impl<T: Write + Unpin> Write for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads from `io` as hyper would until a read fails.
    async fn read_error(io: &mut IdleIo<TokioIo<tokio::io::DuplexStream>>) -> io::Error {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        loop {
            let mut read = hyper::rt::ReadBuf::uninit(&mut buf);
            let result =
                std::future::poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, read.unfilled())).await;
            if let Err(e) = result {
                return e;
            }
        }
    }

    /// `took` is `secs` seconds, to the timer's millisecond.
    fn about(took: Duration, secs: u64) {
        let secs = Duration::from_secs(secs);
        assert!(
            took >= secs && took <= secs + Duration::from_millis(2),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_head_ends_after_the_timeout_not_while_busy() {
        let (server, mut client) = tokio::io::duplex(1024);
        let watch = Arc::new(Watch::default());
        let mut io = IdleIo::new(TokioIo::new(server), Duration::from_secs(10), watch.clone());
        let start = Instant::now();
        // A head trickling in does not move the deadline.
        client.write_all(b"GET / HT").await.unwrap();
        let e = read_error(&mut io).await;
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        about(start.elapsed(), 10);
        assert!(watch.timed_out());

        // While a request is answered, nothing times out; once it is, a
        // written byte starts the wait anew.
        let (server, mut client) = tokio::io::duplex(1024);
        let watch = Arc::new(Watch::default());
        let mut io = IdleIo::new(TokioIo::new(server), Duration::from_secs(10), watch.clone());
        let busy = watch.busy();
        let reading = tokio::spawn(async move {
            let start = Instant::now();
            let e = read_error(&mut io).await;
            (e, start.elapsed(), io)
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!reading.is_finished(), "timed out while busy");
        drop(busy);
        client.write_all(b"x").await.unwrap();
        let (e, took, mut io) = reading.await.unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        about(took, 70);

        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(5)).await;
        std::future::poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"HTTP/1.1 200 OK\r\n"))
            .await
            .unwrap();
        let mut line = [0; 17];
        client.read_exact(&mut line).await.unwrap();
        let e = read_error(&mut io).await;
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        about(start.elapsed(), 15);
    }
}
