//! Trace context propagation: reading B3 (multi-header and single `b3`) and W3C `traceparent`
//! from a request, and writing them to the upstream request.
//!
//! Parsing is strict because a malformed header is someone else's bug: an invalid context is
//! ignored (a new trace starts) rather than half-trusted, so one broken client cannot glue
//! unrelated requests into one trace. Everything here works on bytes without allocating; only
//! writing the outgoing header values allocates, which propagation cannot avoid.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

// Names as constants: a lookup by `&str` parses the name first, on every request.
static B3: HeaderName = HeaderName::from_static("b3");
static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
static X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A propagation format, as named in `propagation:`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Zipkin's B3: `X-B3-*` headers, or the single `b3` header.
    B3,
    /// W3C Trace Context: `traceparent` (and `tracestate`, passed through).
    W3c,
}

pub use meshgate_core::TraceId;

/// The sampling decision that came with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Record (`1`).
    Sample,
    /// Do not record (`0`), but keep propagating.
    Deny,
    /// Record, and ask every hop to record (B3 `X-B3-Flags: 1`, `d`).
    Debug,
}

/// What a request brought in: ids (when a valid context came) and a sampling decision (when one
/// came, possibly alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    /// The caller's trace id and span id (the parent of our server span).
    pub ids: Option<(TraceId, u64)>,
    /// The caller's sampling decision, if it made one.
    pub decision: Option<Decision>,
}

/// Reads the first valid context among `formats`, in their order. A format whose headers are
/// absent or invalid is skipped.
pub fn extract(headers: &HeaderMap, formats: &[Format]) -> Incoming {
    let mut decision = None;
    for f in formats {
        let found = match f {
            Format::B3 => b3_single(headers).or_else(|| b3_multi(headers)),
            Format::W3c => traceparent(headers.get(&TRACEPARENT).map(HeaderValue::as_bytes)),
        };
        if let Some(found) = found {
            if found.ids.is_some() {
                return Incoming { decision: found.decision.or(decision), ..found };
            }
            decision = decision.or(found.decision);
        }
    }
    Incoming { ids: None, decision }
}

/// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, `X-B3-Flags`. Ids must both be present and
/// valid; a lone sampling decision is still a decision.
pub fn b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let get = |n: &HeaderName| headers.get(n).map(HeaderValue::as_bytes);
    let decision = if get(&X_B3_FLAGS) == Some(b"1") {
        Some(Decision::Debug)
    } else {
        match get(&X_B3_SAMPLED) {
            Some(b"1" | b"true") => Some(Decision::Sample),
            Some(b"0" | b"false") => Some(Decision::Deny),
            _ => None,
        }
    };
    let ids = match (get(&X_B3_TRACEID), get(&X_B3_SPANID)) {
        (None, None) => None,
        (Some(t), Some(s)) => Some((trace_id(t)?, span_id(s)?)),
        _ => return None,
    };
    (ids.is_some() || decision.is_some()).then_some(Incoming { ids, decision })
}

/// The single `b3` header: `{traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or only `0`, `1`
/// or `d`.
pub fn b3_single(headers: &HeaderMap) -> Option<Incoming> {
    let v = headers.get(&B3)?.as_bytes();
    let flag = |s: &[u8]| match s {
        b"0" => Some(Decision::Deny),
        b"1" => Some(Decision::Sample),
        b"d" => Some(Decision::Debug),
        _ => None,
    };
    if v.len() == 1 {
        return Some(Incoming { ids: None, decision: Some(flag(v)?) });
    }
    let mut parts = v.split(|&b| b == b'-');
    let trace = trace_id(parts.next()?)?;
    let span = span_id(parts.next()?)?;
    let decision = match parts.next() {
        None => None,
        Some(s) => Some(flag(s)?),
    };
    if let Some(parent) = parts.next() {
        span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Incoming { ids: Some((trace, span)), decision })
}

