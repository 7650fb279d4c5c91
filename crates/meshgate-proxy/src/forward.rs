//! Turning the client's request into the upstream's: path rewriting (`strip_path`, base path),
//! hop-by-hop headers removed, `X-Forwarded-*` set, Host chosen.

use crate::snapshot::{RouteRt, TargetRt};
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};

/// Per-connection values that every request on the connection forwards, computed once.
pub struct ConnInfo {
    /// The client's IP, as an `X-Forwarded-For` value.
    pub client_ip: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
    /// The listener's port.
    pub port: HeaderValue,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Whether the request asks to switch protocols (WebSocket); only HTTP/1.1 can.
pub fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"))))
}

/// The hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard `keep-alive` and
/// `proxy-connection`, and `http2-settings`, which belongs to an `h2c` upgrade and so never
/// goes on), each with a bit for [`hop_by_hop_present`].
static HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
    &header::PROXY_AUTHORIZATION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &HTTP2_SETTINGS,
];
const CONNECTION_BIT: u16 = 1;
const TE_BIT: u16 = 1 << 1;
const TRANSFER_ENCODING_BIT: u16 = 1 << 3;
const UPGRADE_BIT: u16 = 1 << 4;
const KEEP_ALIVE_BIT: u16 = 1 << 6;

/// Set in [`Found`] when a header a client may not send is there ([`spoofs`]).
const SPOOFED_BIT: u16 = 1 << 15;

/// What one scan of a message's header names found: which hop-by-hop headers (bits in
/// [`HOP_BY_HOP`] order), and whether a client spoofs one of the gateway's own. One scan of the
/// few names a message has is far cheaper than a hashed lookup per name (this runs twice per
/// proxied request).
#[derive(Clone, Copy)]
pub struct Found(u16);

impl Found {
    /// Scans `headers`. Names are told apart by their first byte first: most of a request's
    /// (`accept`, `user-agent`, `host`) are then settled by one comparison or none.
    pub fn scan(headers: &HeaderMap) -> Found {
        let mut found = 0;
        for name in headers.keys() {
            let n = name.as_str();
            let candidates: &[usize] = match n.as_bytes()[0] {
                b'c' => &[0],
                b't' => &[1, 2, 3],
                b'u' => &[4],
                b'p' => &[5, 7],
                b'k' => &[6],
                b'h' => &[8],
                b'f' | b'x' => {
                    if spoofs(n) {
                        found |= SPOOFED_BIT;
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(&i) = candidates.iter().find(|&&i| HOP_BY_HOP[i].as_str() == n) {
                found |= 1 << i;
            }
        }
        Found(found)
    }

    /// A client header claims what only the gateway may say ([`spoofs`]).
    pub fn spoofed(self) -> bool {
        self.0 & SPOOFED_BIT != 0
    }

    /// `Transfer-Encoding` is there.
    pub fn transfer_encoding(self) -> bool {
        self.0 & TRANSFER_ENCODING_BIT != 0
    }
}

/// Removes the headers that describe the client connection rather than the request (RFC 9110
/// §7.6.1), including any the client listed in `Connection`; `found` is what [`Found::scan`]
/// saw. `te: trailers` stays: gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool, found: Found) {
    let found = found.0;
    if found & CONNECTION_BIT != 0
        && let Some(conn) = headers.remove(header::CONNECTION)
    {
        for token in conn.to_str().unwrap_or("").split(',').map(str::trim) {
            // `close` and `keep-alive` are connection options, not header names (a `Keep-Alive`
            // header, if any, is removed below); skipping them spares a hashed lookup.
            let option = token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || (token.eq_ignore_ascii_case("keep-alive") && found & KEEP_ALIVE_BIT == 0);
            let kept = upgrade && token.eq_ignore_ascii_case("upgrade");
            if !(option || kept) {
                headers.remove(token);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        let bit = 1 << i;
        if found & bit == 0 || (upgrade && bit == UPGRADE_BIT) {
            continue;
        }
        if bit == TE_BIT && headers.get(header::TE).is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers")) {
            continue;
        }
        headers.remove(*name);
    }
    if found & TRANSFER_ENCODING_BIT != 0 {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3), and the body goes on
        // decoded and framed anew: a Content-Length beside it would cut it short.
        headers.remove(header::CONTENT_LENGTH);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Why an upstream's answer cannot be passed on as it is, if it cannot: a status outside
/// 100-599 has no class a client could understand (RFC 9110 §15); a transfer coding other than
/// chunked (`gzip, chunked`) would be lost, since the body goes on without it.
pub fn unforwardable(head: &http::response::Parts, found: Found) -> Option<&'static str> {
    if !(100..600).contains(&head.status.as_u16()) {
        return Some("status code outside 100-599");
    }
    if !found.transfer_encoding() {
        return None;
    }
    let only_chunked = head.headers.get_all(header::TRANSFER_ENCODING).iter().all(|v| {
        v.to_str().is_ok_and(|v| v.split(',').map(str::trim).all(|c| c.eq_ignore_ascii_case("chunked") || c.is_empty()))
    });
    (!only_chunked).then_some("a transfer coding other than chunked")
}

/// Whether a client's header claims what only the gateway may say about a request: `Forwarded`
/// and `X-Real-IP` (the client's address, which the gateway sets in `X-Forwarded-For`), and the
/// spellings of the gateway's own headers with `_` for `-` (`X_Consumer_Username`), which CGI,
/// WSGI and Rack upstreams read as the same variable (`HTTP_X_CONSUMER_USERNAME`).
fn spoofs(name: &str) -> bool {
    let b = name.as_bytes();
    let candidate = match b.first() {
        Some(b'f') => name == "forwarded",
        Some(b'x') => b.contains(&b'_') || name == "x-real-ip",
        _ => false,
    };
    candidate && {
        let dashed = name.replace('_', "-");
        ["x-forwarded-", "x-consumer-", "x-credential-", "x-anonymous-"].iter().any(|p| dashed.starts_with(p))
            || dashed == "x-real-ip"
            || dashed == "forwarded"
    }
}

/// Adds `X-Forwarded-For` (appended to what the client sent), `-Proto`, `-Host` and `-Port`,
/// after removing what a client could spoof beside them ([`spoofs`]; `found` says whether any is
/// there).
pub fn set_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, host: Option<&HeaderValue>, found: Found) {
    if found.spoofed() {
        let spoofed: Vec<HeaderName> = headers.keys().filter(|n| spoofs(n.as_str())).cloned().collect();
        for name in spoofed {
            headers.remove(name);
        }
    }
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + conn.client_ip.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(conn.client_ip.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| conn.client_ip.clone())
        }
        None => conn.client_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_FORWARDED_PROTO.clone(), conn.proto.clone());
    headers.insert(X_FORWARDED_PORT.clone(), conn.port.clone());
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
    }
}

