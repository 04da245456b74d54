//! Health verification through nginx, after a proven reload.
//!
//! A reload can be perfect and the site still broken: the backend the new config names answers
//! connects but not requests (502), or is down and failover hides it from clients. So requests
//! go through nginx itself, on a fresh connection each (so new workers answer), over a short
//! window that ends as soon as the evidence is enough; and the error log lines written meanwhile
//! are read, because an upstream error there fails verification even when the client saw 200.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

mod affected;
mod h2c;
pub(crate) mod hosts;
pub mod samples;
mod select;
mod tls;

pub use affected::{affected, affected_by};
pub use select::{
    carried_checks, focused_checks, over_the_bound, Covered, Plan, Unchecked, MAX_CHECKS,
};

/// One request to make through nginx. Its identity (what a baseline run and an after run are
/// matched on) is the server, URL, connect address and Host; the rest says how to send it and
/// how to read the answer.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The server this request stands for (`b.example`); empty for a `--health` URL.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// What it checks: `location /api/`, `location @app`; empty for a `--health` URL.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub what: String,
    /// Where that is written, `sites.conf:12`; empty for a `--health` URL.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub at: String,
    /// As shown to the operator; never holds credentials.
    pub url: String,
    /// Where to connect (nginx's listen address); unused when `unix` is set.
    pub connect: SocketAddr,
    /// A `listen unix:` server: the request goes over this socket instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix: Option<PathBuf>,
    /// Where the connection really goes when not to `connect`: the shadow nginx's stand-in
    /// for that listen. Everything sent (Host with `connect`'s port, SNI, the PROXY header's
    /// destination) stays what a request to `connect` carries, so `$http_host` and the maps
    /// keyed on it see what production sees; only the TCP destination differs.
    #[serde(skip)]
    pub dial: Option<SocketAddr>,
    /// The Host header value (also the TLS SNI), without a port.
    pub host: String,
    /// Path and query.
    pub path: String,
    pub tls: bool,
    /// Send a PROXY protocol v1 header first (`listen ... proxy_protocol`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// Speak HTTP/2 with prior knowledge (a plaintext `listen ... http2`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub http2: bool,
    /// A `--health` URL's: the one `*_pass` the derived checks of its listen and Host name,
    /// when they name one, so a pool there is asked again for it as for theirs
    /// (`health::samples`); nothing else reads it.
    #[serde(skip)]
    pub samples_through: Option<String>,
    /// A TLS listen with `http2`: beside the check's HTTP/1.1 request, one over HTTP/2
    /// (ALPN `h2`), as every browser speaks there (see `verify::H2`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub h2: bool,
    /// The location passes to a gRPC server (`grpc_pass`): the request is a gRPC call (POST,
    /// `Content-Type: application/grpc`, an empty message) to a method nobody serves, which a
    /// gRPC server answers with a status of its own (UNIMPLEMENTED) where it resets a plain
    /// GET, and nginx passes that answer on. A server that answers is verified; what nginx
    /// cannot pass on (a reset, headers too big for its buffer) is the usual 502.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub grpc: bool,
    /// What nginx answers by itself at this location, without reaching an upstream.
    #[serde(skip_serializing_if = "Gate::is_open")]
    pub gate: Gate,
    /// The upstream the location passes to, as its `*_pass` names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Headers this request adds, to take a branch a `map` or `if` on a cookie or header
    /// gives another backend (`Cookie: canary=1`); one the request sends anyway (User-Agent)
    /// is replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// `user:pass` from the URL, sent as Basic auth.
    #[serde(skip)]
    pub auth: Option<Secret>,
    /// The loopback address to connect from, when the branch checked depends on it (a
    /// `split_clients` on `$remote_addr`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<std::net::IpAddr>,
    /// Another server answered this request before the change (its server, Host or listen is
    /// new): the running configuration's answer is no baseline for it.
    #[serde(skip)]
    pub fresh: bool,
    /// Whether the running configuration expects a PROXY protocol header on this address,
    /// when the change turns that on or off (see [`Check::to_running`]).
    #[serde(skip)]
    pub running_proxy_protocol: Option<bool>,
    /// The `*_read_timeout` written for the location checked (see
    /// [`crate::conf::servers::Location::read_timeout`]).
    #[serde(skip)]
    pub read_timeout: Option<std::time::Duration>,
    /// A path made up to reach a location the change adds (`/app/safe-reload-check`): what
    /// another location answered it before is no baseline for the status it gets now; a
    /// failure (502, 504, no answer) is still compared.
    #[serde(skip)]
    pub made_up_in_new: bool,
    /// The location checked is one the change adds, or passes elsewhere than last-good's did
    /// (`/health` moved to another app): what answered its request before is no baseline for
    /// how its page looks (an empty 200 of the new backend's own).
    #[serde(skip)]
    pub new_backend: bool,
    /// The location checked, as `location_key` writes it, and the listen it is asked on, as
    /// `ServerId` writes it (both empty for a `--health` URL).
    #[serde(skip)]
    pub location: String,
    #[serde(skip)]
    pub listen: String,
    /// Each request from a loopback address of its own (see
    /// [`crate::conf::servers::Location::spread_sources`]), unless `source` names one.
    #[serde(skip)]
    pub spread_sources: bool,
}

