use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::*;
use crate::fixture::CrateBuilder;
use crate::http::{RawResponse, parse_response, raw_request, raw_response};

async fn get(fake: &FakeUpstream, target: &str, headers: &str) -> RawResponse {
    let request = format!("GET {target} HTTP/1.1\r\n{headers}");
    raw_response(fake.addr(), &request)
        .await
        .expect("request to the fake upstream")
}

/// Fills the `dl` template the way cargo does.
fn fill(template: &str, krate: &FixtureCrate) -> String {
    let prefix = prefix(&krate.name);
    template
        .replace("{crate}", &krate.name)
        .replace("{version}", &krate.vers)
        .replace("{prefix}", &prefix)
        .replace("{lowerprefix}", &prefix.to_lowercase())
        .replace("{sha256-checksum}", &krate.cksum)
}

async fn dl_template(fake: &FakeUpstream) -> String {
    let config = get(fake, "/index/config.json", "").await;
    assert_eq!(config.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&config.body).expect("config json");
    let dl = json["dl"].as_str().expect("dl is a string").to_owned();
    for marker in [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ] {
        assert!(dl.contains(marker), "{dl} lacks {marker}");
    }
    dl
}

fn dl_target(fake: &FakeUpstream, template: &str, krate: &FixtureCrate) -> String {
    fill(template, krate)
        .strip_prefix(&fake.url())
        .expect("dl points at the fake upstream")
        .to_owned()
}

