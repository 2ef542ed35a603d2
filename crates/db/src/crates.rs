//! The crate aggregate: a crate, its versions and their index lines. Publishing,
//! yanking, the index file cargo reads, and search.
//!
//! Every change runs in one transaction that starts by locking the crate's row,
//! so the checks (name, ownership, version) and the writes see the same state.
//! An index line is stored as the caller built it and never rewritten, except
//! for its `"yanked"` value, which is flipped in place.

use std::time::SystemTime;

use wharf_index::{Cksum, CrateName, parse_line};

use crate::db::{Db, Tx, from_ms, now_ms};
use crate::error::{DbError, PublishError, YankError};
use crate::owners::require_owner;
use crate::sql::{CrateRow, NewVersionRow, VersionRow};
use crate::user::User;

/// The most search hits one page may hold (crates.io's limit).
pub const MAX_PER_PAGE: u32 = 100;

/// A version to publish: what wharf-publish made of cargo's request.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The crate name as the publish spells it.
    pub name: CrateName,
    /// The version.
    pub vers: semver::Version,
    /// The index line, without its newline: it must name this crate, version and
    /// cksum, and say `"yanked":false` exactly once (as wharf-publish writes it).
    pub index_line: String,
    /// The sha256 of the crate file.
    pub cksum: Cksum,
    /// The package description, if any.
    pub description: Option<String>,
    /// The package keywords.
    pub keywords: Vec<String>,
    /// Who publishes: an owner of the crate, or its first owner if it is new.
    pub publisher: User,
    /// The size of the crate file.
    pub size_bytes: u64,
}

/// A version that was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The crate name as the registry spells it (that of the publish, since a
    /// different spelling is refused).
    pub name: String,
    /// The version, as the index line spells it.
    pub vers: String,
    /// Whether this publish created the crate.
    pub new_crate: bool,
    /// The crate's index revision after the publish.
    pub revision: i64,
}

/// An index file, as cargo's sparse protocol serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    /// Every index line followed by `\n`, in publish order.
    pub lines: String,
    /// Bumped by every change of the file; an ETag can be made of it.
    pub revision: i64,
    /// When the file last changed, for `Last-Modified`.
    pub updated_at: SystemTime,
}

/// One crate found by [`Crates::search`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The crate name as the registry spells it.
    pub name: String,
    /// The newest version that is not yanked, by semver (pre-releases count);
    /// `None` when every version is yanked (crates.io shows `0.0.0` then).
    pub max_version: Option<String>,
    /// The description of the crate's highest version.
    pub description: Option<String>,
}

/// The crates of one registry. Made by [`Db::crates`].
pub struct Crates<'a> {
    db: &'a Db,
    registry: &'a str,
}

/// A publish that holds its crate's lock: see [`Crates::begin_publish`].
/// Dropped without [`commit`](Self::commit), nothing of it is kept.
pub struct PendingPublish<'n> {
    tx: Tx,
    registry: String,
    krate: CrateRow,
    new_crate: bool,
    versions: Vec<VersionRow>,
    new: &'n NewVersion,
    now: i64,
}

impl PendingPublish<'_> {
    /// Adds the version and releases the crate's lock.
    pub async fn commit(self) -> Result<Published, PublishError> {
        let Self {
            mut tx,
            registry,
            krate,
            new_crate,
            versions,
            new,
            now,
        } = self;
        let vers = new.vers.to_string();
        let vers_no_build = without_build(&new.vers).to_string();
        let keywords_json = serde_json::Value::from(new.keywords.clone()).to_string();
        let parsed = parse_versions(&krate, &versions)?;
        tx.insert_version(&NewVersionRow {
            crate_id: krate.id,
            vers: &vers,
            vers_no_build: &vers_no_build,
            cksum: &new.cksum.to_hex(),
            index_line: &new.index_line,
            description: new.description.as_deref(),
            keywords_json: &keywords_json,
            size_bytes: i64::try_from(new.size_bytes).unwrap_or(i64::MAX),
            published_by: new.publisher.as_str(),
            published_at_ms: now,
        })
        .await?;

        // What search shows follows the highest version, as on crates.io: a fix
        // published for an old branch does not replace the description.
        if parsed.iter().all(|(v, _)| *v < new.vers) {
            tx.set_crate_summary(krate.id, new.description.as_deref(), &keywords_json)
                .await?;
        }
        let max = max_unyanked(
            parsed
                .iter()
                .map(|(v, row)| (v, row.yanked))
                .chain([(&new.vers, false)]),
        );
        let revision = tx.bump_crate(krate.id, now, max.as_deref()).await?;
        tx.notify_index_changed(&registry, &krate.name).await?;
        tx.commit().await?;
        Ok(Published {
            name: krate.name,
            vers,
            new_crate,
            revision,
        })
    }
}

