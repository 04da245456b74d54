//! How one `*_pass` argument (after variable substitution) reads: which schemes each directive
//! takes, its default port, where the address ends and the URI begins, and whether it names an
//! upstream block. Follows `ngx_http_proxy_pass`, `ngx_http_grpc_pass`, `ngx_http_uwsgi_pass`,
//! the fastcgi/scgi/memcached handlers and `ngx_stream_proxy_pass`.

use super::addr::{self, AddrError, Parsed};
use super::{Context, Name};

/// Every directive that sends requests to a backend.
pub(crate) const PASS_DIRECTIVES: [&str; 6] = [
    "proxy_pass",
    "fastcgi_pass",
    "uwsgi_pass",
    "scgi_pass",
    "grpc_pass",
    "memcached_pass",
];

/// Every scheme some `*_pass` takes.
pub(crate) const SCHEMES: [&str; 6] = ["http", "https", "grpc", "grpcs", "uwsgi", "suwsgi"];

/// The name of a scheme a `*_pass` accepts (lowercased, as `read` gives it).
pub(crate) fn known_scheme(scheme: &str) -> Option<Name> {
    SCHEMES
        .contains(&scheme)
        .then(|| Name::of(scheme))
        .flatten()
}

/// Variables that expand to a URI, so text from them on is not part of the address:
/// `proxy_pass http://127.0.0.1:8000$request_uri;`.
const URI_VARIABLES: [&str; 6] = [
    "$request_uri",
    "$uri",
    "$document_uri",
    "$is_args",
    "$args",
    "$query_string",
];

/// What a `*_pass` argument points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PassTarget {
    /// The name of an upstream block (lowercased for lookup).
    Upstream(String),
    Addr(Parsed),
    /// Still holds variables where the address is.
    Dynamic,
    /// nginx would reject it, or it cannot work.
    Invalid {
        message: String,
        hint: Option<String>,
    },
}

/// One `*_pass` argument read: the scheme written (if any) and what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pass {
    pub scheme: Option<String>,
    pub target: PassTarget,
}

/// How one `*_pass` directive reads its argument, from its handler in nginx's source.
struct Rule {
    /// Schemes stripped before the address, with the port each implies (`None`: a port must be
    /// written, nginx -t says "no port in upstream").
    schemes: &'static [(&'static str, Option<u16>)],
    /// Without one of `schemes` the directive is refused ("invalid URL prefix"); otherwise the
    /// whole text is the address.
    scheme_required: bool,
    /// `u->uri_part`: the address ends where a URI begins (`/`, `?`), and a `unix:` path at its
    /// first `:`. Without it a `/` outside a unix path is "invalid host".
    uri_part: bool,
}

/// `ngx_http_proxy_pass`: `http://` (port 80) or `https://` (443) is required, and it is the
/// only one with `uri_part = 1` (`http://unix:/run/app.sock:/uri`).
const HTTP_PROXY: Rule = Rule {
    schemes: &[("http", Some(80)), ("https", Some(443))],
    scheme_required: true,
    uri_part: true,
};
/// `ngx_http_grpc_pass`: `grpc://` or `grpcs://` may be stripped (`add`); the rest goes to
/// `ngx_parse_url` with no default port, so `grpc_pass grpc://127.0.0.1;` is "no port in
/// upstream".
const GRPC: Rule = Rule {
    schemes: &[("grpc", None), ("grpcs", None)],
    scheme_required: false,
    uri_part: false,
};
/// `ngx_http_uwsgi_pass`: `uwsgi://` or `suwsgi://` may be stripped; no default port.
const UWSGI: Rule = Rule {
    schemes: &[("uwsgi", None), ("suwsgi", None)],
    scheme_required: false,
    uri_part: false,
};
/// `ngx_http_fastcgi_pass`, `ngx_http_scgi_pass`, `ngx_http_memcached_pass` and
/// `ngx_stream_proxy_pass`: the whole text is the address (`u.url = value[1]`), no scheme, no
/// default port, no URI part; so `unix:/run/php.sock:9000` is the socket `/run/php.sock:9000`.
const BARE: Rule = Rule {
    schemes: &[],
    scheme_required: false,
    uri_part: false,
};

fn rule(context: Context, directive: &str) -> &'static Rule {
    match (context, directive) {
        (Context::Http, "proxy_pass") => &HTTP_PROXY,
        (Context::Http, "grpc_pass") => &GRPC,
        (Context::Http, "uwsgi_pass") => &UWSGI,
        _ => &BARE,
    }
}