impl PartialEq for Check {
    fn eq(&self, other: &Check) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for Check {}

impl std::hash::Hash for Check {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl Check {
    /// A plain request: no server, location, gate or credentials.
    pub fn plain(url: String, connect: SocketAddr, host: String, path: String, tls: bool) -> Check {
        Check {
            server: String::new(),
            what: String::new(),
            at: String::new(),
            url,
            connect,
            unix: None,
            dial: None,
            host,
            path,
            tls,
            proxy_protocol: false,
            http2: false,
            h2: false,
            samples_through: None,
            grpc: false,
            gate: Gate::default(),
            upstream: None,
            headers: Vec::new(),
            auth: None,
            source: None,
            fresh: false,
            running_proxy_protocol: None,
            read_timeout: None,
            made_up_in_new: false,
            new_backend: false,
            location: String::new(),
            listen: String::new(),
            spread_sources: false,
        }
    }

    fn identity(&self) -> (&str, &str, SocketAddr, Option<&Path>, &str) {
        let unix = self.unix.as_deref();
        (&self.server, &self.url, self.connect, unix, &self.host)
    }

    /// This request as the running configuration is asked it (the baseline, the running
    /// nginx beside the shadow, the rollback's verification): with a PROXY protocol header
    /// only when its address expects one. The load balancer in front sends it as nginx asks,
    /// so a change that turns it on or off is spoken to in its own way on each side.
    /// Whether the request is a WebSocket handshake (a WebSocket location's, see
    /// `select`): its clients' connections upgrade only on a `101 Switching Protocols`.
    pub fn handshakes(&self) -> bool {
        (self.headers.iter())
            .any(|(n, v)| n.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"))
    }

    pub fn to_running(&self) -> Check {
        Check {
            proxy_protocol: self.running_proxy_protocol.unwrap_or(self.proxy_protocol),
            ..self.clone()
        }
    }

    /// Where the request goes, as shown: `127.0.0.1:80`, `unix:/run/site.sock`.
    pub fn via(&self) -> String {
        match &self.unix {
            Some(path) => format!("unix:{}", path.display()),
            None => self.dial.unwrap_or(self.connect).to_string(),
        }
    }
}

/// What nginx may answer by itself at a location: a status that says nothing about the
/// backend behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Gate {
    /// `auth_basic`, `auth_request` or `deny` apply: 401 and 403 come from nginx.
    pub auth: bool,
    /// The codes of `return` directives in the location (444: nginx closes the connection).
    pub returns: Vec<u16>,
    /// Where `ssl_verify_client on` is written (`snippets/ssl.conf:4`) when it asks every
    /// client of the server for a certificate: over TLS, nginx answers a check with 400.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
}

impl Gate {
    pub fn is_open(&self) -> bool {
        !self.auth && self.returns.is_empty()
    }

