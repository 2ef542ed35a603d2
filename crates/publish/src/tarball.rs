//! Checking a `.crate` file: a gzip'd tar whose every entry is a file or directory
//! under `{name}-{vers}/`, with a `Cargo.toml` at the top.
//!
//! This follows `process_tarball` in crates.io's `crates/crates_io_tarball`: the same
//! path rules, the same refusal of links and special files, the same pax size check,
//! and the same search for `Cargo.toml` in any case (so that a second manifest cannot
//! hide from a case-sensitive reader on a case-insensitive file system). The archive is
//! read as a stream and never held unpacked: the bytes that come out of gzip are
//! counted and the read fails once they pass the limit, so a small file that inflates
//! to gigabytes costs only the time to inflate the limit.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::path::{Component, Path};

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::error::PublishError;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The largest `Cargo.toml` read into memory. A normalised manifest with crates.io's
/// maximum of 500 dependencies and 300 features is well under a tenth of this.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// The `[package]` fields of the crate file's `Cargo.toml` that are checked against
/// the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestPackage {
    /// `package.name`.
    pub name: String,
    /// `package.version`, as written.
    pub version: String,
}

/// What went wrong below tar, recorded by [`LimitedReader`] so that an error tar
/// reports can be traced to its cause.
#[derive(Default)]
struct Inflate {
    over_limit: Cell<bool>,
    gzip_error: RefCell<Option<(io::ErrorKind, String)>>,
}

impl Inflate {
    fn error(&self, max_unpacked_bytes: u64, e: io::Error) -> PublishError {
        if self.over_limit.get() {
            return PublishError::UnpackedTooLarge {
                max_bytes: max_unpacked_bytes,
            };
        }
        match self.gzip_error.borrow().as_ref() {
            Some((io::ErrorKind::UnexpectedEof, _)) => PublishError::TruncatedTarball,
            Some((_, message)) => PublishError::MalformedTarball(message.clone()),
            None => PublishError::MalformedTarball(e.to_string()),
        }
    }
}

/// Passes inflated bytes through until `remaining` is used up, then fails.
struct LimitedReader<'a, R> {
    inner: R,
    remaining: u64,
    inflate: &'a Inflate,
}

impl<R: Read> Read for LimitedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            // Exactly the limit is allowed; only a byte beyond it is an error.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe) {
                Ok(0) => Ok(0),
                Ok(_) => {
                    self.inflate.over_limit.set(true);
                    Err(io::Error::other("unpacked size limit reached"))
                }
                Err(e) => Err(self.gzip_failed(e)),
            };
        }
        let len = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        match self.inner.read(&mut buf[..len]) {
            Ok(n) => {
                self.remaining = self.remaining.saturating_sub(n as u64);
                Ok(n)
            }
            Err(e) => Err(self.gzip_failed(e)),
        }
    }
}

impl<R> LimitedReader<'_, R> {
    fn gzip_failed(&self, e: io::Error) -> io::Error {
        self.inflate
            .gzip_error
            .borrow_mut()
            .get_or_insert_with(|| (e.kind(), e.to_string()));
        e
    }
}

/// Checks every entry of `tarball` and returns its manifest's package name and
/// version. `prefix` is `{name}-{vers}`, the directory every entry must be in.
pub(crate) fn check_tarball(
    tarball: &[u8],
    prefix: &str,
    max_unpacked_bytes: u64,
) -> Result<ManifestPackage, PublishError> {
    if !tarball.starts_with(&GZIP_MAGIC) {
        return Err(PublishError::NotGzip);
    }
    let inflate = Inflate::default();
    let reader = LimitedReader {
        inner: GzDecoder::new(tarball),
        remaining: max_unpacked_bytes,
        inflate: &inflate,
    };
    let io_error = |e| inflate.error(max_unpacked_bytes, e);
    let mut archive = tar::Archive::new(reader);

    // (path, path inside the package, contents)
    let mut manifests: Vec<(String, String, Vec<u8>)> = Vec::new();
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        let path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            PublishError::InvalidPath {
                path: String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }
        })?;
        let in_package = check_path(&path, prefix)?;

        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            return Err(PublishError::UnexpectedEntry {
                path,
                kind: describe(kind),
            });
        }
        check_pax_size(&mut entry).map_err(|e| match e {
            PaxCheck::Io(e) => io_error(e),
            PaxCheck::Mismatch => PublishError::PaxSizeMismatch { path: path.clone() },
        })?;

        if in_package.eq_ignore_ascii_case("Cargo.toml") {
            let mut contents = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_end(&mut contents)
                .map_err(io_error)?;
            if contents.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(PublishError::InvalidManifest(format!(
                    "the file is larger than {MAX_MANIFEST_BYTES} bytes"
                )));
            }
            let in_package = in_package.to_owned();
            manifests.push((path, in_package, contents));
        }
    }

    // Read to the end of the gzip stream, past tar's end-of-archive blocks, so that
    // its checksum is verified and a cut-off upload is caught even where tar stopped
    // early.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(io_error)?;

    let (_, file_name, contents) = match manifests.len() {
        0 => {
            return Err(PublishError::MissingManifest {
                path: format!("{prefix}/Cargo.toml"),
            });
        }
        1 => manifests.swap_remove(0),
        _ => {
            let paths = manifests.iter().map(|(p, _, _)| format!("`{p}`"));
            return Err(PublishError::TooManyManifests {
                paths: paths.collect::<Vec<_>>().join(", "),
            });
        }
    };
    // Cargo reads `Cargo.toml`, and `cargo.toml` on old versions; any other casing
    // would be found on some file systems and not on others.
    if file_name != "Cargo.toml" && file_name != "cargo.toml" {
        return Err(PublishError::IncorrectlyCasedManifest { found: file_name });
    }
    let text = String::from_utf8(contents)
        .map_err(|_| PublishError::InvalidManifest("the file is not UTF-8".to_owned()))?;
    parse_manifest(&text)
}

