//! Owners: who may publish and yank, and who may change that.

use std::time::{Duration, SystemTime};

use wharf_db::{ErrorKind, MAX_OWNERS_PER_CHANGE, NewClient, OwnersError};

use crate::support::{REGISTRY, TestDb, index, known_users, publish, user};

on_both_backends!(
    owners_are_added_listed_and_removed,
    the_last_owner_cannot_be_removed,
    only_owners_change_owners,
    only_users_the_registry_knows_become_owners,
    a_removal_keeps_an_owner_who_can_act,
    an_owners_change_names_at_most_a_hundred_users,
);

async fn owners_are_added_listed_and_removed(db: TestDb) {
    publish(&db, "Foo-Bar", "1.0.0", "alice").await;
    known_users(&db, &["alice", "bob", "carol"]).await;
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
    known_users(&db, &["alice", "bob"]).await;
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
        "crate `foo` must keep at least one owner who can publish (a live token, or a client allowed to publish); add such an owner before removing the last one"
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

/// Issue 13.5: `cargo owner --add nobody` is refused; users with a live token
/// or a client are accepted.
async fn only_users_the_registry_knows_become_owners(db: TestDb) {
    publish(&db, "foo", "1.0.0", "alice").await;
    known_users(&db, &["alice", "bob"]).await;
    let revoked = db.tokens(REGISTRY).create(&user("rex")).await.unwrap();
    db.tokens(REGISTRY).revoke(revoked.id).await.unwrap();
    db.clients(REGISTRY)
        .add(&client("reader", false, None))
        .await
        .unwrap();
    let owners = db.owners(REGISTRY);
    let alice = user("alice");

    for stranger in ["nobody", "rex"] {
        let err = owners
            .add("foo", &[user("bob"), user(stranger)], &alice)
            .await
            .unwrap_err();
        assert!(matches!(err, OwnersError::UnknownUser { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(
            err.to_string()
                .contains(&format!("user `{stranger}` is unknown")),
            "{err}"
        );
    }
    // A token in another registry does not make a user known here.
    db.tokens("other").create(&user("olga")).await.unwrap();
    assert!(owners.add("foo", &[user("olga")], &alice).await.is_err());
    assert_eq!(
        owners.list("foo").await.unwrap(),
        [user("alice")],
        "nothing added"
    );

    let added = owners
        .add("foo", &[user("bob"), user("reader")], &alice)
        .await
        .unwrap();
    assert_eq!(added, [user("bob"), user("reader")]);
}

fn client(name: &str, publish: bool, expires_at: Option<SystemTime>) -> NewClient {
    NewClient {
        name: user(name),
        password: false,
        grants: Vec::new(),
        publish,
        expires_at,
    }
}

/// Issue 13.5: an owner cannot leave a crate to owners who cannot act (a
/// revoked token, a client that may not publish or has expired).
async fn a_removal_keeps_an_owner_who_can_act(db: TestDb) {
    publish(&db, "foo", "1.0.0", "alice").await;
    known_users(&db, &["alice"]).await;
    let gone = db.tokens(REGISTRY).create(&user("gone")).await.unwrap();
    let clients = db.clients(REGISTRY);
    clients.add(&client("reader", false, None)).await.unwrap();
    let past = SystemTime::now() - Duration::from_secs(60);
    let future = SystemTime::now() + Duration::from_secs(3600);
    clients
        .add(&client("expired", true, Some(past)))
        .await
        .unwrap();
    clients
        .add(&client("ci", true, Some(future)))
        .await
        .unwrap();
    let owners = db.owners(REGISTRY);
    let alice = user("alice");
    owners
        .add(
            "foo",
            &[user("gone"), user("reader"), user("expired")],
            &alice,
        )
        .await
        .unwrap();
    db.tokens(REGISTRY).revoke(gone.id).await.unwrap();

    let err = owners
        .remove("foo", &[user("alice")], &alice)
        .await
        .unwrap_err();
    assert!(matches!(err, OwnersError::LastOwner { .. }), "{err}");
    assert!(err.to_string().contains("who can publish"), "{err}");
    assert_eq!(owners.list("foo").await.unwrap().len(), 4, "nobody removed");

    // With a client that may publish, alice may leave.
    owners.add("foo", &[user("ci")], &alice).await.unwrap();
    owners
        .remove("foo", &[user("alice")], &alice)
        .await
        .unwrap();
    assert!(!owners.list("foo").await.unwrap().contains(&alice));
}

/// Issue 13.5: 100,000 names in one request were accepted.
async fn an_owners_change_names_at_most_a_hundred_users(db: TestDb) {
    publish(&db, "foo", "1.0.0", "alice").await;
    known_users(&db, &["alice"]).await;
    let owners = db.owners(REGISTRY);
    let many: Vec<_> = (0..=MAX_OWNERS_PER_CHANGE)
        .map(|i| user(&format!("u{i}")))
        .collect();
    for result in [
        owners.add("foo", &many, &user("alice")).await.map(|_| ()),
        owners.remove("foo", &many, &user("alice")).await,
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, OwnersError::TooMany { count: 101 }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Invalid);
    }
}
