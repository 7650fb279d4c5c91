//! Trace context propagation: reading B3 (multi-header and single `b3`) and W3C `traceparent`
//! from a request, and writing them to the upstream request (`tracestate` is checked in
//! [`super::tracestate`]).
//!
//! Parsing is strict because a malformed header is someone else's bug: an invalid context is
//! ignored (a new trace starts) rather than half-trusted, so one broken client cannot glue
//! unrelated requests into one trace. Reading is one pass over the request's headers (most
//! requests carry none of ours, and seven lookups by name cost more than the pass); only
//! writing the outgoing header values allocates, which propagation cannot avoid. The specs'
//! cases are tables in `spec_tests.rs`.

use crate::observability::json::{hex_digits, hex16};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

// Names as constants: inserting by `&str` parses the name first, on every request.
static B3: HeaderName = HeaderName::from_static("b3");
static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
static X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(super) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// A format read from requests, as named in `propagation:`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Zipkin's B3: `X-B3-*` headers, or the single `b3` header.
    B3,
    /// W3C Trace Context: `traceparent` (and `tracestate`, passed through).
    W3c,
}

/// A set of header forms written to upstream requests, as named in `inject:` lists: `b3` (the
/// `X-B3-*` headers), `b3-single` (the `b3` header), `w3c` (`traceparent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forms(u8);

