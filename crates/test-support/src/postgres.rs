//! A throwaway PostgreSQL 15 server for the tests of wharf's PostgreSQL backend.
//!
//! The server runs from Debian's `postgresql-15` binaries in a temporary directory:
//! its own cluster (`initdb`), listening on a free port of `127.0.0.1` only, its
//! socket in the same directory, trust authentication, and no fsync. Starting one
//! takes a few seconds, so a test binary normally shares one server
//! ([`TempPostgres::shared`]) and gives each test its own database
//! ([`TempPostgres::create_database`]).
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI, containers),
//! `initdb` and `postgres` run as the `postgres` OS user that the Debian package
//! creates, and the directory is handed to that user.
//!
//! Nothing is left behind: a watchdog shell holds a pipe from the test process and,
//! when that pipe closes (a drop, or the process ending in any way, even killed),
//! stops the server and deletes the directory. So a shared server, which lives in
//! a `static` and is never dropped, still goes away with its test binary.

use std::{
    fs::File,
    io::Read,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Where Debian's `postgresql-15` package installs the server binaries.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The environment variable that overrides [`DEFAULT_BIN_DIR`].
pub const BIN_DIR_ENV: &str = "WHARF_POSTGRES_BIN";

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server in a temporary directory, stopped and deleted on
/// drop.
pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    server: Child,
    /// The write end of the watchdog's pipe: closing it stops the server.
    watchdog_pipe: Option<ChildStdin>,
    watchdog: Child,
}

/// Who runs the server: the `postgres` user when we are root, else ourselves.
#[derive(Clone, Copy)]
struct RunAs {
    ids: Option<(u32, u32)>,
}

