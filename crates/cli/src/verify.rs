//! `wharf verify`: does a mirror serve exactly what the reference serves?
//!
//! For each crate, the mirror's index lines are compared with the
//! reference's byte for byte: a version both have must have the same line;
//! a version the mirror lacks is reported (a selective or lagging mirror); a
//! line it alters or adds is a failure. Every crate file the mirror lists is
//! downloaded and its sha256 compared with the reference `cksum`. With
//! `--lockfile`, the mirror's crate files are also checked against the
//! checksums in `Cargo.lock`, which needs no reference at all.

use std::{collections::BTreeMap, path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use wharf_config::CRATES_IO_SPARSE;
use wharf_index::{CrateName, IndexPath, parse_line};
use wharf_storage::{BlobKey, BlobStore, FsStore, Layout};
use wharf_upstream::{FetchError, IndexFetch, Limits, UpstreamSet, UpstreamSettings};

use crate::VerifyArgs;

/// What was found for one crate.
#[derive(Default)]
pub(crate) struct Report {
    versions: usize,
    same: usize,
    missing: usize,
    files_ok: usize,
    pub(crate) failures: Vec<String>,
}

/// Runs the checks; exits non-zero when anything failed.
pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mirror_url = args.mirror.clone().unwrap_or_default();
    let mirror = upstream(&mirror_url)?;
    let against = args
        .against
        .clone()
        .unwrap_or_else(|| CRATES_IO_SPARSE.to_owned());
    let reference = upstream(&against)?;
    let scratch = tempfile::tempdir().context("cannot make a scratch directory")?;
    let store: Arc<dyn BlobStore> = Arc::new(FsStore::open(scratch.path()).await?);

    // Crates to check, with the versions Cargo.lock pins and their checksums.
    let mut locked: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for name in &args.crates {
        locked.entry(name.to_ascii_lowercase()).or_default();
    }
    if let Some(path) = &args.lockfile {
        read_lockfile(path, &mut locked)?;
    }
    // Every crate, or a sample: the mirror's manifest lists its index files.
    if args.all || args.sample.is_some() {
        let listed = listed_crates(&mirror, &mirror_url).await?;
        let take = args.sample.unwrap_or(listed.len()).min(listed.len());
        // A sample spread evenly over the list, the same on every run.
        let step = (listed.len() / take.max(1)).max(1);
        for name in listed.iter().step_by(step).take(take) {
            locked.entry(name.clone()).or_default();
        }
    }
    if locked.is_empty() {
        bail!(
            "nothing to verify: name crates with --crate NAME, give --lockfile Cargo.lock, or use --sample N / --all"
        );
    }

    // The signed manifest, when a key is pinned (given, or by a mirror
    // list): checked before anything else.
    let key = match (&args.key, &args.from) {
        (Some(key), _) => Some(key.clone()),
        (None, Some(from)) => {
            let list = crate::mirrors::load(from).await?;
            let wanted = crate::run::sparse_url(&mirror_url);
            let entry = list
                .mirrors
                .iter()
                .find(|m| crate::run::sparse_url(&m.url) == wanted)
                .with_context(|| format!("{from} has no entry for {mirror_url}"))?;
            match &entry.public_key {
                Some(key) => Some(key.clone()),
                None => bail!("{from} pins no public_key for {mirror_url}"),
            }
        }
        (None, None) => None,
    };
    let manifest = match &key {
        Some(key) => Some(signed_manifest(&mirror, &mirror_url, key).await?),
        None => None,
    };
    if let Some(manifest) = &manifest {
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(manifest.time);
        println!(
            "signed manifest: valid; {} index files, written {} ago{}",
            manifest.files.len(),
            humantime::format_duration(Duration::from_secs(age)),
            manifest
                .cursor
                .as_deref()
                .map(|c| format!(", cursor {c}"))
                .unwrap_or_default()
        );
    }

    let mut reports = BTreeMap::new();
    for (name, pins) in &locked {
        let mut report = verify_crate(&mirror, &reference, store.as_ref(), name, pins).await?;
        if let Some(manifest) = &manifest {
            check_against_manifest(&mirror, manifest, name, &mut report).await;
        }
        reports.insert(name.clone(), report);
    }

    println!(
        "{:<28} {:>8} {:>6} {:>8} {:>9} {:>8}",
        "crate", "versions", "same", "missing", "files ok", "failures"
    );
    let mut failures = 0;
    for (name, report) in &reports {
        println!(
            "{name:<28} {:>8} {:>6} {:>8} {:>9} {:>8}",
            report.versions,
            report.same,
            report.missing,
            report.files_ok,
            report.failures.len()
        );
        failures += report.failures.len();
    }
    for report in reports.values() {
        for failure in &report.failures {
            println!("FAILED: {failure}");
        }
    }
    if failures > 0 {
        println!("\n{failures} failures: {mirror_url} does not serve what {against} serves");
        Ok(ExitCode::FAILURE)
    } else {
        println!(
            "\nok: {} crates checked, nothing altered or added",
            reports.len()
        );
        Ok(ExitCode::SUCCESS)
    }
}

