//! WebSocket through the gateway: the upgrade is forwarded and bytes flow both ways.

use futures_util::{SinkExt, StreamExt};
use meshgate_e2e::{TestGateway, Upstream, config};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo() {
    let ws = Upstream::websocket("ws").await;
    let http = Upstream::http("http").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services:
  - {{name: ws, url: "http://{}"}}
  - {{name: http, url: "http://{}"}}
routes:
  - {{name: ws, service: ws, paths: ["/ws"]}}
  - {{name: http, service: http, paths: ["/"]}}
"#,
        ws.addr(),
        http.addr()
    )));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let url = format!("ws://{}/ws/chat", gw.addr());
    let (mut socket, resp) = tokio_tungstenite::client_async(url, tcp).await.expect("WebSocket handshake via gateway");
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        socket.send(Message::text(format!("hello {i}"))).await.unwrap();
        let reply = socket.next().await.expect("a reply").unwrap();
        assert_eq!(reply, Message::text(format!("ws: hello {i}")));
    }
    let big = vec![7u8; 256 * 1024];
    socket.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::binary(big));
    socket.close(None).await.unwrap();
    assert_eq!(ws.hits(), 1);
    // Plain requests on the same gateway are unaffected.
    assert_eq!(meshgate_e2e::client::get(gw.addr(), "/plain").await.name(), "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_count_towards_max_connections() {
    let ws = Upstream::websocket("ws").await;
    let gw = TestGateway::start(&config(&format!(
        r#"
limits: {{max_connections: 2}}
services: [{{name: ws, url: "http://{}"}}]
routes: [{{name: ws, service: ws, paths: ["/"]}}]
"#,
        ws.addr()
    )));
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let (mut s, _) = tokio_tungstenite::client_async(format!("ws://{}/", gw.addr()), tcp).await.unwrap();
        s.send(Message::text("hi")).await.unwrap();
        assert!(s.next().await.unwrap().is_ok());
        sockets.push(s);
    }
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let third = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_tungstenite::client_async(format!("ws://{}/", gw.addr()), tcp),
    )
    .await
    .expect("handshake answered or refused in time");
    assert!(third.is_err(), "a third connection was served with two WebSockets open and max_connections: 2");
}

/// An `h2c` upgrade (RFC 7540 §3.2) is never forwarded: an upstream that accepted it would turn
/// the connection into a tunnel in which the client reaches any path past the route's plugins.
/// Nor is any upgrade the route does not allow, or an offer that mixes one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_upgrades_the_route_allows_are_forwarded() {
    use meshgate_e2e::raw::{RawConn, RawUpstream};
    let up = RawUpstream::ok().await;
    let gw = TestGateway::start(&config(&format!(
        r#"
services: [{{name: s, url: "http://{}"}}]
routes:
  - {{name: ws, service: s, paths: ["/ws"]}}
  - {{name: plain, service: s, paths: ["/plain"], upgrades: []}}
"#,
        up.addr()
    )));
    let cases = [
        ("/ws", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
        ("/ws", "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
        ("/ws", "Connection: upgrade\r\nUpgrade: H2C\r\n"),
        (
            "/plain",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        ),
    ];
    for (path, headers) in cases {
        up.recorder().clear();
        let mut c = RawConn::connect(gw.addr()).await;
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes()).await;
        let resp = c.response(false).await.expect("an answer");
        assert_eq!(resp.status(), 200, "{path} {headers:?}: {}", resp.text());
        let seen = up.recorder().requests();
        assert_eq!(seen.len(), 1);
        for name in ["upgrade", "connection", "http2-settings"] {
            assert_eq!(seen[0].all(name), Vec::<String>::new(), "{name} forwarded for {headers:?}");
        }
    }
    // A WebSocket upgrade on a route that allows it goes on as one.
    up.recorder().clear();
    let mut c = RawConn::connect(gw.addr()).await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
    c.response(false).await.expect("an answer");
    assert_eq!(up.recorder().requests()[0].header("upgrade").as_deref(), Some("websocket"));
}

/// An upstream that switches protocols when no upgrade was forwarded gets no tunnel: 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_protocol_switch_is_refused() {
    use meshgate_e2e::raw::{RawConn, RawUpstream};
    let up = RawUpstream::answering(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        .await;
    let gw = TestGateway::start(&config(&format!(
        "services: [{{name: s, url: \"http://{}\"}}]\nroutes: [{{name: r, service: s, paths: [/]}}]",
        up.addr()
    )));
    let mut c = RawConn::connect(gw.addr()).await;
    c.send(b"GET /admin HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n").await;
    let resp = c.response(false).await.expect("an answer");
    assert_eq!(resp.status(), 502, "{}", resp.text());
}
