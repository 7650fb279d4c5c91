//! HTTP/2 on a raw socket, frame by frame, for tests that must send what no well-behaved client
//! would (endless CONTINUATION frames, more streams than allowed) and see exactly how the gateway
//! ends the connection (its GOAWAY and error code).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0x0;
/// HEADERS.
pub const HEADERS: u8 = 0x1;
/// RST_STREAM.
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// WINDOW_UPDATE.
pub const WINDOW_UPDATE: u8 = 0x8;
/// CONTINUATION.
pub const CONTINUATION: u8 = 0x9;
/// END_STREAM flag.
pub const END_STREAM: u8 = 0x1;
/// END_HEADERS flag.
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
/// PROTOCOL_ERROR.
pub const PROTOCOL_ERROR: u32 = 0x1;
/// REFUSED_STREAM.
pub const REFUSED_STREAM: u32 = 0x7;
/// CANCEL.
pub const CANCEL: u32 = 0x8;
/// COMPRESSION_ERROR.
pub const COMPRESSION_ERROR: u32 = 0x9;
/// ENHANCE_YOUR_CALM.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// `GET /` for authority `t`, HPACK-encoded from the static table (RFC 7541 appendix A).
pub const GET_ROOT: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x01, b't'];

/// One frame: `(type, flags, stream, payload)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's `(last stream id, error code)`.
    pub fn goaway(&self) -> Option<(u32, u32)> {
        (self.kind == GOAWAY && self.payload.len() >= 8).then(|| {
            let p = &self.payload;
            (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff, u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
        })
    }

    /// An RST_STREAM's error code.
    pub fn reset(&self) -> Option<u32> {
        (self.kind == RST_STREAM && self.payload.len() == 4)
            .then(|| u32::from_be_bytes([self.payload[0], self.payload[1], self.payload[2], self.payload[3]]))
    }
}

/// Encodes a frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A raw HTTP/2 client connection.
pub struct RawH2 {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub async fn connect(addr: std::net::SocketAddr) -> RawH2 {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).ok();
        let mut start = PREFACE.to_vec();
        start.extend(frame(SETTINGS, 0, 0, &[]));
        tcp.write_all(&start).await.expect("preface");
        RawH2 { tcp, buf: Vec::new() }
    }

    /// Writes bytes; false once the gateway has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).await.is_ok()
    }

    /// Reads frames until the connection closes, `within` passes, or `stop` says enough.
    /// Returns them, and whether the connection closed.
    pub async fn read_until(&mut self, within: Duration, mut stop: impl FnMut(&Frame) -> bool) -> (Vec<Frame>, bool) {
        let deadline = tokio::time::Instant::now() + within;
        let mut frames = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while let Some(f) = self.next_buffered() {
                let done = stop(&f);
                frames.push(f);
                if done {
                    return (frames, false);
                }
            }
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (frames, true),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return (frames, false),
            }
        }
    }

    fn next_buffered(&mut self) -> Option<Frame> {
        if self.buf.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
        if self.buf.len() < 9 + len {
            return None;
        }
        let b = &self.buf;
        let f = Frame {
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
            payload: b[9..9 + len].to_vec(),
        };
        self.buf.drain(..9 + len);
        Some(f)
    }
}
