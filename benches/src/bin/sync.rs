//! The sync benchmark: `wharf sync` of a synthetic upstream of many crates
//! (100,000 by default) through its git index, against plain parallel `curl`
//! of the same crate files from the same upstream in the same run.
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
use wharf_test_support::{
    fixture::{CrateBuilder, FixtureCrate},
    upstream::{FakeUpstream, Fault, Logged, RequestKind, Target},
};

#[path = "../wharf_binary.rs"]
mod wharf_binary;

struct Options {
    crates: usize,
    concurrency: usize,
    wharf: PathBuf,
    curl: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        crates: 100_000,
        concurrency: 32,
        wharf: wharf_binary::default_path(),
        curl: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--crates" => options.crates = value()?.parse().context("--crates needs a number")?,
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
        "sync benchmark: {} crates, {} cores, loopback only",
        options.crates,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let started = Instant::now();
    let crates = fixtures(options.crates);
    let versions = crates.len();
    let bytes: usize = crates.iter().map(|k| k.bytes.len()).sum();
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
    // A minute per read, not the default 3 s: git-http-backend takes longer
    // than that to start answering a first clone of 200,000 crates.
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[registries.m]\nkind = \"mirror\"\nupstreams = [\"{}\"]\nindex_git = \"{}\"\nmax_concurrency = {}\nmax_requests_per_sec = 1000000\nupstream_timeout = \"60s\"\n",
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
        let name = format!("syn-{}", i * (options.crates / 10).max(1));
        upstream.publish(CrateBuilder::new(&name, "0.2.0").build());
    }
    upstream.git_commit("ten changes");
    let changed = run_sync(&options, &config, &upstream)?;
    changed.print("pass after 10 changes");

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
