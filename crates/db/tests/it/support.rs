//! The fixture every test gets, and the macro that runs a test on both backends.

use std::ops::Deref;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection};
use wharf_db::{Db, NewVersion, User};
use wharf_test_support::fixture::CrateBuilder;
use wharf_test_support::postgres::TempPostgres;

/// Runs each `async fn NAME(db: TestDb)` of the calling module as two tests,
/// `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::TestDb::sqlite().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::TestDb::postgres().await).await
            }
        }
    )*};
}

/// The registry most tests use.
pub const REGISTRY: &str = "private";

/// A fresh, migrated database of one backend; derefs to [`Db`].
pub struct TestDb {
    db: Db,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new SQLite file in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("wharf.db").display());
        let db = Db::connect(&url).await.unwrap();
        TestDb {
            db,
            url,
            _dir: Some(dir),
        }
    }

    /// A new database on this binary's PostgreSQL server, or a panic saying what
    /// to install.
    pub async fn postgres() -> TestDb {
        let url = tokio::task::spawn_blocking(|| TempPostgres::shared().create_database())
            .await
            .unwrap();
        let db = Db::connect(&url).await.unwrap();
        TestDb {
            db,
            url,
            _dir: None,
        }
    }

    /// The URL the database was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` on a connection of its own, behind wharf-db's back.
    pub async fn execute_raw(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }

    /// The first column of the rows `sql` returns, as text, read on a connection
    /// of its own.
    pub async fn query_strings(&self, sql: &str) -> Vec<String> {
        let sql = AssertSqlSafe(sql.to_owned());
        if self.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        }
    }
}

impl Deref for TestDb {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.db
    }
}

/// A user name.
pub fn user(name: &str) -> User {
    User::new(name).unwrap()
}

/// Gives each of `names` a token in [`REGISTRY`], so the registry knows them
/// (only known users can be made owners).
pub async fn known_users(db: &Db, names: &[&str]) {
    for name in names {
        db.tokens(REGISTRY).create(&user(name)).await.unwrap();
    }
}

/// The publish time written into every line, so lines are predictable.
pub fn pubtime() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// A version as the server will hand it over: a real `.crate` file and metadata,
/// framed as cargo frames them, parsed and checked by wharf-publish, with the
/// index line wharf-publish builds.
pub fn version(name: &str, vers: &str, publisher: &str) -> NewVersion {
    version_with(name, vers, publisher, None, &[])
}

/// [`version`] with a description and keywords.
pub fn version_with(
    name: &str,
    vers: &str,
    publisher: &str,
    description: Option<&str>,
    keywords: &[&str],
) -> NewVersion {
    let krate = CrateBuilder::new(name, vers)
        .feature("default", &["std"])
        .feature("std", &[])
        .build();
    let metadata = serde_json::json!({
        "name": name,
        "vers": vers,
        "deps": [],
        "features": {"default": ["std"], "std": []},
        "description": description,
        "keywords": keywords,
    });
    let json = serde_json::to_vec(&metadata).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
    body.extend_from_slice(&json);
    body.extend_from_slice(&u32::try_from(krate.bytes.len()).unwrap().to_le_bytes());
    body.extend_from_slice(&krate.bytes);
    let request = wharf_publish::parse_publish_body(&body, 10 << 20).unwrap();
    NewVersion {
        name: request.name().clone(),
        vers: request.version().clone(),
        index_line: wharf_publish::index_line(&request, pubtime()),
        cksum: request.cksum(),
        description: request.metadata().description.clone(),
        keywords: request.metadata().keywords.clone(),
        publisher: user(publisher),
        size_bytes: u64::try_from(request.tarball().len()).unwrap(),
    }
}

/// Publishes `name` `vers` as `publisher` in [`REGISTRY`], which must succeed.
pub async fn publish(db: &Db, name: &str, vers: &str, publisher: &str) -> NewVersion {
    let new = version(name, vers, publisher);
    db.crates(REGISTRY).publish(&new).await.unwrap();
    new
}

/// The index file's lines and revision, or `None`.
pub async fn index(db: &Db, lowercase_name: &str) -> Option<(String, i64)> {
    db.crates(REGISTRY)
        .index_file(lowercase_name)
        .await
        .unwrap()
        .map(|f| (f.lines, f.revision))
}
