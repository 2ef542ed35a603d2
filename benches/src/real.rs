//! Real crates: an upstream laid out from a `CARGO_HOME` that holds real
//! crates (the one this machine builds wharf with, by default), served by
//! nginx as a CDN would, with index files precompressed (`gzip -9`) and
//! `gzip_static on`. Then wharf in front of it against that nginx: index
//! hits as cargo asks, the largest index file, crate files; and a cold
//! `cargo fetch` of this workspace's own `Cargo.lock`, straight from the
//! upstream against through a cold wharf (its data on tmpfs and on disk).
//!
//! Nothing is downloaded from crates.io: the crates are the ones cargo
//! already keeps. To add a project, `cargo fetch` it once yourself with that
//! `CARGO_HOME`.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use wharf_config::Registry;
use wharf_test_support::{
    cargo::CargoProject,
    nginx::{Nginx, NginxOptions},
};

use crate::{Load, Options, ROUNDS, median, warm, wrk, wrk_script_with};

/// Cold fetches per side; the median counts.
const COLD_RUNS: usize = 5;

/// An upstream's static tree: `index/` (each file also as `FILE.gz`) and
/// `crates/{name}/{name}-{version}.crate`.
struct Tree {
    root: PathBuf,
    /// Sparse paths (`se/rd/serde`) and sizes of the index files.
    index_files: Vec<(String, usize)>,
    /// Paths under the root (`crates/serde/serde-1.0.228.crate`) and sizes.
    crate_files: Vec<(String, usize)>,
}

/// Runs the real-data comparisons and prints their tables.
pub fn real(options: &Options, home: &Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let tree = lay_out(home, &dir.path().join("upstream"))?;
    let index_bytes: usize = tree.index_files.iter().map(|(_, n)| n).sum();
    let crate_bytes: usize = tree.crate_files.iter().map(|(_, n)| n).sum();
    println!(
        "\nreal crates from {}: {} index files ({:.1} MB), {} crate files ({:.1} MB, mean {:.0} KB), laid out in {:.1}s",
        home.display(),
        tree.index_files.len(),
        index_bytes as f64 / 1e6,
        tree.crate_files.len(),
        crate_bytes as f64 / 1e6,
        crate_bytes as f64 / tree.crate_files.len().max(1) as f64 / 1e3,
        started.elapsed().as_secs_f64()
    );
    let nginx = Nginx::start_with(
        dir.path(),
        &tree.root,
        NginxOptions {
            workers: 1,
            gzip_static: true,
            // With WHARF_LOG set, wharf logs each request as `wharf serve`
            // does, and so does nginx, at its best.
            access_log: std::env::var_os("WHARF_LOG").is_some(),
        },
    )?;
    std::fs::write(
        tree.root.join("index/config.json"),
        format!(
            r#"{{"dl":"http://{}/crates/{{crate}}/{{crate}}-{{version}}.crate"}}"#,
            nginx.addr
        ),
    )?;
    let upstream = format!("sparse+http://{}/index/", nginx.addr);
    if options.real_hold_secs.is_none() {
        cold_fetch(&upstream)?;
    }
    serving(options, &tree, &nginx, &upstream, dir.path())
}

