//! Clients, the credentials generation, download counts and the approval queue.

use std::time::{Duration, SystemTime};

use wharf_db::{ClientError, Decision, NewClient};

use crate::support::{REGISTRY, TestDb, user};

on_both_backends!(
    clients_authenticate_by_token_and_by_password,
    revoking_and_rotating_move_the_generation,
    downloads_are_counted_per_client_version_and_day,
    approvals_queue_requests_until_a_decision_covers_them,
);

fn new_client(name: &str, password: bool) -> NewClient {
    NewClient {
        name: user(name),
        password,
        grants: vec!["acme-*".to_owned()],
        publish: false,
        expires_at: None,
    }
}

async fn clients_authenticate_by_token_and_by_password(db: TestDb) {
    let clients = db.clients(REGISTRY);
    let token = clients.add(&new_client("alice", false)).await.unwrap();
    assert!(token.expose().starts_with("wharf_") && !token.is_password());
    assert_eq!(token.authorization(), token.expose());
    let found = clients
        .authenticate_token(token.expose())
        .await
        .unwrap()
        .expect("the token authenticates");
    assert_eq!(found.name, user("alice"));
    assert_eq!(found.grants, ["acme-*"]);
    assert!(!found.revoked && !found.password);
    assert!(
        clients
            .authenticate_token("wharf_nope")
            .await
            .unwrap()
            .is_none()
    );

    let password = clients.add(&new_client("bob", true)).await.unwrap();
    assert!(password.is_password() && password.authorization().starts_with("Basic "));
    assert_eq!(password.expose().len(), 24);
    let bob = clients
        .authenticate_password("bob", password.expose())
        .await
        .unwrap()
        .expect("the password authenticates");
    assert!(bob.password);
    assert!(
        clients
            .authenticate_password("bob", "wrong")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        clients
            .authenticate_password("nobody", "x")
            .await
            .unwrap()
            .is_none()
    );
    // A token client has no password to guess.
    assert!(
        clients
            .authenticate_password("alice", token.expose())
            .await
            .unwrap()
            .is_none()
    );
    // Clients belong to their registry.
    assert!(
        db.clients("other")
            .authenticate_token(token.expose())
            .await
            .unwrap()
            .is_none()
    );

    assert!(matches!(
        clients.add(&new_client("alice", true)).await,
        Err(ClientError::Exists { .. })
    ));
    let list = clients.list().await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|c| c.last_used.is_some()));
}

async fn revoking_and_rotating_move_the_generation(db: TestDb) {
    let clients = db.clients(REGISTRY);
    assert_eq!(db.auth_generation(REGISTRY).await.unwrap(), 0);
    let old = clients.add(&new_client("carol", true)).await.unwrap();
    let after_add = db.auth_generation(REGISTRY).await.unwrap();
    assert!(after_add > 0);

    let new = clients.rotate(&user("carol")).await.unwrap();
    assert_ne!(old.expose(), new.expose());
    let after_rotate = db.auth_generation(REGISTRY).await.unwrap();
    assert!(after_rotate > after_add);
    assert!(
        clients
            .authenticate_password("carol", old.expose())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        clients
            .authenticate_password("carol", new.expose())
            .await
            .unwrap()
            .is_some()
    );

    clients.revoke(&user("carol")).await.unwrap();
    assert!(db.auth_generation(REGISTRY).await.unwrap() > after_rotate);
    let revoked = clients
        .authenticate_password("carol", new.expose())
        .await
        .unwrap()
        .expect("a revoked client is still found, so the refusal can say so");
    assert!(revoked.revoked);
    assert!(matches!(
        clients.rotate(&user("carol")).await,
        Err(ClientError::Revoked { .. })
    ));
    assert!(matches!(
        clients.revoke(&user("nobody")).await,
        Err(ClientError::NotFound { .. })
    ));

    // Revoking an API token moves it too.
    let before = db.auth_generation(REGISTRY).await.unwrap();
    let token = db.tokens(REGISTRY).create(&user("dave")).await.unwrap();
    db.tokens(REGISTRY).revoke(token.id).await.unwrap();
    assert!(db.auth_generation(REGISTRY).await.unwrap() > before);
    assert_eq!(db.auth_generation("other").await.unwrap(), 0);
}