    /// Where `ssl_verify_client on` asked `r`'s check for the certificate it lacked, when
    /// nginx's answer is the one that gives (400; 495 or 496 from an `error_page`).
    pub fn wants_certificate(r: &CheckResult) -> Option<&str> {
        let asked = r.check.tls && matches!(r.status, Some(400 | 495 | 496));
        (r.check.gate.client_certificate.as_deref()).filter(|_| asked)
    }
}

/// A credential: sent, never shown, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `http://user:pass@host/x` as `http://user:***@host/x`: what may be shown or stored of a URL.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// A `--health-header 'Name: value'`.
pub fn parse_header(text: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::Usage(format!("--health-header {text:?}: {why}"));
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| bad("expected 'Name: value'"))?;
    let name = name.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(bad("the name is not a valid header name"));
    }
    let value = value.trim();
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad("the value holds a line break"));
    }
    // Each check's Host names the server it is for (or is the --health URL's host): one Host
    // for every check would send them all to one server, and a second Host field is nginx's
    // own 400. The framing fields are the request's own.
    if name.eq_ignore_ascii_case("host") {
        return Err(bad(
            "each check sends the Host of the server it checks (a --health URL's host is its \
             Host); to send that Host to another address, use --health http://HOST/ with \
             --resolve HOST:PORT:ADDR",
        ));
    }
    let framing = [
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
    ];
    if framing.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        return Err(bad("safe-reload sets this field itself"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Parse a `--health` URL. `resolve` entries are curl-style `HOST:PORT:ADDR`: the URL's host
/// stays the Host header and SNI while the connection goes to ADDR.
pub fn parse_url(url: &str, resolve: &[String]) -> Result<Check> {
    let bad = |why: &str| Error::Usage(format!("--health {}: {why}", redact(url)));
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(bad("the URL must start with http:// or https://"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (auth, authority) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decoded = format!("{}:{}", percent_decode(user), percent_decode(pass));
            (Some(Secret(decoded)), host)
        }
        None => (None, authority),
    };
    let (host, port) = split_host_port(authority).ok_or_else(|| bad("no valid host"))?;
    let port = port.unwrap_or(if tls { 443 } else { 80 });
    let path = match tail.split('#').next().unwrap_or("") {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let connect = match resolve_entry(resolve, &host, port)? {
        Some(addr) => addr,
        None => match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    bad(&format!(
                        "cannot resolve {host}; pass --resolve {host}:{port}:ADDR"
                    ))
                })?,
        },
    };
    // The Host header keeps an IPv6 literal's brackets (RFC 7230 5.4, what curl sends and the
    // derived checks use): nginx answers `Host: ::1:8080` 400 before it chooses a server.
    let host = match host.parse::<std::net::Ipv6Addr>().is_ok() {
        true => format!("[{host}]"),
        false => host,
    };
    Ok(Check {
        auth,
        ..Check::plain(redact(url), connect, host, path, tls)
    })
}

/// `%40` as `@`: user information may hold any byte percent-encoded.
fn percent_decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `host[:port]` or `[v6][:port]`; the host without brackets.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse().ok()?)),
        None => (authority, None),
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// One `--resolve HOST:PORT:ADDR` entry (curl's form) read and checked: a host, a port of
/// 1-65535 and an IP address (IPv6 bare or in brackets). Every entry is checked when the
/// settings are read, whether or not a `--health` URL uses it, so a typo fails before
/// anything changes instead of leaving a health check to the system resolver.
pub fn parse_resolve(entry: &str) -> Result<(String, u16, IpAddr)> {
    let bad = |why: String| Error::Usage(format!("--resolve \"{entry}\": {why}"));
    let mut parts = entry.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected HOST:PORT:ADDR, as curl --resolve".into()));
    };
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b"/@[]".contains(&b))
    {
        return Err(bad(format!(
            "\"{host}\" is not a host name (expected HOST:PORT:ADDR)"
        )));
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => {
            return Err(bad(format!(
                "port \"{port}\" is not a number from 1 to 65535"
            )))
        }
    };
    let bracketed = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']'));
    let ip: IpAddr = match bracketed {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().map(IpAddr::V6).ok(),
        None => addr.parse().ok(),
    }
    .ok_or_else(|| bad(format!("\"{addr}\" is not an IP address")))?;
    Ok((host.to_ascii_lowercase(), port, ip))
}

