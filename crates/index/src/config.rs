//! `config.json`, the one index file wharf writes itself, and its `dl` template.

use serde::Serialize;

use crate::{cksum::Cksum, path::prefix};

/// The `config.json` wharf serves for a registry.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryConfig {
    /// Where cargo downloads crate files from (a template with markers).
    pub dl: String,
    /// The web API root, for registries that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Whether cargo must send credentials for every request.
    #[serde(rename = "auth-required", skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
}

impl RegistryConfig {
    /// The `config.json` of a registry mounted at `base` (`http://host/{R}`):
    /// crate files are served from `{base}/crates/{crate}/{crate}-{version}.crate`.
    pub fn for_base(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        Self {
            dl: format!("{base}/crates/{{crate}}/{{crate}}-{{version}}.crate"),
            api: None,
            auth_required: false,
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings serialises")
    }
}

/// The five markers cargo substitutes in a `dl` template.
const MARKERS: [&str; 5] = [
    "{crate}",
    "{version}",
    "{prefix}",
    "{lowerprefix}",
    "{sha256-checksum}",
];

/// An upstream's `dl` template, from its `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlTemplate(String);

impl DlTemplate {
    /// Wraps the `dl` value. As in cargo, a value with none of the markers
    /// means `{dl}/{crate}/{version}/download`.
    pub fn new(dl: &str) -> Self {
        if MARKERS.iter().any(|m| dl.contains(m)) {
            Self(dl.to_owned())
        } else {
            Self(format!(
                "{}/{{crate}}/{{version}}/download",
                dl.trim_end_matches('/')
            ))
        }
    }

    /// The download URL of one crate file.
    pub fn render(&self, name: &str, vers: &str, cksum: &Cksum) -> String {
        let prefix = prefix(name);
        self.0
            .replace("{crate}", name)
            .replace("{version}", vers)
            .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
            .replace("{prefix}", &prefix)
            .replace("{sha256-checksum}", &cksum.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_points_dl_at_wharf() {
        let json = RegistryConfig::for_base("http://h:1/crates-io/").to_json();
        assert_eq!(
            json,
            r#"{"dl":"http://h:1/crates-io/crates/{crate}/{crate}-{version}.crate"}"#
        );
    }

    #[test]
    fn renders_all_markers() {
        let c = Cksum::of(b"hello");
        let t =
            DlTemplate::new("http://u/{prefix}/{lowerprefix}/{crate}/{version}/{sha256-checksum}");
        assert_eq!(
            t.render("Serde", "1.0.0", &c),
            format!("http://u/Se/rd/se/rd/Serde/1.0.0/{}", c.to_hex())
        );
        let plain = DlTemplate::new("https://static.example/crates/");
        assert_eq!(
            plain.render("abc", "0.1.0", &c),
            "https://static.example/crates/abc/0.1.0/download"
        );
    }
}
