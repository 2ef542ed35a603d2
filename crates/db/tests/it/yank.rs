//! Yanking: the one byte-exact change an index line may undergo.

use wharf_db::{ErrorKind, YankError};

use crate::support::{REGISTRY, TestDb, index, publish, user};

on_both_backends!(
    yanking_flips_exactly_the_yanked_value_and_bumps_the_revision,
    yank_finds_any_spelling_and_a_version_without_build_metadata,
    yank_refuses_unknown_crates_versions_and_non_owners,
);

async fn yanking_flips_exactly_the_yanked_value_and_bumps_the_revision(db: TestDb) {
    let first = publish(&db, "foo", "1.0.0", "alice").await;
    let second = publish(&db, "foo", "1.1.0", "alice").await;
    let original = format!("{}\n{}\n", first.index_line, second.index_line);
    assert_eq!(index(&db, "foo").await, Some((original.clone(), 2)));
    let crates = db.crates(REGISTRY);
    let alice = user("alice");

    assert!(
        crates
            .set_yanked("foo", "1.0.0", true, &alice)
            .await
            .unwrap()
    );
    let yanked_line = first
        .index_line
        .replacen(r#""yanked":false"#, r#""yanked":true"#, 1);
    assert_ne!(yanked_line, first.index_line);
    let (lines, revision) = index(&db, "foo").await.unwrap();
    assert_eq!(lines, format!("{yanked_line}\n{}\n", second.index_line));
    assert_eq!(revision, 3);

    // The same state again changes nothing, not even the revision.
    assert!(
        !crates
            .set_yanked("foo", "1.0.0", true, &alice)
            .await
            .unwrap()
    );
    assert_eq!(index(&db, "foo").await.unwrap().1, 3);

    assert!(
        crates
            .set_yanked("foo", "1.0.0", false, &alice)
            .await
            .unwrap()
    );
    assert_eq!(index(&db, "foo").await, Some((original, 4)));
    assert!(
        !crates
            .set_yanked("foo", "1.0.0", false, &alice)
            .await
            .unwrap()
    );
}

async fn yank_finds_any_spelling_and_a_version_without_build_metadata(db: TestDb) {
    let new = publish(&db, "Foo-Bar", "1.0.0+build.7", "alice").await;
    let crates = db.crates(REGISTRY);
    let alice = user("alice");
    assert!(
        crates
            .set_yanked("foo_bar", "1.0.0", true, &alice)
            .await
            .unwrap()
    );
    assert!(
        crates
            .set_yanked("FOO-BAR", "1.0.0+build.7", false, &alice)
            .await
            .unwrap()
    );
    let err = crates
        .set_yanked("foo-bar", "1.0.0+other", true, &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, YankError::VersionNotFound { .. }), "{err}");
    assert_eq!(
        index(&db, "foo-bar").await,
        Some((format!("{}\n", new.index_line), 3))
    );
}

async fn yank_refuses_unknown_crates_versions_and_non_owners(db: TestDb) {
    publish(&db, "foo", "1.0.0", "alice").await;
    let before = index(&db, "foo").await;
    let crates = db.crates(REGISTRY);
    let alice = user("alice");

    let err = crates
        .set_yanked("nope", "1.0.0", true, &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, YankError::CrateNotFound { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = crates
        .set_yanked("../etc", "1.0.0", true, &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, YankError::CrateNotFound { .. }), "{err}");
    for vers in ["2.0.0", "1.0", "x"] {
        let err = crates
            .set_yanked("foo", vers, true, &alice)
            .await
            .unwrap_err();
        assert!(matches!(err, YankError::VersionNotFound { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("crate `foo` has no version {vers}; check `cargo yank --version`")
        );
    }
    let err = crates
        .set_yanked("foo", "1.0.0", true, &user("mallory"))
        .await
        .unwrap_err();
    assert!(matches!(err, YankError::NotAnOwner(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(index(&db, "foo").await, before);
}
