//! What the gateway accepts of a request head before routing it (RFC 9110, RFC 9112), and the
//! one normal form of its path (`meshgate_router::normalize`). Everything here guards against a
//! request that the gateway and the upstream would read differently: two Hosts, an invalid Host,
//! framing the gateway would forward in another shape, a path spelled around a route.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, Uri};
use http::{Method, Response, Version};
use meshgate_core::{ErrorKind, ProxyBody};
use meshgate_router::{PathError, PathRules, normalize};

/// Why a request head is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The gateway is a reverse proxy, not a tunnel.
    #[error("CONNECT is not supported")]
    Connect,
    /// Neither origin-form, absolute-form nor `OPTIONS *`.
    #[error("the request target must be a path (or an absolute URI)")]
    Target,
    /// Transfer-Encoding outside HTTP/1.1.
    #[error("Transfer-Encoding is only allowed in HTTP/1.1")]
    CodingVersion,
    /// A transfer coding other than chunked.
    #[error("only the chunked transfer coding is supported")]
    Coding,
    /// `chunked, chunked`.
    #[error("the chunked transfer coding is applied more than once")]
    ChunkedTwice,
    /// Two Host header fields.
    #[error("more than one Host header")]
    TwoHosts,
    /// A Host that is not `host[:port]`.
    #[error("invalid Host header")]
    BadHost,
    /// An absolute-form target whose authority is not `host[:port]` (userinfo included).
    #[error("invalid authority in the request target")]
    BadAuthority,
    /// HTTP/1.1 without Host.
    #[error("an HTTP/1.1 request needs a Host header")]
    NoHost,
    /// A path that cannot be normalised safely.
    #[error(transparent)]
    Path(#[from] PathError),
}

impl HeadError {
    /// The JSON answer: 501 for what the gateway does not do, else 400.
    pub fn response(self) -> Response<ProxyBody> {
        let kind = match self {
            HeadError::Connect | HeadError::Coding => ErrorKind::NotImplemented,
            _ => ErrorKind::BadRequest,
        };
        kind.response(&self.to_string())
    }
}

/// Checks the head and normalises the path in place. Returns the host the client asked for (the
/// URI's authority for absolute-form and HTTP/2 `:authority`, else the Host header), used for
/// routing, `X-Forwarded-Host` and `preserve_host`.
pub fn check(req: &mut Parts, rules: PathRules) -> Result<Option<HeaderValue>, HeadError> {
    if req.method == Method::CONNECT {
        return Err(HeadError::Connect);
    }
    target(&req.method, &req.uri)?;
    // One pass over the fields for what the checks need: cheaper than a hashed lookup each.
    let (mut hosts, mut host, mut coded) = (0, None, false);
    for (name, value) in req.headers.iter() {
        if name == header::HOST {
            hosts += 1;
            host.get_or_insert(value);
        } else if name == header::TRANSFER_ENCODING {
            coded = true;
        }
    }
    if coded {
        framing(req.version, &req.headers)?;
    }
    let host = self::host(req, hosts, host)?;
    if let Some(path) = normalize(req.uri.path(), rules)? {
        req.uri = with_path(&req.uri, &path);
    }
    Ok(host)
}

/// The request-target's form (RFC 9112 §3.2): origin-form (`/path`), absolute-form
/// (`http://host/path`), or `*` for OPTIONS. A bare authority (`host:port`) is for CONNECT only.
fn target(method: &Method, uri: &Uri) -> Result<(), HeadError> {
    let path = uri.path();
    let origin_or_absolute = path.starts_with('/') && (uri.scheme().is_some() || uri.authority().is_none());
    if origin_or_absolute || (path == "*" && method == Method::OPTIONS) {
        return Ok(());
    }
    Err(HeadError::Target)
}

/// `Transfer-Encoding` of a request: only `chunked`, once, and only in HTTP/1.1 (RFC 9112 §6.1).
/// Another coding would be lost on the way (the upstream would get gzip bytes it was not told
/// about): 501, as nginx answers. `chunked, chunked` would be decoded once by one reader and
/// twice by another: 400. (A `Content-Length` beside `Transfer-Encoding` never gets here: hyper
/// drops it, as RFC 9112 §6.3 says, and the body is forwarded chunked.)
fn framing(version: Version, headers: &HeaderMap) -> Result<(), HeadError> {
    let codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if version != Version::HTTP_11 {
        return Err(HeadError::CodingVersion);
    }
    let mut chunked = 0;
    for value in codings {
        for coding in value.to_str().unwrap_or("\u{0}").split(',').map(str::trim) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(HeadError::Coding);
            }
            chunked += 1;
        }
    }
    if chunked != 1 {
        return Err(HeadError::ChunkedTwice);
    }
    Ok(())
}

/// The target host (RFC 9112 §3.2): the request-target's authority when it has one (absolute
/// form, where Host is to be ignored; HTTP/2's `:authority`, which wins over `host`), else the
/// Host header. HTTP/1.1 needs exactly one Host header, HTTP/1.0 at most one, and a Host or
/// authority must be a valid `host[:port]` without userinfo: otherwise 400.
fn host(req: &Parts, hosts: usize, first: Option<&HeaderValue>) -> Result<Option<HeaderValue>, HeadError> {
    if hosts > 1 {
        return Err(HeadError::TwoHosts);
    }
    if let Some(h) = first
        && !valid_host(h.as_bytes())
    {
        return Err(HeadError::BadHost);
    }
    if req.version == Version::HTTP_11 && first.is_none() {
        return Err(HeadError::NoHost);
    }
    if let Some(authority) = req.uri.authority() {
        if !valid_authority(authority) {
            return Err(HeadError::BadAuthority);
        }
        return Ok(HeaderValue::from_str(authority.as_str()).ok());
    }
    Ok(first.cloned())
}

fn valid_authority(a: &Authority) -> bool {
    !a.as_str().contains('@') && valid_host(a.as_str().as_bytes())
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): an IP literal in brackets, or a
/// reg-name of unreserved characters, sub-delims and escapes; a port of digits. Empty is valid
/// (a target without authority).
pub fn valid_host(h: &[u8]) -> bool {
    let (host, port) = if h.first() == Some(&b'[') {
        let Some(end) = h.iter().position(|&b| b == b']') else { return false };
        let literal = &h[1..end];
        if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        (&[][..], &h[end + 1..])
    } else {
        match h.iter().position(|&b| b == b':') {
            Some(i) => (&h[..i], &h[i..]),
            None => (h, &h[h.len()..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && host.iter().all(|&b| REG_NAME[b as usize])
}

/// The bytes of a reg-name (RFC 3986 §3.2.2): unreserved, sub-delims and `%` (of an escape), as
/// a table: the check runs on every request's Host.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        b += 1;
    }
    t
};

/// `uri` with its path replaced (query, scheme and authority kept).
fn with_path(uri: &Uri, path: &str) -> Uri {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    // The path came from a valid one with only escapes and separators changed.
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com.",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "a_b.example",
            "xn--bcher-kva.example",
            "",
            "a%2Db",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?} is valid");
        }
        for bad in [
            "a b",
            "x@evil.example",
            "evil/../admin",
            "a\\b",
            "example.com:80x",
            "example.com:123456",
            "[::1",
            "[]",
            "[::1]x",
            "host:1:2",
            "a?b",
            "a#b",
            "\"quoted\"",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} is invalid");
        }
    }
}
