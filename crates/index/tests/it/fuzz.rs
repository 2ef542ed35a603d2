//! Property tests of the parsers that read what an upstream or a client sends:
//! crate names, versions, checksums, sparse index paths, index lines and files,
//! and `dl` templates. Near-valid inputs (a valid value, then changed) are
//! generated as well as noise, because noise rarely gets past the first check.
//!
//! Each property runs a bounded number of cases so that CI stays fast;
//! `PROPTEST_CASES=N` raises (or lowers) every count for a longer local run.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use wharf_index::{
    Cksum, CrateName, DlTemplate, IndexPath, Version, find_version, is_well_formed, parse_line,
    prefix, same_registry_deps,
};

/// `cases` unless `PROPTEST_CASES` says otherwise; no regression files (a failure
/// found here becomes a named test instead).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid crate name in any case, one to 64 characters.
fn crate_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}"
}

/// A string that is almost `valid`: one character replaced, inserted or
/// removed, with characters that matter to paths and names favoured.
fn near(valid: String) -> impl Strategy<Value = String> {
    let tricky = prop_oneof![
        prop::sample::select(vec![
            '/', '.', '-', '_', 'A', 'z', '0', '\0', 'é', '\u{212a}', ' ', '%', '\\'
        ]),
        any::<char>(),
    ];
    (any::<prop::sample::Index>(), tricky, 0..3u8).prop_map(move |(at, c, how)| {
        let mut chars: Vec<char> = valid.chars().collect();
        let at = at.index(chars.len() + 1);
        match how {
            0 if at < chars.len() => chars[at] = c,
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ => chars.insert(at, c),
        }
        chars.into_iter().collect()
    })
}

fn cksum_hex() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 32).prop_map(hex::encode)
}

/// One index line as crates.io writes it.
fn index_line(name: &str, vers: &str, cksum: &str, yanked: bool) -> String {
    serde_json::json!({
        "name": name, "vers": vers,
        "deps": [{"name": "dep", "req": "^1", "features": [], "optional": false,
                  "default_features": true, "target": null, "kind": "normal"}],
        "cksum": cksum, "features": {}, "yanked": yanked,
    })
    .to_string()
}

