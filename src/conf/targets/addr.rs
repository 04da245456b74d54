//! Address text as nginx's `ngx_parse_url` (src/core/ngx_inet.c) reads it, shared by targets and
//! listens: `unix:` paths, `[IPv6]:port`, `IPv4:port`, `name:port`, and a missing port filled
//! from a default. Kept apart so `*_pass`, upstream `server` and `listen` cannot drift apart in
//! how they read the same text.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// An address read from configuration text, before it becomes a target or a listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Ip(SocketAddr),
    Host { name: String, port: u16 },
    Unix(PathBuf),
}

/// Why an address could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddrError {
    /// Host without a port where no default applies; carries the host as written.
    NoPort(String),
    /// Something nginx would reject: an empty host, a bad port, an unclosed `[`.
    Invalid(String),
}

/// Parse `unix:/path`, `[::1]:80`, `127.0.0.1:80`, `name:80`, or any of them without a port
/// (then `default_port` applies, or it is `NoPort`). `*` as host means every IPv4 address, as
/// in `listen *:80`.
///
/// A `unix:` path is kept whole, colons included: only http `proxy_pass` asks nginx for a URI
/// part (`u->uri_part`), and its caller cuts the path at the first `:` before calling this.
pub(crate) fn parse(text: &str, default_port: Option<u16>) -> Result<Parsed, AddrError> {
    if let Some(path) = strip_prefix_ci(text, "unix:") {
        return unix_path(path, text).map(Parsed::Unix);
    }
    let (host, port) = split_host_port(text)?;
    let port = match port {
        Some(p) => parse_port(p, text)?,
        None => default_port.ok_or_else(|| AddrError::NoPort(host.to_string()))?,
    };
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: IpAddr = v6
            .parse()
            .map_err(|_| AddrError::Invalid(format!("invalid IPv6 address in \"{text}\"")))?;
        return Ok(Parsed::Ip(SocketAddr::new(ip, port)));
    }
    if host == "*" {
        return Ok(Parsed::Ip(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port,
        )));
    }
    if host.is_empty() {
        return Err(AddrError::Invalid(format!("no host in \"{text}\"")));
    }
    if let Some(ip) = inet_addr(host) {
        return Ok(Parsed::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    Ok(Parsed::Host {
        name: host.to_ascii_lowercase(),
        port,
    })
}

/// The socket path after `unix:`, as `ngx_parse_unix_domain_url` takes it: everything, or
/// "no path" when empty. `unix:///run/app.sock` gives nginx the path `//run/app.sock`, the same
/// file to the kernel; it is shown with one leading slash, as the listener's own path reads in
/// `/proc/net/unix`.
fn unix_path(path: &str, text: &str) -> Result<PathBuf, AddrError> {
    if path.is_empty() {
        return Err(AddrError::Invalid(format!(
            "no path in the unix domain socket \"{text}\""
        )));
    }
    let rest = path.trim_start_matches('/');
    let path = if rest.len() < path.len() {
        &path[path.len() - rest.len() - 1..]
    } else {
        path
    };
    Ok(PathBuf::from(path))
}

/// An IPv4 literal as `ngx_inet_addr` reads it: exactly four dot-separated runs of decimal
/// digits, each at most 255, an empty run being 0. A leading zero is still decimal
/// (`127.0.0.010` is 127.0.0.10), unlike `inet_aton` and `getaddrinfo`, which read it as octal:
/// such text must never reach the system resolver. Anything else is a host name.
pub(crate) fn inet_addr(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    let mut octet: u32 = 0;
    for b in text.bytes() {
        match b {
            b'0'..=b'9' => {
                octet = octet * 10 + u32::from(b - b'0');
                if octet > 255 {
                    return None;
                }
            }
            b'.' if n < 3 => {
                octets[n] = octet as u8;
                octet = 0;
                n += 1;
            }
            _ => return None,
        }
    }
    if n != 3 {
        return None;
    }
    octets[3] = octet as u8;
    Some(Ipv4Addr::from(octets))
}

/// Split `host[:port]`, keeping `[...]` together. As `ngx_parse_inet_url`, the port starts after
/// the first `:` (`a:b:80` has the port text `b:80`, which is invalid).
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), AddrError> {
    if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or_else(|| AddrError::Invalid(format!("unclosed \"[\" in \"{text}\"")))?;
        let (host, rest) = text.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(AddrError::Invalid(format!("invalid address \"{text}\""))),
        };
    }
    match text.split_once(':') {
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((text, None)),
    }
}

