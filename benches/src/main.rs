//! The serving benchmark: wharf against nginx on the same files, and a cold
//! `cargo fetch` through wharf against the same fetch straight from upstream.
//! See README.md.

/// The allocator the `wharf` binary uses, so that wharf is measured as it
/// runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use wharf_config::{CacheRegistry, Config, Registry};
use wharf_server::AppState;
use wharf_test_support::{
    cargo::CargoProject,
    fixture::{CrateBuilder, FixtureCrate, sparse_path},
    nginx::{Nginx, which},
    upstream::FakeUpstream,
};

mod auth;
mod fallback;
mod hosted;
mod instances;
mod metrics;
mod owners;
mod real;
mod storage;
mod wharf_binary;

#[derive(Clone)]
struct Options {
    duration_secs: u64,
    connections: u32,
    /// wrk's threads.
    wrk_threads: u32,
    crates: usize,
    serving: bool,
    cold: bool,
    hosted: bool,
    fallback: bool,
    auth: bool,
    storage: bool,
    metrics: bool,
    instances: bool,
    owners: bool,
    real: bool,
    /// The `CARGO_HOME` whose crates the real-crates phase lays out.
    real_home: PathBuf,
    /// Instead of the real-crates tables: keep its upstream and a warmed
    /// wharf up this many seconds, to be loaded and profiled by hand.
    real_hold_secs: Option<u64>,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        duration_secs: 10,
        connections: 64,
        wrk_threads: 2,
        crates: 300,
        serving: true,
        cold: true,
        hosted: true,
        fallback: true,
        auth: true,
        storage: true,
        metrics: true,
        instances: true,
        owners: true,
        real: true,
        real_home: std::env::var_os("CARGO_HOME").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
            PathBuf::from,
        ),
        real_hold_secs: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag} needs a whole number"))
        };
        match flag.as_str() {
            "--duration-secs" => options.duration_secs = value()?,
            "--connections" => options.connections = value()? as u32,
            "--crates" => options.crates = value()? as usize,
            "--real-hold-secs" => options.real_hold_secs = Some(value()?),
            "--real-home" => {
                options.real_home = args.next().context("--real-home needs a directory")?.into();
            }
            "--only-serving" | "--only-cold" | "--only-hosted" | "--only-fallback"
            | "--only-auth" | "--only-storage" | "--only-metrics" | "--only-instances"
            | "--only-owners" | "--only-real" => {
                options.serving = flag == "--only-serving";
                options.cold = flag == "--only-cold";
                options.hosted = flag == "--only-hosted";
                options.fallback = flag == "--only-fallback";
                options.auth = flag == "--only-auth";
                options.storage = flag == "--only-storage";
                options.metrics = flag == "--only-metrics";
                options.instances = flag == "--only-instances";
                options.owners = flag == "--only-owners";
                options.real = flag == "--only-real";
            }
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown flag {other}; see benches/README.md"),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    // WHARF_LOG=info logs as `wharf serve` does (the access log on standard
    // error), to see what it costs.
    let _log = std::env::var_os("WHARF_LOG").and_then(|_| wharf_server::init_logging(true));
    println!(
        "wharf benchmark: {} cores, loopback only",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The fallback phase times the release binary: refused up front when it
    // is missing or older than the sources, before the other phases run.
    if options.fallback {
        wharf_binary::check(&wharf_binary::default_path())?;
    }
    // Each phase gets fresh runtimes (dropped at its end, with every task
    // left on them), so nothing of one phase slows the next.
    if options.cold {
        let (upstream_rt, wharf_rt) = runtimes()?;
        cold_fetch(&options, &upstream_rt, &wharf_rt)?;
    }
    if options.owners {
        let (upstream_rt, wharf_rt) = runtimes()?;
        owners::owners(&options, &upstream_rt, &wharf_rt)?;
    }
    if options.fallback {
        let (upstream_rt, _) = runtimes()?;
        fallback::fallback(&options, &upstream_rt)?;
    }
    let tools = which("nginx").is_some() && which("wrk").is_some();
    if !options.serving
        && !options.hosted
        && !options.auth
        && !options.storage
        && !options.metrics
        && !options.instances
        && !options.real
    {
    } else if tools {
        if options.serving {
            let (upstream_rt, wharf_rt) = runtimes()?;
            serving(&options, &upstream_rt, &wharf_rt)?;
        }
        if options.hosted {
            let (_, wharf_rt) = runtimes()?;
            hosted::hosted(&options, &wharf_rt)?;
        }
        if options.auth {
            let (upstream_rt, wharf_rt) = runtimes()?;
            auth::auth(&options, &upstream_rt, &wharf_rt)?;
        }
        if options.storage {
            let (upstream_rt, wharf_rt) = runtimes()?;
            storage::storage(&options, &upstream_rt, &wharf_rt)?;
        }
        if options.metrics {
            metrics::metrics(&options, &runtime("upstream", 1)?)?;
        }
        if options.instances {
            let (upstream_rt, wharf_rt) = runtimes()?;
            instances::instances(&options, &upstream_rt, &wharf_rt)?;
        }
        if options.real {
            real::real(&options, &options.real_home)?;
        }
    } else {
        println!(
            "\nnginx or wrk not found: skipping the serving comparison (apt-get install nginx-light wrk)"
        );
    }
    Ok(())
}

/// A runtime for the fake upstream and one for wharf, so neither steals the
/// other's threads; wrk and nginx are separate processes.
fn runtimes() -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
    Ok((runtime("upstream", 1)?, runtime("wharf", 2)?))
}