/// Read `text` as the argument of `directive` in `context`. `is_upstream` says whether a
/// lowercased name is an upstream block of that context. The same rules hold when nginx reads
/// a value built from variables at request time (`ngx_http_proxy_eval`, `ngx_http_grpc_eval`,
/// ...), so a candidate value is read by this too.
pub(crate) fn read(
    context: Context,
    directive: &str,
    text: &str,
    is_upstream: impl Fn(&str) -> bool,
) -> Pass {
    let rule = rule(context, directive);
    let stripped = rule.schemes.iter().find_map(|&(scheme, port)| {
        let rest = addr::strip_prefix_ci(text, scheme)?.strip_prefix("://")?;
        Some((scheme, port, rest))
    });
    let (scheme, default_port, rest) = match stripped {
        Some((scheme, port, rest)) => (Some(scheme.to_string()), port, rest),
        // `$scheme://...` or a whole URL in a variable nobody sets: known only at run time.
        None if rule.scheme_required && text.contains('$') => return dynamic(None),
        None if rule.scheme_required => {
            return invalid(
                None,
                missing_scheme(directive, text),
                missing_scheme_hint(text),
            )
        }
        None => (None, None, text),
    };
    let authority = if rule.uri_part { authority(rest) } else { rest };
    if authority.contains('$') {
        return dynamic(scheme);
    }
    let is_unix = addr::strip_prefix_ci(authority, "unix:").is_some();
    if !is_unix && authority.contains(['/', '?']) {
        // `ngx_parse_inet_url` without `uri_part`: "invalid host".
        let hint = authority.contains("://").then(|| {
            format!("{directive} takes the address itself, e.g. `{directive} 127.0.0.1:9000;` or `{directive} unix:/run/app.sock;`")
        });
        return invalid(
            scheme,
            format!("{directive} \"{text}\": invalid host in upstream \"{authority}\""),
            hint,
        );
    }
    let target = if is_upstream(&authority.to_ascii_lowercase()) {
        PassTarget::Upstream(authority.to_ascii_lowercase())
    } else {
        match addr::parse(authority, default_port) {
            Ok(p) => PassTarget::Addr(p),
            Err(AddrError::NoPort(host)) => PassTarget::Invalid {
                message: format!(
                    "{directive} \"{text}\": no port in upstream \"{host}\", and no upstream block of that name"
                ),
                hint: Some(format!("add the port, e.g. `{host}:9000`, or define `upstream {host} {{ ... }}`")),
            },
            Err(AddrError::Invalid(why)) => PassTarget::Invalid {
                message: format!("{directive} \"{text}\": {why}"),
                hint: None,
            },
        }
    };
    Pass { scheme, target }
}

fn dynamic(scheme: Option<String>) -> Pass {
    Pass {
        scheme,
        target: PassTarget::Dynamic,
    }
}

fn invalid(scheme: Option<String>, message: String, hint: Option<String>) -> Pass {
    Pass {
        scheme,
        target: PassTarget::Invalid { message, hint },
    }
}

fn missing_scheme(directive: &str, text: &str) -> String {
    match addr::split_scheme(text) {
        Some((scheme, _)) => format!("{directive}: invalid URL prefix \"{scheme}://\""),
        None => {
            "proxy_pass without \"http://\" or \"https://\": nginx -t says \"invalid URL prefix\""
                .into()
        }
    }
}

fn missing_scheme_hint(text: &str) -> Option<String> {
    addr::split_scheme(text)
        .is_none()
        .then(|| format!("write `proxy_pass http://{text};`"))
}

/// The address part of an http `proxy_pass` URL: up to the URI (`/`, `?`) or a URI variable;
/// a `unix:` path runs to its first `:` (`ngx_parse_unix_domain_url` with `uri_part`).
fn authority(rest: &str) -> &str {
    if let Some(path) = addr::strip_prefix_ci(rest, "unix:") {
        let end = "unix:".len() + path.find(':').unwrap_or(path.len());
        return &rest[..end];
    }
    let mut end = rest.find(['/', '?']).unwrap_or(rest.len());
    if let Some(dollar) = rest[..end].find('$') {
        if starts_with_uri_variables(&rest[dollar..]) {
            end = dollar;
        }
    }
    &rest[..end]
}

