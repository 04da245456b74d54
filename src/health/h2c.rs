//! A health request as HTTP/2 with prior knowledge, for a plaintext `listen ... http2`: nginx
//! 1.22 speaks only HTTP/2 there, so an HTTP/1.1 request gets no answer a client would.
//!
//! One stream per connection: the preface, SETTINGS (no push), and a GET as one header block
//! of literal fields (no Huffman, no indexing) ending the stream. The server's frames are read
//! until the response's `:status` and the end of its stream, SETTINGS and PING acknowledged,
//! DATA credited back so a body larger than the initial window never stalls. Only the first
//! field of a response header block is decoded: a response's only pseudo-header is `:status`,
//! and pseudo-headers come first (RFC 9113 §8.3), so the rest of the block (and the dynamic
//! table it builds) is never needed. Everything read is bounded; bytes that break the protocol
//! are an error saying what was wrong, never a panic.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use crate::http2::{self, Head};

/// The stream the request goes on: a client's first.
const STREAM: u32 = 1;

/// The most of a header block kept while its CONTINUATION frames arrive.
const MAX_BLOCK: usize = 64 * 1024;

/// The most of a body read before the answer is taken as it is.
const MAX_BODY: usize = 256 * 1024;

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2) or carries as a pseudo-header (`host`).
const NOT_SENT: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The response's status.
    Status(u16),
    /// No response: the connection closed or the stream was reset or refused first (what
    /// `return 444` does); why, in words.
    NoAnswer(String),
}

/// Why there is no end.
#[derive(Debug)]
pub enum Fault {
    /// Sending or reading failed: what, and the error.
    Io(&'static str, std::io::Error),
    /// The server's bytes break HTTP/2 or HPACK.
    Protocol(String),
}

/// The bytes that open the connection and send `GET path` for `authority` with `fields`
/// (lowercased; the ones HTTP/2 forbids are left out).
pub fn request(authority: &str, path: &str, fields: &[(String, String)]) -> Vec<u8> {
    let mut block = Vec::new();
    // Static table indexes of the names (RFC 7541 Appendix A).
    for (index, value) in [(2, "GET"), (6, "http"), (4, path), (1, authority)] {
        literal(&mut block, Name::Indexed(index), value);
    }
    for (name, value) in fields {
        let name = name.to_ascii_lowercase();
        if !NOT_SENT.contains(&name.as_str()) {
            literal(&mut block, Name::New(&name), value);
        }
    }
    let mut out = http2::PREFACE.to_vec();
    out.extend(http2::settings(&[(http2::ENABLE_PUSH, 0)]));
    let chunks: Vec<&[u8]> = block.chunks(http2::MAX_PAYLOAD).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let (kind, mut flags) = match i {
            0 => (http2::HEADERS, http2::END_STREAM),
            _ => (http2::CONTINUATION, 0),
        };
        if i + 1 == chunks.len() {
            flags |= http2::END_HEADERS;
        }
        out.extend(http2::frame(kind, flags, STREAM, chunk));
    }
    out
}

/// A connection whose reads can be given a deadline: plain TCP, or TLS over it.
pub trait Timed: Read + Write {
    fn read_timeout(&mut self, left: std::time::Duration) -> std::io::Result<()>;
}

impl Timed for &TcpStream {
    fn read_timeout(&mut self, left: std::time::Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(left))
    }
}

/// Send `request` on `tcp` and read until its end or `deadline`.
pub fn exchange<T: Timed>(tcp: &mut T, request: &[u8], deadline: Instant) -> Result<End, Fault> {
    tcp.write_all(request).map_err(|e| Fault::Io("send", e))?;
    let mut session = Session::default();
    let mut buf = vec![0; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return session.status_or(Fault::Io("read", ErrorKind::TimedOut.into()));
        }
        tcp.read_timeout(left).map_err(|e| Fault::Io("read", e))?;
        let n = match tcp.read(&mut buf) {
            Ok(0) => return Ok(session.closed()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(session.closed()),
            Err(e) => return session.status_or(Fault::Io("read", e)),
        };
        let replies = session.feed(&buf[..n]).map_err(Fault::Protocol)?;
        if let Some(end) = session.outcome() {
            // A polite close; nginx is not waiting for it, so a failure to send is no news.
            let _ = tcp.write_all(&http2::frame(http2::GOAWAY, 0, 0, &[0; 8]));
            return Ok(end);
        }
        if !replies.is_empty() {
            tcp.write_all(&replies).map_err(|e| Fault::Io("send", e))?;
        }
    }
}

