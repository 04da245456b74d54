//! Protocol probes as bytes: for each protocol a `*_pass` speaks, the first message a client
//! sends (`hello`) and what the first bytes of the answer mean (`read_reply`). No sockets here:
//! `connect` sends and reads; `verdict` decides what a reply means for the run.
//!
//! A connect probe passes for a backend that accepts and closes, or that speaks another
//! protocol, and nginx then answers 502 to every request. So each target also gets the least
//! exchange of its directive's protocol that proves the backend speaks it, running no
//! application code where the protocol allows:
//!
//! - `proxy_pass http://`: `OPTIONS * HTTP/1.1`, the request about the server rather than a
//!   resource; any status line passes.
//! - `https://`, `grpcs://`, `suwsgi://`: a TLS ClientHello with the SNI nginx sends; the
//!   ServerHello passes (the handshake is not finished: nginx does not verify the certificate
//!   unless told to, and our offer is not OpenSSL's, so only "speaks TLS" is proven).
//! - `fastcgi_pass`: `FCGI_GET_VALUES`, which php-fpm and libfcgi answer without a script.
//! - `uwsgi_pass`: the uwsgi ping (modifier1 100). Debian's uWSGI loads the ping plugin only
//!   when asked and closes the connection on an unknown modifier, exactly like a backend that
//!   accepts and closes; so a close is followed by the least request, `OPTIONS *`.
//! - `grpc_pass grpc://`: the HTTP/2 preface and an empty SETTINGS frame; the server's
//!   SETTINGS passes.
//! - `memcached_pass`: `version`.
//!
//! Every hello that is not HTTP carries a `\r\n\r\n` where its protocol ignores the bytes
//! (FastCGI padding, a uwsgi variable, the TLS session id), so an HTTP server, the most common
//! wrong backend, ends the "request" there and answers `400` instead of waiting in silence.

use std::fmt;

use serde::Serialize;

use super::Status;
use crate::conf::sni::TlsNames;
use crate::conf::targets::Context;
use crate::conf::{Reference, Target, TargetAddr};
use crate::{http2, status_line};

/// A protocol family: what a probe speaks, and what a backend was heard to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Http,
    Tls,
    Http2,
    #[serde(rename = "fastcgi")]
    FastCgi,
    Uwsgi,
    Memcached,
}

impl Kind {
    /// The name the operator reads: `HTTP`, `TLS`, `FastCGI`, ...
    pub fn label(self) -> &'static str {
        match self {
            Kind::Http => "HTTP",
            Kind::Tls => "TLS",
            Kind::Http2 => "HTTP/2",
            Kind::FastCgi => "FastCGI",
            Kind::Uwsgi => "uwsgi",
            Kind::Memcached => "memcached",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One protocol exchange to run after the connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1 `OPTIONS *` with this Host header.
    Http { host: String },
    /// A WebSocket handshake (`GET /` with `Upgrade: websocket`), for a backend only
    /// WebSocket locations pass to: it may answer nothing else. Any status line answers it.
    HttpUpgrade { host: String },
    /// `HEAD /`, after an `OPTIONS *` the server closed on: a strict server or WAF that
    /// drops the request about the server but serves its pages is not a backend that accepts
    /// and closes (nginx's own requests are for pages).
    HttpHead { host: String },
    /// A TLS ClientHello: the SNI nginx would send (none for an IP, or when
    /// `proxy_ssl_server_name` is off) and the ALPN it offers (`h2` for gRPC).
    Tls {
        sni: Option<String>,
        alpn: Option<&'static str>,
    },
    /// The HTTP/2 preface and SETTINGS (`grpc_pass grpc://`).
    Http2,
    /// `FCGI_GET_VALUES`.
    FastCgi,
    /// The uwsgi ping; the host is for the request that follows a close.
    Uwsgi { host: String },
    /// The least uwsgi request, `OPTIONS *`, after a ping the server closed on.
    UwsgiRequest { host: String },
    /// `version`.
    Memcached,
}

/// What the first bytes of a reply say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// The backend answered in the protocol probed; what it said, in a few words.
    Answered(String),
    /// It answered in another protocol.
    Speaks(Kind, String),
    /// A TLS server refused our ClientHello with an alert.
    TlsAlert { fatal: bool, description: u8 },
    /// Closed the connection without a byte.
    Closed,
    /// Bytes no protocol we know sends first; an excerpt.
    Unrecognised(String),
}

