//! A small crates.io database dump, in the real dump's format: a gzipped
//! tarball whose one top directory is named after its time
//! (`2026-12-01-020000/`), holding `metadata.json`, `README.md`,
//! `schema.sql` and `data/*.csv`, each CSV with a header row naming its
//! columns. Only the tables and columns owner facts come from are filled in
//! (`crates`, `crate_owners` with `owner_kind` 0 for users and 1 for teams,
//! `users`, `teams`, `versions` with `published_by`), plus a few others the
//! real dump has, so a reader that goes by column names is tested.

use std::io::Write;

use flate2::{Compression, write::GzEncoder};

/// One crate of a dump.
#[derive(Debug, Clone)]
pub struct DumpCrate {
    /// Its name.
    pub name: String,
    /// Its owners: `alice` for a user, `github:org:team` for a team.
    pub owners: Vec<String>,
    /// Its versions and who published each (a user's login, or none).
    pub versions: Vec<(String, Option<String>)>,
}

impl DumpCrate {
    /// Crate `name` owned by `owners` (`alice`, `github:org:team`).
    pub fn new(name: &str, owners: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            owners: owners.iter().map(|o| (*o).to_owned()).collect(),
            versions: Vec::new(),
        }
    }

    /// Adds version `vers`, published by `login`.
    pub fn version(mut self, vers: &str, login: Option<&str>) -> Self {
        self.versions
            .push((vers.to_owned(), login.map(str::to_owned)));
        self
    }
}

/// Builds the `.tar.gz` of a dump started at `timestamp` (`2026-12-01-020000`).
pub fn build(timestamp: &str, crates: &[DumpCrate]) -> Vec<u8> {
    let mut users: Vec<String> = Vec::new();
    let mut teams: Vec<String> = Vec::new();
    let user_id = |users: &mut Vec<String>, login: &str| {
        let at = users.iter().position(|u| u == login).unwrap_or_else(|| {
            users.push(login.to_owned());
            users.len() - 1
        });
        at + 100
    };
    let mut crates_csv = String::from(
        "created_at,description,documentation,homepage,id,max_features,max_upload_size,name,readme,repository,updated_at\n",
    );
    let mut owners_csv = String::from("crate_id,created_at,created_by,owner_id,owner_kind\n");
    let mut versions_csv = String::from(
        "bin_names,checksum,crate_id,crate_size,created_at,downloads,features,has_lib,id,license,links,num,num_no_build,published_by,rust_version,updated_at,yanked\n",
    );
    let mut version_id = 1000;
    for (i, krate) in crates.iter().enumerate() {
        let crate_id = i + 1;
        crates_csv.push_str(&format!(
            "2020-01-01 00:00:00.000000+00,\"a crate, with a comma\",,,{crate_id},,,{},,,2020-01-01 00:00:00.000000+00\n",
            krate.name
        ));
        for owner in &krate.owners {
            let (id, kind) = if owner.contains(':') {
                let at = teams.iter().position(|t| t == owner).unwrap_or_else(|| {
                    teams.push(owner.clone());
                    teams.len() - 1
                });
                (at + 500, 1)
            } else {
                (user_id(&mut users, owner), 0)
            };
            owners_csv.push_str(&format!(
                "{crate_id},2020-01-01 00:00:00.000000+00,,{id},{kind}\n"
            ));
        }
        for (vers, publisher) in &krate.versions {
            version_id += 1;
            let published_by = publisher
                .as_deref()
                .map(|p| user_id(&mut users, p).to_string())
                .unwrap_or_default();
            versions_csv.push_str(&format!(
                "{{}},{:064},{crate_id},100,2020-01-01 00:00:00.000000+00,0,{{}},t,{version_id},MIT,,{vers},{vers},{published_by},,2020-01-01 00:00:00.000000+00,f\n",
                0
            ));
        }
    }
    let mut users_csv = String::from("gh_avatar,gh_id,gh_login,id,name\n");
    for (i, login) in users.iter().enumerate() {
        users_csv.push_str(&format!(",{},{login},{},\n", 9000 + i, i + 100));
    }
    let mut teams_csv = String::from("avatar,github_id,id,login,name,org_id\n");
    for (i, login) in teams.iter().enumerate() {
        teams_csv.push_str(&format!(",{},{},{login},,1\n", 7000 + i, i + 500));
    }
    let files = [
        ("README.md", "# crates.io Database Dump (test)\n".to_owned()),
        (
            "metadata.json",
            format!("{{\"timestamp\":\"{timestamp}\",\"crates_io_commit\":\"test\"}}\n"),
        ),
        (
            "schema.sql",
            "-- the schema is not needed here\n".to_owned(),
        ),
        ("data/crates.csv", crates_csv),
        ("data/crate_owners.csv", owners_csv),
        ("data/users.csv", users_csv),
        ("data/teams.csv", teams_csv),
        ("data/versions.csv", versions_csv),
        (
            "data/keywords.csv",
            "crates_cnt,created_at,id,keyword\n".to_owned(),
        ),
    ];
    let mut builder = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("{timestamp}/{path}"), body.as_bytes())
            .expect("appending to an in-memory tarball");
    }
    let tarball = builder
        .into_inner()
        .expect("finishing an in-memory tarball");
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tarball).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}