/// What has been read of the server's frames.
#[derive(Debug, Default)]
struct Session {
    /// Bytes not yet a whole frame.
    buf: Vec<u8>,
    /// The header block being assembled from HEADERS and CONTINUATION frames.
    block: Vec<u8>,
    continuing: bool,
    /// The block being assembled ends the stream.
    ends_stream: bool,
    status: Option<u16>,
    /// The stream ended (END_STREAM or reset).
    ended: bool,
    /// Why the request will get no answer.
    refused: Option<String>,
    body: usize,
}

impl Session {
    /// Take `bytes`; the frames to send back (SETTINGS and PING acknowledgements, window
    /// updates).
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.buf.extend_from_slice(bytes);
        // A listen that speaks HTTP/1.x (its `http2` removed) answers the preface with an
        // HTTP/1.1 error, whose first bytes read as a huge frame.
        if self.buf.starts_with(b"HTTP/1.") {
            let line = self
                .buf
                .split(|&b| b == b'\r' || b == b'\n')
                .next()
                .unwrap_or(&[]);
            return Err(format!(
                "an HTTP/1.x answer ({}), not HTTP/2: the listen no longer speaks HTTP/2 with \
                 prior knowledge (its `http2` removed?)",
                String::from_utf8_lossy(line)
            ));
        }
        let mut out = Vec::new();
        while let Some(head) = Head::read(&self.buf) {
            if head.len > http2::MAX_PAYLOAD {
                return Err(format!(
                    "HTTP/2: a {}-byte frame, over the {} bytes the client allows",
                    head.len,
                    http2::MAX_PAYLOAD
                ));
            }
            let Some((_, payload)) = http2::complete(&self.buf) else {
                break;
            };
            let payload = payload.to_vec();
            self.buf.drain(..http2::HEAD_LEN + head.len);
            self.frame(head, &payload, &mut out)?;
        }
        Ok(out)
    }

    fn frame(&mut self, head: Head, payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if self.continuing && head.kind != http2::CONTINUATION {
            return Err("HTTP/2: a header block is interrupted by another frame".into());
        }
        let ours = head.stream == STREAM;
        match head.kind {
            http2::SETTINGS if head.flags & http2::ACK == 0 => {
                if head.stream != 0 || !payload.len().is_multiple_of(6) {
                    return Err("HTTP/2: a malformed SETTINGS frame".into());
                }
                out.extend(http2::frame(http2::SETTINGS, http2::ACK, 0, &[]));
            }
            http2::PING if head.flags & http2::ACK == 0 => {
                if payload.len() != 8 {
                    return Err("HTTP/2: a malformed PING frame".into());
                }
                out.extend(http2::frame(http2::PING, http2::ACK, 0, payload));
            }
            http2::GOAWAY => {
                let (last, code) = two_words(payload).ok_or("HTTP/2: a malformed GOAWAY frame")?;
                if last & 0x7fff_ffff < STREAM && self.status.is_none() {
                    self.refused = Some(format!(
                        "the server sent GOAWAY ({}) before answering",
                        http2::error_name(code)
                    ));
                }
            }
            http2::RST_STREAM if ours => {
                let code = word(payload).ok_or("HTTP/2: a malformed RST_STREAM frame")?;
                self.ended = true;
                if self.status.is_none() {
                    self.refused = Some(format!(
                        "the stream was reset ({}) without an answer",
                        http2::error_name(code)
                    ));
                }
            }
            http2::HEADERS if ours => {
                self.block.extend_from_slice(fragment(head, payload)?);
                self.ends_stream = head.flags & http2::END_STREAM != 0;
                self.header_fragment_done(head.flags)?;
            }
            http2::CONTINUATION if ours && self.continuing => {
                self.block.extend_from_slice(payload);
                self.header_fragment_done(head.flags)?;
            }
            http2::CONTINUATION => {
                return Err("HTTP/2: a CONTINUATION frame with no header block before it".into())
            }
            http2::DATA if ours => {
                self.body += payload.len();
                self.ended |= head.flags & http2::END_STREAM != 0;
                if !payload.is_empty() {
                    // Credit the connection and the stream, so the body never waits on the
                    // initial 64 KiB window.
                    let credit = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
                    out.extend(http2::frame(http2::WINDOW_UPDATE, 0, 0, &credit));
                    out.extend(http2::frame(http2::WINDOW_UPDATE, 0, STREAM, &credit));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After a fragment of a header block: once the block is whole, its status (an
    /// informational 1xx waits for the final one; a block after the status is trailers).
    fn header_fragment_done(&mut self, flags: u8) -> Result<(), String> {
        if self.block.len() > MAX_BLOCK {
            return Err(format!("HTTP/2: a header block over {MAX_BLOCK} bytes"));
        }
        self.continuing = flags & http2::END_HEADERS == 0;
        if self.continuing {
            return Ok(());
        }
        if self.status.is_none() {
            let status = status_of(&self.block)?;
            if status >= 200 {
                self.status = Some(status);
            }
        }
        self.block.clear();
        self.ended |= self.ends_stream;
        Ok(())
    }

    /// The end, once known: the status when the stream ended (or enough of its body was
    /// read), or why no answer will come.
    fn outcome(&self) -> Option<End> {
        match (self.status, &self.refused) {
            (Some(s), _) if self.ended || self.body >= MAX_BODY => Some(End::Status(s)),
            (None, Some(why)) => Some(End::NoAnswer(why.clone())),
            (None, None) if self.ended => {
                Some(End::NoAnswer("the stream ended without an answer".into()))
            }
            _ => None,
        }
    }

    /// The connection closed: the status if one came, else no answer.
    fn closed(&self) -> End {
        match (self.status, &self.refused) {
            (Some(s), _) => End::Status(s),
            (None, Some(why)) => End::NoAnswer(why.clone()),
            (None, None) => End::NoAnswer("the connection closed without an answer".into()),
        }
    }

    /// A status already read is enough evidence even if the rest was cut short.
    fn status_or(&self, fault: Fault) -> Result<End, Fault> {
        self.status.map(End::Status).ok_or(fault)
    }
}

/// A HEADERS frame's header block fragment, without its padding and priority fields.
fn fragment(head: Head, payload: &[u8]) -> Result<&[u8], String> {
    let bad = || "HTTP/2: a HEADERS frame shorter than its padding and priority".to_string();
    let (pad, mut rest) = if head.flags & http2::PADDED != 0 {
        let (&pad, rest) = payload.split_first().ok_or_else(bad)?;
        (usize::from(pad), rest)
    } else {
        (0, payload)
    };
    if head.flags & http2::PRIORITY != 0 {
        rest = rest.get(5..).ok_or_else(bad)?;
    }
    let end = rest.len().checked_sub(pad).ok_or_else(bad)?;
    Ok(&rest[..end])
}

fn word(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn two_words(b: &[u8]) -> Option<(u32, u32)> {
    Some((word(b)?, word(b.get(4..)?)?))
}

/// A literal field's name: a static table index or the name itself.
enum Name<'a> {
    Indexed(u32),
    New(&'a str),
}

/// A literal header field without indexing (RFC 7541 §6.2.2), strings raw.
fn literal(out: &mut Vec<u8>, name: Name, value: &str) {
    match name {
        Name::Indexed(index) => integer(out, 4, 0x00, index),
        Name::New(name) => {
            out.push(0x00);
            string(out, name);
        }
    }
    string(out, value);
}

fn string(out: &mut Vec<u8>, text: &str) {
    integer(out, 7, 0x00, u32::try_from(text.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(text.as_bytes());
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above it.
fn integer(out: &mut Vec<u8>, prefix: u8, first: u8, value: u32) {
    let max = (1u32 << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Read an HPACK integer with an N-bit prefix: its value and the bytes it took.
fn read_integer(b: &[u8], prefix: u8) -> Result<(u32, usize), String> {
    let truncated = || "HPACK: a truncated integer".to_string();
    let max = (1u32 << prefix) - 1;
    let first = u32::from(*b.first().ok_or_else(truncated)?) & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut value = max;
    // Four continuation bytes hold 28 bits: far more than any length or index here.
    for (i, &byte) in b.iter().skip(1).take(4).enumerate() {
        value = value
            .checked_add(u32::from(byte & 0x7f) << (7 * i))
            .ok_or("HPACK: an integer too large")?;
        if byte & 0x80 == 0 {
            return Ok((value, i + 2));
        }
    }
    if b.len() > 5 {
        return Err("HPACK: an integer too large".into());
    }
    Err(truncated())
}

/// Read an HPACK string literal: its bytes (Huffman decoded) and the bytes it took.
fn read_string(b: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let huffman = b.first().is_some_and(|&x| x & 0x80 != 0);
    let (len, n) = read_integer(b, 7)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| n.checked_add(len))
        .ok_or("HPACK: a string longer than its block")?;
    let raw = b
        .get(n..end)
        .ok_or("HPACK: a string longer than its block")?;
    let text = if huffman {
        huffman_decode(raw)?
    } else {
        raw.to_vec()
    };
    Ok((text, end))
}

/// The Huffman codes (RFC 7541 Appendix B) of what a `:status` field is made of: the name's
/// letters and the digits. Any other code in it means the field is something else.
const HUFFMAN: [(u32, u8, u8); 15] = [
    (0x0, 5, b'0'),
    (0x1, 5, b'1'),
    (0x2, 5, b'2'),
    (0x3, 5, b'a'),
    (0x8, 5, b's'),
    (0x9, 5, b't'),
    (0x19, 6, b'3'),
    (0x1a, 6, b'4'),
    (0x1b, 6, b'5'),
    (0x1c, 6, b'6'),
    (0x1d, 6, b'7'),
    (0x1e, 6, b'8'),
    (0x1f, 6, b'9'),
    (0x2d, 6, b'u'),
    (0x5c, 7, b':'),
];

fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let (mut code, mut len) = (0u32, 0u8);
    for bit in raw
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| byte >> i & 1))
    {
        code = code << 1 | u32::from(bit);
        len += 1;
        if let Some(&(_, _, sym)) = HUFFMAN.iter().find(|&&(c, l, _)| (c, l) == (code, len)) {
            out.push(sym);
            (code, len) = (0, 0);
        } else if len >= 8 {
            return Err("HPACK: a Huffman-coded character a status does not hold".into());
        }
    }
    // Padding is the most significant bits of EOS: all ones, under a byte.
    if len > 0 && code != (1 << len) - 1 {
        return Err("HPACK: Huffman padding that is not EOS".into());
    }
    Ok(out)
}

/// The `:status` of a response header block: its first field, after any dynamic table size
/// updates.
fn status_of(block: &[u8]) -> Result<u16, String> {
    let mut i = 0;
    let first = loop {
        let b = *block
            .get(i)
            .ok_or("HTTP/2: a response header block with no :status")?;
        if b & 0xe0 != 0x20 {
            break b;
        }
        // A dynamic table size update.
        i += read_integer(&block[i..], 5)?.1;
    };
    let not_status =
        |what: String| format!("HTTP/2: the response's first header is {what}, not :status");
    if first & 0x80 != 0 {
        // An indexed field: the static table's `:status` entries (RFC 7541 Appendix A).
        let (index, _) = read_integer(&block[i..], 7)?;
        return match index {
            8 => Ok(200),
            9 => Ok(204),
            10 => Ok(206),
            11 => Ok(304),
            12 => Ok(400),
            13 => Ok(404),
            14 => Ok(500),
            0 => Err("HPACK: an indexed field with index 0".into()),
            1..=61 => Err(not_status(format!("static table entry {index}"))),
            _ => Err(format!(
                "HPACK: index {index} refers to a dynamic table that is empty on a new connection"
            )),
        };
    }
    // A literal: with incremental indexing (01), without (0000) or never indexed (0001).
    let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
    let (index, n) = read_integer(&block[i..], prefix)?;
    i += n;
    match index {
        0 => {
            let (name, n) = read_string(&block[i..])?;
            i += n;
            if name != b":status" {
                return Err(not_status(format!("{:?}", String::from_utf8_lossy(&name))));
            }
        }
        8..=14 => {}
        index => return Err(not_status(format!("table entry {index}"))),
    }
    let (value, _) = read_string(&block[i..])?;
    match value.as_slice() {
        digits @ [_, _, _] if digits.iter().all(u8::is_ascii_digit) => {
            Ok(digits.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
        }
        _ => Err(format!(
            "HTTP/2: :status {:?} is not a three-digit status",
            String::from_utf8_lossy(&value)
        )),
    }
}

#[cfg(test)]
mod tests;