impl Forms {
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled` / `X-B3-Flags`.
    pub const B3: Forms = Forms(1);
    /// The single `b3` header.
    pub const B3_SINGLE: Forms = Forms(2);
    /// `traceparent`.
    pub const W3C: Forms = Forms(4);
    /// No form.
    pub const NONE: Forms = Forms(0);

    /// The form named `name` in an `inject:` list.
    pub fn named(name: &str) -> Option<Forms> {
        match name {
            "b3" => Some(Forms::B3),
            "b3-single" => Some(Forms::B3_SINGLE),
            "w3c" => Some(Forms::W3C),
            _ => None,
        }
    }

    /// The forms a `propagation:` list reads.
    pub fn read_by(formats: &[Format]) -> Forms {
        formats.iter().fold(Forms::NONE, |acc, f| match f {
            Format::B3 => acc | Forms::B3 | Forms::B3_SINGLE,
            Format::W3c => acc | Forms::W3C,
        })
    }

    /// Whether every form of `other` is in `self`.
    pub fn has(self, other: Forms) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The forms of `self` that are not in `other`.
    pub fn without(self, other: Forms) -> Forms {
        Forms(self.0 & !other.0)
    }
}

/// What writing the context upstream needs of the request besides its ids, kept in
/// [`meshgate_core::TraceIds::forms`] (whose bits the plugin numbers) so that `before_upstream`
/// needs no second look at the request's headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// The forms the request came with.
    pub forms: Forms,
    /// The trace id is random (W3C's random-trace-id flag goes with it).
    pub random: bool,
}

impl Kept {
    /// The bit for `random`; the forms take the low bits.
    const RANDOM: u8 = 0x80;

    /// As bits.
    pub fn bits(self) -> u8 {
        self.forms.0 | if self.random { Kept::RANDOM } else { 0 }
    }

    /// Kept as [`Kept::bits`].
    pub fn from_bits(bits: u8) -> Kept {
        let forms = Forms(bits & (Forms::B3 | Forms::B3_SINGLE | Forms::W3C).0);
        Kept { forms, random: bits & Kept::RANDOM != 0 }
    }
}

impl std::ops::BitOr for Forms {
    type Output = Forms;
    fn bitor(self, other: Forms) -> Forms {
        Forms(self.0 | other.0)
    }
}

impl std::ops::BitAnd for Forms {
    type Output = Forms;
    fn bitand(self, other: Forms) -> Forms {
        Forms(self.0 & other.0)
    }
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
    /// The ids are those of a valid `traceparent` (read from it, or the same trace in B3): its
    /// `tracestate` and its random flag go on with them.
    pub w3c: Option<W3c>,
}

/// What a valid `traceparent` says besides its ids and sampled flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct W3c {
    /// Level 2's random-trace-id flag: at least the trace id's right-most 7 bytes are random.
    /// It goes on while the trace does, and only then.
    pub random: bool,
}

/// The trace headers of a request (the first value of each), found in one pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen<'a> {
    b3: Option<&'a [u8]>,
    trace_id: Option<&'a [u8]>,
    span_id: Option<&'a [u8]>,
    parent_id: Option<&'a [u8]>,
    sampled: Option<&'a [u8]>,
    flags: Option<&'a [u8]>,
    traceparent: Option<&'a [u8]>,
    /// More than one `traceparent` came: W3C makes that invalid (B3 takes the first value).
    traceparents: bool,
    /// A `tracestate` came.
    pub tracestate: bool,
}

/// Finds the trace headers among `headers`.
pub fn scan(headers: &HeaderMap) -> Seen<'_> {
    let mut seen = Seen::default();
    for (name, value) in headers {
        let slot = match name.as_str().as_bytes() {
            b"b3" => &mut seen.b3,
            b"traceparent" => {
                seen.traceparents = seen.traceparent.is_some();
                &mut seen.traceparent
            }
            b"tracestate" => {
                seen.tracestate = true;
                continue;
            }
            [b'x', b'-', b'b', b'3', b'-', rest @ ..] => match rest {
                b"traceid" => &mut seen.trace_id,
                b"spanid" => &mut seen.span_id,
                b"parentspanid" => &mut seen.parent_id,
                b"sampled" => &mut seen.sampled,
                b"flags" => &mut seen.flags,
                _ => continue,
            },
            _ => continue,
        };
        slot.get_or_insert(value.as_bytes());
    }
    seen
}

impl Seen<'_> {
    /// The forms present, valid or not.
    pub fn forms(&self) -> Forms {
        let multi = [self.trace_id, self.span_id, self.parent_id, self.sampled, self.flags];
        let mut forms = Forms::NONE;
        if multi.iter().any(Option::is_some) {
            forms = forms | Forms::B3;
        }
        if self.b3.is_some() {
            forms = forms | Forms::B3_SINGLE;
        }
        if self.traceparent.is_some() {
            forms = forms | Forms::W3C;
        }
        forms
    }
}

/// Reads the first valid context among `formats`, in their order. A format whose headers are
/// absent or invalid is skipped.
pub fn extract(seen: &Seen<'_>, formats: &[Format]) -> Incoming {
    let mut decision = None;
    for f in formats {
        let found = match f {
            // The single header's fields take precedence (B3): a lone decision in `b3`
            // (`b3: 0`) lets the X-B3 headers supply the ids, and is the decision.
            Format::B3 => match b3_single(seen.b3) {
                Some(single) if single.ids.is_some() => Some(single),
                single => match b3_multi(seen) {
                    Some(multi) => {
                        Some(Incoming { decision: single.and_then(|s| s.decision).or(multi.decision), ..multi })
                    }
                    None => single,
                },
            },
            Format::W3c => w3c(seen),
        };
        if let Some(found) = found {
            if let Some((trace, _)) = found.ids {
                // B3 read first may carry the traceparent's own trace: then its tracestate and
                // random flag still go with it.
                let w3c = found.w3c.or_else(|| {
                    let tp = w3c(seen).filter(|_| formats.contains(&Format::W3c))?;
                    tp.ids.filter(|(t, _)| t.value == trace.value).and(tp.w3c)
                });
                return Incoming { decision: found.decision.or(decision), w3c, ..found };
            }
            decision = decision.or(found.decision);
        }
    }
    Incoming { decision, ..Incoming::default() }
}

/// The request's `traceparent`, when there is exactly one.
fn w3c(seen: &Seen<'_>) -> Option<Incoming> {
    if seen.traceparents { None } else { traceparent(seen.traceparent) }
}

/// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`, `X-B3-Flags`. Ids must
/// both be present and valid, and the parent id and sampling state valid when present (B3 calls
/// anything else malformed); a lone sampling decision is still a decision. `X-B3-Flags` other
/// than `1` is ignored, as B3 allows.
pub fn b3_multi(seen: &Seen<'_>) -> Option<Incoming> {
    let sampled = match seen.sampled {
        None => None,
        // `true` and `false`: older tracers sent them, and B3 lets readers accept them.
        Some(b"1" | b"true") => Some(Decision::Sample),
        Some(b"0" | b"false") => Some(Decision::Deny),
        Some(_) => return None,
    };
    let decision = if seen.flags == Some(b"1") { Some(Decision::Debug) } else { sampled };
    let ids = match (seen.trace_id, seen.span_id) {
        (None, None) => None,
        (Some(t), Some(s)) => Some((trace_id(t)?, span_id(s)?)),
        _ => return None,
    };
    if let Some(parent) = seen.parent_id {
        span_id(parent)?;
    }
    (ids.is_some() || decision.is_some()).then_some(Incoming { ids, decision, w3c: None })
}

/// The single `b3` header: `{traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or only `0`, `1`
/// or `d`.
pub fn b3_single(v: Option<&[u8]>) -> Option<Incoming> {
    let v = v?;
    let flag = |s: &[u8]| match s {
        b"0" => Some(Decision::Deny),
        b"1" => Some(Decision::Sample),
        b"d" => Some(Decision::Debug),
        _ => None,
    };
    if v.len() == 1 {
        return Some(Incoming { decision: Some(flag(v)?), ..Incoming::default() });
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
    Some(Incoming { ids: Some((trace, span)), decision, w3c: None })
}

/// W3C `traceparent`: `{version}-{trace-id}-{parent-id}-{flags}`, with optional whitespace
/// around it. Version `00` must be exactly 55 characters; later versions may append `-…`
/// fields, which are ignored; `ff` is invalid. Lower-case hex only, and all-zero ids are
/// invalid. Of the flags, `sampled` is the decision and `random` goes on with the trace; others
/// are not defined, and not passed on.
pub fn traceparent(v: Option<&[u8]>) -> Option<Incoming> {
    let v = v?.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex(&v[..2])? as u8;
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace = hex(&v[3..35]).filter(|&t| t != 0)?;
    let span = hex(&v[36..52]).filter(|&s| s != 0)? as u64;
    let flags = hex(&v[53..55])? as u8;
    let decision = if flags & 1 == 1 { Decision::Sample } else { Decision::Deny };
    Some(Incoming {
        ids: Some((TraceId { value: trace, short: false }, span)),
        decision: Some(decision),
        w3c: Some(W3c { random: flags & 2 == 2 }),
    })
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

/// Lower-case hex digits, as both B3 and W3C write ids (Zipkin's and OpenTelemetry's own
/// readers refuse upper case too).
fn hex(s: &[u8]) -> Option<u128> {
    s.iter().try_fold(0u128, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | d as u128)
    })
}

/// What one upstream request carries on: ids and our decision.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing {
    /// The trace.
    pub trace: TraceId,
    /// The span the upstream's spans hang under (our CLIENT span).
    pub span: u64,
    /// Its parent (our SERVER span).
    pub parent: u64,
    /// Our sampling decision.
    pub decision: Decision,
    /// The trace id is random: `traceparent`'s random-trace-id flag.
    pub random: bool,
}

