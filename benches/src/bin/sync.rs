//! The sync benchmark: `wharf sync` of a synthetic upstream of many crates
//! (100,000 by default, or crates.io's shape with `--shape crates-io`)
//! through its git index, against plain parallel `curl` of the same crate
//! files from the same upstream in the same run.
//!
//! It prints wall time, upstream requests and peak RSS of the first pass, a
//! pass with no change, and a pass after 10 changes; then curl's throughput.
//! One crate file answers 404 throughout, to show it is asked for once per
//! pass and leaves nothing behind. See benches/README.md.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use wharf_test_support::{
    fixture::{CrateBuilder, FixtureCrate, sha256_hex},
    upstream::{FakeUpstream, Fault, Logged, RequestKind, Target},
};

#[path = "../wharf_binary.rs"]
mod wharf_binary;

struct Options {
    shape: Shape,
    crates: usize,
    files: usize,
    size_divisor: u64,
    concurrency: usize,
    wharf: PathBuf,
    curl: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `--crates` crates of one to three tiny versions each.
    Synthetic,
    /// `--files` crate files in crates.io's shape; see [`crates_io_shape`].
    CratesIo,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        shape: Shape::Synthetic,
        crates: 100_000,
        files: 1_000_000,
        size_divisor: 40,
        concurrency: 32,
        wharf: wharf_binary::default_path(),
        curl: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--crates" => options.crates = value()?.parse().context("--crates needs a number")?,
            "--shape" => {
                options.shape = match value()?.as_str() {
                    "synthetic" => Shape::Synthetic,
                    "crates-io" => Shape::CratesIo,
                    other => bail!("--shape takes synthetic or crates-io, not {other}"),
                }
            }
            "--files" => options.files = value()?.parse().context("--files needs a number")?,
            "--size-divisor" => {
                options.size_divisor = value()?
                    .parse::<u64>()
                    .ok()
                    .filter(|d| *d > 0)
                    .context("--size-divisor needs a positive number")?
            }
            "--concurrency" => {
                options.concurrency = value()?.parse().context("--concurrency needs a number")?
            }
            "--wharf" => options.wharf = PathBuf::from(value()?),
            "--no-curl" => options.curl = false,
            "--bench" => {}
            other => bail!("unknown flag {other}; see benches/README.md"),
        }
    }
    wharf_binary::check(&options.wharf)?;
    Ok(options)
}

/// One to three small versions per crate.
fn versions_of(i: usize) -> usize {
    1 + i % 3
}

fn fixtures(count: usize) -> Vec<FixtureCrate> {
    let build = |range: std::ops::Range<usize>| {
        let mut crates = Vec::new();
        for i in range {
            for patch in 0..versions_of(i) {
                crates
                    .push(CrateBuilder::new(&format!("syn-{i}"), &format!("0.1.{patch}")).build());
            }
        }
        crates
    };
    // Two threads: packing 200,000 tarballs is most of the setup time.
    let half = count / 2;
    std::thread::scope(|scope| {
        let first = scope.spawn(|| build(0..half));
        let mut crates = build(half..count);
        let mut all = first.join().expect("fixture thread");
        all.append(&mut crates);
        all
    })
}

/// Real crate file sizes, smallest first (see the file's header).
const CRATE_SIZES: &str = include_str!("../../data/crate-sizes.txt");

/// The most versions one crate gets (crates.io's largest have a few
/// thousand).
const MOST_VERSIONS: u64 = 2_000;

