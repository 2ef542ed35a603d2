//! Every SQL statement wharf runs, each written once for both backends.
//!
//! The statements keep to what SQLite and PostgreSQL both understand: `$n`
//! placeholders (sqlx's SQLite driver reads them as numbered parameters),
//! `RETURNING`, `ON CONFLICT … DO NOTHING`, `LIKE … ESCAPE`. Case is folded in
//! Rust before text is stored or compared, never by SQL's `lower()`, whose
//! Unicode rules differ between the two.

use sqlx::Row;

use crate::db::{Pool, Tx, on_backend};
use crate::user::User;

/// The columns of a crate that the write paths need.
pub(crate) struct CrateRow {
    pub(crate) id: i64,
    pub(crate) name: String,
}

/// One version, as publish and yank look at it.
pub(crate) struct VersionRow {
    pub(crate) id: i64,
    pub(crate) vers: String,
    pub(crate) yanked: bool,
    pub(crate) index_line: String,
}

/// What an index file is made of.
pub(crate) struct IndexRows {
    pub(crate) name: String,
    pub(crate) revision: i64,
    pub(crate) updated_at_ms: i64,
    pub(crate) lines: Vec<String>,
}

/// One crate found by search.
pub(crate) struct SearchRow {
    pub(crate) name: String,
    pub(crate) max_version: Option<String>,
    pub(crate) description: Option<String>,
}

/// One token, without its hash.
pub(crate) struct TokenRow {
    pub(crate) id: i64,
    pub(crate) login: String,
    pub(crate) created_at_ms: i64,
    pub(crate) last_used_at_ms: Option<i64>,
    pub(crate) revoked_at_ms: Option<i64>,
}

/// The values of a new version row.
pub(crate) struct NewVersionRow<'a> {
    pub(crate) crate_id: i64,
    pub(crate) vers: &'a str,
    pub(crate) vers_no_build: &'a str,
    pub(crate) cksum: &'a str,
    pub(crate) index_line: &'a str,
    pub(crate) description: Option<&'a str>,
    pub(crate) keywords_json: &'a str,
    pub(crate) size_bytes: i64,
    pub(crate) published_by: &'a str,
    pub(crate) published_at_ms: i64,
}

// A no-op update: on PostgreSQL it locks the row until the transaction ends, so
// every writer of one crate waits for the one before (SQLite's `BEGIN IMMEDIATE`
// already serialises all writers). `SELECT … FOR UPDATE` would say the same, but
// SQLite has no `FOR UPDATE`.
const LOCK_CRATE: &str = "UPDATE crates SET index_revision = index_revision \
     WHERE registry = $1 AND canonical_name = $2 RETURNING id, name";

// A concurrent insert of the same name waits for the first one to commit and then
// does nothing; the caller then locks the row the other transaction made.
const INSERT_CRATE: &str = "INSERT INTO crates \
     (registry, name, canonical_name, index_revision, max_version, description, \
      description_lower, keywords, created_at, updated_at) \
     VALUES ($1, $2, $3, 0, NULL, NULL, '', '[]', $4, $4) \
     ON CONFLICT (registry, canonical_name) DO NOTHING RETURNING id";

const BUMP_CRATE: &str = "UPDATE crates \
     SET index_revision = index_revision + 1, updated_at = $2, max_version = $3 \
     WHERE id = $1 RETURNING index_revision";

const SET_CRATE_SUMMARY: &str = "UPDATE crates \
     SET description = $2, description_lower = $3, keywords = $4 WHERE id = $1";

const OWNERS: &str = "SELECT login FROM crate_owners WHERE crate_id = $1 ORDER BY added_at, login";

const ADD_OWNER: &str = "INSERT INTO crate_owners (crate_id, login, added_by, added_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (crate_id, login) DO NOTHING";

// A user the registry knows: one with a live token, or a client not revoked.
const KNOWN_USER: &str = "SELECT 1 FROM tokens \
     WHERE registry = $1 AND login = $2 AND revoked_at IS NULL \
     UNION ALL SELECT 1 FROM clients \
     WHERE registry = $1 AND name = $2 AND revoked_at IS NULL";