/// Writes the context for the next hop in the forms `write`, and removes the forms `stale` (read
/// from the request, not rewritten: they name the caller's span, not ours; `tracestate` goes
/// with a stale `traceparent`). Debug is B3's `X-B3-Flags: 1`, which implies sampled, so
/// `X-B3-Sampled` is left out then, as B3 asks. Every value written shares one allocation.
pub fn inject(headers: &mut HeaderMap, write: Forms, stale: Forms, out: Outgoing) {
    let sampled = out.decision != Decision::Deny;
    let trace_digits = if out.trace.short { 16 } else { 32 };
    // The trace id goes into every form: written as hex once. W3C ids are 128-bit: there a
    // 64-bit B3 trace id keeps the zeros on its left.
    let full = hex_digits(out.trace.value);
    let trace = &full[32 - trace_digits..];
    let (span, parent) = (hex16(out.span), hex16(out.parent));
    let mut text = Text::with_capacity(write, trace.len());
    if write.has(Forms::B3) {
        headers.reserve(4);
        headers.insert(X_B3_TRACEID.clone(), text.lit(trace).value());
        headers.insert(X_B3_SPANID.clone(), text.lit(&span).value());
        headers.insert(X_B3_PARENTSPANID.clone(), text.lit(&parent).value());
        let (set, other, value) = if out.decision == Decision::Debug {
            (&X_B3_FLAGS, &X_B3_SAMPLED, "1")
        } else {
            (&X_B3_SAMPLED, &X_B3_FLAGS, if sampled { "1" } else { "0" })
        };
        headers.insert(set.clone(), HeaderValue::from_static(value));
        // The caller's may have come with both (flags and a sampled state): ours has one.
        headers.remove(other);
    } else if stale.has(Forms::B3) {
        for name in [&X_B3_TRACEID, &X_B3_SPANID, &X_B3_PARENTSPANID, &X_B3_SAMPLED, &X_B3_FLAGS] {
            headers.remove(name);
        }
    }
    if write.has(Forms::B3_SINGLE) {
        let flag: &[u8] = match out.decision {
            Decision::Debug => b"-d-",
            Decision::Sample => b"-1-",
            Decision::Deny => b"-0-",
        };
        text.lit(trace).lit(b"-").lit(&span).lit(flag).lit(&parent);
        headers.insert(B3.clone(), text.value());
    } else if stale.has(Forms::B3_SINGLE) {
        headers.remove(&B3);
    }
    if write.has(Forms::W3C) {
        text.lit(b"00-").lit(&full).lit(b"-").lit(&span);
        let flags: &[u8] = match (out.random, sampled) {
            (false, false) => b"-00",
            (false, true) => b"-01",
            (true, false) => b"-02",
            (true, true) => b"-03",
        };
        headers.insert(TRACEPARENT.clone(), text.lit(flags).value());
    } else if stale.has(Forms::W3C) {
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
    }
}