impl<'a> Crates<'a> {
    pub(crate) fn new(db: &'a Db, registry: &'a str) -> Self {
        Self { db, registry }
    }

    /// Publishes a version, all or nothing.
    ///
    /// Refused when the name is another spelling of an existing crate, when the
    /// publisher does not own the existing crate, or when the version exists
    /// (build metadata ignored). A new crate gets the publisher as its owner.
    /// The crate's index revision is bumped.
    pub async fn publish(&self, new: &NewVersion) -> Result<Published, PublishError> {
        self.begin_publish(new).await?.commit().await
    }

    /// Starts publishing a version: locks the crate's row (creating the
    /// crate if it is new) and checks the publish as [`publish`](Self::publish)
    /// does. Until the returned [`PendingPublish`] is committed or dropped, no
    /// other publish of this crate, in any process on this database, gets
    /// past this point: the caller stores the crate file in between, and the
    /// database has decided who may.
    pub async fn begin_publish<'n>(
        &self,
        new: &'n NewVersion,
    ) -> Result<PendingPublish<'n>, PublishError> {
        check_index_line(new)?;
        let now = now_ms();
        let mut tx = self.db.write().await?;
        let (krate, new_crate) = lock_or_create(&mut tx, self.registry, &new.name, now).await?;
        let versions = if new_crate {
            tx.add_owner(krate.id, &new.publisher, &new.publisher, now)
                .await?;
            Vec::new()
        } else {
            vet(&mut tx, &krate, &new.name, &new.vers, &new.publisher).await?
        };
        Ok(PendingPublish {
            tx,
            registry: self.registry.to_owned(),
            krate,
            new_crate,
            versions,
            new,
            now,
        })
    }

    /// Whether [`publish`](Self::publish) would refuse this crate, version and
    /// publisher as things stand, without writing anything: the server asks
    /// before it stores the crate file, so a refused publish leaves no file.
    /// `publish` checks again, since another publish may come in between.
    pub async fn check_publish(
        &self,
        name: &CrateName,
        vers: &semver::Version,
        publisher: &User,
    ) -> Result<(), PublishError> {
        let mut tx = self.db.read().await?;
        if let Some(krate) = tx.find_crate(self.registry, &name.canonical()).await? {
            vet(&mut tx, &krate, name, vers, publisher).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Yanks (`yanked: true`) or unyanks a version, as `user`, who must own the
    /// crate. `krate` may be spelled in any case or with `-`/`_` swapped; `vers`
    /// may leave out build metadata. Returns whether anything changed: setting
    /// the state a version already has is not an error.
    ///
    /// The stored index line changes by exactly one substitution,
    /// `"yanked":false` ↔ `"yanked":true`, and the crate's revision is bumped.
    pub async fn set_yanked(
        &self,
        krate: &str,
        vers: &str,
        yanked: bool,
        user: &User,
    ) -> Result<bool, YankError> {
        let not_found = || YankError::CrateNotFound {
            krate: krate.to_owned(),
        };
        let name = CrateName::new(krate).map_err(|_| not_found())?;
        let mut tx = self.db.write().await?;
        let row = tx
            .lock_crate(self.registry, &name.canonical())
            .await?
            .ok_or_else(not_found)?;
        require_owner(&mut tx, &row, user).await?;

        let versions = tx.versions(row.id).await?;
        let parsed = parse_versions(&row, &versions)?;
        let version_not_found = || YankError::VersionNotFound {
            krate: row.name.clone(),
            vers: vers.to_owned(),
        };
        let wanted = semver::Version::parse(vers).map_err(|_| version_not_found())?;
        let Some(target) = parsed.iter().position(|(v, _)| {
            *v == wanted || (wanted.build.is_empty() && without_build(v) == wanted)
        }) else {
            return Err(version_not_found());
        };
        let (target_vers, target_row) = &parsed[target];
        if target_row.yanked == yanked {
            return Ok(false);
        }
        let line = flip_yanked(&target_row.index_line, yanked).ok_or_else(|| {
            DbError::Corrupt(format!(
                "the index line of {} {target_vers} does not say \"yanked\":{} exactly once",
                row.name, !yanked
            ))
        })?;
        tx.set_yanked(target_row.id, yanked, &line).await?;
        let max = max_unyanked(
            parsed
                .iter()
                .enumerate()
                .map(|(i, (v, row))| (v, if i == target { yanked } else { row.yanked })),
        );
        tx.bump_crate(row.id, now_ms(), max.as_deref()).await?;
        tx.notify_index_changed(self.registry, &row.name).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The index file of the crate whose lowercased name is `lowercase_name`
    /// (the last segment of its sparse path), or `None`.
    ///
    /// Only the crate's own spelling, lowercased, finds it: `foo_bar` does not
    /// find `foo-bar`, as on crates.io's index.
    pub async fn index_file(&self, lowercase_name: &str) -> Result<Option<IndexFile>, DbError> {
        let Ok(name) = CrateName::new(lowercase_name) else {
            return Ok(None);
        };
        if name.lowercase() != lowercase_name {
            return Ok(None);
        }
        let mut tx = self.db.read().await?;
        let rows = tx.index_rows(self.registry, &name.canonical()).await?;
        tx.commit().await?;
        let Some(rows) = rows else {
            return Ok(None);
        };
        if rows.name.to_ascii_lowercase() != lowercase_name || rows.lines.is_empty() {
            return Ok(None);
        }
        let mut lines = String::with_capacity(rows.lines.iter().map(|l| l.len() + 1).sum());
        for line in &rows.lines {
            lines.push_str(line);
            lines.push('\n');
        }
        Ok(Some(IndexFile {
            lines,
            revision: rows.revision,
            updated_at: from_ms(rows.updated_at_ms),
        }))
    }

    /// Page `page` (from 1) of `per_page` (1 to [`MAX_PER_PAGE`]) crates whose
    /// name or description contains `query`, ignoring case (and `-`/`_` in
    /// names), and how many match in all. An empty query matches every crate.
    ///
    /// Names equal to the query come first, then names containing it, then
    /// crates whose description contains it; by name within each group.
    pub async fn search(
        &self,
        query: &str,
        per_page: u32,
        page: u32,
    ) -> Result<(Vec<SearchHit>, u64), DbError> {
        self.search_within(query, None, per_page, page).await
    }

    /// [`Crates::search`] among the crates whose names match one of `grants`
    /// (crate-name globs, as `wharf_config::glob` reads them; `None` for every
    /// crate). The database filters, so the count and the pages hold only
    /// crates the caller may see: a client learns nothing of the others.
    pub async fn search_within(
        &self,
        query: &str,
        grants: Option<&[String]>,
        per_page: u32,
        page: u32,
    ) -> Result<(Vec<SearchHit>, u64), DbError> {
        let per_page = per_page.clamp(1, MAX_PER_PAGE);
        let offset = u64::from(page.max(1) - 1) * u64::from(per_page);
        let description_query = query.trim().to_lowercase();
        let name_query = description_query.replace('-', "_");
        let grant_patterns: Option<Vec<String>> =
            grants.map(|globs| globs.iter().map(|g| like_glob(g)).collect());
        let mut tx = self.db.read().await?;
        let (rows, total) = tx
            .search(
                self.registry,
                &name_query,
                &like_contains(&name_query),
                &like_contains(&description_query),
                grant_patterns.as_deref(),
                i64::from(per_page),
                i64::try_from(offset).unwrap_or(i64::MAX),
            )
            .await?;
        tx.commit().await?;
        let hits = rows
            .into_iter()
            .map(|r| SearchHit {
                name: r.name,
                max_version: r.max_version,
                description: r.description,
            })
            .collect();
        Ok((hits, u64::try_from(total).unwrap_or(0)))
    }
}

/// Locks the crate of `name`'s canonical form, creating it if there is none;
/// says whether it was created.
async fn lock_or_create(
    tx: &mut Tx,
    registry: &str,
    name: &CrateName,
    now: i64,
) -> Result<(CrateRow, bool), DbError> {
    let canonical = name.canonical();
    // Two rounds suffice: the insert only finds a conflict once another writer
    // has committed the crate, which the next lock then sees. A third is slack.
    for _ in 0..3 {
        if let Some(row) = tx.lock_crate(registry, &canonical).await? {
            return Ok((row, false));
        }
        if let Some(id) = tx
            .insert_crate(registry, name.as_str(), &canonical, now)
            .await?
        {
            let row = CrateRow {
                id,
                name: name.to_string(),
            };
            return Ok((row, true));
        }
    }
    Err(DbError::Contention(name.to_string()))
}

/// Refuses a version of the existing crate `krate` that is spelled otherwise, or
/// published by a non-owner, or already there; returns the crate's versions.
async fn vet(
    tx: &mut Tx,
    krate: &CrateRow,
    name: &CrateName,
    vers: &semver::Version,
    publisher: &User,
) -> Result<Vec<VersionRow>, PublishError> {
    if krate.name != name.as_str() {
        return Err(PublishError::NameTaken {
            requested: name.to_string(),
            existing: krate.name.clone(),
        });
    }
    require_owner(tx, krate, publisher).await?;
    let versions = tx.versions(krate.id).await?;
    if let Some((_, existing)) = parse_versions(krate, &versions)?
        .iter()
        .find(|(v, _)| without_build(v) == without_build(vers))
    {
        return Err(PublishError::VersionExists {
            krate: krate.name.clone(),
            vers: vers.to_string(),
            existing: existing.vers.clone(),
        });
    }
    Ok(versions)
}

/// The crate's versions with their semver values.
fn parse_versions<'r>(
    krate: &CrateRow,
    rows: &'r [VersionRow],
) -> Result<Vec<(semver::Version, &'r VersionRow)>, DbError> {
    rows.iter()
        .map(|row| {
            semver::Version::parse(&row.vers)
                .map(|v| (v, row))
                .map_err(|_| {
                    DbError::Corrupt(format!(
                        "crate `{}` has a version `{}` that is not semver",
                        krate.name, row.vers
                    ))
                })
        })
        .collect()
}

/// The newest of `versions` (each with whether it is yanked) not yanked.
fn max_unyanked<'v>(versions: impl Iterator<Item = (&'v semver::Version, bool)>) -> Option<String> {
    versions
        .filter(|(_, yanked)| !yanked)
        .map(|(v, _)| v)
        .max()
        .map(ToString::to_string)
}

