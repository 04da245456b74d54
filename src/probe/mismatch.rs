//! What a failed protocol probe means, in the operator's words: which protocol the backend
//! speaks instead and the directive that would match it, in one sentence ("127.0.0.1:9000
//! speaks HTTP, not FastCGI: did you mean proxy_pass http://127.0.0.1:9000?"), a backend that
//! accepts and closes, one that stays silent; and which of these only warn.

use std::time::Duration;

use super::handshake::Kind;
use super::{AddrResult, Hint, ProbeResult, Status};

/// Statuses that warn instead of refusing. A backend that accepted and is silent may be slow
/// and healthy (nginx waits its read timeout, 60 s by default, for the answer); a TLS alert
/// answers our ClientHello, not OpenSSL's. The verification after the reload still sees what
/// nginx makes of them.
pub fn is_soft(status: Status) -> bool {
    matches!(status, Status::NoReply | Status::TlsAlert)
}

/// Addresses whose every probe passed while some other address of the target failed: a host
/// name with some addresses up. One address that passes one protocol and fails another is not
/// among them.
pub fn answering_addresses(r: &ProbeResult) -> Vec<&str> {
    let failed = |addr: &str| {
        r.addresses
            .iter()
            .any(|a| a.address == addr && a.status.is_failure())
    };
    let mut out: Vec<&str> = Vec::new();
    for a in r.addresses.iter().filter(|a| a.status == Status::Ok) {
        if !failed(&a.address) && !out.contains(&a.address.as_str()) {
            out.push(&a.address);
        }
    }
    out
}

/// Hints for every address whose protocol probe failed. `fails_over` names the live members
/// of the target's pool when nginx passes requests on to them (see `policy::FailsOver`).
pub fn hints(r: &ProbeResult, timeout: Duration, fails_over: Option<&[String]>) -> Vec<Hint> {
    let target = r.target.to_string();
    r.addresses
        .iter()
        .filter_map(|a| match fails_over {
            Some(live) => passed_on(a, &target, timeout, live),
            None => hint(a, &target, timeout),
        })
        .collect()
}

/// A member that accepts and closes while siblings answer: nginx reads no response header,
/// which `proxy_next_upstream error` (the default) passes on, so the hint says where the
/// request goes, not "502". Other failures keep their hint: a reply in another protocol is
/// `invalid_header`, which the default does not pass on.
fn passed_on(a: &AddrResult, target: &str, timeout: Duration, live: &[String]) -> Option<Hint> {
    if a.status != Status::Closed {
        return hint(a, target, timeout);
    }
    let expected = a.protocol?;
    let addr = &a.address;
    Some(
        Hint::new(format!(
            "{addr} accepted the connection and closed it without answering the {expected} \
             probe: nginx logs \"upstream prematurely closed connection\" and fails over to \
             {} (a POST it has already sent is answered 502 unless *_next_upstream has \
             non_idempotent)",
            live.join(", ")
        ))
        .with_suggestion(format!(
            "check that {target} is the {expected} backend the config means; its log says why \
             it closes"
        )),
    )
}

fn hint(a: &AddrResult, target: &str, timeout: Duration) -> Option<Hint> {
    let expected = a.protocol?;
    let addr = &a.address;
    let wait = humantime::format_duration(timeout);
    let hint = match a.status {
        Status::WrongProtocol => match speaks(a) {
            Some(other) => {
                let heard = a.reply.as_deref().map(|r| format!("it answered {r}; ")).unwrap_or_default();
                Hint::new(format!(
                    "{addr} speaks {}, not {}: {}",
                    spoken(other, expected),
                    spoken(expected, other),
                    did_you_mean(expected, other, target)
                ))
                .with_suggestion(format!(
                    "{heard}nginx answers 502 to every request it passes there"
                ))
            }
            None => Hint::new(format!(
                "{addr} answered the {} probe with bytes {} does not send: {}",
                expected,
                expected,
                a.reply.as_deref().unwrap_or("?")
            ))
            .with_suggestion(format!("check that {target} is the {expected} backend the config means")),
        },
        Status::Closed => Hint::new(format!(
            "{addr} accepted the connection and closed it without answering the {expected} \
             probe: nginx answers 502 (upstream prematurely closed connection)"
        ))
        .with_suggestion(format!(
            "check that {target} is the {expected} backend the config means; its log says why \
             it closes"
        )),
        Status::NoReply => Hint::new(format!(
            "{addr} accepted the connection but sent no reply to the {expected} probe within \
             {wait}: it is slow, or speaks another protocol and waits for more; nginx waits its \
             read timeout (60s by default), then answers 504"
        )),
        Status::TlsAlert => Hint::new(format!(
            "{addr} speaks TLS but refused our ClientHello ({}): if nginx's handshake fails the \
             same way it answers 502",
            a.reply.as_deref().unwrap_or("alert")
        ))
        .with_suggestion("check the backend's TLS versions, ciphers and certificates for this name (proxy_ssl_server_name, proxy_ssl_name)"),
        _ => return None,
    };
    Some(hint)
}

