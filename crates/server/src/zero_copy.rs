//! Large bodies sent to clients without a copy.
//!
//! hyper writes a response body with writev(2) from the bytes wharf holds,
//! and the kernel copies them into the socket's buffers. For a large index
//! file that copy is most of the cost: serving web-sys's 757 KB gzip form,
//! 43% of wharf's thread was in it, where nginx hands the kernel a file
//! with sendfile(2) and the socket takes the file's pages as they are.
//!
//! Here an index file of [`MIN_BYTES`] to [`MAX_BYTES`] that memory holds,
//! and each such compressed form of it (what cargo is sent), is put in an
//! anonymous memory file (memfd), sealed so that it can never change, and
//! mapped read-only: [`file_backed`] gives `Bytes` that read like any
//! others, and [`Socket`], each connection's IO, finds the slices of such
//! mappings among what hyper asks it to write and sends them from the file
//! with sendfile, at the slice's offset in the mapping. A slice is found by
//! its address, which lies inside a mapping only while that mapping lives:
//! the `Bytes` hyper is writing keep it alive, so the file sent is always
//! the one the slice was read from.
//!
//! An index file as it is (for clients that do not take gzip) costs wharf
//! less from a file too: serde's 181 KB, 61 µs a response against 80, and
//! 1.19 times as many a second. All 427 real ones in turn went 0.96 times as
//! fast on loopback although each cost 48 µs against 56: the client, one
//! thread on the same two cores, then reads file pages that no copy has
//! just brought into its cache. A client across a network does not share
//! wharf's cores, so the saving is what counts.
//!
//! Each memory file holds a file descriptor, so at most [`max_files`] are
//! held at once; past that, bodies stay on the heap and are copied as
//! before. On systems other than Linux no memory file is made.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, IoSlice},
    pin::Pin,
    sync::{
        Arc, LazyLock, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
};
use tracing::debug;

use crate::metrics::Counter;

/// Bodies smaller than this are copied: below it a sendfile call and a
/// file descriptor cost more than the copy saves.
pub const MIN_BYTES: usize = 64 << 10;

/// Bodies larger than this are copied too. On loopback the client received
/// file pages more slowly than bytes wharf had just copied once a body was
/// large: web-sys's 4.9 MB index file went at 290 responses a second from a
/// memory file (as from nginx) against 400 copied, a third of the machine
/// idle, where rustix's 1.2 MB went 1.05 times as fast from the file and
/// syn's 733 KB 1.34 times. A gzip form this large is of an index file of
/// 10 MB or more.
pub const MAX_BYTES: usize = 2 << 20;

/// Slices shorter than this are not looked up when written: the rest of a
/// large body that a full socket cut short is copied, and a small
/// response's write takes no lock.
const LOOKUP_BYTES: usize = 16 << 10;

/// A memory file's mapping: where it starts, keyed by address.
struct Mapping {
    len: usize,
    file: Arc<File>,
}

/// Every live memory file, by the address its mapping starts at.
static MAPPINGS: RwLock<BTreeMap<usize, Mapping>> = RwLock::new(BTreeMap::new());

/// Memory files held now (slots taken, one file descriptor each).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Response bytes sent from memory files, for `/metrics`.
static SENT: LazyLock<Counter> = LazyLock::new(Counter::default);

/// The most memory files held at once: an eighth of the open-file limit,
/// and no more than 1,024 (none where there are no memory files). The
/// accept loop leaves this many descriptors free of connections.
pub fn max_files() -> usize {
    if !sys::HAS_MEMORY_FILES {
        return 0;
    }
    static MAX: LazyLock<usize> = LazyLock::new(|| {
        let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
        usize::try_from(soft / 8).unwrap_or(usize::MAX).min(1024)
    });
    *MAX
}

/// Response body bytes sent with sendfile from memory files.
pub fn bytes_sent() -> &'static Counter {
    &SENT
}

