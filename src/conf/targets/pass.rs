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

/// Read `text` as the argument of `directive` in `context`. `is_upstream` says whether a
/// lowercased name is an upstream block of that context.
pub(crate) fn read(
    context: Context,
    directive: &str,
    text: &str,
    is_upstream: impl Fn(&str) -> bool,
) -> Pass {
    let (scheme, rest) = match addr::split_scheme(text) {
        Some((s, r)) => (Some(s), r),
        // `$scheme://...` or a whole URL in a variable nobody sets: known only at run time.
        None if text.contains('$') => {
            return Pass {
                scheme: None,
                target: PassTarget::Dynamic,
            }
        }
        None => (None, text),
    };
    let default_port = match default_port(context, directive, scheme.as_deref()) {
        Ok(p) => p,
        Err(message) => {
            let hint = (scheme.is_none() && directive == "proxy_pass")
                .then(|| format!("write `proxy_pass http://{text};`"));
            return Pass {
                scheme,
                target: PassTarget::Invalid { message, hint },
            };
        }
    };
    let authority = authority(rest);
    let target = if authority.contains('$') {
        PassTarget::Dynamic
    } else if is_upstream(&authority.to_ascii_lowercase()) {
        PassTarget::Upstream(authority.to_ascii_lowercase())
    } else {
        match addr::parse(authority, default_port) {
            Ok(p) => PassTarget::Addr(p),
            Err(AddrError::NoPort(host)) => PassTarget::Invalid {
                message: format!(
                    "{directive} \"{text}\": no port in \"{host}\", and no upstream block of that name"
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

/// The port a scheme implies, `Ok(None)` when a port must be written, or why the scheme is
/// wrong for this directive.
fn default_port(
    context: Context,
    directive: &str,
    scheme: Option<&str>,
) -> Result<Option<u16>, String> {
    let allowed: &[(&str, u16)] = match (context, directive) {
        (Context::Http, "proxy_pass") => &[("http", 80), ("https", 443)],
        (Context::Http, "grpc_pass") => &[("grpc", 80), ("grpcs", 443)],
        (Context::Http, "uwsgi_pass") => &[("uwsgi", 0), ("suwsgi", 0)],
        _ => &[],
    };
    match scheme {
        Some(s) => match allowed.iter().find(|(name, _)| *name == s) {
            Some((_, 0)) => Ok(None),
            Some((_, port)) => Ok(Some(*port)),
            None => Err(format!("{directive}: invalid URL prefix \"{s}://\"")),
        },
        None if context == Context::Http && directive == "proxy_pass" => Err(
            "proxy_pass without \"http://\" or \"https://\": nginx -t says \"invalid URL prefix\""
                .into(),
        ),
        None if directive == "grpc_pass" => Ok(Some(80)),
        None => Ok(None),
    }
}

/// The address part: up to the URI (`/`, `?`) or a URI variable; a `unix:` path runs to its
/// `:` (the address parser cuts there).
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

fn starts_with_uri_variables(text: &str) -> bool {
    URI_VARIABLES.iter().any(|v| {
        text.strip_prefix(v).is_some_and(|after| {
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
        assert_eq!(http("grpc_pass", "grpcs://[::1]").target, ip("[::1]:443"));
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
    }
}
