//! End to end through the public API: a publish body as cargo builds it, with a real
//! gzip'd tar, to the index line.

mod fuzz;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use wharf_publish::{
    Limits, PublishError, index_line, parse_publish_body, parse_publish_body_with,
};

/// A `.crate` file laid out as `cargo package` lays it out.
fn crate_file(prefix: &str, manifest: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let files: [(&str, &[u8]); 4] = [
        ("Cargo.toml", manifest.as_bytes()),
        ("Cargo.toml.orig", manifest.as_bytes()),
        ("src/lib.rs", b"pub fn hello() {}\n"),
        ("README.md", b"# hello\n"),
    ];
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_153_704_088);
        builder
            .append_data(&mut header, format!("{prefix}/{path}"), data)
            .unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A publish body: `u32 LE` length, JSON, `u32 LE` length, crate file.
fn body(metadata: &serde_json::Value, crate_file: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(metadata).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&(crate_file.len() as u32).to_le_bytes());
    out.extend_from_slice(crate_file);
    out
}

fn manifest(name: &str, version: &str) -> String {
    format!("[package]\nedition = \"2021\"\nname = \"{name}\"\nversion = \"{version}\"\n")
}

/// The metadata cargo 1.95 sends, with every field, for `foo-bar 1.2.3`.
fn full_metadata() -> serde_json::Value {
    serde_json::json!({
        "name": "foo-bar",
        "vers": "1.2.3",
        "deps": [
            {
                "optional": false, "default_features": true, "name": "winapi",
                "features": ["winuser"], "version_req": "^0.3", "target": "cfg(windows)",
                "kind": "normal"
            },
            {
                "optional": false, "default_features": true, "name": "tempfile",
                "features": [], "version_req": "^3", "target": null, "kind": "dev"
            },
            {
                "optional": true, "default_features": false, "name": "serde",
                "features": ["derive"], "version_req": "^1.0.200", "target": null,
                "kind": "normal", "explicit_name_in_toml": "serde1"
            },
            {
                "optional": false, "default_features": true, "name": "log",
                "features": [], "version_req": "^0.4", "target": null, "kind": "normal",
                "registry": "https://github.com/rust-lang/crates.io-index"
            },
            {
                "optional": false, "default_features": true, "name": "cc",
                "features": [], "version_req": "^1", "target": null, "kind": "build"
            }
        ],
        "features": {
            "default": ["std"],
            "std": [],
            "serde": ["dep:serde1"],
            "full": ["serde", "std"]
        },
        "authors": ["A. Person <a@example.com>"],
        "description": "says hello",
        "documentation": null,
        "homepage": "https://example.com",
        "readme": "# hello\n",
        "readme_file": "README.md",
        "keywords": ["hello", "greeting"],
        "categories": ["development-tools"],
        "license": "MIT OR Apache-2.0",
        "license_file": null,
        "repository": "https://example.com/foo-bar.git",
        "badges": {},
        "links": "hello",
        "rust_version": "1.70",
        "a_field_from_a_future_cargo": [1, 2, 3]
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// 2025-11-18T08:58:23.013233232Z, the instant of crates.io's own `pubtime` test.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_763_456_303, 13_233_232)
}

#[test]
fn builds_the_index_line_crates_io_would() {
    let krate = crate_file("foo-bar-1.2.3", &manifest("foo-bar", "1.2.3"));
    let request = parse_publish_body(&body(&full_metadata(), &krate), 10 << 20).unwrap();

    assert_eq!(request.name().as_str(), "foo-bar");
    assert_eq!(request.version().to_string(), "1.2.3");
    assert_eq!(request.vers().as_str(), "1.2.3");
    assert_eq!(request.tarball(), krate.as_slice());
    assert_eq!(request.cksum().to_hex(), sha256_hex(&krate));
    assert_eq!(request.metadata().readme.as_deref(), Some("# hello\n"));

    let expected = concat!(
        r#"{"name":"foo-bar","vers":"1.2.3","deps":["#,
        r#"{"name":"cc","req":"^1","features":[],"optional":false,"default_features":true,"target":null,"kind":"build"},"#,
        r#"{"name":"log","req":"^0.4","features":[],"optional":false,"default_features":true,"target":null,"kind":"normal","registry":"https://github.com/rust-lang/crates.io-index"},"#,
        r#"{"name":"serde1","req":"^1.0.200","features":["derive"],"optional":true,"default_features":false,"target":null,"kind":"normal","package":"serde"},"#,
        r#"{"name":"tempfile","req":"^3","features":[],"optional":false,"default_features":true,"target":null,"kind":"dev"},"#,
        r#"{"name":"winapi","req":"^0.3","features":["winuser"],"optional":false,"default_features":true,"target":"cfg(windows)","kind":"normal"}"#,
        r#"],"cksum":"CKSUM","#,
        r#""features":{"default":["std"],"std":[]},"#,
        r#""features2":{"full":["serde","std"],"serde":["dep:serde1"]},"#,
        r#""yanked":false,"links":"hello","rust_version":"1.70","pubtime":"2025-11-18T08:58:23Z","v":2}"#,
    )
    .replace("CKSUM", &sha256_hex(&krate));
    assert_eq!(index_line(&request, now()), expected);
}

#[test]
fn a_plain_crate_has_crates_io_minimal_line() {
    let metadata = serde_json::json!({"name": "foo", "vers": "0.1.0"});
    let krate = crate_file("foo-0.1.0", &manifest("foo", "0.1.0"));
    let request = parse_publish_body(&body(&metadata, &krate), 10 << 20).unwrap();
    assert_eq!(
        index_line(&request, UNIX_EPOCH + Duration::from_secs(1_577_836_800)),
        format!(
            r#"{{"name":"foo","vers":"0.1.0","deps":[],"cksum":"{}","features":{{}},"yanked":false,"pubtime":"2020-01-01T00:00:00Z"}}"#,
            sha256_hex(&krate)
        )
    );
}

#[test]
fn the_line_is_one_line_that_wharf_index_reads_back() {
    let krate = crate_file("foo-bar-1.2.3", &manifest("foo-bar", "1.2.3"));
    let request = parse_publish_body(&body(&full_metadata(), &krate), 10 << 20).unwrap();
    let line = index_line(&request, now());
    assert!(!line.contains('\n'));
    let read = wharf_index::parse_line(line.as_bytes()).unwrap();
    assert_eq!(read.name, "foo-bar");
    assert_eq!(read.vers, "1.2.3");
    assert_eq!(read.cksum, request.cksum());
    assert!(!read.yanked);
    // Only same-registry normal and build dependencies, by real name.
    assert_eq!(
        wharf_index::same_registry_deps(line.as_bytes()),
        ["cc", "serde", "winapi"]
    );
}

#[test]
fn prerelease_and_build_versions_keep_their_spelling() {
    let metadata = serde_json::json!({"name": "foo", "vers": "1.0.0-rc.1+build.5"});
    let krate = crate_file(
        "foo-1.0.0-rc.1+build.5",
        &manifest("foo", "1.0.0-rc.1+build.5"),
    );
    let request = parse_publish_body(&body(&metadata, &krate), 10 << 20).unwrap();
    assert!(index_line(&request, now()).contains(r#""vers":"1.0.0-rc.1+build.5""#));
}

#[test]
fn metadata_and_manifest_must_agree() {
    let metadata = serde_json::json!({"name": "foo-bar", "vers": "1.2.3"});

    let krate = crate_file("foo-bar-1.2.3", &manifest("foo_bar", "1.2.3"));
    let err = parse_publish_body(&body(&metadata, &krate), 10 << 20).unwrap_err();
    assert_eq!(
        err.to_string(),
        "metadata name `foo-bar` does not match manifest name `foo_bar`"
    );

    let krate = crate_file("foo-bar-1.2.3", &manifest("foo-bar", "1.2.4"));
    let err = parse_publish_body(&body(&metadata, &krate), 10 << 20).unwrap_err();
    assert_eq!(
        err,
        PublishError::VersionMismatch {
            metadata: "1.2.3".into(),
            manifest: "1.2.4".into()
        }
    );

    let krate = crate_file("foo-bar-1.2.3", &manifest("foo-bar", "not-a-version"));
    let err = parse_publish_body(&body(&metadata, &krate), 10 << 20).unwrap_err();
    assert!(matches!(err, PublishError::VersionMismatch { .. }));
}

#[test]
fn the_crate_file_must_be_in_the_metadatas_directory() {
    let metadata = serde_json::json!({"name": "foo", "vers": "1.0.0"});
    let krate = crate_file("foo-1.0.1", &manifest("foo", "1.0.0"));
    let err = parse_publish_body(&body(&metadata, &krate), 10 << 20).unwrap_err();
    assert_eq!(
        err,
        PublishError::EntryOutsidePackage {
            path: "foo-1.0.1/Cargo.toml".into(),
            prefix: "foo-1.0.0".into()
        }
    );
}

#[test]
fn metadata_errors_come_before_the_crate_file_is_read() {
    // The crate file is garbage; the metadata's faults are reported first.
    let cases = [
        (
            serde_json::json!({"name": "std", "vers": "1.0.0"}),
            "the crate name `std` is reserved; choose another name",
        ),
        (
            serde_json::json!({"name": "9lives", "vers": "1.0.0"}),
            "invalid crate name `9lives`: the name cannot start with a digit",
        ),
        (
            serde_json::json!({"name": "foo", "vers": "1.0"}),
            "`1.0` is an invalid semver version; use a version such as `1.2.3`",
        ),
        (
            serde_json::json!({"name": "foo", "vers": "1.0.0", "keywords": ["a b"]}),
            "`a b` is an invalid keyword; keywords have at most 20 characters, start with an ASCII letter or digit and hold only ASCII letters, digits, `_`, `-` and `+`",
        ),
    ];
    for (metadata, message) in cases {
        let err = parse_publish_body(&body(&metadata, b"garbage"), 10 << 20).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    let err = parse_publish_body(
        &body(
            &serde_json::json!({"name": "foo", "vers": "1.0.0"}),
            b"garbage",
        ),
        10 << 20,
    )
    .unwrap_err();
    assert_eq!(err, PublishError::NotGzip);
}

#[test]
fn invalid_json_is_refused_with_serdes_reason() {
    let mut b = Vec::new();
    b.extend_from_slice(&5u32.to_le_bytes());
    b.extend_from_slice(b"{nope");
    b.extend_from_slice(&0u32.to_le_bytes());
    let err = parse_publish_body(&b, 10 << 20).unwrap_err();
    assert!(matches!(err, PublishError::InvalidMetadata(_)));
    assert!(
        err.to_string()
            .starts_with("invalid upload request: key must be a string"),
        "{err}"
    );

    let missing = body(&serde_json::json!({"name": "foo"}), b"");
    let err = parse_publish_body(&missing, 10 << 20).unwrap_err();
    assert!(err.to_string().contains("missing field `vers`"), "{err}");
}

#[test]
fn limits_are_configurable() {
    let krate = crate_file("foo-1.0.0", &manifest("foo", "1.0.0"));
    let b = body(&serde_json::json!({"name": "foo", "vers": "1.0.0"}), &krate);
    let tight = Limits {
        max_unpacked_bytes: 1024,
        ..Limits::new(10 << 20)
    };
    assert_eq!(
        parse_publish_body_with(&b, &tight).unwrap_err(),
        PublishError::UnpackedTooLarge { max_bytes: 1024 }
    );
    let err = parse_publish_body(&b, krate.len() as u64 - 1).unwrap_err();
    assert!(err.is_too_large());
    assert!(parse_publish_body(&b, krate.len() as u64).is_ok());
}

#[test]
fn every_message_is_one_lowercase_line_without_a_period() {
    let samples = [
        parse_publish_body(b"", 1).unwrap_err(),
        PublishError::TruncatedTarball,
        PublishError::NotGzip,
        PublishError::InvalidManifest("x".into()),
        PublishError::UnpackedTooLarge { max_bytes: 1 },
        PublishError::TooManyKeywords { count: 6 },
        PublishError::VersionTooLong,
    ];
    for err in samples {
        let message = err.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(!message.ends_with('.'), "{message}");
        assert!(
            message.starts_with(|c: char| !c.is_uppercase()),
            "{message}"
        );
    }
}

/// A body captured from `cargo publish` (cargo 1.95, `--registry` pointing at a stub
/// server) for a crate whose dependencies are all on crates.io: a renamed optional
/// one, a target-specific one, a dev and a build dependency, a `dep:` feature, and a
/// path long enough that cargo writes a GNU long-name entry.
const CARGO_BODY: &[u8] = include_bytes!("fixtures/cargo-1.95-foo-bar-1.2.3.body");

#[test]
fn a_body_cargo_sent_gives_the_expected_line() {
    let request = parse_publish_body(CARGO_BODY, 10 << 20).unwrap();
    assert_eq!(
        request.cksum().to_hex(),
        "508f8d50a452afd173ad19e9798a3e38aa7c8b546600f15df4cbef8ab055130d"
    );
    let crates_io = "https://github.com/rust-lang/crates.io-index";
    let expected = concat!(
        r#"{"name":"foo-bar","vers":"1.2.3","deps":["#,
        r#"{"name":"cfg-if","req":"^1","features":[],"optional":false,"default_features":true,"target":null,"kind":"build","registry":"CRATES_IO"},"#,
        r#"{"name":"itoa","req":"^1","features":[],"optional":false,"default_features":true,"target":null,"kind":"dev","registry":"CRATES_IO"},"#,
        r#"{"name":"log","req":"^0.4","features":[],"optional":false,"default_features":true,"target":null,"kind":"normal","registry":"CRATES_IO"},"#,
        r#"{"name":"serde1","req":"^1.0.200","features":["derive"],"optional":true,"default_features":false,"target":null,"kind":"normal","registry":"CRATES_IO","package":"serde"},"#,
        r#"{"name":"winapi","req":"^0.3","features":["winuser"],"optional":false,"default_features":true,"target":"cfg(windows)","kind":"normal","registry":"CRATES_IO"}"#,
        r#"],"cksum":"508f8d50a452afd173ad19e9798a3e38aa7c8b546600f15df4cbef8ab055130d","#,
        r#""features":{"default":["std"],"std":[]},"#,
        r#""features2":{"full":["serde","std"],"serde":["dep:serde1"]},"#,
        r#""yanked":false,"links":"hello","rust_version":"1.70","pubtime":"2025-11-18T08:58:23Z","v":2}"#,
    )
    .replace("CRATES_IO", crates_io);
    assert_eq!(index_line(&request, now()), expected);
    // Nothing here is from this registry.
    assert!(wharf_index::same_registry_deps(expected.as_bytes()).is_empty());
}

#[test]
fn every_cut_of_a_cargo_body_is_refused() {
    for len in (0..CARGO_BODY.len()).step_by(7) {
        assert!(
            parse_publish_body(&CARGO_BODY[..len], 10 << 20).is_err(),
            "{len}"
        );
    }
}
