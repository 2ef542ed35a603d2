//! `wharf mirrors list` and `wharf mirrors probe`: community mirror lists,
//! and which mirror to use.
//!
//! A mirror list is a TOML (or JSON) file a community keeps in a repository,
//! and that any wharf publishes at `/.well-known/wharf-mirrors.toml` when
//! configured with `mirror_list`:
//!
//! ```toml
//! [[mirror]]
//! url = "https://mirror.example.org/crates-io/index/"
//! operator = "Example University"
//! contact = "mirror@example.org"
//! region = "eu-west"
//! kind = "mirror"          # or "cache"
//! public_key = "…"         # optional: pins its signed manifest
//! ```

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use wharf_storage::{BlobStore, FsStore};
use wharf_upstream::IndexFetch;

use crate::{MirrorsCommand, verify};

/// A list of mirrors.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorList {
    /// The mirrors, in the list's order.
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<MirrorEntry>,
}

/// One mirror of a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorEntry {
    /// Its sparse index URL.
    pub url: String,
    /// Who runs it.
    #[serde(default)]
    pub operator: String,
    /// How to reach them.
    #[serde(default)]
    pub contact: String,
    /// Where it is.
    #[serde(default)]
    pub region: String,
    /// `mirror` (a full or selected copy) or `cache` (pull-through).
    #[serde(default)]
    pub kind: String,
    /// The public key its signed manifest verifies with, if it signs one.
    #[serde(default)]
    pub public_key: Option<String>,
}

