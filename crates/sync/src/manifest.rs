//! Signed mirror manifests: what a mirror holds, signed by its operator.
//!
//! `{R}/manifest.json` lists every index file of the tree with its sha256,
//! the upstream cursor and the time; `{R}/manifest.json.sig` is an ed25519
//! signature of those exact bytes, hex encoded. A client that pins the
//! operator's public key (`wharf keys generate` prints it) can tell a
//! tampered mirror (a signature that fails, or a file the manifest does not
//! vouch for) from a stale one (a valid manifest with an old time).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// Why a key or a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file does not hold a key `wharf keys generate` wrote.
    #[error("{0} is not a wharf signing key (make one with `wharf keys generate`)")]
    BadKey(PathBuf),
    /// The signature does not match the manifest and the pinned key.
    #[error(
        "the manifest's signature does not verify with the pinned key: the mirror or its manifest was altered, or the key is not the operator's"
    )]
    BadSignature,
    /// The manifest is not what wharf writes.
    #[error("the manifest is not valid: {0}")]
    Malformed(String),
}

/// What a signed manifest says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The registry's name.
    pub registry: String,
    /// The upstream cursor (git tree) the tree is synced to, if any.
    pub cursor: Option<String>,
    /// When it was written, seconds since the epoch.
    pub time: u64,
    /// Index files (paths relative to the tree's `index/`) and their sha256.
    pub files: BTreeMap<String, String>,
}

/// Makes a new signing key: the secret (PKCS#8, hex) for the key file, and
/// the public key (hex) to publish.
pub fn generate_key() -> Result<(String, String), ManifestError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| ManifestError::Malformed("the system has no randomness".to_owned()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| ManifestError::Malformed("a fresh key does not load".to_owned()))?;
    Ok((
        hex::encode(pkcs8.as_ref()),
        hex::encode(pair.public_key().as_ref()),
    ))
}

/// The public key (hex) of the secret key in `key_file`.
pub fn public_key_of(key_file: &Path) -> Result<String, ManifestError> {
    Ok(hex::encode(load_key(key_file)?.public_key().as_ref()))
}

fn load_key(key_file: &Path) -> Result<Ed25519KeyPair, ManifestError> {
    let text = std::fs::read_to_string(key_file).map_err(|source| ManifestError::Io {
        path: key_file.to_owned(),
        source,
    })?;
    let bytes = hex::decode(text.trim()).map_err(|_| ManifestError::BadKey(key_file.to_owned()))?;
    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| ManifestError::BadKey(key_file.to_owned()))
}

/// A manifest of `files` (index paths relative to the tree's `index/`, and
/// their sha256) signed with the key in `key_file`: the manifest, its exact
/// bytes (`manifest.json`) and their signature (`manifest.json.sig`, hex).
pub fn sign(
    registry: &str,
    cursor: Option<String>,
    files: BTreeMap<String, String>,
    key_file: &Path,
) -> Result<(Manifest, Vec<u8>, String), ManifestError> {
    let key = load_key(key_file)?;
    let manifest = Manifest {
        registry: registry.to_owned(),
        cursor,
        time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        files,
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    let signature = hex::encode(key.sign(&body).as_ref());
    Ok((manifest, body, signature))
}

/// Checks `signature` (hex) of `body` with `public_key` (hex) and reads the
/// manifest.
pub fn verify(body: &[u8], signature: &str, public_key: &str) -> Result<Manifest, ManifestError> {
    let key = hex::decode(public_key.trim())
        .map_err(|_| ManifestError::Malformed("the pinned key is not hex".to_owned()))?;
    let signature = hex::decode(signature.trim()).map_err(|_| ManifestError::BadSignature)?;
    UnparsedPublicKey::new(&ED25519, key)
        .verify(body, &signature)
        .map_err(|_| ManifestError::BadSignature)?;
    serde_json::from_slice(body).map_err(|e| ManifestError::Malformed(e.to_string()))
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_manifests_verify_and_tampered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        let (secret, public) = generate_key().unwrap();
        std::fs::write(&key_file, secret).unwrap();
        assert_eq!(public_key_of(&key_file).unwrap(), public);
        let files = BTreeMap::from([("se/rd/serde".to_owned(), sha256_hex(b"{}\n"))]);
        let (written, body, signature) = sign("m", Some("abc".into()), files, &key_file).unwrap();
        assert_eq!(verify(&body, &signature, &public).unwrap(), written);
        assert_eq!(written.files["se/rd/serde"], sha256_hex(b"{}\n"));

        let mut tampered = body.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        assert!(matches!(
            verify(&tampered, &signature, &public),
            Err(ManifestError::BadSignature)
        ));
        let (_, other) = generate_key().unwrap();
        assert!(matches!(
            verify(&body, &signature, &other),
            Err(ManifestError::BadSignature)
        ));
    }
}
