//! Property tests of what a client or an upstream controls: the publish body, the
//! crate file inside it, and licence expressions. Bodies are generated valid and then
//! damaged (one byte changed, cut short, lengths lied about) as well as drawn as raw
//! noise, because noise alone almost never gets past the length prefix.
//!
//! Each property runs a bounded number of cases so that CI stays fast;
//! `PROPTEST_CASES=N` raises (or lowers) every count for a longer local run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use wharf_publish::rules::is_reserved_name;
use wharf_publish::{
    LicenseExpr, Limits, PublishError, index_line, license_of, parse_publish_body_with,
};

/// Counts the bytes the test binary has allocated, so that "no unbounded
/// allocation" can be asserted rather than hoped for. nextest runs every test in a
/// process of its own, so the peak is this test's.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on to `System`.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        new
    }
}

fn grow(size: usize) {
    let live = LIVE_BYTES.fetch_add(size, Ordering::Relaxed) + size;
    PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes live at once while `f` ran, beyond what was live before.
fn peak_allocated<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.store(before, Ordering::Relaxed);
    let out = f();
    (
        out,
        PEAK_BYTES.load(Ordering::Relaxed).saturating_sub(before),
    )
}

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

/// Small limits so that a case is fast, and wide enough for every generated crate.
fn limits() -> Limits {
    Limits {
        max_unpacked_bytes: 1 << 20,
        ..Limits::new(1 << 20)
    }
}

fn crate_name() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9_-]{0,30}".prop_filter("reserved", |n| !is_reserved_name(n))
}

fn version() -> impl Strategy<Value = String> {
    let pre = proptest::option::of(("[a-z][a-z0-9-]{0,6}", proptest::option::of(0u32..1000)));
    let build = proptest::option::of("[a-zA-Z0-9]{1,6}");
    (0u64..100, 0u64..1000, 0u64..10_000, pre, build).prop_map(
        |(major, minor, patch, pre, build)| {
            let mut v = format!("{major}.{minor}.{patch}");
            if let Some((word, number)) = pre {
                v.push('-');
                v.push_str(&word);
                if let Some(n) = number {
                    v.push_str(&format!(".{n}"));
                }
            }
            if let Some(build) = build {
                v.push('+');
                v.push_str(&build);
            }
            v
        },
    )
}

fn dependency() -> impl Strategy<Value = serde_json::Value> {
    (
        "[a-zA-Z][a-zA-Z0-9_-]{0,20}",
        prop::sample::select(vec!["^1", "~0.3.2", ">=1.0, <2", "=1.2.3", "0.1", "^0.0.1"]),
        prop::sample::select(vec!["normal", "dev", "build"]),
        any::<bool>(),
        prop::collection::vec("[a-z][a-z0-9_]{0,8}", 0..3),
        proptest::option::of(prop::sample::select(vec![
            "cfg(unix)",
            "x86_64-pc-windows-msvc",
        ])),
        proptest::option::of("_?[a-z][a-z0-9_]{0,8}"),
    )
        .prop_map(|(name, req, kind, optional, features, target, rename)| {
            serde_json::json!({
                "name": name, "version_req": req, "kind": kind, "optional": optional,
                "default_features": !optional, "features": features, "target": target,
                "explicit_name_in_toml": rename,
            })
        })
}

/// Valid metadata for a crate `name` `vers`, with everything cargo may send.
fn metadata(name: String, vers: String) -> impl Strategy<Value = serde_json::Value> {
    (
        prop::collection::vec(dependency(), 0..6),
        prop::collection::btree_map(
            "[a-z0-9_][a-z0-9_+.-]{0,10}",
            prop::collection::vec("[a-z][a-z0-9_]{0,6}(/[a-z][a-z0-9]{0,5})?", 0..3),
            0..6,
        ),
        proptest::option::of("\\PC{0,60}"),
        proptest::option::of(prop::sample::select(vec![
            "MIT",
            "MIT OR Apache-2.0",
            "(MIT OR Apache-2.0) AND Unicode-3.0",
            "GPL-2.0+ WITH Classpath-exception-2.0",
        ])),
        prop::collection::vec("[a-zA-Z0-9][a-zA-Z0-9_+-]{0,19}", 0..5),
        proptest::option::of("\\PC{0,200}"),
        proptest::option::of("1\\.(0|[1-9][0-9]?)(\\.[0-9])?"),
    )
        .prop_map(
            move |(deps, features, description, license, keywords, readme, rust_version)| {
                serde_json::json!({
                    "name": name, "vers": vers, "deps": deps, "features": features,
                    "authors": ["A. Person <a@example.com>"], "description": description,
                    "documentation": null, "homepage": "https://example.com/x",
                    "readme": readme, "readme_file": "README.md", "keywords": keywords,
                    "categories": [], "license": license, "license_file": null,
                    "repository": null, "badges": {}, "links": null,
                    "rust_version": rust_version,
                })
            },
        )
}