/// Lays out the crates of `home` (a `CARGO_HOME`) as a static sparse
/// registry under `root`: every index file cargo cached, and every crate
/// file it downloaded.
fn lay_out(home: &Path, root: &Path) -> anyhow::Result<Tree> {
    let registry = home.join("registry");
    // `index/index.crates.io-1949cf8c6b5b557f/.cache` and
    // `cache/index.crates.io-1949cf8c6b5b557f/*.crate`: the same name.
    let (cache, crates) = std::fs::read_dir(registry.join("index"))
        .with_context(|| format!("no registry index under {}", registry.display()))?
        .filter_map(Result::ok)
        .map(|entry| {
            (
                entry.path().join(".cache"),
                registry.join("cache").join(entry.file_name()),
            )
        })
        .find(|(cache, crates)| cache.is_dir() && crates.is_dir())
        .with_context(|| {
            format!(
                "{} has no cached registry with crate files: build or fetch a project with it first",
                registry.display()
            )
        })?;
    let mut tree = Tree {
        root: root.to_owned(),
        index_files: Vec::new(),
        crate_files: Vec::new(),
    };
    for path in files_under(&cache)? {
        let sparse = path
            .strip_prefix(&cache)?
            .to_str()
            .context("an index cache path that is not UTF-8")?
            .to_owned();
        let bytes = std::fs::read(&path)?;
        let lines = cached_lines(&bytes)
            .with_context(|| format!("reading cargo's index cache {}", path.display()))?;
        if lines.is_empty() {
            continue;
        }
        let mut body = lines.join(&b'\n');
        body.push(b'\n');
        let file = root.join("index").join(&sparse);
        std::fs::create_dir_all(file.parent().context("an index file has a directory")?)?;
        std::fs::write(&file, &body)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body)?;
        // Crate names have no dot for `with_extension` to cut.
        std::fs::write(file.with_extension("gz"), gz.finish()?)?;
        tree.index_files.push((sparse, body.len()));
        for line in lines {
            let line: serde_json::Value = serde_json::from_slice(line)
                .with_context(|| format!("an index line of {}", path.display()))?;
            let (Some(krate), Some(vers)) = (line["name"].as_str(), line["vers"].as_str()) else {
                bail!("an index line of {} has no name or vers", path.display());
            };
            let name = format!("{krate}-{vers}.crate");
            let from = crates.join(&name);
            if !from.is_file() {
                continue;
            }
            let rel = format!("crates/{krate}/{name}");
            let to = root.join(&rel);
            std::fs::create_dir_all(to.parent().context("a crate file has a directory")?)?;
            let size = std::fs::copy(&from, &to)? as usize;
            tree.crate_files.push((rel, size));
        }
    }
    ensure!(
        !tree.crate_files.is_empty(),
        "{} holds no crate file that its index cache lists",
        crates.display()
    );
    tree.index_files.sort();
    tree.crate_files.sort();
    Ok(tree)
}

/// The index lines of one of cargo's index cache files: a byte of cache
/// version (3), four of index format version, the file's own version (its
/// ETag or Last-Modified) ended by NUL, then each version string and its
/// JSON line, each ended by NUL.
fn cached_lines(bytes: &[u8]) -> anyhow::Result<Vec<&[u8]>> {
    ensure!(
        bytes.len() >= 5 && bytes[0] == 3,
        "not a version 3 index cache file (cargo changed its format?)"
    );
    let mut parts = bytes[5..].split(|b| *b == 0);
    parts.next(); // the file's version
    let mut lines = Vec::new();
    while let Some(version) = parts.next() {
        if version.is_empty() {
            break;
        }
        match parts.next() {
            Some(line) if !line.is_empty() => lines.push(line),
            _ => bail!("version {} has no line", String::from_utf8_lossy(version)),
        }
    }
    Ok(lines)
}

/// A wharf caching `upstream`, with its data in `data_dir`, on a runtime of
/// its own with `workers` threads. Dropping it stops the server and the
/// runtime.
struct Wharf {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _runtime: tokio::runtime::Runtime,
}

impl Wharf {
    fn start(upstream: &str, data_dir: &Path, workers: usize) -> anyhow::Result<Self> {
        let runtime = crate::runtime("wharf", workers)?;
        let (addr, stop) =
            runtime.block_on(crate::start_wharf_with(data_dir, upstream, |config| {
                if let Some(Registry::Cache(cache)) = config.registries.get_mut("crates-io") {
                    // One cargo asks for hundreds of files: not a flood.
                    cache.client_miss_burst = 0;
                }
            }))?;
        Ok(Self {
            addr,
            _stop: stop,
            _runtime: runtime,
        })
    }
}