pub(crate) async fn verify_crate(
    mirror: &UpstreamSet,
    reference: &UpstreamSet,
    store: &dyn BlobStore,
    name: &str,
    pins: &BTreeMap<String, String>,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let krate = CrateName::new(name).with_context(|| format!("`{name}` is not a crate name"))?;
    let path = IndexPath::for_name(&krate);
    let mirror_lines = match mirror.fetch_index(path.as_str(), None).await {
        Ok(IndexFetch::Modified { body, .. }) => lines(&body),
        Ok(_) => BTreeMap::new(),
        Err(e) => {
            report
                .failures
                .push(format!("{name}: the mirror's index file: {e}"));
            return Ok(report);
        }
    };
    // The reference may be down: then only Cargo.lock's checksums are checked.
    let reference_lines = match reference.fetch_index(path.as_str(), None).await {
        Ok(IndexFetch::Modified { body, .. }) => Some(lines(&body)),
        Ok(_) => Some(BTreeMap::new()),
        Err(_) if !pins.is_empty() => None,
        Err(e) => {
            report
                .failures
                .push(format!("{name}: the reference's index file: {e}"));
            return Ok(report);
        }
    };
    report.versions = mirror_lines.len();
    if let Some(reference_lines) = &reference_lines {
        for (vers, line) in reference_lines {
            match mirror_lines.get(vers) {
                Some(mine) if mine == line => report.same += 1,
                Some(_) => report.failures.push(format!(
                    "{name} {vers}: the mirror's index line differs from the reference's"
                )),
                None => report.missing += 1,
            }
        }
        for vers in mirror_lines.keys() {
            if !reference_lines.contains_key(vers) {
                report.failures.push(format!(
                    "{name} {vers}: the mirror lists a version the reference does not have"
                ));
            }
        }
    }
    // Crate files: against the reference's cksum, else Cargo.lock's. With a
    // lockfile, only the versions it pins.
    for (vers, line) in &mirror_lines {
        if !pins.is_empty() && !pins.contains_key(vers) {
            continue;
        }
        let expected = reference_lines
            .as_ref()
            .and_then(|r| r.get(vers))
            .and_then(|l| parse_line(l.as_bytes()))
            .map(|l| l.cksum)
            .or_else(|| {
                pins.get(vers)
                    .and_then(|sum| wharf_index::Cksum::parse(sum).ok())
            });
        let Some(expected) = expected else {
            continue;
        };
        if let Some(pinned) = pins.get(vers)
            && pinned != &expected.to_string()
        {
            report.failures.push(format!(
                "{name} {vers}: Cargo.lock's checksum {pinned} is not the reference's {expected}"
            ));
        }
        let Some(parsed) = parse_line(line.as_bytes()) else {
            report.failures.push(format!(
                "{name} {vers}: the mirror's index line is not valid"
            ));
            continue;
        };
        let key = BlobKey::new(format!("verify/{name}-{vers}.crate")).context("a scratch key")?;
        match mirror
            .download_crate(&parsed.name, &parsed.vers, &expected, store, &key)
            .await
        {
            Ok(_) => report.files_ok += 1,
            Err(FetchError::Corrupt(message)) => report.failures.push(format!(
                "{name} {vers}: the mirror's crate file is altered: {message}"
            )),
            Err(e) => report
                .failures
                .push(format!("{name} {vers}: the mirror's crate file: {e}")),
        }
        let _ = store.delete(&key).await;
    }
    // A locked version the mirror does not list at all.
    for vers in pins.keys() {
        if !mirror_lines.contains_key(vers) {
            report.missing += 1;
        }
    }
    Ok(report)
}