impl RunAs {
    fn apply(self, cmd: &mut Command) -> &mut Command {
        if let Some((uid, gid)) = self.ids {
            // std drops supplementary groups before `setuid` when it runs as root.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

impl TempPostgres {
    /// Starts a new server, or panics saying what is missing.
    ///
    /// Most tests want [`TempPostgres::shared`]. There is no switch to skip the
    /// PostgreSQL tests: a backend that is not tested must show as a failure,
    /// never as a pass.
    pub fn start() -> TempPostgres {
        match Self::try_start() {
            Ok(pg) => pg,
            Err(e) => cannot_start(&e),
        }
    }

    /// The server shared by every test of this test binary, started on first use,
    /// or a panic saying what to install.
    ///
    /// It is stopped and its directory deleted when the test binary exits. A
    /// failed start is not retried by every later test: they all panic with the
    /// first test's message.
    pub fn shared() -> &'static TempPostgres {
        static SHARED: OnceLock<Result<TempPostgres, String>> = OnceLock::new();
        match SHARED.get_or_init(Self::try_start) {
            Ok(pg) => pg,
            Err(e) => cannot_start(e),
        }
    }

    /// Starts a new server, or says what is missing.
    pub fn try_start() -> Result<TempPostgres, String> {
        let bin = std::env::var_os(BIN_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR));
        for program in ["initdb", "postgres", "pg_isready", "psql"] {
            if !bin.join(program).is_file() {
                return Err(format!(
                    "{} is missing (apt-get install postgresql-15, or point {BIN_DIR_ENV} at \
                     the directory holding initdb and postgres)",
                    bin.join(program).display()
                ));
            }
        }
        let run_as = RunAs {
            ids: if running_as_root() {
                Some(postgres_user()?)
            } else {
                None
            },
        };
        // A free port can be taken between our probe and the server's bind. Then
        // everything starts again in a new directory: rare, and simpler than
        // keeping a half-used one.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::start_in_new_dir(&bin, run_as) {
                Ok(pg) => return Ok(pg),
                Err(Started::PortTaken(e)) => last_error = e,
                Err(Started::Failed(e)) => return Err(e),
            }
        }
        Err(last_error)
    }

    fn start_in_new_dir(bin: &Path, run_as: RunAs) -> Result<TempPostgres, Started> {
        let dir = tempfile::Builder::new()
            .prefix("wharf-pg-")
            .tempdir()
            .map_err(|e| Started::Failed(format!("cannot create a temporary directory: {e}")))?
            .keep();
        // Until the watchdog owns the directory, every error path deletes it here.
        let started = Self::init_and_run(bin, &dir, run_as);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn init_and_run(bin: &Path, dir: &Path, run_as: RunAs) -> Result<TempPostgres, Started> {
        let failed = |what: &str, e: std::io::Error| Started::Failed(format!("{what}: {e}"));
        if let Some((uid, gid)) = run_as.ids {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| failed("cannot hand the directory to the postgres user", e))?;
        }
        let data = dir.join("data");
        let initdb_log = dir.join("initdb.log");
        let log = File::create(&initdb_log).map_err(|e| failed("cannot create a log file", e))?;
        let status = run_as
            .apply(&mut Command::new(bin.join("initdb")))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| failed("cannot share the log file", e))?,
            )
            .stderr(log)
            .status()
            .map_err(|e| failed("cannot run initdb", e))?;
        if !status.success() {
            return Err(Started::Failed(format!(
                "initdb failed: {}",
                read_tail(&initdb_log)
            )));
        }

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| failed("cannot find a free port", e))?
            .port();
        let log_path = dir.join("postgres.log");
        let log = File::create(&log_path).map_err(|e| failed("cannot create a log file", e))?;
        let mut server = run_as
            .apply(&mut Command::new(bin.join("postgres")))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| failed("cannot share the log file", e))?,
            )
            .stderr(log)
            .spawn()
            .map_err(|e| failed("cannot run postgres", e))?;

        if let Err(e) = wait_ready(bin, port, &mut server, &log_path) {
            // SIGINT is PostgreSQL's fast shutdown; give it a moment, then kill.
            let _ = Command::new("kill")
                .args(["-INT", &server.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(server.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = server.kill();
            let _ = server.wait();
            return Err(e);
        }

        // The watchdog is root's shell (or ours), so it may signal the server and
        // delete the directory whoever owns them. It ignores the terminal's Ctrl-C
        // so that it outlives the test binary long enough to clean up.
        let script = r#"trap '' INT HUP
read _
kill -INT "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$1" 2>/dev/null
rm -rf "$2""#;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("wharf-pg-watchdog")
            .arg(server.id().to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                let _ = server.kill();
                let _ = server.wait();
                return Err(failed("cannot run the watchdog shell", e));
            }
        };
        Ok(TempPostgres {
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            port,
            server,
            watchdog_pipe: watchdog.stdin.take(),
            watchdog,
        })
    }

    /// The URL of the server's `postgres` database, as the `postgres` superuser.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this server, as the `postgres` superuser.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port the server listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding the cluster, its socket and its logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a new, empty database with a unique name and returns its URL.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "wharf_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql(&format!("CREATE DATABASE {name}"));
        self.database_url(&name)
    }

    /// Runs one SQL command in the `postgres` database as the superuser, or panics
    /// with psql's message.
    pub fn psql(&self, sql: &str) {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-U", "postgres", "-d", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "psql `{sql}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run psql: {e}"),
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // Closing the pipe wakes the watchdog, which asks the server for a fast
        // shutdown. We reap the server ourselves (else it would linger as a
        // zombie the watchdog waits on), then let the watchdog delete the directory.
        drop(self.watchdog_pipe.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.server.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.server.kill();
                    let _ = self.server.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.watchdog.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Panics saying why the server did not start and what to install.
fn cannot_start(e: &str) -> ! {
    panic!(
        "cannot start a temporary PostgreSQL server: {e}; the PostgreSQL tests need \
         PostgreSQL 15's binaries (apt-get install postgresql-15, which also creates \
         the postgres user; .ci/run installs it)"
    )
}

/// Why one attempt to run the server failed.
enum Started {
    /// Another process took the port first; worth another try.
    PortTaken(String),
    /// Anything else.
    Failed(String),
}

/// Waits until the server accepts connections, or says why it never will.
fn wait_ready(bin: &Path, port: u16, server: &mut Child, log_path: &Path) -> Result<(), Started> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            return Ok(());
        }
        if !matches!(server.try_wait(), Ok(None)) {
            let log = read_tail(log_path);
            return Err(
                if log.contains("could not bind") || log.contains("could not create any TCP/IP") {
                    Started::PortTaken(format!("postgres could not bind port {port}: {log}"))
                } else {
                    Started::Failed(format!("postgres stopped while starting: {log}"))
                },
            );
        }
        if Instant::now() > deadline {
            return Err(Started::Failed(format!(
                "postgres did not accept connections within {START_TIMEOUT:?}: {}",
                read_tail(log_path)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether this process runs as root. `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of the `postgres` OS user, which the Debian package creates.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .ok_or_else(|| {
            "there is no `postgres` OS user to run the server as (PostgreSQL refuses root; \
             apt-get install postgresql-15 creates the user)"
                .to_owned()
        })
}

/// The last lines of a log file, on one line, for an error message.
fn read_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join(" | ")
}