impl Reply {
    /// What a final reply means as a probe status (`Incomplete` means the time ran out).
    pub fn status(&self) -> Status {
        match self {
            Reply::Answered(_) => Status::Ok,
            Reply::Speaks(..) | Reply::Unrecognised(_) => Status::WrongProtocol,
            Reply::TlsAlert { .. } => Status::TlsAlert,
            Reply::Closed => Status::Closed,
            Reply::Incomplete => Status::NoReply,
        }
    }

    /// The protocol the backend answered in, when it is not the one probed.
    pub fn speaks(&self) -> Option<Kind> {
        match self {
            Reply::Speaks(k, _) => Some(*k),
            _ => None,
        }
    }

    /// The reply in a few words, for the report.
    pub fn summary(&self) -> Option<String> {
        match self {
            Reply::Answered(t) | Reply::Speaks(_, t) => Some(t.clone()),
            Reply::Unrecognised(t) => Some(format!("\"{t}\"")),
            Reply::TlsAlert { description, .. } => Some(alert_text(*description)),
            Reply::Closed | Reply::Incomplete => None,
        }
    }
}

impl Protocol {
    /// The family this exchange proves.
    pub fn kind(&self) -> Kind {
        match self {
            Protocol::Http { .. } | Protocol::HttpHead { .. } | Protocol::HttpUpgrade { .. } => {
                Kind::Http
            }
            Protocol::Tls { .. } => Kind::Tls,
            Protocol::Http2 => Kind::Http2,
            Protocol::FastCgi => Kind::FastCgi,
            Protocol::Uwsgi { .. } | Protocol::UwsgiRequest { .. } => Kind::Uwsgi,
            Protocol::Memcached => Kind::Memcached,
        }
    }

    /// The exchange to try, on a fresh connection, when the server closed on this one.
    pub fn after_close(&self) -> Option<Protocol> {
        match self {
            Protocol::Uwsgi { host } => Some(Protocol::UwsgiRequest { host: host.clone() }),
            Protocol::Http { host } | Protocol::HttpUpgrade { host } => {
                Some(Protocol::HttpHead { host: host.clone() })
            }
            _ => None,
        }
    }

    /// The exchanges that tell what a server that closed on this one speaks instead, in the
    /// order tried: the protocols a wrong backend most often speaks first.
    pub fn identify_with(&self) -> Vec<Protocol> {
        let host = match self {
            Protocol::Http { host }
            | Protocol::HttpHead { host }
            | Protocol::HttpUpgrade { host }
            | Protocol::Uwsgi { host }
            | Protocol::UwsgiRequest { host } => host.clone(),
            _ => "localhost".to_string(),
        };
        let candidates = [
            Protocol::Http { host: host.clone() },
            Protocol::Tls {
                sni: None,
                alpn: None,
            },
            Protocol::FastCgi,
            Protocol::Http2,
            Protocol::UwsgiRequest { host },
        ];
        let kind = self.kind();
        candidates
            .into_iter()
            .filter(|c| c.kind() != kind)
            .collect()
    }

