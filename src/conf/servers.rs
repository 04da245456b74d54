//! Every `server {}` of `http` and `stream`: its `listen` addresses, `server_name`s and proxied
//! `location`s, with file and line. Used for the port-in-use preflight and for health requests.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::conf::targets::addr::{self, Parsed};
use crate::conf::targets::pass::PASS_DIRECTIVES;
use crate::conf::targets::Context;
use crate::conf::tree::{Directive, Word};
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
    /// An IPv6 listen that takes IPv6 connections only: nginx sets `IPV6_V6ONLY` unless
    /// `ipv6only=off` (`ngx_http_core_listen` and `ngx_stream_core_listen` default it to on),
    /// so `[::]:80` leaves the IPv4 port to others.
    #[serde(skip)]
    pub ipv6only: bool,
    pub default_server: bool,
    pub file: Arc<Path>,
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
    pub pass: &'static str,
    pub file: Arc<Path>,
    pub line: u32,
}

/// One `server {}` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub context: Context,
    pub file: Arc<Path>,
    pub line: u32,
    /// The listens written, or nginx's default (`*:80`) when there is none (http only).
    pub listens: Vec<Listen>,
    pub server_names: Vec<String>,
    /// Proxied locations (http); empty for stream servers.
    pub locations: Vec<Location>,
}

/// Every `server {}` of the configuration, in file order.
pub fn extract(config: &Config) -> Vec<Server> {
    let mut out = Vec::new();
    for top in &config.tree {
        let context = match top.name.as_str() {
            "http" => Context::Http,
            "stream" => Context::Stream,
            _ => continue,
        };
        for d in top.children() {
            if d.name == "server" && d.block.is_some() {
                out.push(server(context, d));
            }
        }
    }
    out
}

fn server(context: Context, d: &Directive) -> Server {
    let mut listens: Vec<Listen> = d
        .children()
        .iter()
        .filter(|c| c.name == "listen")
        .filter_map(|c| listen(context, c))
        .collect();
    let has_listen = d.children().iter().any(|c| c.name == "listen");
    if !has_listen && context == Context::Http {
        // nginx's default for a server without `listen` (when started as root).
        listens.push(Listen {
            addr: ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80)),
            ssl: false,
            udp: false,
            ipv6only: false,
            default_server: false,
            file: d.file.clone(),
            line: d.line,
        });
    }
    let mut server_names: Vec<String> = d
        .children()
        .iter()
        .filter(|c| c.name == "server_name")
        .flat_map(|c| c.args.iter().map(|a| a.to_string()))
        .collect();
    let mut locations = Vec::new();
    proxied_locations(d.children(), &mut locations);
    // Thousands of servers each keep these lists: no spare capacity.
    listens.shrink_to_fit();
    server_names.shrink_to_fit();
    locations.shrink_to_fit();
    Server {
        context,
        file: d.file.clone(),
        line: d.line,
        listens,
        server_names,
        locations,
    }
}

/// A `listen` read as nginx does; `None` for what nginx would reject (`nginx -t` reports it).
fn listen(context: Context, d: &Directive) -> Option<Listen> {
    let addr = listen_addr(context, d.args.first()?)?;
    let flag = |f: &str| d.args[1..].iter().any(|a| a == f);
    let v6 = matches!(&addr, ListenAddr::Tcp(sa) if sa.is_ipv6());
    Some(Listen {
        addr,
        ssl: flag("ssl"),
        udp: flag("udp"),
        ipv6only: v6 && !flag("ipv6only=off"),
        default_server: flag("default_server") || flag("default"),
        file: d.file.clone(),
        line: d.line,
    })
}

/// The address of a `listen` as nginx reads it (`80` is `*:80`; http's default port is 80);
/// `None` for what nginx would reject.
pub fn listen_addr(context: Context, text: &str) -> Option<ListenAddr> {
    let default_port = (context == Context::Http).then_some(80);
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        addr::parse(&format!("*:{text}"), None)
    } else {
        addr::parse(text, default_port)
    };
    Some(match parsed.ok()? {
        Parsed::Ip(sa) => ListenAddr::Tcp(sa),
        Parsed::Host { name, port } => ListenAddr::Host { name, port },
        Parsed::Unix(p) => ListenAddr::Unix(p),
    })
}

/// Each `location` (nested ones too) that holds a `*_pass`, directly or inside its `if` or
/// `limit_except` blocks.
fn proxied_locations(dirs: &[Directive], out: &mut Vec<Location>) {
    for d in dirs
        .iter()
        .filter(|d| d.name == "location" && d.block.is_some())
    {
        if let Some(pass) = pass_in(d.children()) {
            let (modifier, path) = location_args(&d.args);
            out.push(Location {
                modifier,
                path,
                pass,
                file: d.file.clone(),
                line: d.line,
            });
        }
        proxied_locations(d.children(), out);
    }
}

fn pass_in(dirs: &[Directive]) -> Option<&'static str> {
    dirs.iter().find_map(|d| match d.name.as_str() {
        n if PASS_DIRECTIVES.contains(&n) => PASS_DIRECTIVES.iter().copied().find(|p| *p == n),
        "if" | "limit_except" => pass_in(d.children()),
        _ => None,
    })
}

/// `location = /x`, `location =/x`, `location ~* \.php$`, `location @name`.
fn location_args(args: &[Word]) -> (Option<String>, String) {
    match args {
        [modifier, path, ..] => (Some(modifier.to_string()), path.to_string()),
        [one] => {
            for m in ["=", "^~", "~*", "~"] {
                if let Some(rest) = one.strip_prefix(m).filter(|r| !r.is_empty()) {
                    return (Some(m.to_string()), rest.to_string());
                }
            }
            (None, one.to_string())
        }
        [] => (None, String::new()),
    }
}
