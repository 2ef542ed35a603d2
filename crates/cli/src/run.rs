//! `wharf run -- CMD`: an ephemeral local cache in front of the user's
//! mirrors, for one command.
//!
//! Cargo takes exactly one replacement source and never falls back. `wharf
//! run` starts a `cache` registry on a free loopback port whose upstreams are
//! the user's mirrors in order (crates.io last), then runs the command with
//! cargo pointed at it. Nothing is written to the project or to `~/.cargo`:
//! cargo is reached through a `cargo` shim, first on `PATH` for the command,
//! that adds two `--config` arguments (source replacement) to every call. The
//! cache lives in the user's cache directory, so a second run is warm and
//! works offline for everything the first one saw.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;
use tracing::info;
use wharf_config::{CRATES_IO_SPARSE, CacheRegistry, Config, Registry};

use crate::RunArgs;

/// The user's settings for `wharf run` and `wharf setup`:
/// `~/.config/wharf/client.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    /// Mirrors, tried in order before crates.io.
    #[serde(default)]
    mirrors: Vec<String>,
    /// Whether crates.io is tried after the mirrors (default: yes).
    #[serde(default)]
    crates_io_last: Option<bool>,
    /// Bound on connecting and receiving the first byte from a mirror.
    #[serde(default, with = "humantime_serde")]
    upstream_timeout: Option<Duration>,
}

/// The source name the shim gives wharf in cargo's configuration.
const SOURCE: &str = "wharf-run";

/// Runs the command through an ephemeral cache; its exit code is returned.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some((program, program_args)) = args.command.split_first() else {
        bail!("nothing to run: give a command after `--`, e.g. `wharf run -- cargo build`");
    };
    let client = read_client_config(args.client_config.as_deref())?;
    let mut upstreams: Vec<String> = client
        .mirrors
        .iter()
        .chain(&args.mirrors)
        .map(|m| sparse_url(m))
        .collect();
    if !args.no_crates_io && client.crates_io_last.unwrap_or(true) {
        upstreams.push(CRATES_IO_SPARSE.to_owned());
    }
    upstreams.dedup();
    if upstreams.is_empty() {
        bail!(
            "no upstream to use: give --mirror URL, list mirrors in ~/.config/wharf/client.toml, or leave out --no-crates-io"
        );
    }
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => default_cache_dir()?,
    };
    let config = Config {
        listen: "127.0.0.1:0".parse().context("a loopback address")?,
        data_dir: cache_dir.clone(),
        // One person's own builds: nothing to count for an operator.
        stats: wharf_config::Stats {
            enabled: false,
            ..wharf_config::Stats::default()
        },
        registries: [(
            "crates-io".to_owned(),
            Registry::Cache(CacheRegistry {
                upstreams: upstreams.clone(),
                upstream_timeout: args
                    .upstream_timeout
                    .map(Into::into)
                    .or(client.upstream_timeout)
                    .unwrap_or(Duration::from_secs(2)),
                hedge_after: Some(Duration::from_millis(300)),
                // The only client is this one command: a cold build of a
                // large project must not meet a public cache's budget.
                client_miss_burst: 0,
                ..CacheRegistry::default()
            }),
        )]
        .into(),
        ..Config::default()
    };
    config.validate()?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    let public_url = format!("http://{addr}");
    let state = Arc::new(wharf_server::AppState::build(&config, &public_url).await?);
    let index_url = state.index_url("crates-io");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(wharf_server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    info!(index = %index_url, upstreams = %upstreams.join(", "), cache = %cache_dir.display(), "wharf run: local cache up");

    let shim_dir = tempfile::Builder::new()
        .prefix("wharf-run-")
        .tempdir()
        .context("cannot make a directory for the cargo shim")?;
    let real_cargo = find_cargo()?;
    let shim = write_shim(shim_dir.path(), &real_cargo, &index_url)?;
    let path = std::env::join_paths(
        std::iter::once(shim_dir.path().to_owned()).chain(
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
    )
    .context("PATH holds a directory that cannot be joined")?;
    // `cargo` itself goes through the shim; any other program finds the shim
    // first on PATH whenever it runs cargo.
    let program: PathBuf = if program == "cargo" {
        shim
    } else {
        PathBuf::from(program)
    };
    let status = tokio::process::Command::new(&program)
        .args(program_args)
        .env("PATH", path)
        .env("WHARF_RUN_INDEX", &index_url)
        .status()
        .await
        .with_context(|| format!("cannot run {}", program.display()))?;
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal: the shell convention is 128 + signal.
        None => ExitCode::from(exit_code_of_signal(&status)),
    })
}

#[cfg(unix)]
fn exit_code_of_signal(status: &std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    status
        .signal()
        .and_then(|s| u8::try_from(128 + s).ok())
        .unwrap_or(1)
}

#[cfg(not(unix))]
fn exit_code_of_signal(_: &std::process::ExitStatus) -> u8 {
    1
}

/// A mirror URL as a sparse registry URL: `https://m/crates-io/index/` and
/// `sparse+https://m/crates-io/index/` name the same mirror.
pub(crate) fn sparse_url(url: &str) -> String {
    let url = url.trim();
    let url = if url.starts_with("sparse+") {
        url.to_owned()
    } else {
        format!("sparse+{url}")
    };
    if url.ends_with('/') {
        url
    } else {
        format!("{url}/")
    }
}

fn read_client_config(path: Option<&Path>) -> anyhow::Result<ClientConfig> {
    let path = match path {
        Some(path) => path.to_owned(),
        None => match config_home() {
            Some(dir) => dir.join("wharf/client.toml"),
            None => return Ok(ClientConfig::default()),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("{} is not a valid wharf client config", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

fn default_cache_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|dir| dir.join("wharf/run"))
        .context("neither XDG_CACHE_HOME nor HOME is set; give --cache-dir DIR")
}

/// The cargo the command would have run: `$CARGO`, else the first `cargo` on
/// PATH.
fn find_cargo() -> anyhow::Result<PathBuf> {
    if let Some(cargo) = std::env::var_os("CARGO") {
        return Ok(PathBuf::from(cargo));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("cargo"))
        .find(|candidate| candidate.is_file())
        .context("no `cargo` on PATH")
}

/// Writes the `cargo` shim: the real cargo with source replacement given as
/// `--config` arguments (after a `+toolchain`, which must come first).
fn write_shim(dir: &Path, real_cargo: &Path, index_url: &str) -> anyhow::Result<PathBuf> {
    let shim = dir.join("cargo");
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let replace = quote(&format!("source.crates-io.replace-with=\"{SOURCE}\""));
    let registry = quote(&format!("source.{SOURCE}.registry=\"{index_url}\""));
    let real = quote(&real_cargo.display().to_string());
    let script = format!(
        "#!/bin/sh\n# Written by `wharf run`: cargo with crates.io replaced by the local cache.\ncase \"$1\" in\n  +*) toolchain=\"$1\"; shift; exec {real} \"$toolchain\" --config {replace} --config {registry} \"$@\" ;;\nesac\nexec {real} --config {replace} --config {registry} \"$@\"\n"
    );
    std::fs::write(&shim, script).context("cannot write the cargo shim")?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(shim)
}
