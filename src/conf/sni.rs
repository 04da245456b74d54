//! The TLS server name (SNI) nginx sends to each `https://`, `grpcs://` and `suwsgi://`
//! backend, so the protocol probe's ClientHello asks for the same name.
//!
//! nginx's rule (`ngx_http_upstream_ssl_name`): no SNI unless `proxy_ssl_server_name on`
//! (`grpc_ssl_server_name`, `uwsgi_ssl_server_name`; off by default); then the name is
//! `proxy_ssl_name` if set, else the host of the `*_pass` URL (`$proxy_host`: the upstream
//! block's name or the host written), without its port, and never an IP literal (RFC 6066).
//! The settings inherit `http` → `server` → `location` → nested `location`/`if`, each block
//! taking its own value wherever in the block it is written.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::conf::tree::Directive;
use crate::conf::Config;

/// The SNI settings in force at one `*_pass` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsName {
    /// `*_ssl_server_name on`.
    pub server_name: bool,
    /// `*_ssl_name` as written, if set.
    pub name: Option<String>,
}

impl TlsName {
    /// The name sent, given the `*_pass` URL's host (`$proxy_host` without the port): `None`
    /// when nginx sends none, or when the name comes from a variable known only per request.
    pub fn sni(&self, proxy_host: &str) -> Option<String> {
        if !self.server_name {
            return None;
        }
        let name = match self.name.as_deref() {
            None | Some("$proxy_host") => proxy_host,
            Some(n) if n.contains('$') => return None,
            Some(n) => n,
        };
        let name = strip_port(name);
        let literal = name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok();
        (!name.is_empty() && !literal).then(|| name.to_string())
    }
}

/// `host:port` → `host`, as nginx strips the port from the name (not inside `[...]`).
fn strip_port(name: &str) -> &str {
    if name.starts_with('[') {
        return name;
    }
    name.split(':').next().unwrap_or(name)
}

/// The settings at every `proxy_pass`, `grpc_pass` and `uwsgi_pass` line of `http`, by file
/// and line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsNames(HashMap<(Arc<Path>, u32), TlsName>);

impl TlsNames {
    /// The settings at `file:line`, nginx's defaults if it is not a pass line we saw.
    pub fn at(&self, file: &Arc<Path>, line: u32) -> TlsName {
        self.0
            .get(&(file.clone(), line))
            .cloned()
            .unwrap_or_default()
    }
}

/// The modules whose pass can speak TLS, by directive prefix.
const PREFIXES: [&str; 3] = ["proxy", "grpc", "uwsgi"];

type Scope = [TlsName; 3];

/// Walk every `http` block. Cheap: one pass, and only when some pass speaks TLS.
pub fn tls_names(config: &Config) -> TlsNames {
    let mut out = TlsNames::default();
    for d in config.tree.iter().filter(|d| d.name == "http") {
        walk(d.children(), &Scope::default(), &mut out);
    }
    out
}

fn walk(dirs: &[Directive], parent: &Scope, out: &mut TlsNames) {
    let mut scope = parent.clone();
    for d in dirs {
        for (i, prefix) in PREFIXES.iter().enumerate() {
            let Some(rest) = d.name.as_str().strip_prefix(prefix) else {
                continue;
            };
            match rest {
                "_ssl_server_name" => scope[i].server_name = d.arg0() == "on",
                "_ssl_name" => scope[i].name = Some(d.arg0().to_string()),
                _ => {}
            }
        }
    }
    for d in dirs {
        if let Some(i) = PREFIXES
            .iter()
            .position(|p| d.name.as_str().strip_suffix("_pass") == Some(p))
        {
            out.0.insert((d.file.clone(), d.line), scope[i].clone());
        }
        if matches!(
            d.name.as_str(),
            "server" | "location" | "if" | "limit_except"
        ) {
            walk(d.children(), &scope, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sends_no_sni_unless_asked() {
        let off = TlsName::default();
        assert_eq!(off.sni("app.internal"), None);
        let on = TlsName {
            server_name: true,
            name: None,
        };
        assert_eq!(on.sni("app.internal:8443").as_deref(), Some("app.internal"));
        assert_eq!(on.sni("127.0.0.1:8443"), None, "no IP literal");
        assert_eq!(on.sni("[::1]:8443"), None);
        let named = TlsName {
            server_name: true,
            name: Some("api.example.com".into()),
        };
        assert_eq!(named.sni("10.0.0.1").as_deref(), Some("api.example.com"));
        let per_request = TlsName {
            server_name: true,
            name: Some("$host".into()),
        };
        assert_eq!(per_request.sni("backend"), None);
    }
}
