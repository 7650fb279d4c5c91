//! Follows the HTTP/2 frames a client sends, as its bytes are read, to see what hyper does not
//! time: a header block (HEADERS and its CONTINUATIONs) that is still arriving. A client that
//! sends one byte of a HEADERS frame at a time keeps hyper waiting without a request ever
//! starting, so the connection loop bounds an open header block by `client_header_timeout`.
//!
//! Only frame headers are read (9 bytes a frame); payloads are skipped by their length. The
//! connection is followed only when it starts with the HTTP/2 preface; for HTTP/1.1 the first
//! byte that differs ends the work.

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the reader is in the client's byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// This many bytes of the preface matched.
    Preface(u8),
    /// Not HTTP/2: nothing more to follow.
    NotH2,
    /// This many bytes of a frame header are in `head`.
    Head(u8),
    /// This many bytes of the current frame's payload are still to come.
    Payload(u32),
}

/// The frame follower of one connection.
#[derive(Debug)]
pub struct FrameFollower {
    at: At,
    head: [u8; 9],
    /// The frame being read is part of a header block, which it ends.
    ends_block: bool,
    /// A header block has begun and not ended.
    in_block: bool,
}

impl Default for FrameFollower {
    fn default() -> Self {
        FrameFollower { at: At::Preface(0), head: [0; 9], ends_block: false, in_block: false }
    }
}

impl FrameFollower {
    /// Whether the connection turned out not to be HTTP/2 (nothing more will be followed).
    pub fn done(&self) -> bool {
        self.at == At::NotH2
    }

    /// Follows `bytes`, the next ones the client sent. True when a header block began in them
    /// and is still open: it is timed from now. (One open before goes on being timed from when
    /// it began; [`FrameFollower::in_block`] says whether any is open.)
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        let mut opened = false;
        while !bytes.is_empty() {
            match self.at {
                At::NotH2 => return false,
                At::Preface(n) => {
                    let want = &PREFACE[n as usize..];
                    let take = want.len().min(bytes.len());
                    if bytes[..take] != want[..take] {
                        self.at = At::NotH2;
                        return false;
                    }
                    bytes = &bytes[take..];
                    let n = n as usize + take;
                    self.at = if n == PREFACE.len() { At::Head(0) } else { At::Preface(n as u8) };
                }
                At::Head(n) => {
                    let take = (9 - n as usize).min(bytes.len());
                    self.head[n as usize..n as usize + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let n = n as usize + take;
                    if n >= 4 && !self.in_block && self.head[3] == HEADERS {
                        // Open from the frame's first bytes, before its header is complete.
                        self.in_block = true;
                        opened = true;
                    }
                    if n < 9 {
                        self.at = At::Head(n as u8);
                        continue;
                    }
                    let len = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]);
                    let kind = self.head[3];
                    self.ends_block = (kind == HEADERS || kind == CONTINUATION) && self.head[4] & END_HEADERS != 0;
                    self.at = At::Payload(len);
                    if len == 0 {
                        self.end_frame();
                    }
                }
                At::Payload(left) => {
                    let take = (left as usize).min(bytes.len());
                    bytes = &bytes[take..];
                    let left = left - take as u32;
                    self.at = At::Payload(left);
                    if left == 0 {
                        self.end_frame();
                    }
                }
            }
            if !self.in_block {
                opened = false;
            }
        }
        opened && self.in_block
    }

    fn end_frame(&mut self) {
        if self.ends_block {
            self.in_block = false;
        }
        self.ends_block = false;
        self.at = At::Head(0);
    }

    /// Whether a header block is arriving.
    pub fn in_block(&self) -> bool {
        self.in_block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_header_block_is_open_until_its_last_byte() {
        let mut f = FrameFollower::default();
        assert!(!f.feed(PREFACE));
        assert!(!f.feed(&frame(0x4, 0, &[0; 6])), "SETTINGS opens no block");
        assert!(!f.in_block());
        let headers = frame(HEADERS, END_HEADERS, b"abcdef");
        // One byte at a time: open from the fourth byte (the type) to the last.
        for (i, b) in headers.iter().enumerate() {
            let opened = f.feed(std::slice::from_ref(b));
            assert_eq!(opened, i == 3, "byte {i}");
            assert_eq!(f.in_block(), (3..headers.len() - 1).contains(&i), "byte {i}");
        }
    }

    #[test]
    fn continuations_keep_the_block_open() {
        let mut f = FrameFollower::default();
        f.feed(PREFACE);
        assert!(f.feed(&frame(HEADERS, 0, b"ab")));
        assert!(f.in_block());
        assert!(!f.feed(&frame(CONTINUATION, 0, b"cd")), "still the same block");
        assert!(f.in_block());
        f.feed(&frame(CONTINUATION, END_HEADERS, b"ef"));
        assert!(!f.in_block());
        // A whole block and the start of the next in one read: the new one is timed from now.
        let mut two = frame(HEADERS, END_HEADERS, b"x");
        two.extend_from_slice(&frame(HEADERS, END_HEADERS, b"y")[..5]);
        assert!(f.feed(&two));
        // A data frame's payload bytes are skipped, even ones that look like a frame header.
        let mut f = FrameFollower::default();
        f.feed(PREFACE);
        assert!(!f.feed(&frame(0x0, 0, &frame(HEADERS, 0, b""))));
        assert!(!f.in_block());
    }

    #[test]
    fn http1_is_not_followed() {
        let mut f = FrameFollower::default();
        assert!(!f.feed(b"GET / HTTP/1.1\r\n"));
        assert!(f.done());
        assert!(!f.feed(&frame(HEADERS, 0, b"")));
        assert!(!f.in_block());
    }
}