async fn downloads_are_counted_per_client_version_and_day(db: TestDb) {
    let clients = db.clients(REGISTRY);
    let day = Duration::from_secs(86_400);
    let today = SystemTime::now();
    let alice = user("alice");
    for _ in 0..3 {
        clients
            .record_download(&alice, "acme-a", "1.0.0", today)
            .await
            .unwrap();
    }
    clients
        .record_download(&alice, "acme-a", "1.0.0", today - day)
        .await
        .unwrap();
    clients
        .record_download(&user("bob"), "acme-b", "2.0.0", today)
        .await
        .unwrap();

    let all = clients.downloads(None, None).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].count, 3);
    assert_eq!(
        (all[0].client.as_str(), all[0].krate.as_str()),
        ("alice", "acme-a")
    );
    let alice_recent = clients.downloads(Some(&alice), Some(today)).await.unwrap();
    assert_eq!(alice_recent.len(), 1);
    assert_eq!(alice_recent[0].count, 3);
}

async fn approvals_queue_requests_until_a_decision_covers_them(db: TestDb) {
    let approvals = db.approvals(REGISTRY);
    let now = SystemTime::now();
    approvals
        .request("Foo_Bar", "1.2.0", 3, "ci (127.0.0.1)", now)
        .await
        .unwrap();
    approvals
        .request("foo-bar", "1.2.0", 3, "alice", now)
        .await
        .unwrap();
    approvals
        .request("other", "0.1.0", 1, "alice", now)
        .await
        .unwrap();
    let pending = approvals.pending().await.unwrap();
    assert_eq!(pending.len(), 2);
    let foo_bar = pending
        .iter()
        .find(|r| r.krate == "Foo_Bar")
        .expect("one row per crate");
    assert_eq!(
        (foo_bar.requests, foo_bar.requested_by.as_str()),
        (2, "alice")
    );

    // A decision on another version does not cover the newest held one.
    approvals
        .decide(
            "foo-bar",
            Some("1.1.0"),
            Decision::Approved,
            "op",
            None,
            now,
        )
        .await
        .unwrap();
    assert_eq!(approvals.pending().await.unwrap().len(), 2);
    approvals
        .decide(
            "FOO-BAR",
            Some("1.2.0"),
            Decision::Rejected,
            "op",
            Some("CVE"),
            now,
        )
        .await
        .unwrap();
    assert_eq!(approvals.pending().await.unwrap().len(), 1);
    approvals
        .decide("other", None, Decision::Approved, "op", None, now)
        .await
        .unwrap();
    assert!(approvals.pending().await.unwrap().is_empty());
    assert_eq!(approvals.requests().await.unwrap().len(), 2);

    let decisions = approvals.decisions_for("foo_bar").await.unwrap();
    assert_eq!(decisions.len(), 2);
    let rejected = decisions
        .iter()
        .find(|d| d.vers.as_deref() == Some("1.2.0"))
        .unwrap();
    assert_eq!(
        (rejected.decision, rejected.note.as_deref()),
        (Decision::Rejected, Some("CVE"))
    );
    // A later decision replaces the earlier one.
    approvals
        .decide(
            "foo-bar",
            Some("1.2.0"),
            Decision::Approved,
            "op2",
            None,
            now,
        )
        .await
        .unwrap();
    let decisions = approvals.decisions_for("foo-bar").await.unwrap();
    assert_eq!(decisions.len(), 2);
    assert!(decisions.iter().all(|d| d.decision == Decision::Approved));
    assert_eq!(approvals.decisions().await.unwrap().len(), 3);
    assert!(
        db.approvals("other")
            .decisions_for("foo-bar")
            .await
            .unwrap()
            .is_empty()
    );
}