/// `vers` without its build metadata: the part that makes two versions one.
fn without_build(vers: &semver::Version) -> semver::Version {
    semver::Version {
        build: semver::BuildMetadata::EMPTY,
        ..vers.clone()
    }
}

const NOT_YANKED: &str = r#""yanked":false"#;
const YANKED: &str = r#""yanked":true"#;

/// Refuses an index line that does not describe `new`, or that a later yank
/// could not flip.
fn check_index_line(new: &NewVersion) -> Result<(), PublishError> {
    let invalid = |why: String| Err(PublishError::InvalidIndexLine(why));
    let line = &new.index_line;
    if line.contains(['\n', '\r']) {
        return invalid("it holds a line break".to_owned());
    }
    let Some(parsed) = parse_line(line.as_bytes()) else {
        return invalid("it is not an index line".to_owned());
    };
    if parsed.name != new.name.as_str() {
        return invalid(format!("it names crate `{}`", parsed.name));
    }
    if parsed.vers != new.vers.to_string() {
        return invalid(format!("it names version `{}`", parsed.vers));
    }
    if parsed.cksum != new.cksum {
        return invalid(format!("its cksum is {}", parsed.cksum.to_hex()));
    }
    if parsed.yanked || line.matches(NOT_YANKED).count() != 1 || line.contains(YANKED) {
        return invalid(format!("it must say {NOT_YANKED} exactly once"));
    }
    Ok(())
}

