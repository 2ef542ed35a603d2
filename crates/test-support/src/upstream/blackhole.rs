//! The simplest broken upstream: a port that accepts connections and never
//! answers them.

use super::*;

/// A port that accepts TCP connections and never answers them.
///
/// Input is read and discarded so clients never block on a full send buffer; each
/// connection stays open until the client closes it or the `Blackhole` is dropped.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Blackhole {
    /// Binds `127.0.0.1:0` and starts swallowing connections.
    ///
    /// # Panics
    ///
    /// When binding fails.
    pub async fn start() -> Blackhole {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding the blackhole on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("reading the blackhole's address");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut held = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut stream, _peer)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        counter.fetch_add(1, Ordering::SeqCst);
                        held.spawn(async move {
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = stream.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        });
                    }
                    Some(_) = held.join_next(), if !held.is_empty() => {}
                }
            }
        });
        Blackhole {
            addr,
            connections,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `sparse+http://127.0.0.1:PORT/index/`.
    pub fn index_url(&self) -> String {
        format!("sparse+http://{}/index/", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        // Dropping the task drops its JoinSet, which closes every held connection.
        self.task.abort();
    }
}