/// Checks an entry's path and returns the part after `{prefix}/`.
fn check_path<'p>(path: &'p str, prefix: &str) -> Result<&'p str, PublishError> {
    let as_path = Path::new(path);
    if as_path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        // `..`, a leading `/`, or a Windows prefix: a path that can leave the
        // directory it is unpacked into.
        return Err(PublishError::InvalidPath {
            path: path.to_owned(),
        });
    }
    match as_path.strip_prefix(prefix).ok().and_then(Path::to_str) {
        Some(rest) => Ok(rest),
        None => Err(PublishError::EntryOutsidePackage {
            path: path.to_owned(),
            prefix: prefix.to_owned(),
        }),
    }
}

fn describe(kind: EntryType) -> String {
    match kind {
        EntryType::Link => "hard link".to_owned(),
        EntryType::Symlink => "symbolic link".to_owned(),
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "named pipe".to_owned(),
        EntryType::Continuous => "contiguous file".to_owned(),
        EntryType::GNUSparse => "sparse file".to_owned(),
        EntryType::XGlobalHeader => "pax global header".to_owned(),
        other => format!("tar entry of type {:?}", other.as_byte() as char),
    }
}

enum PaxCheck {
    Io(io::Error),
    Mismatch,
}

/// Refuses an entry whose pax `size` and tar header size disagree: tar readers pick
/// different ones, so two of them would see different files (`validate_pax_size` in
/// crates.io's `crates_io_tarball`).
fn check_pax_size<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<(), PaxCheck> {
    let header_size = entry.header().entry_size().map_err(PaxCheck::Io)?;
    let Some(extensions) = entry.pax_extensions().map_err(PaxCheck::Io)? else {
        return Ok(());
    };
    for extension in extensions {
        let extension = extension.map_err(PaxCheck::Io)?;
        if extension.key() == Ok("size") {
            let pax_size = extension
                .value()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(PaxCheck::Mismatch)?;
            if pax_size != header_size {
                return Err(PaxCheck::Mismatch);
            }
        }
    }
    Ok(())
}

/// The `[package]` fields that cargo fills in from a workspace when it packages a
/// crate; a manifest that still inherits one was not made by `cargo package`
/// (`validate_package` in crates.io's `crates_io_tarball`).
const INHERITABLE: &[&str] = &[
    "version",
    "edition",
    "rust-version",
    "authors",
    "description",
    "homepage",
    "documentation",
    "readme",
    "keywords",
    "categories",
    "license",
    "license-file",
    "repository",
];

fn is_inherited(value: &toml::Value) -> bool {
    value
        .as_table()
        .is_some_and(|t| t.contains_key("workspace"))
}

fn manifest_error(message: impl Into<String>) -> PublishError {
    PublishError::InvalidManifest(message.into())
}

