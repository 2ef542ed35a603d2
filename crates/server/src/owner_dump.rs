//! Reads crates.io's daily database dump (`db-dump.tar.gz`) for owner facts,
//! for `wharf owners import` and the `owners_dump_url` schedule.
//!
//! The dump is a gzipped tarball with one top directory named after the time
//! the dump started (`2026-12-01-020000/`), holding `data/*.csv` (one per
//! table, a header row naming the columns) beside `schema.sql` and
//! `metadata.json`. Owner facts come from five tables: `crates` (`id`,
//! `name`), `crate_owners` (`crate_id`, `owner_id`, `owner_kind`: 0 a user,
//! 1 a team), `users` (`id`, `gh_login`), `teams` (`id`, `login`, already
//! `github:ORG:TEAM`) and `versions` (`crate_id`, `num`, `published_by`, a
//! user id or empty). Columns are found by their header name, so the order
//! the dump writes them in does not matter; other tables are skipped without
//! being unpacked into memory.

use std::{collections::HashMap, io::Read, path::Path, time::SystemTime};

use anyhow::{Context, bail};
use wharf_db::DumpCrate;

/// What a dump says of owners and publishers.
pub struct Dump {
    /// When the dump was made (its directory's name).
    pub date: SystemTime,
    /// Every crate, with its owners and its versions' publishers.
    pub crates: Vec<DumpCrate>,
}

#[derive(Default)]
struct Tables {
    crates: Vec<(u64, String)>,
    owners: Vec<(u64, u64, bool)>,
    users: HashMap<u64, String>,
    teams: HashMap<u64, String>,
    versions: Vec<(u64, String, Option<u64>)>,
}

/// Reads the dump at `path`.
pub fn read(path: &Path) -> anyhow::Result<Dump> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the dump {}", path.display()))?;
    read_from(file).with_context(|| {
        format!(
            "{} is not a crates.io database dump (a .tar.gz with YYYY-MM-DD-HHMMSS/data/*.csv)",
            path.display()
        )
    })
}

/// Reads a dump from its `.tar.gz` bytes.
pub fn read_from(reader: impl Read) -> anyhow::Result<Dump> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut tables = Tables::default();
    let mut top: Option<String> = None;
    let mut seen = Vec::new();
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut parts = path.splitn(2, '/');
        let (Some(dir), Some(rest)) = (parts.next(), parts.next()) else {
            continue;
        };
        top.get_or_insert_with(|| dir.to_owned());
        let Some(table) = rest
            .strip_prefix("data/")
            .and_then(|f| f.strip_suffix(".csv"))
        else {
            continue;
        };
        let table = table.to_owned();
        let mut csv = csv::Reader::from_reader(entry);
        match table.as_str() {
            "crates" => read_table(&mut csv, &["id", "name"], |r| {
                tables.crates.push((id(r[0])?, r[1].to_owned()));
                Ok(())
            })?,
            "crate_owners" => read_table(&mut csv, &["crate_id", "owner_id", "owner_kind"], |r| {
                tables.owners.push((id(r[0])?, id(r[1])?, r[2] == "1"));
                Ok(())
            })?,
            "users" => read_table(&mut csv, &["id", "gh_login"], |r| {
                tables.users.insert(id(r[0])?, r[1].to_owned());
                Ok(())
            })?,
            "teams" => read_table(&mut csv, &["id", "login"], |r| {
                tables.teams.insert(id(r[0])?, r[1].to_owned());
                Ok(())
            })?,
            "versions" => read_table(&mut csv, &["crate_id", "num", "published_by"], |r| {
                let by = if r[2].is_empty() {
                    None
                } else {
                    Some(id(r[2])?)
                };
                tables.versions.push((id(r[0])?, r[1].to_owned(), by));
                Ok(())
            })?,
            _ => continue,
        }
        seen.push(table);
    }
    for needed in ["crates", "crate_owners", "users", "teams", "versions"] {
        if !seen.iter().any(|t| t == needed) {
            bail!("it has no data/{needed}.csv");
        }
    }
    let top = top.context("it is empty")?;
    Ok(Dump {
        date: dump_date(&top)?,
        crates: tables.join(),
    })
}