/// The crates a mirror's manifest lists (its index files, by name).
async fn listed_crates(mirror: &UpstreamSet, mirror_url: &str) -> anyhow::Result<Vec<String>> {
    let url = format!("{}manifest.json", tree_root(mirror_url));
    let body = match mirror.fetch_document(&url, None).await {
        Ok(IndexFetch::Modified { body, .. }) => body,
        _ => bail!(
            "{url}: no manifest, so the mirror's crates cannot be listed; name them with --crate or --lockfile"
        ),
    };
    let manifest: wharf_sync::manifest::Manifest =
        serde_json::from_slice(&body).with_context(|| format!("{url} is not a wharf manifest"))?;
    Ok(manifest
        .files
        .keys()
        .filter(|path| IndexPath::parse(path).is_ok())
        .filter_map(|path| path.rsplit('/').next().map(str::to_owned))
        .collect())
}

/// Fetches the mirror's manifest and signature and checks them with `key`.
pub(crate) async fn signed_manifest(
    mirror: &UpstreamSet,
    mirror_url: &str,
    key: &str,
) -> anyhow::Result<wharf_sync::manifest::Manifest> {
    let root = tree_root(mirror_url);
    let fetch = |url: String| async move {
        match mirror.fetch_document(&url, None).await {
            Ok(IndexFetch::Modified { body, .. }) => Ok(body),
            Ok(_) => bail!("{url}: the mirror publishes no signed manifest"),
            Err(e) => Err(anyhow::anyhow!("{url}: {e}")),
        }
    };
    let body = fetch(format!("{root}manifest.json")).await?;
    let signature = fetch(format!("{root}manifest.json.sig")).await?;
    wharf_sync::manifest::verify(&body, &String::from_utf8_lossy(&signature), key)
        .map_err(|e| anyhow::anyhow!("{mirror_url}: {e}"))
}

/// The mirror's served index file of `name` must be the one its signed
/// manifest vouches for.
async fn check_against_manifest(
    mirror: &UpstreamSet,
    manifest: &wharf_sync::manifest::Manifest,
    name: &str,
    report: &mut Report,
) {
    let Ok(krate) = CrateName::new(name) else {
        return;
    };
    let path = IndexPath::for_name(&krate);
    let served = match mirror.fetch_index(path.as_str(), None).await {
        Ok(IndexFetch::Modified { body, .. }) => Some(wharf_sync::manifest::sha256_hex(&body)),
        _ => None,
    };
    if served.as_ref() != manifest.files.get(path.as_str()) {
        report.failures.push(format!(
            "{name}: the index file served is not the one the signed manifest vouches for"
        ));
    }
}

/// `https://m/crates-io/index/` → `https://m/crates-io/`: where the tree's
/// top files are.
fn tree_root(mirror_url: &str) -> String {
    let url = mirror_url.trim_start_matches("sparse+");
    let url = url.trim_end_matches('/');
    let url = url.strip_suffix("/index").unwrap_or(url);
    format!("{url}/")
}

/// Index lines by version, each as its exact text.
fn lines(body: &[u8]) -> BTreeMap<String, String> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let parsed = parse_line(l)?;
            Some((parsed.vers, String::from_utf8_lossy(l).into_owned()))
        })
        .collect()
}

fn read_lockfile(
    path: &Path,
    into: &mut BTreeMap<String, BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let packages = wharf_sync::locked_packages(&text)
        .map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))?;
    for package in packages {
        let entry = into.entry(package.name.to_ascii_lowercase()).or_default();
        if let Some(sum) = package.checksum {
            entry.insert(package.version, sum);
        }
    }
    Ok(())
}

