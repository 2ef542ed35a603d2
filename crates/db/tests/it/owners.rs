//! Owners: who may publish and yank, and who may change that.

use wharf_db::{ErrorKind, OwnersError};

use crate::support::{REGISTRY, TestDb, index, publish, user};

on_both_backends!(
    owners_are_added_listed_and_removed,
    the_last_owner_cannot_be_removed,
    only_owners_change_owners,
);

async fn owners_are_added_listed_and_removed(db: TestDb) {
    publish(&db, "Foo-Bar", "1.0.0", "alice").await;
    let revision = index(&db, "foo-bar").await.unwrap().1;
    let owners = db.owners(REGISTRY);
    let alice = user("alice");

    let added = owners
        .add(
            "foo-bar",
            &[user("bob"), user("carol"), user("alice")],
            &alice,
        )
        .await
        .unwrap();
    assert_eq!(added, [user("bob"), user("carol")], "alice already was one");
    assert_eq!(
        owners.add("foo_bar", &[user("bob")], &alice).await.unwrap(),
        []
    );
    assert_eq!(
        owners.list("FOO_BAR").await.unwrap(),
        [user("alice"), user("bob"), user("carol")]
    );

    owners
        .remove("foo-bar", &[user("carol")], &user("bob"))
        .await
        .unwrap();
    // An owner may leave while others remain.
    owners
        .remove("foo-bar", &[user("alice")], &alice)
        .await
        .unwrap();
    assert_eq!(owners.list("foo-bar").await.unwrap(), [user("bob")]);
    assert_eq!(
        index(&db, "foo-bar").await.unwrap().1,
        revision,
        "owners are not in the index"
    );

    let err = owners
        .remove("foo-bar", &[user("zed")], &user("bob"))
        .await
        .unwrap_err();
    assert!(matches!(err, OwnersError::NotListed { .. }), "{err}");
    let err = owners.list("nope").await.unwrap_err();
    assert!(matches!(err, OwnersError::CrateNotFound { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn the_last_owner_cannot_be_removed(db: TestDb) {
    publish(&db, "foo", "1.0.0", "alice").await;
    let owners = db.owners(REGISTRY);
    let alice = user("alice");
    owners.add("foo", &[user("bob")], &alice).await.unwrap();

    let err = owners
        .remove("foo", &[user("bob"), user("alice")], &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, OwnersError::LastOwner { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "crate `foo` must keep at least one owner; add the new owner before removing the last one"
    );
    // All or nothing: a refused removal removes nobody.
    let err = owners
        .remove("foo", &[user("bob"), user("zed")], &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, OwnersError::NotListed { .. }), "{err}");
    assert_eq!(
        owners.list("foo").await.unwrap(),
        [alice.clone(), user("bob")]
    );
}

async fn only_owners_change_owners(db: TestDb) {
    publish(&db, "foo", "1.0.0", "alice").await;
    let owners = db.owners(REGISTRY);
    let mallory = user("mallory");
    let err = owners
        .add("foo", &[user("mallory")], &mallory)
        .await
        .unwrap_err();
    assert!(matches!(err, OwnersError::NotAnOwner(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    let err = owners
        .remove("foo", &[user("alice")], &mallory)
        .await
        .unwrap_err();
    assert!(matches!(err, OwnersError::NotAnOwner(_)), "{err}");
    assert_eq!(owners.list("foo").await.unwrap(), [user("alice")]);
}
