//! The hosted-registry benchmark: publishes per second into a registry that
//! grows to 10,000 versions, then index reads from it against nginx serving
//! the same files, on SQLite and (when its binaries are here) PostgreSQL.

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use futures::{StreamExt, stream};
use wharf_config::{Config, HostedRegistry, Registry};
use wharf_server::AppState;
use wharf_test_support::{fixture::CrateBuilder, nginx::Nginx, postgres::TempPostgres};

use crate::{Options, ROUNDS, wrk, wrk_script};

/// Crates and versions of each: 100 x 100 = 10,000 versions.
const CRATES: usize = 100;
const VERSIONS: usize = 100;
/// Publishes in flight at once.
const PUBLISHERS: usize = 8;

/// Runs the benchmark on SQLite, then on a PostgreSQL started for it.
pub fn hosted(options: &Options, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    println!(
        "\nhosted registry: {CRATES} crates x {VERSIONS} versions published over HTTP ({PUBLISHERS} at once), then index hits against nginx; wrk -t2 -c{} -d{}s, best of {ROUNDS}",
        options.connections, options.duration_secs
    );
    println!(
        "{:<12} {:>12} {:>16} {:>12} {:>12} {:>8}",
        "database", "publishes/s", "read p50/p99 ms", "wharf req/s", "nginx req/s", "ratio"
    );
    run(options, runtime, "sqlite", None)?;
    match TempPostgres::try_start() {
        Ok(postgres) => run(options, runtime, "postgresql", Some(postgres.url()))?,
        Err(why) => println!("{:<12} skipped: {why}", "postgresql"),
    }
    Ok(())
}

fn run(
    options: &Options,
    runtime: &tokio::runtime::Runtime,
    label: &str,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.clone(),
        registries: [(
            "private".to_owned(),
            Registry::Hosted(HostedRegistry {
                database_url: database_url.clone(),
                max_upload_bytes: 10 << 20,
                auth_required: false,
                crate_downloads: Default::default(),
                download_url_expiry: std::time::Duration::from_secs(300),
            }),
        )]
        .into(),
        ..Config::default()
    };
    let bodies: Vec<Vec<u8>> = (0..VERSIONS)
        .flat_map(|v| (0..CRATES).map(move |c| (c, v)))
        .map(|(c, v)| {
            let name = format!("hb-{c}");
            let vers = format!("1.0.{v}");
            let krate = CrateBuilder::new(&name, &vers).build();
            publish_body(&name, &vers, &krate.bytes)
        })
        .collect();
    let index_paths: Vec<String> = (0..CRATES)
        .map(|c| index_path(&format!("hb-{c}")))
        .collect();

    let (publishes_per_sec, latencies, addr, _stop) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state =
            Arc::new(AppState::build(&config, &wharf_server::public_url(&config, addr)).await?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(wharf_server::serve(listener, state, async move {
            let _ = rx.await;
        }));
        let db = wharf_db::Db::connect(
            &HostedRegistry {
                database_url,
                max_upload_bytes: 0,
                auth_required: false,
                crate_downloads: Default::default(),
                download_url_expiry: std::time::Duration::from_secs(300),
            }
            .database_url(&data),
        )
        .await?;
        let token = db
            .tokens("private")
            .create(&wharf_db::User::new("bench")?)
            .await?;
        let secret = token.secret.expose().to_owned();
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/private/api/v1/crates/new");
        let started = Instant::now();
        let failures = stream::iter(bodies)
            .map(|body| {
                let (client, url, secret) = (&client, &url, &secret);
                async move {
                    let response = client
                        .put(url)
                        .header("Authorization", secret)
                        .body(body)
                        .send()
                        .await;
                    !matches!(response, Ok(r) if r.status() == 200)
                }
            })
            .buffer_unordered(PUBLISHERS)
            .filter(|failed| futures::future::ready(*failed))
            .count()
            .await;
        anyhow::ensure!(failures == 0, "{failures} publishes failed");
        let publishes_per_sec = (CRATES * VERSIONS) as f64 / started.elapsed().as_secs_f64();

        // Read latency, one request at a time, each file twice (cold, warm).
        let mut latencies = Vec::new();
        for path in index_paths.iter().chain(&index_paths) {
            let started = Instant::now();
            let body = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
            let file = dir
                .path()
                .join("nginx-root")
                .join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().context("a path has a parent")?)?;
            std::fs::write(&file, &body)?;
        }
        latencies.sort_by(f64::total_cmp);
        anyhow::Ok((publishes_per_sec, latencies, addr, tx))
    })?;
    let nginx = Nginx::start(dir.path(), &dir.path().join("nginx-root"))?;
    let script = wrk_script(dir.path(), &format!("hosted {label}"), &index_paths, None)?;
    let (mut wharf_best, mut nginx_best) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        wharf_best =
            wharf_best.max(wrk(options, &format!("http://{addr}"), &script)?.requests_per_sec);
        nginx_best = nginx_best
            .max(wrk(options, &format!("http://{}", nginx.addr), &script)?.requests_per_sec);
    }
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{label:<12} {publishes_per_sec:>12.0} {:>16} {wharf_best:>12.0} {nginx_best:>12.0} {:>7.2}x",
        format!("{:.2}/{:.2}", percentile(0.5), percentile(0.99)),
        wharf_best / nginx_best
    );
    Ok(())
}

/// The URL path of the index file of `name` (four characters or more).
pub(crate) fn index_path(name: &str) -> String {
    format!("/private/index/{}/{}/{name}", &name[..2], &name[2..4])
}

/// cargo's publish body for a crate with no dependencies.
pub(crate) fn publish_body(name: &str, vers: &str, tarball: &[u8]) -> Vec<u8> {
    let meta = serde_json::json!({
        "name": name, "vers": vers, "deps": [], "features": {}, "authors": [],
        "description": "a crate for the benchmark", "license": "MIT",
    });
    let json = serde_json::to_vec(&meta).unwrap_or_default();
    let mut body = Vec::with_capacity(json.len() + tarball.len() + 8);
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    body.extend_from_slice(&(tarball.len() as u32).to_le_bytes());
    body.extend_from_slice(tarball);
    body
}
