//! Issue 13: what an attacker found. Parallel password guesses, lockouts
//! that held the innocent, forwarding headers, and connections that never
//! closed; each against the real binary.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use base64::Engine;
use futures::future::join_all;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use wharf_test_support::{
    fixture::CrateBuilder,
    http::{RawResponse, parse_response},
    upstream::{FakeUpstream, Fault, Target},
};

use crate::access::{add_client, write_config};
use crate::common::WharfProcess;
use crate::hosted::create_token;

/// Failed attempts a (address, user) pair gets before it is locked out.
const FAILURE_BURST: usize = 10;

/// Password checks one address may have in flight.
const CHECKS_PER_ADDRESS: usize = 2;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn client_from(addr: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// GETs `url` with `authorization` (and `extra` headers) from `client`; the status.
async fn status_of(
    client: &reqwest::Client,
    url: &str,
    authorization: &str,
    extra: &[(&str, &str)],
) -> u16 {
    let mut request = client.get(url).header("Authorization", authorization);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request
        .send()
        .await
        .expect("request to wharf")
        .status()
        .as_u16()
}

/// An auth-required cache of one crate, and its config file.
async fn auth_required_cache(dir: &Path, extra_config: &str) -> (FakeUpstream, std::path::PathBuf) {
    let upstream = FakeUpstream::start([CrateBuilder::new("good", "1.0.0").build()]).await;
    let config = write_config(
        dir,
        &format!(
            "{extra_config}\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\nauth_required = true\n",
            upstream.index_url()
        ),
    );
    (upstream, config)
}

/// A number from `/proc/PID/status` (`VmRSS`, `VmHWM`), in MiB.
fn proc_status_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    kib / 1024
}

/// Regression for parallel guesses skipping the lockout and exhausting
/// memory: the lockout was checked before argon2 ran and a failure counted
/// after, so 64 guesses at once were all checked, and 200 at once took the
/// server to 1.5 GB. Now each guess is counted before it is checked, one
/// address has two checks in flight, the process a few, in memory reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_are_counted_before_they_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, config) = auth_required_cache(dir.path(), "").await;
    add_client(&config, &["acme", "--registry", "crates-io", "--password"]);
    let server = WharfProcess::spawn(&config);
    let url = format!("{}/crates-io/index/config.json", server.base_url);
    for (addr, at_once) in [("127.0.0.1", 64), ("127.0.0.2", 200)] {
        let attacker = client_from(addr);
        let statuses = join_all((0..at_once).map(|i| {
            let (attacker, url) = (&attacker, &url);
            async move {
                // Guesses of their own per address: a header seen
                // before is answered from memory, not checked.
                let guess = format!("{addr}-guess-{i}");
                status_of(attacker, url, &basic("acme", &guess), &[]).await
            }
        }))
        .await;
        let checked = statuses.iter().filter(|s| **s == 403).count();
        let refused = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!(checked + refused, at_once, "{addr}: {statuses:?}");
        assert!(
            checked <= FAILURE_BURST + CHECKS_PER_ADDRESS,
            "{addr}: {checked} of {at_once} parallel wrong passwords were checked"
        );
    }
    // A crowd: 200 guesses at once from 50 addresses. Each address may
    // have two checks in flight; the process runs a few, so memory stays
    // bounded however many wait.
    let crowd: Vec<_> = (1..=50)
        .map(|i| client_from(&format!("127.0.1.{i}")))
        .collect();
    let statuses = join_all((0..200).map(|i| {
        let (client, url) = (&crowd[i % crowd.len()], &url);
        async move { status_of(client, url, &basic("acme", &format!("crowd-{i}")), &[]).await }
    }))
    .await;
    assert!(
        statuses.iter().all(|s| matches!(s, 403 | 429)),
        "{statuses:?}"
    );
    assert!(statuses.iter().filter(|s| **s == 403).count() >= 50);
    let pid = server.child.id();
    let peak = proc_status_mib(pid, "VmHWM");
    eprintln!("server memory peak after 464 parallel wrong passwords: {peak} MiB");
    assert!(peak < 200, "the server's memory peaked at {peak} MiB");
    // And it comes back: what is resident now is no more than the peak
    // allows, and the right password still works from a fresh address.
    let right = add_client_token(&config, "late");
    assert_eq!(
        status_of(&client_from("127.0.0.9"), &url, &right, &[]).await,
        200
    );
    let resident = proc_status_mib(pid, "VmRSS");
    eprintln!("server memory resident afterwards: {resident} MiB");
    assert!(resident < 200, "{resident} MiB resident after the guesses");
}

