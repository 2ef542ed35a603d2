//! Which crates a pass looks at, in waves: the files a git index changed
//! (`sync_listed`), the crates a feed names (`sync_feed`), or everything
//! reachable from the roots (`sync_roots`); one loop (`sync_waves`) syncs a
//! wave at a time and follows dependencies into the next.

use super::*;

/// How many crates' index files are read from the git index in one trip to
/// the blocking pool. A batch is read when the wave needs its next crate, so
/// at most one batch waits in memory besides the crates in flight: 64 index
/// files, most of a few KiB, the largest a few MiB.
const GIT_READ_BATCH: usize = 64;

impl Mirror {
    /// Syncs the index files that differ between the tree `old` (the empty
    /// tree when `None`: every file) and `new`, and the crates in `retry`;
    /// their content is read from the git index, or with `ask_sparse` asked
    /// of the sparse upstreams. Returns the change in totals and the crates
    /// that failed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn sync_listed(
        &self,
        index: &Arc<GitIndex>,
        old: Option<ObjectId>,
        new: ObjectId,
        mut retry: BTreeSet<String>,
        ask_sparse: bool,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<(Delta, BTreeSet<String>), SyncError> {
        let changes = {
            let index = Arc::clone(index);
            blocking(move || index.changes(old, new))
                .await
                .map_err(|e| {
                    let url = self.git.as_ref().map_or("", |g| g.url.as_str());
                    SyncError::Git {
                        url: redact(url),
                        message: redact_in(&e.to_string(), url),
                    }
                })?
        };
        let mut delta = Delta::default();
        let mut work = Vec::new();
        for change in changes {
            // Only canonical index paths are crates; `config.json`, READMEs
            // and CI files of the index repository are not.
            let Ok(path) = IndexPath::parse(&change.path) else {
                continue;
            };
            let name = path.name().as_str().to_owned();
            retry.remove(&name);
            if !self.selection.keeps_listed(&name) {
                continue;
            }
            match change.blob {
                Some(_) if ask_sparse => work.push((name, Source::Sparse)),
                Some(blob) => work.push((name, Source::Blob(blob))),
                None => {
                    let before = self.remove_crate(&path).await?;
                    delta.add(before, 0);
                    summary.changed += usize::from(before > 0);
                }
            }
        }
        // Crates that failed last pass and did not change since: from the
        // new tree, or removed if upstream deleted them meanwhile.
        for name in retry {
            let Ok(krate) = CrateName::new(&name) else {
                continue;
            };
            let path = IndexPath::for_name(&krate);
            let exists = {
                let (index, path) = (Arc::clone(index), path.as_str().to_owned());
                blocking(move || index.read(new, &path)).await
            };
            match exists {
                Ok(None) => {
                    let before = self.remove_crate(&path).await?;
                    delta.add(before, 0);
                }
                _ if self.selection.keeps_listed(&name) => work.push((name, Source::Tree(new))),
                _ => {}
            }
        }
        let (each, failed) = self
            .sync_waves(work, Look::IfChanged, Follow::Nothing, progress, summary)
            .await?;
        delta.merge(&each);
        Ok((delta, failed))
    }