/// A `.crate` file as `cargo package` lays one out, with `extra` files.
fn crate_file(name: &str, vers: &str, extra: &[(String, Vec<u8>)]) -> Vec<u8> {
    gzip(&tar(name, vers, extra))
}

fn tar(name: &str, vers: &str, extra: &[(String, Vec<u8>)]) -> Vec<u8> {
    let prefix = format!("{name}-{vers}");
    let manifest = format!(
        "[package]\nedition = \"2021\"\nname = \"{name}\"\nversion = \"{vers}\"\nlicense = \"MIT\"\n"
    );
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("Cargo.toml".into(), manifest.clone().into_bytes()),
        ("Cargo.toml.orig".into(), manifest.into_bytes()),
        ("src/lib.rs".into(), b"pub fn hello() {}\n".to_vec()),
    ];
    files.extend(extra.iter().cloned());
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, format!("{prefix}/{path}"), data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// `u32 LE` length, JSON, `u32 LE` length, crate file.
fn frame(json: &[u8], crate_file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(&(crate_file.len() as u32).to_le_bytes());
    out.extend_from_slice(crate_file);
    out
}

fn extra_files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        (
            "[a-z]{1,8}(/[a-z]{1,8}){0,2}\\.rs",
            prop::collection::vec(any::<u8>(), 0..512),
        ),
        0..4,
    )
}

/// A valid publish body and what it is for: (body, name, vers).
fn valid_body() -> impl Strategy<Value = (Vec<u8>, String, String)> {
    (crate_name(), version(), extra_files()).prop_flat_map(|(name, vers, extra)| {
        metadata(name.clone(), vers.clone()).prop_map(move |metadata| {
            let json = serde_json::to_vec(&metadata).unwrap();
            let krate = crate_file(&name, &vers, &extra);
            (frame(&json, &krate), name.clone(), vers.clone())
        })
    })
}

/// The most a parse may hold at once: the gzip window and tar's buffers, the
/// manifest, and a few copies of the body (the JSON tree, the crate file kept).
fn allocation_bound(body_len: usize) -> usize {
    (2 << 20) + 8 * body_len
}

