//! URLs as they may be shown: without credentials.
//!
//! An upstream, git or database URL may carry a password (`user:secret@`)
//! or a token in its query (`?token=…`, a signed S3 URL's `X-Amz-Signature`).
//! Every place that shows or logs such a URL shows [`redact`]'s form.

/// Query parameters whose values are secrets, compared case-insensitively.
/// Any parameter whose name contains `token`, `secret`, `password` or
/// `signature`, or starts with `x-amz-` or `x-goog-`, is one too.
const SECRET_PARAMS: &[&str] = &[
    "key",
    "apikey",
    "api_key",
    "sig",
    "pass",
    "passwd",
    "pwd",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "code",
];

/// `url` with its userinfo and any token-like query value replaced by `***`:
/// `https://user:secret@host/p?token=t&a=1` shows as
/// `https://user:***@host/p?token=***&a=1`. A user name alone (which often
/// is a token, as in `https://TOKEN@github.com`) is hidden whole. Anything
/// else is kept byte for byte, so the result still reads as the URL it came
/// from.
pub fn redact(url: &str) -> String {
    let (head, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (before_query, query) = match head.find('?') {
        Some(i) => (&head[..i], Some(&head[i + 1..])),
        None => (head, None),
    };
    let mut out = String::with_capacity(url.len());
    match before_query.find("://") {
        Some(scheme_end) => {
            let authority_start = scheme_end + 3;
            let rest = &before_query[authority_start..];
            let authority_len = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_len];
            out.push_str(&before_query[..authority_start]);
            match authority.rfind('@') {
                Some(at) => {
                    match authority[..at].split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str("***"),
                    }
                    out.push_str(&authority[at..]);
                }
                None => out.push_str(authority),
            }
            out.push_str(&rest[authority_len..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _value)) if is_secret(name) => format!("{name}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    // A fragment never reaches a server, but may still hold a token.
    if !fragment.is_empty() {
        out.push_str("#***");
    }
    out
}

/// `text` (an error message from a library that names `url` its own way)
/// with `url`, and its userinfo wherever it appears, hidden as [`redact`]
/// hides them.
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..=at];
            let shown = redact(&format!("x://{authority}"));
            let shown_userinfo = &shown[4..4 + shown[4..].rfind('@').map_or(0, |i| i + 1)];
            out = out.replace(userinfo, shown_userinfo);
        }
    }
    out
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
        || ["token", "secret", "password", "signature"]
            .iter()
            .any(|word| name.contains(word))
        || name.starts_with("x-amz-")
        || name.starts_with("x-goog-")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_hidden_and_the_rest_kept() {
        assert_eq!(
            redact("sparse+https://user:secret@host:8443/index/"),
            "sparse+https://user:***@host:8443/index/"
        );
        assert_eq!(
            redact("https://ghp_secret@github.com/rust-lang/crates.io-index"),
            "https://***@github.com/rust-lang/crates.io-index"
        );
        assert_eq!(
            redact("postgres://wharf:pa@ss@db/wharf?sslmode=require"),
            "postgres://wharf:***@db/wharf?sslmode=require"
        );
        assert_eq!(
            redact(
                "https://h/f?token=secret&a=1&X-Amz-Signature=secret&Sig=secret&access_token=secret"
            ),
            "https://h/f?token=***&a=1&X-Amz-Signature=***&Sig=***&access_token=***"
        );
        assert_eq!(redact("https://h/a@b/c"), "https://h/a@b/c");
        assert_eq!(redact("https://h/x#secret"), "https://h/x#***");
        assert_eq!(
            redact("sqlite:///srv/wharf/wharf.db"),
            "sqlite:///srv/wharf/wharf.db"
        );
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn a_url_inside_a_message_is_hidden_too() {
        use super::redact_in;
        let url = "https://u:secret@git.example/index?token=secret";
        let message = format!("cannot fetch {url}: connection to u:secret@git.example refused");
        let shown = redact_in(&message, url);
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("u:***@git.example"), "{shown}");
    }
}
