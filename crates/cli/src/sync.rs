//! `wharf sync`: one pass over each mirror registry, with progress and a summary.

use std::{
    io::IsTerminal,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;
use wharf_config::Registry;
use wharf_sync::{Mirror, PassKind, Progress};

use crate::SyncArgs;

/// Runs one pass for the chosen mirrors; an error when anything failed.
pub async fn run(config_path: Option<&Path>, args: SyncArgs) -> anyhow::Result<()> {
    let mut config = crate::load_config(config_path)?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let public_url = wharf_server::public_url(&config, config.listen);
    let mirrors: Vec<_> = config
        .registries
        .iter()
        .filter_map(|(name, registry)| match registry {
            Registry::Mirror(mirror) => Some((name, mirror)),
            Registry::Cache(_) | Registry::Hosted(_) => None,
        })
        .filter(|(name, _)| args.registry.as_ref().is_none_or(|r| r == *name))
        .collect();
    if mirrors.is_empty() {
        match &args.registry {
            Some(name) if config.registries.contains_key(name) => {
                bail!("registry `{name}` is not a mirror; only mirrors are synced")
            }
            Some(name) => bail!("no registry named `{name}` in the configuration"),
            None => bail!(
                "no mirror registries configured; add one with kind = \"mirror\" (see wharf.example.toml)"
            ),
        }
    }
    let store = wharf_server::open_store(&config).await?;
    let mut failures = 0;
    for (name, mirror_config) in mirrors {
        let mirror = Mirror::from_config(
            name,
            mirror_config,
            store.clone(),
            &public_url,
            &wharf_sync::work_dir(config.work_dir(), name),
        )?;
        let progress = progress_for(name);
        let kind = if args.feed {
            PassKind::Feed
        } else if args.reconcile {
            PassKind::Reconcile
        } else {
            PassKind::Full
        };
        let summary = match &mirror_config.database_url {
            // Instances that share the database run the passes one at a time.
            Some(url) => {
                let db = wharf_db::Db::connect(url)
                    .await
                    .with_context(|| format!("registry `{name}`"))?;
                let lease = wharf_server::PassLease::new(db, name, mirror_config.lease_heartbeat);
                match lease
                    .run(kind, |_| Some(mirror.sync(kind, progress.as_ref())))
                    .await?
                {
                    wharf_server::Leased::Ran(summary) => summary,
                    wharf_server::Leased::Busy(held) | wharf_server::Leased::Skipped(held) => {
                        bail!(
                            "another instance ({}) runs the passes of mirror `{name}`; its lease ends by {} unless renewed",
                            held.holder,
                            humantime::format_rfc3339_seconds(held.expires_at)
                        )
                    }
                }
            }
            None => mirror.sync(kind, progress.as_ref()).await?,
        };
        drop(progress);
        println!(
            "mirror `{name}`{}: serves {} crates, {} versions; this pass looked at {} index files, changed {}, downloaded {} crate files ({}) with {} upstream requests{} in {:.1}s; {} failures",
            match kind {
                PassKind::Full => "",
                PassKind::Feed => " (feed poll)",
                PassKind::Reconcile => " (reconciliation)",
            },
            summary.total_crates,
            summary.total_versions,
            summary.crates,
            summary.changed,
            summary.downloaded,
            human_bytes(summary.downloaded_bytes),
            summary.requests,
            if summary.git_fetched {
                " and a git fetch"
            } else {
                ""
            },
            summary.duration_ms as f64 / 1000.0,
            summary.failures.len(),
        );
        if let Some(time) = summary.upstream_time {
            // The upstream's clock, as status.json's lag reads it.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let age = now.saturating_sub(u64::try_from(time).unwrap_or(0));
            println!(
                "  upstream's newest change was made {} ago (by its clock){}",
                humantime::format_duration(std::time::Duration::from_secs(age)),
                if summary.failures.is_empty() {
                    "; the tree holds it"
                } else {
                    ""
                }
            );
        }
        for failure in &summary.failures {
            println!("  failed: {failure}");
        }
        failures += summary.failures.len();
    }
    if failures > 0 {
        bail!(
            "{failures} items could not be synced; everything else was published, and they are retried on the next pass"
        );
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A bar on a terminal, periodic log lines otherwise.
fn progress_for(name: &str) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} crates {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("syncing {name}"));
        Box::new(Bar(bar))
    } else {
        Box::new(Lines {
            name: name.to_owned(),
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn add_total(&self, n: usize) {
        self.0.inc_length(n as u64);
    }
    fn crate_done(&self, name: &str) {
        self.0.set_message(name.to_owned());
        self.0.inc(1);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A log line every few seconds.
struct Lines {
    name: String,
    total: AtomicUsize,
    done: AtomicUsize,
    last: Mutex<Instant>,
}

impl Progress for Lines {
    fn add_total(&self, n: usize) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }
    fn crate_done(&self, _: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            info!(registry = %self.name, done, known = self.total.load(Ordering::Relaxed), "syncing");
        }
    }
}