/// `line` with its one `"yanked":…` flipped to `yanked`; `None` unless the line
/// says the opposite exactly once and never says `yanked` already.
fn flip_yanked(line: &str, yanked: bool) -> Option<String> {
    let (from, to) = if yanked {
        (NOT_YANKED, YANKED)
    } else {
        (YANKED, NOT_YANKED)
    };
    let mut found = line.match_indices(from);
    let (at, _) = found.next()?;
    if found.next().is_some() || line.contains(to) {
        return None;
    }
    let flipped = format!("{}{to}{}", &line[..at], &line[at + from.len()..]);
    // Belt and braces: the result must read as the state asked for.
    (parse_line(flipped.as_bytes())?.yanked == yanked).then_some(flipped)
}

/// The `LIKE` pattern (`\` escaping) that matches the canonical names a
/// crate-name glob matches: the glob folded as canonical names are (ASCII
/// lowercase, `-` as `_`), `*` as `%`, `?` as `_`, every other character
/// literal. Canonical names are ASCII, so `_` (one character) is `?` (one
/// byte).
fn like_glob(glob: &str) -> String {
    let mut pattern = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => pattern.push('%'),
            '?' => pattern.push('_'),
            '-' | '_' => pattern.push_str("\\_"),
            '%' | '\\' => {
                pattern.push('\\');
                pattern.push(c);
            }
            c => pattern.push(c.to_ascii_lowercase()),
        }
    }
    pattern
}

