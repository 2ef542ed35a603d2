//! Real `.crate` files and their sparse index lines, built in memory.
//!
//! The archives are what `cargo package` would produce for a tiny library: cargo can
//! download, unpack and compile them. The bytes are deterministic (fixed tar headers and
//! gzip header), so the same builder input always yields the same checksum.

use std::collections::BTreeMap;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The modification time written into every tar header; it is the one `cargo package`
/// uses for generated files, so fixtures look like real uploads and never depend on the
/// clock.
const TAR_MTIME: u64 = 1_153_704_088;

/// Builds one [`FixtureCrate`]: a name, a version, normal dependencies and features.
#[derive(Debug, Clone)]
pub struct CrateBuilder {
    name: String,
    vers: String,
    deps: Vec<(String, String)>,
    features: BTreeMap<String, Vec<String>>,
    lib_body: Option<String>,
    yanked: bool,
    license: Option<String>,
}

impl CrateBuilder {
    /// Starts a crate called `name` at version `vers`, with no dependencies.
    pub fn new(name: &str, vers: &str) -> Self {
        Self {
            name: name.to_owned(),
            vers: vers.to_owned(),
            deps: Vec::new(),
            features: BTreeMap::new(),
            lib_body: None,
            yanked: false,
            license: None,
        }
    }

    /// Adds a normal dependency on `name` with version requirement `req` (`"^1.0.0"`).
    ///
    /// The dependency comes from the same registry, as on crates.io.
    pub fn dep(mut self, name: &str, req: &str) -> Self {
        self.deps.push((name.to_owned(), req.to_owned()));
        self
    }

    /// Declares a feature `name` that enables `enables` (written to both `Cargo.toml`
    /// and the index line).
    pub fn feature(mut self, name: &str, enables: &[&str]) -> Self {
        self.features.insert(
            name.to_owned(),
            enables.iter().map(|s| (*s).to_owned()).collect(),
        );
        self
    }

    /// Declares several features at once; see [`CrateBuilder::feature`].
    pub fn features(mut self, features: &[(&str, &[&str])]) -> Self {
        for (name, enables) in features {
            self = self.feature(name, enables);
        }
        self
    }

    /// Replaces the generated `src/lib.rs` with `body`.
    ///
    /// The default body is `pub fn value() -> u64 { 1 + dep_a::value() + … }`, which
    /// compiles only when every dependency has the same shape.
    pub fn lib_body(mut self, body: &str) -> Self {
        self.lib_body = Some(body.to_owned());
        self
    }

    /// Declares `license = EXPR` in the crate's `Cargo.toml` (the index line
    /// does not carry it, as on crates.io).
    pub fn license(mut self, expr: &str) -> Self {
        self.license = Some(expr.to_owned());
        self
    }

    /// Marks the version as yanked in its index line.
    pub fn yanked(mut self, yanked: bool) -> Self {
        self.yanked = yanked;
        self
    }

    /// Packs the crate into gzip'd tar bytes and computes its checksum.
    pub fn build(self) -> FixtureCrate {
        let lib_rs = match &self.lib_body {
            Some(body) => body.clone(),
            None => default_lib_rs(&self.deps),
        };
        let mut cargo_toml = cargo_toml(&self.name, &self.vers, &self.deps, &self.features);
        if let Some(license) = &self.license {
            // `[package]` is the first table: the key goes right after its header.
            cargo_toml = cargo_toml.replacen(
                "[package]\n",
                &format!("[package]\nlicense = {}\n", toml_str(license)),
                1,
            );
        }
        let root = format!("{}-{}", self.name, self.vers);
        let bytes = Bytes::from(pack(&[
            (format!("{root}/Cargo.toml"), cargo_toml.as_bytes()),
            (format!("{root}/src/lib.rs"), lib_rs.as_bytes()),
        ]));
        let cksum = sha256_hex(&bytes);
        FixtureCrate {
            name: self.name,
            vers: self.vers,
            deps: self.deps,
            features: self.features,
            bytes,
            cksum,
            yanked: self.yanked,
        }
    }
}

/// One published version of a crate: its `.crate` bytes and what its index line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureCrate {
    /// The crate name, in its original case.
    pub name: String,
    /// The version, `"1.0.0"`.
    pub vers: String,
    /// Normal dependencies as `(name, req)`.
    pub deps: Vec<(String, String)>,
    /// Features as `name -> [enabled things]`; empty unless the builder declared some.
    pub features: BTreeMap<String, Vec<String>>,
    /// The gzip'd tar archive, exactly what a registry serves for the download.
    pub bytes: Bytes,
    /// Lowercase hex sha256 of `bytes`.
    pub cksum: String,
    /// Whether the index line marks this version as yanked.
    pub yanked: bool,
}

impl FixtureCrate {
    /// The crate's line in a sparse index file, as compact JSON in crates.io's field
    /// order, without a trailing newline.
    pub fn index_line(&self) -> String {
        let line = IndexLine {
            name: &self.name,
            vers: &self.vers,
            deps: self
                .deps
                .iter()
                .map(|(name, req)| IndexDep {
                    name,
                    req,
                    features: Vec::new(),
                    optional: false,
                    default_features: true,
                    target: None,
                    kind: "normal",
                })
                .collect(),
            cksum: &self.cksum,
            features: &self.features,
            yanked: self.yanked,
        };
        serde_json::to_string(&line).expect("an index line always serialises")
    }

