//! Opening databases: URLs, the embedded SQLite file, migrations on reopen.

use wharf_db::{Backend, Db, DbError};

use crate::support::{REGISTRY, TestDb, index, publish};

#[tokio::test]
async fn the_sqlite_file_is_created_in_wal_mode_and_reopened_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/nested/wharf.db");
    let db = Db::connect_sqlite_file(&path).await.unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    let new = publish(&db, "foo", "1.0.0", "alice").await;
    db.close().await;
    assert!(path.is_file());

    // The URL form reaches the same file; the migrations are already applied.
    let url = format!("sqlite://{}", path.display());
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(
        index(&db, "foo").await,
        Some((format!("{}\n", new.index_line), 1))
    );
    db.close().await;
    let test_db = TestDb::sqlite().await;
    assert_eq!(test_db.query_strings("PRAGMA journal_mode").await, ["wal"]);
}

/// Issue 13.6: the file holds token and password hashes. A database made by
/// an older wharf (0644, with its WAL files) is tightened on connect.
#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_file_and_its_wal_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.db");
    let db = Db::connect_sqlite_file(&path).await.unwrap();
    publish(&db, "foo", "1.0.0", "alice").await;
    for file in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
    db.close().await;

    for file in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        let file = dir.path().join(file);
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let db = Db::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    publish(&db, "foo", "1.0.1", "alice").await;
    for file in ["wharf.db", "wharf.db-wal", "wharf.db-shm"] {
        assert_eq!(
            mode(&dir.path().join(file)),
            0o600,
            "{file} after reopening"
        );
    }
    db.close().await;
}

#[tokio::test]
async fn reconnecting_to_postgres_keeps_the_data() {
    let db = TestDb::postgres().await;
    assert_eq!(db.backend(), Backend::Postgres);
    publish(&db, "foo", "1.0.0", "alice").await;
    let again = Db::connect(db.url()).await.unwrap();
    assert!(index(&again, "foo").await.is_some());
    assert_eq!(
        db.query_strings("SELECT CAST(version AS TEXT) FROM _sqlx_migrations ORDER BY version")
            .await,
        ["1", "2", "3", "4", "5"]
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused_without_their_password() {
    let err = Db::connect("mysql://wharf:hunter2@db/wharf")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DbError::UnsupportedUrl { .. }), "{err}");
    let message = err.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("mysql://wharf:***@db/wharf"), "{message}");
    assert!(message.contains("sqlite:///"), "says what works: {message}");
}

#[tokio::test]
async fn an_unopenable_sqlite_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be.
    let err = Db::connect_sqlite_file(dir.path()).await.err().unwrap();
    assert!(matches!(err, DbError::Open { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("cannot open database sqlite://"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_quick_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let started = std::time::Instant::now();
    let err = Db::connect("postgres://wharf:hunter2@127.0.0.1:1/wharf")
        .await
        .err()
        .unwrap();
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    let message = err.to_string();
    assert!(
        message.starts_with("cannot open database postgres://wharf:***@127.0.0.1:1/wharf: "),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
}

#[test]
fn every_future_is_send_for_axum_handlers() {
    fn is_send<T: Send>(_: T) {}
    let db: Option<&Db> = None;
    if let Some(db) = db {
        let new = crate::support::version("foo", "1.0.0", "alice");
        let alice = crate::support::user("alice");
        is_send(db.crates(REGISTRY).publish(&new));
        is_send(db.crates(REGISTRY).set_yanked("foo", "1.0.0", true, &alice));
        is_send(db.crates(REGISTRY).index_file("foo"));
        is_send(db.crates(REGISTRY).search("foo", 10, 1));
        is_send(db.owners(REGISTRY).add("foo", &[], &alice));
        is_send(db.owners(REGISTRY).remove("foo", &[], &alice));
        is_send(
            db.crates(REGISTRY)
                .check_publish(&new.name, &new.vers, &alice),
        );
        is_send(db.owners(REGISTRY).list("foo"));
        is_send(db.tokens(REGISTRY).create(&alice));
        is_send(db.tokens(REGISTRY).authenticate("x"));
        is_send(db.tokens(REGISTRY).list());
        is_send(Db::connect("sqlite:///x"));
    }
}