/// W3C `traceparent`: `{version}-{trace-id}-{parent-id}-{flags}`. Version `00` must be exactly
/// 55 characters; later versions may append `-…` fields, which are ignored; `ff` is invalid.
/// Lower-case hex only, and all-zero ids are invalid.
pub fn traceparent(v: Option<&[u8]>) -> Option<Incoming> {
    let v = v?;
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = lower_hex(&v[..2])? as u8;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace = lower_hex(&v[3..35]).filter(|&t| t != 0)?;
    let span = lower_hex(&v[36..52]).filter(|&s| s != 0)? as u64;
    let flags = lower_hex(&v[53..55])? as u8;
    let decision = if flags & 1 == 1 { Decision::Sample } else { Decision::Deny };
    Some(Incoming { ids: Some((TraceId { value: trace, short: false }, span)), decision: Some(decision) })
}

/// A B3 trace id: 16 or 32 hex digits, not all zero.
fn trace_id(s: &[u8]) -> Option<TraceId> {
    if s.len() != 16 && s.len() != 32 {
        return None;
    }
    let value = hex(s).filter(|&v| v != 0)?;
    Some(TraceId { value, short: s.len() == 16 })
}

/// A B3 span id: 16 hex digits, not all zero.
fn span_id(s: &[u8]) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    hex(s).filter(|&v| v != 0).map(|v| v as u64)
}

/// Hex digits of either case (B3 asks for lower case, but upper case is harmless to accept).
fn hex(s: &[u8]) -> Option<u128> {
    s.iter().try_fold(0u128, |acc, &b| Some(acc << 4 | (b as char).to_digit(16)? as u128))
}

/// Lower-case hex digits only, as W3C requires.
fn lower_hex(s: &[u8]) -> Option<u128> {
    if s.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    hex(s)
}

/// Writes the context for the next hop: `span` is the id of our span the upstream's spans hang
/// under, `decision` ours (debug is B3's `X-B3-Flags: 1`, which implies sampled, so
/// `X-B3-Sampled` is left out then, as B3 asks). B3 replaces any incoming `b3` single header
/// (which names the caller's span, not ours). One allocation per header value.
pub fn inject(headers: &mut HeaderMap, formats: &[Format], trace: TraceId, span: u64, parent: u64, decision: Decision) {
    let sampled = decision != Decision::Deny;
    for f in formats {
        match f {
            Format::B3 => {
                headers.remove(&B3);
                let digits = if trace.short { 16 } else { 32 };
                headers.insert(X_B3_TRACEID.clone(), hex_value(&[(trace.value, digits)]));
                headers.insert(X_B3_SPANID.clone(), hex_value(&[(span.into(), 16)]));
                headers.insert(X_B3_PARENTSPANID.clone(), hex_value(&[(parent.into(), 16)]));
                if decision == Decision::Debug {
                    headers.remove(&X_B3_SAMPLED);
                    headers.insert(X_B3_FLAGS.clone(), HeaderValue::from_static("1"));
                } else {
                    headers.insert(X_B3_SAMPLED.clone(), HeaderValue::from_static(if sampled { "1" } else { "0" }));
                    headers.remove(&X_B3_FLAGS);
                }
            }
            Format::W3c => {
                // 00-{trace:32}-{span:16}-{flags:2}, with the flags written as a third number.
                let flags = u128::from(sampled);
                headers.insert(
                    TRACEPARENT.clone(),
                    hex_value(&[(0, 2), (trace.value, 32), (span.into(), 16), (flags, 2)]),
                );
            }
        }
    }
}

