//! `crate_downloads = "redirect"` is refused where it cannot work: files on
//! disk have no URL, and a registry that requires credentials needs
//! presigned URLs, which an anonymous client of a bucket cannot make.

use std::path::Path;

use wharf_config::{Config, CrateDownloads};

fn parse(text: &str) -> Result<Config, String> {
    Config::from_toml(text, Path::new("wharf.toml")).map_err(|e| e.to_string())
}

const BUCKET: &str = "[storage]\nkind = \"s3\"\nbucket = \"b\"\n";

#[test]
fn redirects_need_a_bucket() {
    for kind in ["cache", "hosted"] {
        let err = parse(&format!(
            "[registries.r]\nkind = \"{kind}\"\ncrate_downloads = \"redirect\"\n"
        ))
        .unwrap_err();
        assert!(
            err.contains(
                "registry `r`: crate_downloads = \"redirect\" needs [storage] kind = \"s3\""
            ),
            "{err}"
        );
    }
    let config = parse(&format!(
        "{BUCKET}[registries.r]\nkind = \"cache\"\ncrate_downloads = \"redirect\"\n"
    ))
    .unwrap();
    assert_eq!(
        config.registries["r"].crate_downloads(),
        (
            CrateDownloads::Redirect,
            std::time::Duration::from_secs(300)
        )
    );
}

#[test]
fn private_redirects_need_credentials_to_presign() {
    let err = parse(&format!(
        "{BUCKET}anonymous = true\n[registries.r]\nkind = \"cache\"\nauth_required = true\ncrate_downloads = \"redirect\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("cannot sign"), "{err}");
    // Open registries of an open bucket redirect to the objects' own URLs.
    parse(&format!(
        "{BUCKET}anonymous = true\n[registries.r]\nkind = \"cache\"\ncrate_downloads = \"redirect\"\n"
    ))
    .unwrap();
}

#[test]
fn presigned_urls_last_between_a_second_and_a_week() {
    for expiry in ["0s", "8days"] {
        let err = parse(&format!(
            "{BUCKET}[registries.r]\nkind = \"cache\"\ncrate_downloads = \"redirect\"\ndownload_url_expiry = \"{expiry}\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("between 1s and 7days"), "{expiry}: {err}");
    }
}

#[test]
fn the_example_file_documents_the_settings() {
    let config = parse(include_str!("../../../../wharf.example.toml")).unwrap();
    assert_eq!(
        config.registries["crates-io"].crate_downloads(),
        (CrateDownloads::Stream, std::time::Duration::from_secs(300))
    );
    assert_eq!(
        config.storage.index_cache_control,
        "public, max-age=60, must-revalidate"
    );
}
