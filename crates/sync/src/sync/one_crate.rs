//! One crate brought up to date: its upstream index file (sparse, or a git
//! blob), the selected crate files it is missing, then its index file and
//! its cursor, in that order, so no index line is ever published before the
//! crate file it names.

use super::*;

impl Mirror {
    /// Removes a crate that upstream deleted: its index file and cursor.
    /// Its crate files stay. Returns how many lines the tree served for it.
    pub(super) async fn remove_crate(&self, path: &IndexPath) -> Result<usize, SyncError> {
        let index_key = self.layout().index_file(path.as_str()).expect(VALID);
        let before = self
            .store
            .get(&index_key)
            .await?
            .map_or(0, |file| count_lines(&file));
        self.store.delete(&index_key).await?;
        self.store
            .delete(&self.layout().sync_upstream(path.as_str()).expect(VALID))
            .await?;
        self.store
            .delete(
                &self
                    .layout()
                    .sync_upstream_validators(path.as_str())
                    .expect(VALID),
            )
            .await?;
        if before > 0 {
            info!(registry = %self.name, krate.path = %path, "crate removed upstream; its index file is removed, its crate files kept");
        }
        Ok(before)
    }

    /// A crate's upstream index file, from `origin`. `Ok(None)` means
    /// nothing more is to be done for it (a failure is recorded in `outcome`).
    pub(super) async fn fetch(
        &self,
        name: &str,
        path: &IndexPath,
        origin: Origin,
        previous: Option<&Bytes>,
        validators_key: &BlobKey,
        outcome: &mut CrateOutcome,
    ) -> Result<Option<Fetched>, SyncError> {
        match origin {
            Origin::Git(Ok(Some(body))) => Ok(Some(Fetched {
                body: Bytes::from(body),
                validators: None,
            })),
            Origin::Git(Ok(None)) => {
                outcome
                    .failures
                    .push(format!("{name}: the git index has no such crate"));
                Ok(None)
            }
            Origin::Git(Err(e)) => {
                outcome
                    .failures
                    .push(format!("{name}: reading the git index: {e}"));
                Ok(None)
            }
            Origin::Sparse => {
                // The validators of the copy kept, for a conditional request.
                let validators: Option<Validators> = match previous {
                    Some(_) => self
                        .store
                        .get(validators_key)
                        .await?
                        .and_then(|raw| serde_json::from_slice(&raw).ok()),
                    None => None,
                };
                match self
                    .upstreams
                    .fetch_index(path.as_str(), validators.as_ref())
                    .await
                {
                    Ok(IndexFetch::Modified {
                        body, validators, ..
                    }) => Ok(Some(Fetched {
                        body,
                        validators: Some(validators),
                    })),
                    Ok(IndexFetch::NotModified { validators }) => match previous {
                        Some(previous) => Ok(Some(Fetched {
                            body: previous.clone(),
                            validators: Some(validators),
                        })),
                        None => {
                            outcome.failures.push(format!(
                                "{name}: upstream answered 304 to an unconditional request"
                            ));
                            Ok(None)
                        }
                    },
                    Ok(IndexFetch::NotFound) => {
                        outcome
                            .failures
                            .push(format!("{name}: upstream has no such crate"));
                        Ok(None)
                    }
                    Err(e) => {
                        outcome.failures.push(format!("{name}: index file: {e}"));
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Brings one crate up to date: the selected crate files it is missing,
    /// then its index file, then its cursor. With [`Look::Always`], a crate
    /// whose upstream file is unchanged is looked at anyway. With
    /// `wants_deps`, its dependencies are returned for the caller to sync
    /// next.
    pub(super) async fn sync_crate(
        &self,
        name: &str,
        origin: Origin,
        look: Look,
        wants_deps: bool,
    ) -> Result<CrateOutcome, SyncError> {
        let mut outcome = CrateOutcome::default();
        let krate = match CrateName::new(name) {
            Ok(krate) => krate,
            Err(e) => {
                outcome.failures.push(format!("{name}: {e}"));
                return Ok(outcome);
            }
        };
        let path = IndexPath::for_name(&krate);
        // The upstream's file as it was when everything it names was last
        // published, and its validators: the cursor, one per index file.
        let raw_key = self.layout().sync_upstream(path.as_str()).expect(VALID);
        let validators_key = self
            .layout()
            .sync_upstream_validators(path.as_str())
            .expect(VALID);
        let previous = self.store.get(&raw_key).await?;
        let Some(fetched) = self
            .fetch(
                name,
                &path,
                origin,
                previous.as_ref(),
                &validators_key,
                &mut outcome,
            )
            .await?
        else {
            return Ok(outcome);
        };
        let raw = fetched.body;

        let lines: Vec<&[u8]> = raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let parsed: Vec<_> = lines.iter().map(|l| parse_line(l)).collect();
        let versions: Vec<&str> = parsed
            .iter()
            .map(|p| p.as_ref().map_or("", |p| p.vers.as_str()))
            .collect();
        let picked = self.selection.pick(name, &versions);
        if wants_deps && !self.selection.is_exact(name) {
            for i in &picked {
                if parsed[*i].is_some() {
                    outcome.deps.extend(same_registry_deps(lines[*i]));
                }
            }
        }

        // Upstream text becomes a storage key only once it is a valid name
        // and version of the crate this index file is for; other lines are
        // left out (and logged), as wharf cannot verify them.
        let mut wanted = Vec::new();
        for i in picked {
            let Some(line) = &parsed[i] else {
                continue;
            };
            let valid = CrateName::new(&line.name)
                .ok()
                .filter(|n| n.lowercase() == krate.lowercase())
                .zip(Version::new(&line.vers).ok());
            match valid {
                Some((line_name, line_vers)) => wanted.push((i, line, line_name, line_vers)),
                None => warn!(
                    registry = %self.name,
                    krate.name = name,
                    "the index holds a line for `{}` `{}`, which is not a version of this crate; left out",
                    line.name.escape_debug(),
                    line.vers.escape_debug()
                ),
            }
        }

        // Unchanged since everything it names was published: nothing to do.
        if look == Look::IfChanged && previous.as_ref() == Some(&raw) {
            outcome.before = wanted.len();
            outcome.after = wanted.len();
            self.keep_validators(&validators_key, fetched.validators)
                .await?;
            return Ok(outcome);
        }

        let mut published = Vec::new();
        for (i, line, line_name, line_vers) in wanted {
            let key = self
                .layout()
                .crate_file(line_name.as_str(), line_vers.as_str())
                .expect(VALID);
            if !self.store.exists(&key).await? {
                // A task of its own: the download, its hash and its write
                // run on any of the runtime's threads, not on the one that
                // drives the whole pass.
                let download = tokio::spawn({
                    let (upstreams, store) = (self.upstreams.clone(), self.store.clone());
                    let (name, vers, cksum) = (line.name.clone(), line.vers.clone(), line.cksum);
                    async move {
                        upstreams
                            .download_crate(&name, &vers, &cksum, store.as_ref(), &key)
                            .await
                    }
                });
                let download = download.await.unwrap_or_else(|e| match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(_) => Err(FetchError::Unavailable(
                        "the download was stopped: the process is shutting down".into(),
                    )),
                });
                match download {
                    Ok(done) => {
                        outcome.downloaded += 1;
                        outcome.downloaded_bytes += done.size_bytes;
                    }
                    Err(FetchError::Store(e)) => return Err(e.into()),
                    Err(e) => {
                        warn!(registry = %self.name, krate.name = %line.name, krate.vers = %line.vers, error = %e, "crate file not mirrored");
                        outcome
                            .failures
                            .push(format!("{} {}: {e}", line.name, line.vers));
                        continue;
                    }
                }
            }
            published.push(lines[i]);
        }

        // Only now, with every crate file it names in place, the index file.
        let index_key = self.layout().index_file(path.as_str()).expect(VALID);
        let old = self.store.get(&index_key).await?;
        outcome.before = old.as_ref().map_or(0, |file| count_lines(file));
        outcome.after = published.len();
        if published.is_empty() {
            // No version is served (any more): no file, so cargo sees a 404.
            if old.is_some() {
                self.store.delete(&index_key).await?;
                outcome.changed = true;
            }
        } else {
            let mut file = Vec::with_capacity(raw.len());
            for line in &published {
                file.extend_from_slice(line);
                file.push(b'\n');
            }
            let file = Bytes::from(file);
            if old.as_ref() != Some(&file) {
                self.store.put(&index_key, file).await?;
                outcome.changed = true;
            }
        }
        // The cursor moves last, and only when nothing failed: a crash or a
        // failure before this looks at the same file again next pass.
        if outcome.failures.is_empty() {
            if previous.as_ref() != Some(&raw) {
                self.store.put(&raw_key, raw.clone()).await?;
            }
            self.keep_validators(&validators_key, fetched.validators)
                .await?;
        }
        Ok(outcome)
    }

    /// Stores the validators of a sparse upstream file, when they changed.
    pub(super) async fn keep_validators(
        &self,
        key: &BlobKey,
        validators: Option<Validators>,
    ) -> Result<(), SyncError> {
        let Some(validators) = validators else {
            return Ok(());
        };
        let body = Bytes::from(serde_json::to_vec(&validators).expect("validators serialise"));
        self.put_if_changed(key, body).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use wharf_test_support::{
        fixture::{CrateBuilder, sparse_path},
        upstream::{Fault, RequestKind, Target},
    };

    use super::super::{Look, Origin, testing::TestMirror};

    fn two_versions() -> Vec<wharf_test_support::fixture::FixtureCrate> {
        vec![
            CrateBuilder::new("one", "1.0.0").dep("dep", "^1").build(),
            CrateBuilder::new("one", "1.1.0").dep("dep", "^1").build(),
            CrateBuilder::new("dep", "1.0.0").build(),
        ]
    }

    #[tokio::test]
    async fn crate_files_then_the_index_file_then_the_cursor() {
        let t = TestMirror::start(two_versions(), "include = [\"one\"]").await;
        let outcome = t
            .mirror
            .sync_crate("one", Origin::Sparse, Look::Always, true)
            .await
            .unwrap();
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert_eq!(
            (outcome.downloaded, outcome.before, outcome.after),
            (2, 0, 2)
        );
        assert!(outcome.changed);
        assert_eq!(
            outcome.deps.into_iter().collect::<Vec<_>>(),
            ["dep"],
            "its dependencies, for the next wave"
        );
        let index = t.read(&format!("m/index/{}", sparse_path("one"))).await;
        assert_eq!(index, t.upstream.index_file("one"), "relayed byte for byte");
        for vers in ["1.0.0", "1.1.0"] {
            assert!(
                t.read(&format!("m/crates/one/one-{vers}.crate"))
                    .await
                    .is_some()
            );
        }
        assert_eq!(
            t.read(&format!("m/.sync/upstream/{}", sparse_path("one")))
                .await,
            index,
            "the cursor is the upstream's file"
        );
        assert!(
            t.read("m/index/3/d/dep").await.is_none(),
            "a dependency is the caller's to follow"
        );
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_looked_into_unless_asked() {
        let t = TestMirror::start(two_versions(), "include = [\"one\"]").await;
        let m = &t.mirror;
        m.sync_crate("one", Origin::Sparse, Look::Always, false)
            .await
            .unwrap();
        // A crate file lost behind the mirror's back.
        std::fs::remove_file(t.dir.path().join("data/m/crates/one/one-1.0.0.crate")).unwrap();
        t.upstream.clear_log();

        let skipped = m
            .sync_crate("one", Origin::Sparse, Look::IfChanged, false)
            .await
            .unwrap();
        assert!(!skipped.changed && skipped.downloaded == 0);
        assert_eq!((skipped.before, skipped.after), (2, 2));
        let asked = t.upstream.requests();
        assert_eq!(asked.len(), 1, "one conditional request: {asked:?}");
        assert_eq!(asked[0].status, 304);

        let looked = m
            .sync_crate("one", Origin::Sparse, Look::Always, false)
            .await
            .unwrap();
        assert_eq!(looked.downloaded, 1, "the lost file is downloaded again");
        assert_eq!(t.upstream.count(RequestKind::Crate), 1);
    }

    #[tokio::test]
    async fn a_version_whose_file_fails_is_left_out_and_the_cursor_stays() {
        let crates = two_versions();
        let bad = crates[1].dl_path().split('?').next().unwrap().to_owned();
        let t = TestMirror::start(crates, "include = [\"one\"]").await;
        t.upstream.set_fault(Target::Path(bad), Fault::WrongBytes);
        let outcome = t
            .mirror
            .sync_crate("one", Origin::Sparse, Look::Always, false)
            .await
            .unwrap();
        assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
        assert!(
            outcome.failures[0].starts_with("one 1.1.0: ")
                && outcome.failures[0].contains("checksum"),
            "{:?}",
            outcome.failures
        );
        let index = t
            .read(&format!("m/index/{}", sparse_path("one")))
            .await
            .unwrap();
        assert_eq!(index.lines().count(), 1, "only the good version: {index}");
        assert!(index.contains("\"1.0.0\""));
        assert!(t.read("m/crates/one/one-1.1.0.crate").await.is_none());
        assert!(
            t.read(&format!("m/.sync/upstream/{}", sparse_path("one")))
                .await
                .is_none(),
            "the cursor does not move past a failure"
        );

        t.upstream.clear_faults();
        let retried = t
            .mirror
            .sync_crate("one", Origin::Sparse, Look::IfChanged, false)
            .await
            .unwrap();
        assert!(retried.failures.is_empty());
        assert_eq!((retried.downloaded, retried.after), (1, 2));
    }

    #[tokio::test]
    async fn a_crate_deleted_upstream_loses_its_index_file_and_keeps_its_crate_files() {
        let t = TestMirror::start(two_versions(), "include = [\"one\"]").await;
        t.mirror
            .sync_crate("one", Origin::Sparse, Look::Always, false)
            .await
            .unwrap();
        let path = wharf_index::IndexPath::for_name(&wharf_index::CrateName::new("one").unwrap());
        assert_eq!(t.mirror.remove_crate(&path).await.unwrap(), 2);
        assert!(
            t.read(&format!("m/index/{}", sparse_path("one")))
                .await
                .is_none()
        );
        assert!(
            t.read(&format!("m/.sync/upstream/{}", sparse_path("one")))
                .await
                .is_none()
        );
        assert!(t.read("m/crates/one/one-1.1.0.crate").await.is_some());
    }
}
