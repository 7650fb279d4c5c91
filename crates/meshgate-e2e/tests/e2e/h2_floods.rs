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
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    // One field of 40 KB, past twice the 16 KiB limit.
    let req =
        http::Request::get(format!("http://{}/x", gw.addr())).header("x-big", "a".repeat(40_000)).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.expect("an answer, not a reset");
    assert_eq!(resp.status(), 431);
    assert_eq!(up.hits(), 0, "the request reached the upstream");
    // The connection goes on.
    let req = http::Request::get(format!("http://{}/x", gw.addr())).body(()).unwrap();
    assert_eq!(client.send_request(req, true).unwrap().0.await.unwrap().status(), 200);
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
