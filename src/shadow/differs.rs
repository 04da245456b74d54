//! What the shadow cannot reproduce for one check. Its listens are on other ports and
//! addresses, so `$server_port` and `$server_addr` have other values there; everything a check
//! sends (Host, SNI, headers) is production's. A check's failure in the shadow is discounted
//! (left to verification after the reload) only when that request depends on one of them, in
//! the server and location that answer it, never because some other server reads one.
//!
//! A request depends on a variable when its route does: the `*_pass` target of its location
//! (and of the locations around it), `return`, `rewrite`, `try_files`, `error_page` and `if`
//! there and at server level, through the `set`, `map`, `geo` and `split_clients` that feed
//! them. A value only sent on to the backend (`fastcgi_param SERVER_PORT $server_port`, as
//! Debian's `fastcgi_params` does in nearly every PHP site; `proxy_set_header`) does not
//! choose the backend or how nginx talks to it, so a failure nginx itself produced (it logged
//! an upstream error: refused, reset, timed out, a bad TLS name, a header too big) is not
//! explained by it. The backend's own answer may depend on it, though (an application that
//! builds its reply from `SERVER_PORT`): when the backend itself answered the failing status
//! and the request sends it such a value, the failure is discounted too.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use crate::conf::targets::pass::PASS_DIRECTIVES;
use crate::conf::{host_map, Config, Directive, Server, Word};
use crate::health::Check;
use crate::impact::ServerId;

/// The variables whose value in the shadow is not production's.
const DIFFERS: [&str; 2] = ["server_port", "server_addr"];

/// Besides the `*_pass` directives: what decides where a request goes, or what nginx answers
/// by itself.
const ROUTING: [&str; 5] = ["if", "return", "rewrite", "try_files", "error_page"];

/// What is only sent on to the backend.
const SENT: [&str; 6] = [
    "proxy_set_header",
    "proxy_set_body",
    "grpc_set_header",
    "fastcgi_param",
    "uwsgi_param",
    "scgi_param",
];

/// Why a check's failure in the shadow says nothing about the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Differs {
    /// `$server_port`.
    pub variable: String,
    /// Where the request reads it, `conf.d/pools.conf:3` (relative to the config root).
    pub at: String,
    /// Whether it chooses the request's route; otherwise it is sent to the backend, whose own
    /// answer was the failure.
    pub route: bool,
}

impl Differs {
    /// `its route reads $server_port (pools.conf:3)`.
    pub fn describe(&self) -> String {
        if self.route {
            format!("its route reads {} ({})", self.variable, self.at)
        } else {
            format!(
                "the backend answered that itself, and is sent {} ({})",
                self.variable, self.at
            )
        }
    }
}

/// Whether `check`'s request reads a variable that differs in the shadow; `backend_answered`
/// says the failing answer is the backend's own (a status, and no upstream error logged).
/// `servers` are the candidate's, in the order of its `server` blocks.
pub fn differs(
    config: &Config,
    servers: &[Server],
    check: &Check,
    backend_answered: bool,
) -> Option<Differs> {
    let root = &config.conf_prefix;
    let mut found: Option<Differs> = None;
    // A `--health` URL reaches the server of its listen whose name takes its Host, when one
    // does: another server's reads (a PHP site's `fastcgi_params` beside a proxy) are not its.
    let named =
        |s: &Server| (s.server_names.iter()).any(|n| host_map::server_name_takes(n, &check.host));
    let by_name =
        check.at.is_empty() && (servers.iter()).any(|s| listens_at(s, check.connect) && named(s));
    // `servers` holds the `server` blocks of `http` and `stream` in tree order.
    let mut servers = servers.iter();
    for top in (config.tree.iter()).filter(|d| matches!(d.name.as_str(), "http" | "stream")) {
        let blocks = (top.children().iter()).filter(|d| d.name == "server" && d.block.is_some());
        for block in blocks {
            let Some(server) = servers.next() else {
                return found;
            };
            if top.name != "http" {
                continue;
            }
            let http = top;
            if by_name && !named(server) {
                continue;
            }
            for chain in requests_of(block, server, check, root) {
                let reads = Reads::of(http, block, &chain);
                let hit = reads.first_differing(&reads.routing).map(|d| (d, true));
                let hit = hit.or_else(|| {
                    backend_answered
                        .then(|| reads.first_differing(&reads.sent))
                        .flatten()
                        .map(|d| (d, false))
                });
                if let Some(((variable, d), route)) = hit {
                    let candidate = Differs {
                        variable: format!("${variable}"),
                        at: at(root, &d.file, d.line),
                        route,
                    };
                    // A route that reads it says more than a value that is sent.
                    if found.as_ref().is_none_or(|f| !f.route && route) {
                        found = Some(candidate);
                    }
                }
            }
        }
    }
    found
}

