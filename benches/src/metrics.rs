//! The cost of recording request metrics and traffic statistics, on index
//! hits and on crate downloads: the same files from two wharf servers in one
//! process, one recording every request's count, bytes and latency and
//! counting every download for the statistics (as `wharf serve` does, with
//! its writes to the database every 5 s), and one recording nothing; then
//! what recording, counting and flushing cost, measured directly.

use std::sync::Arc;

use wharf_config::{CacheRegistry, Config, Registry};
use wharf_server::AppState;
use wharf_test_support::{
    fixture::{CrateBuilder, sparse_path},
    upstream::FakeUpstream,
};

use anyhow::Context;

use crate::{Options, ROUNDS, median, runtime, warm, wrk, wrk_script_with};

/// Crates in the fixture, each with a few versions.
const CRATES: usize = 200;

/// Rounds of the comparison, each on two servers built anew: many more than
/// the other phases' [`ROUNDS`], and shorter, as the difference sought is a
/// percent or two and single rounds differ by up to 10% either way (the
/// median of 9 rounds of 10 s moved from 0% to 4% between two runs of the
/// same code; the median's spread falls with the square root of the rounds).
const ROUNDS_HERE: usize = ROUNDS * 10;

/// The length of each round's load, in seconds.
const ROUND_SECS: u64 = 3;

/// Runs the comparison and prints one table.
pub fn metrics(options: &Options, upstream_rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
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
    let phases = [
        (
            "index hits",
            &paths,
            wrk_script_with(
                dir.path(),
                "index hits",
                &paths,
                &[("Accept-Encoding", "deflate, gzip")],
            )?,
        ),
        (
            "crate downloads",
            &crate_paths,
            wrk_script_with(dir.path(), "crate downloads", &crate_paths, &[])?,
        ),
    ];
    // Each phase's req/s and CPU time per request of each round, recording
    // on and off.
    let mut loads: [Vec<[f64; 2]>; 2] = Default::default();
    let mut cpu: [Vec<[f64; 2]>; 2] = Default::default();
    // Each server runs on a runtime of its own, so that the CPU time its
    // threads took can be read per server.
    let runtimes = [runtime(THREADS[0], 2)?, runtime(THREADS[1], 2)?];
    let mut recording_state = None;
    let options = &Options {
        duration_secs: ROUND_SECS,
        ..options.clone()
    };
    for round in 0..ROUNDS_HERE {
        // Both servers are built anew each round, and which is built and
        // loaded first swaps: a server started first in a process, or
        // loaded first in a round, is not always as fast as the second, and
        // that difference is as large as the cost measured here.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        // Which runtime serves the recording server swaps too, every other
        // round, so that neither order nor runtime favours one side.
        let runtime_of = |recording: bool| usize::from(recording == (round / 2 % 2 == 0));
        let mut servers = Vec::new();
        for recording in order {
            let data_dir = dir.path().join(format!("data-{round}-{recording}"));
            let rt = &runtimes[runtime_of(recording)];
            let server = rt.block_on(start(&upstream, data_dir, recording))?;
            rt.block_on(warm(server.addr, paths.iter().chain(&crate_paths)))?;
            servers.push((recording, server));
        }
        for (phase, (_, _, script)) in phases.iter().enumerate() {
            let mut pair = [0f64; 2];
            let mut cpu_pair = [0f64; 2];
            for (recording, server) in &servers {
                let threads = THREADS[runtime_of(*recording)];
                let before = thread_cpu_ns(threads)?;
                let load = wrk(options, &format!("http://{}", server.addr), script)?;
                let used = thread_cpu_ns(threads)? - before;
                anyhow::ensure!(!load.errors, "some responses were not 2xx");
                pair[usize::from(!recording)] = load.requests_per_sec;
                cpu_pair[usize::from(!recording)] = used as f64 / load.requests.max(1) as f64;
            }
            loads[phase].push(pair);
            cpu[phase].push(cpu_pair);
        }
        for (recording, server) in servers {
            let _ = server.stop.send(());
            if recording {
                recording_state = Some(server.state);
            }
        }
    }
    for (((what, paths, _), loads), cpu) in phases.iter().zip(loads).zip(cpu) {
        println!(
            "\nmetrics and statistics: {what} ({} files); wrk -t2 -c{} -d{}s, {ROUNDS_HERE} rounds on servers built anew, which is built and loaded first and which runtime serves which alternating",
            paths.len(),
            options.connections,
            options.duration_secs,
        );
        println!("{:<40} {:>12} {:>10}", "", "best req/s", "vs off");
        let best = |i: usize| loads.iter().map(|pair| pair[i]).fold(0f64, f64::max);
        let (on, off) = (best(0), best(1));
        println!("{:<40} {off:>12.0} {:>9.2}x", "both off", 1.0);
        println!(
            "{:<40} {on:>12.0} {:>9.2}x",
            "metrics and statistics on (as served)",
            on / off
        );
        // Each round's ratio is of two runs a few seconds apart, so a
        // machine that slows down for a while moves both; their median is
        // steadier than a ratio of bests.
        let ratios: Vec<f64> = loads.iter().map(|[on, off]| on / off).collect();
        let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = ratios.iter().copied().fold(0f64, f64::max);
        println!(
            "cost: {:.1}% (median of the rounds' on/off ratios; they ranged {lowest:.2}x to {highest:.2}x)",
            (1.0 - median(ratios)) * 100.0,
        );
        // The steadier measure: the CPU time the server's threads took per
        // request answered, median of the rounds.
        let per_request = |i: usize| median(cpu.iter().map(|pair| pair[i]).collect());
        let (on, off) = (per_request(0), per_request(1));
        println!(
            "cost in CPU time: {:.1}% ({:.2} us of the server's threads per request on, {:.2} us off; medians of the rounds)",
            (on / off - 1.0) * 100.0,
            on / 1e3,
            off / 1e3
        );
    }
    let state = recording_state.context("no round ran")?;
    if let Some(requests) = &state.requests {
        recording_cost(requests, &crate_paths);
    }
    counting_cost(&state.stats);
    runtimes[0].block_on(flushing_cost(&state.stats));
    Ok(())
}