/// Runs `wharf mirrors …`.
pub async fn run(command: MirrorsCommand) -> anyhow::Result<ExitCode> {
    match command {
        MirrorsCommand::List { from } => {
            let list = load(&from).await?;
            println!(
                "{:<48} {:<24} {:<10} {:<8} signed",
                "url", "operator", "region", "kind"
            );
            for m in &list.mirrors {
                println!(
                    "{:<48} {:<24} {:<10} {:<8} {}",
                    m.url,
                    m.operator,
                    m.region,
                    m.kind,
                    if m.public_key.is_some() { "yes" } else { "no" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        MirrorsCommand::Probe {
            from,
            against,
            crates,
            max_age,
        } => probe(&from, against, crates, max_age.into()).await,
    }
}

/// Reads a list from a file or a URL.
pub(crate) async fn load(from: &str) -> anyhow::Result<MirrorList> {
    let text = if from.starts_with("http://") || from.starts_with("https://") {
        let set = verify::upstream("sparse+http://127.0.0.1/")?;
        match set.fetch_document(from, None).await {
            Ok(IndexFetch::Modified { body, .. }) => String::from_utf8_lossy(&body).into_owned(),
            Ok(_) => bail!("{from}: no mirror list there"),
            Err(e) => bail!("{from}: {e}"),
        }
    } else {
        std::fs::read_to_string(PathBuf::from(from))
            .with_context(|| format!("cannot read {from}"))?
    };
    parse(&text).with_context(|| format!("{from} is not a mirror list"))
}

/// A list in TOML, or the same in JSON.
pub fn parse(text: &str) -> anyhow::Result<MirrorList> {
    if text.trim_start().starts_with('{') {
        Ok(serde_json::from_str(text)?)
    } else {
        Ok(toml::from_str(text)?)
    }
}

/// What a probe found out about one mirror.
pub struct Probed {
    /// The mirror.
    pub entry: MirrorEntry,
    latency: Option<Duration>,
    age: Option<Duration>,
    spot_failures: Vec<String>,
}

impl Probed {
    /// Lower ranks first: passing the spot-check, then fresh, then unknown
    /// freshness, then stale; by latency within each.
    fn rank(&self, max_age: Duration) -> (u8, u8, Duration) {
        let broken = u8::from(!self.spot_failures.is_empty() || self.latency.is_none());
        let freshness = match self.age {
            Some(age) if age <= max_age => 0,
            None => 1,
            Some(_) => 2,
        };
        (broken, freshness, self.latency.unwrap_or(Duration::MAX))
    }
}

async fn probe(
    from: &str,
    against: Option<String>,
    crates: Vec<String>,
    max_age: Duration,
) -> anyhow::Result<ExitCode> {
    let probed = rank(from, against, crates, max_age).await?;
    print_ranking(&probed, max_age);
    Ok(ExitCode::SUCCESS)
}

/// The usable mirror a probe of `from` ranks first, if any.
pub async fn best(from: &str, against: Option<String>) -> anyhow::Result<Option<MirrorEntry>> {
    let max_age = Duration::from_secs(24 * 3600);
    let probed = rank(from, against, Vec::new(), max_age).await?;
    print_ranking(&probed, max_age);
    Ok(probed
        .into_iter()
        .find(|p| p.spot_failures.is_empty() && p.latency.is_some())
        .map(|p| p.entry))
}

/// Probes every mirror of the list at `from`, best first.
async fn rank(
    from: &str,
    against: Option<String>,
    crates: Vec<String>,
    max_age: Duration,
) -> anyhow::Result<Vec<Probed>> {
    let list = load(from).await?;
    let against = against.unwrap_or_else(|| wharf_config::CRATES_IO_SPARSE.to_owned());
    let reference = verify::upstream(&against)?;
    let crates = if crates.is_empty() {
        vec!["serde".to_owned(), "libc".to_owned(), "cfg-if".to_owned()]
    } else {
        crates
    };
    let scratch = tempfile::tempdir()?;
    let store: Arc<dyn BlobStore> = Arc::new(FsStore::open(scratch.path()).await?);
    let mut probed = Vec::new();
    for entry in list.mirrors {
        let mirror = verify::upstream(&entry.url)?;
        let base = entry
            .url
            .trim_start_matches("sparse+")
            .trim_end_matches('/')
            .to_owned();
        // Latency: the median of three fetches of its config.json.
        let mut times = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            if let Ok(IndexFetch::Modified { .. }) = mirror
                .fetch_document(&format!("{base}/config.json"), None)
                .await
            {
                times.push(started.elapsed());
            }
        }
        times.sort();
        let latency = times.get(times.len() / 2).copied();
        // Freshness: the last successful sync its status.json records.
        let root = base.strip_suffix("/index").unwrap_or(&base);
        let age = match mirror
            .fetch_document(&format!("{root}/status.json"), None)
            .await
        {
            Ok(IndexFetch::Modified { body, .. }) => {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|s| s["last_success"].as_u64())
                    .map(|t| {
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        Duration::from_secs(now.saturating_sub(t))
                    })
            }
            _ => None,
        };
        // Spot-check: a few crates against the reference, and the signed
        // manifest when the list pins the mirror's key.
        let mut spot_failures = Vec::new();
        if let Some(key) = &entry.public_key
            && let Err(e) = verify::signed_manifest(&mirror, &entry.url, key).await
        {
            spot_failures.push(format!("signed manifest: {e:#}"));
        }
        for name in &crates {
            match verify::verify_crate(&mirror, &reference, store.as_ref(), name, &BTreeMap::new())
                .await
            {
                Ok(report) => spot_failures.extend(report.failures),
                Err(e) => spot_failures.push(format!("{name}: {e}")),
            }
        }
        probed.push(Probed {
            entry,
            latency,
            age,
            spot_failures,
        });
    }
    probed.sort_by_key(|p| p.rank(max_age));
    Ok(probed)
}

fn print_ranking(probed: &[Probed], max_age: Duration) {
    println!(
        "{:<4} {:<48} {:>10} {:>12} {:<10}",
        "rank", "mirror", "latency", "last sync", "spot-check"
    );
    for (i, p) in probed.iter().enumerate() {
        println!(
            "{:<4} {:<48} {:>10} {:>12} {:<10}",
            i + 1,
            p.entry.url,
            p.latency
                .map_or("down".to_owned(), |l| format!("{} ms", l.as_millis())),
            p.age.map_or("unknown".to_owned(), |a| {
                let stale = if a > max_age { " STALE" } else { "" };
                format!(
                    "{}{stale}",
                    humantime::format_duration(Duration::from_secs(a.as_secs()))
                )
            }),
            if p.spot_failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
        );
    }
    for p in probed {
        for failure in &p.spot_failures {
            println!("FAILED: {}: {failure}", p.entry.url);
        }
    }
}
