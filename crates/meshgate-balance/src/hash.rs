//! The consistent-hash key of a request: what `hash_on` names, hashed with xxh3 without
//! allocating (this runs on every request of a consistent-hash upstream).

use http::HeaderMap;
use http::header::COOKIE;
use meshgate_config::HashOn;
use std::net::IpAddr;
use xxhash_rust::xxh3::xxh3_64;

/// The key [`crate::Balancer::pick`] hashes onto its ring: xxh3 of the named header's first value,
/// of the named cookie's value (from any `Cookie` header), or of the client IP's octets (an
/// IPv4-mapped IPv6 address hashes like the IPv4 address). `None` when the header or cookie is
/// absent, so the pick falls back to round robin instead of piling keyless requests on one
/// target.
pub fn hash_key(hash_on: &HashOn, headers: &HeaderMap, client_ip: IpAddr) -> Option<u64> {
    match hash_on {
        HashOn::Header(name) => headers.get(name).map(|v| xxh3_64(v.as_bytes())),
        HashOn::Cookie(name) => find_cookie(headers, name.as_bytes()).map(xxh3_64),
        HashOn::Ip => Some(match client_ip.to_canonical() {
            IpAddr::V4(ip) => xxh3_64(&ip.octets()),
            IpAddr::V6(ip) => xxh3_64(&ip.octets()),
        }),
    }
}

/// The value of cookie `name` in the request's `Cookie` header(s), surrounding double quotes
/// removed. Pairs are split on `;` and trimmed of spaces, as RFC 6265 clients send them.
fn find_cookie<'a>(headers: &'a HeaderMap, name: &[u8]) -> Option<&'a [u8]> {
    headers.get_all(COOKIE).iter().find_map(|value| {
        value.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            if pair[..eq].trim_ascii() != name {
                return None;
            }
            let v = pair[eq + 1..].trim_ascii();
            Some(v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn header_key() {
        let on = HashOn::parse("header:X-User").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(hash_key(&on, &h, IP), None);
        h.insert("x-user", HeaderValue::from_static("alice"));
        assert_eq!(hash_key(&on, &h, IP), Some(xxh3_64(b"alice")));
        // The client IP plays no part.
        assert_eq!(hash_key(&on, &h, "10.9.9.9".parse().unwrap()), Some(xxh3_64(b"alice")));
    }

    #[test]
    fn cookie_key() {
        let on = HashOn::parse("cookie:sid").unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(hash_key(&on, &h, IP), None);
        h.append(COOKIE, HeaderValue::from_static("a=1; xsid=no"));
        assert_eq!(hash_key(&on, &h, IP), None, "a cookie whose name merely ends in the name");
        h.append(COOKIE, HeaderValue::from_static("b=2;sid=abc123 ; c=3"));
        assert_eq!(hash_key(&on, &h, IP), Some(xxh3_64(b"abc123")));

        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("sid=\"quoted\""));
        assert_eq!(hash_key(&on, &h, IP), Some(xxh3_64(b"quoted")));
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("sid="));
        assert_eq!(hash_key(&on, &h, IP), Some(xxh3_64(b"")), "present but empty is still a key");
    }

    #[test]
    fn ip_key() {
        let h = HeaderMap::new();
        let v4 = hash_key(&HashOn::Ip, &h, IP).unwrap();
        assert_eq!(v4, xxh3_64(&[10, 0, 0, 1]));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(hash_key(&HashOn::Ip, &h, mapped), Some(v4));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_ne!(hash_key(&HashOn::Ip, &h, v6), Some(v4));
    }
}
