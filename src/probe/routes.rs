//! Which servers send requests to which target, and how: one tree reduced to what
//! `standing` compares between last-good and the candidate, so a failing probe is judged
//! against what the change did to that target's uses.
//!
//! A use is a `*_pass` reference of a target placed in the server (and the `location`/`if`
//! blocks) that holds it, with the directive, its scheme (and a stream `proxy_ssl`), whether
//! it carries datagrams, its `*_next_upstream` setting and,
//! for a pass through an `upstream` block, that block's content: a use is the same in both
//! trees only when all of that is. Servers are named as `impact` names them (listens and
//! names), so a use in last-good and in the candidate compare across files and lines. Each
//! use is kept as a hash: last-good's tree is dropped as soon as it is reduced.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use super::failover::Failover;
use crate::conf::servers::{Listen, ListenAddr};
use crate::conf::targets::{Context, Name, Targets};
use crate::conf::tree::Directive;
use crate::conf::{Config, Server, TargetAddr};
use crate::impact::ServerId;

/// One server's use of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Use {
    /// The server's place in `Routes::servers`.
    pub server: usize,
    /// The use as a whole, hashed (see the module header).
    pub key: u64,
    /// The upstream block it passes through, hashed by its lowercased name (0 for none).
    pub pool: u64,
}

/// [`Use::pool`] for upstream block `name`.
pub fn pool_key(name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    name.to_ascii_lowercase().hash(&mut h);
    h.finish() | 1
}

/// A tree's targets with the servers that use them, and the listens nginx itself holds.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Every server, in `servers::extract` order.
    pub servers: Vec<ServerId>,
    /// Per target: its uses (empty for an upstream member no `*_pass` reaches).
    by_target: HashMap<TargetAddr, Vec<Use>>,
    /// Every use's key, and one per upstream `server` line (block and member).
    keys: HashSet<u64>,
    /// Per target: the keys of its upstream `server` lines.
    members: HashMap<TargetAddr, Vec<u64>>,
    /// The TCP and unix listens of every server (UDP ones take no connection).
    pub listens: Vec<Listen>,
    /// The `user` directive's arguments: the account the workers open unix sockets as.
    pub user: Option<Vec<String>>,
}

/// Where a `*_pass` directive stands: the servers holding it (a file included into two
/// servers holds the same line in both) and the blocks between each server and it.
type Places = HashMap<(Arc<Path>, u32), Vec<(usize, u64)>>;

impl Routes {
    /// Reduce a tree. `servers` is `servers::extract(config)` and `targets`
    /// `targets::extract(config)`: the same tree.
    pub fn of(config: &Config, servers: &[Server], targets: &Targets) -> Routes {
        let failover = Failover::of(config);
        let mut places: Places = HashMap::new();
        let mut pools: HashMap<(Context, String), u64> = HashMap::new();
        let mut index = 0;
        for top in &config.tree {
            let Some(context) = Context::of_block(&top.name) else {
                continue;
            };
            for d in top.children() {
                if d.name == "upstream" && d.block.is_some() {
                    let mut h = DefaultHasher::new();
                    hash_tree(d.children(), &mut h);
                    pools
                        .entry((context, d.arg0().to_ascii_lowercase()))
                        .or_insert(h.finish());
                }
                if d.name == "server" && d.block.is_some() {
                    passes_in(d.children(), index, DefaultHasher::new(), &mut places);
                    index += 1;
                }
            }
        }
        let mut out = Routes {
            user: config
                .main_directive("user")
                .map(|d| d.args.iter().map(|a| a.to_string()).collect()),
            servers: servers.iter().map(ServerId::of).collect(),
            listens: (servers.iter())
                .flat_map(|s| s.listens.iter().filter(|l| !l.udp).cloned())
                .collect(),
            ..Routes::default()
        };
        let dead = crate::conf::targets::dead_upstreams(
            targets.targets.iter().flat_map(|t| t.references.iter()),
        );
        for t in &targets.targets {
            let mut uses = Vec::new();
            // A `down` server takes no request, except that a block with no other server
            // answers each one 502 itself: those uses are kept, so whether that was so before
            // the change compares too.
            let counts = |r: &&crate::conf::targets::Reference| {
                !r.down
                    || (r.upstream.as_deref())
                        .is_some_and(|u| dead.contains(&(r.context, u.to_ascii_lowercase())))
            };
            for r in t.references.iter().filter(counts) {
                let pool = (r.upstream.as_deref()).map(|u| {
                    (
                        u.to_ascii_lowercase(),
                        pools.get(&(r.context, u.to_ascii_lowercase())),
                    )
                });
                if r.directive == Name::SERVER {
                    let mut h = DefaultHasher::new();
                    ("member", &t.address, r.context, &pool).hash(&mut h);
                    let key = h.finish();
                    out.keys.insert(key);
                    out.members.entry(t.address.clone()).or_default().push(key);
                    continue;
                }
                if Name::of_pass(&r.directive).is_none() {
                    continue;
                }
                let next = failover.at(&r.file, r.line);
                let Some(at) = places.get(&(r.file.clone(), r.line)) else {
                    continue;
                };
                for &(server, blocks) in at {
                    let Some(id) = out.servers.get(server) else {
                        continue;
                    };
                    let mut h = DefaultHasher::new();
                    // Datagrams are another use than connections: a `listen ... udp` added to a
                    // TCP stream server sends its backend what it never got.
                    let how = (
                        r.directive.as_str(),
                        r.scheme.map(Name::as_str),
                        r.ssl,
                        (r.udp, r.also_udp),
                    );
                    (&t.address, id, blocks, how, &pool, next.error, next.timeout).hash(&mut h);
                    let key = h.finish();
                    out.keys.insert(key);
                    let pool = r.upstream.as_deref().map_or(0, pool_key);
                    let u = Use { server, key, pool };
                    if !uses.contains(&u) {
                        uses.push(u);
                    }
                }
            }
            out.by_target.insert(t.address.clone(), uses);
        }
        out
    }