/// A runtime of `workers` threads named `name` (the metrics phase reads
/// the CPU time of each server's threads by their name).
fn runtime(name: &str, workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// The middle of `values` (the upper one of an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A pseudo-random, hardly compressible text of `len` letters.
fn noise(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// Versions of the crate of popularity rank `i`: 1/rank, like crates.io,
/// where a few crates have hundreds of versions and most have a handful.
fn versions_of(i: usize) -> usize {
    (200 / (i + 1)).max(1)
}

/// Crates whose version counts follow [`versions_of`] (index files of 0.3 KB
/// to 60 KB) and crate files of 10-150 KB.
fn serving_fixtures(count: usize) -> Vec<FixtureCrate> {
    let mut all = Vec::new();
    for i in 0..count {
        let name = format!("hot-{i}");
        let versions = versions_of(i);
        for v in 0..versions {
            let mut builder = CrateBuilder::new(&name, &format!("1.{v}.0"));
            for d in 1..=3 {
                builder = builder.dep(&format!("dep-{}", (i + d * 7) % 50), "^1.0");
            }
            if v + 1 == versions {
                let size = 10_000 + (i * 7919) % 140_000;
                builder = builder.lib_body(&format!(
                    "pub fn value() -> u64 {{ 1 }}\n// {}\n",
                    noise(i as u64, size)
                ));
            }
            all.push(builder.build());
        }
    }
    all
}

async fn start_wharf(
    data_dir: &Path,
    upstream: &str,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    start_wharf_with(data_dir, upstream, |_| {}).await
}

/// [`start_wharf`], with `adjust` applied to its configuration.
async fn start_wharf_with(
    data_dir: &Path,
    upstream: &str,
    adjust: impl FnOnce(&mut Config),
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.to_owned(),
        registries: [(
            "crates-io".to_owned(),
            Registry::Cache(CacheRegistry {
                upstreams: vec![upstream.to_owned()],
                ..CacheRegistry::default()
            }),
        )]
        .into(),
        ..Config::default()
    };
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState::build(&config, &wharf_server::public_url(&config, addr)).await?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(wharf_server::serve(listener, state, async move {
        let _ = rx.await;
    }));
    Ok((addr, tx))
}

/// Fetches every path of `paths` from the server at `addr` once, so that
/// what is timed afterwards are hits.
async fn warm<'a>(
    addr: SocketAddr,
    paths: impl IntoIterator<Item = &'a String>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for path in paths {
        client
            .get(format!("http://{addr}{path}"))
            .send()
            .await?
            .error_for_status()?;
    }
    Ok(())
}

