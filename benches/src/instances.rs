//! `--only-instances`: two wharf instances on one bucket and one PostgreSQL
//! database against one, in the same run: index hits and crate downloads
//! (req/s, wrk split over the two against wrk on one), and the time from a
//! publish acknowledged by A until B serves the new version.

use std::time::{Duration, Instant};

use wharf_config::{HostedRegistry, Registry};
use wharf_test_support::{fixture::CrateBuilder, postgres::TempPostgres, upstream::FakeUpstream};

use crate::{
    Load, Options, ROUNDS, serving_fixtures, sparse_path, start_wharf_with, warm, wrk, wrk_script,
};

/// Publishes timed from A to B.
const PUBLISHES: usize = 20;

pub fn instances(
    options: &Options,
    upstream_rt: &tokio::runtime::Runtime,
    wharf_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let fixtures = serving_fixtures(100);
    let mut names: Vec<String> = fixtures.iter().map(|k| k.name.clone()).collect();
    names.dedup();
    let index_paths: Vec<String> = names
        .iter()
        .map(|n| format!("/crates-io/index/{}", sparse_path(n)))
        .collect();
    let crate_paths: Vec<String> = names
        .iter()
        .map(|n| format!("/crates-io/crates/{n}/{n}-1.0.0.crate"))
        .collect();
    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures));
    let database = TempPostgres::shared().create_database();
    let storage = crate::storage::bucket();
    let dir = tempfile::tempdir()?;
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let (storage, database) = (storage.clone(), database.clone());
        let (addr, stop) = wharf_rt.block_on(start_wharf_with(
            &dir.path().join(name),
            &upstream.index_url(),
            move |config| {
                config.storage = storage;
                config.registries.insert(
                    "private".to_owned(),
                    Registry::Hosted(HostedRegistry {
                        database_url: Some(database),
                        max_upload_bytes: 10 << 20,
                        auth_required: false,
                        crate_downloads: Default::default(),
                        download_url_expiry: Duration::from_secs(300),
                    }),
                );
            },
        ))?;
        // Warm: every file fetched once (the first instance fills the
        // bucket, the second reads it), so only hits are timed.
        wharf_rt.block_on(warm(addr, index_paths.iter().chain(&crate_paths)))?;
        servers.push((addr, stop));
    }
    println!(
        "\ninstances: two wharf instances on one bucket (SeaweedFS) and one PostgreSQL against one; wrk -t2 -c{} -d{}s on one, two such wrk at -c{} on two; best of {ROUNDS}",
        options.connections,
        options.duration_secs,
        options.connections / 2
    );
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "", "one req/s", "two req/s", "two/one"
    );
    let half = Options {
        connections: (options.connections / 2).max(1),
        ..options.clone()
    };
    for (what, paths, encoding) in [
        ("index hits (gzip)", &index_paths, Some("deflate, gzip")),
        ("crate downloads", &crate_paths, None),
    ] {
        let script = wrk_script(dir.path(), what, paths, encoding)?;
        let (mut one, mut two) = (0f64, 0f64);
        let mut errors = false;
        for _ in 0..ROUNDS {
            let single = wrk(options, &format!("http://{}", servers[0].0), &script)?;
            errors |= single.errors;
            one = one.max(single.requests_per_sec);
            let loads: Vec<anyhow::Result<Load>> = std::thread::scope(|scope| {
                let runs: Vec<_> = servers
                    .iter()
                    .map(|(addr, _)| {
                        let (half, script) = (&half, &script);
                        scope.spawn(move || wrk(half, &format!("http://{addr}"), script))
                    })
                    .collect();
                runs.into_iter()
                    .map(|r| {
                        r.join()
                            .unwrap_or_else(|_| anyhow::bail!("wrk thread panicked"))
                    })
                    .collect()
            });
            let mut sum = 0.0;
            for load in loads {
                let load = load?;
                errors |= load.errors;
                sum += load.requests_per_sec;
            }
            two = two.max(sum);
        }
        println!(
            "{what:<28} {one:>12.0} {two:>12.0} {:>9.2}x{}",
            two / one,
            if errors {
                "  (some responses were not 2xx!)"
            } else {
                ""
            }
        );
    }

    // A publish through A until B serves it: B reads the file first, so it
    // holds a copy it would otherwise keep for a second.
    let (a, b) = (servers[0].0, servers[1].0);
    let mut delays = wharf_rt.block_on(async {
        let db = wharf_db::Db::connect(&database).await?;
        let token = db
            .tokens("private")
            .create(&wharf_db::User::new("bench")?)
            .await?;
        let secret = token.secret.expose().to_owned();
        let client = reqwest::Client::new();
        let index = format!("http://{b}{}", crate::hosted::index_path("pub-seen"));
        let mut delays = Vec::new();
        for v in 0..=PUBLISHES {
            let vers = format!("1.0.{v}");
            let krate = CrateBuilder::new("pub-seen", &vers).build();
            if v > 0 {
                client.get(&index).send().await?.error_for_status()?;
            }
            client
                .put(format!("http://{a}/private/api/v1/crates/new"))
                .header("Authorization", &secret)
                .body(crate::hosted::publish_body("pub-seen", &vers, &krate.bytes))
                .send()
                .await?
                .error_for_status()?;
            let acknowledged = Instant::now();
            let needle = format!("\"vers\":\"{vers}\"");
            loop {
                let file = client.get(&index).send().await?.text().await?;
                if file.contains(&needle) {
                    break;
                }
                if acknowledged.elapsed() > Duration::from_secs(5) {
                    anyhow::bail!("B did not serve {vers} within 5 s");
                }
            }
            if v > 0 {
                delays.push(acknowledged.elapsed());
            }
        }
        anyhow::Ok(delays)
    })?;
    delays.sort();
    println!(
        "publish acknowledged by A until B serves it, {PUBLISHES} publishes: median {:.1} ms, max {:.1} ms (B's own revision check alone: up to 1000 ms)",
        delays[PUBLISHES / 2].as_secs_f64() * 1000.0,
        delays[PUBLISHES - 1].as_secs_f64() * 1000.0
    );
    for (_, stop) in servers {
        let _ = stop.send(());
    }
    Ok(())
}