/// Numbers in fixed-width lower hex, joined by `-`, as a header value: written with a table
/// rather than `format!`, which was a visible share of a traced request's cost.
fn hex_value(parts: &[(u128, usize)]) -> HeaderValue {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 72];
    let mut len = 0;
    for (i, &(v, digits)) in parts.iter().enumerate() {
        if i > 0 {
            buf[len] = b'-';
            len += 1;
        }
        for b in &v.to_be_bytes()[16 - digits / 2..] {
            buf[len] = DIGITS[usize::from(b >> 4)];
            buf[len + 1] = DIGITS[usize::from(b & 0xf)];
            len += 2;
        }
    }
    HeaderValue::from_bytes(&buf[..len]).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    const T32: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const T16: &str = "a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";

    #[test]
    fn b3_multi_headers() {
        let got = b3_multi(&headers(&[("x-b3-traceid", T32), ("x-b3-spanid", S), ("x-b3-sampled", "1")])).unwrap();
        let (t, s) = got.ids.unwrap();
        assert_eq!((t.hex().as_str(), s, got.decision), (T32, 0x00f067aa0ba902b7, Some(Decision::Sample)));
        let short = b3_multi(&headers(&[("x-b3-traceid", T16), ("x-b3-spanid", S)])).unwrap();
        assert_eq!(short.ids.unwrap().0.hex(), T16, "64-bit trace ids stay 64-bit");
        assert_eq!(short.decision, None);
        let debug = b3_multi(&headers(&[("x-b3-traceid", T16), ("x-b3-spanid", S), ("x-b3-flags", "1")]));
        assert_eq!(debug.unwrap().decision, Some(Decision::Debug));
        let deny = b3_multi(&headers(&[("x-b3-sampled", "0")])).unwrap();
        assert_eq!((deny.ids, deny.decision), (None, Some(Decision::Deny)), "a decision alone counts");
        for bad in [
            vec![("x-b3-traceid", T32)],                                    // no span id
            vec![("x-b3-traceid", "abc"), ("x-b3-spanid", S)],              // short
            vec![("x-b3-traceid", &T32[1..]), ("x-b3-spanid", S)],          // 31 digits
            vec![("x-b3-traceid", T32), ("x-b3-spanid", "00f067aa0ba902")], // 14 digits
            vec![("x-b3-traceid", "0000000000000000"), ("x-b3-spanid", S)], // zero
            vec![("x-b3-traceid", T16), ("x-b3-spanid", "0000000000000000")],
            vec![("x-b3-traceid", "g3ce929d0e0e4736"), ("x-b3-spanid", S)],
        ] {
            assert_eq!(b3_multi(&headers(&bad)), None, "{bad:?}");
        }
        assert_eq!(b3_multi(&HeaderMap::new()), None);
    }

    #[test]
    fn b3_single_header() {
        let one = |v: &str| b3_single(&headers(&[("b3", v)]));
        let full = one(&format!("{T32}-{S}-1-{S}")).unwrap();
        assert_eq!(full.ids.unwrap().0.hex(), T32);
        assert_eq!(full.decision, Some(Decision::Sample));
        assert_eq!(one(&format!("{T16}-{S}")).unwrap().decision, None);
        assert_eq!(one(&format!("{T16}-{S}-d")).unwrap().decision, Some(Decision::Debug));
        assert_eq!(one("0").unwrap(), Incoming { ids: None, decision: Some(Decision::Deny) });
        assert_eq!(one("d").unwrap().decision, Some(Decision::Debug));
        for bad in [
            "x".to_owned(),
            T16.to_owned(),
            format!("{T16}-{S}-2"),
            format!("{T16}-{S}-1-zz"),
            format!("{T16}-{S}-1-{S}-extra"),
            format!("{T16}-0000000000000000"),
        ] {
            assert_eq!(one(&bad), None, "{bad}");
        }
    }

    #[test]
    fn traceparent_strictly() {
        let tp = |v: &str| traceparent(Some(v.as_bytes()));
        let got = tp(&format!("00-{T32}-{S}-01")).unwrap();
        assert_eq!(got.ids.unwrap().0, TraceId { value: u128::from_str_radix(T32, 16).unwrap(), short: false });
        assert_eq!(got.ids.unwrap().1, 0x00f067aa0ba902b7);
        assert_eq!(got.decision, Some(Decision::Sample));
        assert_eq!(tp(&format!("00-{T32}-{S}-00")).unwrap().decision, Some(Decision::Deny));
        assert_eq!(tp(&format!("00-{T32}-{S}-03")).unwrap().decision, Some(Decision::Sample), "other flag bits");
        // A later version may append fields; version 00 may not.
        assert!(tp(&format!("01-{T32}-{S}-01-what-comes-next")).is_some());
        assert!(tp(&format!("01-{T32}-{S}-01")).is_some());
        for bad in [
            format!("00-{T32}-{S}-01-extra"),
            format!("01-{T32}-{S}-01x"),
            format!("ff-{T32}-{S}-01"),
            format!("00-{}-{S}-01", "0".repeat(32)),
            format!("00-{T32}-{}-01", "0".repeat(16)),
            format!("00-{}-{S}-01", T32.to_uppercase()),
            format!("0-{T32}-{S}-01"),
            format!("00-{T16}-{S}-01"),
            format!("00-{T32}-{S}-1"),
            format!("00_{T32}-{S}-01"),
            format!("00-{T32}-{S}-0g"),
            String::new(),
        ] {
            assert_eq!(tp(&bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_in_their_order() {
        let h = headers(&[("x-b3-traceid", T16), ("x-b3-spanid", S), ("traceparent", &format!("00-{T32}-{S}-00"))]);
        assert!(extract(&h, &[Format::B3, Format::W3c]).ids.unwrap().0.short);
        assert!(!extract(&h, &[Format::W3c, Format::B3]).ids.unwrap().0.short);
        assert_eq!(extract(&h, &[Format::W3c]).decision, Some(Decision::Deny));
        // An invalid traceparent is skipped; a later format still counts.
        let h = headers(&[("traceparent", "00-nope"), ("b3", &format!("{T32}-{S}-1"))]);
        assert_eq!(extract(&h, &[Format::W3c, Format::B3]).decision, Some(Decision::Sample));
        assert_eq!(extract(&h, &[Format::W3c]), Incoming::default());
        // A lone decision is kept while looking for ids elsewhere.
        let h = headers(&[("x-b3-sampled", "0"), ("traceparent", &format!("00-{T32}-{S}-01"))]);
        let got = extract(&h, &[Format::B3, Format::W3c]);
        assert_eq!((got.ids.is_some(), got.decision), (true, Some(Decision::Sample)));
    }

    #[test]
    fn inject_writes_both_formats() {
        let mut h = headers(&[("b3", "1"), ("x-b3-flags", "1"), ("tracestate", "k=v")]);
        let trace = TraceId { value: 0xa3ce929d0e0e4736, short: true };
        inject(&mut h, &[Format::B3, Format::W3c], trace, 0x1234, 0x5678, Decision::Deny);
        assert_eq!(h["x-b3-traceid"], T16);
        assert_eq!(h["x-b3-spanid"], "0000000000001234");
        assert_eq!(h["x-b3-parentspanid"], "0000000000005678");
        assert_eq!(h["x-b3-sampled"], "0");
        assert_eq!(h["traceparent"], format!("00-0000000000000000{T16}-0000000000001234-00"));
        assert_eq!(h["tracestate"], "k=v");
        assert!(h.get("b3").is_none() && h.get("x-b3-flags").is_none());
        inject(&mut h, &[Format::B3, Format::W3c], trace, 0x1234, 0x5678, Decision::Debug);
        assert_eq!((h.get("x-b3-sampled"), &h["x-b3-flags"]), (None, &HeaderValue::from_static("1")));
        assert!(h["traceparent"].to_str().unwrap().ends_with("-01"));
        inject(&mut h, &[Format::W3c], trace, 0x1234, 0x5678, Decision::Sample);
        assert_eq!(h["x-b3-flags"], "1", "B3 headers are left alone when B3 is not configured");
    }
}