/// Reads the rows of one table, handing `row` the `columns` asked for.
fn read_table<R: Read>(
    csv: &mut csv::Reader<R>,
    columns: &[&str],
    mut row: impl FnMut(&[&str]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let headers = csv.headers()?.clone();
    let at: Vec<usize> = columns
        .iter()
        .map(|c| {
            headers
                .iter()
                .position(|h| h == *c)
                .with_context(|| format!("a table has no column `{c}`"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut record = csv::StringRecord::new();
    while csv.read_record(&mut record)? {
        let values: Vec<&str> = at
            .iter()
            .map(|&i| record.get(i).unwrap_or_default())
            .collect();
        row(&values)?;
    }
    Ok(())
}

fn id(text: &str) -> anyhow::Result<u64> {
    text.parse()
        .with_context(|| format!("`{text}` is not a row id"))
}

/// The time in a dump's directory name, `YYYY-MM-DD-HHMMSS` (UTC).
fn dump_date(dir: &str) -> anyhow::Result<SystemTime> {
    let bad = || format!("its directory `{dir}` is not named YYYY-MM-DD-HHMMSS");
    if dir.len() != 17 {
        bail!(bad());
    }
    let (day, time) = (&dir[..10], &dir[11..]);
    let rfc3339 = format!("{day}T{}:{}:{}Z", &time[..2], &time[2..4], &time[4..6]);
    humantime::parse_rfc3339(&rfc3339).with_context(bad)
}

impl Tables {
    /// Crates with their owners' and publishers' names.
    fn join(self) -> Vec<DumpCrate> {
        let user = |id: u64| self.users.get(&id).map(|login| format!("github:{login}"));
        let mut by_id: HashMap<u64, DumpCrate> = self
            .crates
            .into_iter()
            .map(|(id, name)| {
                (
                    id,
                    DumpCrate {
                        name,
                        owners: Vec::new(),
                        versions: Vec::new(),
                    },
                )
            })
            .collect();
        for (crate_id, owner_id, team) in self.owners {
            let owner = if team {
                self.teams.get(&owner_id).cloned()
            } else {
                user(owner_id)
            };
            if let (Some(krate), Some(owner)) = (by_id.get_mut(&crate_id), owner) {
                krate.owners.push(owner);
            }
        }
        for (crate_id, num, by) in self.versions {
            if let Some(krate) = by_id.get_mut(&crate_id) {
                krate.versions.push((num, by.and_then(user)));
            }
        }
        let mut crates: Vec<DumpCrate> = by_id.into_values().collect();
        crates.sort_by(|a, b| a.name.cmp(&b.name));
        crates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_test_support::dump::{self, DumpCrate as Fixture};

    #[test]
    fn a_dump_gives_owners_and_publishers() {
        let bytes = dump::build(
            "2026-12-01-020000",
            &[
                Fixture::new("alice-lib", &["alice", "github:our-org:core"])
                    .version("1.0.0", Some("alice"))
                    .version("1.1.0", Some("mallory"))
                    .version("0.1.0", None),
                Fixture::new("bob-lib", &["bob"]).version("1.0.0", Some("bob")),
            ],
        );
        let dump = read_from(&bytes[..]).unwrap();
        assert_eq!(
            dump.date,
            humantime::parse_rfc3339("2026-12-01T02:00:00Z").unwrap()
        );
        let alice = &dump.crates[0];
        assert_eq!(alice.name, "alice-lib");
        assert_eq!(alice.owners, ["github:alice", "github:our-org:core"]);
        assert_eq!(
            alice.versions,
            [
                ("1.0.0".to_owned(), Some("github:alice".to_owned())),
                ("1.1.0".to_owned(), Some("github:mallory".to_owned())),
                ("0.1.0".to_owned(), None),
            ]
        );
        assert_eq!(dump.crates[1].owners, ["github:bob"]);
        assert!(read_from(&b"not a tarball"[..]).is_err());
    }
}
