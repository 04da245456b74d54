//! HTTP/2 frames as bytes (RFC 9113 §4), one way for everything that speaks HTTP/2: the
//! protocol probe of a `grpc_pass grpc://` backend and health requests to a plaintext `http2`
//! listen. A frame is a 9-byte head (length, type, flags, stream) and its payload; the callers
//! say what the frames mean.

/// What a client sends before any frame.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The length of a frame head.
pub const HEAD_LEN: usize = 9;

/// The largest payload a peer may send before it learns otherwise (`SETTINGS_MAX_FRAME_SIZE`'s
/// initial value): neither side here raises it.
pub const MAX_PAYLOAD: usize = 16_384;

/// Frame types.
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// `SETTINGS_ENABLE_PUSH`.
pub const ENABLE_PUSH: u16 = 0x2;

/// A frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, the reserved bit cleared.
    pub stream: u32,
}

impl Head {
    /// The head at the start of `bytes`; `None` until 9 bytes are there.
    pub fn read(bytes: &[u8]) -> Option<Head> {
        let h = bytes.get(..HEAD_LEN)?;
        Some(Head {
            len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]),
        })
    }
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(HEAD_LEN + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with these identifier and value pairs.
pub fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = (pairs.iter())
        .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

/// The first complete frame in `bytes`: its head and payload, or `None` until all of it is
/// there.
pub fn complete(bytes: &[u8]) -> Option<(Head, &[u8])> {
    let head = Head::read(bytes)?;
    let payload = bytes.get(HEAD_LEN..HEAD_LEN + head.len)?;
    Some((head, payload))
}

/// A frame's error code (RST_STREAM, GOAWAY) as RFC 9113 §7 names it.
pub fn error_name(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    match usize::try_from(code).ok().and_then(|c| NAMES.get(c)) {
        Some(name) => (*name).to_string(),
        None => format!("error code {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_their_head() {
        let f = frame(HEADERS, END_HEADERS | END_STREAM, 1, b"abc");
        assert_eq!(f[..HEAD_LEN], [0, 0, 3, 1, 5, 0, 0, 0, 1]);
        let (head, payload) = complete(&f).unwrap();
        assert_eq!((head.len, head.kind, head.flags, head.stream), (3, 1, 5, 1));
        assert_eq!(payload, b"abc");
        assert_eq!(complete(&f[..11]), None);
        assert_eq!(Head::read(&f[..8]), None);
        assert_eq!(
            settings(&[(ENABLE_PUSH, 0)]),
            [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]
        );
        assert_eq!(error_name(7), "REFUSED_STREAM");
        assert_eq!(error_name(99), "error code 99");
    }
}
