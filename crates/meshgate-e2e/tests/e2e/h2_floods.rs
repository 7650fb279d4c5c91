//! HTTP/2 abuse on raw frames, bounded (counts and time): a CONTINUATION flood, more streams
//! than allowed, a header list over the limit, and a reset flood. Each ends in the gateway's
//! refusal (a GOAWAY or a stream reset with the right code), never in unbounded buffering or
//! requests reaching the upstream.

use meshgate_e2e::h2raw::{self, Frame, RawH2, frame};
use meshgate_e2e::{TestGateway, Upstream, config};
use std::time::Duration;

fn gateway(up: &Upstream, limits: &str) -> TestGateway {
    TestGateway::start(&config(&format!(
        "limits: {limits}\nservices: [{{name: s, url: \"http://{}\"}}]\nroutes: [{{name: r, service: s, paths: [/]}}]",
        up.addr()
    )))
}

/// Repeated `x: y` literals (without indexing), valid HPACK, `n` of them.
fn filler(n: usize) -> Vec<u8> {
    [0x00, 0x01, b'x', 0x01, b'y'].repeat(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_refused_without_buffering_it() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{max_header_bytes: 16KiB}");
    let mut c = RawH2::connect(gw.addr()).await;
    c.send(&frame(h2raw::HEADERS, 0, 1, h2raw::GET_ROOT)).await;
    // Up to 4 MB of CONTINUATION frames that never end the block (limit: twice 16 KiB).
    let one = frame(h2raw::CONTINUATION, 0, 1, &filler(200));
    let mut sent = 0usize;
    for _ in 0..4000 {
        if !c.send(&one).await {
            break;
        }
        sent += one.len();
    }
    let (frames, closed) = c.read_until(Duration::from_secs(5), |f| f.goaway().is_some()).await;
    let goaway = frames.iter().find_map(Frame::goaway);
    assert!(
        matches!(goaway, Some((_, h2raw::ENHANCE_YOUR_CALM | h2raw::COMPRESSION_ERROR | h2raw::PROTOCOL_ERROR)))
            || closed,
        "no GOAWAY and still open after {sent} bytes of CONTINUATION: {frames:?}"
    );
    assert!(goaway.is_some(), "the connection closed without a GOAWAY: {frames:?}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_over_the_limit_is_refused() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{max_header_bytes: 16KiB}");
    let mut c = RawH2::connect(gw.addr()).await;
    // One field of 40 KB: a literal with a literal name (`x-big`).
    let value = vec![b'a'; 40_000];
    let mut block = h2raw::GET_ROOT.to_vec();
    block.extend_from_slice(&[0x00, 0x05]);
    block.extend_from_slice(b"x-big");
    // Length 40000 as an HPACK integer with a 7-bit prefix: 127, then 39873 in 7-bit groups.
    let mut n = value.len() - 127;
    block.push(0x7f);
    while n >= 128 {
        block.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    block.push(n as u8);
    block.extend_from_slice(&value);
    // Sent as HEADERS and CONTINUATIONs of 16 KB (the default largest frame).
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { h2raw::HEADERS } else { h2raw::CONTINUATION };
        let flags = if i == chunks.len() - 1 { h2raw::END_HEADERS | h2raw::END_STREAM } else { 0 };
        let flags = if i == 0 { flags | h2raw::END_STREAM } else { flags & !h2raw::END_STREAM };
        c.send(&frame(kind, flags, 1, chunk)).await;
    }
    let (frames, _) = c
        .read_until(Duration::from_secs(5), |f| {
            f.stream == 1 && (f.kind == h2raw::HEADERS || f.reset().is_some()) || f.goaway().is_some()
        })
        .await;
    let refused = frames.iter().any(|f| {
        (f.stream == 1 && (f.kind == h2raw::HEADERS || f.reset().is_some()))
            || f.goaway().is_some_and(|(_, code)| code != 0)
    });
    assert!(refused, "no refusal of the oversized header list: {frames:?}");
    assert_eq!(up.hits(), 0, "the request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{max_concurrent_streams: 20}");
    let mut c = RawH2::connect(gw.addr()).await;
    // 60 requests whose bodies never end: each stays open.
    let post = [0x83, 0x86, 0x84, 0x01, 0x01, b't'];
    for i in 0..60u32 {
        c.send(&frame(h2raw::HEADERS, h2raw::END_HEADERS, 2 * i + 1, &post)).await;
    }
    let (frames, _) = c.read_until(Duration::from_secs(2), |_| false).await;
    let refused = frames.iter().filter(|f| f.reset() == Some(h2raw::REFUSED_STREAM)).count();
    let goaway = frames.iter().find_map(Frame::goaway);
    assert!(
        refused >= 40 || goaway.is_some_and(|(_, code)| code == h2raw::PROTOCOL_ERROR),
        "{refused} refused: {frames:?}"
    );
    assert!(up.in_flight() <= 20, "{} requests in flight upstream", up.in_flight());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_flood_gets_a_goaway() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{}");
    let mut c = RawH2::connect(gw.addr()).await;
    let cancel = h2raw::CANCEL.to_be_bytes();
    let mut sent = 0;
    for i in 0..500u32 {
        let id = 2 * i + 1;
        let mut two = frame(h2raw::HEADERS, h2raw::END_HEADERS | h2raw::END_STREAM, id, h2raw::GET_ROOT);
        two.extend(frame(h2raw::RST_STREAM, 0, id, &cancel));
        if !c.send(&two).await {
            break;
        }
        sent += 1;
        if i % 10 == 9 {
            // As over a network: the gateway gets to accept the streams before their resets.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (frames, closed) = c.read_until(Duration::from_secs(5), |_| false).await;
    let goaway = frames.iter().find_map(Frame::goaway);
    assert!(
        goaway.is_some(),
        "no GOAWAY after {sent} reset streams: {:?}",
        frames.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
    assert!(closed, "the connection stayed open");
    assert!(up.hits() <= 120, "{} requests reached the upstream", up.hits());
}