#[tokio::test]
async fn serves_index_conditionally_and_crates_via_dl_template() {
    let krate = CrateBuilder::new("MyCrate", "1.0.0").build();
    let fake = FakeUpstream::start([krate.clone()]).await;

    let template = dl_template(&fake).await;
    let target = dl_target(&fake, &template, &krate);
    assert_eq!(target, krate.dl_path());
    let download = get(&fake, &target, "").await;
    assert_eq!(download.status, 200, "{}", download.text());
    assert_eq!(download.body, krate.bytes);
    assert_eq!(download.header("content-type"), Some("application/gzip"));
    let length = krate.bytes.len().to_string();
    assert_eq!(download.header("content-length"), Some(length.as_str()));

    let index = get(&fake, "/index/my/cr/mycrate", "").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.body, format!("{}\n", krate.index_line()).into_bytes());
    let etag = index.header("etag").expect("etag").to_owned();
    let last_modified = index
        .header("last-modified")
        .expect("last-modified")
        .to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));

    let by_etag = get(
        &fake,
        "/index/my/cr/mycrate",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(by_etag.status, 304);
    assert!(by_etag.body.is_empty());
    let by_date = get(
        &fake,
        "/index/my/cr/mycrate",
        &format!("If-Modified-Since: {last_modified}\r\n"),
    )
    .await;
    assert_eq!(by_date.status, 304);
    let stale = get(
        &fake,
        "/index/my/cr/mycrate",
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
    )
    .await;
    assert_eq!(stale.status, 200);

    let head = raw_response(fake.addr(), "HEAD /index/my/cr/mycrate HTTP/1.1")
        .await
        .expect("head");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    assert_eq!(get(&fake, "/index/no/ne/nonexistent", "").await.status, 404);
    assert_eq!(get(&fake, "/index/My/Cr/MyCrate", "").await.status, 404);
    let other = krate.clone();
    let unknown = FixtureCrate {
        vers: "9.9.9".to_owned(),
        ..other
    };
    assert_eq!(get(&fake, &unknown.dl_path(), "").await.status, 404);

    let log = fake.requests();
    assert_eq!(log[0].kind, RequestKind::Config);
    assert_eq!(log[1].kind, RequestKind::Crate);
    assert_eq!(log[1].path, "/dl/my/cr/MyCrate/MyCrate-1.0.0.crate");
    assert_eq!(
        log[1].query.as_deref(),
        Some(format!("sum={}&p=My/Cr", krate.cksum).as_str())
    );
    assert_eq!(log[3].if_none_match.as_deref(), Some(etag.as_str()));
    assert_eq!(log[3].status, 304);
    assert_eq!(
        log[4].if_modified_since.as_deref(),
        Some(last_modified.as_str())
    );
    assert_eq!(fake.count(RequestKind::Index), 7);
    fake.clear_log();
    assert!(fake.requests().is_empty());

    // Publishing changes both validators.
    fake.publish(CrateBuilder::new("MyCrate", "1.1.0").build());
    let after = get(
        &fake,
        "/index/my/cr/mycrate",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(after.status, 200);
    assert_ne!(after.header("etag"), Some(etag.as_str()));
    assert_ne!(after.header("last-modified"), Some(last_modified.as_str()));
    assert_eq!(String::from_utf8_lossy(&after.body).lines().count(), 2);
    let since = get(
        &fake,
        "/index/my/cr/mycrate",
        &format!("If-Modified-Since: {last_modified}\r\n"),
    )
    .await;
    assert_eq!(since.status, 200);

    fake.yank("MyCrate", "1.0.0", true);
    let yanked = fake.index_file("mycrate").expect("index file");
    assert!(
        yanked
            .lines()
            .next()
            .expect("first line")
            .ends_with(r#""yanked":true}"#)
    );
}

#[tokio::test]
async fn dl_rejects_wrongly_filled_markers() {
    let krate = CrateBuilder::new("serde", "1.0.0").build();
    let fake = FakeUpstream::start([krate.clone()]).await;
    let good = format!(
        "/dl/se/rd/serde/serde-1.0.0.crate?sum={}&p=se/rd",
        krate.cksum
    );
    assert_eq!(get(&fake, &good, "").await.status, 200);
    let encoded = format!(
        "/dl/se/rd/serde/serde-1.0.0.crate?sum={}&p=se%2Frd",
        krate.cksum
    );
    assert_eq!(get(&fake, &encoded, "").await.status, 200);
    let bad = [
        format!(
            "/dl/se/rd/serde/serde-1.0.0.crate?sum={}&p=serd",
            krate.cksum
        ),
        format!(
            "/dl/s/e/serde/serde-1.0.0.crate?sum={}&p=se/rd",
            krate.cksum
        ),
        format!("/dl/se/rd/serde/serde-1.0.0.crate?sum={}", krate.cksum),
        "/dl/se/rd/serde/serde-1.0.0.crate?sum=00&p=se/rd".to_owned(),
        format!(
            "/dl/se/rd/serde/serde-1.0.0.tgz?sum={}&p=se/rd",
            krate.cksum
        ),
    ];
    for target in bad {
        let response = get(&fake, &target, "").await;
        assert_eq!(response.status, 400, "{target}: {}", response.text());
    }
}

#[tokio::test]
async fn faults_damage_responses() {
    let krate = CrateBuilder::new("faulty", "1.0.0").build();
    let fake = FakeUpstream::start([krate.clone()]).await;
    let index_path = "/index/fa/ul/faulty";
    let full_len = krate.bytes.len();

    fake.set_fault(Target::Crates, Fault::WrongBytes);
    let wrong = get(&fake, &krate.dl_path(), "").await;
    assert_eq!(wrong.status, 200);
    assert_eq!(wrong.body.len(), full_len);
    assert_ne!(wrong.body, krate.bytes);
    let wrong_index = get(&fake, index_path, "").await;
    assert_eq!(
        wrong_index.body,
        format!("{}\n", krate.index_line()).into_bytes()
    );
    fake.clear_faults();

    fake.set_fault(Target::Index, Fault::WrongBytes);
    let altered = get(&fake, index_path, "").await;
    let line: serde_json::Value = serde_json::from_slice(&altered.body).expect("still json");
    assert_ne!(line["cksum"].as_str(), Some(krate.cksum.as_str()));
    fake.clear_faults();

    fake.set_fault(Target::Path(index_path.to_owned()), Fault::Status(503));
    fake.set_fault(Target::All, Fault::Status(500));
    assert_eq!(get(&fake, index_path, "").await.status, 503);
    assert_eq!(get(&fake, &krate.dl_path(), "").await.status, 500);
    let log = fake.requests();
    assert_eq!(log[log.len() - 2].status, 503);
    fake.clear_faults();

    fake.set_fault(Target::Crates, Fault::Truncate);
    let truncated = get(&fake, &krate.dl_path(), "").await;
    assert_eq!(truncated.status, 200);
    let announced = full_len.to_string();
    assert_eq!(truncated.header("content-length"), Some(announced.as_str()));
    assert_eq!(truncated.body, krate.bytes[..full_len / 2]);
    fake.clear_faults();

    fake.set_fault(Target::Crates, Fault::Reset);
    let reset = get(&fake, &krate.dl_path(), "").await;
    assert_eq!(reset.status, 200);
    assert_eq!(reset.header("content-length"), Some(announced.as_str()));
    assert!(reset.body.is_empty());
    fake.clear_faults();

    let delay = Duration::from_millis(20);
    fake.set_fault(Target::Crates, Fault::SlowDrip { chunk: 64, delay });
    let started = Instant::now();
    let slow = get(&fake, &krate.dl_path(), "").await;
    assert_eq!(slow.body, krate.bytes);
    let pauses = u32::try_from(full_len.div_ceil(64) - 1).expect("small");
    assert!(started.elapsed() >= delay * pauses);
    fake.clear_faults();

    fake.set_fault(Target::Config, Fault::Blackhole);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        get(&fake, "/index/config.json", ""),
    )
    .await;
    assert!(hung.is_err(), "a blackholed request must not be answered");
    let last = fake.requests().pop().expect("logged");
    assert_eq!((last.kind, last.status), (RequestKind::Config, 0));
    fake.clear_faults();
    assert_eq!(get(&fake, "/index/config.json", "").await.status, 200);
}

/// Sends one keep-alive request on `stream` and reads exactly one response.
async fn keep_alive_get(stream: &mut TcpStream, target: &str) -> RawResponse {
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed early");
        received.extend_from_slice(&buf[..n]);
        let response = parse_response(&received);
        if let Some(len) = response.header("content-length")
            && response.body.len() >= len.parse::<usize>().expect("length")
        {
            return response;
        }
    }
}

