//! Every `server {}` of `http` and `stream`: its `listen` addresses, `server_name`s and proxied
//! `location`s, with file and line. Used for the port-in-use preflight and for health requests.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

use crate::conf::targets::Context;
use crate::conf::Config;

/// What a `listen` binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenAddr {
    /// `listen 80`, `listen *:80` (as `0.0.0.0:80`), `listen 127.0.0.1:80`, `listen [::]:80`.
    Tcp(SocketAddr),
    /// `listen localhost:80`: a name nginx resolves at startup.
    Host { name: String, port: u16 },
    /// `listen unix:/run/nginx.sock`.
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(sa) => write!(f, "{sa}"),
            ListenAddr::Host { name, port } => write!(f, "{name}:{port}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One `listen` directive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listen {
    pub addr: ListenAddr,
    pub ssl: bool,
    /// `listen ... udp` (stream only).
    pub udp: bool,
    pub default_server: bool,
    pub file: PathBuf,
    pub line: u32,
}

/// A `location` whose requests go to a backend (it holds a `*_pass`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// `=`, `^~`, `~`, `~*`, or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modifier: Option<String>,
    pub path: String,
    /// The `*_pass` directive that sends requests on, e.g. `proxy_pass`.
    pub pass: String,
    pub file: PathBuf,
    pub line: u32,
}

/// One `server {}` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub context: Context,
    pub file: PathBuf,
    pub line: u32,
    /// The listens written, or nginx's default (`*:80`) when there is none (http only).
    pub listens: Vec<Listen>,
    pub server_names: Vec<String>,
    /// Proxied locations (http); empty for stream servers.
    pub locations: Vec<Location>,
}

/// Every `server {}` of the configuration, in file order.
pub fn extract(config: &Config) -> Vec<Server> {
    let _ = config;
    Vec::new()
}