/// Rounds per comparison, alternating wharf and nginx; the best of each counts,
/// which filters out a round slowed by something else on the machine.
const ROUNDS: usize = 3;

struct Load {
    /// Requests answered in the run.
    requests: u64,
    requests_per_sec: f64,
    megabytes_per_sec: f64,
    errors: bool,
}

fn serving(
    options: &Options,
    upstream_rt: &tokio::runtime::Runtime,
    wharf_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let fixtures = serving_fixtures(200);
    let mut newest: Vec<&FixtureCrate> = Vec::new();
    for krate in &fixtures {
        match newest.last_mut() {
            Some(last) if last.name == krate.name => *last = krate,
            _ => newest.push(krate),
        }
    }
    let index_paths: Vec<String> = newest
        .iter()
        .map(|k| format!("/crates-io/index/{}", sparse_path(&k.name)))
        .collect();
    let crate_paths: Vec<String> = newest
        .iter()
        .map(|k| format!("/crates-io/crates/{0}/{0}-{1}.crate", k.name, k.vers))
        .collect();
    let crate_bytes: usize = newest.iter().map(|k| k.bytes.len()).sum();
    // The largest files, where nginx's sendfile saves wharf's one copy.
    let large_paths: Vec<String> = index_paths[..10].to_vec();

    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures.clone()));
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (wharf_addr, _stop) = wharf_rt.block_on(start_wharf(&data, &upstream.index_url()))?;

    // Warm wharf: every file fetched once, so both servers serve the same files.
    let index_bytes: usize = wharf_rt.block_on(async {
        let client = reqwest::Client::new();
        let mut total = 0;
        for path in index_paths.iter().chain(&crate_paths) {
            let response = client
                .get(format!("http://{wharf_addr}{path}"))
                .send()
                .await?
                .error_for_status()?;
            let body = response.bytes().await?;
            if path.contains("/index/") {
                total += body.len();
            }
        }
        anyhow::Ok(total)
    })?;
    let nginx = Nginx::start(dir.path(), &data)?;
    let gzip_ratio = wharf_rt.block_on(async {
        let client = reqwest::Client::builder().no_gzip().build()?;
        let mut wire = 0;
        for path in &index_paths {
            let response = client
                .get(format!("http://{wharf_addr}{path}"))
                .header("accept-encoding", "gzip")
                .send()
                .await?;
            wire += response.bytes().await?.len();
        }
        anyhow::Ok(index_bytes as f64 / wire as f64)
    })?;

    println!(
        "\nserving: {} index files ({:.1} MB; versions per crate 1/rank: {} to 1, mean {:.1}), {} crate files ({:.1} MB, mean {:.0} KB); wrk -t2 -c{} -d{}s, best of {ROUNDS} rounds",
        index_paths.len(),
        index_bytes as f64 / 1e6,
        versions_of(0),
        (0..index_paths.len()).map(versions_of).sum::<usize>() as f64 / index_paths.len() as f64,
        crate_paths.len(),
        crate_bytes as f64 / 1e6,
        crate_bytes as f64 / crate_paths.len() as f64 / 1e3,
        options.connections,
        options.duration_secs
    );
    println!(
        "{:<36} {:>12} {:>10} {:>12} {:>10} {:>8}",
        "", "wharf req/s", "MB/s", "nginx req/s", "MB/s", "ratio"
    );
    for (label, paths, by_bytes, encoding) in [
        (
            "index hits, as cargo asks (gzip)",
            &index_paths,
            false,
            Some("deflate, gzip"),
        ),
        ("index hits, identity", &index_paths, false, None),
        (
            "index hits, identity, 10 largest",
            &large_paths,
            false,
            None,
        ),
        ("crate downloads", &crate_paths, true, None),
    ] {
        let script = wrk_script(dir.path(), label, paths, encoding)?;
        let mut best = (None::<Load>, None::<Load>);
        for _ in 0..ROUNDS {
            let w = wrk(options, &format!("http://{wharf_addr}"), &script)?;
            let n = wrk(options, &format!("http://{}", nginx.addr), &script)?;
            if best
                .0
                .as_ref()
                .is_none_or(|b| w.requests_per_sec > b.requests_per_sec)
            {
                best.0 = Some(w);
            }
            if best
                .1
                .as_ref()
                .is_none_or(|b| n.requests_per_sec > b.requests_per_sec)
            {
                best.1 = Some(n);
            }
        }
        let (w, n) = (best.0.expect("rounds ran"), best.1.expect("rounds ran"));
        let ratio = if by_bytes {
            w.megabytes_per_sec / n.megabytes_per_sec
        } else {
            w.requests_per_sec / n.requests_per_sec
        };
        println!(
            "{label:<36} {:>12.0} {:>10.1} {:>12.0} {:>10.1} {:>7.2}x{}",
            w.requests_per_sec,
            w.megabytes_per_sec,
            n.requests_per_sec,
            n.megabytes_per_sec,
            ratio,
            if w.errors || n.errors {
                "  (some responses were not 2xx!)"
            } else {
                ""
            }
        );
    }
    println!(
        "(cargo sends `Accept-Encoding: deflate, gzip`: wharf answers with index files compressed once and kept, {gzip_ratio:.1}x smaller; nginx serves them as they are)"
    );
    drop(nginx);
    Ok(())
}

