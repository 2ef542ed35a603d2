//! API tokens: shown once, stored as a hash, scoped to a registry, revocable.

use std::time::{Duration, SystemTime};

use wharf_db::{TOKEN_PREFIX, TokenError, TokenId};

use crate::support::{REGISTRY, TestDb, user};

on_both_backends!(
    tokens_authenticate_their_user_until_revoked,
    only_a_hash_of_the_secret_is_stored,
);

async fn tokens_authenticate_their_user_until_revoked(db: TestDb) {
    let tokens = db.tokens(REGISTRY);
    let alice = tokens.create(&user("alice")).await.unwrap();
    let bob = tokens.create(&user("bob")).await.unwrap();
    let secret = alice.secret.expose();
    assert!(secret.starts_with(TOKEN_PREFIX));
    assert_eq!(secret.len(), TOKEN_PREFIX.len() + 64);
    assert_ne!(secret, bob.secret.expose());
    assert!(!format!("{alice:?}").contains(&secret[TOKEN_PREFIX.len()..]));

    assert_eq!(
        tokens.authenticate(secret).await.unwrap(),
        Some(user("alice"))
    );
    assert_eq!(
        tokens.authenticate(bob.secret.expose()).await.unwrap(),
        Some(user("bob"))
    );
    for wrong in [
        "",
        "wharf_",
        &secret[..secret.len() - 1],
        &format!("{secret}0"),
        &secret.to_uppercase(),
    ] {
        assert_eq!(tokens.authenticate(wrong).await.unwrap(), None, "{wrong}");
    }
    assert_eq!(
        db.tokens("elsewhere").authenticate(secret).await.unwrap(),
        None,
        "a token belongs to one registry"
    );

    let list = tokens.list().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!((list[0].id, &list[0].user), (alice.id, &user("alice")));
    let now = SystemTime::now();
    assert!(now.duration_since(list[0].created_at).unwrap() < Duration::from_secs(60));
    assert!(list[0].last_used.is_some(), "authenticate records the use");
    assert!(!list[0].revoked);
    assert!(db.tokens("elsewhere").list().await.unwrap().is_empty());

    tokens.revoke(alice.id).await.unwrap();
    assert_eq!(tokens.authenticate(secret).await.unwrap(), None);
    tokens.revoke(alice.id).await.unwrap();
    let list = tokens.list().await.unwrap();
    assert!(list[0].revoked && !list[1].revoked);
    assert_eq!(
        tokens.authenticate(bob.secret.expose()).await.unwrap(),
        Some(user("bob"))
    );

    assert_eq!(format!("[{:>4}]", alice.id), format!("[{:>4}]", alice.id.0));
    assert_eq!(alice.id.to_string().parse::<TokenId>(), Ok(alice.id));
    let err = tokens.revoke(TokenId(alice.id.0 + 1000)).await.unwrap_err();
    assert!(matches!(err, TokenError::NotFound { .. }), "{err}");
    let err = db.tokens("elsewhere").revoke(bob.id).await.unwrap_err();
    assert!(matches!(err, TokenError::NotFound { .. }), "{err}");
}

async fn only_a_hash_of_the_secret_is_stored(db: TestDb) {
    let token = db.tokens(REGISTRY).create(&user("alice")).await.unwrap();
    let secret = token.secret.expose();
    let stored = db.query_strings("SELECT secret_sha256 FROM tokens").await;
    let expected = wharf_test_support::fixture::sha256_hex(secret.as_bytes());
    assert_eq!(stored, [expected]);
    let everything = db
        .query_strings("SELECT registry || login || secret_sha256 FROM tokens")
        .await;
    assert!(!everything[0].contains(&secret[TOKEN_PREFIX.len()..]));
}