/// The protocol the backend answered in: as the probe heard it, or an HTTP server's answer
/// without a status line (Python's `http.server` and others answer a request line they cannot
/// read in HTTP/0.9 style: an HTML error page and nothing before it).
fn speaks(a: &AddrResult) -> Option<Kind> {
    if a.speaks.is_some() {
        return a.speaks;
    }
    let reply = a.reply.as_deref()?.trim_start_matches('"').trim_start();
    let html = ["<!doctype html", "<html", "<head", "<body"]
        .iter()
        .any(|tag| {
            reply
                .get(..tag.len())
                .is_some_and(|r| r.eq_ignore_ascii_case(tag))
        });
    (html && a.protocol != Some(Kind::Http)).then_some(Kind::Http)
}

/// A protocol's name in a hint; HTTP is `HTTP/1` beside HTTP/2, so that gRPC's mismatch reads
/// as one.
fn spoken(k: Kind, other: Kind) -> &'static str {
    match (k, other) {
        (Kind::Http, Kind::Http2) => "HTTP/1",
        (k, _) => k.label(),
    }
}

/// The directive that speaks what the backend speaks.
fn did_you_mean(expected: Kind, speaks: Kind, target: &str) -> String {
    let (directive, note) = match (speaks, expected) {
        (Kind::Http, Kind::Tls) => (
            format!("proxy_pass http://{target}"),
            " (the backend has no TLS)",
        ),
        (Kind::Http, Kind::Uwsgi) => (
            format!("proxy_pass http://{target}"),
            ", or start uWSGI with --socket instead of --http-socket",
        ),
        (Kind::Http, _) => (format!("proxy_pass http://{target}"), ""),
        (Kind::Tls, Kind::Http2) => (format!("grpc_pass grpcs://{target}"), ""),
        (Kind::Tls, _) => (format!("proxy_pass https://{target}"), ""),
        (Kind::Http2, _) => (format!("grpc_pass grpc://{target}"), ""),
        (Kind::FastCgi, _) => (format!("fastcgi_pass {target}"), ""),
        (Kind::Uwsgi, _) => (format!("uwsgi_pass {target}"), ""),
        (Kind::Memcached, _) => (format!("memcached_pass {target}"), ""),
    };
    format!("did you mean {directive}{note}?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_name_the_matching_directive() {
        assert_eq!(
            did_you_mean(Kind::FastCgi, Kind::Http, "127.0.0.1:9000"),
            "did you mean proxy_pass http://127.0.0.1:9000?"
        );
        assert_eq!(
            did_you_mean(Kind::Http, Kind::Tls, "127.0.0.1:8443"),
            "did you mean proxy_pass https://127.0.0.1:8443?"
        );
        assert_eq!(
            did_you_mean(Kind::Http, Kind::FastCgi, "unix:/run/php.sock"),
            "did you mean fastcgi_pass unix:/run/php.sock?"
        );
        assert_eq!(
            did_you_mean(Kind::Tls, Kind::Http, "127.0.0.1:8000"),
            "did you mean proxy_pass http://127.0.0.1:8000 (the backend has no TLS)?"
        );
        assert!(did_you_mean(Kind::Uwsgi, Kind::Http, "127.0.0.1:3031").contains("--socket"));
        assert!(is_soft(Status::NoReply) && !is_soft(Status::Closed));
    }

    fn wrong(protocol: Kind, speaks: Option<Kind>, reply: &str) -> String {
        let a = AddrResult {
            address: "127.0.0.1:9000".into(),
            status: Status::WrongProtocol,
            errno: None,
            elapsed: Duration::ZERO,
            protocol: Some(protocol),
            reply: Some(reply.into()),
            speaks,
        };
        hint(&a, "127.0.0.1:9000", Duration::from_secs(1))
            .expect("a hint")
            .message
    }

    #[test]
    fn every_mismatch_says_what_the_port_speaks_and_the_directive_it_meant() {
        let http = Some(Kind::Http);
        assert_eq!(
            wrong(Kind::FastCgi, http, "HTTP/1.1 400 Bad Request"),
            "127.0.0.1:9000 speaks HTTP, not FastCGI: did you mean proxy_pass http://127.0.0.1:9000?"
        );
        assert_eq!(
            wrong(Kind::Http, Some(Kind::Tls), "ServerHello"),
            "127.0.0.1:9000 speaks TLS, not HTTP: did you mean proxy_pass https://127.0.0.1:9000?"
        );
        assert_eq!(
            wrong(Kind::Tls, http, "HTTP/1.1 400"),
            "127.0.0.1:9000 speaks HTTP, not TLS: did you mean proxy_pass http://127.0.0.1:9000 \
             (the backend has no TLS)?"
        );
        assert_eq!(
            wrong(Kind::Uwsgi, http, "HTTP/1.1 400"),
            "127.0.0.1:9000 speaks HTTP, not uwsgi: did you mean proxy_pass http://127.0.0.1:9000, \
             or start uWSGI with --socket instead of --http-socket?"
        );
        assert_eq!(
            wrong(Kind::Http2, http, "HTTP/1.1 400"),
            "127.0.0.1:9000 speaks HTTP/1, not HTTP/2: did you mean proxy_pass http://127.0.0.1:9000?"
        );
    }

    #[test]
    fn an_html_error_page_without_a_status_line_is_http() {
        assert_eq!(
            wrong(Kind::FastCgi, None, "\"<!DOCTYPE HTML>\\x0a<html lang=...\""),
            "127.0.0.1:9000 speaks HTTP, not FastCGI: did you mean proxy_pass http://127.0.0.1:9000?"
        );
        assert!(
            wrong(Kind::FastCgi, None, "\"\\x00\\x01\"").contains("bytes FastCGI does not send")
        );
    }
}