/// The location chains (outermost first) that may answer `check` in this server: the
/// location the check stands for, or, for a `--health` URL, every location of a server
/// that listens where it connects.
fn requests_of<'a>(
    block: &'a Directive,
    server: &Server,
    check: &Check,
    root: &Path,
) -> Vec<Vec<&'a Directive>> {
    let mut chains = Vec::new();
    if check.at.is_empty() {
        if listens_at(server, check.connect) {
            every_chain(block.children(), &mut Vec::new(), &mut chains);
        }
        return chains;
    }
    if ServerId::of(server).to_string() != check.server {
        return chains;
    }
    every_chain(block.children(), &mut Vec::new(), &mut chains);
    chains.retain(|c| {
        c.last()
            .is_some_and(|l| at(root, &l.file, l.line) == check.at)
    });
    chains
}

/// Whether the server has a listen `connect` reaches (its address, or a wildcard on its port).
fn listens_at(server: &Server, connect: SocketAddr) -> bool {
    server.listens.iter().any(|l| match &l.addr {
        crate::conf::ListenAddr::Tcp(sa) => {
            sa.port() == connect.port() && (sa.ip() == connect.ip() || sa.ip().is_unspecified())
        }
        _ => false,
    })
}

/// Every chain of nested `location` blocks under `dirs`, outermost first.
fn every_chain<'a>(
    dirs: &'a [Directive],
    above: &mut Vec<&'a Directive>,
    out: &mut Vec<Vec<&'a Directive>>,
) {
    for d in dirs.iter().filter(|d| d.name == "location") {
        above.push(d);
        out.push(above.clone());
        every_chain(d.children(), above, out);
        above.pop();
    }
}

/// What one request's handling reads: its routing directives, what it sends to the backend,
/// and the definitions (`set`, `map`, ...) their variables may come from.
struct Reads<'a> {
    routing: Vec<&'a Directive>,
    sent: Vec<&'a Directive>,
    /// `set` in the server and the chain.
    sets: Vec<&'a Directive>,
    /// `map`, `geo`, `split_clients` of `http`.
    defs: Vec<&'a Directive>,
}

impl<'a> Reads<'a> {
    fn of(http: &'a Directive, server: &'a Directive, chain: &[&'a Directive]) -> Reads<'a> {
        let mut r = Reads {
            routing: Vec::new(),
            sent: Vec::new(),
            sets: Vec::new(),
            defs: (http.children().iter())
                .filter(|d| matches!(d.name.as_str(), "map" | "geo" | "split_clients"))
                .collect(),
        };
        // What is sent is inherited from the levels above when a level has none of its own;
        // every level is read, which can only discount more, and only a backend's own answer.
        r.scan(http.children(), false);
        r.scan(server.children(), true);
        for loc in chain {
            r.scan(loc.children(), true);
        }
        r
    }

    /// One level's directives (and its `if` blocks'); `routes` is false at `http` level,
    /// where only what is sent is inherited.
    fn scan(&mut self, dirs: &'a [Directive], routes: bool) {
        for d in dirs {
            let name = d.name.as_str();
            if SENT.contains(&name) {
                self.sent.push(d);
            } else if !routes {
                continue;
            } else if name == "set" {
                self.sets.push(d);
            } else if ROUTING.contains(&name) || PASS_DIRECTIVES.contains(&name) {
                self.routing.push(d);
                if name == "if" {
                    self.scan(d.children(), true);
                }
            }
        }
    }

    /// The first differing variable `from` reads, directly or through the definitions of the
    /// variables it reads, and the directive that reads it.
    fn first_differing(&self, from: &[&'a Directive]) -> Option<(&'static str, &'a Directive)> {
        let mut todo: Vec<String> = Vec::new();
        for d in from {
            if let Some(v) = reads_differing(&d.args) {
                return Some((v, d));
            }
            todo.extend(d.args.iter().flat_map(|a| variables(a)));
        }
        let mut seen = HashSet::new();
        while let Some(var) = todo.pop() {
            if !seen.insert(var.clone()) {
                continue;
            }
            for def in self.defining(&var) {
                let entries = def.children().iter().map(|e| &e.args[..]);
                for args in std::iter::once(&def.args[..]).chain(entries) {
                    if let Some(v) = reads_differing(args) {
                        return Some((v, def));
                    }
                    todo.extend(args.iter().flat_map(|a| variables(a)));
                }
            }
        }
        None
    }

    /// The definitions of `$var`: `set $var ...`, `map SRC $var`, `split_clients S $var`,
    /// `geo [SRC] $var`.
    fn defining(&self, var: &str) -> Vec<&'a Directive> {
        let named = |w: Option<&Word>| {
            w.is_some_and(|w| w.trim_start_matches('$').eq_ignore_ascii_case(var))
        };
        let sets = (self.sets.iter()).filter(|d| named(d.args.first()));
        let defs = self.defs.iter().filter(|d| match d.name.as_str() {
            "geo" => named(d.args.last()),
            _ => named(d.args.get(1)),
        });
        sets.chain(defs).copied().collect()
    }
}

/// The differing variable some word of `args` reads.
fn reads_differing(args: &[Word]) -> Option<&'static str> {
    args.iter()
        .flat_map(|a| variables(a))
        .find_map(|v| DIFFERS.iter().find(|d| **d == v).copied())
}

/// The variable names one word reads: `$pool`, `${pool}`, lowercase, without the `$`.
fn variables(word: &str) -> Vec<String> {
    crate::impact::variables(word)
}

fn at(root: &Path, file: &Path, line: u32) -> String {
    let shown = file.strip_prefix(root).unwrap_or(file);
    format!("{}:{line}", shown.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, servers, LoadOptions};

    /// Whether the check of `location` in server `name` (both as written in `http`) is
    /// discounted, and why.
    /// `http` in a configuration beside a `fastcgi_params` that sends `$server_port`.
    fn loaded(http: &str) -> (Config, Vec<Server>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, format!("events {{}}\nhttp {{\n{http}\n}}\n")).expect("write");
        std::fs::write(
            dir.path().join("fastcgi_params"),
            "fastcgi_param QUERY_STRING $query_string;\nfastcgi_param SERVER_PORT $server_port;\n",
        )
        .expect("write");
        let config = load(&main, &LoadOptions::default()).expect("loads");
        let servers = servers::extract(&config);
        (config, servers)
    }