    /// The path of this version's download under the fake upstream's `dl` template,
    /// query included: `/dl/{lowerprefix}/{crate}/{crate}-{version}.crate?sum=…&p=…`.
    pub fn dl_path(&self) -> String {
        let prefix = prefix(&self.name);
        format!(
            "/dl/{lower}/{name}/{name}-{vers}.crate?sum={sum}&p={prefix}",
            lower = prefix.to_lowercase(),
            name = self.name,
            vers = self.vers,
            sum = self.cksum,
        )
    }
}

/// An index line; the field order is crates.io's and is part of the contract.
#[derive(Serialize)]
struct IndexLine<'a> {
    name: &'a str,
    vers: &'a str,
    deps: Vec<IndexDep<'a>>,
    cksum: &'a str,
    features: &'a BTreeMap<String, Vec<String>>,
    yanked: bool,
}

/// One dependency inside an index line, in crates.io's field order.
#[derive(Serialize)]
struct IndexDep<'a> {
    name: &'a str,
    req: &'a str,
    features: Vec<String>,
    optional: bool,
    default_features: bool,
    target: Option<&'a str>,
    kind: &'a str,
}

/// Builds `n` crates `{prefix}-0` .. `{prefix}-{n-1}`, all at version `1.0.0`.
///
/// Crate `i` depends on `i+1` and `i+3` when they exist, so the graph is a DAG with
/// shared dependencies whose root is `{prefix}-0` (see [`graph_root`]): depending on
/// the root pulls in all `n` crates. The root's `value()` grows roughly like 1.47^n and
/// is computed without memoisation, so keep `n` small if a test runs the binary.
pub fn graph(prefix: &str, n: usize) -> Vec<FixtureCrate> {
    (0..n)
        .map(|i| {
            let mut builder = CrateBuilder::new(&format!("{prefix}-{i}"), "1.0.0");
            for j in [i + 1, i + 3] {
                if j < n {
                    builder = builder.dep(&format!("{prefix}-{j}"), "^1.0.0");
                }
            }
            builder.build()
        })
        .collect()
}

/// The root of [`graph`]`(prefix, n)`: `{prefix}-0`.
pub fn graph_root(prefix: &str) -> String {
    format!("{prefix}-0")
}

/// Cargo's sparse index path for `name`, lowercased: `1/a`, `2/ab`, `3/a/abc`,
/// `se/rd/serde`.
pub fn sparse_path(name: &str) -> String {
    let lower = name.to_lowercase();
    format!("{}/{}", prefix(&lower), lower)
}

/// The directory part of `name`'s sparse path in the name's own case (`1`, `2`, `3/a`,
/// `Se/rd`): cargo's `{prefix}` marker. Lowercase it for `{lowerprefix}`.
pub fn prefix(name: &str) -> String {
    // Counting chars rather than bytes keeps this panic-free on non-ASCII input.
    let chars: Vec<char> = name.chars().collect();
    match chars.as_slice() {
        [] => String::new(),
        [_] => "1".to_owned(),
        [_, _] => "2".to_owned(),
        [a, _, _] => format!("3/{a}"),
        [a, b, c, d, ..] => format!("{a}{b}/{c}{d}"),
    }
}