// A user who can act on a crate today: a live token, or a client allowed to
// publish that is neither revoked nor expired.
const ACTIVE_USER: &str = "SELECT 1 FROM tokens \
     WHERE registry = $1 AND login = $2 AND revoked_at IS NULL \
     UNION ALL SELECT 1 FROM clients \
     WHERE registry = $1 AND name = $2 AND revoked_at IS NULL AND publish \
       AND (expires_at IS NULL OR expires_at > $3)";

const REMOVE_OWNER: &str = "DELETE FROM crate_owners WHERE crate_id = $1 AND login = $2";

const VERSIONS: &str = "SELECT id, vers, yanked, index_line FROM versions \
     WHERE crate_id = $1 ORDER BY id";

const INSERT_VERSION: &str = "INSERT INTO versions \
     (crate_id, vers, vers_no_build, cksum, yanked, index_line, description, keywords, \
      size_bytes, published_by, published_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

const SET_YANKED: &str = "UPDATE versions SET yanked = $2, index_line = $3 WHERE id = $1";

const FIND_CRATE: &str = "SELECT id, name FROM crates WHERE registry = $1 AND canonical_name = $2";

const INDEX_CRATE: &str = "SELECT id, name, index_revision, updated_at FROM crates \
     WHERE registry = $1 AND canonical_name = $2";

const INDEX_LINES: &str = "SELECT index_line FROM versions WHERE crate_id = $1 ORDER BY id";

// Rank 0: the name is the query; 1: the name contains it; 2: only the description
// does. Ties in name order. `{grants}` is `search_grants`' condition.
const SEARCH: &str = "SELECT name, max_version, description, \
       CASE WHEN canonical_name = $2 THEN 0 \
            WHEN canonical_name LIKE $3 ESCAPE '\\' THEN 1 ELSE 2 END AS relevance \
     FROM crates \
     WHERE registry = $1 \
       AND (canonical_name LIKE $3 ESCAPE '\\' OR description_lower LIKE $4 ESCAPE '\\') \
       {grants} \
     ORDER BY relevance, canonical_name LIMIT $5 OFFSET $6";

const SEARCH_COUNT: &str = "SELECT COUNT(*) FROM crates \
     WHERE registry = $1 \
       AND (canonical_name LIKE $2 ESCAPE '\\' OR description_lower LIKE $3 ESCAPE '\\') \
       {grants}";

/// The condition that keeps only crates whose canonical name is `LIKE` one of
/// `count` patterns bound from `$first` on; nothing at all when `count` is
/// `None` (every crate may be seen). `Some(0)` keeps no crate.
fn search_grants(count: Option<usize>, first: usize) -> String {
    match count {
        None => String::new(),
        Some(0) => "AND 1 = 0".to_owned(),
        Some(n) => {
            let likes: Vec<String> = (first..first + n)
                .map(|i| format!("canonical_name LIKE ${i} ESCAPE '\\'"))
                .collect();
            format!("AND ({})", likes.join(" OR "))
        }
    }
}

const INSERT_TOKEN: &str = "INSERT INTO tokens (registry, login, secret_sha256, created_at) \
     VALUES ($1, $2, $3, $4) RETURNING id";

const LIST_TOKENS: &str = "SELECT id, login, created_at, last_used_at, revoked_at FROM tokens \
     WHERE registry = $1 ORDER BY id";

const REVOKE_TOKEN: &str = "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $3) \
     WHERE registry = $1 AND id = $2";

const FIND_TOKEN: &str = "SELECT id, login, last_used_at FROM tokens \
     WHERE registry = $1 AND secret_sha256 = $2 AND revoked_at IS NULL";

const TOUCH_TOKEN: &str = "UPDATE tokens SET last_used_at = $2 WHERE id = $1";

