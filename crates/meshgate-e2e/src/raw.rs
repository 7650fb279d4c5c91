//! HTTP/1.1 on raw sockets, for conformance tests: a client that writes exactly the bytes a case
//! gives (malformed ones included), and an upstream that records exactly the bytes it receives.
//!
//! Messages are parsed with `httparse` (the parser hyper uses, not meshgate's) and framed here
//! by RFC 9112 §6: `Transfer-Encoding: chunked`, else `Content-Length`, else (responses only)
//! the close. The framing is strict on purpose: what the gateway sends must be well formed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a raw read waits for more bytes before the exchange counts as stalled.
const READ_WAIT: Duration = Duration::from_secs(5);

/// One message as received: its head (parsed) and its body (decoded), and the exact bytes.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// Request: `METHOD target HTTP/1.x`; response: the status code as text.
    pub start: String,
    /// Header lines as `(name, value)`, in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, chunked framing removed.
    pub body: Vec<u8>,
    /// Exactly the bytes the message took on the wire.
    pub raw: Vec<u8>,
}

impl Message {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The one value of header `name`, if it appears exactly once; panics if more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} appears {} times in {:?}", all.len(), String::from_utf8_lossy(&self.raw));
        all.into_iter().next()
    }

    /// The status code of a response.
    pub fn status(&self) -> u16 {
        self.start.parse().unwrap_or(0)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why the bytes are not one well-formed message.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    /// More bytes are needed.
    Partial,
    /// The bytes can never become a valid message.
    Invalid(String),
}

/// Parses one request from the front of `buf`: the message and how many bytes it took.
pub fn parse_request(buf: &[u8]) -> Result<(Message, usize), Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Malformed::Partial),
        Err(e) => return Err(Malformed::Invalid(format!("request head: {e}"))),
    };
    let start = format!(
        "{} {} HTTP/1.{}",
        req.method.unwrap_or_default(),
        req.path.unwrap_or_default(),
        req.version.unwrap_or_default()
    );
    let headers: Vec<(String, Vec<u8>)> = req.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
    let (body, len) = match framing(&headers)? {
        Framing::Chunked => dechunk(&buf[head_len..])?,
        Framing::Length(n) => fixed(&buf[head_len..], n)?,
        Framing::Unframed => (Vec::new(), 0),
    };
    let total = head_len + len;
    Ok((Message { start, headers, body, raw: buf[..total].to_vec() }, total))
}

/// Parses one response from the front of `buf`; `closed` says the connection has ended, which
/// ends a body framed by the close.
pub fn parse_response(buf: &[u8], closed: bool, head_request: bool) -> Result<(Message, usize), Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Malformed::Partial),
        Err(e) => return Err(Malformed::Invalid(format!("response head: {e}"))),
    };
    let code = resp.code.unwrap_or_default();
    let headers: Vec<(String, Vec<u8>)> = resp.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
    let bodiless = head_request || code == 204 || code == 304 || (100..200).contains(&code);
    let (body, len) = match framing(&headers)? {
        _ if bodiless => (Vec::new(), 0),
        Framing::Chunked => dechunk(&buf[head_len..])?,
        Framing::Length(n) => fixed(&buf[head_len..], n)?,
        Framing::Unframed if closed => (buf[head_len..].to_vec(), buf.len() - head_len),
        Framing::Unframed => return Err(Malformed::Partial),
    };
    let total = head_len + len;
    Ok((Message { start: code.to_string(), headers, body, raw: buf[..total].to_vec() }, total))
}

enum Framing {
    Chunked,
    Length(usize),
    Unframed,
}

/// RFC 9112 §6.3, strictly: one `chunked` as the only coding, or one valid Content-Length,
/// never both.
fn framing(headers: &[(String, Vec<u8>)]) -> Result<Framing, Malformed> {
    let values =
        |name: &str| headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect::<Vec<_>>();
    let te = values("transfer-encoding");
    let cl = values("content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err(Malformed::Invalid("both Transfer-Encoding and Content-Length".into()));
    }
    if !te.is_empty() {
        return match te.as_slice() {
            [v] if v.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(Malformed::Invalid(format!("Transfer-Encoding {te:?}"))),
        };
    }
    match cl.as_slice() {
        // A request without either has no body; a response's ends with the connection.
        [] => Ok(Framing::Unframed),
        [v] if !v.is_empty() && v.len() < 16 && v.iter().all(u8::is_ascii_digit) => {
            Ok(Framing::Length(std::str::from_utf8(v).unwrap_or("0").parse().unwrap_or(0)))
        }
        _ => Err(Malformed::Invalid(format!("Content-Length {cl:?}"))),
    }
}

fn fixed(buf: &[u8], n: usize) -> Result<(Vec<u8>, usize), Malformed> {
    if buf.len() < n { Err(Malformed::Partial) } else { Ok((buf[..n].to_vec(), n)) }
}