/// A wrk script that walks `paths` round-robin, each thread from its own offset.
fn wrk_script(
    dir: &Path,
    label: &str,
    paths: &[String],
    encoding: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let headers: Vec<(&str, &str)> = encoding
        .map(|e| ("Accept-Encoding", e))
        .into_iter()
        .collect();
    wrk_script_with(dir, label, paths, &headers)
}

/// [`wrk_script`] with any request headers.
fn wrk_script_with(
    dir: &Path,
    label: &str,
    paths: &[String],
    headers: &[(&str, &str)],
) -> anyhow::Result<PathBuf> {
    let file = dir.join(format!(
        "{}.lua",
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let list: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    let header: String = headers
        .iter()
        .map(|(name, value)| format!("wrk.headers[\"{name}\"] = \"{value}\"\n"))
        .collect();
    std::fs::write(
        &file,
        format!(
            "{header}local paths = {{{}}}\nlocal i = math.random(#paths)\nrequest = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n",
            list.join(",")
        ),
    )?;
    Ok(file)
}

fn wrk(options: &Options, base: &str, script: &Path) -> anyhow::Result<Load> {
    let output = Command::new("wrk")
        .args([
            &format!("-t{}", options.wrk_threads),
            &format!("-c{}", options.connections),
            &format!("-d{}s", options.duration_secs),
            "-s",
        ])
        .arg(script)
        .arg(base)
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
    };
    let requests_per_sec = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("wrk said: {text}"))?;
    let transfer = field("Transfer/sec:").with_context(|| format!("wrk said: {text}"))?;
    let megabytes_per_sec = parse_size(transfer) / 1e6;
    // `  1016547 requests in 10.10s, 1.2GB read`
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("wrk said: {text}"))?;
    Ok(Load {
        requests,
        requests_per_sec,
        megabytes_per_sec,
        errors: text.contains("Non-2xx") || text.contains("Socket errors"),
    })
}

