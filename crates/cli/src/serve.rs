//! `wharf serve`: load the configuration, bind, print how to use it, serve.

use std::{io::Write, path::Path, sync::Arc};

use anyhow::{Context, bail};
use tracing::{info, warn};
use wharf_config::{Config, Registry};
use wharf_server::AppState;
use wharf_upstream::redact;

use crate::ServeArgs;

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(config_path: Option<&Path>, args: ServeArgs) -> anyhow::Result<()> {
    let config = load(config_path, args)?;
    // A public server holds a descriptor per client connection: the soft
    // limit (often 1,024) would stop it long before `[connections] max`.
    match wharf_server::raise_file_limit() {
        Ok(limit) => info!(file_limit = limit, "open-file limit"),
        Err(e) => {
            warn!(error = %e, "cannot raise the open-file limit; connections are bounded by the current one")
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; choose another address with --listen",
                config.listen
            )
        })?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let public_url = wharf_server::public_url(&config, bound);
    let state = Arc::new(AppState::build(&config, &public_url).await?);
    // Test-only: the time statistics are counted at.
    if let Some(now) = wharf_server::test_now_from_env()? {
        warn!(
            variable = wharf_server::TEST_NOW_VAR,
            "statistics are counted at a fixed time, for tests"
        );
        state.stats.clock().set(now);
    }
    let shutdown = shutdown_signal()?;

    // Written with errors ignored: a closed stdout must not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "wharf {} serving {public_url} (listening on {bound}, data in {})",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );
    for (name, registry) in &config.registries {
        let _ = match registry {
            Registry::Cache(cache) => writeln!(
                out,
                "  registry `{name}`: cache of {}, index revalidated after {}",
                shown(&cache.upstreams),
                humantime::format_duration(cache.index_ttl)
            ),
            Registry::Hosted(hosted) => writeln!(
                out,
                "  registry `{name}`: hosted (cargo publish --registry {name}), metadata in {}; tokens: wharf token create --registry {name} --user NAME",
                redact(&hosted.database_url(&config.data_dir))
            ),
            Registry::Mirror(mirror) => writeln!(
                out,
                "  registry `{name}`: mirror of {}, {}",
                shown(&mirror.upstreams),
                match mirror.sync_interval {
                    Some(interval) =>
                        format!("synced every {}", humantime::format_duration(interval)),
                    None => "synced by `wharf sync`".to_owned(),
                }
            ),
        };
    }
    let _ = writeln!(
        out,
        "\nPoint cargo at it with these lines in .cargo/config.toml (one project) or ~/.cargo/config.toml (every project):\n"
    );
    for name in config.registries.keys() {
        let _ = writeln!(out, "{}", wharf_server::cargo_config_for(&state, name));
    }
    let _ = out.flush();
    drop(out);
    info!(listen = %bound, public_url = %public_url, "serving");
    wharf_server::serve(listener, state, shutdown)
        .await
        .context("the server stopped with an error")?;
    info!("stopped");
    Ok(())
}

/// Defaults, then the file, then `WHARF_*` variables, then flags.
fn load(path: Option<&Path>, args: ServeArgs) -> anyhow::Result<Config> {
    let mut config = crate::load_config(path)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.public_url {
        config.public_url = Some(url);
    }
    let caches: Vec<_> = config
        .registries
        .values_mut()
        .filter_map(|r| match r {
            Registry::Cache(cache) => Some(cache),
            Registry::Mirror(_) | Registry::Hosted(_) => None,
        })
        .collect();
    let flags_for_one =
        !args.upstreams.is_empty() || args.index_ttl.is_some() || args.upstream_timeout.is_some();
    if flags_for_one {
        let [cache] = <[_; 1]>::try_from(caches).map_err(|_| {
            anyhow::anyhow!(
                "--upstream, --index-ttl and --upstream-timeout apply to a single cache registry; \
                 with several, set them per registry in the config file"
            )
        })?;
        if !args.upstreams.is_empty() {
            cache.upstreams = args.upstreams;
        }
        if let Some(ttl) = args.index_ttl {
            cache.index_ttl = ttl.into();
        }
        if let Some(timeout) = args.upstream_timeout {
            cache.upstream_timeout = timeout.into();
        }
    }
    config.validate()?;
    if config.registries.is_empty() {
        bail!("no registries configured");
    }
    Ok(config)
}

/// A future that completes on Ctrl-C or SIGTERM. The handlers are installed
/// here, before the caller announces that it serves, so a signal sent right
/// after that announcement stops the server cleanly instead of killing it.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            info!("shutting down: finishing requests under way");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            info!("shutting down: finishing requests under way");
        })
    }
}

/// URLs as they may be printed: without credentials.
fn shown(urls: &[String]) -> String {
    urls.iter()
        .map(|u| redact(u))
        .collect::<Vec<_>>()
        .join(", ")
}