#[tokio::test]
async fn stop_drops_idle_connections_and_restart_reuses_the_port() {
    let krate = CrateBuilder::new("abc", "0.1.0").build();
    let fake = FakeUpstream::start([krate]).await;
    let addr = fake.addr();

    let mut idle = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(
        keep_alive_get(&mut idle, "/index/3/a/abc").await.status,
        200
    );

    fake.stop().await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection must be closed, not left hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener must be closed");
    fake.stop().await;

    fake.restart().await;
    assert_eq!(fake.addr(), addr);
    let (status, text) = raw_request(addr, "GET /index/3/a/abc HTTP/1.1").await;
    assert_eq!(status, 200, "{text}");
    fake.restart().await;
    assert!(fake.connections() >= 2);
}

#[tokio::test]
async fn stop_drops_blackholed_requests() {
    let fake = FakeUpstream::start([]).await;
    fake.set_fault(Target::All, Fault::Blackhole);
    let pending = tokio::spawn({
        let addr = fake.addr();
        async move { raw_response(addr, "GET /index/config.json HTTP/1.1").await }
    });
    while fake.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fake.stop().await;
    let response = pending.await.expect("task");
    assert!(
        matches!(&response, Ok(r) if r.status == 0) || response.is_err(),
        "{response:?}"
    );
}

#[tokio::test]
async fn blackhole_counts_connections_and_never_answers() {
    let hole = Blackhole::start().await;
    assert!(hole.index_url().starts_with("sparse+http://127.0.0.1:"));
    assert!(hole.index_url().ends_with("/index/"));
    let mut first = TcpStream::connect(hole.addr()).await.expect("connect");
    let _second = TcpStream::connect(hole.addr()).await.expect("connect");
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while hole.connections() < 2 {
        assert!(Instant::now() < deadline, "connections were not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut buf = [0u8; 16];
    let answer = tokio::time::timeout(Duration::from_millis(200), first.read(&mut buf)).await;
    assert!(answer.is_err(), "the blackhole answered: {answer:?}");
    assert_eq!(hole.connections(), 2);
}