proptest! {
    #![proptest_config(config(256))]

    /// A generated valid body parses, its index line reads back, and any single
    /// byte changed anywhere in it is either accepted or refused, without a panic
    /// and within a bounded allocation.
    #[test]
    fn valid_bodies_parse_and_single_byte_mutations_never_panic(
        (body, name, vers) in valid_body(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let request = match parse_publish_body_with(&body, &limits()) {
            Ok(request) => request,
            Err(e) => return Err(TestCaseError::fail(format!("{name} {vers}: {e}"))),
        };
        prop_assert_eq!(request.name().as_str(), name.as_str());
        let line = index_line(&request, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let read = wharf_index::parse_line(line.as_bytes()).expect("the line reads back");
        prop_assert_eq!(read.name, name);
        prop_assert_eq!(read.cksum, request.cksum());
        prop_assert_eq!(read.vers, request.version().to_string());

        // Half the mutations hit a length prefix: noise spread over the whole
        // body would rarely touch the eight bytes that frame it.
        let crate_length_at = 4 + u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
        for (i, (at, byte)) in mutations.into_iter().enumerate() {
            let mut damaged = body.clone();
            let at = match i % 4 {
                0 => at.index(4),
                1 => crate_length_at + at.index(4),
                _ => at.index(damaged.len()),
            };
            damaged[at] = byte;
            let (_, peak) = peak_allocated(|| parse_publish_body_with(&damaged, &limits()));
            prop_assert!(peak <= allocation_bound(body.len()), "{peak} bytes for a {} byte body", body.len());
        }
    }

    /// Every truncation of a valid body is refused.
    #[test]
    fn truncated_bodies_are_refused((body, _, _) in valid_body(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(body.len());
        prop_assert!(parse_publish_body_with(&body[..cut], &limits()).is_err());
    }

    /// A declared JSON length longer than the body is an error found without
    /// allocating what it claims, whatever the limit.
    #[test]
    fn a_declared_json_length_beyond_the_body_is_an_error_not_an_allocation(
        (body, _, _) in valid_body(),
        claimed in any::<u32>(),
    ) {
        let rest = body.len() as u64 - 4;
        prop_assume!(u64::from(claimed) > rest);
        let mut lying = body.clone();
        lying[..4].copy_from_slice(&claimed.to_le_bytes());
        let unlimited = Limits {
            max_metadata_bytes: u64::MAX,
            max_crate_bytes: u64::MAX,
            ..limits()
        };
        for limits in [limits(), unlimited] {
            let (result, peak) = peak_allocated(|| parse_publish_body_with(&lying, &limits));
            let err = result.unwrap_err();
            prop_assert!(
                matches!(err, PublishError::Truncated { .. } | PublishError::MetadataTooLarge { .. }),
                "{err:?}"
            );
            prop_assert!(peak < 4096, "{peak} bytes allocated for a lie of {claimed}");
        }
    }

    /// Raw noise, and noise behind a well-formed frame (so the JSON and the crate
    /// file readers see it), never panics.
    #[test]
    fn noise_never_panics(
        noise in prop::collection::vec(any::<u8>(), 0..2048),
        json in prop::collection::vec(any::<u8>(), 0..256),
        gz_tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = parse_publish_body_with(&noise, &limits());
        let _ = parse_publish_body_with(&frame(&json, &noise), &limits());
        // Valid metadata, then a crate file that is gzip's magic and noise.
        let json = br#"{"name":"foo","vers":"1.0.0"}"#;
        let mut krate = vec![0x1f, 0x8b, 8, 0];
        krate.extend_from_slice(&gz_tail);
        let _ = parse_publish_body_with(&frame(json, &krate), &limits());
        let _ = license_of(&krate, "foo-1.0.0");
    }

    /// A valid gzip stream around a damaged tar (so tar, not gzip, meets the
    /// damage) never panics, in the publish check or in the licence reader.
    #[test]
    fn damaged_tar_inside_valid_gzip_never_panics(
        name in crate_name(),
        vers in version(),
        extra in extra_files(),
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut tar = tar(&name, &vers, &extra);
        for (at, byte) in mutations {
            let at = at.index(tar.len());
            tar[at] = byte;
        }
        check_crate_file(&name, &vers, &tar)?;
    }

    /// Tar headers that are hostile yet carry a correct checksum (so that tar
    /// reads them instead of stopping at the first damaged block): any path
    /// bytes, any entry type, sizes that disagree with the data, pax records,
    /// and archives that end early.
    #[test]
    fn hostile_tar_headers_never_panic(
        name in crate_name(),
        vers in version(),
        entries in prop::collection::vec(hostile_entry(), 0..6),
        end_blocks in 0usize..3,
    ) {
        let prefix = format!("{name}-{vers}");
        let mut tar = Vec::new();
        for entry in entries {
            entry.write(&prefix, &mut tar);
        }
        tar.extend(std::iter::repeat_n(0u8, 512 * end_blocks));
        check_crate_file(&name, &vers, &tar)?;
    }

    /// Licence expressions from any crate's `Cargo.toml` parse or fail, and never
    /// panic or overflow the stack.
    #[test]
    fn license_expressions_never_panic(
        words in prop::collection::vec(
            prop::sample::select(vec!["MIT", "Apache-2.0", "AND", "OR", "WITH", "(", ")", "/", "+", " ", "GPL-2.0+", "x", "and", "or"]),
            0..64,
        ),
        noise in "\\PC{0,64}",
        depth in 0usize..300,
    ) {
        let expr = format!("{}{}{}", "(".repeat(depth), words.concat(), ")".repeat(depth));
        if let Ok(parsed) = LicenseExpr::parse(&expr) {
            let _ = parsed.satisfiable(&|names| names.iter().any(|n| n == "MIT"));
        }
        let _ = LicenseExpr::parse(&noise);
    }
}

/// Checks `tar` as the crate file of `name` `vers` through the publish body and
/// the licence reader: any outcome but a panic, within a bounded allocation.
fn check_crate_file(name: &str, vers: &str, tar: &[u8]) -> Result<(), TestCaseError> {
    let krate = gzip(tar);
    let json = serde_json::to_vec(&serde_json::json!({"name": name, "vers": vers})).unwrap();
    let body = frame(&json, &krate);
    let (_, peak) = peak_allocated(|| parse_publish_body_with(&body, &limits()));
    prop_assert!(
        peak <= allocation_bound(body.len() + tar.len()),
        "{peak} bytes"
    );
    let _ = license_of(&krate, &format!("{name}-{vers}"));
    Ok(())
}

/// One tar entry written block by block, the header's checksum made right
/// after everything else in it was made wrong.
#[derive(Debug, Clone)]
struct HostileEntry {
    /// Appended to `{prefix}/` unless `absolute`.
    path: Vec<u8>,
    absolute: bool,
    kind: u8,
    link: Vec<u8>,
    data: Vec<u8>,
    /// The size the header declares, against `data.len()`.
    declared_size: u64,
    /// A pax record (`size`, `path`, anything) in an `x` entry before this one.
    pax: Option<(String, Vec<u8>)>,
}

impl HostileEntry {
    fn write(&self, prefix: &str, out: &mut Vec<u8>) {
        if let Some((key, value)) = &self.pax {
            let mut record = Vec::new();
            let body_len = key.len() + value.len() + 3;
            // The length counts its own digits.
            let digits = (body_len + 3).to_string().len();
            record.extend_from_slice(format!("{} {key}=", body_len + digits).as_bytes());
            record.extend_from_slice(value);
            record.push(b'\n');
            write_entry(
                out,
                b"PaxHeaders/x",
                b'x',
                b"",
                &record,
                record.len() as u64,
            );
        }
        let mut path = Vec::new();
        if !self.absolute {
            path.extend_from_slice(prefix.as_bytes());
            path.push(b'/');
        }
        path.extend_from_slice(&self.path);
        write_entry(
            out,
            &path,
            self.kind,
            &self.link,
            &self.data,
            self.declared_size,
        );
    }
}

fn write_entry(out: &mut Vec<u8>, path: &[u8], kind: u8, link: &[u8], data: &[u8], size: u64) {
    let mut header = tar::Header::new_gnu();
    let old = header.as_old_mut();
    let n = path.len().min(old.name.len());
    old.name[..n].copy_from_slice(&path[..n]);
    let n = link.len().min(old.linkname.len());
    old.linkname[..n].copy_from_slice(&link[..n]);
    header.set_entry_type(tar::EntryType::new(kind));
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

fn hostile_entry() -> impl Strategy<Value = HostileEntry> {
    let path = prop_oneof![
        prop::sample::select(vec![
            "Cargo.toml",
            "cargo.toml",
            "CARGO.TOML",
            "src/lib.rs",
            "..",
            "../x",
            "./Cargo.toml",
            "a//b",
            "",
            ".",
            "src/",
            "Cargo.toml/x",
        ])
        .prop_map(|p| p.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..120),
    ];
    let kind = prop_oneof![
        prop::sample::select(vec![
            b'0', b'5', b'1', b'2', b'x', b'g', b'L', b'K', b'S', 0
        ]),
        any::<u8>(),
    ];
    let data = prop_oneof![
        Just(b"[package]\nname = \"x\"\nversion = \"1.0.0\"\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..1100),
    ];
    let pax = proptest::option::of((
        prop::sample::select(vec!["size", "path", "linkpath", "mtime", "x"])
            .prop_map(str::to_owned),
        prop_oneof![
            "[0-9]{1,20}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
    ));
    // Few entries leave the package directory, so that most reach the checks
    // that come after the path rule.
    let absolute = prop::bool::weighted(0.1);
    (
        path,
        absolute,
        kind,
        prop::collection::vec(any::<u8>(), 0..20),
        data,
        pax,
        0u64..3000,
        any::<bool>(),
    )
        .prop_map(
            |(path, absolute, kind, link, data, pax, size, honest)| HostileEntry {
                declared_size: if honest { data.len() as u64 } else { size },
                path,
                absolute,
                kind,
                link,
                data,
                pax,
            },
        )
}
