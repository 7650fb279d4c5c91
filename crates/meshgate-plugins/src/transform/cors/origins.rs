//! The origins a `cors` instance allows: the config syntax, checked and compiled once, and the
//! per-request match (no allocation).
//!
//! Entries are compared with `Origin` as browsers serialize it (RFC 6454): lower-case scheme and
//! host, no default port, no path. Config entries are normalized to that form, so
//! `https://App.example.com:443` allows what browsers send as `https://app.example.com`.

use meshgate_config::regex_error;
use std::collections::HashSet;

/// Compiled `origins:` list.
#[derive(Debug)]
pub(super) struct Origins {
    /// `*`: every origin, answered with `Access-Control-Allow-Origin: *`.
    pub(super) any: bool,
    exact: HashSet<Box<str>>,
    wildcards: Vec<Wildcard>,
    /// Every `~regex` entry as one anchored alternation.
    regex: Option<regex::Regex>,
}

/// `scheme://*.suffix[:port]`: one or more DNS labels in place of the `*`.
#[derive(Debug)]
struct Wildcard {
    /// `https://`.
    prefix: Box<str>,
    /// `.example.com` or `.example.com:8443`.
    suffix: Box<str>,
}

impl Wildcard {
    fn matches(&self, origin: &str) -> bool {
        origin
            .strip_prefix(&*self.prefix)
            .and_then(|rest| rest.strip_suffix(&*self.suffix))
            .is_some_and(|sub| sub.split('.').all(is_label))
    }
}

/// One `origins:` entry, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Any,
    Exact(String),
    Wildcard { prefix: String, suffix: String },
    Regex(String),
}

impl Origins {
    /// Compiles the list; an error names the entry's index and what is wrong with it.
    pub(super) fn parse(list: &[String]) -> Result<Origins, (usize, String)> {
        if list.is_empty() {
            return Err((0, "list at least one origin, or \"*\" for any".to_owned()));
        }
        let mut o = Origins { any: false, exact: HashSet::new(), wildcards: Vec::new(), regex: None };
        let mut regexes = Vec::new();
        for (i, s) in list.iter().enumerate() {
            match parse_entry(s).map_err(|m| (i, m))? {
                Entry::Any if list.len() > 1 => {
                    return Err((i, "\"*\" allows every origin: list it alone".to_owned()));
                }
                Entry::Any => o.any = true,
                Entry::Exact(e) => {
                    o.exact.insert(e.into());
                }
                Entry::Wildcard { prefix, suffix } => {
                    o.wildcards.push(Wildcard { prefix: prefix.into(), suffix: suffix.into() })
                }
                Entry::Regex(r) => regexes.push(format!("^(?:{r})$")),
            }
        }
        if !regexes.is_empty() {
            // Each entry compiled alone in `parse_entry`; together they only get larger.
            let joined = regexes.join("|");
            o.regex = Some(regex::Regex::new(&joined).map_err(|e| (list.len() - 1, regex_error(&e)))?);
        }
        Ok(o)
    }

    /// Whether a request's `Origin` value is allowed.
    pub(super) fn allows(&self, origin: &http::HeaderValue) -> bool {
        if self.any {
            return true;
        }
        let Ok(o) = origin.to_str() else { return false };
        self.exact.contains(o)
            || self.wildcards.iter().any(|w| w.matches(o))
            || self.regex.as_ref().is_some_and(|r| r.is_match(o))
    }
}

fn parse_entry(s: &str) -> Result<Entry, String> {
    if s == "*" {
        return Ok(Entry::Any);
    }
    if let Some(re) = s.strip_prefix('~') {
        // Anchored: an unanchored `example\.com` would also allow `https://example.com.evil.net`.
        regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regex {s:?}: {}", regex_error(&e)))?;
        return Ok(Entry::Regex(re.to_owned()));
    }
    if s.eq_ignore_ascii_case("null") {
        return Err("the \"null\" origin cannot be allowed: sandboxed frames and local files send it, and \
                    anyone can make those"
            .to_owned());
    }
    let form = || format!("origin {s:?} must be scheme://host[:port], as in \"https://app.example.com\"");
    let (scheme, rest) = s.split_once("://").ok_or_else(form)?;
    let scheme = scheme.to_ascii_lowercase();
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase())
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    {
        return Err(form());
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "origin {s:?} has a path: an origin is scheme://host[:port] only, with no \"/\" at the end"
        ));
    }
    if rest.contains('@') {
        return Err(form());
    }
    let rest = rest.to_ascii_lowercase();
    let (host, port) = split_port(&rest).ok_or_else(form)?;
    let port = match port {
        None => String::new(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => {
                let default = matches!((scheme.as_str(), n), ("http", 80) | ("https", 443));
                if default { String::new() } else { format!(":{n}") }
            }
            _ => return Err(format!("origin {s:?} has an invalid port {p:?}")),
        },
    };
    if let Some(base) = host.strip_prefix("*.") {
        if !is_host(base) {
            return Err(form());
        }
        return Ok(Entry::Wildcard { prefix: format!("{scheme}://"), suffix: format!(".{base}{port}") });
    }
    if host.contains('*') {
        return Err(format!(
            "origin {s:?}: \"*\" may only stand for the first labels of the host, as in \"https://*.example.com\" \
             (use \"~regex\" for other patterns)"
        ));
    }
    if !is_host(host) {
        return Err(form());
    }
    Ok(Entry::Exact(format!("{scheme}://{host}{port}")))
}

