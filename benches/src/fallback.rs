//! The fallback benchmark: a cold `cargo fetch` of a 300-crate graph through
//! `wharf run` with (a) every mirror healthy, (b) the first mirror a
//! blackhole, (c) the first mirror answering 500 to everything; (b) and (c)
//! as ratios to (a), median of three runs each.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use wharf_test_support::{
    cargo::CargoProject,
    upstream::{Blackhole, FakeUpstream, Fault, Target},
};

use crate::{Options, cold_fixtures};

const RUNS: usize = 3;

/// Runs the three cases and prints their times and ratios.
pub fn fallback(options: &Options, upstream_rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    // `main` checked it up front: present, newer than the sources.
    let wharf = crate::wharf_binary::default_path();
    let (fixtures, roots) = cold_fixtures(options.crates);
    let healthy = upstream_rt.block_on(FakeUpstream::start(fixtures.clone()));
    let failing = upstream_rt.block_on(FakeUpstream::start(fixtures.clone()));
    failing.set_fault(Target::All, Fault::Status(500));
    let blackhole = upstream_rt.block_on(Blackhole::start());
    let deps: Vec<(&str, &str)> = roots.iter().map(|r| (r.as_str(), "1")).collect();
    let cases = [
        ("(a) all mirrors healthy", vec![healthy.index_url()]),
        (
            "(b) first mirror a blackhole",
            vec![blackhole.index_url(), healthy.index_url()],
        ),
        (
            "(c) first mirror answering 500",
            vec![failing.index_url(), healthy.index_url()],
        ),
    ];
    println!(
        "\n`wharf run -- cargo fetch` of {} crates, cold each time, median of {RUNS}:",
        fixtures.len()
    );
    let mut baseline = None;
    for (label, mirrors) in cases {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            times.push(timed_run(&wharf, &deps, &mirrors)?);
        }
        times.sort();
        let median = times[RUNS / 2];
        let base = *baseline.get_or_insert(median);
        println!(
            "  {label:<32} {:>6.2}s  {:>5.2}x",
            median.as_secs_f64(),
            median.as_secs_f64() / base.as_secs_f64()
        );
    }
    Ok(())
}

fn timed_run(wharf: &Path, deps: &[(&str, &str)], mirrors: &[String]) -> anyhow::Result<Duration> {
    let project = CargoProject::new("sparse+http://127.0.0.1:9/unused/", deps);
    std::fs::remove_dir_all(project.project_dir().join(".cargo"))?;
    let cache = tempfile::tempdir()?;
    let mut args = vec![
        "run".to_owned(),
        "--no-crates-io".to_owned(),
        "--client-config".to_owned(),
        "/nonexistent/client.toml".to_owned(),
        "--cache-dir".to_owned(),
        cache.path().display().to_string(),
    ];
    for mirror in mirrors {
        args.push("--mirror".to_owned());
        args.push(mirror.clone());
    }
    args.extend(["--".to_owned(), "cargo".to_owned(), "fetch".to_owned()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let output = project
        .command(wharf, &refs)
        .env("WHARF_LOG", "warn")
        .output()
        .context("cannot run wharf")?;
    if !output.status.success() {
        bail!(
            "wharf run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(started.elapsed())
}