fn parse_port(port: &str, text: &str) -> Result<u16, AddrError> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(AddrError::Invalid(format!("invalid port in \"{text}\""))),
    }
}

/// `prefix` matched without regard to ASCII case, as nginx matches schemes and `unix:`.
pub(crate) fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Split `scheme://rest` into a lowercased scheme and the rest.
pub(crate) fn split_scheme(text: &str) -> Option<(String, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let ok = !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| (scheme.to_ascii_lowercase(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let ip = |s: &str| Parsed::Ip(s.parse().expect("socket addr"));
        assert_eq!(parse("127.0.0.1:8000", None), Ok(ip("127.0.0.1:8000")));
        assert_eq!(parse("[::1]:8000", None), Ok(ip("[::1]:8000")));
        assert_eq!(parse("[::1]", Some(80)), Ok(ip("[::1]:80")));
        assert_eq!(parse("*:80", None), Ok(ip("0.0.0.0:80")));
        assert_eq!(
            parse("App.Internal", Some(443)),
            Ok(Parsed::Host {
                name: "app.internal".into(),
                port: 443
            })
        );
        // No URI part here: the whole path is the socket (`fastcgi_pass unix:/run/php.sock:9000`).
        assert_eq!(
            parse("unix:/run/a.sock:9000", None),
            Ok(Parsed::Unix("/run/a.sock:9000".into()))
        );
        assert_eq!(
            parse("unix:///run/uwsgi/app.sock", None),
            Ok(Parsed::Unix("/run/uwsgi/app.sock".into()))
        );
        assert!(matches!(parse("unix:", None), Err(AddrError::Invalid(_))));
        assert_eq!(
            parse("backend", None),
            Err(AddrError::NoPort("backend".into()))
        );
        assert!(matches!(parse("a:0", None), Err(AddrError::Invalid(_))));
        assert!(matches!(parse("a:70000", None), Err(AddrError::Invalid(_))));
        assert!(matches!(parse("[::1", None), Err(AddrError::Invalid(_))));
        assert!(matches!(parse("a:b:80", None), Err(AddrError::Invalid(_))));
    }

    #[test]
    fn ipv4_octets_are_decimal_as_ngx_inet_addr_reads_them() {
        let v4 = |s: &str| inet_addr(s).map(|ip| ip.to_string());
        assert_eq!(v4("127.0.0.010").as_deref(), Some("127.0.0.10"));
        assert_eq!(v4("127.000.0.0010").as_deref(), Some("127.0.0.10"));
        assert_eq!(v4("127.0.0.1").as_deref(), Some("127.0.0.1"));
        // An empty run is 0 in ngx_inet_addr.
        assert_eq!(v4("127..0.1").as_deref(), Some("127.0.0.1"));
        for name in [
            "127.1",
            "127.0.0.256",
            "127.0.0.1.",
            "1.2.3.4.5",
            "0x7f.0.0.1",
            "a.b.c.d",
            "",
        ] {
            assert_eq!(v4(name), None, "{name}");
        }
        assert_eq!(
            parse("127.0.0.010:8049", None),
            Ok(Parsed::Ip("127.0.0.10:8049".parse().expect("addr")))
        );
        // Not dotted-quad: a name, resolved as nginx resolves names.
        assert_eq!(
            parse("127.1:80", None),
            Ok(Parsed::Host {
                name: "127.1".into(),
                port: 80
            })
        );
    }
}
