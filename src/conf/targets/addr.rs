//! Address text as nginx's `ngx_parse_url` reads it, shared by targets and listens: `unix:`
//! paths, `[IPv6]:port`, `IPv4:port`, `name:port`, and a missing port filled from a default.
//! Kept apart so `*_pass`, upstream `server` and `listen` cannot drift apart in how they read
//! the same text.

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
pub(crate) fn parse(text: &str, default_port: Option<u16>) -> Result<Parsed, AddrError> {
    if let Some(path) = strip_prefix_ci(text, "unix:") {
        // `unix:/path:/uri`: nginx cuts the path at the first colon.
        let path = path.split(':').next().unwrap_or("");
        if path.is_empty() {
            return Err(AddrError::Invalid(format!("no path in \"{text}\"")));
        }
        return Ok(Parsed::Unix(PathBuf::from(path)));
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
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Parsed::Ip(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    if host.is_empty() {
        return Err(AddrError::Invalid(format!("no host in \"{text}\"")));
    }
    Ok(Parsed::Host {
        name: host.to_ascii_lowercase(),
        port,
    })
}

/// Split `host[:port]`, keeping `[...]` together. A bare number is a port with host `*`, as
/// `listen 8080` means.
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
    match text.rsplit_once(':') {
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
        assert_eq!(
            parse("unix:/run/a.sock:/uri", None),
            Ok(Parsed::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            parse("backend", None),
            Err(AddrError::NoPort("backend".into()))
        );
        assert!(matches!(parse("a:0", None), Err(AddrError::Invalid(_))));
        assert!(matches!(parse("a:70000", None), Err(AddrError::Invalid(_))));
        assert!(matches!(parse("[::1", None), Err(AddrError::Invalid(_))));
    }
}
