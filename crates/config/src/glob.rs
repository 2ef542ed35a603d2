//! Crate-name globs: `*` (any run) and `?` (one character), compared the way
//! crates.io compares names: ASCII case and `-`/`_` do not matter. Mirror
//! selections, policy rules and client grants all match names with it.

/// Whether `name` matches `pattern`, ignoring ASCII case and `-`/`_`.
pub fn matches(pattern: &str, name: &str) -> bool {
    let fold = |b: u8| {
        if b == b'-' {
            b'_'
        } else {
            b.to_ascii_lowercase()
        }
    };
    let p: Vec<u8> = pattern.bytes().map(fold).collect();
    let n: Vec<u8> = name.bytes().map(fold).collect();
    // Iterative matching with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs() {
        assert!(matches("serde*", "serde_json"));
        assert!(matches("serde*", "Serde"));
        assert!(matches("*-sys", "openssl-sys"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "abbc"));
        assert!(matches("*", "x"));
        assert!(!matches("tokio", "tokio-util"));
        assert!(matches("*a*b*", "xxaxxbxx"));
        assert!(matches("serde-*", "serde_json"));
        assert!(matches("Foo_Bar", "foo-bar"));
    }
}
