//! Issue 15: owner facts, from the API and from a dump, on both backends.

use std::time::{Duration, SystemTime};

use wharf_db::{DumpCrate, DumpState, FactSource};

use crate::support::{REGISTRY, TestDb};

on_both_backends!(
    facts_from_the_api_are_kept_with_their_time,
    a_dump_replaces_every_fact_at_once,
);

async fn facts_from_the_api_are_kept_with_their_time(db: TestDb) {
    let facts = db.owner_facts(REGISTRY);
    assert_eq!(facts.owners("Alice-Lib").await.unwrap(), None);
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let owners = vec!["github:alice".to_owned(), "github:org:core".to_owned()];
    facts.put_owners("alice-lib", &owners, at).await.unwrap();
    facts
        .put_publisher("alice-lib", "1.0.0", Some("github:alice"), at)
        .await
        .unwrap();
    facts
        .put_publisher("alice-lib", "0.1.0", None, at)
        .await
        .unwrap();
    // Names compare as crates.io compares them.
    let known = facts.owners("Alice_Lib").await.unwrap().unwrap();
    assert_eq!(
        (known.owners, known.source, known.at),
        (owners, FactSource::Api, at)
    );
    let mut publishers = facts.publishers("alice-lib").await.unwrap();
    publishers.sort_by(|a, b| a.vers.cmp(&b.vers));
    assert_eq!(publishers[0].publisher, None);
    assert_eq!(publishers[1].publisher.as_deref(), Some("github:alice"));
    // Another registry knows nothing of it.
    assert_eq!(
        db.owner_facts("other").owners("alice-lib").await.unwrap(),
        None
    );
    // An approval request notes them.
    let approvals = db.approvals(REGISTRY);
    approvals
        .request("alice-lib", "1.1.0", 1, "ci", at)
        .await
        .unwrap();
    approvals
        .note_owners(
            "alice-lib",
            &["github:alice".to_owned()],
            Some("github:mallory"),
        )
        .await
        .unwrap();
    let pending = approvals.pending().await.unwrap();
    assert_eq!(pending[0].owners.as_deref(), Some("github:alice"));
    assert_eq!(pending[0].publisher.as_deref(), Some("github:mallory"));
}

async fn a_dump_replaces_every_fact_at_once(db: TestDb) {
    let facts = db.owner_facts(REGISTRY);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    facts
        .put_owners("gone", &["github:x".to_owned()], now)
        .await
        .unwrap();
    let dump_date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let counts = facts
        .replace_with_dump(
            vec![DumpCrate {
                name: "alice-lib".to_owned(),
                owners: vec!["github:alice".to_owned()],
                versions: vec![
                    ("1.0.0".to_owned(), Some("github:alice".to_owned())),
                    ("1.1.0".to_owned(), None),
                ],
            }],
            dump_date,
        )
        .await
        .unwrap();
    assert_eq!((counts.crates, counts.versions), (1, 2));
    assert_eq!(facts.owners("gone").await.unwrap(), None);
    let known = facts.owners("alice-lib").await.unwrap().unwrap();
    assert_eq!((known.source, known.at), (FactSource::Dump, dump_date));
    assert_eq!(facts.publishers("alice-lib").await.unwrap().len(), 2);

    assert_eq!(facts.dump_state().await.unwrap(), None);
    let state = DumpState {
        url: "http://127.0.0.1:1/db-dump.tar.gz".to_owned(),
        etag: Some("\"abc\"".to_owned()),
        last_modified: None,
        dump_date,
        imported_at: now,
    };
    facts.set_dump_state(&state).await.unwrap();
    assert_eq!(facts.dump_state().await.unwrap(), Some(state));
}