/// Variable names are case-insensitive in nginx (`ngx_http_get_variable_index` lowercases
/// them): `$REQUEST_URI` is `$request_uri`.
fn starts_with_uri_variables(text: &str) -> bool {
    URI_VARIABLES.iter().any(|v| {
        addr::strip_prefix_ci(text, v).is_some_and(|after| {
            !after
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(directive: &str, text: &str) -> Pass {
        read(Context::Http, directive, text, |n| n == "backend")
    }

    #[test]
    fn schemes_ports_and_uris() {
        let ip = |s: &str| PassTarget::Addr(Parsed::Ip(s.parse().expect("addr")));
        assert_eq!(
            http("proxy_pass", "http://127.0.0.1:8000/api/").target,
            ip("127.0.0.1:8000")
        );
        assert_eq!(
            http("proxy_pass", "https://127.0.0.1").target,
            ip("127.0.0.1:443")
        );
        assert_eq!(
            http("proxy_pass", "http://127.0.0.1$request_uri").target,
            ip("127.0.0.1:80")
        );
        assert_eq!(
            http("grpc_pass", "grpcs://[::1]:50051").target,
            ip("[::1]:50051")
        );
        assert_eq!(
            http("grpc_pass", "127.0.0.1:50051").target,
            ip("127.0.0.1:50051")
        );
        assert_eq!(
            http("proxy_pass", "http://BackEnd").target,
            PassTarget::Upstream("backend".into())
        );
        assert_eq!(
            http("proxy_pass", "http://$up:80").target,
            PassTarget::Dynamic
        );
        assert!(matches!(
            http("proxy_pass", "127.0.0.1:80").target,
            PassTarget::Invalid { hint: Some(_), .. }
        ));
        assert!(matches!(
            http("fastcgi_pass", "php").target,
            PassTarget::Invalid { .. }
        ));
        assert_eq!(
            http("proxy_pass", "http://unix:/run/a.sock:/x").target,
            PassTarget::Addr(Parsed::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            http("proxy_pass", "http://127.0.0.1:8000$REQUEST_URI").target,
            ip("127.0.0.1:8000")
        );
    }

    /// Each case as `nginx -t` 1.22 judged it (tests/conf_pass_forms.rs runs the real one).
    #[test]
    fn unix_sockets_as_each_handler_reads_them() {
        let unix = |p: &str| PassTarget::Addr(Parsed::Unix(p.into()));
        for (directive, text, path) in [
            (
                "uwsgi_pass",
                "unix:///run/uwsgi/app.sock",
                "/run/uwsgi/app.sock",
            ),
            (
                "uwsgi_pass",
                "uwsgi://unix:///run/uwsgi/app.sock",
                "/run/uwsgi/app.sock",
            ),
            ("fastcgi_pass", "unix:///run/php.sock", "/run/php.sock"),
            (
                "fastcgi_pass",
                "unix:/run/php.sock:9000",
                "/run/php.sock:9000",
            ),
            ("scgi_pass", "unix:///run/s.sock", "/run/s.sock"),
            ("grpc_pass", "unix:///run/g.sock", "/run/g.sock"),
            ("grpc_pass", "grpc://unix:/run/g.sock:1", "/run/g.sock:1"),
            (
                "memcached_pass",
                "UNIX:/run/m.sock:11211",
                "/run/m.sock:11211",
            ),
            ("proxy_pass", "http://unix:///run/a.sock", "/run/a.sock"),
            ("proxy_pass", "http://unix:///run/a.sock:/x", "/run/a.sock"),
        ] {
            assert_eq!(
                http(directive, text).target,
                unix(path),
                "{directive} {text}"
            );
        }
        let stream = read(
            Context::Stream,
            "proxy_pass",
            "unix:///run/r.sock:1",
            |_| false,
        );
        assert_eq!(stream.target, unix("/run/r.sock:1"));
        // http proxy_pass needs its scheme even before a unix socket.
        assert!(matches!(
            http("proxy_pass", "unix:/run/a.sock").target,
            PassTarget::Invalid { .. }
        ));
    }

    #[test]
    fn no_default_port_but_http_proxy_pass() {
        for (directive, text) in [
            ("grpc_pass", "grpc://127.0.0.1"),
            ("grpc_pass", "grpcs://127.0.0.1"),
            ("grpc_pass", "127.0.0.1"),
            ("uwsgi_pass", "uwsgi://127.0.0.1"),
            ("scgi_pass", "127.0.0.1"),
        ] {
            match http(directive, text).target {
                PassTarget::Invalid { message, .. } => {
                    assert!(message.contains("no port in upstream"), "{message}")
                }
                other => panic!("{directive} {text}: {other:?}"),
            }
        }
        // Without uri_part a URI is "invalid host", as is a scheme the directive does not take.
        for (directive, text) in [
            ("fastcgi_pass", "127.0.0.1:9000/x"),
            ("fastcgi_pass", "http://127.0.0.1:9000"),
        ] {
            match http(directive, text).target {
                PassTarget::Invalid { message, .. } => {
                    assert!(message.contains("invalid host"), "{message}")
                }
                other => panic!("{directive} {text}: {other:?}"),
            }
        }
    }
}