/// The Rust path of a crate name: `-` becomes `_`.
pub fn rust_ident(name: &str) -> String {
    name.replace('-', "_")
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Quotes `s` as a TOML basic string.
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The default `src/lib.rs`: `value()` adds one to every dependency's `value()`, so a
/// build fails unless every dependency really was downloaded and compiled.
fn default_lib_rs(deps: &[(String, String)]) -> String {
    let mut expr = String::from("1");
    for (name, _) in deps {
        expr.push_str(&format!(" + {}::value()", rust_ident(name)));
    }
    format!("pub fn value() -> u64 {{\n    {expr}\n}}\n")
}

fn cargo_toml(
    name: &str,
    vers: &str,
    deps: &[(String, String)],
    features: &BTreeMap<String, Vec<String>>,
) -> String {
    let mut out = format!(
        "[package]\nname = {}\nversion = {}\nedition = \"2021\"\n",
        toml_str(name),
        toml_str(vers)
    );
    out.push_str("\n[dependencies]\n");
    for (dep, req) in deps {
        out.push_str(&format!("{} = {}\n", toml_str(dep), toml_str(req)));
    }
    if !features.is_empty() {
        out.push_str("\n[features]\n");
        for (feature, enables) in features {
            let list: Vec<String> = enables.iter().map(|e| toml_str(e)).collect();
            out.push_str(&format!("{} = [{}]\n", toml_str(feature), list.join(", ")));
        }
    }
    out
}

/// Packs `(path, contents)` entries into a gzip'd tar with fixed headers.
fn pack(entries: &[(String, &[u8])]) -> Vec<u8> {
    // Default gzip settings write mtime 0 and no file name, so the gzip layer is
    // deterministic as well.
    let gz = GzEncoder::new(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(TAR_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(&mut header, path, *contents)
            .expect("appending to an in-memory tar cannot fail");
    }
    let gz = tar
        .into_inner()
        .expect("finishing an in-memory tar cannot fail");
    gz.finish().expect("finishing in-memory gzip cannot fail")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn unpack(bytes: &[u8]) -> Vec<(String, String, u32)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        archive
            .entries()
            .expect("tar entries")
            .map(|entry| {
                let mut entry = entry.expect("tar entry");
                let path = entry.path().expect("entry path").display().to_string();
                let mode = entry.header().mode().expect("entry mode");
                let mut contents = String::new();
                entry.read_to_string(&mut contents).expect("entry contents");
                (path, contents, mode)
            })
            .collect()
    }

    #[test]
    fn crate_bytes_unpack_to_manifest_and_lib() {
        let krate = CrateBuilder::new("my-crate", "0.2.0")
            .dep("dep-a", "^1.0.0")
            .dep("b", "=2.1.0")
            .build();
        let files = unpack(&krate.bytes);
        let paths: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["my-crate-0.2.0/Cargo.toml", "my-crate-0.2.0/src/lib.rs"]
        );
        assert!(files.iter().all(|(_, _, mode)| *mode == 0o644));
        let manifest = &files[0].1;
        assert!(manifest.contains("name = \"my-crate\""), "{manifest}");
        assert!(manifest.contains("version = \"0.2.0\""), "{manifest}");
        assert!(manifest.contains("edition = \"2021\""), "{manifest}");
        assert!(manifest.contains("\"dep-a\" = \"^1.0.0\""), "{manifest}");
        assert!(manifest.contains("\"b\" = \"=2.1.0\""), "{manifest}");
        assert_eq!(
            files[1].1,
            "pub fn value() -> u64 {\n    1 + dep_a::value() + b::value()\n}\n"
        );
        assert_eq!(krate.cksum, sha256_hex(&krate.bytes));
        assert_eq!(krate.cksum.len(), 64);
        assert!(
            krate
                .cksum
                .chars()
                .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        );
    }

    #[test]
    fn crate_bytes_are_deterministic() {
        let a = CrateBuilder::new("same", "1.0.0").dep("x", "1").build();
        let b = CrateBuilder::new("same", "1.0.0").dep("x", "1").build();
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.cksum, b.cksum);
        let c = CrateBuilder::new("same", "1.0.1").dep("x", "1").build();
        assert_ne!(a.cksum, c.cksum);
    }

    #[test]
    fn index_line_matches_crates_io_shape() {
        let krate = CrateBuilder::new("foo", "1.2.3").dep("bar", "^0.1").build();
        let expected = format!(
            concat!(
                r#"{{"name":"foo","vers":"1.2.3","deps":[{{"name":"bar","req":"^0.1","#,
                r#""features":[],"optional":false,"default_features":true,"target":null,"#,
                r#""kind":"normal"}}],"cksum":"{}","features":{{}},"yanked":false}}"#
            ),
            krate.cksum
        );
        assert_eq!(krate.index_line(), expected);
        let yanked = CrateBuilder::new("foo", "1.2.4").yanked(true).build();
        assert!(
            yanked
                .index_line()
                .ends_with(r#""features":{},"yanked":true}"#)
        );
    }

    #[test]
    fn features_reach_manifest_and_index_line() {
        let krate = CrateBuilder::new("feat", "1.0.0")
            .features(&[("default", &["std"]), ("std", &[])])
            .build();
        assert!(
            krate
                .index_line()
                .contains(r#""features":{"default":["std"],"std":[]}"#)
        );
        let manifest = &unpack(&krate.bytes)[0].1;
        assert!(manifest.contains("[features]\n\"default\" = [\"std\"]\n\"std\" = []\n"));
    }

    #[test]
    fn sparse_paths_follow_cargo_layout() {
        assert_eq!(sparse_path("a"), "1/a");
        assert_eq!(sparse_path("ab"), "2/ab");
        assert_eq!(sparse_path("abc"), "3/a/abc");
        assert_eq!(sparse_path("serde"), "se/rd/serde");
        assert_eq!(sparse_path("Serde_JSON"), "se/rd/serde_json");
        assert_eq!(sparse_path("fx-0"), "fx/-0/fx-0");
        assert_eq!(prefix("Serde"), "Se/rd");
        assert_eq!(prefix("ABC"), "3/A");
    }

    #[test]
    fn graph_is_a_dag_rooted_at_zero() {
        let crates = graph("g", 5);
        let names: Vec<&str> = crates.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["g-0", "g-1", "g-2", "g-3", "g-4"]);
        let deps =
            |i: usize| -> Vec<&str> { crates[i].deps.iter().map(|(n, _)| n.as_str()).collect() };
        assert_eq!(deps(0), ["g-1", "g-3"]);
        assert_eq!(deps(1), ["g-2", "g-4"]);
        assert_eq!(deps(3), ["g-4"]);
        assert!(deps(4).is_empty());
        assert_eq!(graph_root("g"), "g-0");
    }
}
