//! `wharf verify`: a mirror against a reference, and against Cargo.lock.

use wharf_test_support::{
    fixture::{CrateBuilder, FixtureCrate},
    upstream::{FakeUpstream, Fault, Target},
};

use crate::common::wharf_cli;

fn crates() -> Vec<FixtureCrate> {
    (0..5)
        .flat_map(|i| {
            (0..2).map(move |p| CrateBuilder::new(&format!("vf-{i}"), &format!("1.0.{p}")).build())
        })
        .collect()
}

fn verify(mirror: &FakeUpstream, reference: &FakeUpstream, extra: &[&str]) -> (bool, String) {
    let mirror_url = mirror.index_url();
    let reference_url = reference.index_url();
    let mut args = vec![
        "verify",
        "--mirror",
        &mirror_url,
        "--against",
        &reference_url,
    ];
    args.extend_from_slice(extra);
    let out = wharf_cli(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// Acceptance 4 of issue 6: an honest mirror passes; one with an altered
/// index line and an altered crate file is reported for exactly those two;
/// `--lockfile` catches bytes that differ from Cargo.lock's checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_exactly_what_a_mirror_altered() {
    let fixtures = crates();
    let reference = FakeUpstream::start(fixtures.clone()).await;
    let honest = FakeUpstream::start(fixtures.clone()).await;
    let all: Vec<String> = (0..5).map(|i| format!("vf-{i}")).collect();
    let mut crate_args = Vec::new();
    for name in &all {
        crate_args.push("--crate");
        crate_args.push(name.as_str());
    }

    let (ok, out) = tokio::task::block_in_place(|| verify(&honest, &reference, &crate_args));
    assert!(ok, "{out}");
    assert!(out.contains("ok: 5 crates checked"), "{out}");

    // One altered index line (a yank the reference does not have) and one
    // altered crate file.
    let tampered = FakeUpstream::start(fixtures.clone()).await;
    tampered.yank("vf-1", "1.0.1", true);
    let altered = fixtures
        .iter()
        .find(|k| k.name == "vf-3" && k.vers == "1.0.0")
        .unwrap();
    tampered.set_fault(
        Target::Path(altered.dl_path().split('?').next().unwrap().to_owned()),
        Fault::WrongBytes,
    );
    let (ok, out) = tokio::task::block_in_place(|| verify(&tampered, &reference, &crate_args));
    assert!(!ok, "{out}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED:")).collect();
    assert_eq!(failed.len(), 2, "{out}");
    assert!(
        failed
            .iter()
            .any(|l| l.contains("vf-1 1.0.1") && l.contains("index line")),
        "{out}"
    );
    assert!(
        failed
            .iter()
            .any(|l| l.contains("vf-3 1.0.0") && l.contains("crate file")),
        "{out}"
    );

    // --lockfile: Cargo.lock's checksums catch the altered file even with
    // the reference gone.
    let dir = tempfile::tempdir().unwrap();
    let lockfile = dir.path().join("Cargo.lock");
    let mut lock = String::from("version = 4\n");
    for krate in fixtures.iter().filter(|k| k.vers == "1.0.0") {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"{}\"\nversion = \"{}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{}\"\n",
            krate.name, krate.vers, krate.cksum
        ));
    }
    std::fs::write(&lockfile, lock).unwrap();
    reference.stop().await;
    let tampered_files = FakeUpstream::start(fixtures.clone()).await;
    tampered_files.set_fault(
        Target::Path(altered.dl_path().split('?').next().unwrap().to_owned()),
        Fault::WrongBytes,
    );
    let lock_arg = lockfile.display().to_string();
    let (ok, out) = tokio::task::block_in_place(|| {
        verify(&tampered_files, &reference, &["--lockfile", &lock_arg])
    });
    assert!(!ok, "{out}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED:")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(failed[0].contains("vf-3 1.0.0"), "{out}");
}