impl Tx {
    /// Locks the crate `canonical` of `registry` for the rest of the transaction.
    pub(crate) async fn lock_crate(
        &mut self,
        registry: &str,
        canonical: &str,
    ) -> Result<Option<CrateRow>, sqlx::Error> {
        on_backend!(self, conn => {
            let row = sqlx::query(LOCK_CRATE)
                .bind(registry)
                .bind(canonical)
                .fetch_optional(conn)
                .await?;
            row.map(|r| Ok(CrateRow { id: r.try_get("id")?, name: r.try_get("name")? }))
                .transpose()
        })
    }

    /// Finds the crate `canonical` of `registry`, without locking it.
    pub(crate) async fn find_crate(
        &mut self,
        registry: &str,
        canonical: &str,
    ) -> Result<Option<CrateRow>, sqlx::Error> {
        on_backend!(self, conn => {
            let row = sqlx::query(FIND_CRATE)
                .bind(registry)
                .bind(canonical)
                .fetch_optional(conn)
                .await?;
            row.map(|r| Ok(CrateRow { id: r.try_get("id")?, name: r.try_get("name")? }))
                .transpose()
        })
    }

    /// Inserts a crate with no versions and revision 0; `None` when a crate of the
    /// same canonical name exists (perhaps committed meanwhile by another writer).
    pub(crate) async fn insert_crate(
        &mut self,
        registry: &str,
        name: &str,
        canonical: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        on_backend!(self, conn => {
            let row = sqlx::query(INSERT_CRATE)
                .bind(registry)
                .bind(name)
                .bind(canonical)
                .bind(now_ms)
                .fetch_optional(conn)
                .await?;
            row.map(|r| r.try_get("id")).transpose()
        })
    }

    /// Bumps the crate's index revision, records the change time and its newest
    /// unyanked version; returns the new revision.
    pub(crate) async fn bump_crate(
        &mut self,
        crate_id: i64,
        now_ms: i64,
        max_version: Option<&str>,
    ) -> Result<i64, sqlx::Error> {
        on_backend!(self, conn => {
            let row = sqlx::query(BUMP_CRATE)
                .bind(crate_id)
                .bind(now_ms)
                .bind(max_version)
                .fetch_one(conn)
                .await?;
            row.try_get(0)
        })
    }