fn resolve_entry(resolve: &[String], host: &str, port: u16) -> Result<Option<SocketAddr>> {
    for entry in resolve {
        let (h, p, ip) = parse_resolve(entry)?;
        if h.eq_ignore_ascii_case(host) && p == port {
            return Ok(Some(SocketAddr::new(ip, port)));
        }
    }
    Ok(None)
}

mod judge;
pub mod recent;
mod verify;
pub use judge::{erring_since, is_failure, judge, worse_than, Answer};
pub use verify::{
    baseline, expect_down, is_expected, mirror_mark, not_listening, request, request_from, verify,
    verify_against, wait_longer, CheckResult, HealthOptions, HealthReport, Known, NothingKnown,
    DEFAULT_REQUEST_TIMEOUT,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_entries_are_checked_each_with_its_value_quoted() {
        assert_eq!(
            parse_resolve("App.Test:8443:[::1]").unwrap(),
            ("app.test".into(), 8443, "::1".parse().unwrap())
        );
        assert_eq!(
            parse_resolve("a.test:80:127.0.0.2").unwrap().2,
            "127.0.0.2".parse::<IpAddr>().unwrap()
        );
        for (entry, why) in [
            ("a.test:80", "expected HOST:PORT:ADDR"),
            ("a.test", "expected HOST:PORT:ADDR"),
            (":80:127.0.0.1", "is not a host name"),
            ("a.test:0:127.0.0.1", "port \"0\""),
            ("a.test:65536:127.0.0.1", "port \"65536\""),
            ("a.test:+80:127.0.0.1", "port \"+80\""),
            ("a.test:http:127.0.0.1", "port \"http\""),
            ("a.test:80:localhost", "\"localhost\" is not an IP address"),
            ("a.test:80:127.0.0.1:81", "is not an IP address"),
            ("a.test:80:[127.0.0.1]", "is not an IP address"),
            ("a.test:80:", "\"\" is not an IP address"),
        ] {
            let err = parse_resolve(entry).unwrap_err().to_string();
            assert!(
                err.contains(&format!("--resolve \"{entry}\"")),
                "{entry}: {err}"
            );
            assert!(err.contains(why), "{entry}: {err}");
        }
    }

    #[test]
    fn urls_with_resolve_entries_ports_and_ipv6() {
        let c = parse_url(
            "https://App.Test:8443/a?b",
            &["app.test:8443:127.0.0.9".into()],
        )
        .unwrap();
        assert_eq!(c.connect, "127.0.0.9:8443".parse().unwrap());
        assert_eq!(
            (c.host.as_str(), c.path.as_str(), c.tls),
            ("app.test", "/a?b", true)
        );
        let c = parse_url("http://[::1]:81", &[]).unwrap();
        assert_eq!(
            (c.connect, c.path.as_str(), c.host.as_str()),
            ("[::1]:81".parse().unwrap(), "/", "[::1]")
        );
        let c = parse_url("http://127.0.0.2?q", &[]).unwrap();
        assert_eq!((c.connect.port(), c.path.as_str()), (80, "/?q"));
        assert!(parse_url("ftp://x/", &[]).is_err());
        let c = parse_url("http://us%40r:p%3Ass@127.0.0.1/x", &[]).unwrap();
        assert_eq!(c.auth.as_ref().map(Secret::expose), Some("us@r:p:ss"));
        assert_eq!(c.url, "http://us%40r:***@127.0.0.1/x");
        assert!(!format!("{c:?}").contains("p%3Ass"));
        assert_eq!(
            parse_header("X-Token:  abc ").unwrap(),
            ("X-Token".to_string(), "abc".to_string())
        );
        assert!(parse_header("Bad Name: x").is_err());
        assert!(parse_header("NoColon").is_err());
        let host = parse_header("host: a.test").unwrap_err().to_string();
        assert!(host.contains("--resolve"), "{host}");
        assert!(parse_header("Content-Length: 3").is_err());
        assert!(parse_url("http://x:99999/", &[]).is_err());
        assert!(parse_url("http://x/", &["bad".into()]).is_err());
    }
}