/// A copy of this workspace's manifests and `Cargo.lock`, with empty
/// sources: enough for `cargo fetch --locked` to want every package of the
/// lockfile.
fn workspace_project(upstream: &str) -> anyhow::Result<CargoProject> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the benches live in the workspace")?;
    let project = CargoProject::new(upstream, &[]);
    let mut manifests = vec![PathBuf::from("Cargo.toml")];
    let workspace: toml::Table =
        toml::from_str(&std::fs::read_to_string(source.join("Cargo.toml"))?)?;
    let members = workspace
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("the workspace lists its members")?;
    for member in members.iter().filter_map(|m| m.as_str()) {
        // `crates/*` or `benches`.
        let (parent, name) = member.rsplit_once('/').unwrap_or(("", member));
        let dirs: Vec<PathBuf> = if name == "*" {
            std::fs::read_dir(source.join(parent))?
                .filter_map(Result::ok)
                .map(|e| Path::new(parent).join(e.file_name()))
                .collect()
        } else {
            vec![PathBuf::from(member)]
        };
        manifests.extend(
            dirs.into_iter()
                .map(|d| d.join("Cargo.toml"))
                .filter(|m| source.join(m).is_file()),
        );
    }
    for manifest in &manifests {
        let text = std::fs::read_to_string(source.join(manifest))?;
        project.write_file(manifest.to_str().context("a UTF-8 path")?, &text);
        let dir = manifest.parent().unwrap_or(Path::new(""));
        let table: toml::Table = toml::from_str(&text)?;
        if !table.contains_key("package") {
            continue;
        }
        let mut files = vec!["src/lib.rs".to_owned(), "src/main.rs".to_owned()];
        for kind in ["lib", "bin", "test", "bench", "example"] {
            let targets = match table.get(kind) {
                Some(toml::Value::Array(targets)) => targets.clone(),
                Some(target @ toml::Value::Table(_)) => vec![target.clone()],
                _ => continue,
            };
            files.extend(
                targets
                    .iter()
                    .filter_map(|t| t.get("path").and_then(|p| p.as_str()))
                    .map(str::to_owned),
            );
        }
        for file in files {
            project.write_file(
                dir.join(file).to_str().context("a UTF-8 path")?,
                "fn main() {}\n",
            );
        }
    }
    project.write_file(
        "Cargo.lock",
        &std::fs::read_to_string(source.join("Cargo.lock"))?,
    );
    Ok(project)
}

/// Cold `cargo fetch --locked` of this workspace: straight from `upstream`,
/// through a cold wharf with its data on tmpfs, and on disk; the median of
/// [`COLD_RUNS`] each, in turns.
fn cold_fetch(upstream: &str) -> anyhow::Result<()> {
    let mut project = workspace_project(upstream)?;
    // The disk: next to the build, which is on the machine's disk.
    let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&disk)?;
    let tmpfs = Path::new("/dev/shm");
    let sides: [(&str, Option<&Path>); 3] = [
        ("straight from the upstream", None),
        ("through a cold wharf, data on tmpfs", Some(tmpfs)),
        ("through a cold wharf, data on disk", Some(&disk)),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    let mut packages = 0;
    // Every run's data is kept until the last run is timed. Without a
    // journal, as on this machine's disk, ext4 skips an inode deleted in the
    // last minute or more when it allocates one, reading each to know:
    // deleting a run's 1,300 files just before the next made that run's
    // writes scan past them all (`recently_deleted` in the profile), which
    // no server that keeps its files pays.
    let mut kept = Vec::new();
    for run in 0..COLD_RUNS {
        for turn in 0..sides.len() {
            let side = (run + turn) % sides.len();
            let data = match sides[side].1 {
                Some(parent) => Some(tempfile::tempdir_in(parent)?),
                None => None,
            };
            let wharf = match &data {
                Some(data) => Some(Wharf::start(upstream, data.path(), 2)?),
                None => None,
            };
            match &wharf {
                Some(wharf) => {
                    project.set_registry(&format!("sparse+http://{}/crates-io/index/", wharf.addr));
                }
                None => project.set_registry(upstream),
            }
            let old_home = project.home_dir().to_owned();
            project.fresh_home();
            let _ = std::fs::remove_dir_all(old_home);
            let started = Instant::now();
            let outcome = project.run(&["fetch", "--locked"]);
            times[side].push(started.elapsed());
            if !outcome.success() {
                bail!("cargo fetch failed: {}", outcome.stderr);
            }
            packages = files_under(&project.home_dir().join("registry/cache"))?.len();
            drop(wharf);
            kept.extend(data);
        }
    }
    drop(kept);
    let medians: Vec<f64> = times
        .into_iter()
        .map(|t| median(t.iter().map(Duration::as_secs_f64).collect()))
        .collect();
    println!(
        "\ncold `cargo fetch --locked` of this workspace ({packages} crate files), CARGO_HOME on tmpfs, median of {COLD_RUNS}, in turns:"
    );
    for ((label, _), seconds) in sides.iter().zip(&medians) {
        println!(
            "  {label:<40} {seconds:>6.2}s {:>6.2}x",
            seconds / medians[0]
        );
    }
    Ok(())
}

