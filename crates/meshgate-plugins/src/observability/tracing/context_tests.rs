//! Unit tests of the propagation parsers and writer (the specs' cases are in `spec_tests.rs`).

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
}

const T32: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const T16: &str = "a3ce929d0e0e4736";
const S: &str = "00f067aa0ba902b7";

#[test]
fn b3_multi_headers() {
    let got = b3_multi(&scan(&headers(&[("x-b3-traceid", T32), ("x-b3-spanid", S), ("x-b3-sampled", "1")]))).unwrap();
    let (t, s) = got.ids.unwrap();
    assert_eq!((t.hex().as_str(), s, got.decision), (T32, 0x00f067aa0ba902b7, Some(Decision::Sample)));
    let short = b3_multi(&scan(&headers(&[("x-b3-traceid", T16), ("x-b3-spanid", S)]))).unwrap();
    assert_eq!(short.ids.unwrap().0.hex(), T16, "64-bit trace ids stay 64-bit");
    assert_eq!(short.decision, None);
    let debug = b3_multi(&scan(&headers(&[("x-b3-traceid", T16), ("x-b3-spanid", S), ("x-b3-flags", "1")])));
    assert_eq!(debug.unwrap().decision, Some(Decision::Debug));
    let deny = b3_multi(&scan(&headers(&[("x-b3-sampled", "0")]))).unwrap();
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
        assert_eq!(b3_multi(&scan(&headers(&bad))), None, "{bad:?}");
    }
    assert_eq!(b3_multi(&scan(&HeaderMap::new())), None);
}

#[test]
fn b3_single_header() {
    let one = |v: &str| b3_single(scan(&headers(&[("b3", v)])).b3);
    let full = one(&format!("{T32}-{S}-1-{S}")).unwrap();
    assert_eq!(full.ids.unwrap().0.hex(), T32);
    assert_eq!(full.decision, Some(Decision::Sample));
    assert_eq!(one(&format!("{T16}-{S}")).unwrap().decision, None);
    assert_eq!(one(&format!("{T16}-{S}-d")).unwrap().decision, Some(Decision::Debug));
    assert_eq!(one("0").unwrap(), Incoming { decision: Some(Decision::Deny), ..Incoming::default() });
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
    assert!(extract(&scan(&h), &[Format::B3, Format::W3c]).ids.unwrap().0.short);
    assert!(!extract(&scan(&h), &[Format::W3c, Format::B3]).ids.unwrap().0.short);
    assert_eq!(extract(&scan(&h), &[Format::W3c]).decision, Some(Decision::Deny));
    // An invalid traceparent is skipped; a later format still counts.
    let h = headers(&[("traceparent", "00-nope"), ("b3", &format!("{T32}-{S}-1"))]);
    assert_eq!(extract(&scan(&h), &[Format::W3c, Format::B3]).decision, Some(Decision::Sample));
    assert_eq!(extract(&scan(&h), &[Format::W3c]), Incoming::default());
    // `b3: 0` beside X-B3 ids: the ids count, and the decision where X-B3 has none.
    let h = headers(&[("b3", "0"), ("x-b3-traceid", T16), ("x-b3-spanid", S)]);
    let got = extract(&scan(&h), &[Format::B3]);
    assert_eq!((got.ids.map(|(t, _)| t.short), got.decision), (Some(true), Some(Decision::Deny)));
    // A lone decision is kept while looking for ids elsewhere.
    let h = headers(&[("x-b3-sampled", "0"), ("traceparent", &format!("00-{T32}-{S}-01"))]);
    let got = extract(&scan(&h), &[Format::B3, Format::W3c]);
    assert_eq!((got.ids.is_some(), got.decision), (true, Some(Decision::Sample)));
}