/// `wharf clients add NAME` (a token client) on the cache.
fn add_client_token(config: &Path, name: &str) -> String {
    add_client(config, &[name, "--registry", "crates-io"])
}

/// Regression for lockouts that held the innocent: after failures from one
/// address, every valid token and password from it got 429, so one broken
/// CI job behind an office NAT locked out the office. Now a lockout holds
/// one user name from one address; tokens, which cannot be guessed, lock
/// nobody out; and the same wrong header sent again is not another guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_holds_one_user_name_from_one_address() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, config) = auth_required_cache(dir.path(), "").await;
    let acme = add_client(&config, &["acme", "--registry", "crates-io", "--password"]);
    let alice = add_client(&config, &["alice", "--registry", "crates-io", "--password"]);
    let token = add_client_token(&config, "ci");
    let server = WharfProcess::spawn(&config);
    let url = format!("{}/crates-io/index/go/od/good", server.base_url);
    let office = client_from("127.0.0.1");

    // Somebody behind the office's address guesses acme's password.
    let mut statuses = Vec::new();
    for i in 0..30 {
        statuses.push(status_of(&office, &url, &basic("acme", &format!("guess-{i}")), &[]).await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        FAILURE_BURST,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429));
    assert_eq!(
        status_of(&office, &url, &acme, &[]).await,
        429,
        "acme from the office"
    );
    // Everybody else in the office goes on working.
    assert_eq!(
        status_of(&office, &url, &alice, &[]).await,
        200,
        "alice from the office"
    );
    // A scan of made-up tokens locks nobody out, and a real token works.
    for i in 0..30 {
        let made_up = format!("wharf_{i:064x}");
        assert_eq!(status_of(&office, &url, &made_up, &[]).await, 403);
    }
    assert_eq!(
        status_of(&office, &url, &token, &[]).await,
        200,
        "a token from the office"
    );
    // A job retrying one stale password is refused, never locked out.
    let stale = basic("alice", "last-years-password");
    let ci_box = client_from("127.0.0.3");
    for _ in 0..30 {
        assert_eq!(status_of(&ci_box, &url, &stale, &[]).await, 403);
    }
    assert_eq!(status_of(&ci_box, &url, &alice, &[]).await, 200);
    // And acme from another address is not held either.
    assert_eq!(
        status_of(&client_from("127.0.0.4"), &url, &acme, &[]).await,
        200
    );
}

/// `Forwarded` and `X-Forwarded-For` name the client only when the peer is
/// a trusted proxy; from anyone else they are ignored, so they cannot be
/// used to escape a lockout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let (_upstream, config) =
        auth_required_cache(dir.path(), "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let acme = add_client(&config, &["acme", "--registry", "crates-io", "--password"]);
    let server = WharfProcess::spawn(&config);
    let url = format!("{}/crates-io/index/go/od/good", server.base_url);
    let proxy = client_from("127.0.0.1");
    let from = |client: &'static str| [("X-Forwarded-For", client)];

    for i in 0..=FAILURE_BURST {
        status_of(
            &proxy,
            &url,
            &basic("acme", &format!("guess-{i}")),
            &from("198.51.100.1"),
        )
        .await;
    }
    assert_eq!(
        status_of(&proxy, &url, &acme, &from("198.51.100.1")).await,
        429
    );
    let forwarded = [("Forwarded", "for=198.51.100.1;proto=https")];
    assert_eq!(status_of(&proxy, &url, &acme, &forwarded).await, 429);
    // A client may write anything left of what the proxy appends.
    let appended = [("X-Forwarded-For", "198.51.100.2, 198.51.100.1")];
    assert_eq!(status_of(&proxy, &url, &acme, &appended).await, 429);
    // Another client through the same proxy is not held.
    assert_eq!(
        status_of(&proxy, &url, &acme, &from("198.51.100.2")).await,
        200
    );

    // Not a trusted proxy: its header is ignored, whatever it says.
    let direct = client_from("127.0.0.2");
    assert_eq!(
        status_of(&direct, &url, &acme, &from("198.51.100.1")).await,
        200
    );
    let mut last = 0;
    for i in 0..=FAILURE_BURST {
        let pretends = format!("203.0.113.{i}");
        last = status_of(
            &direct,
            &url,
            &basic("acme", &format!("rotating-{i}")),
            &[("X-Forwarded-For", pretends.as_str())],
        )
        .await;
    }
    assert_eq!(last, 429, "rotating X-Forwarded-For escaped the lockout");
}

