//! Publishing: names, versions, ownership, atomicity and races.

use std::sync::Arc;

use wharf_db::{ErrorKind, OwnersError, PublishError, Published};

use crate::support::{REGISTRY, TestDb, index, publish, user, version};

on_both_backends!(
    a_first_publish_creates_the_crate_owned_by_its_publisher,
    versions_are_listed_in_publish_order_and_bump_the_revision,
    another_spelling_of_a_crate_is_refused_naming_the_crate,
    build_metadata_does_not_make_a_new_version,
    only_owners_publish_new_versions,
    concurrent_first_publishes_of_one_name_have_one_winner,
    concurrent_publishes_by_an_owner_all_land,
    a_failed_transaction_leaves_nothing,
    the_index_line_must_describe_the_version,
    check_publish_refuses_what_publish_would_and_writes_nothing,
);

async fn a_first_publish_creates_the_crate_owned_by_its_publisher(db: TestDb) {
    let new = version("foo", "1.0.0", "alice");
    let published = db.crates(REGISTRY).publish(&new).await.unwrap();
    assert_eq!(
        published,
        Published {
            name: "foo".into(),
            vers: "1.0.0".into(),
            new_crate: true,
            revision: 1,
        }
    );
    assert_eq!(
        db.owners(REGISTRY).list("foo").await.unwrap(),
        [user("alice")]
    );
    let file = db
        .crates(REGISTRY)
        .index_file("foo")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(file.lines, format!("{}\n", new.index_line));
    assert_eq!(file.revision, 1);
    let age = std::time::SystemTime::now()
        .duration_since(file.updated_at)
        .unwrap();
    assert!(age.as_secs() < 60, "{age:?}");
}

async fn versions_are_listed_in_publish_order_and_bump_the_revision(db: TestDb) {
    let mut expected = String::new();
    for (i, vers) in ["1.0.0", "0.9.0", "2.0.0-alpha.1", "1.0.1"]
        .iter()
        .enumerate()
    {
        let new = version("foo", vers, "alice");
        let published = db.crates(REGISTRY).publish(&new).await.unwrap();
        assert_eq!(published.revision, i64::try_from(i).unwrap() + 1);
        assert_eq!(published.new_crate, i == 0);
        expected.push_str(&new.index_line);
        expected.push('\n');
    }
    assert_eq!(index(&db, "foo").await, Some((expected, 4)));
}

async fn another_spelling_of_a_crate_is_refused_naming_the_crate(db: TestDb) {
    let first = publish(&db, "Foo-Bar", "1.0.0", "alice").await;
    for spelling in ["foo_bar", "FOO-BAR", "foo-bar", "Foo_Bar"] {
        let err = db
            .crates(REGISTRY)
            .publish(&version(spelling, "1.0.1", "alice"))
            .await
            .unwrap_err();
        let PublishError::NameTaken {
            requested,
            existing,
        } = &err
        else {
            panic!("{spelling}: {err}");
        };
        assert_eq!(
            (requested.as_str(), existing.as_str()),
            (spelling, "Foo-Bar")
        );
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("publish as `Foo-Bar`"), "{err}");
    }
    // The same spelling goes on; the index file is found by the lowercased
    // spelling only, as on crates.io.
    publish(&db, "Foo-Bar", "1.0.1", "alice").await;
    let (lines, revision) = index(&db, "foo-bar").await.unwrap();
    assert!(lines.starts_with(&first.index_line));
    assert_eq!((lines.lines().count(), revision), (2, 2));
    assert_eq!(index(&db, "foo_bar").await, None);
    assert_eq!(
        index(&db, "Foo-Bar").await,
        None,
        "sparse paths are lowercase"
    );
}

