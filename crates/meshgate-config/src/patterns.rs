//! The small string syntaxes inside config values (path patterns, `hash_on`, upstream URLs),
//! parsed once here so validation and the data plane agree on their meaning.

use http::Uri;

/// A regex error on one line: the `regex` crate renders the pattern with a caret over several
/// lines, which would break the one-error-per-line `file:line:col: field: message` format.
pub fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_owned()
}

/// A route path as written: `/prefix`, `=/exact` or `~regex`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPattern {
    /// Matches paths starting with this string.
    Prefix(String),
    /// Matches this path only.
    Exact(String),
    /// Matches when the regex matches at the start of the path.
    Regex(String),
}

impl PathPattern {
    /// Parses the config syntax, checking what can be checked without the router.
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        if let Some(re) = s.strip_prefix('~') {
            regex::Regex::new(re).map_err(|e| format!("invalid regex path {s:?}: {}", regex_error(&e)))?;
            Ok(PathPattern::Regex(re.to_owned()))
        } else if let Some(exact) = s.strip_prefix('=') {
            if !exact.starts_with('/') {
                return Err(format!("exact path {s:?} must start with \"=/\""));
            }
            Ok(PathPattern::Exact(exact.to_owned()))
        } else if s.starts_with('/') {
            Ok(PathPattern::Prefix(s.to_owned()))
        } else {
            Err(format!("path {s:?} must start with \"/\" (prefix), \"=/\" (exact) or \"~\" (regex)"))
        }
    }
}

/// What consistent hashing hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    /// A request header's value.
    Header(http::HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP address.
    Ip,
}

impl HashOn {
    /// Parses `header:NAME`, `cookie:NAME` or `ip`.
    pub fn parse(s: &str) -> Result<HashOn, String> {
        if s == "ip" {
            return Ok(HashOn::Ip);
        }
        match s.split_once(':') {
            Some(("header", name)) => http::HeaderName::from_bytes(name.as_bytes())
                .map(HashOn::Header)
                .map_err(|_| format!("invalid header name {name:?}")),
            Some(("cookie", name)) if !name.is_empty() => Ok(HashOn::Cookie(name.to_owned())),
            _ => Err(format!("invalid hash_on {s:?}: use \"header:NAME\", \"cookie:NAME\" or \"ip\"")),
        }
    }
}

/// A service URL split into what the data plane needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUrl {
    /// True for `https`.
    pub tls: bool,
    /// Host name or IP, without brackets.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Base path prepended to forwarded paths ("" when the URL has none or just "/").
    pub base_path: String,
}

impl ServiceUrl {
    /// Parses `http://host[:port][/path]` or `https://...`.
    pub fn parse(s: &str) -> Result<ServiceUrl, String> {
        let uri: Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("unsupported scheme {other:?} in {s:?}: use http or https")),
            None => return Err(format!("URL {s:?} needs a scheme: http:// or https://")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("URL {s:?} has no host"))?;
        if uri.query().is_some() {
            return Err(format!("URL {s:?} must not have a query string"));
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(ServiceUrl { tls, host, port, base_path })
    }
}

/// Checks a `host:port` target address; the host may be a name resolved at connect time.
pub fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("address {s:?} must be host:port"))?;
    if host.is_empty() {
        return Err(format!("address {s:?} has no host"));
    }
    port.parse::<u16>().map_err(|_| format!("address {s:?} has an invalid port"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_syntax() {
        assert_eq!(PathPattern::parse("/a").unwrap(), PathPattern::Prefix("/a".into()));
        assert_eq!(PathPattern::parse("=/a").unwrap(), PathPattern::Exact("/a".into()));
        assert_eq!(PathPattern::parse("~/a/(\\d+)").unwrap(), PathPattern::Regex("/a/(\\d+)".into()));
        assert!(PathPattern::parse("a").is_err());
        assert!(PathPattern::parse("~/a/(").is_err());
        assert!(PathPattern::parse("=a").is_err());
    }

    #[test]
    fn urls() {
        let u = ServiceUrl::parse("http://127.0.0.1:9000/base/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.base_path.as_str()), (false, "127.0.0.1", 9000, "/base"));
        let u = ServiceUrl::parse("https://api.example.com").unwrap();
        assert_eq!((u.tls, u.port, u.base_path.as_str()), (true, 443, ""));
        assert!(ServiceUrl::parse("ftp://x").is_err());
        assert!(ServiceUrl::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn hash_on() {
        assert_eq!(HashOn::parse("ip").unwrap(), HashOn::Ip);
        assert!(matches!(HashOn::parse("header:X-User").unwrap(), HashOn::Header(_)));
        assert!(HashOn::parse("body").is_err());
    }
}