/// Opens `n` connections to `addr`, a hundred at a time.
async fn open_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(100) {
        let opened = join_all(batch.iter().map(|_| TcpStream::connect(addr))).await;
        streams.extend(opened.into_iter().map(|s| s.expect("connect to wharf")));
    }
    streams
}

/// Waits until the server closes `stream` (EOF or reset); how long it took,
/// or `None` if it was still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + within),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            // A response (a timeout answer) before the close.
            Ok(Ok(_)) => continue,
        }
    }
}

/// GET /healthz on a new connection; how long the answer took.
async fn time_healthz(base_url: &str) -> Duration {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let response = client
        .get(format!("{base_url}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(response.status(), 200);
    started.elapsed()
}

/// Regression for connections that never closed: idle connections, a
/// partial request line, partial headers and a partial publish body all
/// stayed open past 190 s, and about 20,000 idle ones stopped `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_in_time() {
    rlimit::increase_nofile_limit(u64::MAX).expect("raise the test's file limit");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[connections]\nidle_timeout = \"2s\"\nbody_timeout = \"2s\"\n\n[registries.private]\nkind = \"hosted\"\n",
    );
    let token = create_token(&config, "alice");
    let server = WharfProcess::spawn(&config);
    let addr = server.base_url.trim_start_matches("http://").to_owned();

    // 5,000 idle connections: /healthz still answers at once.
    let mut idle = open_connections(&addr, 5_000).await;
    let mut timings = Vec::new();
    for _ in 0..5 {
        timings.push(time_healthz(&server.base_url).await);
    }
    timings.sort();
    assert!(
        timings[2] < Duration::from_millis(100),
        "/healthz took {timings:?} beside 5,000 idle connections"
    );

    // The slow ones: a partial request line, partial headers, a partial body.
    let mut line = TcpStream::connect(&addr).await.unwrap();
    line.write_all(b"GET /heal").await.unwrap();
    let mut head = TcpStream::connect(&addr).await.unwrap();
    head.write_all(b"GET /healthz HTTP/1.1\r\nHost: wharf\r\nX-Slow: ")
        .await
        .unwrap();
    let mut body = TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        format!(
            "PUT /private/api/v1/crates/new HTTP/1.1\r\nHost: wharf\r\nAuthorization: {token}\r\nContent-Length: 100000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    body.write_all(&[0u8; 1000]).await.unwrap();

    // Every one of them is closed after its timeout, not before (watched
    // at once, so that each close is seen when it happens).
    let within = Duration::from_secs(10);
    let closes = join_all(
        [&mut line, &mut head, &mut body]
            .into_iter()
            .map(|stream| closed_within(stream, within)),
    )
    .await;
    for (what, took) in ["request line", "headers", "body"].iter().zip(closes) {
        let took =
            took.unwrap_or_else(|| panic!("a partial {what} was still open after {within:?}"));
        assert!(
            took >= Duration::from_millis(1500),
            "a partial {what} was closed after {took:?}"
        );
    }
    let mut still_open = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_secs(3))
            .await
            .is_none()
        {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "idle connections left open past the timeout");
    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let timed_out: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_connections_timed_out_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(timed_out >= 5_000, "{metrics}");
}

/// Reads one response with a `Content-Length` from a connection that stays
/// open; the response and when its head came, counted from `since`.
async fn read_response(stream: &mut TcpStream, since: Instant) -> (RawResponse, Duration) {
    let mut received = Vec::new();
    let mut head_at = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read the response");
        assert!(n > 0, "closed before a whole response: {received:?}");
        head_at.get_or_insert_with(|| since.elapsed());
        received.extend_from_slice(&buf[..n]);
        let response = parse_response(&received);
        let length = response
            .header("content-length")
            .map(|v| v.parse::<usize>().unwrap());
        if length.is_some_and(|length| response.body.len() >= length) {
            return (response, head_at.expect("read once"));
        }
    }
}