/// Reads `package.name` and `package.version`, refusing what crates.io refuses
/// (`validate_manifest` in `crates_io_tarball`): no `[package]`, a `[patch]` table,
/// and values still inherited from a workspace.
fn parse_manifest(text: &str) -> Result<ManifestPackage, PublishError> {
    let manifest: toml::Table = toml::from_str(text).map_err(|e| {
        // toml's own Display spans several lines with a source excerpt; a line
        // number keeps it to one.
        let message = e.message().trim_end().replace('\n', " ");
        let line = e
            .span()
            .and_then(|span| text.as_bytes().get(..span.start))
            .map(|before| before.iter().filter(|&&b| b == b'\n').count() + 1);
        match line {
            Some(line) => manifest_error(format!("{message} (line {line})")),
            None => manifest_error(message),
        }
    })?;
    if manifest
        .get("patch")
        .and_then(toml::Value::as_table)
        .is_some_and(|patch| !patch.is_empty())
    {
        return Err(manifest_error(
            "crates cannot be published with `[patch]` tables",
        ));
    }
    let package = manifest
        .get("package")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| manifest_error("missing field `package`"))?;
    for field in INHERITABLE {
        if package.get(*field).is_some_and(is_inherited) {
            return Err(manifest_error(format!(
                "`package.{field}` is inherited from a workspace; publish with `cargo publish`, which fills it in"
            )));
        }
    }
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let deps = manifest.get(table).and_then(toml::Value::as_table);
        if let Some((name, _)) = deps
            .into_iter()
            .flatten()
            .find(|(_, dep)| is_inherited(dep))
        {
            return Err(manifest_error(format!(
                "`{table}.{name}` is inherited from a workspace; publish with `cargo publish`, which fills it in"
            )));
        }
    }
    let field = |key: &str| match package.get(key) {
        Some(toml::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(manifest_error(format!("`package.{key}` must be a string"))),
        None => Err(manifest_error(format!("missing field `{key}`"))),
    };
    Ok(ManifestPackage {
        name: field("name")?,
        version: field("version")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// One tar entry for [`build`].
    pub(crate) struct Entry<'a> {
        pub path: &'a str,
        pub kind: EntryType,
        pub data: &'a [u8],
        pub link: Option<&'a str>,
    }

    pub(crate) fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
        Entry {
            path,
            kind: EntryType::Regular,
            data,
            link: None,
        }
    }

    /// A tar archive with exactly these entries. Paths are written into the header
    /// directly, because `tar::Builder`'s path setters refuse the hostile ones the
    /// tests need.
    pub(crate) fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            let name = &mut header.as_old_mut().name;
            name[..entry.path.len()].copy_from_slice(entry.path.as_bytes());
            if let Some(link) = entry.link {
                let linkname = &mut header.as_old_mut().linkname;
                linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(entry.kind);
            header.set_size(entry.data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append(&header, entry.data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    const MANIFEST: &[u8] = b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\nedition = \"2021\"\n";

    fn check(entries: &[Entry<'_>]) -> Result<ManifestPackage, PublishError> {
        check_tarball(&gzip(&tar(entries)), "foo-1.0.0", 1 << 20)
    }

    #[test]
    fn accepts_a_package_and_reads_its_manifest() {
        let package = check(&[
            Entry {
                path: "foo-1.0.0/",
                kind: EntryType::Directory,
                data: b"",
                link: None,
            },
            file("foo-1.0.0/Cargo.toml", MANIFEST),
            file("foo-1.0.0/src/lib.rs", b"pub fn f() {}"),
            file("foo-1.0.0/sub/Cargo.toml", b"not a manifest at the top"),
        ])
        .unwrap();
        assert_eq!(
            package,
            ManifestPackage {
                name: "foo".into(),
                version: "1.0.0".into()
            }
        );
    }

    #[test]
    fn accepts_the_old_lowercase_manifest_name() {
        assert!(check(&[file("foo-1.0.0/cargo.toml", MANIFEST)]).is_ok());
    }

    #[test]
    fn refuses_what_is_not_gzip() {
        let tar = tar(&[file("foo-1.0.0/Cargo.toml", MANIFEST)]);
        assert_eq!(
            check_tarball(&tar, "foo-1.0.0", 1 << 20),
            Err(PublishError::NotGzip)
        );
        assert_eq!(
            check_tarball(b"", "foo-1.0.0", 1 << 20),
            Err(PublishError::NotGzip)
        );
    }

    #[test]
    fn refuses_a_truncated_gzip_stream() {
        let gz = gzip(&tar(&[file("foo-1.0.0/Cargo.toml", MANIFEST)]));
        for cut in [gz.len() - 1, gz.len() - 8, gz.len() / 2, 12] {
            assert_eq!(
                check_tarball(&gz[..cut], "foo-1.0.0", 1 << 20),
                Err(PublishError::TruncatedTarball),
                "cut at {cut} of {}",
                gz.len()
            );
        }
    }

    #[test]
    fn refuses_a_corrupt_gzip_stream() {
        let mut gz = gzip(&tar(&[file("foo-1.0.0/Cargo.toml", MANIFEST)]));
        let crc = gz.len() - 8;
        gz[crc] ^= 0xff;
        assert!(matches!(
            check_tarball(&gz, "foo-1.0.0", 1 << 20),
            Err(PublishError::MalformedTarball(_))
        ));
    }

    #[test]
    fn refuses_what_is_not_tar() {
        let err = check_tarball(&gzip(&[7u8; 1024]), "foo-1.0.0", 1 << 20).unwrap_err();
        assert!(matches!(err, PublishError::MalformedTarball(_)), "{err:?}");
    }

    #[test]
    fn refuses_a_decompression_bomb() {
        let zeros = vec![0u8; 4 << 20];
        let bomb = tar(&[
            file("foo-1.0.0/Cargo.toml", MANIFEST),
            file("foo-1.0.0/big", &zeros),
        ]);
        let gz = gzip(&bomb);
        assert!(
            gz.len() < 64 << 10,
            "the bomb compresses to {} bytes",
            gz.len()
        );
        assert_eq!(
            check_tarball(&gz, "foo-1.0.0", 1 << 20),
            Err(PublishError::UnpackedTooLarge { max_bytes: 1 << 20 })
        );
        // The whole tar stream, end-of-archive blocks included, fits exactly.
        assert!(check_tarball(&gz, "foo-1.0.0", bomb.len() as u64).is_ok());
        assert_eq!(
            check_tarball(&gz, "foo-1.0.0", bomb.len() as u64 - 1),
            Err(PublishError::UnpackedTooLarge {
                max_bytes: bomb.len() as u64 - 1
            })
        );
    }

    #[test]
    fn refuses_a_missing_manifest() {
        assert_eq!(
            check(&[file("foo-1.0.0/src/lib.rs", b"")]),
            Err(PublishError::MissingManifest {
                path: "foo-1.0.0/Cargo.toml".into()
            })
        );
        assert_eq!(
            check(&[file("foo-1.0.0/src/lib.rs", b"")])
                .unwrap_err()
                .to_string(),
            "the crate file is missing `foo-1.0.0/Cargo.toml`"
        );
    }

    #[test]
    fn refuses_other_casings_and_second_manifests() {
        assert_eq!(
            check(&[file("foo-1.0.0/CARGO.TOML", MANIFEST)]),
            Err(PublishError::IncorrectlyCasedManifest {
                found: "CARGO.TOML".into()
            })
        );
        assert!(matches!(
            check(&[
                file("foo-1.0.0/Cargo.toml", MANIFEST),
                file("foo-1.0.0/cargo.toml", MANIFEST)
            ]),
            Err(PublishError::TooManyManifests { .. })
        ));
        // The same path twice: an unpacker keeps the last, a checker might read the first.
        assert!(matches!(
            check(&[
                file("foo-1.0.0/Cargo.toml", MANIFEST),
                file("foo-1.0.0/Cargo.toml", MANIFEST)
            ]),
            Err(PublishError::TooManyManifests { .. })
        ));
    }

    #[test]
    fn refuses_entries_outside_the_package() {
        for path in [
            "bar-1.0.0/Cargo.toml",
            "foo-1.0.0x/a",
            "foo-1.0.1/a",
            "Cargo.toml",
            "foo/a",
        ] {
            assert_eq!(
                check(&[file("foo-1.0.0/Cargo.toml", MANIFEST), file(path, b"")]),
                Err(PublishError::EntryOutsidePackage {
                    path: path.into(),
                    prefix: "foo-1.0.0".into()
                }),
                "{path}"
            );
        }
    }

    #[test]
    fn refuses_paths_that_escape() {
        for path in [
            "foo-1.0.0/../x",
            "foo-1.0.0/a/../../b",
            "/foo-1.0.0/a",
            "../foo-1.0.0/a",
        ] {
            assert_eq!(
                check(&[file("foo-1.0.0/Cargo.toml", MANIFEST), file(path, b"")]),
                Err(PublishError::InvalidPath { path: path.into() }),
                "{path}"
            );
        }
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..12].copy_from_slice(b"foo-1.0.0/\xffa");
        header.set_size(0);
        header.set_cksum();
        builder.append(&header, b"".as_slice()).unwrap();
        let non_utf8 = builder.into_inner().unwrap();
        assert_eq!(
            check_tarball(&gzip(&non_utf8), "foo-1.0.0", 1 << 20),
            Err(PublishError::InvalidPath {
                path: "foo-1.0.0/\u{fffd}a".into()
            })
        );
    }

    #[test]
    fn refuses_links_and_special_files() {
        let cases = [
            (
                EntryType::Symlink,
                Some("../../etc/passwd"),
                "symbolic link",
            ),
            (EntryType::Symlink, Some("lib.rs"), "symbolic link"),
            (EntryType::Link, Some("foo-1.0.0/Cargo.toml"), "hard link"),
            (EntryType::Fifo, None, "named pipe"),
            (EntryType::Char, None, "character device"),
        ];
        for (kind, link, described) in cases {
            let result = check(&[
                file("foo-1.0.0/Cargo.toml", MANIFEST),
                Entry {
                    path: "foo-1.0.0/src/x",
                    kind,
                    data: b"",
                    link,
                },
            ]);
            assert_eq!(
                result,
                Err(PublishError::UnexpectedEntry {
                    path: "foo-1.0.0/src/x".into(),
                    kind: described.into()
                })
            );
        }
    }

    #[test]
    fn refuses_mismatched_pax_sizes() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([("size", b"3".as_slice())])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("foo-1.0.0/a").unwrap();
        header.set_size(5);
        header.set_cksum();
        builder.append(&header, b"hello".as_slice()).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("foo-1.0.0/Cargo.toml").unwrap();
        header.set_size(MANIFEST.len() as u64);
        header.set_cksum();
        builder.append(&header, MANIFEST).unwrap();
        let tar = builder.into_inner().unwrap();
        let result = check_tarball(&gzip(&tar), "foo-1.0.0", 1 << 20);
        assert_eq!(
            result,
            Err(PublishError::PaxSizeMismatch {
                path: "foo-1.0.0/a".into()
            })
        );
    }

    #[test]
    fn manifest_rules() {
        let parse = |s: &str| parse_manifest(s);
        assert_eq!(
            parse("[package]\nname = \"a\"\nversion = \"0.1.0\"")
                .unwrap()
                .name,
            "a"
        );
        assert_eq!(
            parse("[workspace]\nmembers = []"),
            Err(manifest_error("missing field `package`"))
        );
        assert_eq!(
            parse("[package]\nname = \"a\""),
            Err(manifest_error("missing field `version`"))
        );
        assert_eq!(
            parse("[package]\nname = \"a\"\nversion.workspace = true"),
            Err(manifest_error(
                "`package.version` is inherited from a workspace; publish with `cargo publish`, which fills it in"
            ))
        );
        assert!(matches!(
            parse("[package]\nname = \"a\"\nversion = \"1.0.0\"\nlicense = { workspace = true }"),
            Err(PublishError::InvalidManifest(m)) if m.contains("package.license")
        ));
        assert!(matches!(
            parse("[package]\nname = \"a\"\nversion = \"1.0.0\"\n[dev-dependencies]\nb = { workspace = true }"),
            Err(PublishError::InvalidManifest(m)) if m.contains("dev-dependencies.b")
        ));
        assert_eq!(
            parse(
                "[package]\nname = \"a\"\nversion = \"1.0.0\"\n[patch.crates-io]\nb = { path = \"b\" }"
            ),
            Err(manifest_error(
                "crates cannot be published with `[patch]` tables"
            ))
        );
        let err = parse("[package]\nname = \"a\"\nversion = 1\n").unwrap_err();
        assert_eq!(err, manifest_error("`package.version` must be a string"));
        let err = parse("[package]\nname = \"a\"\nversion = \n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("failed to parse `Cargo.toml` manifest file: "),
            "{err}"
        );
        assert!(err.ends_with("(line 3)"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn refuses_a_huge_manifest() {
        let check = |manifest: &[u8]| {
            let gz = gzip(&tar(&[file("foo-1.0.0/Cargo.toml", manifest)]));
            check_tarball(&gz, "foo-1.0.0", 4 << 20)
        };
        let mut huge = MANIFEST.to_vec();
        huge.resize(MAX_MANIFEST_BYTES as usize + 1, b'#');
        assert_eq!(
            check(&huge),
            Err(PublishError::InvalidManifest(
                "the file is larger than 1048576 bytes".into()
            ))
        );
        huge.pop();
        assert!(check(&huge).is_ok());
    }

    #[test]
    fn refuses_a_manifest_that_is_not_utf8() {
        assert_eq!(
            check(&[file("foo-1.0.0/Cargo.toml", b"[package]\nname = \"\xff\"")]),
            Err(PublishError::InvalidManifest(
                "the file is not UTF-8".into()
            ))
        );
    }
}
