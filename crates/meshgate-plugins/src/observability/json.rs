//! The few JSON writing steps access-log lines and Zipkin spans are made of, by hand: their
//! shapes are fixed and most values need no escaping, and through `serde`/`Display` the
//! formatting cost more than the gateway spends on the rest of a request (measured with
//! callgrind on the benchmark's traced route).

use std::net::IpAddr;

/// A JSON string; serde_json escapes it when it has anything to escape.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// A JSON string, lower-cased on the way (Zipkin's service names).
pub fn lower_string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        string(out, &s.to_lowercase());
    } else {
        string(out, s);
    }
}

/// An unsigned integer.
pub fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `n` thousandths as a decimal with three places (`1.234`).
pub fn thousandths(out: &mut Vec<u8>, n: u64) {
    number(out, n / 1000);
    let frac = n % 1000;
    out.extend_from_slice(&[b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8]);
}

/// `v` in `digits` lower-hex digits (even, at most 32).
pub fn hex(out: &mut Vec<u8>, v: u128, digits: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in &v.to_be_bytes()[16 - digits / 2..] {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
}

/// An IP address as a JSON string.
pub fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(b'"');
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                number(out, octet.into());
            }
            out.push(b'"');
        }
        IpAddr::V6(v6) => string(out, &v6.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values() {
        assert_eq!(text(|o| string(o, "plain")), "\"plain\"");
        assert_eq!(text(|o| string(o, "a\"b\\c\n")), r#""a\"b\\c\n""#);
        assert_eq!(text(|o| lower_string(o, "Orders")), "\"orders\"");
        assert_eq!(text(|o| number(o, 18_446_744_073_709_551_615)), "18446744073709551615");
        assert_eq!(text(|o| thousandths(o, 1_234)), "1.234");
        assert_eq!(text(|o| thousandths(o, 5)), "0.005");
        assert_eq!(text(|o| hex(o, 0xabc, 16)), "0000000000000abc");
        assert_eq!(text(|o| hex(o, u128::MAX, 32)), "f".repeat(32));
        assert_eq!(text(|o| ip(o, "10.0.255.1".parse().unwrap())), "\"10.0.255.1\"");
        assert_eq!(text(|o| ip(o, "::1".parse().unwrap())), "\"::1\"");
    }
}