/// wrk's `12.34MB` (binary units) in bytes.
fn parse_size(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or(0.0);
    number
        * match unit {
            "KB" => 1024.0,
            "MB" => 1024.0 * 1024.0,
            "GB" => 1024.0 * 1024.0 * 1024.0,
            _ => 1.0,
        }
}

/// A realistic dependency graph: layers of crates, each depending on three
/// of the next layer, about ten levels deep like real projects.
fn cold_fixtures(count: usize) -> (Vec<FixtureCrate>, Vec<String>) {
    let width = (count / 10).max(1);
    let layers = count.div_ceil(width);
    let name = |layer: usize, j: usize| format!("cold-{layer}-{j}");
    let mut all = Vec::new();
    for layer in 0..layers {
        for j in 0..width {
            let mut builder = CrateBuilder::new(&name(layer, j), "1.0.0");
            if layer + 1 < layers {
                // Some widths make two of these the same crate: a dependency
                // is named once.
                let mut targets = vec![j, (j + 1) % width, (j * 7 + 3) % width];
                targets.sort_unstable();
                targets.dedup();
                for d in targets {
                    builder = builder.dep(&name(layer + 1, d), "1");
                }
            }
            let mut krate = builder.build();
            // Real crates are tens of KB: pad with a comment so downloads cost something.
            if krate.deps.is_empty() || j % 2 == 0 {
                let deps: Vec<(String, String)> = krate.deps.clone();
                let mut padded = CrateBuilder::new(&krate.name, "1.0.0");
                for (dep, req) in &deps {
                    padded = padded.dep(dep, req);
                }
                let body = format!(
                    "pub fn value() -> u64 {{ 1{} }}\n// {}\n",
                    deps.iter()
                        .map(|(d, _)| format!(" + {}::value()", d.replace('-', "_")))
                        .collect::<String>(),
                    noise((layer * width + j) as u64, 30_000)
                );
                krate = padded.lib_body(&body).build();
            }
            all.push(krate);
        }
    }
    let roots = (0..width).map(|j| name(0, j)).collect();
    (all, roots)
}

/// Cold fetches per side; the median counts.
const COLD_RUNS: usize = 5;

fn cold_fetch(
    options: &Options,
    upstream_rt: &tokio::runtime::Runtime,
    wharf_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let (fixtures, roots) = cold_fixtures(options.crates);
    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures.clone()));
    let deps: Vec<(&str, &str)> = roots.iter().map(|r| (r.as_str(), "1")).collect();
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..COLD_RUNS {
        let project = CargoProject::new(&upstream.index_url(), &deps);
        direct.push(timed_fetch(&project)?);

        let dir = tempfile::tempdir()?;
        let (addr, stop) =
            wharf_rt.block_on(start_wharf(&dir.path().join("data"), &upstream.index_url()))?;
        let project = CargoProject::new(&format!("sparse+http://{addr}/crates-io/index/"), &deps);
        through.push(timed_fetch(&project)?);
        let _ = stop.send(());
    }
    direct.sort();
    through.sort();
    let (d, t) = (direct[COLD_RUNS / 2], through[COLD_RUNS / 2]);
    println!(
        "\ncold `cargo fetch` of {} crates ({} levels deep, {:.1} MB), median of {COLD_RUNS}:\n  straight from upstream {:.2}s, through a cold wharf {:.2}s, ratio {:.2}x",
        fixtures.len(),
        fixtures.len().div_ceil((fixtures.len() / 10).max(1)),
        fixtures.iter().map(|k| k.bytes.len()).sum::<usize>() as f64 / 1e6,
        d.as_secs_f64(),
        t.as_secs_f64(),
        t.as_secs_f64() / d.as_secs_f64()
    );
    Ok(())
}

fn timed_fetch(project: &CargoProject) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let outcome = project.run(&["fetch"]);
    if !outcome.success() {
        bail!("cargo fetch failed: {}", outcome.stderr);
    }
    Ok(started.elapsed())
}
