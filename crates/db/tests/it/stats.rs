//! Traffic statistics: batches add up, days and the ranking read them back,
//! addresses are stored only as hashes under the day's key, and pruning
//! deletes old days and the keys of days that are over.

use std::net::IpAddr;

use wharf_db::{ClientId, DayCounts, VersionCount};

use crate::support::{REGISTRY, TestDb};

on_both_backends!(
    batches_add_up_per_day_and_crate,
    a_batch_larger_than_one_statement_with_repeated_keys_adds_up,
    pruning_deletes_old_days_and_past_keys,
);

fn counts(day: &str, downloads: &[(&str, &str, u64)], clients: &[ClientId]) -> DayCounts {
    DayCounts {
        day: day.to_owned(),
        requests: 10,
        request_bytes: 1000,
        downloads: downloads
            .iter()
            .map(|&(krate, vers, n)| VersionCount {
                krate: krate.to_owned(),
                vers: vers.to_owned(),
                downloads: n,
                bytes: n * 100,
            })
            .collect(),
        clients: clients.to_vec(),
    }
}

fn addr(text: &str) -> ClientId {
    ClientId::Address(text.parse::<IpAddr>().unwrap())
}

async fn batches_add_up_per_day_and_crate(db: TestDb) {
    let stats = db.stats(REGISTRY);
    // Two instances' flushes of one day, and the next day.
    stats
        .record(&counts(
            "2026-11-29",
            &[("a", "1.0.0", 2), ("b", "1.0.0", 1)],
            &[addr("192.0.2.1"), ClientId::Named("alice".to_owned())],
        ))
        .await
        .unwrap();
    stats
        .record(&counts(
            "2026-11-29",
            &[("a", "1.0.0", 1), ("a", "1.1.0", 1)],
            &[addr("192.0.2.1"), addr("192.0.2.2")],
        ))
        .await
        .unwrap();
    stats
        .record(&counts(
            "2026-11-30",
            &[("b", "1.0.0", 4)],
            &[addr("192.0.2.1")],
        ))
        .await
        .unwrap();
    // Another registry's counts are its own.
    db.stats("other")
        .record(&counts("2026-11-29", &[("a", "1.0.0", 50)], &[]))
        .await
        .unwrap();

    let days = stats.days("2026-11-01").await.unwrap();
    assert_eq!(days.len(), 2);
    assert_eq!(
        (
            days[0].day.as_str(),
            days[0].downloads,
            days[0].download_bytes
        ),
        ("2026-11-29", 5, 500)
    );
    assert_eq!(
        days[0].clients, 3,
        "one address counted once, two instances"
    );
    assert_eq!((days[0].requests, days[0].request_bytes), (20, 2000));
    assert_eq!((days[1].downloads, days[1].clients), (4, 1));
    assert_eq!(stats.days("2026-11-30").await.unwrap().len(), 1);

    let top = stats.top_crates("2026-11-01", 10).await.unwrap();
    let top: Vec<(&str, u64, u64)> = top
        .iter()
        .map(|c| (c.krate.as_str(), c.downloads, c.versions))
        .collect();
    assert_eq!(top, [("b", 5, 1), ("a", 4, 2)]);
    assert_eq!(stats.top_crates("2026-11-01", 1).await.unwrap().len(), 1);

    let stored = db
        .query_strings("SELECT client FROM stats_clients ORDER BY client")
        .await;
    assert!(stored.contains(&"client:alice".to_owned()), "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|c| c == "client:alice" || (c.starts_with("addr:") && c.len() == 5 + 64)),
        "{stored:?}"
    );
    assert!(!stored.iter().any(|c| c.contains("192.0.2")), "{stored:?}");
}

async fn a_batch_larger_than_one_statement_with_repeated_keys_adds_up(db: TestDb) {
    let stats = db.stats(REGISTRY);
    let names: Vec<String> = (0..1200).map(|i| format!("c{i}")).collect();
    let mut downloads: Vec<(&str, &str, u64)> =
        names.iter().map(|n| (n.as_str(), "1.0.0", 1)).collect();
    // A version twice and an address twice in one batch.
    downloads.push(("c0", "1.0.0", 2));
    let addresses: Vec<ClientId> = (0..1100)
        .map(|i| addr(&format!("10.0.{}.{}", i / 256, i % 256)))
        .chain([addr("10.0.0.0")])
        .collect();
    stats
        .record(&counts("2026-11-29", &downloads, &addresses))
        .await
        .unwrap();
    let days = stats.days("2026-11-01").await.unwrap();
    assert_eq!(
        (days[0].downloads, days[0].download_bytes, days[0].clients),
        (1202, 120_200, 1100)
    );
    let top = stats.top_crates("2026-11-01", 1).await.unwrap();
    assert_eq!((top[0].krate.as_str(), top[0].downloads), ("c0", 3));
}

async fn pruning_deletes_old_days_and_past_keys(db: TestDb) {
    let stats = db.stats(REGISTRY);
    for day in ["2026-11-28", "2026-11-29", "2026-11-30"] {
        stats
            .record(&counts(day, &[("a", "1.0.0", 1)], &[addr("192.0.2.1")]))
            .await
            .unwrap();
    }
    assert_eq!(
        db.query_strings("SELECT day FROM stats_keys ORDER BY day")
            .await,
        ["2026-11-28", "2026-11-29", "2026-11-30"]
    );
    let deleted = stats.prune("2026-11-29", "2026-11-30").await.unwrap();
    assert_eq!(deleted, 3, "the first day's download, requests and client");
    let days: Vec<String> = stats
        .days("2000-01-01")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.day)
        .collect();
    assert_eq!(days, ["2026-11-29", "2026-11-30"]);
    // Only the key of the day that is not over (and yesterday's) is left.
    assert_eq!(
        db.query_strings("SELECT day FROM stats_keys ORDER BY day")
            .await,
        ["2026-11-30"]
    );
}