proptest! {
    #![proptest_config(config(512))]

    /// A crate name's sparse path parses back to the same crate; a name is
    /// accepted exactly when it is made of the allowed characters.
    #[test]
    fn a_crate_name_round_trips_through_its_sparse_path(name in crate_name()) {
        let krate = CrateName::new(&name).unwrap();
        let path = IndexPath::for_name(&krate);
        let parsed = IndexPath::parse(path.as_str()).unwrap();
        prop_assert_eq!(parsed.name().canonical(), krate.canonical());
        prop_assert_eq!(parsed.as_str(), path.as_str());
        prop_assert_eq!(parsed.name().as_str(), name.to_ascii_lowercase());
        // The path is what cargo asks for: the prefix of the lowercase name.
        let lower = name.to_ascii_lowercase();
        let expected = format!("{}/{lower}", prefix(&lower));
        prop_assert_eq!(path.as_str(), expected);
    }

    /// Any string, and any near-miss of a valid path, either parses to a path
    /// that is exactly itself or is refused; nothing panics.
    #[test]
    fn sparse_paths_parse_only_to_themselves(
        noise in "\\PC{0,80}",
        damaged in crate_name().prop_flat_map(|name| {
            let path = IndexPath::for_name(&CrateName::new(&name).unwrap()).to_string();
            near(path)
        }),
    ) {
        for candidate in [noise, damaged] {
            if let Ok(path) = IndexPath::parse(&candidate) {
                prop_assert_eq!(path.as_str(), candidate.as_str());
                prop_assert_eq!(IndexPath::for_name(path.name()), path.clone());
                prop_assert!(!candidate.contains(".."));
                prop_assert!(!candidate.starts_with('/'));
            }
        }
    }

    /// Names and versions from anywhere are accepted only when made of the
    /// characters a URL, a storage key and a file name can hold safely.
    #[test]
    fn names_and_versions_never_panic_and_stay_safe(
        noise in "\\PC{0,80}",
        near_name in crate_name().prop_flat_map(near),
        near_vers in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(-[a-z0-9.]{1,8})?".prop_flat_map(near),
    ) {
        for candidate in [&noise, &near_name, &near_vers] {
            if let Ok(name) = CrateName::new(candidate) {
                prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
                prop_assert!(name.as_str().len() <= 64);
                let _ = (name.canonical(), name.lowercase());
            }
            if let Ok(vers) = Version::new(candidate) {
                prop_assert!(vers.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)));
                prop_assert!(vers.as_str().len() <= 128);
            }
        }
    }

    /// `prefix` and `dl` rendering take names an upstream wrote; any string
    /// renders without a panic.
    #[test]
    fn prefix_and_dl_templates_never_panic(
        name in "\\PC{0,12}",
        vers in "\\PC{0,12}",
        dl in prop_oneof![
            Just("https://u/{prefix}/{lowerprefix}/{crate}/{version}/{sha256-checksum}".to_owned()),
            "\\PC{0,40}",
        ],
    ) {
        let _ = prefix(&name);
        let url = DlTemplate::new(&dl).render(&name, &vers, &Cksum::of(b"x"));
        prop_assert!(!url.is_empty() || dl.is_empty());
    }

    /// A checksum parses exactly from 64 hex digits, in either case, and prints
    /// back in lowercase.
    #[test]
    fn checksums_parse_only_from_64_hex_digits(
        hex in cksum_hex(),
        upper in any::<bool>(),
        noise in "\\PC{0,70}",
        damaged in cksum_hex().prop_flat_map(near),
    ) {
        let text = if upper { hex.to_uppercase() } else { hex.clone() };
        let cksum = Cksum::parse(&text).unwrap();
        prop_assert_eq!(cksum.to_hex(), hex);
        for candidate in [noise, damaged] {
            let is_hex = candidate.len() == 64 && candidate.bytes().all(|b| b.is_ascii_hexdigit());
            prop_assert_eq!(Cksum::parse(&candidate).is_ok(), is_hex, "{:?}", candidate);
        }
    }

    /// In a file of generated lines mixed with junk, `find_version` finds the
    /// line of exactly the version asked for, and the other readers agree.
    #[test]
    fn find_version_finds_the_exact_line_among_junk(
        name in crate_name(),
        versions in prop::collection::btree_map(
            "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}(-rc\\.[0-9])?",
            (cksum_hex(), any::<bool>()),
            1..8,
        ),
        junk in prop::collection::vec(prop_oneof![
            "\\PC{0,40}",
            Just("{\"name\":\"x\"}".to_owned()),
            Just("{\"name\":\"x\",\"vers\":\"1.0.0\",\"cksum\":\"zz\"}".to_owned()),
            Just("[]".to_owned()),
        ], 0..4),
        pick in any::<prop::sample::Index>(),
        reverse in any::<bool>(),
    ) {
        let mut lines: Vec<String> = versions
            .iter()
            .map(|(vers, (cksum, yanked))| index_line(&name, vers, cksum, *yanked))
            .collect();
        let clean = lines.join("\n") + "\n";
        prop_assert!(is_well_formed(clean.as_bytes()));
        for line in &lines {
            prop_assert_eq!(same_registry_deps(line.as_bytes()), ["dep"]);
        }
        if reverse {
            // `1.0.0-rc.1` before `1.0.0`: a prefix match would take it.
            lines.reverse();
        }
        lines.extend(junk.into_iter().map(|j| j.replace('\n', " ")));
        let file = lines.join("\n");

        let (vers, (cksum, yanked)) = versions.iter().nth(pick.index(versions.len())).unwrap();
        let found = find_version(file.as_bytes(), vers).expect("the line is found");
        prop_assert_eq!(&found.name, &name);
        prop_assert_eq!(&found.vers, vers);
        prop_assert_eq!(found.cksum.to_hex(), cksum.clone());
        prop_assert_eq!(found.yanked, *yanked);
        // Only the exact version matches, never one it is a prefix of.
        let longer = format!("{vers}.0");
        prop_assert!(find_version(file.as_bytes(), &longer).is_none());
        let shorter = &vers[..vers.len() - 1];
        match find_version(file.as_bytes(), shorter) {
            Some(line) => prop_assert_eq!(line.vers.as_str(), shorter),
            None => prop_assert!(!versions.contains_key(shorter)),
        }
    }

    /// Index files and lines from an upstream, noise or a valid file with one
    /// byte changed, never make a reader panic.
    #[test]
    fn index_readers_never_panic(
        noise in prop::collection::vec(any::<u8>(), 0..512),
        name in crate_name(),
        cksum in cksum_hex(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        vers in "\\PC{0,10}",
    ) {
        let mut file = format!("{}\n{}\n", index_line(&name, "1.0.0", &cksum, false), index_line(&name, "1.0.1", &cksum, true)).into_bytes();
        for (at, byte) in mutations {
            let at = at.index(file.len());
            file[at] = byte;
        }
        for bytes in [&noise, &file] {
            let _ = find_version(bytes, &vers);
            let _ = find_version(bytes, "1.0.0");
            let _ = is_well_formed(bytes);
            let _ = parse_line(bytes);
            let _ = same_registry_deps(bytes);
        }
    }
}
