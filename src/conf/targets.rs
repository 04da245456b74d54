//! Upstream targets: every backend address the configuration points nginx at, with every
//! file:line that references it.
//!
//! Sources, in `http` and `stream`: `proxy_pass`, `fastcgi_pass`, `uwsgi_pass`, `scgi_pass`,
//! `grpc_pass`, `memcached_pass`, and `server` lines inside `upstream {}`. A `*_pass` naming an
//! upstream of the same context expands to that block's servers. Variables are resolved where
//! `set`, `map`, `geo` and `split_clients` make them knowable, in the order nginx's rewrite
//! module runs them for a request; the rest are `Dynamic`, never dropped.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::conf::Config;

pub(crate) mod addr;
mod collect;
pub(crate) mod pass;
mod rewrite;
mod vars;

/// Which top-level block a directive lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Context {
    Http,
    Stream,
}

impl Context {
    /// The context a top-level block opens (`http`, `stream`); `None` for any other
    /// directive of the main context.
    pub fn of_block(name: &str) -> Option<Context> {
        match name {
            "http" => Some(Context::Http),
            "stream" => Some(Context::Stream),
            _ => None,
        }
    }
}

/// Where a target is, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetAddr {
    /// An IP literal and port: `127.0.0.1:8000`, `[::1]:8000`.
    Ip(SocketAddr),
    /// A host name and port, resolved when probed: `app.internal:8000`.
    Host { name: String, port: u16 },
    /// A unix socket: `unix:/run/php/php8.2-fpm.sock`.
    Unix(PathBuf),
    /// Built from variables that could not be resolved; the text as written.
    Dynamic(String),
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(sa) => write!(f, "{sa}"),
            TargetAddr::Host { name, port } => write!(f, "{name}:{port}"),
            TargetAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            TargetAddr::Dynamic(text) => write!(f, "{text}"),
        }
    }
}

impl Serialize for TargetAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A directive or scheme name a reference records, from a fixed list: one byte instead of a
/// `&'static str`'s sixteen, in a struct a large configuration holds 100,000 times. Reads,
/// prints and serializes as the name.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(u8);

/// Every name a reference records: the `*_pass` directives, the other lines that supply a
/// target, and the schemes a `*_pass` takes.
const NAMES: [&str; 17] = {
    let (p, s) = (pass::PASS_DIRECTIVES, pass::SCHEMES);
    [
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        "server",
        "set",
        "map",
        "split_clients",
        s[0],
        s[1],
        s[2],
        s[3],
        s[4],
        s[5],
        "geo",
    ]
};

impl Name {
    pub const SERVER: Name = Name(6);
    pub const SET: Name = Name(7);
    pub const MAP: Name = Name(8);
    pub const SPLIT_CLIENTS: Name = Name(9);
    pub const GEO: Name = Name(16);

    /// The name for `text`, if it is on the list.
    pub fn of(text: &str) -> Option<Name> {
        (NAMES.iter().position(|n| *n == text)).map(|i| Name(i as u8))
    }

    /// A `*_pass` directive's name, if `text` is one.
    pub fn of_pass(text: &str) -> Option<Name> {
        Name::of(text).filter(|n| n.0 < 6)
    }

