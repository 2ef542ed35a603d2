//! The cost of recording request metrics and traffic statistics, on index
//! hits and on crate downloads: the same files from two wharf servers in one
//! process, one recording every request's count, bytes and latency and
//! counting every download for the statistics (as `wharf serve` does, with
//! its writes to the database every 5 s), and one recording nothing.

use std::sync::Arc;

use wharf_config::{CacheRegistry, Config, Registry};
use wharf_server::AppState;
use wharf_test_support::{
    fixture::{CrateBuilder, sparse_path},
    upstream::FakeUpstream,
};

use crate::{Options, ROUNDS, warm, wrk, wrk_script_with};

/// Crates in the fixture, each with a few versions.
const CRATES: usize = 200;

/// Runs the comparison and prints one table.
pub fn metrics(
    options: &Options,
    upstream_rt: &tokio::runtime::Runtime,
    wharf_rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let fixtures: Vec<_> = (0..CRATES)
        .flat_map(|c| {
            (0..5).map(move |v| CrateBuilder::new(&format!("met-{c}"), &format!("1.0.{v}")).build())
        })
        .collect();
    let upstream = upstream_rt.block_on(FakeUpstream::start(fixtures));
    let dir = tempfile::tempdir()?;
    let paths: Vec<String> = (0..CRATES)
        .map(|c| format!("/crates-io/index/{}", sparse_path(&format!("met-{c}"))))
        .collect();
    let crate_paths: Vec<String> = (0..CRATES)
        .flat_map(|c| {
            (0..5).map(move |v| format!("/crates-io/crates/met-{c}/met-{c}-1.0.{v}.crate"))
        })
        .collect();
    let mut servers = Vec::new();
    let mut recorder = None;
    for recording in [true, false] {
        let config = Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.path().join(format!("data-{recording}")),
            registries: [(
                "crates-io".to_owned(),
                Registry::Cache(CacheRegistry {
                    upstreams: vec![upstream.index_url()],
                    // Warming fetches more files than one address may miss.
                    client_miss_burst: 0,
                    ..CacheRegistry::default()
                }),
            )]
            .into(),
            stats: wharf_config::Stats {
                enabled: recording,
                ..wharf_config::Stats::default()
            },
            ..Config::default()
        };
        let (addr, stop) = wharf_rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            let addr = listener.local_addr()?;
            let mut state =
                AppState::build(&config, &wharf_server::public_url(&config, addr)).await?;
            if !recording {
                state.requests = None;
            }
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let state = Arc::new(state);
            if recording {
                recorder = Some(state.stats.clone());
            }
            tokio::spawn(wharf_server::serve(listener, state, async move {
                let _ = rx.await;
            }));
            // Warm it: each file fetched once, so what follows are hits.
            warm(addr, paths.iter().chain(&crate_paths)).await?;
            anyhow::Ok((addr, tx))
        })?;
        servers.push((recording, addr, stop));
    }
    for (what, paths, headers) in [
        (
            "index hits",
            &paths,
            &[("Accept-Encoding", "deflate, gzip")][..],
        ),
        ("crate downloads", &crate_paths, &[][..]),
    ] {
        println!(
            "\nmetrics and statistics: {what} ({} files); wrk -t2 -c{} -d{}s, {} rounds, which goes first alternating, best of each",
            paths.len(),
            options.connections,
            options.duration_secs,
            ROUNDS * 2
        );
        println!("{:<40} {:>12} {:>10}", "", "req/s", "vs off");
        let script = wrk_script_with(dir.path(), what, paths, headers)?;
        let mut best = [0f64; 2];
        for round in 0..ROUNDS * 2 {
            // Which goes first swaps each round: a second run in a row is not
            // always as fast as the first on a busy machine.
            for i in [round % 2, 1 - round % 2] {
                let addr = servers[i].1;
                let load = wrk(options, &format!("http://{addr}"), &script)?;
                anyhow::ensure!(!load.errors, "some responses were not 2xx");
                best[i] = best[i].max(load.requests_per_sec);
            }
        }
        let [on, off] = best;
        println!("{:<40} {off:>12.0} {:>9.2}x", "both off", 1.0);
        println!(
            "{:<40} {on:>12.0} {:>9.2}x   (cost {:.1}%)",
            "metrics and statistics on (as served)",
            on / off,
            (1.0 - on / off) * 100.0
        );
    }
    if let Some(recorder) = recorder {
        counting_cost(&recorder);
    }
    Ok(())
}

/// What counting one download costs the request path, measured directly
/// (two threads counting at once, as two cores serving would), since a
/// difference of a few percent between two wrk runs drowns in a shared
/// machine's noise.
fn counting_cost(recorder: &wharf_server::StatsRecorder) {
    const PER_THREAD: u32 = 1_000_000;
    let names: Vec<String> = (0..CRATES).map(|c| format!("met-{c}")).collect();
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..2u8 {
            let names = &names;
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    let address = std::net::IpAddr::from([10, thread, (i % 200) as u8, 1]);
                    recorder.count_download(
                        "crates-io",
                        &names[i as usize % CRATES],
                        "1.0.0",
                        4096,
                        wharf_server::Downloader::Anonymous(Some(address)),
                    );
                }
            });
        }
    });
    let per_download_ns = started.elapsed().as_nanos() as f64 / f64::from(PER_THREAD);
    println!(
        "\nstatistics: counting one download takes {per_download_ns:.0} ns of a core, two threads at once ({:.2}% of a core at 10,000 downloads/s)",
        per_download_ns * 10_000.0 / 1e9 * 100.0
    );
}
