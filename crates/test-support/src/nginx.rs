//! nginx (the Debian package) serving a directory as static files: the
//! baseline of the benchmarks, and the proof that a mirror's tree works
//! without wharf.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// How nginx serves: [`Nginx::start`] uses the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct NginxOptions {
    /// Worker processes; 0 for one a core (`auto`).
    pub workers: usize,
    /// Answers a request that accepts gzip with `FILE.gz` when it exists
    /// (`gzip_static on`), and keeps open file descriptors
    /// (`open_file_cache`): nginx's best for precompressed static files.
    pub gzip_static: bool,
    /// Logs each request to `logs/access.log` in nginx's `combined` format,
    /// 32 KiB at a time and at least every second (its best for a busy
    /// server); off by default.
    pub access_log: bool,
}

/// nginx serving wharf's data directory as static files.
pub struct Nginx {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx serving `root` on a free loopback port, with its own
    /// configuration and logs under `work/nginx`.
    pub fn start(work: &Path, root: &Path) -> std::io::Result<Self> {
        Self::start_with(work, root, NginxOptions::default())
    }

    /// [`Nginx::start`], configured by `options`.
    pub fn start_with(work: &Path, root: &Path, options: NginxOptions) -> std::io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let prefix = work.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        let conf = prefix.join("nginx.conf");
        // A fair baseline: as many workers as cores, sendfile, no access log
        // unless asked for.
        // As root, nginx would hand requests to workers running as `nobody`,
        // which cannot read a private temporary directory.
        let root_user = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let user = if root_user { "user root;\n" } else { "" };
        let workers = match options.workers {
            0 => "auto".to_owned(),
            n => n.to_string(),
        };
        let best = if options.gzip_static {
            "  gzip_static on;\n  open_file_cache max=100000 inactive=60s;\n  open_file_cache_valid 60s;\n"
        } else {
            ""
        };
        let access_log = if options.access_log {
            format!(
                "access_log {} combined buffer=32k flush=1s",
                prefix.join("logs/access.log").display()
            )
        } else {
            "access_log off".to_owned()
        };
        std::fs::write(
            &conf,
            format!(
                "{user}worker_processes {workers};\ndaemon off;\npid {pid};\nerror_log {log} warn;\nevents {{ worker_connections 4096; }}\n\
                 http {{\n  {access_log};\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  default_type application/octet-stream;\n{best}\
                 server {{ listen {addr}; root {root}; etag on; }}\n}}\n",
                pid = prefix.join("nginx.pid").display(),
                log = prefix.join("logs/error.log").display(),
                root = root.display(),
            ),
        )?;
        let child = Command::new(which("nginx").ok_or_else(|| {
            std::io::Error::other("nginx is not installed (apt-get install nginx-light)")
        })?)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Self { child, addr });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other(format!(
            "nginx did not start listening on {addr}"
        )))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `program` on PATH or in the sbin directories, where Debian puts nginx.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}