/// Decodes a chunked body (RFC 9112 §7.1): hex sizes, optional extensions, CRLF after each
/// line and chunk, trailers ending with an empty line.
fn dechunk(buf: &[u8]) -> Result<(Vec<u8>, usize), Malformed> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = find_crlf(&buf[at..]).ok_or(Malformed::Partial)?;
        let line = &buf[at..at + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        if size_text.is_empty() || size_text.len() > 15 || !size_text.iter().all(u8::is_ascii_hexdigit) {
            return Err(Malformed::Invalid(format!("chunk size {:?}", String::from_utf8_lossy(line))));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap_or("0"), 16).unwrap_or(0);
        at += line_end + 2;
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                let end = find_crlf(&buf[at..]).ok_or(Malformed::Partial)?;
                at += end + 2;
                if end == 0 {
                    return Ok((body, at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Err(Malformed::Partial);
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(Malformed::Invalid("no CRLF after chunk data".into()));
        }
        at += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// An HTTP/1.1 upstream that records every request exactly as received and answers each with
/// the response `answer` gives for it, closing the connection after an answer that says
/// `Connection: close`. A byte stream that is not a sequence of well-formed
/// requests is recorded as [`RawUpstream::garbage`] and the connection closed.
pub struct RawUpstream {
    addr: SocketAddr,
    seen: Recorder,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`RawUpstream`] received, readable from other tasks.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Seen>>);

impl Recorder {
    /// Every well-formed request received so far, in order.
    pub fn requests(&self) -> Vec<Message> {
        self.lock().requests.clone()
    }

    /// Descriptions of byte streams that were not well-formed requests.
    pub fn garbage(&self) -> Vec<String> {
        self.lock().garbage.clone()
    }

    /// Requests whose connection closed before they were complete (a body that failed on the
    /// client's side after its start was forwarded): the bytes that came.
    pub fn cut(&self) -> Vec<String> {
        self.lock().cut.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        let mut s = self.lock();
        s.requests.clear();
        s.garbage.clear();
        s.cut.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Seen {
    requests: Vec<Message>,
    garbage: Vec<String>,
    cut: Vec<String>,
    connections: usize,
}

/// What the upstream answers to a request.
pub type Answer = Arc<dyn Fn(&Message) -> Vec<u8> + Send + Sync>;

impl RawUpstream {
    /// Answers every request with `200`, `Content-Length` and the body `ok`.
    pub async fn ok() -> RawUpstream {
        RawUpstream::start(Arc::new(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())).await
    }

    /// Answers every request with exactly the bytes `response`.
    pub async fn answering(response: &[u8]) -> RawUpstream {
        let response = response.to_vec();
        RawUpstream::start(Arc::new(move |_| response.clone())).await
    }

    /// Starts on `127.0.0.1:0`.
    pub async fn start(answer: Answer) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Recorder::default();
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    seen.lock().connections += 1;
                    tokio::spawn(serve(tcp, seen.clone(), answer.clone()));
                }
            })
        };
        RawUpstream { addr, seen, task }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it received.
    pub fn recorder(&self) -> &Recorder {
        &self.seen
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut tcp: TcpStream, seen: Recorder, answer: Answer) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse_request(&buf) {
            Ok((msg, used)) => {
                buf.drain(..used);
                let out = answer(&msg);
                seen.lock().requests.push(msg);
                // An answer that says `Connection: close` (or has no length) ends the connection.
                let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
                let close = head.contains("\r\nconnection: close\r\n");
                if tcp.write_all(&out).await.is_err() || close {
                    return;
                }
                continue;
            }
            Err(Malformed::Invalid(why)) => {
                seen.lock().garbage.push(format!("{why}: {:?}", String::from_utf8_lossy(&buf)));
                return;
            }
            Err(Malformed::Partial) => {}
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    seen.lock().cut.push(String::from_utf8_lossy(&buf).into_owned());
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What reading a response gave.
#[derive(Debug)]
pub enum Read {
    /// A whole, well-formed response.
    Complete(Message),
    /// The connection closed before any byte of one.
    Closed,
    /// The connection closed partway through one: these bytes came.
    Cut(String),
    /// Bytes that can never be a well-formed response.
    Malformed(String),
    /// Nothing more came for a while: these bytes came.
    Stalled(String),
}

/// A client connection that writes raw bytes and reads parsed responses.
pub struct RawConn {
    tcp: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).ok();
        RawConn { tcp, buf: Vec::new(), closed: false }
    }

    /// Writes `bytes` as they are.
    pub async fn send(&mut self, bytes: &[u8]) {
        // A gateway that already answered and closed may refuse the rest; that is its right.
        let _ = self.tcp.write_all(bytes).await;
    }

    /// Reads the next response; `None` when the connection closed first. Panics on bytes that
    /// are not a well-formed response, or a stall.
    pub async fn response(&mut self, head_request: bool) -> Option<Message> {
        match self.read_response(head_request).await {
            Read::Complete(m) => Some(m),
            Read::Closed => None,
            other => panic!("{other:?}"),
        }
    }

    /// Reads the next response, whatever comes.
    pub async fn read_response(&mut self, head_request: bool) -> Read {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if !self.buf.is_empty() {
                match parse_response(&self.buf, self.closed, head_request) {
                    Ok((msg, used)) => {
                        self.buf.drain(..used);
                        return Read::Complete(msg);
                    }
                    Err(Malformed::Invalid(why)) => {
                        return Read::Malformed(format!("{why}: {:?}", String::from_utf8_lossy(&self.buf)));
                    }
                    Err(Malformed::Partial) if self.closed => {
                        return Read::Cut(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned());
                    }
                    Err(Malformed::Partial) => {}
                }
            } else if self.closed {
                return Read::Closed;
            }
            match tokio::time::timeout(READ_WAIT, self.tcp.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Read::Stalled(String::from_utf8_lossy(&self.buf).into_owned()),
            }
        }
    }
}

/// Sends `bytes` on a new connection and returns the first response (`None` if the gateway
/// closed without one).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Message> {
    let mut conn = RawConn::connect(addr).await;
    conn.send(bytes).await;
    conn.response(bytes.starts_with(b"HEAD ")).await
}