    /// The servers that send requests to `target`, and how.
    pub fn uses(&self, target: &TargetAddr) -> &[Use] {
        self.by_target.get(target).map_or(&[], Vec::as_slice)
    }

    /// Whether this tree holds the use (or upstream `server` line) `key`.
    pub fn has(&self, key: u64) -> bool {
        self.keys.contains(&key)
    }

    /// The keys of the upstream `server` lines naming `target`.
    pub fn members(&self, target: &TargetAddr) -> &[u64] {
        self.members.get(target).map_or(&[], Vec::as_slice)
    }

    /// The listen of this tree that a TCP connection to `address` (`127.0.0.1:8091`,
    /// `unix:/run/x.sock`) reaches: the exact address, a wildcard of its family on the port,
    /// `localhost` for a loopback address.
    pub fn listen_for(&self, address: &str) -> Option<&Listen> {
        if let Some(path) = address.strip_prefix("unix:") {
            return (self.listens.iter())
                .find(|l| matches!(&l.addr, ListenAddr::Unix(p) if p == Path::new(path)));
        }
        let sa: std::net::SocketAddr = address.parse().ok()?;
        self.listens.iter().find(|l| match &l.addr {
            ListenAddr::Tcp(at) => {
                at.port() == sa.port()
                    && (at.ip() == sa.ip()
                        || (at.ip().is_unspecified() && at.is_ipv4() == sa.is_ipv4()))
            }
            ListenAddr::Host { name, port } => {
                *port == sa.port()
                    && sa.ip().is_loopback()
                    && name.eq_ignore_ascii_case("localhost")
            }
            ListenAddr::Unix(_) => false,
        })
    }
}

/// Record every `*_pass` under `dirs` (a server's block, at `server`), with a hash of the
/// blocks it stands in (`blocks`, the enclosing `location`/`if` names and arguments so far).
fn passes_in(dirs: &[Directive], server: usize, blocks: DefaultHasher, out: &mut Places) {
    for d in dirs {
        if Name::of_pass(&d.name).is_some() {
            let at = out.entry((d.file.clone(), d.line)).or_default();
            let place = (server, blocks.clone().finish());
            if !at.contains(&place) {
                at.push(place);
            }
        }
        if d.block.is_some() {
            let mut inner = blocks.clone();
            (&d.name, &d.args[..]).hash(&mut inner);
            passes_in(d.children(), server, inner, out);
        }
    }
}

/// Names and arguments of every directive, nesting included; not their places.
fn hash_tree(dirs: &[Directive], h: &mut DefaultHasher) {
    for d in dirs {
        (&d.name, &d.args[..], d.block.as_ref().map(|b| b.len())).hash(h);
        hash_tree(d.children(), h);
    }
}
