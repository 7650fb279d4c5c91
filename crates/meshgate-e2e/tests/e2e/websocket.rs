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