/// `files` crate files in crates.io's shape, and how many crates hold them.
///
/// Versions per crate follow P(V >= k) = 1/k up to [`MOST_VERSIONS`]: half
/// the crates have one version, a few have hundreds, and the mean is about
/// 8 (crates.io's totals, some 190,000 crates and 1.7 million versions, give
/// about 9). That is a model. Each file's size is drawn from the real sizes
/// in `data/crate-sizes.txt`, divided by `divisor` so that a million files
/// fit in memory and on tmpfs: the shape of the sizes is real, the scale is
/// not. The bytes are slices of one random buffer, so the fake upstream holds
/// them for free; their sha256 is real.
fn crates_io_shape(files: usize, divisor: u64) -> anyhow::Result<(Vec<FixtureCrate>, usize)> {
    let sizes: Vec<u64> = CRATE_SIZES
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .context("data/crate-sizes.txt holds a line that is not a size")?;
    let largest = sizes.iter().max().copied().unwrap_or(1) / divisor + 1;
    let mut random = SplitMix(0x5EED);
    let noise: Vec<u8> = (0..largest * 2).map(|_| random.next() as u8).collect();
    let noise = Bytes::from(noise);
    let mut crates = Vec::with_capacity(files);
    let mut names = 0;
    while crates.len() < files {
        // u in [0, 1); floor(1/u) >= k exactly when u <= 1/k (u = 0 and
        // the rest of the tail are clamped to the most versions).
        let u = (random.next() >> 11) as f64 / (1u64 << 53) as f64;
        let versions = ((1.0 / u.max(f64::MIN_POSITIVE)) as u64)
            .clamp(1, MOST_VERSIONS)
            .min((files - crates.len()) as u64);
        for patch in 0..versions {
            let size = (sizes[random.below(sizes.len() as u64) as usize] / divisor).max(1);
            let start = random.below(noise.len() as u64 - size) as usize;
            crates.push(FixtureCrate {
                name: format!("syn-{names}"),
                vers: format!("0.1.{patch}"),
                deps: Vec::new(),
                features: Default::default(),
                bytes: noise.slice(start..start + size as usize),
                cksum: String::new(),
                yanked: false,
            });
        }
        names += 1;
    }
    // Two threads: hashing a million files is most of the setup time.
    let (first, second) = crates.split_at_mut(files / 2);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            first
                .iter_mut()
                .for_each(|k| k.cksum = sha256_hex(&k.bytes))
        });
        second
            .iter_mut()
            .for_each(|k| k.cksum = sha256_hex(&k.bytes));
    });
    Ok((crates, names))
}

/// splitmix64: a fixed seed gives the same upstream in every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), near enough for a benchmark.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Versions per crate and file sizes: median, mean and largest.
fn describe_shape(crates: &[FixtureCrate], names: usize) -> String {
    let mut per_crate: Vec<usize> = Vec::with_capacity(names);
    let mut run = 0;
    for (i, krate) in crates.iter().enumerate() {
        run += 1;
        if crates.get(i + 1).is_none_or(|next| next.name != krate.name) {
            per_crate.push(run);
            run = 0;
        }
    }
    per_crate.sort_unstable();
    let mut sizes: Vec<usize> = crates.iter().map(|k| k.bytes.len()).collect();
    sizes.sort_unstable();
    let median = |v: &[usize]| v.get(v.len() / 2).copied().unwrap_or(0);
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    format!(
        "versions per crate: median {}, mean {:.1}, most {}; one version: {:.0}% of crates; file size: median {} B, mean {:.0} B, largest {} B",
        median(&per_crate),
        mean(&per_crate),
        per_crate.last().copied().unwrap_or(0),
        100.0 * per_crate.iter().filter(|v| **v == 1).count() as f64
            / per_crate.len().max(1) as f64,
        median(&sizes),
        mean(&sizes),
        sizes.last().copied().unwrap_or(0),
    )
}

struct Pass {
    wall: Duration,
    peak_rss_kib: u64,
    success: bool,
    stdout: String,
    requests: Vec<Logged>,
}

impl Pass {
    fn count(&self, kind: RequestKind) -> usize {
        self.requests.iter().filter(|r| r.kind == kind).count()
    }

    fn print(&self, what: &str) {
        println!(
            "{what:<22} {:>8.1} s  {:>7} requests ({} crate files, {} index files, {} git)  peak RSS {:>6.1} MiB  {}",
            self.wall.as_secs_f64(),
            self.requests.len(),
            self.count(RequestKind::Crate),
            self.count(RequestKind::Index),
            self.count(RequestKind::Git),
            self.peak_rss_kib as f64 / 1024.0,
            if self.success { "ok" } else { "exit non-zero" },
        );
    }
}