    pub fn as_str(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One place in the configuration that names a target. A large configuration has one per
/// upstream server line and per expanded `*_pass`, so nothing here is allocated per reference:
/// the file path and upstream name are shared, the directive and scheme are one-byte names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Reference {
    pub file: Arc<Path>,
    pub line: u32,
    /// `proxy_pass`, `fastcgi_pass`, ..., `server` (in an upstream block), or `set`, `map`,
    /// `geo`, `split_clients` for the line that supplied a variable's value.
    pub directive: Name,
    pub context: Context,
    /// The upstream block the `server` line is in, or the upstream a `*_pass` expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Arc<str>>,
    /// `server ... backup;`
    pub backup: bool,
    /// `server ... down;`: never probed.
    pub down: bool,
    /// The scheme written in a `*_pass` URL (`http`, `https`, `grpc`, `grpcs`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Name>,
    /// The `*_pass` holds variables, so nginx works this address out per request
    /// (`ngx_http_proxy_eval` and the like), not at startup: a host name in it is resolved
    /// through the `resolver` directive, never the system resolver. False for the servers of
    /// an `upstream` block, which nginx resolves at startup whatever named the block.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub per_request: bool,
    /// The `*_pass` is in a stream server that listens on `udp` only: nginx sends datagrams
    /// there and never opens a TCP connection.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
    /// The `*_pass` is in a stream server that listens on `udp` as well as on TCP: nginx
    /// opens TCP connections there and also sends it datagrams.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub also_udp: bool,
    /// The `*_pass` is in an `internal` location that only a `mirror` sends requests to: nginx
    /// ignores the answers of those copies, so its failure reaches no client.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mirror: bool,
    /// The `*_pass` is in a location that passes WebSocket handshakes on (`proxy_set_header
    /// Upgrade $http_upgrade;`): its backend may speak nothing else, so the HTTP probe is a
    /// handshake.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub websocket: bool,
    /// A stream `proxy_pass` with `proxy_ssl on` in force (the server's, else the `stream`
    /// block's): nginx speaks TLS to it, as to an `https://` backend.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ssl: bool,
}

/// The upstream blocks of `refs` (per context, the name lowercased) whose every `server` line
/// is `down`: nginx picks no peer from one and answers each request for it 502 ("no live
/// upstreams").
pub fn dead_upstreams<'a>(
    refs: impl IntoIterator<Item = &'a Reference>,
) -> std::collections::HashSet<(Context, String)> {
    let mut all: std::collections::HashMap<(Context, String), bool> = Default::default();
    for r in refs.into_iter().filter(|r| r.directive == Name::SERVER) {
        if let Some(u) = r.upstream.as_deref() {
            *all.entry((r.context, u.to_ascii_lowercase()))
                .or_insert(true) &= r.down;
        }
    }
    all.into_iter()
        .filter(|(_, dead)| *dead)
        .map(|(k, _)| k)
        .collect()
}

/// A target and everything that references it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub address: TargetAddr,
    /// Shared with the probe result for this target: a backend behind 10,000 servers has
    /// 20,000 references, held once.
    pub references: Arc<[Reference]>,
}

impl Target {
    /// Every reference marks it `down`: nginx never connects, so it is not probed.
    pub fn is_down(&self) -> bool {
        self.references.iter().all(|r| r.down)
    }

    /// Every `*_pass` that reaches it (and every line that gave one its value) sends
    /// datagrams: it is used only from stream servers that listen on `udp`. An upstream
    /// `server` line no `*_pass` uses says nothing either way: that is no datagram target.
    pub fn is_datagram_only(&self) -> bool {
        let mut used = self
            .references
            .iter()
            .filter(|r| r.directive != Name::SERVER);
        used.clone().next().is_some() && used.all(|r| r.udp)
    }

    /// Some `*_pass` that reaches it (or a line that gave one its value) sends datagrams: it
    /// is used from a stream server with a `listen ... udp`, whatever else uses it.
    pub fn receives_datagrams(&self) -> bool {
        (self.references.iter())
            .any(|r| r.directive != Name::SERVER && !r.down && (r.udp || r.also_udp))
    }

    /// Only ever a `backup` server (ignoring `down` references): a failure is a warning.
    pub fn is_backup_only(&self) -> bool {
        let live: Vec<_> = self.references.iter().filter(|r| !r.down).collect();
        !live.is_empty() && live.iter().all(|r| r.backup)
    }
}

/// Something found while extracting targets that nginx would reject or that breaks proxying,
/// such as `proxy_pass 127.0.0.1:8000;` without a scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: Arc<Path>,
    pub line: u32,
    pub message: String,
    /// What to change, in the operator's terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// All targets of a configuration, sorted by address, each listed once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Targets {
    pub targets: Vec<Target>,
    pub findings: Vec<Finding>,
}

/// Extract every upstream target of a loaded configuration. Needs no nginx and no network.
pub fn extract(config: &Config) -> Targets {
    collect::extract(config)
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn named_constants_read_as_their_names() {
        let named = [
            (Name::SERVER, "server"),
            (Name::SET, "set"),
            (Name::MAP, "map"),
            (Name::SPLIT_CLIENTS, "split_clients"),
            (Name::GEO, "geo"),
        ];
        for (name, text) in named {
            assert_eq!(name.as_str(), text);
            assert_eq!(Name::of(text), Some(name));
        }
        assert_eq!(
            Name::of_pass("grpc_pass").map(Name::as_str),
            Some("grpc_pass")
        );
        assert_eq!(Name::of_pass("server"), None);
        assert_eq!(Name::of("nonsense"), None);
    }
}