#[test]
fn forms_seen() {
    let h = headers(&[("x-b3-sampled", "0"), ("b3", "1"), ("traceparent", "x"), ("x-b3-other", "y")]);
    assert_eq!(scan(&h).forms(), Forms::B3 | Forms::B3_SINGLE | Forms::W3C);
    assert_eq!(scan(&headers(&[("x-b3-parentspanid", S)])).forms(), Forms::B3);
    assert_eq!(scan(&headers(&[("x-b3-other", "y"), ("tracestate", "k=v")])).forms(), Forms::NONE);
    // Repeated headers: the first value counts.
    let mut h = headers(&[("b3", "0")]);
    h.append("b3", HeaderValue::from_static("1"));
    assert_eq!(b3_single(scan(&h).b3).unwrap().decision, Some(Decision::Deny));
    assert_eq!(Forms::read_by(&[Format::W3c]), Forms::W3C);
    assert_eq!(Forms::read_by(&[Format::B3]), Forms::B3 | Forms::B3_SINGLE);
    assert!(!Forms::NONE.has(Forms::NONE) && Forms::B3.without(Forms::B3).is_empty());
}

#[test]
fn inject_writes_each_form() {
    let trace = TraceId { value: 0xa3ce929d0e0e4736, short: true };
    let out = |decision| Outgoing { trace, span: 0x1234, parent: 0x5678, decision, random: false };
    let all = Forms::B3 | Forms::B3_SINGLE | Forms::W3C;
    let mut h = headers(&[("tracestate", "k=v")]);
    inject(&mut h, all, Forms::NONE, out(Decision::Deny));
    assert_eq!(h["x-b3-traceid"], T16);
    assert_eq!(h["x-b3-spanid"], "0000000000001234");
    assert_eq!(h["x-b3-parentspanid"], "0000000000005678");
    assert_eq!(h["x-b3-sampled"], "0");
    assert_eq!(h["b3"], format!("{T16}-0000000000001234-0-0000000000005678"));
    assert_eq!(h["traceparent"], format!("00-0000000000000000{T16}-0000000000001234-00"));
    assert_eq!(h["tracestate"], "k=v", "passed on as it came");
    assert!(h.get("x-b3-flags").is_none());
    inject(&mut h, all, Forms::NONE, out(Decision::Debug));
    assert_eq!((h.get("x-b3-sampled"), &h["x-b3-flags"]), (None, &HeaderValue::from_static("1")));
    assert!(h["b3"].to_str().unwrap().contains("-d-"));
    assert!(h["traceparent"].to_str().unwrap().ends_with("-01"));
    inject(&mut h, Forms::W3C, Forms::B3, out(Decision::Sample));
    assert!(h.get("x-b3-flags").is_none() && h.get("x-b3-traceid").is_none(), "stale B3 removed");
    assert!(h.get("b3").is_some(), "forms not named stale are left alone");
    inject(&mut h, Forms::W3C, Forms::B3_SINGLE, out(Decision::Sample));
    assert!(h.get("b3").is_none());
    inject(&mut h, Forms::W3C, Forms::NONE, Outgoing { random: true, ..out(Decision::Sample) });
    assert!(h["traceparent"].to_str().unwrap().ends_with("-03"), "sampled and random");
    inject(&mut h, Forms::B3, Forms::W3C, out(Decision::Sample));
    assert!(h.get("traceparent").is_none() && h.get("tracestate").is_none(), "tracestate goes with it");
    let long = TraceId { value: u128::from_str_radix(T32, 16).unwrap(), short: false };
    let mut h = HeaderMap::new();
    inject(&mut h, all, Forms::NONE, Outgoing { trace: long, ..out(Decision::Sample) });
    assert_eq!(
        (&h["x-b3-traceid"], &h["x-b3-sampled"]),
        (&HeaderValue::from_str(T32).unwrap(), &HeaderValue::from_static("1"))
    );
    assert_eq!(h["b3"], format!("{T32}-0000000000001234-1-0000000000005678"));
    // What is written reads back as the same context.
    let read = extract(&scan(&h), &[Format::B3]);
    assert_eq!((read.ids, read.decision), (Some((long, 0x1234)), Some(Decision::Sample)));
    assert_eq!(b3_single(scan(&h).b3).unwrap().ids, Some((long, 0x1234)));
    assert_eq!(extract(&scan(&h), &[Format::W3c]).ids, Some((long, 0x1234)));
}