/// Runs `wharf sync` as its own process, sampling its peak RSS.
fn run_sync(options: &Options, config: &Path, upstream: &FakeUpstream) -> anyhow::Result<Pass> {
    upstream.clear_log();
    let started = Instant::now();
    let mut child = Command::new(&options.wharf)
        .args(["sync", "--config"])
        .arg(config)
        // BENCH_WHARF_LOG=info shows what wharf does, with timestamps.
        .env(
            "WHARF_LOG",
            std::env::var("BENCH_WHARF_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("BENCH_WHARF_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .context("starting wharf sync")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    let status = loop {
        // VmHWM is the high-water mark; the last reading before exit is the peak
        // up to the last 50 ms.
        if let Ok(text) = std::fs::read_to_string(&status_path)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_rss_kib = peak_rss_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed();
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut stdout)?;
    }
    Ok(Pass {
        wall,
        peak_rss_kib,
        success: status.success(),
        stdout,
        requests: upstream.requests(),
    })
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("upstream")
        .enable_all()
        .build()?;
    println!(
        "sync benchmark: {}, {} cores, loopback only",
        match options.shape {
            Shape::Synthetic => format!("{} crates", options.crates),
            Shape::CratesIo => format!("{} crate files in crates.io's shape", options.files),
        },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let started = Instant::now();
    let (crates, names) = match options.shape {
        Shape::Synthetic => (fixtures(options.crates), options.crates),
        Shape::CratesIo => crates_io_shape(options.files, options.size_divisor)?,
    };
    let versions = crates.len();
    let bytes: usize = crates.iter().map(|k| k.bytes.len()).sum();
    if options.shape == Shape::CratesIo {
        println!(
            "crates.io's shape: {names} crates; {}; sizes are real ones divided by {}",
            describe_shape(&crates, names),
            options.size_divisor
        );
    }
    let lost = crates[versions / 2].clone();
    let urls: Vec<String> = crates.iter().map(FixtureCrate::dl_path).collect();
    println!(
        "fixtures: {versions} versions, {:.1} MiB of crate files, built in {:.1} s",
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    let upstream = upstream_rt.block_on(FakeUpstream::start(crates));
    let lost_path = lost
        .dl_path()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    upstream.set_fault(Target::Path(lost_path.clone()), Fault::Status(404));
    let started = Instant::now();
    upstream.git_commit("initial");
    upstream.git_repack();
    println!(
        "git index committed and packed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[registries.m]\nkind = \"mirror\"\nupstreams = [\"{}\"]\nindex_git = \"{}\"\nmax_concurrency = {}\nmax_requests_per_sec = 1000000\n",
            dir.path().join("data").display(),
            upstream.index_url(),
            upstream.git_url(),
            options.concurrency,
        ),
    )?;

    println!();
    let first = run_sync(&options, &config, &upstream)?;
    first.print("first pass");
    let files_per_sec = first.count(RequestKind::Crate) as f64 / first.wall.as_secs_f64();
    println!(
        "  {files_per_sec:.0} crate files/s, {:.1} MiB/s",
        bytes as f64 / (1 << 20) as f64 / first.wall.as_secs_f64()
    );
    let lost_asked = first
        .requests
        .iter()
        .filter(|r| r.path == lost_path)
        .count();
    let stray = std::fs::read_dir(dir.path().join("data/.tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "  the lost crate file was asked for {lost_asked} time(s); {stray} partial file(s) left; reported: {}",
        first
            .stdout
            .lines()
            .any(|l| l.contains("failed:") && l.contains("404"))
    );
    if let Some(summary) = first.stdout.lines().next() {
        println!("  wharf: {summary}");
    }

    let again = run_sync(&options, &config, &upstream)?;
    again.print("no-change pass");

    for i in 0..10 {
        let name = format!("syn-{}", i * (names / 10).max(1));
        upstream.publish(CrateBuilder::new(&name, "0.2.0").build());
    }
    upstream.git_commit("ten changes");
    let changed = run_sync(&options, &config, &upstream)?;
    changed.print("pass after 10 changes");

    // Room on tmpfs for curl's copy.
    std::fs::remove_dir_all(dir.path().join("data"))?;
    if options.curl {
        curl_baseline(&options, &upstream, &urls, bytes, dir.path(), &first)?;
    }
    drop(upstream);
    upstream_rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Downloads the same crate files with `curl --parallel` at the same
/// concurrency, into a scratch directory.
fn curl_baseline(
    options: &Options,
    upstream: &FakeUpstream,
    urls: &[String],
    bytes: usize,
    dir: &Path,
    first: &Pass,
) -> anyhow::Result<()> {
    let out = dir.join("curl");
    std::fs::create_dir_all(&out)?;
    let list = dir.join("curl.config");
    let mut text = String::new();
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!(
            "url = \"{}{url}\"\noutput = \"{}/{i}.crate\"\n",
            upstream.url(),
            out.display()
        ));
    }
    std::fs::write(&list, text)?;
    let started = Instant::now();
    let status = Command::new("curl")
        .args(["--parallel", "--parallel-max"])
        .arg(options.concurrency.to_string())
        .args(["--silent", "--show-error", "--config"])
        .arg(&list)
        .stderr(Stdio::null())
        .status()
        .context("running curl (is it installed?)")?;
    let wall = started.elapsed();
    println!();
    println!(
        "curl --parallel-max {}: {} crate files in {:.1} s: {:.0} files/s, {:.1} MiB/s ({})",
        options.concurrency,
        urls.len(),
        wall.as_secs_f64(),
        urls.len() as f64 / wall.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64 / wall.as_secs_f64(),
        if status.success() {
            "ok"
        } else {
            "exit non-zero"
        },
    );
    println!(
        "wharf sync / curl download throughput: {:.2}x (wharf also diffs the git index, verifies every sha256 and writes index files)",
        wall.as_secs_f64() / first.wall.as_secs_f64()
    );
    Ok(())
}