/// An upstream set for one registry URL, polite like a sync.
pub(crate) fn upstream(url: &str) -> anyhow::Result<UpstreamSet> {
    let url = if url.starts_with("sparse+") {
        url.to_owned()
    } else {
        format!("sparse+{url}")
    };
    let base = wharf_config::sparse_base(&url).map_err(anyhow::Error::msg)?;
    UpstreamSet::new(UpstreamSettings {
        bases: vec![base],
        timeout: Duration::from_secs(10),
        probe_interval: Duration::from_secs(5),
        user_agent: format!("wharf/{} (verify)", env!("CARGO_PKG_VERSION")),
        max_index_bytes: 64 << 20,
        max_crate_bytes: 1 << 30,
        keep_in_memory_bytes: 16 << 20,
        limits: Some(Limits {
            max_concurrency: 4,
            requests_per_sec: 20.0,
            requests_burst: 1,
            bytes_per_sec: None,
            max_wait: None,
        }),
        hedge_after: None,
    })
    .map_err(anyhow::Error::msg)
}

/// `wharf verify --local`: the server's own storage, checked file by file.
pub async fn run_local(config_path: Option<&Path>, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = crate::load_config(config_path)?;
    let store = wharf_server::open_store(&config).await?;
    println!("checking {}", store.describe());
    let mut failures = Vec::new();
    println!(
        "{:<16} {:<7} {:>11} {:>9} {:>12} {:>11}",
        "registry", "kind", "index lines", "files ok", "not fetched", "unreferenced"
    );
    for (name, registry) in &config.registries {
        if args.registry.as_ref().is_some_and(|r| r != name) {
            continue;
        }
        let kind = match registry {
            wharf_config::Registry::Cache(_) => "cache",
            wharf_config::Registry::Mirror(_) => "mirror",
            // A hosted registry's index lives in its database.
            wharf_config::Registry::Hosted(_) => continue,
        };
        let layout = Layout::new(name);
        let index_dir = layout
            .index_dir()
            .context("a registry name makes a valid key")?;
        let mut referenced = std::collections::BTreeSet::new();
        let (mut lines_total, mut ok, mut absent) = (0, 0, 0);
        for file in store.list(&index_dir).await? {
            if file.as_str().ends_with("/config.json") {
                continue;
            }
            let Some(body) = store.get(&file).await? else {
                continue;
            };
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                lines_total += 1;
                let Some(line) = parse_line(line) else {
                    failures.push(format!("{name}: {file} holds a line that is not valid"));
                    continue;
                };
                let Ok(crate_file) = layout.crate_file(&line.name, &line.vers) else {
                    failures.push(format!(
                        "{name}: {file} names a crate `{}` {} that cannot be stored",
                        line.name, line.vers
                    ));
                    continue;
                };
                referenced.insert(crate_file.to_string());
                match store.get(&crate_file).await? {
                    Some(bytes)
                        if wharf_sync::manifest::sha256_hex(&bytes) == line.cksum.to_string() =>
                    {
                        ok += 1
                    }
                    Some(_) => failures.push(format!(
                        "{name}: {crate_file} does not match the index cksum of {} {}",
                        line.name, line.vers
                    )),
                    None if kind == "cache" => absent += 1,
                    None => failures.push(format!(
                        "{name}: {} {} is listed but {crate_file} is missing",
                        line.name, line.vers
                    )),
                }
            }
        }
        let crates_dir = wharf_storage::BlobKey::new(format!("{name}/crates"))
            .context("a registry name makes a valid key")?;
        let unreferenced = store
            .list(&crates_dir)
            .await?
            .into_iter()
            .filter(|f| !referenced.contains(f.as_str()))
            .count();
        println!("{name:<16} {kind:<7} {lines_total:>11} {ok:>9} {absent:>12} {unreferenced:>11}");
    }
    let partial = match config.storage.kind {
        wharf_config::StorageKind::Fs => wharf_storage::FsStore::temporary_files(&config.data_dir),
        // A bucket has no temporary objects: an upload is visible whole or not at all.
        wharf_config::StorageKind::S3 => 0,
    };
    if partial > 0 {
        println!(
            "{partial} temporary files under {} (writes under way, or left by a killed process: `wharf serve` removes those at start)",
            config.data_dir.join(".tmp").display()
        );
    }
    for failure in &failures {
        println!("FAILED: {failure}");
    }
    if failures.is_empty() {
        println!("ok: every index line has its crate file with the right sha256");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{} failures", failures.len());
        Ok(ExitCode::FAILURE)
    }
}