    /// The bytes to send first.
    pub fn hello(&self) -> Vec<u8> {
        match self {
            Protocol::Http { host } => format!(
                "OPTIONS * HTTP/1.1\r\nHost: {host}\r\nUser-Agent: safe-reload/{} (probe)\r\nConnection: close\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes(),
            Protocol::HttpHead { host } => format!(
                "HEAD / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: safe-reload/{} (probe)\r\nConnection: close\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes(),
            Protocol::HttpUpgrade { host } => format!(
                "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: safe-reload/{} (probe)\r\n\
                 Upgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes(),
            Protocol::Tls { sni, alpn } => client_hello(sni.as_deref(), *alpn),
            Protocol::Http2 => {
                let mut b = http2::PREFACE.to_vec();
                b.extend_from_slice(&http2::settings(&[]));
                b
            }
            Protocol::FastCgi => fastcgi_get_values(),
            Protocol::Uwsgi { .. } => uwsgi_packet(100, &[("SAFE_RELOAD_PROBE", "\r\n\r\n")]),
            Protocol::UwsgiRequest { host } => uwsgi_packet(
                0,
                &[
                    ("REQUEST_METHOD", "OPTIONS"),
                    ("REQUEST_URI", "*"),
                    ("PATH_INFO", "*"),
                    ("QUERY_STRING", ""),
                    ("SERVER_PROTOCOL", "HTTP/1.1"),
                    ("HTTP_HOST", host),
                    ("SERVER_NAME", host),
                    ("HTTP_USER_AGENT", "safe-reload probe"),
                ],
            ),
            Protocol::Memcached => b"version\r\n".to_vec(),
        }
    }

    /// What the bytes read so far say. `Incomplete` until they are enough to tell.
    pub fn read_reply(&self, bytes: &[u8]) -> Reply {
        if bytes.is_empty() {
            return Reply::Incomplete;
        }
        let heard = match recognise(bytes) {
            Heard::More => return Reply::Incomplete,
            Heard::Unknown => return Reply::Unrecognised(excerpt(bytes)),
            Heard::Alert { fatal, description } => {
                return match self.kind() {
                    Kind::Tls => Reply::TlsAlert { fatal, description },
                    _ => Reply::Speaks(Kind::Tls, alert_text(description)),
                }
            }
            Heard::Kind(kind, text) => (kind, text),
        };
        match (self, heard) {
            (
                Protocol::Http { .. } | Protocol::HttpHead { .. } | Protocol::HttpUpgrade { .. },
                (Kind::Http, text),
            ) => http_reply(bytes, text),
            (Protocol::UwsgiRequest { .. }, (Kind::Http, text)) => Reply::Answered(text),
            (p, (kind, text)) if p.kind() == kind => Reply::Answered(text),
            (_, (kind, text)) => Reply::Speaks(kind, text),
        }
    }

    /// The reply once the server closed the connection: nothing more will come.
    pub fn read_closed(&self, bytes: &[u8]) -> Reply {
        if bytes.is_empty() {
            return Reply::Closed;
        }
        match self.read_reply(bytes) {
            Reply::Incomplete => match (self, status_line::read(bytes)) {
                (
                    Protocol::Http { .. }
                    | Protocol::HttpHead { .. }
                    | Protocol::HttpUpgrade { .. },
                    status_line::Read::Line(l),
                ) => Reply::Answered(l.text()),
                _ => Reply::Unrecognised(excerpt(bytes)),
            },
            r => r,
        }
    }
}

/// The exchanges a target gets: one per protocol the directives naming it speak (a backend
/// named by `proxy_pass http://` in one place and `fastcgi_pass` in another gets both, since
/// one of them is wrong). Stream `proxy_pass` (but with `proxy_ssl on`: TLS), `scgi_pass` and upstream `server` lines alone
/// get none: connect only.
pub fn for_target(target: &Target, tls: &TlsNames) -> Vec<Protocol> {
    let mut out: Vec<Protocol> = Vec::new();
    for r in target.references.iter().filter(|r| !r.down) {
        let Some(p) = for_reference(r, &target.address, tls) else {
            continue;
        };
        // One HTTP (or uwsgi) probe per target whatever Host each reference would send.
        if !out
            .iter()
            .any(|o| o.kind() == p.kind() && (o.kind() != Kind::Tls || *o == p))
        {
            out.push(p);
        }
    }
    out
}

/// The exchange for one reference, from its directive and scheme, as nginx speaks to it.
fn for_reference(r: &Reference, address: &TargetAddr, tls: &TlsNames) -> Option<Protocol> {
    // A stream `proxy_pass` speaks TLS with `proxy_ssl on` (over TCP: not to datagrams), and
    // sends no SNI unless `proxy_ssl_server_name on`, which this probe leaves out.
    if r.context == Context::Stream && r.ssl && !r.udp {
        return Some(Protocol::Tls {
            sni: None,
            alpn: None,
        });
    }
    if r.context != Context::Http {
        return None;
    }
    let host = || host_header(r, address);
    let sni = || tls.at(&r.file, r.line).sni(&host());
    let scheme = r.scheme.as_deref();
    match (&*r.directive, scheme) {
        ("proxy_pass", Some("https")) | ("uwsgi_pass", Some("suwsgi")) => Some(Protocol::Tls {
            sni: sni(),
            alpn: None,
        }),
        ("proxy_pass", _) if r.websocket => Some(Protocol::HttpUpgrade { host: host() }),
        ("proxy_pass", _) => Some(Protocol::Http { host: host() }),
        ("grpc_pass", Some("grpcs")) => Some(Protocol::Tls {
            sni: sni(),
            alpn: Some("h2"),
        }),
        ("grpc_pass", _) => Some(Protocol::Http2),
        ("fastcgi_pass", _) => Some(Protocol::FastCgi),
        ("uwsgi_pass", _) => Some(Protocol::Uwsgi { host: host() }),
        ("memcached_pass", _) => Some(Protocol::Memcached),
        _ => None,
    }
}

/// The Host nginx sends by default (`$proxy_host`): the upstream's name, or the address as
/// written with the port left out when it is the scheme's default.
fn host_header(r: &Reference, address: &TargetAddr) -> String {
    if let Some(up) = &r.upstream {
        return up.to_string();
    }
    let text = address.to_string();
    match address {
        TargetAddr::Ip(sa) if sa.port() == 80 => match sa.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        },
        TargetAddr::Host { name, port: 80 } => name.clone(),
        TargetAddr::Unix(_) => "localhost".into(),
        _ => text,
    }
}

/// What nginx's `listen ... ssl` answers to a plain HTTP request: a 400 with this text, so
/// the status line alone would pass for HTTP.
const NGINX_HTTPS_PORT: &[u8] = b"The plain HTTP request was sent to HTTPS port";

/// Longest reply read from a backend: the first bytes tell the protocol.
pub const MAX_REPLY: usize = 4096;

/// An HTTP status line to our HTTP probe: any status passes, except nginx's answer from a TLS
/// port, which needs the body to tell.
fn http_reply(bytes: &[u8], text: String) -> Reply {
    let is_400 = text.split(' ').nth(1) == Some("400");
    if !is_400 {
        return Reply::Answered(text);
    }
    if contains(bytes, NGINX_HTTPS_PORT) {
        return Reply::Speaks(
            Kind::Tls,
            "400 \"The plain HTTP request was sent to HTTPS port\"".into(),
        );
    }
    let Some(head_end) = find(bytes, b"\r\n\r\n") else {
        return Reply::Incomplete;
    };
    let body = bytes.len() - head_end - 4;
    let length = content_length(&bytes[..head_end]).unwrap_or(0);
    if body < length.min(MAX_REPLY / 2) {
        Reply::Incomplete
    } else {
        Reply::Answered(text)
    }
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

enum Heard {
    More,
    Unknown,
    Alert { fatal: bool, description: u8 },
    Kind(Kind, String),
}

/// Which protocol the first bytes of a reply are in, from what each sends first: an HTTP
/// status line, a TLS record (ServerHello or alert), an HTTP/2 frame, a FastCGI record, a
/// uwsgi packet header, a memcached reply line.
fn recognise(b: &[u8]) -> Heard {
    match b[0] {
        b'H' => match status_line::read(b) {
            status_line::Read::Incomplete => Heard::More,
            status_line::Read::Line(l) => Heard::Kind(Kind::Http, l.text()),
            status_line::Read::NotHttp => Heard::Unknown,
        },
        // A TLS record: content type, version 3.x, length.
        0x15 | 0x16 if b.len() >= 2 && b[1] != 3 => Heard::Unknown,
        0x15 => match b.get(5..7) {
            None => Heard::More,
            Some(&[level, description]) => Heard::Alert {
                fatal: level == 2,
                description,
            },
            Some(_) => Heard::Unknown,
        },
        0x16 => match b.get(5) {
            None => Heard::More,
            Some(2) => Heard::Kind(Kind::Tls, "ServerHello".into()),
            Some(_) => Heard::Unknown,
        },
        // An HTTP/2 frame on stream 0: SETTINGS (4) or GOAWAY (7), as a server sends first.
        0 => match http2::Head::read(b) {
            None => Heard::More,
            Some(h) if h.kind == http2::SETTINGS && h.stream == 0 => {
                Heard::Kind(Kind::Http2, "SETTINGS".into())
            }
            Some(h) if h.kind == http2::GOAWAY && h.stream == 0 => {
                Heard::Kind(Kind::Http2, "GOAWAY".into())
            }
            _ => Heard::Unknown,
        },
        // A FastCGI record: version 1, a known type, the reserved byte 0.
        1 => match b.get(..8) {
            None => Heard::More,
            Some(h) if (1..=11).contains(&h[1]) && h[7] == 0 => {
                Heard::Kind(Kind::FastCgi, fastcgi_type(h[1]).into())
            }
            Some(_) => Heard::Unknown,
        },
        // The uwsgi ping's answer: modifier1 100.
        100 if b.len() < 4 => Heard::More,
        100 => Heard::Kind(Kind::Uwsgi, "ping reply".into()),
        b'V' | b'E' | b'S' | b'C' => memcached_line(b),
        _ => Heard::Unknown,
    }
}

fn memcached_line(b: &[u8]) -> Heard {
    const LINES: [&[u8]; 4] = [b"VERSION ", b"ERROR", b"SERVER_ERROR", b"CLIENT_ERROR"];
    let Some(end) = b.iter().position(|&c| c == b'\n') else {
        let prefix = LINES.iter().any(|l| l.starts_with(b) || b.starts_with(l));
        return if prefix && b.len() < 256 {
            Heard::More
        } else {
            Heard::Unknown
        };
    };
    let line = &b[..end];
    if LINES.iter().any(|l| line.starts_with(l)) {
        let text = String::from_utf8_lossy(line).trim().to_string();
        Heard::Kind(Kind::Memcached, text)
    } else {
        Heard::Unknown
    }
}

fn fastcgi_type(t: u8) -> &'static str {
    match t {
        3 => "FCGI_END_REQUEST",
        6 => "FCGI_STDOUT",
        7 => "FCGI_STDERR",
        10 => "FCGI_GET_VALUES_RESULT",
        11 => "FCGI_UNKNOWN_TYPE",
        _ => "a FastCGI record",
    }
}

/// The alert's name, for the few a server sends to a ClientHello.
pub fn alert_text(description: u8) -> String {
    let name = match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        47 => "illegal_parameter",
        50 => "decode_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        109 => "missing_extension",
        112 => "unrecognized_name",
        120 => "no_application_protocol",
        _ => "",
    };
    if name.is_empty() {
        format!("alert {description}")
    } else {
        format!("alert {description} ({name})")
    }
}

/// The first bytes, printable: text as text, the rest as `\xNN`.
fn excerpt(b: &[u8]) -> String {
    let mut out = String::new();
    for &c in b.iter().take(32) {
        match c {
            b' '..=b'~' => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > 32 {
        out.push_str("...");
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// `FCGI_GET_VALUES` for the three standard variables, padded with `\r\n\r\n` (FastCGI
/// receivers skip padding unread).
fn fastcgi_get_values() -> Vec<u8> {
    const PADDING: &[u8] = b"\r\n\r\n";
    let mut content = Vec::new();
    for name in ["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"] {
        // Name and value lengths below 128 take one byte each; the value is empty.
        content.extend_from_slice(&[name.len() as u8, 0]);
        content.extend_from_slice(name.as_bytes());
    }
    let len = content.len() as u16;
    // version 1, type FCGI_GET_VALUES (9), request id 0 (management), length, padding.
    let mut b = vec![1, 9, 0, 0];
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&[PADDING.len() as u8, 0]);
    b.extend_from_slice(&content);
    b.extend_from_slice(PADDING);
    b
}

/// A uwsgi packet: modifier1, the little-endian size of the variables, modifier2 0, then each
/// variable as little-endian length-prefixed key and value.
fn uwsgi_packet(modifier1: u8, vars: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in vars {
        for s in [k, v] {
            body.extend_from_slice(&(s.len() as u16).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
    }
    let mut b = vec![modifier1];
    b.extend_from_slice(&(body.len() as u16).to_le_bytes());
    b.push(0);
    b.extend_from_slice(&body);
    b
}

/// Fixed bytes for the hello's random and session id. The handshake is never finished and no
/// key is derived, so nothing depends on them being secret; the session id, which TLS treats
/// as opaque, ends with `\r\n\r\n` for the HTTP servers that read this as a request.
const CLIENT_RANDOM: &[u8; 32] = b"safe-reload protocol probe hello";
const SESSION_ID: &[u8; 32] = b"safe-reload probe no request\r\n\r\n";

/// An X25519 public key (RFC 7748, section 6.1): any valid point serves, since the server's
/// answer is read only as far as its ServerHello.
const X25519_PUBLIC: [u8; 32] = [
    0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e, 0xf7, 0x5a,
    0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e, 0xaa, 0x9b, 0x4e, 0x6a,
];

/// A ClientHello offering TLS 1.3 and 1.2 with the suites, groups and signature schemes common
/// servers accept, the SNI and ALPN given.
fn client_hello(sni: Option<&str>, alpn: Option<&str>) -> Vec<u8> {
    const SUITES: [u16; 15] = [
        0x1301, 0x1302, 0x1303, // TLS 1.3
        0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, // ECDHE, AEAD
        0xc013, 0xc014, 0x009c, 0x009d, 0x002f, 0x0035, // older TLS 1.2 servers
    ];
    const GROUPS: [u16; 3] = [0x001d, 0x0017, 0x0018];
    const SCHEMES: [u16; 11] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601, 0x0807, 0x0201, 0x0203,
    ];
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let mut list = vec![0];
        list.extend(u16_prefixed(name.as_bytes()));
        extension(&mut ext, 0x0000, &u16_prefixed(&list));
    }
    extension(&mut ext, 0x000a, &u16_prefixed(&be_list(&GROUPS)));
    extension(&mut ext, 0x000b, &[1, 0]);
    extension(&mut ext, 0x000d, &u16_prefixed(&be_list(&SCHEMES)));
    if let Some(proto) = alpn {
        let mut list = vec![proto.len() as u8];
        list.extend_from_slice(proto.as_bytes());
        extension(&mut ext, 0x0010, &u16_prefixed(&list));
    }
    extension(&mut ext, 0x0017, &[]);
    extension(&mut ext, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]);
    extension(&mut ext, 0x002d, &[1, 1]);
    let mut share = vec![0x00, 0x1d, 0x00, 0x20];
    share.extend_from_slice(&X25519_PUBLIC);
    extension(&mut ext, 0x0033, &u16_prefixed(&share));
    extension(&mut ext, 0xff01, &[0]);

    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(CLIENT_RANDOM);
    body.push(SESSION_ID.len() as u8);
    body.extend_from_slice(SESSION_ID);
    body.extend(u16_prefixed(&be_list(&SUITES)));
    body.extend_from_slice(&[1, 0]);
    body.extend(u16_prefixed(&ext));

    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16_prefixed(&handshake));
    record
}

fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend(u16_prefixed(data));
}

fn u16_prefixed(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

fn be_list(items: &[u16]) -> Vec<u8> {
    items.iter().flat_map(|i| i.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> Protocol {
        Protocol::Http {
            host: "127.0.0.1:8000".into(),
        }
    }

    fn tls() -> Protocol {
        Protocol::Tls {
            sni: Some("app.example".into()),
            alpn: None,
        }
    }

    const HTTP_400: &[u8] =
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nBad Request";
    const TLS_ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46];
    const SERVER_HELLO: &[u8] = &[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76, 0x03];
    const H2_SETTINGS: &[u8] = &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    const FCGI_RESULT: &[u8] = &[1, 10, 0, 0, 0, 0, 0, 0];

    /// Where an HTTP server reading the hello as a request sees the end of its head.
    fn head_end(b: &[u8]) -> Option<usize> {
        find(b, b"\r\n\r\n")
    }

    #[test]
    fn http_probe_asks_about_the_server_not_a_resource() {
        let hello = String::from_utf8(http().hello()).expect("text");
        assert!(hello.starts_with("OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"));
        assert!(hello.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn http_probe_takes_any_status_line() {
        let p = http();
        assert_eq!(
            p.read_reply(b"HTTP/1.1 404 Not Found\r\n"),
            Reply::Answered("HTTP/1.1 404 Not Found".into())
        );
        assert_eq!(p.read_reply(b"HTTP/1.1 40"), Reply::Incomplete);
        assert_eq!(
            p.read_reply(HTTP_400),
            Reply::Answered("HTTP/1.1 400 Bad Request".into())
        );
        // A 400 is judged once its body is in: it may be nginx's answer from a TLS port.
        assert_eq!(
            p.read_reply(b"HTTP/1.1 400 Bad Request\r\n"),
            Reply::Incomplete
        );
    }

    #[test]
    fn http_probe_recognises_what_a_wrong_backend_sends() {
        let p = http();
        let nginx_ssl = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 200\r\n\r\n<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>";
        assert!(matches!(
            p.read_reply(nginx_ssl),
            Reply::Speaks(Kind::Tls, _)
        ));
        assert!(matches!(
            p.read_reply(TLS_ALERT),
            Reply::Speaks(Kind::Tls, _)
        ));
        assert!(matches!(
            p.read_reply(SERVER_HELLO),
            Reply::Speaks(Kind::Tls, _)
        ));
        assert!(matches!(
            p.read_reply(H2_SETTINGS),
            Reply::Speaks(Kind::Http2, _)
        ));
        assert!(matches!(
            p.read_reply(FCGI_RESULT),
            Reply::Speaks(Kind::FastCgi, _)
        ));
        assert_eq!(p.read_closed(b""), Reply::Closed);
        assert_eq!(
            p.read_closed(b"\x7fELF"),
            Reply::Unrecognised("\\x7fELF".into())
        );
    }

    #[test]
    fn fastcgi_get_values_is_one_management_record() {
        let b = Protocol::FastCgi.hello();
        assert_eq!(
            &b[..4],
            &[1, 9, 0, 0],
            "version 1, FCGI_GET_VALUES, request 0"
        );
        let len = u16::from_be_bytes([b[4], b[5]]) as usize;
        let pad = b[6] as usize;
        assert_eq!(b.len(), 8 + len + pad);
        assert_eq!(&b[8..8 + 16], b"\x0e\x00FCGI_MAX_CONNS");
        // An HTTP server's head ends in the padding, which FastCGI skips.
        assert_eq!(head_end(&b), Some(8 + len));
    }

    #[test]
    fn fastcgi_replies() {
        let p = Protocol::FastCgi;
        assert_eq!(
            p.read_reply(&[1, 10, 0, 0, 0, 0x2c, 4, 0]),
            Reply::Answered("FCGI_GET_VALUES_RESULT".into())
        );
        assert_eq!(p.read_reply(&[1, 10, 0]), Reply::Incomplete);
        assert!(matches!(
            p.read_reply(HTTP_400),
            Reply::Speaks(Kind::Http, t) if t == "HTTP/1.1 400 Bad Request"
        ));
        assert!(matches!(
            p.read_reply(TLS_ALERT),
            Reply::Speaks(Kind::Tls, _)
        ));
    }

    #[test]
    fn uwsgi_ping_and_its_reply() {
        let p = Protocol::Uwsgi { host: "app".into() };
        let b = p.hello();
        assert_eq!(b[0], 100, "modifier1 100 is the ping");
        assert_eq!(u16::from_le_bytes([b[1], b[2]]) as usize, b.len() - 4);
        assert_eq!(head_end(&b), Some(b.len() - 4));
        assert!(matches!(p.read_reply(&[100, 0, 0, 1]), Reply::Answered(_)));
        assert_eq!(p.read_reply(&[100, 0]), Reply::Incomplete);
        assert!(matches!(
            p.read_reply(HTTP_400),
            Reply::Speaks(Kind::Http, _)
        ));
        assert_eq!(p.read_closed(b""), Reply::Closed);
        assert!(matches!(
            p.after_close(),
            Some(Protocol::UwsgiRequest { .. })
        ));
    }

    #[test]
    fn uwsgi_request_is_answered_in_http() {
        let p = Protocol::UwsgiRequest { host: "app".into() };
        let b = p.hello();
        assert_eq!(b[0], 0, "modifier1 0, what nginx sends");
        assert_eq!(u16::from_le_bytes([b[1], b[2]]) as usize, b.len() - 4);
        assert_eq!(&b[4..6], &14u16.to_le_bytes(), "REQUEST_METHOD");
        assert!(matches!(
            p.read_reply(b"HTTP/1.1 200 OK\r\n"),
            Reply::Answered(_)
        ));
        assert!(p.after_close().is_none());
    }

    #[test]
    fn client_hello_is_well_formed() {
        let b = Protocol::Tls {
            sni: Some("app.example".into()),
            alpn: Some("h2"),
        }
        .hello();
        assert_eq!(&b[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(u16::from_be_bytes([b[3], b[4]]) as usize, b.len() - 5);
        assert_eq!(b[5], 1, "ClientHello");
        let body_len = u32::from_be_bytes([0, b[6], b[7], b[8]]) as usize;
        assert_eq!(body_len, b.len() - 9);
        assert!(contains(&b, b"\x00\x0bapp.example"), "SNI");
        assert!(contains(&b, b"\x02h2"), "ALPN");
        // The first line end an HTTP server sees is the session id's.
        let sid_end = 9 + 2 + 32 + 1 + 32;
        assert_eq!(head_end(&b), Some(sid_end - 4));
        let no_sni = Protocol::Tls {
            sni: None,
            alpn: None,
        }
        .hello();
        assert!(!contains(&no_sni, b"app.example"));
        assert_eq!(
            u16::from_be_bytes([no_sni[3], no_sni[4]]) as usize,
            no_sni.len() - 5
        );
    }

    #[test]
    fn tls_replies() {
        let p = tls();
        assert_eq!(
            p.read_reply(SERVER_HELLO),
            Reply::Answered("ServerHello".into())
        );
        assert_eq!(
            p.read_reply(TLS_ALERT),
            Reply::TlsAlert {
                fatal: true,
                description: 70
            }
        );
        assert_eq!(p.read_reply(&[0x16, 0x03]), Reply::Incomplete);
        assert!(matches!(
            p.read_reply(HTTP_400),
            Reply::Speaks(Kind::Http, _)
        ));
        assert!(matches!(
            p.read_reply(FCGI_RESULT),
            Reply::Speaks(Kind::FastCgi, _)
        ));
        assert_eq!(alert_text(112), "alert 112 (unrecognized_name)");
    }

    #[test]
    fn http2_preface_and_settings() {
        let b = Protocol::Http2.hello();
        assert!(b.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert_eq!(&b[b.len() - 9..], &[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let p = Protocol::Http2;
        assert_eq!(
            p.read_reply(H2_SETTINGS),
            Reply::Answered("SETTINGS".into())
        );
        assert_eq!(p.read_reply(&H2_SETTINGS[..4]), Reply::Incomplete);
        assert!(matches!(
            p.read_reply(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"),
            Reply::Speaks(Kind::Http, _)
        ));
        assert!(matches!(
            p.read_reply(SERVER_HELLO),
            Reply::Speaks(Kind::Tls, _)
        ));
    }

    #[test]
    fn memcached_version() {
        let p = Protocol::Memcached;
        assert_eq!(p.hello(), b"version\r\n");
        assert_eq!(
            p.read_reply(b"VERSION 1.6.18\r\n"),
            Reply::Answered("VERSION 1.6.18".into())
        );
        assert_eq!(p.read_reply(b"VERS"), Reply::Incomplete);
        assert!(matches!(p.read_reply(b"ERROR\r\n"), Reply::Answered(_)));
        assert!(matches!(
            p.read_reply(HTTP_400),
            Reply::Speaks(Kind::Http, _)
        ));
    }
}
