//! What wharf logs and where: `WHARF_LOG`'s filter (`info` when unset or
//! unreadable), compact lines on standard error, colours only on a terminal.
//!
//! A server logs one access line per request (`wharf::access`). Written at
//! once, each was a `write` of its own to standard error: at 100,000 index
//! hits a second, a quarter of the server's time. A server's access lines
//! are gathered instead and written 32 KiB at a time, and at least every
//! 200 ms, as nginx's `access_log … buffer=32k flush=…` does; every other
//! line is written at once, after the access lines before it, so the order
//! of lines is kept. Memory stays bounded: the thread whose line fills the
//! buffer writes it, and waits for standard error as every line did before.
//!
//! Access lines skip `tracing-subscriber`'s formatter too: a server writes
//! them itself, in the very form the formatter gives
//! (`2026-12-02T06:20:37.034219Z  INFO wharf::access: GET /… 200 3072B
//! 0.0ms`), into the batch. The formatter's timestamp, its escaping of the
//! message character by character and its dynamic dispatch cost about 2 µs
//! a line, a fifth of an index hit; escaping has nothing to do here, as
//! hyper admits no control character into a method or a path. Whether
//! access lines are wanted is still `WHARF_LOG`'s to say
//! (`wharf::access=off`).
//!
//! `tracing-appender`'s non-blocking writer was measured first and not
//! taken: it hands each line to its writer thread through a channel, and
//! that thread, asleep after every batch it drained, was woken for nearly
//! every line (a futex wake and wait per line, 14% of the server's time),
//! which left the server as slow as writing each line itself.

use std::{
    cell::RefCell,
    fmt::Write as _,
    io::{IsTerminal, Write},
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::{Duration, SystemTime},
};

use tracing::Metadata;
use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

/// The access lines gathered before they are written.
const BATCH_BYTES: usize = 32 * 1024;

/// The longest an access line waits to be written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Installs the process's logger. For a `server`, the returned guard
/// writes the access lines still gathered when it is dropped: hold it until
/// the server has stopped.
pub fn init_logging(server: bool) -> Option<LogGuard> {
    let filter = std::env::var("WHARF_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let logger = tracing_subscriber::fmt()
        .compact()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal());
    if !server {
        logger.with_writer(std::io::stderr).init();
        return None;
    }
    let batched = Batched::default();
    logger.with_writer(batched.clone()).init();
    let _ = ACCESS_LINES.set(batched.0.clone());
    let flusher = batched.clone();
    let _ = std::thread::Builder::new()
        .name("wharf-log".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                flusher.0.write_out(&[]);
            }
        });
    Some(LogGuard(batched))
}

/// A server's batch, once [`init_logging`] made one.
static ACCESS_LINES: OnceLock<Arc<Batch>> = OnceLock::new();

thread_local! {
    /// Where this thread writes its access line before it is gathered.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Writes access line `line` into the server's batch, as tracing's compact
/// format would; `false` when there is no batch (not a server), and the
/// caller logs it through tracing.
pub(crate) fn access(line: std::fmt::Arguments<'_>) -> bool {
    let Some(batch) = ACCESS_LINES.get() else {
        return false;
    };
    LINE.with_borrow_mut(|buffer| {
        buffer.clear();
        write_access_line(buffer, SystemTime::now(), line);
        batch.gather(buffer.as_bytes());
    });
    true
}

/// An access line at `now`, as tracing's compact format writes an event.
fn write_access_line(buffer: &mut String, now: SystemTime, line: std::fmt::Arguments<'_>) {
    let now = humantime::format_rfc3339_micros(now);
    let _ = writeln!(buffer, "{now}  INFO {}: {line}", crate::request_log::ACCESS);
}

/// Writes the gathered access lines when dropped.
pub struct LogGuard(Batched);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.0.write_out(&[]);
    }
}

/// Standard error, with access lines gathered into batches.
#[derive(Clone, Default)]
struct Batched(Arc<Batch>);

struct Batch {
    /// Access lines not yet written.
    gathered: Mutex<Vec<u8>>,
    /// Where lines go, held while writing, so batches go out in the order
    /// they were taken.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::to(Box::new(std::io::stderr()))
    }
}

impl Batch {
    fn to(out: Box<dyn Write + Send>) -> Self {
        Self {
            gathered: Mutex::new(Vec::with_capacity(BATCH_BYTES)),
            out: Mutex::new(out),
        }
    }

    /// Gathers an access line, writing the batch once it is full.
    fn gather(&self, line: &[u8]) {
        let mut gathered = lock(&self.gathered);
        gathered.extend_from_slice(line);
        if gathered.len() >= BATCH_BYTES {
            self.write_locked(gathered, &[]);
        }
    }

    /// Writes what is gathered, then `line`.
    fn write_out(&self, line: &[u8]) {
        self.write_locked(lock(&self.gathered), line);
    }

    fn write_locked(&self, mut gathered: MutexGuard<'_, Vec<u8>>, line: &[u8]) {
        if gathered.is_empty() && line.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut *gathered, Vec::with_capacity(BATCH_BYTES));
        // Taken in turn: whoever took an earlier batch is writing it first.
        let mut out = lock(&self.out);
        drop(gathered);
        // Standard error gone (a closed pipe) is no reason to fail a request.
        let _ = out.write_all(&batch);
        let _ = out.write_all(line);
        let _ = out.flush();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where one line goes.
pub struct Line<'a> {
    batch: &'a Batch,
    access: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        if self.access {
            self.batch.gather(line);
        } else {
            self.batch.write_out(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            batch: &self.0,
            access: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            batch: &self.0,
            access: meta.target() == crate::request_log::ACCESS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a batch wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_access_line_reads_as_tracing_writes_an_event() {
        let mut line = String::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_000_437_034_219);
        write_access_line(
            &mut line,
            at,
            format_args!("GET /r/index/se/rd/serde 200 412B 0.3ms"),
        );
        assert_eq!(
            line,
            "2026-11-30T01:00:37.034219Z  INFO wharf::access: GET /r/index/se/rd/serde 200 412B 0.3ms\n"
        );
    }

    #[test]
    fn access_lines_wait_for_a_full_batch_and_other_lines_come_after_them() {
        let written = Written::default();
        let batch = Batch::to(Box::new(written.clone()));
        let text = || String::from_utf8(lock(&written.0).clone()).unwrap();
        batch.gather(b"GET /a\n");
        batch.gather(b"GET /b\n");
        assert_eq!(text(), "", "written before the batch was full");
        batch.gather(&vec![b'.'; BATCH_BYTES]);
        assert!(text().starts_with("GET /a\nGET /b\n..."));
        assert_eq!(text().len(), 14 + BATCH_BYTES);
        lock(&written.0).clear();
        batch.gather(b"GET /c\n");
        batch.write_out(b"WARN upstream down\n");
        assert_eq!(text(), "GET /c\nWARN upstream down\n");
        // What the flusher and the guard write: whatever is gathered.
        batch.gather(b"GET /d\n");
        batch.write_out(&[]);
        assert_eq!(text(), "GET /c\nWARN upstream down\nGET /d\n");
    }
}