/// `wharf verify --local` (fsck): a synced mirror checks out; a crate file
/// damaged on disk is named, and the exit status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_local_checks_every_line_against_its_file() {
    let upstream = FakeUpstream::start(crates()).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        crate::mirror::mirror_config(dir.path(), &upstream, "include = [\"vf-0\", \"vf-4\"]");
    crate::mirror::sync_ok(&config);
    let fsck = || wharf_cli(&["verify", "--local", "--config", config.to_str().unwrap()]);
    let out = fsck();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok: every index line"), "{stdout}");

    let damaged = dir.path().join("data/m/crates/vf-4/vf-4-1.0.1.crate");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let out = fsck();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{stdout}");
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("FAILED:"))
        .collect();
    assert!(
        failed.len() == 1 && failed[0].contains("vf-4-1.0.1.crate"),
        "{stdout}"
    );
}

/// Acceptance 6 of issue 6: a mirror signs its manifest with its operator's
/// key; `wharf verify --key` accepts it, and rejects it once tampered with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_manifests_are_accepted_and_tampered_ones_rejected() {
    let upstream = FakeUpstream::start(crates()).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("mirror.key");
    let out = wharf_cli(&["keys", "generate", "--out", key_file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .to_owned();
    let config = crate::mirror::mirror_config(
        dir.path(),
        &upstream,
        &format!(
            "include = [\"vf-0\", \"vf-2\"]\nsigning_key = \"{}\"",
            key_file.display()
        ),
    );
    crate::mirror::sync_ok(&config);
    let wharf =
        crate::common::Wharf::start_with(wharf_config::Config::load(Some(&config)).unwrap()).await;
    let mirror_url = format!("sparse+http://{}/m/index/", wharf.addr);
    let reference_url = upstream.index_url();
    let check = |key: &str| {
        let out = wharf_cli(&[
            "verify",
            "--mirror",
            &mirror_url,
            "--against",
            &reference_url,
            "--crate",
            "vf-0",
            "--crate",
            "vf-2",
            "--key",
            key,
        ]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = tokio::task::block_in_place(|| check(&public));
    assert!(
        ok && out.contains("signed manifest: valid; 3 index files"),
        "{out}"
    );

    // The key pinned in a mirror list works the same.
    let list = dir.path().join("mirrors.toml");
    std::fs::write(
        &list,
        format!("[[mirror]]\nurl = \"{mirror_url}\"\npublic_key = \"{public}\"\n"),
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| {
        wharf_cli(&[
            "verify",
            "--mirror",
            &mirror_url,
            "--against",
            &reference_url,
            "--crate",
            "vf-0",
            "--from",
            list.to_str().unwrap(),
        ])
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("signed manifest: valid"),
        "{text}"
    );

    // --all and --sample take their crates from the mirror's manifest.
    let out = tokio::task::block_in_place(|| {
        wharf_cli(&[
            "verify",
            "--mirror",
            &mirror_url,
            "--against",
            &reference_url,
            "--all",
        ])
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("ok: 2 crates checked"),
        "{text}"
    );
    let out = tokio::task::block_in_place(|| {
        wharf_cli(&[
            "verify",
            "--mirror",
            &mirror_url,
            "--against",
            &reference_url,
            "--sample",
            "1",
        ])
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("ok: 1 crates checked"),
        "{text}"
    );

    // Someone else's key: rejected.
    let other = dir.path().join("other.key");
    let out = wharf_cli(&["keys", "generate", "--out", other.to_str().unwrap()]);
    let other_public = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public key: ").map(str::to_owned))
        .unwrap();
    let (ok, out) = tokio::task::block_in_place(|| check(&other_public));
    assert!(!ok && out.contains("does not verify"), "{out}");

    // The manifest altered on the mirror: rejected.
    let manifest = dir.path().join("data/m/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("\"m\"", "\"n\"", 1)).unwrap();
    let (ok, out) = tokio::task::block_in_place(|| check(&public));
    assert!(!ok && out.contains("does not verify"), "{out}");
    wharf.stop().await;
}

/// Acceptance 5 of issue 6: `wharf mirrors probe` ranks a fast, fresh mirror
/// above a slow one and a stale one, and flags one that fails the spot-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_ranks_fast_fresh_mirrors_first_and_flags_altered_ones() {
    let fixtures = crates();
    let reference = FakeUpstream::start(fixtures.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // Two synced wharf mirrors; the second one's last sync is ten days old.
    let config = dir.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[registries.fresh]\nkind = \"mirror\"\nupstreams = [\"{up}\"]\ninclude = [\"vf-0\"]\n\n[registries.stale]\nkind = \"mirror\"\nupstreams = [\"{up}\"]\ninclude = [\"vf-0\"]\n",
            dir.path().join("data").display(),
            up = reference.index_url()
        ),
    )
    .unwrap();
    crate::mirror::sync_ok(&config);
    let status_file = dir.path().join("data/stale/status.json");
    let mut status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    let old = status["last_success"].as_u64().unwrap() - 10 * 24 * 3600;
    status["last_success"] = old.into();
    std::fs::write(&status_file, serde_json::to_vec(&status).unwrap()).unwrap();
    let wharf =
        crate::common::Wharf::start_with(wharf_config::Config::load(Some(&config)).unwrap()).await;
    // A slow mirror, and one serving an altered crate file.
    let slow = FakeUpstream::start(fixtures.clone()).await;
    slow.set_fault(
        Target::Config,
        Fault::SlowDrip {
            chunk: 16,
            delay: std::time::Duration::from_millis(30),
        },
    );
    let altered = FakeUpstream::start(fixtures.clone()).await;
    let vf0 = fixtures
        .iter()
        .find(|k| k.name == "vf-0" && k.vers == "1.0.1")
        .unwrap();
    altered.set_fault(
        Target::Path(vf0.dl_path().split('?').next().unwrap().to_owned()),
        Fault::WrongBytes,
    );

    let fresh_url = format!("sparse+http://{}/fresh/index/", wharf.addr);
    let stale_url = format!("sparse+http://{}/stale/index/", wharf.addr);
    let list = dir.path().join("mirrors.toml");
    std::fs::write(
        &list,
        [
            (&altered.index_url(), "altered"),
            (&slow.index_url(), "slow"),
            (&stale_url, "stale"),
            (&fresh_url, "fresh"),
        ]
        .iter()
        .map(|(url, who)| {
            format!("[[mirror]]\nurl = \"{url}\"\noperator = \"{who}\"\nkind = \"mirror\"\n\n")
        })
        .collect::<String>(),
    )
    .unwrap();
    let reference_url = reference.index_url();
    let out = tokio::task::block_in_place(|| {
        wharf_cli(&[
            "mirrors",
            "probe",
            "--from",
            list.to_str().unwrap(),
            "--against",
            &reference_url,
            "--crate",
            "vf-0",
        ])
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ranked: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|url| url.starts_with("sparse+"))
        .collect();
    assert_eq!(ranked.first(), Some(&fresh_url.as_str()), "{stdout}");
    assert_eq!(
        ranked.last(),
        Some(&altered.index_url().as_str()),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&altered.index_url()) && l.contains("FAILED")),
        "{stdout}"
    );
    assert!(stdout.contains("STALE"), "{stdout}");

    // `wharf setup --mirrors auto` picks the best-ranked one.
    let home = dir.path().join("cargo-home");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args([
                "setup",
                "--mirrors",
                "auto",
                "--from",
                list.to_str().unwrap(),
                "--against",
                &reference_url,
            ])
            .env("CARGO_HOME", &home)
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(written.contains(&fresh_url), "{written}");

    // Any wharf can publish the list at a well-known path.
    let publisher = crate::common::Wharf::start_with(wharf_config::Config {
        mirror_list: Some(list.clone()),
        data_dir: dir.path().join("publisher"),
        ..wharf_config::Config::default()
    })
    .await;
    let url = publisher.url("/.well-known/wharf-mirrors.toml");
    let out = tokio::task::block_in_place(|| wharf_cli(&["mirrors", "list", "--from", &url]));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("slow") && stdout.contains("fresh"),
        "{stdout}"
    );
    publisher.stop().await;
    wharf.stop().await;
}