/// The files under `dir`, at any depth.
fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    Ok(files)
}

/// The paths of `files`, each after `prefix`.
fn prefixed(prefix: &str, files: &[(String, usize)]) -> Vec<String> {
    files.iter().map(|(p, _)| format!("{prefix}{p}")).collect()
}

/// Keeps `wharf` (warmed) and `nginx` up for `secs` seconds, after printing
/// where they are and the `wrk` scripts that ask each for every index file
/// as cargo does: for a profile taken by hand (`perf record -t` on the
/// thread named `wharf`).
fn hold(
    secs: u64,
    wharf: &Wharf,
    nginx: &Nginx,
    work: &Path,
    [wharf_index, nginx_index]: [&[String]; 2],
) -> anyhow::Result<()> {
    let gzip = [("Accept-Encoding", "deflate, gzip")];
    for (name, addr, paths) in [
        ("wharf", wharf.addr, wharf_index),
        ("nginx", nginx.addr, nginx_index),
    ] {
        let script = wrk_script_with(work, &format!("hold {name}"), paths, &gzip)?;
        println!(
            "{name}: wrk -t1 -c32 -d10s -s {} http://{addr}",
            script.display()
        );
    }
    println!("held for {secs}s (pid {})", std::process::id());
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}

/// One row of the serving table: its label, the paths on wharf and on
/// nginx, the request headers, and whether it is compared by bytes.
struct Row<'a>(String, [&'a [String]; 2], &'a [(&'a str, &'a str)], bool);

