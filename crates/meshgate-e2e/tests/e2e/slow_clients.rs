//! Clients that hold a connection without using it: nothing sent, an HTTP/2 preface or header
//! block sent a byte at a time, a response never read (a full socket, an HTTP/2 window kept
//! shut), and HTTP/2 streams opened and reset by the hundred. Each is cut off by the limit
//! meant for it (the bound is the feature here, so the tests time it), and a reset stream costs
//! the upstream no connection of its own.

use bytes::Bytes;
use meshgate_e2e::{TestGateway, Upstream, config};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn gateway(up: &Upstream, limits: &str) -> TestGateway {
    TestGateway::start(&config(&format!(
        "limits: {limits}\nservices: [{{name: s, url: \"http://{}\"}}]\nroutes: [{{name: r, service: s, paths: [/]}}]",
        up.addr()
    )))
}

/// An HTTP/2 frame on stream `stream`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /` for authority `t`, HPACK-encoded from the static table (RFC 7541 appendix A).
const GET: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x01, b't'];

/// Reads (and drops) what the gateway sends until it closes the connection; how long that took.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> Duration {
    let since = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((since + within).into(), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection was still open after {within:?}"),
        }
    }
}

/// Writes `bytes` one at a time, `gap` apart, until the gateway closes the connection.
async fn dribble(tcp: &mut TcpStream, bytes: &[u8], gap: Duration) -> bool {
    for b in bytes {
        if tcp.write_all(std::slice::from_ref(b)).await.is_err() {
            return true;
        }
        tokio::time::sleep(gap).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_header_timeout: 500ms, client_idle_timeout: 30s}");
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let took = until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(450), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_preface_sent_a_byte_at_a_time_is_cut_off() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_header_timeout: 500ms, client_idle_timeout: 30s}");
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let since = Instant::now();
    // 24 bytes 100 ms apart would take 2.4 s; the gateway closes at about 0.5 s.
    let cut = dribble(&mut tcp, PREFACE, Duration::from_millis(100)).await;
    let took =
        if cut { since.elapsed() } else { until_closed(&mut tcp, Duration::from_secs(3)).await + since.elapsed() };
    assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(2400), "closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_header_block_sent_a_byte_at_a_time_is_cut_off() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_header_timeout: 500ms, client_idle_timeout: 30s}");
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    // A first request, whole: the connection is in use.
    let mut start = PREFACE.to_vec();
    start.extend(frame(0x4, 0, 0, &[]));
    start.extend(frame(0x1, 0x5, 1, GET));
    tcp.write_all(&start).await.unwrap();
    meshgate_e2e::wait_for("the first request upstream", Duration::from_secs(5), || async {
        (up.hits() == 1).then_some(())
    })
    .await;
    // The next one's HEADERS frame, a byte every 100 ms (1.5 s in all), with an idle timeout of
    // 30 s: the header timeout cuts it at about 0.5 s.
    let since = Instant::now();
    let cut = dribble(&mut tcp, &frame(0x1, 0x5, 3, GET), Duration::from_millis(100)).await;
    let took =
        if cut { since.elapsed() } else { until_closed(&mut tcp, Duration::from_secs(3)).await + since.elapsed() };
    assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(1500), "closed after {took:?}");
    assert_eq!(up.hits(), 1, "the dribbled request never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_keeps_its_window_shut_is_closed() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_send_timeout: 500ms, client_idle_timeout: 30s}");
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    // No stream may receive a byte until the client says so, which it never does.
    let (mut client, conn) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, Bytes>(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/stream/200000", gw.addr())).body(()).unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let since = Instant::now();
    let ended =
        tokio::time::timeout(Duration::from_secs(5), conn).await.expect("still open 5 s after a 500 ms send timeout");
    let took = since.elapsed();
    assert!(took >= Duration::from_millis(400), "closed after {took:?}: {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_never_reads_is_closed() {
    const BODY: u64 = 64 << 20;
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{client_send_timeout: 500ms, client_idle_timeout: 30s}");
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(format!("GET /stream/{BODY} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
    // Nothing is read: the socket buffers fill, the gateway's writes block, and after the send
    // timeout it closes. What it had written still arrives, then the end: far less than the body.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut read = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => read += n as u64,
            Err(_) => panic!("still open after {read} bytes: the slow reader was not cut off"),
        }
    }
    assert!(read < BODY, "the whole body arrived: the connection was not cut");
}

/// Streams opened and reset one after another (below the flood threshold): each request still
/// reaches the upstream, and the upstream connection is reused, not dropped with each reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_streams_leave_their_upstream_connection_in_the_pool() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{}");
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        let req = http::Request::get(format!("http://{}/delay/50", gw.addr())).body(()).unwrap();
        let (_resp, mut stream) = client.send_request(req, false).unwrap();
        meshgate_e2e::wait_for("the request upstream", Duration::from_secs(5), || async {
            (up.hits() > i).then_some(())
        })
        .await;
        stream.send_reset(h2::Reason::CANCEL);
        // The upstream answers 50 ms later; the abandoned exchange finishes and gives the
        // connection back.
        meshgate_e2e::wait_for("the upstream to answer", Duration::from_secs(5), || async {
            (up.in_flight() == 0).then_some(())
        })
        .await;
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(up.connections(), 1, "one upstream connection for 20 reset requests, one after another");
}

/// A reset flood (CVE-2023-44487 after acceptance): once half of at least 50 requests are
/// abandoned, the connection is shut; the upstream sees a few dozen requests, not hundreds, on a
/// few dozen connections at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_flood_is_shut_down() {
    let up = Upstream::http("up").await;
    let gw = gateway(&up, "{}");
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..1000 {
        let req = http::Request::get(format!("http://{}/delay/200", gw.addr())).body(()).unwrap();
        let Ok(mut ready) = client.clone().ready().await else { break };
        let Ok((_resp, mut stream)) = ready.send_request(req, false) else { break };
        sent += 1;
        tokio::task::yield_now().await;
        stream.send_reset(h2::Reason::CANCEL);
        if sent % 20 == 0 {
            // Let the gateway's requests start, as a flood over a real network would.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client = ready;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(closed.is_ok(), "the connection was not closed after {sent} reset streams");
    assert!(sent < 1000, "all 1000 streams were accepted");
    meshgate_e2e::wait_for("abandoned exchanges to end", Duration::from_secs(5), || async {
        (up.in_flight() == 0).then_some(())
    })
    .await;
    let (hits, conns) = (up.hits(), up.connections());
    assert!(hits <= 120, "{hits} requests reached the upstream from {sent} reset streams");
    assert!(conns <= hits.max(1), "{conns} upstream connections for {hits} requests");
}