/// A request whose answer takes longer than the idle timeout still gets it
/// (the wait for a request head is timed, not the work on one), and the
/// keep-alive connection it leaves is closed once it has sat idle as long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_answer_is_not_an_idle_connection() {
    let upstream = FakeUpstream::start([CrateBuilder::new("slowpoke", "1.0.0").build()]).await;
    // The index file comes from the upstream in ten pieces over about 3.5 s,
    // and wharf writes nothing to its client until it has them all.
    let length = upstream.index_file("slowpoke").expect("published").len();
    upstream.set_fault(
        Target::Index,
        Fault::SlowDrip {
            chunk: length / 10 + 1,
            delay: Duration::from_millis(350),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[connections]\nidle_timeout = \"2s\"\n\n[registries.crates-io]\nkind = \"cache\"\nupstreams = [\"{}\"]\n",
            upstream.index_url()
        ),
    );
    let server = WharfProcess::spawn(&config);
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let asked = Instant::now();
    stream
        .write_all(b"GET /crates-io/index/sl/ow/slowpoke HTTP/1.1\r\nHost: wharf\r\n\r\n")
        .await
        .unwrap();
    let (response, took) = read_response(&mut stream, asked).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.text().contains("\"slowpoke\""),
        "{}",
        response.text()
    );
    assert!(
        took >= Duration::from_millis(2500),
        "the answer began after {took:?}, within the idle timeout: this test needs a slower one"
    );
    let idle = closed_within(&mut stream, Duration::from_secs(6))
        .await
        .expect("the idle keep-alive connection was closed");
    assert!(
        idle >= Duration::from_millis(1500),
        "an idle keep-alive connection was closed after {idle:?}"
    );
}

/// Past `[connections] max`, a connection is accepted and closed at once
/// (and counted); once the others go, the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[connections]\nmax = 20\nidle_timeout = \"2s\"\n\n[registries.crates-io]\nkind = \"cache\"\n",
    );
    let server = WharfProcess::spawn(&config);
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let mut held = open_connections(&addr, 20).await;
    // Let the server accept them all before the ones over the cap come.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = open_connections(&addr, 5).await;
    for stream in &mut over {
        let took = closed_within(stream, Duration::from_secs(1))
            .await
            .expect("a connection over the cap is closed at once");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(5))
                .await
                .is_some()
        );
    }
    drop(held);
    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .expect("the server answers once the held connections are gone")
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wharf_connections_refused_total 5"),
        "{metrics}"
    );
}

/// Regression for compressing a file on every revalidation: each content is
/// compressed once per encoding, however many requests ask for it and
/// however often the file is revalidated (the upstream answers the same
/// bytes), counted by `wharf_index_compressions_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_content_is_compressed_once_per_encoding() {
    let versions: Vec<_> = (0..200)
        .map(|v| CrateBuilder::new("big", &format!("1.0.{v}")).build())
        .collect();
    let upstream = FakeUpstream::start(versions).await;
    let wharf = crate::common::Wharf::start(wharf_config::CacheRegistry {
        index_ttl: Duration::from_millis(300),
        ..crate::common::cache(&[upstream.index_url()])
    })
    .await;
    let url = wharf.url("/crates-io/index/3/b/big");
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    for round in 0..3 {
        let answers = join_all((0..20).map(|i| {
            let encoding = if i % 2 == 0 { "gzip" } else { "zstd" };
            let request = client.get(&url).header("Accept-Encoding", encoding);
            async move {
                let response = request.send().await.unwrap();
                let sent = response.headers()["content-encoding"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                (encoding, sent)
            }
        }))
        .await;
        for (asked, sent) in answers {
            assert_eq!(asked, sent, "round {round}");
        }
        // Past index_ttl: the next round revalidates the same bytes.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(upstream.requests().len() >= 3, "the file was revalidated");
    let metrics = wharf.get_text("/metrics").await;
    let compressions: u64 = crate::common::sample(&metrics, "wharf_index_compressions_total")
        .expect("the counter is exported")
        .parse()
        .unwrap();
    assert_eq!(compressions, 2, "one gzip and one zstd form of one content");
    wharf.stop().await;
}
