//! Issue 11: storage that fails. A full or read-only data directory is the
//! server's problem: 503 with a message, `/readyz` says why, no upstream is
//! blamed, and service resumes by itself when storage is back.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use wharf_test_support::{
    fixture::{CrateBuilder, FixtureCrate},
    upstream::FakeUpstream,
};

use crate::common::{Wharf, cache};

/// A small tmpfs mounted for a test (root only: the tests make a disk that
/// is really full or really read-only), unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        mount(
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ],
            dir,
        );
        Self(dir.to_owned())
    }

    /// `mount -o remount,OPTIONS`.
    fn remount(&self, options: &str) {
        mount(&["-o", &format!("remount,{options}")], &self.0);
    }
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} failed (these tests need root to make a full or read-only disk): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A crate file of about `kib` KiB that gzip cannot shrink.
fn big_crate(name: &str, kib: usize) -> FixtureCrate {
    let mut noise = String::with_capacity(kib * 1024 * 2);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < kib * 1024 * 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push_str(&format!("{x:016x}"));
    }
    CrateBuilder::new(name, "1.0.0")
        .lib_body(&format!("// {noise}\npub fn value() -> u64 {{ 1 }}\n"))
        .build()
}

/// GETs `path`: the status and the body (as text, for messages).
async fn get(wharf: &Wharf, path: &str) -> (u16, String) {
    let (status, body) = get_bytes(wharf, path).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_bytes(wharf: &Wharf, path: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(wharf.url(path))
        .await
        .expect("request to wharf");
    let status = response.status().as_u16();
    (
        status,
        response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default(),
    )
}

async fn upstreams_up(wharf: &Wharf) -> bool {
    let status = wharf.get_json("/status.json").await;
    status["registries"]["crates-io"]["upstreams"]
        .as_array()
        .expect("upstreams in status.json")
        .iter()
        .all(|u| u["up"] == true)
}

/// Fills the filesystem of `dir` with a file, and returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    let _ = file.flush();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_disk_answers_503_and_blames_no_upstream() {
    let big = big_crate("big", 600);
    let upstream = FakeUpstream::start([
        CrateBuilder::new("small", "1.0.0").build(),
        CrateBuilder::new("other", "1.0.0").build(),
        big.clone(),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let disk = Tmpfs::mount(&data, "512k");
    let wharf = Wharf::start_in(&data, cache(&[upstream.index_url()])).await;

    // The index file fits; the crate file does not.
    assert_eq!(get(&wharf, "/crates-io/index/3/b/big").await.0, 200);
    let (status, body) = get(&wharf, "/crates-io/crates/big/big-1.0.0.crate").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage is unavailable"), "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    assert!(
        upstreams_up(&wharf).await,
        "a full disk marked the upstream down"
    );
    // What fits is still served, and nothing half written is left behind.
    assert_eq!(get(&wharf, "/crates-io/index/sm/al/small").await.0, 200);
    assert_eq!(
        get(&wharf, "/crates-io/crates/small/small-1.0.0.crate")
            .await
            .0,
        200
    );
    assert!(!data.join("crates-io/crates/big").exists());

    // /readyz says why while the disk is full, and recovers with it.
    assert_eq!(get(&wharf, "/readyz").await.0, 200);
    let filler = fill(&data);
    let (status, body) = get(&wharf, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(get(&wharf, "/readyz").await.0, 200);

    // More room: the same request now works, by itself.
    disk.remount("size=8m");
    let (status, body) = get_bytes(&wharf, "/crates-io/crates/big/big-1.0.0.crate").await;
    assert_eq!(status, 200);
    assert_eq!(body, big.bytes.to_vec());

    // A read-only data directory: the same story.
    disk.remount("ro");
    let (status, body) = get(&wharf, "/crates-io/crates/other/other-1.0.0.crate").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Read-only file system"), "{body}");
    let (status, body) = get(&wharf, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    // What is stored is still served.
    assert_eq!(
        get(&wharf, "/crates-io/crates/big/big-1.0.0.crate").await.0,
        200
    );
    assert!(
        upstreams_up(&wharf).await,
        "a read-only disk marked the upstream down"
    );
    disk.remount("rw");
    assert_eq!(
        get(&wharf, "/crates-io/crates/other/other-1.0.0.crate")
            .await
            .0,
        200
    );
    assert_eq!(get(&wharf, "/readyz").await.0, 200);
    wharf.stop().await;
}