    /// Syncs `work` in waves: each wave's crates at once (up to the
    /// mirror's concurrency), and the dependencies `follow` picks from them
    /// (each name once) make the next wave. Returns the change in totals and
    /// the crates that failed.
    pub(super) async fn sync_waves(
        &self,
        work: Vec<(String, Source)>,
        look: Look,
        follow: Follow,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<(Delta, BTreeSet<String>), SyncError> {
        let mut delta = Delta::default();
        let mut failed = BTreeSet::new();
        let mut seen: BTreeSet<String> = work.iter().map(|(name, _)| name.clone()).collect();
        let wants_deps = !matches!(follow, Follow::Nothing);
        let mut wave = work;
        while !wave.is_empty() {
            progress.add_total(wave.len());
            let index = match wave.iter().any(|(_, s)| !matches!(s, Source::Sparse)) {
                true => Some(self.git_clone().await),
                false => None,
            };
            let mut outcomes = std::pin::pin!(
                stream::iter(wave)
                    .chunks(GIT_READ_BATCH)
                    .then(move |crates| read_git(index.clone(), crates))
                    .flat_map(stream::iter)
                    .map(|(name, origin)| async move {
                        let outcome = self.sync_crate(&name, origin, look, wants_deps).await;
                        progress.crate_done(&name);
                        (name, outcome)
                    })
                    .buffer_unordered(self.concurrency)
            );
            let mut next = Vec::new();
            while let Some((name, outcome)) = outcomes.next().await {
                let mut outcome = outcome?;
                for dep in std::mem::take(&mut outcome.deps) {
                    let dep = dep.to_ascii_lowercase();
                    if !self.selection.follows(&dep) || !seen.insert(dep.clone()) {
                        continue;
                    }
                    match follow {
                        Follow::Nothing => {}
                        Follow::NotHeld => {
                            if !self.holds(&dep).await? {
                                next.push((dep, Source::Sparse));
                            }
                        }
                        Follow::All(source) => next.push((dep, source)),
                    }
                }
                if !outcome.failures.is_empty() {
                    failed.insert(name);
                }
                delta.add(outcome.before, outcome.after);
                summary.add(outcome);
            }
            wave = next;
        }
        Ok((delta, failed))
    }

    /// Polls the feed and syncs the crates it names that are new since the
    /// last poll, plus the crates that failed last time, over the sparse
    /// upstreams. A mirror of roots takes only crates it already holds, and
    /// the new dependencies those bring.
    pub(super) async fn sync_feed(
        &self,
        state: &mut State,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<Delta, SyncError> {
        let Some(feed_url) = &self.feed_url else {
            return Err(SyncError::Unsupported(format!(
                "mirror `{}` has no feed_url to poll",
                self.name
            )));
        };
        // Shown and logged without credentials.
        let url = &redact(feed_url);
        let (body, validators) = match self
            .upstreams
            .fetch_document(feed_url, state.feed_validators.as_ref())
            .await
        {
            Ok(IndexFetch::Modified {
                body, validators, ..
            }) => (body, validators),
            Ok(IndexFetch::NotModified { validators }) => {
                info!(registry = %self.name, feed.url = %url, "feed unchanged");
                (Bytes::new(), validators)
            }
            Ok(IndexFetch::NotFound) => {
                summary.failures.push(format!("feed {url}: not found"));
                return Ok(Delta::default());
            }
            Err(e) => {
                summary.failures.push(format!("feed {url}: {e}"));
                return Ok(Delta::default());
            }
        };
        // An unchanged feed has no body to read; a body that is not a feed
        // fails the poll (its validators are not kept, so the next poll asks
        // again in full).
        let items = if body.is_empty() {
            Vec::new()
        } else {
            match feed::parse(&String::from_utf8_lossy(&body)) {
                Ok(items) => items,
                Err(e) => {
                    summary.failures.push(format!("feed {url}: {e}"));
                    return Ok(Delta::default());
                }
            }
        };
        summary.upstream_time = super::lag::newest_item(&items);
        let fresh: Vec<&feed::FeedItem> = items
            .iter()
            .filter(|item| !state.feed_seen.contains(&item.id))
            .collect();
        if !body.is_empty()
            && !state.feed_seen.is_empty()
            && !items.is_empty()
            && fresh.len() == items.len()
        {
            warn!(registry = %self.name, feed.url = %url, items = items.len(), "every item of the feed is new: updates between two polls may have been missed; the next full pass or reconciliation catches them (poll more often to avoid this)");
        }
        let mut names: BTreeSet<String> = std::mem::take(&mut state.retry);
        let roots = !self.selection.roots.is_empty();
        for item in fresh {
            let name = item.name.to_ascii_lowercase();
            let wanted = if roots {
                self.selection.roots.contains(&name) || self.holds(&name).await?
            } else {
                self.selection.keeps_listed(&name)
            };
            if wanted {
                names.insert(name);
            }
        }
        info!(registry = %self.name, feed.url = %url, items = items.len(), crates = names.len(), "feed polled");
        let work: Vec<(String, Source)> = names.into_iter().map(|n| (n, Source::Sparse)).collect();
        let follow = if roots {
            Follow::NotHeld
        } else {
            Follow::Nothing
        };
        let (delta, failed) = self
            .sync_waves(work, Look::IfChanged, follow, progress, summary)
            .await?;
        state.retry = failed;
        if !body.is_empty() {
            state.feed_seen = items.into_iter().map(|item| item.id).collect();
        }
        state.feed_validators = Some(validators);
        Ok(delta)
    }

    /// Whether the mirror holds (has published) the crate `name`.
    pub(super) async fn holds(&self, name: &str) -> Result<bool, SyncError> {
        let Ok(krate) = CrateName::new(name) else {
            return Ok(false);
        };
        let path = IndexPath::for_name(&krate);
        Ok(self
            .store
            .exists(&self.layout().sync_upstream(path.as_str()).expect(VALID))
            .await?)
    }

    /// Syncs every crate reachable from the selection's roots, breadth first:
    /// each wave's dependencies make the next wave.
    pub(super) async fn sync_roots(
        &self,
        source: Source,
        look: Look,
        progress: &dyn Progress,
        summary: &mut Summary,
    ) -> Result<Delta, SyncError> {
        let roots = self
            .selection
            .roots
            .iter()
            .filter(|r| self.selection.keeps_root(r))
            .map(|root| (root.clone(), source))
            .collect();
        let (delta, _) = self
            .sync_waves(roots, look, Follow::All(source), progress, summary)
            .await?;
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use wharf_test_support::{
        fixture::{graph, sparse_path},
        upstream::{Fault, RequestKind, Target},
    };

    use super::super::{Follow, Look, SilentProgress, Source, Summary, testing::TestMirror};

    /// Syncs the crates `names` (from the sparse upstreams, looking at each)
    /// in waves that follow `follow`.
    async fn waves(
        t: &TestMirror,
        names: &[&str],
        follow: Follow,
    ) -> (super::super::Delta, BTreeSet<String>, Summary) {
        let work = names
            .iter()
            .map(|n| (n.to_string(), Source::Sparse))
            .collect();
        let mut summary = Summary::default();
        let (delta, failed) = t
            .mirror
            .sync_waves(work, Look::Always, follow, &SilentProgress, &mut summary)
            .await
            .unwrap();
        (delta, failed, summary)
    }

    #[tokio::test]
    async fn each_wave_is_the_new_dependencies_of_the_last() {
        let t = TestMirror::start(graph("w", 6), "include = [\"w-0\"]").await;
        let (delta, failed, summary) = waves(&t, &["w-0"], Follow::All(Source::Sparse)).await;
        assert!(failed.is_empty());
        assert_eq!(delta.totals(), (6, 6));
        assert_eq!(
            summary.crates, 6,
            "each crate once, though several depend on it"
        );
        assert_eq!(t.upstream.count(RequestKind::Crate), 6);
    }

    #[tokio::test]
    async fn following_nothing_syncs_just_the_work() {
        let t = TestMirror::start(graph("n", 4), "include = [\"n-0\"]").await;
        let (delta, _, summary) = waves(&t, &["n-0"], Follow::Nothing).await;
        assert_eq!((delta.totals(), summary.crates), ((1, 1), 1));
        assert!(
            t.read(&format!("m/index/{}", sparse_path("n-1")))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn following_what_is_not_held_leaves_held_crates_alone() {
        let t = TestMirror::start(graph("h", 4), "include = [\"h-0\"]").await;
        // h-1 (and, through it, h-2 and h-3) are held already.
        waves(&t, &["h-1"], Follow::All(Source::Sparse)).await;
        assert!(t.mirror.holds("h-3").await.unwrap());
        assert!(!t.mirror.holds("h-0").await.unwrap());
        t.upstream.clear_log();
        let (_, _, summary) = waves(&t, &["h-0"], Follow::NotHeld).await;
        assert_eq!(summary.crates, 1, "h-1 and h-3 are held: not synced again");
        let asked: Vec<String> = t.upstream.requests().into_iter().map(|r| r.path).collect();
        assert!(asked.iter().all(|p| p.contains("h-0")), "{asked:?}");
    }

    #[tokio::test]
    async fn a_failed_crate_is_named_and_the_others_complete() {
        let crates = graph("f", 3);
        let bad = crates[2].dl_path().split('?').next().unwrap().to_owned();
        let t = TestMirror::start(crates, "include = [\"f-0\"]").await;
        t.upstream.set_fault(Target::Path(bad), Fault::WrongBytes);
        let (delta, failed, summary) = waves(&t, &["f-0"], Follow::All(Source::Sparse)).await;
        assert_eq!(failed.into_iter().collect::<Vec<_>>(), ["f-2"]);
        assert_eq!(delta.totals(), (2, 2), "f-0 and f-1 are served");
        assert_eq!(summary.failures.len(), 1, "{:?}", summary.failures);
    }
}