/// `body` (an index file or a compressed form) held in a sealed memory
/// file when it is [`MIN_BYTES`] to [`MAX_BYTES`] long and a slot is free,
/// so that a [`Socket`] sends it without a copy; otherwise `body` as it is (always,
/// on systems other than Linux). Copies the body once: call it where a
/// body is kept, not per request.
pub fn file_backed(body: Bytes) -> Bytes {
    if !sys::HAS_MEMORY_FILES
        || !(MIN_BYTES..=MAX_BYTES).contains(&body.len())
        || find(&body).is_some()
    {
        return body;
    }
    if HELD.fetch_add(1, Ordering::Relaxed) >= max_files() {
        HELD.fetch_sub(1, Ordering::Relaxed);
        return body;
    }
    match MemoryFile::new(&body) {
        Ok(file) => Bytes::from_owner(file),
        Err(e) => {
            HELD.fetch_sub(1, Ordering::Relaxed);
            debug!(error = %e, bytes = body.len(), "cannot hold a body in a memory file; it is copied when sent");
            body
        }
    }
}

/// A sealed memory file's read-only mapping, registered in [`MAPPINGS`]
/// for as long as it lives.
struct MemoryFile {
    map: Mmap,
}

impl MemoryFile {
    /// A memory file holding `body`, which takes a slot of [`HELD`].
    fn new(body: &[u8]) -> io::Result<Self> {
        let file = sys::sealed_memory_file(body)?;
        // SAFETY: the seals forbid any change to the file's size or bytes
        // from now on, by anyone, so the mapping never changes under the
        // slices that borrow it.
        let map = unsafe { MmapOptions::new().populate().map(&file)? };
        let mapping = Mapping {
            len: map.len(),
            file: Arc::new(file),
        };
        mappings_mut().insert(map.as_ptr() as usize, mapping);
        Ok(Self { map })
    }
}

impl AsRef<[u8]> for MemoryFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        // Before the mapping goes (its field is dropped after this): no
        // slice can be found in it once its address may be reused.
        mappings_mut().remove(&(self.map.as_ptr() as usize));
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

fn mappings_mut() -> std::sync::RwLockWriteGuard<'static, BTreeMap<usize, Mapping>> {
    MAPPINGS.write().unwrap_or_else(|e| e.into_inner())
}

/// The memory file `slice` lies in, and the slice's offset in it.
fn find(slice: &[u8]) -> Option<(Arc<File>, u64)> {
    let at = slice.as_ptr() as usize;
    let mappings = MAPPINGS.read().unwrap_or_else(|e| e.into_inner());
    let (&start, mapping) = mappings.range(..=at).next_back()?;
    let offset = at - start;
    (offset + slice.len() <= mapping.len).then(|| (mapping.file.clone(), offset as u64))
}

/// A client connection that sends slices of memory files with sendfile and
/// everything else as tokio's `TcpStream` does.
pub(crate) struct Socket {
    stream: TcpStream,
}