    /// Tells every wharf listening on this database (PostgreSQL) that the
    /// index file of `name` in `registry` changed, when the transaction
    /// commits. SQLite has no listeners: its readers check revisions.
    pub(crate) async fn notify_index_changed(
        &mut self,
        registry: &str,
        name: &str,
    ) -> Result<(), sqlx::Error> {
        if let Tx::Postgres(tx) = self {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::changes::CHANNEL)
                .bind(format!("{registry}/{name}"))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Sets what search shows of the crate.
    pub(crate) async fn set_crate_summary(
        &mut self,
        crate_id: i64,
        description: Option<&str>,
        keywords_json: &str,
    ) -> Result<(), sqlx::Error> {
        let lower = description.map(str::to_lowercase).unwrap_or_default();
        on_backend!(self, conn => {
            sqlx::query(SET_CRATE_SUMMARY)
                .bind(crate_id)
                .bind(description)
                .bind(&lower)
                .bind(keywords_json)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// The crate's owners, oldest first.
    pub(crate) async fn owners(&mut self, crate_id: i64) -> Result<Vec<User>, sqlx::Error> {
        on_backend!(self, conn => {
            let rows = sqlx::query(OWNERS).bind(crate_id).fetch_all(conn).await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("login").map(User::from_db))
                .collect()
        })
    }

    /// Adds an owner; `false` when they already were one.
    pub(crate) async fn add_owner(
        &mut self,
        crate_id: i64,
        user: &User,
        added_by: &User,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        on_backend!(self, conn => {
            let done = sqlx::query(ADD_OWNER)
                .bind(crate_id)
                .bind(user.as_str())
                .bind(added_by.as_str())
                .bind(now_ms)
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Whether `user` has a live token or a client (not revoked) in `registry`.
    pub(crate) async fn is_known_user(
        &mut self,
        registry: &str,
        user: &User,
    ) -> Result<bool, sqlx::Error> {
        on_backend!(self, conn => {
            let row = sqlx::query(KNOWN_USER)
                .bind(registry)
                .bind(user.as_str())
                .fetch_optional(conn)
                .await?;
            Ok(row.is_some())
        })
    }

    /// Whether `user` can publish, yank and change owners in `registry` now:
    /// a live token, or a client allowed to publish, neither revoked nor expired.
    pub(crate) async fn is_active_user(
        &mut self,
        registry: &str,
        user: &User,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        on_backend!(self, conn => {
            let row = sqlx::query(ACTIVE_USER)
                .bind(registry)
                .bind(user.as_str())
                .bind(now_ms)
                .fetch_optional(conn)
                .await?;
            Ok(row.is_some())
        })
    }

    /// Removes an owner; `false` when they were not one.
    pub(crate) async fn remove_owner(
        &mut self,
        crate_id: i64,
        user: &User,
    ) -> Result<bool, sqlx::Error> {
        on_backend!(self, conn => {
            let done = sqlx::query(REMOVE_OWNER)
                .bind(crate_id)
                .bind(user.as_str())
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Every version of the crate, in publish order.
    pub(crate) async fn versions(&mut self, crate_id: i64) -> Result<Vec<VersionRow>, sqlx::Error> {
        on_backend!(self, conn => {
            let rows = sqlx::query(VERSIONS).bind(crate_id).fetch_all(conn).await?;
            rows.iter()
                .map(|r| {
                    Ok(VersionRow {
                        id: r.try_get("id")?,
                        vers: r.try_get("vers")?,
                        yanked: r.try_get("yanked")?,
                        index_line: r.try_get("index_line")?,
                    })
                })
                .collect()
        })
    }

    /// Inserts a version, not yanked.
    pub(crate) async fn insert_version(
        &mut self,
        v: &NewVersionRow<'_>,
    ) -> Result<(), sqlx::Error> {
        on_backend!(self, conn => {
            sqlx::query(INSERT_VERSION)
                .bind(v.crate_id)
                .bind(v.vers)
                .bind(v.vers_no_build)
                .bind(v.cksum)
                .bind(false)
                .bind(v.index_line)
                .bind(v.description)
                .bind(v.keywords_json)
                .bind(v.size_bytes)
                .bind(v.published_by)
                .bind(v.published_at_ms)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// Stores a version's new yanked state and the index line that says it.
    pub(crate) async fn set_yanked(
        &mut self,
        version_id: i64,
        yanked: bool,
        index_line: &str,
    ) -> Result<(), sqlx::Error> {
        on_backend!(self, conn => {
            sqlx::query(SET_YANKED)
                .bind(version_id)
                .bind(yanked)
                .bind(index_line)
                .execute(conn)
                .await?;
            Ok(())
        })
    }

    /// The crate's name, revision and index lines in publish order.
    pub(crate) async fn index_rows(
        &mut self,
        registry: &str,
        canonical: &str,
    ) -> Result<Option<IndexRows>, sqlx::Error> {
        on_backend!(self, conn => {
            let Some(krate) = sqlx::query(INDEX_CRATE)
                .bind(registry)
                .bind(canonical)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            let id: i64 = krate.try_get("id")?;
            let lines = sqlx::query(INDEX_LINES).bind(id).fetch_all(conn).await?;
            Ok(Some(IndexRows {
                name: krate.try_get("name")?,
                revision: krate.try_get("index_revision")?,
                updated_at_ms: krate.try_get("updated_at")?,
                lines: lines.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?,
            }))
        })
    }

    /// One page of the crates whose folded name contains `name_pattern` or whose
    /// lowercased description contains `description_pattern`, and how many there
    /// are in all; with `grant_patterns`, only crates whose canonical name is
    /// `LIKE` one of them count and are listed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn search(
        &mut self,
        registry: &str,
        folded_query: &str,
        name_pattern: &str,
        description_pattern: &str,
        grant_patterns: Option<&[String]>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SearchRow>, i64), sqlx::Error> {
        let grants = grant_patterns.map(<[String]>::len);
        // The statements are fixed text but for the number of grant
        // placeholders; every value is bound, none is spliced in.
        let count_sql = SEARCH_COUNT.replace("{grants}", &search_grants(grants, 4));
        let page_sql = SEARCH.replace("{grants}", &search_grants(grants, 7));
        let patterns = grant_patterns.unwrap_or_default();
        on_backend!(self, conn => {
            let mut count = sqlx::query(sqlx::AssertSqlSafe(count_sql))
                .bind(registry)
                .bind(name_pattern)
                .bind(description_pattern);
            for pattern in patterns {
                count = count.bind(pattern.as_str());
            }
            let total: i64 = count.fetch_one(&mut *conn).await?.try_get(0)?;
            let mut page = sqlx::query(sqlx::AssertSqlSafe(page_sql))
                .bind(registry)
                .bind(folded_query)
                .bind(name_pattern)
                .bind(description_pattern)
                .bind(limit)
                .bind(offset);
            for pattern in patterns {
                page = page.bind(pattern.as_str());
            }
            let rows = page.fetch_all(conn).await?;
            let hits = rows
                .iter()
                .map(|r| {
                    Ok(SearchRow {
                        name: r.try_get("name")?,
                        max_version: r.try_get("max_version")?,
                        description: r.try_get("description")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()?;
            Ok((hits, total))
        })
    }
}

impl Pool {
    /// Stores a new token's hash; returns its id.
    pub(crate) async fn insert_token(
        &self,
        registry: &str,
        login: &str,
        secret_sha256: &str,
        now_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        on_backend!(pool self, conn => {
            sqlx::query(INSERT_TOKEN)
                .bind(registry)
                .bind(login)
                .bind(secret_sha256)
                .bind(now_ms)
                .fetch_one(conn)
                .await?
                .try_get(0)
        })
    }

    /// Every token of the registry, oldest first.
    pub(crate) async fn list_tokens(&self, registry: &str) -> Result<Vec<TokenRow>, sqlx::Error> {
        on_backend!(pool self, conn => {
            let rows = sqlx::query(LIST_TOKENS).bind(registry).fetch_all(conn).await?;
            rows.iter()
                .map(|r| {
                    Ok(TokenRow {
                        id: r.try_get("id")?,
                        login: r.try_get("login")?,
                        created_at_ms: r.try_get("created_at")?,
                        last_used_at_ms: r.try_get("last_used_at")?,
                        revoked_at_ms: r.try_get("revoked_at")?,
                    })
                })
                .collect()
        })
    }

    /// Marks a token revoked (keeping the first revocation time); `false` when the
    /// registry has no such token.
    pub(crate) async fn revoke_token(
        &self,
        registry: &str,
        id: i64,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        on_backend!(pool self, conn => {
            let done = sqlx::query(REVOKE_TOKEN)
                .bind(registry)
                .bind(id)
                .bind(now_ms)
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// The live token with this hash: its id, user and last use.
    pub(crate) async fn find_token(
        &self,
        registry: &str,
        secret_sha256: &str,
    ) -> Result<Option<(i64, String, Option<i64>)>, sqlx::Error> {
        on_backend!(pool self, conn => {
            let row = sqlx::query(FIND_TOKEN)
                .bind(registry)
                .bind(secret_sha256)
                .fetch_optional(conn)
                .await?;
            row.map(|r| Ok((r.try_get("id")?, r.try_get("login")?, r.try_get("last_used_at")?)))
                .transpose()
        })
    }

    /// Records that a token was used now.
    pub(crate) async fn touch_token(&self, id: i64, now_ms: i64) -> Result<(), sqlx::Error> {
        on_backend!(pool self, conn => {
            sqlx::query(TOUCH_TOKEN).bind(id).bind(now_ms).execute(conn).await?;
            Ok(())
        })
    }
}
