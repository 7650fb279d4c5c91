//! The few JSON writing steps access-log lines and Zipkin spans are made of, by hand: their
//! shapes are fixed and most values need no escaping, and through `serde`/`Display` the
//! formatting cost more than the gateway spends on the rest of a request (measured with
//! callgrind on the benchmark's traced route).

use std::net::IpAddr;

/// A JSON string; serde_json escapes it when it has anything to escape.
pub fn string(out: &mut Vec<u8>, s: &str) {
    utf8_string(out, s.as_bytes());
}

/// [`string`] for text kept as bytes that were a `str`: checked as UTF-8 only when it needs
/// escaping (checking every string cost more than copying it).
pub fn utf8_string(out: &mut Vec<u8>, s: &[u8]) {
    if needs_escape(s) {
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(s));
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    }
}

/// Whether `s` has a byte a JSON string must escape (a control character, `"` or `\`), checked
/// eight bytes at a time: a log line and a span have a dozen strings, and a byte-by-byte check
/// was the largest part of writing them.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Whether a byte of `w` is below `n` (exact for n <= 128, per "Bit Twiddling Hacks").
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH != 0;
    let word =
        |w: u64| below(w, 0x20) || below(w ^ (ONES * u64::from(b'"')), 1) || below(w ^ (ONES * u64::from(b'\\')), 1);
    let mut chunks = s.chunks_exact(8);
    if chunks.any(|c| word(u64::from_le_bytes(c.try_into().expect("eight bytes")))) {
        return true;
    }
    // The rest, padded with a byte that needs nothing.
    let rest = chunks.remainder();
    let mut last = [b'a'; 8];
    last[..rest.len()].copy_from_slice(rest);
    word(u64::from_le_bytes(last))
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

/// `v` in `digits` lower-hex digits (16 or 32).
pub fn hex(out: &mut Vec<u8>, v: u128, digits: usize) {
    if digits == 32 {
        out.extend_from_slice(&hex_digits(v));
    } else {
        out.extend_from_slice(&hex16(v as u64));
    }
}

/// Two lower-hex digits for every byte value: ids are written several times per traced
/// request (headers, log lines, spans), a byte at a time through this table.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    table
};

/// `v` as 32 lower-hex digits.
pub fn hex_digits(v: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    out
}

/// `v` as 16 lower-hex digits.
pub fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (pair, b) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    out
}

/// An IP address as a JSON string.
pub fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Written on the stack and copied once: a log line has one, every request.
            let mut text = [0u8; 17];
            text[0] = b'"';
            let mut len = 1;
            for octet in v4.octets() {
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                text[len + 1] = b'.';
                len += 2;
            }
            text[len - 1] = b'"';
            out.extend_from_slice(&text[..len]);
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
        // Each byte to escape, at each place of an eight-byte word and in the tail.
        for bad in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            for at in 0..19 {
                let mut s: String = "abcdefghijklmnopqrs".into();
                s.replace_range(at..at + 1, &bad.to_string());
                assert_eq!(text(|o| string(o, &s)), serde_json::to_string(&s).unwrap(), "{s:?}");
            }
        }
        for fine in ["", "a", " !#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~\u{7f}", "é ü 日本 ✓"] {
            assert_eq!(text(|o| string(o, fine)), format!("\"{fine}\""));
        }
        assert_eq!(text(|o| lower_string(o, "Orders")), "\"orders\"");
        assert_eq!(text(|o| number(o, 18_446_744_073_709_551_615)), "18446744073709551615");
        assert_eq!(text(|o| thousandths(o, 1_234)), "1.234");
        assert_eq!(text(|o| thousandths(o, 5)), "0.005");
        assert_eq!(text(|o| hex(o, 0xabc, 16)), "0000000000000abc");
        assert_eq!(text(|o| hex(o, u128::MAX, 32)), "f".repeat(32));
        for v in [0u128, 1, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, rand::random()] {
            assert_eq!(text(|o| hex(o, v, 32)), format!("{v:032x}"));
            assert_eq!(text(|o| hex(o, v & u64::MAX as u128, 16)), format!("{:016x}", v as u64));
        }
        assert_eq!(text(|o| ip(o, "10.0.255.1".parse().unwrap())), "\"10.0.255.1\"");
        assert_eq!(text(|o| ip(o, "0.9.99.100".parse().unwrap())), "\"0.9.99.100\"");
        assert_eq!(text(|o| ip(o, "255.255.255.255".parse().unwrap())), "\"255.255.255.255\"");
        assert_eq!(text(|o| ip(o, "::1".parse().unwrap())), "\"::1\"");
    }
}