/// Hits on wharf (one worker thread) against nginx (one worker process),
/// `wrk -t1 -c32`: every index file in turn, as cargo asks and without
/// compression; the largest index file alone, both ways; every crate file
/// in turn.
fn serving(
    options: &Options,
    tree: &Tree,
    nginx: &Nginx,
    upstream: &str,
    work: &Path,
) -> anyhow::Result<()> {
    let data = tempfile::tempdir_in("/dev/shm")?;
    let wharf = Wharf::start(upstream, data.path(), 1)?;
    let wharf_index = prefixed("/crates-io/index/", &tree.index_files);
    let nginx_index = prefixed("/index/", &tree.index_files);
    let wharf_crates = prefixed("/crates-io/", &tree.crate_files);
    let nginx_crates = prefixed("/", &tree.crate_files);
    let (largest, (largest_path, largest_bytes)) = tree
        .index_files
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, n))| *n)
        .context("no index file")?;
    // Every file once through wharf (gzip asked, as cargo does), so both
    // serve the same files from what they keep.
    let warming = crate::runtime("warm", 1)?;
    warming.block_on(warm(wharf.addr, wharf_index.iter().chain(&wharf_crates)))?;
    if let Some(secs) = options.real_hold_secs {
        return hold(secs, &wharf, nginx, work, [&wharf_index, &nginx_index]);
    }
    let load = Options {
        connections: 32,
        wrk_threads: 1,
        ..options.clone()
    };
    println!(
        "\nreal crates, served: wharf (one worker thread) and nginx (one worker, sendfile, open_file_cache, gzip_static over gzip -9 copies); wrk -t1 -c32 -d{}s, best of {ROUNDS} rounds in turns; {}",
        options.duration_secs,
        if std::env::var_os("WHARF_LOG").is_some() {
            "access logs on (WHARF_LOG set): wharf's as `wharf serve` writes it, nginx's with buffer=32k"
        } else {
            "access logs off (WHARF_LOG=info turns both on)"
        }
    );
    println!(
        "{:<44} {:>12} {:>9} {:>12} {:>9} {:>8}",
        "", "wharf req/s", "MB/s", "nginx req/s", "MB/s", "ratio"
    );
    let gzip = [("Accept-Encoding", "deflate, gzip")];
    // The file the issue's targets name, when the lockfile has it.
    let serde = tree
        .index_files
        .iter()
        .position(|(path, _)| path == "se/rd/serde");
    let mut rows: Vec<Row> = vec![
        Row(
            format!(
                "index hits as cargo asks (gzip), {} files",
                wharf_index.len()
            ),
            [&wharf_index, &nginx_index],
            &gzip,
            false,
        ),
        Row(
            "index hits, no compression".to_owned(),
            [&wharf_index, &nginx_index],
            &[],
            false,
        ),
        Row(
            format!(
                "{largest_path} ({:.0} KB), gzip",
                *largest_bytes as f64 / 1e3
            ),
            [
                std::slice::from_ref(&wharf_index[largest]),
                std::slice::from_ref(&nginx_index[largest]),
            ],
            &gzip,
            false,
        ),
        Row(
            format!("{largest_path}, no compression"),
            [
                std::slice::from_ref(&wharf_index[largest]),
                std::slice::from_ref(&nginx_index[largest]),
            ],
            &[],
            false,
        ),
        Row(
            format!("crate files, {} in turn (MB/s)", wharf_crates.len()),
            [&wharf_crates, &nginx_crates],
            &[],
            true,
        ),
    ];
    if let Some(serde) = serde {
        let kb = tree.index_files[serde].1 as f64 / 1e3;
        let both = [
            std::slice::from_ref(&wharf_index[serde]),
            std::slice::from_ref(&nginx_index[serde]),
        ];
        let serde_rows = [
            Row(
                format!("se/rd/serde ({kb:.0} KB), gzip"),
                both,
                &gzip,
                false,
            ),
            Row("se/rd/serde, no compression".to_owned(), both, &[], false),
        ];
        rows.splice(2..2, serde_rows);
    }
    for (row, Row(label, paths, headers, by_bytes)) in rows.iter().enumerate() {
        let scripts = [
            wrk_script_with(work, &format!("real {row} wharf"), paths[0], headers)?,
            wrk_script_with(work, &format!("real {row} nginx"), paths[1], headers)?,
        ];
        let bases = [
            format!("http://{}", wharf.addr),
            format!("http://{}", nginx.addr),
        ];
        let mut best: [Option<Load>; 2] = [None, None];
        for round in 0..ROUNDS {
            for turn in 0..2 {
                let side = (round + turn) % 2;
                let run = wrk(&load, &bases[side], &scripts[side])?;
                ensure!(!run.errors, "{label}: some responses were not 2xx");
                if best[side]
                    .as_ref()
                    .is_none_or(|b| run.requests_per_sec > b.requests_per_sec)
                {
                    best[side] = Some(run);
                }
            }
        }
        let [Some(w), Some(n)] = best else {
            bail!("no round ran");
        };
        let ratio = if *by_bytes {
            w.megabytes_per_sec / n.megabytes_per_sec
        } else {
            w.requests_per_sec / n.requests_per_sec
        };
        println!(
            "{label:<44} {:>12.0} {:>9.1} {:>12.0} {:>9.1} {ratio:>7.2}x",
            w.requests_per_sec, w.megabytes_per_sec, n.requests_per_sec, n.megabytes_per_sec,
        );
    }
    Ok(())
}