/// A `LIKE` pattern for "contains `text`", `\` being the escape character.
fn like_contains(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"name":"foo","vers":"1.0.0","deps":[],"cksum":"0000000000000000000000000000000000000000000000000000000000000000","features":{"yanked":["x"]},"yanked":false,"pubtime":"2026-01-01T00:00:00Z"}"#;

    #[test]
    fn flip_changes_exactly_the_yanked_value() {
        let yanked = flip_yanked(LINE, true).unwrap();
        assert_eq!(
            yanked,
            LINE.replace(r#","yanked":false,"#, r#","yanked":true,"#)
        );
        assert_eq!(yanked.len(), LINE.len() - 1);
        assert_eq!(flip_yanked(&yanked, false).as_deref(), Some(LINE));
    }

    #[test]
    fn flip_refuses_lines_it_cannot_flip_exactly_once() {
        assert_eq!(flip_yanked(LINE, false), None, "already unyanked");
        let twice = LINE.replace(r#""deps":[]"#, r#""deps":[],"yanked":false"#);
        assert_eq!(flip_yanked(&twice, true), None);
        assert_eq!(flip_yanked(r#"{"yanked": false}"#, true), None);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_contains("a_b%c\\"), "%a\\_b\\%c\\\\%");
        assert_eq!(like_contains(""), "%%");
    }

    #[test]
    fn grant_globs_become_like_patterns_over_canonical_names() {
        assert_eq!(like_glob("acme-*"), "acme\\_%");
        assert_eq!(like_glob("Acme_?x"), "acme\\__x");
        assert_eq!(like_glob("*"), "%");
        assert_eq!(like_glob("50%\\"), "50\\%\\\\");
    }

    #[test]
    fn build_metadata_does_not_make_a_new_version() {
        let a = semver::Version::parse("1.0.0+a").unwrap();
        assert_eq!(without_build(&a), semver::Version::new(1, 0, 0));
    }
}