    fn of(http: &str, name: &str, location_line: u32, backend_answered: bool) -> Option<Differs> {
        let (config, servers) = loaded(http);
        let mut check = Check::plain(
            format!("http://{name}/"),
            "127.0.0.1:80".parse().expect("address"),
            name.into(),
            "/".into(),
            false,
        );
        check.server = name.into();
        check.at = format!("nginx.conf:{location_line}");
        differs(&config, &servers, &check, backend_answered)
    }

    #[test]
    fn a_health_urls_host_picks_the_server_whose_reads_count() {
        let http = "server { listen 80; server_name a.test;\n\
                    location /php { include fastcgi_params; fastcgi_pass unix:/run/php.sock; } }\n\
                    server { listen 80; server_name c.test;\n\
                    location / { proxy_pass https://127.0.0.1:8444; } }";
        let (config, servers) = loaded(http);
        let check = |host: &str| {
            let url = format!("http://{host}/");
            let addr = "127.0.0.1:80".parse().expect("address");
            let c = Check::plain(url, addr, host.into(), "/".into(), false);
            differs(&config, &servers, &c, true).map(|d| d.variable)
        };
        // The proxy's URL: the PHP site's fastcgi_params are not read there (they were).
        assert_eq!(check("c.test"), None);
        assert_eq!(check("a.test").as_deref(), Some("$server_port"));
    }

    #[test]
    fn another_servers_fastcgi_params_discount_nothing() {
        // The http block's first line is the file's third.
        let http = "server { listen 80; server_name a.test;\n\
                    location /php { include fastcgi_params; fastcgi_pass unix:/run/php.sock; } }\n\
                    server { listen 80; server_name c.test;\n\
                    location / { proxy_pass https://127.0.0.1:8444; } }";
        assert_eq!(of(http, "c.test", 6, true), None);
        assert_eq!(of(http, "c.test", 6, false), None);
        // Its own: only when the backend itself answered.
        assert_eq!(of(http, "a.test", 4, false), None);
        let d = of(http, "a.test", 4, true).expect("discounted");
        assert_eq!((d.variable.as_str(), d.route), ("$server_port", false));
        assert_eq!(d.at, "fastcgi_params:2");
    }

    #[test]
    fn a_route_through_set_map_or_return_is_discounted_whoever_answered() {
        let http = "map $server_addr $sapool { default 127.0.0.1:1; }\n\
                    server { listen 80; server_name sa.test;\n\
                    location / { proxy_pass http://$sapool; } }\n\
                    server { listen 80; server_name x.test;\n\
                    location / { proxy_pass http://127.0.0.1:2; } }\n\
                    server { listen 80; server_name r.test; set $p $server_port;\n\
                    location / { if ($p) { return 302 http://r.test:$p/; } proxy_pass http://127.0.0.1:3; } }";
        let d = of(http, "sa.test", 5, false).expect("map");
        assert_eq!(
            (d.variable.as_str(), d.route, d.at.as_str()),
            ("$server_addr", true, "nginx.conf:3")
        );
        assert_eq!(
            of(http, "x.test", 7, false),
            None,
            "the map is not x.test's"
        );
        let d = of(http, "r.test", 9, false).expect("set");
        assert_eq!((d.variable.as_str(), d.route), ("$server_port", true));
    }
}
