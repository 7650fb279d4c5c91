//! The one spelling of a path that routing, access control and the upstream all see.
//!
//! A route protected by authentication must not be reachable through another spelling of its
//! path that the upstream reads as the same resource (`/public/../admin`, `/%61dmin`,
//! `/./admin`). So the gateway rewrites every request path into a normal form *before* routing,
//! and that normal form is also what the upstream receives (the crate docs state the rules).
//! Spellings that cannot be normalised without guessing how the upstream reads them are
//! refused, or kept as they are when the config says the upstream reads them literally.

use meshgate_config::model::EscapedSlashes;

/// How paths are normalised: `http:` in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRules {
    /// `//` counts as `/`.
    pub merge_slashes: bool,
    /// What `%2F` and `%5C` (and a raw `\`) become.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathRules {
    fn default() -> Self {
        PathRules { merge_slashes: true, escaped_slashes: EscapedSlashes::Reject }
    }
}

/// Why a path cannot be normalised safely; the request gets 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// `%00`: truncates paths in some servers.
    #[error("the path has an encoded NUL byte (%00)")]
    EncodedNul,
    /// `%2F`, `%5C` or `\` under `escaped_slashes: reject`.
    #[error("the path has an encoded slash or a backslash (%2F, %5C, \\)")]
    EscapedSlash,
    /// `..;x` or `.;x`: servers that strip path parameters (`;…`) read it as a dot-segment.
    #[error("the path has a dot-segment with parameters (..;)")]
    DotSegmentParameter,
}

/// The normal form of `path` (the path only, no query), or `None` when it is already normal;
/// most paths are, and cost one scan of their bytes.
pub fn normalize(path: &str, rules: PathRules) -> Result<Option<String>, PathError> {
    if !path.starts_with('/') || !needs_work(path.as_bytes(), rules.merge_slashes) {
        // `*` (OPTIONS) and authority-form targets have no path segments to normalise.
        return Ok(None);
    }
    let decoded = decode(path.as_bytes(), rules.escaped_slashes)?;
    let out = remove_dot_segments(&decoded, rules.merge_slashes)?;
    Ok((out != path).then_some(out))
}

/// Whether anything in `path` may change: an escape, a byte that must be escaped (a backslash,
/// a byte outside ASCII), a segment starting with `.`, or an empty segment (when slashes merge).
fn needs_work(path: &[u8], merge_slashes: bool) -> bool {
    let mut prev = 0u8;
    for &b in path {
        match b {
            b'%' => return true,
            b'.' if prev == b'/' => return true,
            b'/' if prev == b'/' && merge_slashes => return true,
            _ if !PATH_BYTE[b as usize] => return true,
            _ => {}
        }
        prev = b;
    }
    false
}

/// The bytes a path may hold as they are (RFC 3986 §3.3: `pchar` and `/`); any other is
/// written as an escape in the normal form. A table: the fast check runs on every path.
static PATH_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',')
            || matches!(c, b';' | b'=' | b':' | b'@' | b'/');
        b += 1;
    }
    t
};

/// Unreserved characters (RFC 3986 §2.3): their escapes mean the character itself (§6.2.2.2).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes the escapes of unreserved characters, writes every other escape in upper case
/// (§6.2.2.1) and escapes the bytes a path may not hold as they are (outside ASCII, `"`, `{`, …),
/// and applies `escaped` to encoded slashes and backslashes. The result is still an escaped
/// path: `%2F` kept is not a separator.
fn decode(path: &[u8], escaped: EscapedSlashes) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        let (byte, was_escaped) = if b == b'%' {
            let hi = path.get(i + 1).copied().and_then(hex).ok_or(PathError::BadEscape)?;
            let lo = path.get(i + 2).copied().and_then(hex).ok_or(PathError::BadEscape)?;
            i += 3;
            ((hi << 4) | lo, true)
        } else {
            i += 1;
            (b, false)
        };
        match byte {
            0 if was_escaped => return Err(PathError::EncodedNul),
            b'/' | b'\\' if was_escaped || byte == b'\\' => match escaped {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push(b'/'),
                EscapedSlashes::Keep => out.extend_from_slice(if byte == b'/' { b"%2F" } else { b"%5C" }),
            },
            _ if (!was_escaped && PATH_BYTE[byte as usize]) || (was_escaped && unreserved(byte)) => out.push(byte),
            _ => out.extend_from_slice(&[b'%', HEX[(byte >> 4) as usize], HEX[(byte & 0xf) as usize]]),
        }
    }
    // Only ASCII was written besides the input's own bytes, which were escaped whole.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// RFC 3986 §5.2.4 on a path whose unreserved escapes are decoded: `.` and `..` segments go
