//! Host names: normalizing the configured patterns once, and the request's host on every
//! request without allocating.

/// A configured host, normalized (lower case, no brackets, no trailing dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// Matches this name only.
    Exact(String),
    /// `*.suffix`: matches names ending in `.suffix`, holding the suffix without the dot.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `api.example.com`, `*.example.com`, `[::1]` or `::1`. A port is refused rather
    /// than ignored: the request's port is stripped before matching, so a route written with
    /// one could never match.
    pub(crate) fn parse(h: &str) -> Result<HostPattern, String> {
        let bad = || format!("invalid host {h:?}: use api.example.com or *.example.com");
        let lower = h.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let (wild, name) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let name = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        if name.is_empty() || name.contains(['*', ' ', '/', '[', ']']) {
            return Err(bad());
        }
        if name.contains(':') && (wild || name.parse::<std::net::Ipv6Addr>().is_err()) {
            return Err(format!("invalid host {h:?}: a host must not have a port"));
        }
        Ok(if wild { HostPattern::Wildcard(name.to_owned()) } else { HostPattern::Exact(name.to_owned()) })
    }
}

/// The name part of a request's `Host`: without port, IPv6 brackets or one trailing dot.
/// Case is left alone; see [`with_lowercase`].
pub(crate) fn strip_request_host(h: &str) -> &str {
    let name = if let Some(rest) = h.strip_prefix('[') {
        // `[::1]:80` → `::1`; an unterminated bracket is kept as is and simply matches nothing.
        rest.split_once(']').map_or(h, |(inner, _)| inner)
    } else {
        match h.find(':') {
            // Exactly one colon is a port; more is an unbracketed IPv6 literal.
            Some(i) if !h[i + 1..].contains(':') => &h[..i],
            _ => h,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// Longest host lowered on the stack; longer ones (beyond DNS's 253) allocate, which only
/// malformed or hostile requests do.
const STACK_HOST: usize = 256;

/// Calls `f` with `h` in ASCII lower case. Hosts already in lower case, the usual case, are
/// passed through; others are lowered into a stack buffer, so neither path allocates.
pub(crate) fn with_lowercase<R>(h: &str, f: impl FnOnce(&str) -> R) -> R {
    if !h.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(h);
    }
    if h.len() <= STACK_HOST {
        let mut buf = [0u8; STACK_HOST];
        let buf = &mut buf[..h.len()];
        buf.copy_from_slice(h.as_bytes());
        buf.make_ascii_lowercase();
        // Lowering ASCII bytes keeps UTF-8 valid, so this cannot fail.
        return f(std::str::from_utf8(buf).unwrap_or_default());
    }
    f(&h.to_ascii_lowercase())
}

/// The suffixes a wildcard could be keyed by, longest first: for `a.b.example.com` these are
/// `b.example.com`, `example.com` and `com`.
pub(crate) fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.bytes()
        .enumerate()
        .filter(|&(i, b)| b == b'.' && i > 0)
        .map(move |(i, _)| &host[i + 1..])
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hosts() {
        assert_eq!(strip_request_host("example.com:8080"), "example.com");
        assert_eq!(strip_request_host("example.com"), "example.com");
        assert_eq!(strip_request_host("example.com."), "example.com");
        assert_eq!(strip_request_host("[::1]:80"), "::1");
        assert_eq!(strip_request_host("[::1]"), "::1");
        assert_eq!(strip_request_host("::1"), "::1");
        assert_eq!(with_lowercase("ExAmple.COM", str::to_owned), "example.com");
        let long = "A".repeat(300);
        assert_eq!(with_lowercase(&long, str::to_owned), "a".repeat(300));
    }

    #[test]
    fn patterns() {
        assert_eq!(HostPattern::parse("API.example.com.").unwrap(), HostPattern::Exact("api.example.com".into()));
        assert_eq!(HostPattern::parse("*.Example.com").unwrap(), HostPattern::Wildcard("example.com".into()));
        assert_eq!(HostPattern::parse("[::1]").unwrap(), HostPattern::Exact("::1".into()));
        assert!(HostPattern::parse("example.com:80").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn suffixes() {
        assert_eq!(wildcard_suffixes("a.b.example.com").collect::<Vec<_>>(), ["b.example.com", "example.com", "com"]);
        assert_eq!(wildcard_suffixes("localhost").count(), 0);
        assert_eq!(wildcard_suffixes(".com").count(), 0);
    }
}
