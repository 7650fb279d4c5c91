//! B3 (multi-header and single `b3`) and W3C `traceparent` parsing, through the tracing plugin's
//! public propagation functions (`scan`, `extract`, `inject`). The input is a request head
//! (`METHOD URI`, then `name: value` lines). Invariants: a context read from a request is written
//! to the next hop in every form, and reading that back gives the same trace and span ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate_plugins::observability::tracing::context::{Decision, Format, Forms, Outgoing, extract, inject, scan};

const ORDERS: [&[Format]; 4] = [&[Format::B3, Format::W3c], &[Format::W3c, Format::B3], &[Format::B3], &[Format::W3c]];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut head = meshgate_fuzz::parse_head(text);
    let seen = scan(&head.headers);
    let forms = seen.forms();
    let incoming: Vec<_> = ORDERS.iter().map(|order| extract(&seen, order)).collect();
    let Some((trace, parent)) = incoming.iter().find_map(|i| i.ids) else {
        // No valid context: the next hop gets none of the caller's stale forms.
        inject(
            &mut head.headers,
            Forms::NONE,
            forms,
            outgoing(meshgate_core::TraceId { value: 1, short: false }, 1, Decision::Deny),
        );
        assert!(scan(&head.headers).forms().is_empty(), "stale forms left: {:?}", head.headers);
        return;
    };
    assert!(trace.value != 0 && parent != 0, "an all-zero id was accepted");
    let decision = incoming[0].decision.unwrap_or(Decision::Sample);
    let span = 0x0123_4567_89ab_cdef;
    inject(&mut head.headers, Forms::B3 | Forms::B3_SINGLE | Forms::W3C, Forms::NONE, outgoing(trace, span, decision));
    let again = scan(&head.headers);
    for order in ORDERS {
        let read = extract(&again, order).ids.expect("the context just written reads back");
        assert_eq!((read.0.value, read.1), (trace.value, span), "{order:?} read back {read:?}");
    }
    assert_eq!(extract(&again, &[Format::B3]).ids.map(|(t, _)| t.short), Some(trace.short));
});

fn outgoing(trace: meshgate_core::TraceId, span: u64, decision: Decision) -> Outgoing {
    Outgoing { trace, span, parent: 0x1111_2222_3333_4444, decision, random: false }
}