/// (`..` above the root stays at the root), a path ending in one ends with `/`; empty segments
/// go too when slashes merge. A segment that is `.` or `..` before a `;` is refused.
fn remove_dot_segments(path: &str, merge_slashes: bool) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    // The first piece is the empty string before the leading `/`.
    let mut pieces = path.split('/').skip(1).peekable();
    while let Some(seg) = pieces.next() {
        let last = pieces.peek().is_none();
        let name = seg.split(';').next().unwrap_or(seg);
        if seg.contains(';') && matches!(name, "." | "..") {
            return Err(PathError::DotSegmentParameter);
        }
        match seg {
            "." | ".." => {
                if seg == ".." {
                    segments.pop();
                }
                if last {
                    segments.push("");
                }
            }
            "" if merge_slashes && !last => {}
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(merge_slashes: bool, escaped_slashes: EscapedSlashes) -> PathRules {
        PathRules { merge_slashes, escaped_slashes }
    }

    /// `(input, expected)` under the default rules; `Err` for refusals.
    const DEFAULT_CASES: &[(&str, Result<&str, PathError>)] = &[
        // already normal: unchanged
        ("/", Ok("/")),
        ("/users/42", Ok("/users/42")),
        ("/a/b/", Ok("/a/b/")),
        ("/.well-known/x", Ok("/.well-known/x")),
        ("/a/..b/c.", Ok("/a/..b/c.")),
        ("/a;v=1/b", Ok("/a;v=1/b")),
        ("*", Ok("*")),
        // dot-segments (RFC 3986 §5.2.4)
        ("/public/../admin/secret", Ok("/admin/secret")),
        ("/./admin", Ok("/admin")),
        ("/a/./b/../c", Ok("/a/c")),
        ("/a/b/..", Ok("/a/")),
        ("/a/b/.", Ok("/a/b/")),
        ("/..", Ok("/")),
        ("/../../admin", Ok("/admin")),
        ("/a/../../b", Ok("/b")),
        // unreserved escapes decoded (§6.2.2.2), others upper-cased (§6.2.2.1)
        ("/%61dmin", Ok("/admin")),
        ("/public/%2e%2e/admin", Ok("/admin")),
        ("/public/%2E./admin", Ok("/admin")),
        ("/%7Euser", Ok("/~user")),
        ("/a%20b", Ok("/a%20b")),
        ("/a%3fb", Ok("/a%3Fb")),
        ("/caf%c3%a9", Ok("/caf%C3%A9")),
        // bytes a path may not hold as they are: escaped
        ("/café", Ok("/caf%C3%A9")),
        ("/a\"b{c}|d", Ok("/a%22b%7Bc%7D%7Cd")),
        ("/Ϟa'/.'/./", Ok("/%CF%9Ea'/.'/")),
        // merged slashes
        ("//admin", Ok("/admin")),
        ("/a//b///c/", Ok("/a/b/c/")),
        ("/a/.//b", Ok("/a/b")),
        // refused
        ("/a%2Fb", Err(PathError::EscapedSlash)),
        ("/public/..%2fadmin", Err(PathError::EscapedSlash)),
        ("/a%5Cb", Err(PathError::EscapedSlash)),
        ("/a\\b", Err(PathError::EscapedSlash)),
        ("/a%00", Err(PathError::EncodedNul)),
        ("/a%", Err(PathError::BadEscape)),
        ("/a%4", Err(PathError::BadEscape)),
        ("/a%zz", Err(PathError::BadEscape)),
        ("/public/..;/admin", Err(PathError::DotSegmentParameter)),
        ("/public/.;x=1/admin", Err(PathError::DotSegmentParameter)),
        ("/public/%2e%2e;/admin", Err(PathError::DotSegmentParameter)),
    ];

    #[test]
    fn default_rules() {
        for (input, want) in DEFAULT_CASES {
            let got = normalize(input, PathRules::default());
            let got = got.map(|changed| changed.unwrap_or_else(|| (*input).to_owned()));
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{input}");
        }
    }

    #[test]
    fn normal_paths_are_reported_unchanged() {
        for input in ["/", "/users/42", "/.well-known/x", "/a%20b"] {
            assert_eq!(normalize(input, PathRules::default()), Ok(None), "{input}");
        }
    }

    #[test]
    fn escaped_slashes_kept_are_opaque() {
        let keep = rules(true, EscapedSlashes::Keep);
        assert_eq!(normalize("/a%2fb", keep), Ok(Some("/a%2Fb".into())));
        assert_eq!(normalize("/a%2Fb", keep), Ok(None));
        // Not a separator, so not a dot-segment either: the upstream gets it as written.
        assert_eq!(normalize("/public/..%2Fadmin", keep), Ok(None));
        assert_eq!(normalize("/a\\b", keep), Ok(Some("/a%5Cb".into())));
    }

    #[test]
    fn escaped_slashes_decoded_are_separators() {
        let decode = rules(true, EscapedSlashes::Decode);
        assert_eq!(normalize("/public/..%2Fadmin", decode), Ok(Some("/admin".into())));
        assert_eq!(normalize("/a%5C..%5Cb", decode), Ok(Some("/b".into())));
        assert_eq!(normalize("/a\\b", decode), Ok(Some("/a/b".into())));
    }

    #[test]
    fn slashes_kept_when_not_merging() {
        let keep = rules(false, EscapedSlashes::Reject);
        assert_eq!(normalize("//a//b", keep), Ok(None));
        assert_eq!(normalize("/a//../b", keep), Ok(Some("/a/b".into())));
    }

    #[test]
    fn normal_form_is_stable() {
        for (input, want) in DEFAULT_CASES {
            if let Ok(normal) = want {
                assert_eq!(normalize(normal, PathRules::default()), Ok(None), "{input} -> {normal}");
            }
        }
    }
}