/// Header values built from hex digits and separators, one after another in one buffer: each
/// value is a slice of it, so a request's values cost one allocation, and copies of them (the
/// upstream request kept for a retry) only a reference count.
struct Text {
    buf: BytesMut,
}

impl Text {
    /// Room for the values of `forms` with a trace id of `trace` digits.
    fn with_capacity(forms: Forms, trace: usize) -> Text {
        let mut n = 0;
        if forms.has(Forms::B3) {
            n += trace + 32;
        }
        if forms.has(Forms::B3_SINGLE) {
            n += trace + 36;
        }
        if forms.has(Forms::W3C) {
            n += 55;
        }
        Text { buf: BytesMut::with_capacity(n) }
    }
    /// Appends `s` (hex digits and separators only) to the value being written.
    fn lit(&mut self, s: &[u8]) -> &mut Text {
        self.buf.extend_from_slice(s);
        self
    }
    /// The value written since the last one.
    fn value(&mut self) -> HeaderValue {
        hex_value(self.buf.split().freeze())
    }
}

/// A header value of lower-hex digits and separators (`-`), taken as it is.
///
/// `HeaderValue`'s checked constructors test every byte, which cost more than the rest of
/// writing the context (it is about 120 bytes per request); these bytes are ASCII letters,
/// digits and dashes by construction, all of them valid in a header value. Debug builds (and so
/// the tests) still check them, in `from_maybe_shared_unchecked` and here.
#[allow(unsafe_code)]
fn hex_value(b: Bytes) -> HeaderValue {
    debug_assert!(b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-'), "{b:?}");
    // SAFETY: every byte is an ASCII letter, digit or dash (see above), valid in a header value
    // and valid UTF-8, which is what the unchecked constructor requires.
    unsafe { HeaderValue::from_maybe_shared_unchecked(b) }
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