/// The path (and query) sent upstream. Unchanged paths reuse the client's bytes.
pub fn upstream_path(uri: &Uri, route: &RouteRt, matched_len: usize) -> PathAndQuery {
    let base = route.service.base_path.as_str();
    let original = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    if base.is_empty() && !route.strip_path {
        return original;
    }
    let path = uri.path();
    let rest = if route.strip_path { path.get(matched_len..).unwrap_or("") } else { path };
    let mut out = String::with_capacity(base.len() + rest.len() + 1 + uri.query().map_or(0, |q| q.len() + 1));
    out.push_str(base);
    if rest.is_empty() && !base.is_empty() {
        // `/api` stripped from `/api` is the service's base path itself, not `base/`.
    } else if !rest.starts_with('/') {
        out.push('/');
    }
    out.push_str(rest);
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    PathAndQuery::try_from(out).unwrap_or(original)
}

/// Points a prepared request at `target`: Host is the client's (with `preserve_host`) or the
/// target's. Called again when a retry goes to another target.
pub fn aim(headers: &mut HeaderMap, target: &TargetRt, preserve: Option<&HeaderValue>) {
    let host = preserve.cloned().unwrap_or_else(|| target.host_header.clone());
    headers.insert(header::HOST, host);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_name_is_found() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            h.insert((*name).clone(), HeaderValue::from_static("x"));
            assert_eq!(Found::scan(&h).0, 1 << i, "{name}");
        }
        let mut h = HeaderMap::new();
        h.insert("x_consumer_username", HeaderValue::from_static("admin"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        assert!(Found::scan(&h).spoofed());
        assert_eq!(Found::scan(&h).0, SPOOFED_BIT);
    }

    #[test]
    fn spoofable_headers() {
        for name in [
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x_consumer_username",
            "x-consumer_groups",
            "x_forwarded_for",
            "x_anonymous_consumer",
            "x_credential_identifier",
        ] {
            assert!(spoofs(name), "{name}");
        }
        for name in [
            "x-forwarded-for",
            "x-consumer-username",
            "x-request-id",
            "x_request_id",
            "accept",
            "forwarded-x",
            "x-real-ipx",
        ] {
            assert!(!spoofs(name), "{name}");
        }
    }
}