/// The names of the threads of the two servers' runtimes.
const THREADS: [&str; 2] = ["wharf-a", "wharf-b"];

/// The CPU time, in nanoseconds, that this process's threads named `name`
/// have run (Linux's per-thread schedstat).
fn thread_cpu_ns(name: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").context("cannot read /proc/self/task")? {
        let task = task?.path();
        // A thread may end between the listing and the reading.
        let (Ok(comm), Ok(schedstat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("schedstat")),
        ) else {
            continue;
        };
        if comm.trim_end() == name {
            total += schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .context("unreadable schedstat")?;
        }
    }
    Ok(total)
}

/// A wharf server on loopback, caching `upstream`.
struct Server {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    state: Arc<AppState>,
}

/// Starts a server that records metrics and statistics, or neither.
async fn start(
    upstream: &FakeUpstream,
    data_dir: std::path::PathBuf,
    recording: bool,
) -> anyhow::Result<Server> {
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir,
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
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let mut state = AppState::build(&config, &wharf_server::public_url(&config, addr)).await?;
    if !recording {
        state.requests = None;
    }
    let state = Arc::new(state);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(wharf_server::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(Server { addr, stop, state })
}

/// What recording one answered request costs the request path (its count,
/// bytes and latency), measured directly as [`counting_cost`] is.
fn recording_cost(requests: &wharf_server::RequestMetrics, paths: &[String]) {
    const PER_THREAD: u32 = 1_000_000;
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    let path = &paths[i as usize % paths.len()];
                    let elapsed = std::time::Duration::from_micros(u64::from(i % 300));
                    requests.record(path, 200, 4096, elapsed);
                }
            });
        }
    });
    let per_request_ns = started.elapsed().as_nanos() as f64 / f64::from(PER_THREAD);
    println!(
        "\nmetrics: recording one request takes {per_request_ns:.0} ns of a core, two threads at once ({:.2}% of a core at 100,000 requests/s)",
        per_request_ns * 100_000.0 / 1e9 * 100.0
    );
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

/// What writing a flush of downloads of many versions costs, every
/// `flush_interval` (5 s by default): the fixture's every version counted
/// once from each of 100 addresses, then written in one flush.
async fn flushing_cost(recorder: &wharf_server::StatsRecorder) {
    for c in 0..CRATES {
        let name = format!("met-{c}");
        for v in 0..5 {
            for a in 0..100u8 {
                let address = std::net::IpAddr::from([10, 1, a, 1]);
                let who = wharf_server::Downloader::Anonymous(Some(address));
                recorder.count_download("crates-io", &name, &format!("1.0.{v}"), 4096, who);
            }
        }
    }
    let started = std::time::Instant::now();
    recorder.flush(None).await;
    println!(
        "statistics: a flush of {} versions and 100 clients takes {:.1} ms (every 5 s by default)",
        CRATES * 5,
        started.elapsed().as_secs_f64() * 1000.0
    );
}