async fn build_metadata_does_not_make_a_new_version(db: TestDb) {
    publish(&db, "foo", "1.0.0+a", "alice").await;
    for (vers, message) in [
        (
            "1.0.0",
            "already has version 1.0.0+a, which 1.0.0 equals but for build metadata",
        ),
        (
            "1.0.0+b",
            "already has version 1.0.0+a, which 1.0.0+b equals but for build metadata",
        ),
        (
            "1.0.0+a",
            "already has version 1.0.0+a, which 1.0.0+a is; bump the version",
        ),
    ] {
        let err = db
            .crates(REGISTRY)
            .publish(&version("foo", vers, "alice"))
            .await
            .unwrap_err();
        assert!(matches!(err, PublishError::VersionExists { .. }), "{err}");
        assert!(err.to_string().contains(message), "{err}");
    }
    assert_eq!(
        index(&db, "foo").await.unwrap().1,
        1,
        "refusals bump nothing"
    );
    publish(&db, "foo", "1.0.1+a", "alice").await;
    publish(&db, "foo", "1.0.0-rc.1", "alice").await;
}

async fn only_owners_publish_new_versions(db: TestDb) {
    publish(&db, "foo", "1.0.0", "alice").await;
    crate::support::known_users(&db, &["carol", "bob"]).await;
    db.owners(REGISTRY)
        .add("foo", &[user("carol")], &user("alice"))
        .await
        .unwrap();
    let before = index(&db, "foo").await;

    let err = db
        .crates(REGISTRY)
        .publish(&version("foo", "1.0.1", "bob"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(
        err.to_string(),
        "`bob` is not an owner of crate `foo`; its owners are alice, carol: \
         ask one of them to run `cargo owner --add bob foo`"
    );
    assert_eq!(index(&db, "foo").await, before);

    db.owners(REGISTRY)
        .add("foo", &[user("bob")], &user("carol"))
        .await
        .unwrap();
    publish(&db, "foo", "1.0.1", "bob").await;
}

async fn concurrent_first_publishes_of_one_name_have_one_winner(db: TestDb) {
    let db = Arc::new(db);
    warm_up(&db).await;
    let spellings = ["race-crate", "race_crate", "Race-Crate", "race-crate"];
    let start = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let db = Arc::clone(&db);
            let start = Arc::clone(&start);
            let new = version(spellings[i % spellings.len()], "1.0.0", &format!("user{i}"));
            tokio::spawn(async move {
                start.wait().await;
                let outcome = db.crates(REGISTRY).publish(&new).await;
                (new, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (new, outcome) = task.await.unwrap();
        match outcome {
            Ok(published) => winners.push((new, published)),
            Err(PublishError::NameTaken { .. } | PublishError::NotAnOwner(_)) => {}
            Err(e) => panic!("a losing publish must be refused cleanly, not fail: {e}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let (new, published) = &winners[0];
    assert!(published.new_crate);
    assert_eq!(
        db.owners(REGISTRY).list("race-crate").await.unwrap(),
        std::slice::from_ref(&new.publisher)
    );
    let (lines, revision) = index(&db, &new.name.lowercase()).await.unwrap();
    assert_eq!((lines, revision), (format!("{}\n", new.index_line), 1));
}

async fn concurrent_publishes_by_an_owner_all_land(db: TestDb) {
    publish(&db, "busy", "0.1.0", "alice").await;
    let db = Arc::new(db);
    warm_up(&db).await;
    let start = Arc::new(tokio::sync::Barrier::new(12));
    let tasks: Vec<_> = (1..=12)
        .map(|minor| {
            let db = Arc::clone(&db);
            let start = Arc::clone(&start);
            let new = version("busy", &format!("0.{minor}.1"), "alice");
            tokio::spawn(async move {
                start.wait().await;
                db.crates(REGISTRY).publish(&new).await.map(|p| p.revision)
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap().unwrap());
    }
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (2..=13).collect::<Vec<i64>>(),
        "one revision each"
    );
    let (lines, revision) = index(&db, "busy").await.unwrap();
    assert_eq!((lines.lines().count(), revision), (13, 13));
}

/// Opens every connection of the pool, so that racing tasks race in the
/// database rather than for new connections.
async fn warm_up(db: &Arc<TestDb>) {
    let searches: Vec<_> = (0..10)
        .map(|_| {
            let db = Arc::clone(db);
            tokio::spawn(async move { db.crates(REGISTRY).search("", 1, 1).await.map(|_| ()) })
        })
        .collect();
    for search in searches {
        search.await.unwrap().unwrap();
    }
}

async fn a_failed_transaction_leaves_nothing(db: TestDb) {
    // The crate and owner rows are written before the versions table is read,
    // which fails: the whole publish must roll back.
    db.execute_raw("ALTER TABLE versions RENAME TO versions_away")
        .await;
    let err = db
        .crates(REGISTRY)
        .publish(&version("doomed", "1.0.0", "alice"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Db(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::Internal);
    db.execute_raw("ALTER TABLE versions_away RENAME TO versions")
        .await;

    assert_eq!(index(&db, "doomed").await, None);
    assert!(matches!(
        db.owners(REGISTRY).list("doomed").await,
        Err(OwnersError::CrateNotFound { .. })
    ));
    assert_eq!(
        db.crates(REGISTRY).search("doomed", 10, 1).await.unwrap().1,
        0
    );
    assert_eq!(
        db.query_strings("SELECT name FROM crates").await,
        Vec::<String>::new()
    );
    // Had alice's crate or ownership survived, bob could not take the name.
    publish(&db, "doomed", "1.0.0", "bob").await;

    // The same for a version of an existing crate, failing after the version row
    // is written: what search shows is set last but one, and cannot be.
    let before = index(&db, "doomed").await;
    db.execute_raw("ALTER TABLE crates RENAME COLUMN keywords TO keywords_away")
        .await;
    let err = db
        .crates(REGISTRY)
        .publish(&version("doomed", "1.0.1", "bob"))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Db(_)), "{err}");
    db.execute_raw("ALTER TABLE crates RENAME COLUMN keywords_away TO keywords")
        .await;
    assert_eq!(index(&db, "doomed").await, before);
    assert_eq!(
        db.query_strings("SELECT vers FROM versions").await,
        ["1.0.0"]
    );
    publish(&db, "doomed", "1.0.1", "bob").await;
}

async fn the_index_line_must_describe_the_version(db: TestDb) {
    let good = version("foo", "1.0.0", "alice");
    let other = version("foo", "1.0.1", "alice");
    let cases = [
        (
            good.index_line.replace("\"foo\"", "\"fOo\""),
            "it names crate `fOo`",
        ),
        (other.index_line.clone(), "it names version `1.0.1`"),
        (
            good.index_line
                .replace(&good.cksum.to_hex(), &other.cksum.to_hex()),
            "its cksum is",
        ),
        (
            good.index_line
                .replace("\"yanked\":false", "\"yanked\":true"),
            "exactly once",
        ),
        (
            good.index_line
                .replace("\"yanked\":false", "\"yanked\": false"),
            "exactly once",
        ),
        (format!("{}\n", good.index_line), "line break"),
        ("not json".to_owned(), "not an index line"),
    ];
    for (line, why) in cases {
        let mut bad = good.clone();
        bad.index_line = line;
        let err = db.crates(REGISTRY).publish(&bad).await.unwrap_err();
        assert!(matches!(err, PublishError::InvalidIndexLine(_)), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    assert_eq!(index(&db, "foo").await, None);
}

async fn check_publish_refuses_what_publish_would_and_writes_nothing(db: TestDb) {
    let crates = db.crates(REGISTRY);
    let new = version("Foo-Bar", "1.0.0", "alice");
    crates
        .check_publish(&new.name, &new.vers, &new.publisher)
        .await
        .unwrap();
    assert_eq!(index(&db, "foo-bar").await, None, "a check writes nothing");
    crates.publish(&new).await.unwrap();

    let check = |name: &str, vers: &str, publisher: &str| {
        let v = version(name, vers, publisher);
        let crates = db.crates(REGISTRY);
        async move { crates.check_publish(&v.name, &v.vers, &v.publisher).await }
    };
    assert!(matches!(
        check("foo_bar", "1.0.1", "alice").await,
        Err(PublishError::NameTaken { .. })
    ));
    assert!(matches!(
        check("Foo-Bar", "1.0.1", "bob").await,
        Err(PublishError::NotAnOwner(_))
    ));
    assert!(matches!(
        check("Foo-Bar", "1.0.0+b", "alice").await,
        Err(PublishError::VersionExists { .. })
    ));
    check("Foo-Bar", "1.0.1", "alice").await.unwrap();
    check("other", "1.0.0", "bob").await.unwrap();
    assert_eq!(index(&db, "foo-bar").await.unwrap().1, 1);
}