impl Socket {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self { stream }
    }

    /// Runs `write` once the socket can take bytes, again each time it
    /// finds the socket full.
    fn write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self
                .stream
                .try_io(Interest::WRITABLE, || write(&self.stream))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let held = if HELD.load(Ordering::Relaxed) == 0 {
            None
        } else {
            bufs.iter()
                .enumerate()
                .filter(|(_, buf)| buf.len() >= LOOKUP_BYTES)
                .find_map(|(i, buf)| find(buf).map(|found| (i, found)))
        };
        match held {
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
            Some((0, (file, offset))) => {
                let len = bufs[0].len();
                let sent = ready!(
                    self.write_with(cx, |stream| sys::send_file(stream, &file, offset, len))
                )?;
                SENT.inc_by(sent as u64);
                Poll::Ready(Ok(sent))
            }
            // What comes before (the response's head), held back by the
            // kernel until the file's bytes follow, as one segment.
            Some((before, _)) => {
                self.write_with(cx, |stream| sys::send_more(stream, &bufs[..before]))
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Memory files, sendfile and `MSG_MORE` are Linux's.
#[cfg(target_os = "linux")]
mod sys {
    use std::{
        fs::File,
        io::{self, IoSlice, Write},
    };

    use rustix::{
        fs::{MemfdFlags, SealFlags},
        net::{SendAncillaryBuffer, SendFlags},
    };
    use tokio::net::TcpStream;

    pub(super) const HAS_MEMORY_FILES: bool = true;

    /// A memory file holding `body`, sealed against any change to its size
    /// or bytes, by anyone, for as long as it exists.
    pub(super) fn sealed_memory_file(body: &[u8]) -> io::Result<File> {
        let fd = rustix::fs::memfd_create(
            "wharf-body",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        let mut file = File::from(fd);
        file.write_all(body)?;
        rustix::fs::fcntl_add_seals(
            &file,
            SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
        )?;
        Ok(file)
    }

    /// Sends `len` bytes of `file` from `offset`; how many went.
    pub(super) fn send_file(
        stream: &TcpStream,
        file: &File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        let mut at = offset;
        Ok(rustix::fs::sendfile(stream, file, Some(&mut at), len)?)
    }

    /// Sends `bufs`, which more bytes follow at once; how many went.
    pub(super) fn send_more(stream: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::net::sendmsg(
            stream,
            bufs,
            &mut SendAncillaryBuffer::default(),
            SendFlags::MORE | SendFlags::NOSIGNAL,
        )?)
    }
}

/// Elsewhere no memory file is made, so nothing is sent from one: bodies
/// are copied as hyper writes them.
#[cfg(not(target_os = "linux"))]
mod sys {
    use std::{
        fs::File,
        io::{self, IoSlice},
    };

    use tokio::net::TcpStream;

    pub(super) const HAS_MEMORY_FILES: bool = false;

    pub(super) fn sealed_memory_file(_: &[u8]) -> io::Result<File> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn send_file(_: &TcpStream, _: &File, _: u64, _: usize) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(super) fn send_more(_: &TcpStream, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pattern(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    /// A connected pair: wharf's side as a `Socket` with a small send buffer,
    /// the client's side with a small receive buffer, so that the sender finds the socket full.
    async fn pair() -> (Socket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client.connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let accepted = accepted.unwrap().0;
        rustix::net::sockopt::set_socket_send_buffer_size(&accepted, 4096).unwrap();
        (Socket::new(accepted), client.unwrap())
    }

    #[test]
    fn small_bodies_stay_on_the_heap_and_large_ones_are_found() {
        assert!(find(&file_backed(pattern(MIN_BYTES - 1))).is_none());
        assert!(find(&file_backed(pattern(MAX_BYTES + 1))).is_none());
        let large = file_backed(pattern(MIN_BYTES * 2));
        assert_eq!(&large[..], &pattern(MIN_BYTES * 2)[..]);
        let (_, offset) = find(&large[1000..5000]).expect("a slice of a memory file");
        assert_eq!(offset, 1000);
        assert!(
            find(&large[MIN_BYTES..]).is_some(),
            "a slice that ends at the mapping's end"
        );
        // Held once: wrapping it again makes no second file.
        let again = file_backed(large.clone());
        assert_eq!(again.as_ptr(), large.as_ptr());
        let address = large.as_ptr();
        drop((large, again));
        let mappings = MAPPINGS.read().unwrap();
        assert!(
            !mappings.contains_key(&(address as usize)),
            "a dropped body's mapping is forgotten"
        );
    }

    /// A head and a large body written as hyper writes them, to a client
    /// that reads slowly: every byte arrives, in order, and the body's
    /// bytes went by sendfile, a part at a time.
    #[tokio::test]
    async fn a_head_and_a_held_body_arrive_whole_through_a_full_socket() {
        let body = file_backed(pattern(700_000));
        assert!(find(&body).is_some());
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 700000\r\n\r\n".to_vec();
        let (mut socket, mut client) = pair().await;
        let before = bytes_sent().get();
        let expected = [&head[..], &body[..]].concat();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = vec![0; 1000];
            while got.len() < 700_000 + 42 {
                let n = client.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the connection ended early");
                got.extend_from_slice(&chunk[..n]);
                tokio::task::yield_now().await;
            }
            got
        });
        let (mut head_at, mut body_at, mut writes) = (0, 0, 0);
        while body_at < body.len() {
            let slices = [
                IoSlice::new(&head[head_at..]),
                IoSlice::new(&body[body_at..]),
            ];
            let slices = if head_at < head.len() {
                &slices[..]
            } else {
                &slices[1..]
            };
            let mut n = socket.write_vectored(slices).await.unwrap();
            writes += 1;
            let from_head = n.min(head.len() - head_at);
            head_at += from_head;
            n -= from_head;
            body_at += n;
        }
        socket.flush().await.unwrap();
        assert_eq!(reader.await.unwrap(), expected);
        assert!(writes > 2, "the socket was never full: {writes} writes");
        // All but a last piece shorter than a lookup; at least, as another
        // test's sends may count too.
        let sent = bytes_sent().get() - before;
        assert!(
            sent > (700_000 - LOOKUP_BYTES) as u64,
            "{sent} bytes by sendfile"
        );
    }
}
