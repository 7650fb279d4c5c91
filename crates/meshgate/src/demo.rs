//! Sample upstream services for `meshgate demo`: each answers every request with JSON saying who
//! it is and what it received, so routing, header matching and load balancing show in curl.

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The sample services and their ports; `examples/gateway.yaml` points at these.
pub const UPSTREAMS: &[(&str, u16)] =
    &[("users-1", 9101), ("users-2", 9102), ("android", 9103), ("ios", 9104), ("echo", 9105)];

/// Binds every sample service and serves them from a background thread.
pub fn start_upstreams() -> std::io::Result<()> {
    let mut listeners = Vec::new();
    for (name, port) in UPSTREAMS {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        let l = std::net::TcpListener::bind(addr).map_err(|e| std::io::Error::new(e.kind(), format!("{addr}: {e}")))?;
        l.set_nonblocking(true)?;
        listeners.push((*name, l));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("meshgate-demo".into()).spawn(move || {
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for (name, l) in listeners {
                let l = tokio::net::TcpListener::from_std(l).expect("listener from std");
                tasks.push(tokio::spawn(serve(name, l)));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    })?;
    tracing::info!("demo upstreams on 127.0.0.1:9101-9105");
    Ok(())
}

async fn serve(name: &'static str, listener: tokio::net::TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let svc = service_fn(move |req| async move { Ok::<_, Infallible>(answer(name, req)) });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

fn answer(name: &str, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/health" {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    let headers: serde_json::Map<String, serde_json::Value> =
        req.headers().iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())).collect();
    let body = serde_json::json!({
        "service": name,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
