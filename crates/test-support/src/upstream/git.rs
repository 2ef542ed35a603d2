//! The fake upstream's git index: the same index files, committed to a git
//! repository when a test asks, and served over git's smart HTTP protocol by
//! running `git http-backend` as a CGI program, as a real git host does.
//!
//! Commits are explicit ([`super::FakeUpstream::git_commit`]) because a real git
//! index batches many publishes into one commit, and a test wants to say which
//! changes a sync sees together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use tokio::io::AsyncWriteExt;

/// The name under which the repository is served: `{url}/git/index`.
pub(super) const REPO: &str = "index";

/// A git repository holding the index files, in a temporary directory.
pub(super) struct GitIndex {
    root: tempfile::TempDir,
}

impl GitIndex {
    /// Makes an empty repository with a `master` branch.
    pub(super) fn new() -> Self {
        let root = tempfile::tempdir().expect("a temporary directory for the git index");
        std::fs::create_dir(root.path().join(REPO)).expect("creating the git index directory");
        let index = Self { root };
        index.git(&["init", "-q", "-b", "master"]);
        index
    }

    /// The directory `git http-backend` serves repositories from.
    pub(super) fn project_root(&self) -> PathBuf {
        self.root.path().to_owned()
    }

    fn worktree(&self) -> PathBuf {
        self.root.path().join(REPO)
    }

    /// Replaces the worktree's files with `files` (path to content) and
    /// commits them, dated `at` (seconds since the epoch) or now; returns
    /// the commit id.
    pub(super) fn commit(
        &self,
        files: &BTreeMap<String, String>,
        message: &str,
        at: Option<i64>,
    ) -> String {
        self.write_files(files);
        self.git(&["add", "-A"]);
        match at {
            Some(secs) => {
                let date = format!("@{secs} +0000");
                let out = isolated_git()
                    .current_dir(self.worktree())
                    .env("GIT_AUTHOR_DATE", &date)
                    .env("GIT_COMMITTER_DATE", &date)
                    .args(["commit", "-q", "--allow-empty", "-m", message])
                    .output()
                    .expect("running git (is it installed?)");
                assert!(
                    out.status.success(),
                    "git commit dated {date} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => {
                self.git(&["commit", "-q", "--allow-empty", "-m", message]);
            }
        }
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// Replaces the whole history with one root commit holding `files`, and
    /// prunes the old commits, as crates.io does when it squashes its index.
    pub(super) fn squash(&self, files: &BTreeMap<String, String>, message: &str) -> String {
        self.git(&["checkout", "-q", "--orphan", "squashed"]);
        self.write_files(files);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["branch", "-q", "-M", "squashed", "master"]);
        self.git(&["reflog", "expire", "--expire=now", "--all"]);
        self.git(&["gc", "-q", "--prune=now"]);
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    pub(super) fn repack(&self) {
        self.git(&["repack", "-a", "-d", "-q", "--write-bitmap-index"]);
    }

    fn write_files(&self, files: &BTreeMap<String, String>) {
        let worktree = self.worktree();
        for entry in std::fs::read_dir(&worktree).expect("listing the git worktree") {
            let entry = entry.expect("reading the git worktree");
            if entry.file_name() == ".git" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("clearing the git worktree");
            } else {
                std::fs::remove_file(&path).expect("clearing the git worktree");
            }
        }
        for (rel, body) in files {
            let path = worktree.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("creating an index directory");
            }
            std::fs::write(&path, body).expect("writing an index file");
        }
    }

    fn git(&self, args: &[&str]) -> String {
        let out = isolated_git()
            .current_dir(self.worktree())
            .args(args)
            .output()
            .expect("running git (is it installed?)");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `git` with no user or system configuration and a fixed identity.
fn isolated_git() -> Command {
    let mut command = Command::new("git");
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "fake upstream")
        .env("GIT_AUTHOR_EMAIL", "upstream@example.invalid")
        .env("GIT_COMMITTER_NAME", "fake upstream")
        .env("GIT_COMMITTER_EMAIL", "upstream@example.invalid");
    command
}

/// Answers one smart-HTTP request (`/git/index/info/refs`,
/// `/git/index/git-upload-pack`) by running `git http-backend` on it.
pub(super) async fn serve(project_root: Option<PathBuf>, request: Request) -> Response {
    let Some(project_root) = project_root else {
        return (StatusCode::NOT_FOUND, "no git index yet\n").into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::BAD_REQUEST, "unreadable body\n").into_response();
    };
    let path_info = parts.uri.path().strip_prefix("/git").unwrap_or("/");
    let header_text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", path_info)
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(value) = header_text(header) {
            command.env(variable, value);
        }
    }
    let output = async {
        let mut child = command.spawn()?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        let feed = async move {
            stdin.write_all(&body).await?;
            stdin.shutdown().await
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        fed?;
        output
    }
    .await;
    match output {
        Ok(output) => cgi_response(&output.stdout),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("git http-backend: {e}\n"),
        )
            .into_response(),
    }
}

/// Turns a CGI program's output (headers, a blank line, the body) into a response.
fn cgi_response(out: &[u8]) -> Response {
    let (head, body) = match find(out, b"\r\n\r\n") {
        Some(i) => (&out[..i], &out[i + 4..]),
        None => match find(out, b"\n\n") {
            Some(i) => (&out[..i], &out[i + 2..]),
            None => (&out[..0], out),
        },
    };
    let mut response = Response::builder();
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            response = response.status(code.unwrap_or(500u16));
        } else {
            response = response.header(name.trim(), value);
        }
    }
    response
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("bad CGI output: {e}\n"),
            )
                .into_response()
        })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