/// `host[:port]` split; `[v6]` hosts keep their brackets. `None` when malformed.
fn split_port(rest: &str) -> Option<(&str, Option<&str>)> {
    if rest.starts_with('[') {
        let end = rest.find(']')?;
        let (host, after) = rest.split_at(end + 1);
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    Some(match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    })
}

/// A DNS name or IPv4 address (dot-separated labels), or a bracketed IPv6 address.
fn is_host(h: &str) -> bool {
    match h.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => h.split('.').all(is_label),
    }
}

fn is_label(l: &str) -> bool {
    !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Origins {
        Origins::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn err(list: &[&str]) -> (usize, String) {
        Origins::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err()
    }

    fn allows(o: &Origins, origin: &str) -> bool {
        o.allows(&http::HeaderValue::from_str(origin).unwrap())
    }

    #[test]
    fn exact_origins_are_normalized_as_browsers_send_them() {
        let o = origins(&["https://App.Example.com:443", "http://localhost:3000", "http://[::1]:8080"]);
        assert!(allows(&o, "https://app.example.com"));
        assert!(allows(&o, "http://localhost:3000"));
        assert!(allows(&o, "http://[::1]:8080"));
        for refused in [
            "https://app.example.com:8443", // another port is another origin
            "http://app.example.com",       // so is another scheme
            "https://app.example.com.evil.net",
            "https://evil-app.example.com",
            "http://localhost:3001",
            "http://localhost",
            "null",
            "",
        ] {
            assert!(!allows(&o, refused), "{refused} was allowed");
        }
        assert!(!o.any);
    }

    #[test]
    fn wildcards_stand_for_one_or_more_labels_and_keep_scheme_and_port() {
        let o = origins(&["https://*.example.com", "http://*.dev.test:8080"]);
        for allowed in ["https://app.example.com", "https://a.b.example.com", "http://x.dev.test:8080"] {
            assert!(allows(&o, allowed), "{allowed} was refused");
        }
        for refused in [
            "https://example.com",            // the bare domain is not a subdomain
            "https://.example.com",           // empty label
            "https://evilexample.com",        // not a label boundary
            "https://example.com.evil.net",   // suffix elsewhere
            "https://a.example.com.evil.net", // ditto
            "http://app.example.com",         // scheme
            "https://app.example.com:8443",   // port
            "https://a:1@b.example.com",      // userinfo sneaking in
            "https://evil.net/.example.com",  // path sneaking in
            "https://a..example.com",         // empty label
            "http://x.dev.test",              // the listed port is required
            "https://APP.example.com",        // browsers send lower case
        ] {
            assert!(!allows(&o, refused), "{refused} was allowed");
        }
    }

    #[test]
    fn regexes_are_anchored_and_combined() {
        let o = origins(&["~https://(app|admin)\\.example\\.org", "~http://localhost:\\d+", "https://exact.test"]);
        for allowed in ["https://app.example.org", "https://admin.example.org", "http://localhost:5173"] {
            assert!(allows(&o, allowed), "{allowed} was refused");
        }
        assert!(allows(&o, "https://exact.test"));
        for refused in [
            "https://app.example.org.evil.net",
            "xhttps://app.example.org",
            "http://localhost:",
            "https://other.example.org",
        ] {
            assert!(!allows(&o, refused), "{refused} was allowed");
        }
    }

    #[test]
    fn star_allows_all() {
        let o = origins(&["*"]);
        assert!(o.any);
        assert!(allows(&o, "https://anything.example"));
        assert!(allows(&o, "null"));
    }

    #[test]
    fn bad_entries_are_named_with_the_reason() {
        assert_eq!(err(&[]), (0, "list at least one origin, or \"*\" for any".to_owned()));
        assert_eq!(err(&["https://a.test", "*"]).0, 1);
        assert!(err(&["https://a.test", "*"]).1.contains("list it alone"));
        let (i, m) = err(&["https://a.test", "https://b.test/"]);
        assert_eq!(i, 1);
        assert!(m.contains("has a path"), "{m}");
        assert!(err(&["app.example.com"]).1.contains("must be scheme://host[:port]"));
        assert!(err(&["https://app.example.com:99999"]).1.contains("invalid port \"99999\""));
        assert!(err(&["https://app.example.com:"]).1.contains("invalid port"));
        assert!(err(&["https://api.*.example.com"]).1.contains("first labels of the host"));
        assert!(err(&["https://*example.com"]).1.contains("first labels of the host"));
        assert!(err(&["https://*."]).1.contains("must be scheme://host"));
        assert!(err(&["null"]).1.contains("\"null\" origin cannot be allowed"));
        assert!(err(&["https://user@app.example.com"]).1.contains("must be scheme://host"));
        assert!(err(&["https://a_b.example.com"]).1.contains("must be scheme://host"));
        let (i, m) = err(&["https://a.test", "~https://(unclosed"]);
        assert_eq!(i, 1);
        assert!(m.starts_with("invalid regex \"~https://(unclosed\": "), "{m}");
        assert!(!m.contains('\n'), "one line: {m}");
    }
}
