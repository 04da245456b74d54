//! The HTTP/1.x status line (`HTTP/1.1 502 Bad Gateway`), read one way for everything that
//! talks HTTP: the protocol probe of a `proxy_pass http://` backend and health verification
//! through nginx.
//!
//! It reads bytes as they arrive, so a caller can tell "not yet" from "not HTTP" after the
//! first few bytes: a backend that answers in TLS or FastCGI is known for what it is without
//! waiting for the rest.

/// What the first bytes of a response say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Everything so far could still start a status line.
    Incomplete,
    /// A complete status line.
    Line(StatusLine),
    /// Not an HTTP/1.x response.
    NotHttp,
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// `HTTP/1.1`
    pub version: String,
    pub code: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: String,
}

impl StatusLine {
    /// `HTTP/1.1 200 OK`, as the operator would see it.
    pub fn text(&self) -> String {
        if self.reason.is_empty() {
            format!("{} {}", self.version, self.code)
        } else {
            format!("{} {} {}", self.version, self.code, self.reason)
        }
    }
}

/// Longest status line read; a longer first line is not an HTTP response.
const MAX_LINE: usize = 1024;

/// Read the status line at the start of `bytes`: `HTTP/` and a version, a space, a three-digit
/// code, then the reason phrase up to the line end.
pub fn read(bytes: &[u8]) -> Read {
    const PREFIX: &[u8] = b"HTTP/";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Read::NotHttp;
    }
    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
        return if bytes.len() > MAX_LINE {
            Read::NotHttp
        } else {
            Read::Incomplete
        };
    };
    let line = &bytes[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Read::NotHttp;
    };
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default();
    let version_ok = version.len() > PREFIX.len()
        && version[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.');
    match code.parse::<u16>() {
        Ok(c) if version_ok && code.len() == 3 && (100..=999).contains(&c) => {
            Read::Line(StatusLine {
                version: version.to_string(),
                code: c,
                reason: reason.trim().to_string(),
            })
        }
        _ => Read::NotHttp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_lines() {
        let Read::Line(l) = read(b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\n\r\n") else {
            panic!("not read");
        };
        assert_eq!((l.version.as_str(), l.code), ("HTTP/1.1", 502));
        assert_eq!(l.text(), "HTTP/1.1 502 Bad Gateway");
        let Read::Line(l) = read(b"HTTP/1.0 200\n") else {
            panic!("not read");
        };
        assert_eq!((l.code, l.reason.as_str()), (200, ""));
    }

    #[test]
    fn tells_not_yet_from_not_http() {
        assert_eq!(read(b""), Read::Incomplete);
        assert_eq!(read(b"HTT"), Read::Incomplete);
        assert_eq!(read(b"HTTP/1.1 20"), Read::Incomplete);
        // A TLS alert, a FastCGI record, an HTTP/2 SETTINGS frame: known at the first byte.
        assert_eq!(
            read(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]),
            Read::NotHttp
        );
        assert_eq!(read(&[1, 10, 0, 0, 0, 0, 0, 0]), Read::NotHttp);
        assert_eq!(read(&[0, 0, 0, 4, 0, 0, 0, 0, 0]), Read::NotHttp);
        assert_eq!(read(b"HTTP/x.y 200 OK\r\n"), Read::NotHttp);
        assert_eq!(read(b"HTTP/1.1 OK\r\n"), Read::NotHttp);
        assert_eq!(read(&[b'H'; 2000]), Read::NotHttp);
    }
}
