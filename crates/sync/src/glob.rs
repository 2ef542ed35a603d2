//! Crate-name globs: `*` (any run) and `?` (one character), case-insensitive.

/// Whether `name` matches `pattern`, ignoring ASCII case.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<u8> = pattern.bytes().map(|b| b.to_ascii_lowercase()).collect();
    let n: Vec<u8> = name.bytes().map(|b| b.to_ascii_lowercase()).collect();
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
    }
}
