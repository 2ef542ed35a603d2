//! `--only-storage`: wharf on an S3-compatible bucket (SeaweedFS on
//! loopback) against wharf on the local disk, in the same run: index hits
//! and crate downloads with the memory cache on and off, and the time a cold
//! `cargo fetch` takes through a cache on each.

use std::time::Duration;

use wharf_config::{Config, Storage, StorageKind};
use wharf_test_support::{cargo::CargoProject, s3::TestS3, upstream::FakeUpstream};

use crate::{
    COLD_RUNS, Load, Options, ROUNDS, cold_fixtures, serving_fixtures, sparse_path,
    start_wharf_with, timed_fetch, warm, wrk, wrk_script,
};

/// The `[storage]` of a fresh place (a prefix) in the run's SeaweedFS.
pub(crate) fn bucket() -> Storage {
    let s3 = TestS3::shared();
    let (bucket, prefix) = s3.place();
    Storage {
        kind: StorageKind::S3,
        bucket: Some(bucket),
        prefix: Some(prefix),
        endpoint: Some(s3.endpoint.clone()),
        region: Some("us-east-1".to_owned()),
        allow_http: true,
        anonymous: true,
        ..Storage::default()
    }
}

/// Disk or bucket, with or without wharf's memory caches.
fn configure(s3: bool, memory: bool) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        if s3 {
            config.storage = bucket();
        }
        if !memory {
            config.memory_index_mb = 0;
            config.memory_crates_mb = 0;
        }
    }
}

pub fn storage(
    options: &Options,
    upstream_rt: &tokio::runtime::Runtime,
    wharf_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let fixtures = serving_fixtures(100);
    let mut newest: Vec<_> = Vec::new();
    for krate in &fixtures {
        match newest.last_mut() {
            Some(last) if *last == krate.name => {}
            _ => newest.push(krate.name.clone()),
        }
    }
    let last_version = |name: &str| {
        fixtures
            .iter()
            .rfind(|k| k.name == name)
            .map(|k| k.vers.clone())
            .unwrap_or_default()
    };
    let index_paths: Vec<String> = newest
        .iter()
        .map(|name| format!("/crates-io/index/{}", sparse_path(name)))
        .collect();
    let crate_paths: Vec<String> = newest
        .iter()
        .map(|name| {
            format!(
                "/crates-io/crates/{name}/{name}-{}.crate",
                last_version(name)
            )
        })
        .collect();
    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures.clone()));
    let dir = tempfile::tempdir()?;
    println!(
        "\nstorage: {} index files and {} crate files served by wharf on the disk and on S3 (SeaweedFS on loopback); wrk -t2 -c{} -d{}s, best of {ROUNDS}",
        index_paths.len(),
        crate_paths.len(),
        options.connections,
        options.duration_secs
    );
    println!(
        "{:<40} {:>12} {:>12} {:>10}",
        "", "disk req/s", "S3 req/s", "S3/disk"
    );
    for memory in [true, false] {
        let mut servers = Vec::new();
        for s3 in [false, true] {
            let data = dir.path().join(format!("data-{s3}-{memory}"));
            let (addr, stop) = wharf_rt.block_on(start_wharf_with(
                &data,
                &upstream.index_url(),
                configure(s3, memory),
            ))?;
            // Warm: every file fetched once, so only hits are timed.
            wharf_rt.block_on(warm(addr, index_paths.iter().chain(&crate_paths)))?;
            servers.push((addr, stop));
        }
        let memory_label = if memory { "memory on" } else { "memory off" };
        for (what, paths, encoding) in [
            ("index hits (gzip)", &index_paths, Some("deflate, gzip")),
            ("crate downloads", &crate_paths, None),
        ] {
            let label = format!("{what}, {memory_label}");
            let script = wrk_script(dir.path(), &label, paths, encoding)?;
            let mut best = [None::<Load>, None::<Load>];
            for _ in 0..ROUNDS {
                for (i, (addr, _)) in servers.iter().enumerate() {
                    let load = wrk(options, &format!("http://{addr}"), &script)?;
                    if best[i]
                        .as_ref()
                        .is_none_or(|b| load.requests_per_sec > b.requests_per_sec)
                    {
                        best[i] = Some(load);
                    }
                }
            }
            let [Some(disk), Some(s3)] = best else {
                anyhow::bail!("no rounds ran");
            };
            println!(
                "{label:<40} {:>12.0} {:>12.0} {:>9.2}x{}",
                disk.requests_per_sec,
                s3.requests_per_sec,
                s3.requests_per_sec / disk.requests_per_sec,
                if disk.errors || s3.errors {
                    "  (some responses were not 2xx!)"
                } else {
                    ""
                }
            );
        }
        for (_, stop) in servers {
            let _ = stop.send(());
        }
    }

    // A cold fetch through a cache on each, the fresh CARGO_HOMEs on tmpfs.
    let (fixtures, roots) = cold_fixtures(options.crates.min(150));
    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures.clone()));
    let deps: Vec<(&str, &str)> = roots.iter().map(|r| (r.as_str(), "1")).collect();
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..COLD_RUNS {
        for (i, s3) in [false, true].into_iter().enumerate() {
            let data = tempfile::tempdir()?;
            let (addr, stop) = wharf_rt.block_on(start_wharf_with(
                &data.path().join("data"),
                &upstream.index_url(),
                configure(s3, true),
            ))?;
            let project =
                CargoProject::new(&format!("sparse+http://{addr}/crates-io/index/"), &deps);
            times[i].push(timed_fetch(&project)?);
            let _ = stop.send(());
        }
    }
    for t in &mut times {
        t.sort();
    }
    let (disk, s3) = (times[0][COLD_RUNS / 2], times[1][COLD_RUNS / 2]);
    println!(
        "cold `cargo fetch` of {} crates through a cold cache, median of {COLD_RUNS}: disk {:.2}s, S3 {:.2}s, S3/disk {:.2}x",
        fixtures.len(),
        disk.as_secs_f64(),
        s3.as_secs_f64(),
        s3.as_secs_f64() / disk.as_secs_f64()
    );
    Ok(())
}
