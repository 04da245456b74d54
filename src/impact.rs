//! Which servers a change affects, and why.
//!
//! A change is judged on the servers it can reach, so each server's effective configuration is
//! compared between the last-good tree and the candidate: its own block (with everything
//! included into it, at any depth), the main- and `http`/`stream`-level directives it inherits,
//! and the `upstream` blocks and `map`/`geo`/`split_clients` variables its `*_pass` targets go
//! through. Servers are matched between the trees on their context, listens and names; one
//! whose names or listens changed is matched to the block it was (the same place, or the same
//! remaining names and listens), so an alias added is a changed server, not a new one.
//!
//! Which server is the default of a listen (the one that answers a Host no `server_name`
//! matches: the one that says `default_server`, else the first in file order) is compared
//! too: a server added before the first, the first removed, or `default_server` moved changes
//! what unknown Hosts and requests by IP get, so both servers count as affected.
//!
//! A 10,000-server tree is most of a run's memory, so neither tree is kept: each is reduced to
//! `Prints` (hashes with file and line) as soon as it is parsed, and `between` compares those.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::conf::host_map;
use crate::conf::servers::{location_args, location_key, pass_in, socket_flags, SocketFlags};
use crate::conf::targets::pass::PASS_DIRECTIVES;
use crate::conf::targets::Context;
use crate::conf::tree::{Directive, Word};
use crate::conf::{Config, Server};

/// What identifies a server in both trees: its context, listen addresses and names, sorted.
/// `label` is what it is called: its first literal name as written (`server_name w.test
/// api.w.test;` is w.test), which takes no part in its identity.
#[derive(Debug, Clone, Serialize)]
pub struct ServerId {
    pub context: Context,
    pub listens: Vec<String>,
    pub names: Vec<String>,
    #[serde(skip)]
    pub label: Option<String>,
}

impl ServerId {
    pub fn of(server: &Server) -> ServerId {
        let mut listens: Vec<String> = server.listens.iter().map(|l| l.addr.to_string()).collect();
        let mut names: Vec<String> = (server.server_names.iter())
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let label = literal(&names).map(str::to_string);
        listens.sort();
        listens.dedup();
        names.sort();
        names.dedup();
        ServerId {
            context: server.context,
            listens,
            names,
            label,
        }
    }

    fn key(&self) -> (&Context, &Vec<String>, &Vec<String>) {
        (&self.context, &self.listens, &self.names)
    }
}

/// The first name of `names` that is a host (`b.example`), else the first wildcard (`*.b`).
fn literal(names: &[String]) -> Option<&str> {
    (names.iter())
        .find(|n| !n.is_empty() && *n != "_" && !n.contains(['*', '~']))
        .or_else(|| (names.iter()).find(|n| n.contains('*') && !n.starts_with('~')))
        .map(|n| n.trim_start_matches('.'))
}

impl PartialEq for ServerId {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ServerId {}

impl std::hash::Hash for ServerId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialOrd for ServerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ServerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl fmt::Display for ServerId {
    /// The first literal name as written, else the first listen: `b.example`,
    /// `127.0.0.1:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.label.as_deref().or_else(|| literal(&self.names));
        match (name, self.listens.first()) {
            (Some(n), _) => f.write_str(n),
            (None, Some(l)) => f.write_str(l),
            (None, None) => f.write_str("server"),
        }
    }
}

/// One reason a server is affected: what differs and where (the candidate's place, or the
/// last-good one's for something removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// `upstream api`, `map $pool`, `http: proxy_set_header`, `server block`, `new server`.
    pub what: String,
    /// Relative to the config root when inside it.
    pub file: String,
    pub line: u32,
}

impl Reason {
    /// A change to how TLS is spoken: an `ssl_*` directive (`http: ssl_protocols`), the
    /// handshake settings of an address's default server, a certificate renewed on disk.
    pub fn is_tls(&self) -> bool {
        let name = self.what.rsplit(": ").next().unwrap_or(&self.what);
        name.starts_with("ssl_")
            || self.what.starts_with("TLS ")
            || self.what.contains("certificate")
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}:{}", self.what, self.file, self.line)
    }
}

/// A server of the candidate whose effective configuration differs from last-good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affected {
    pub id: ServerId,
    /// As shown: `b.example`.
    pub label: String,
    pub file: String,
    pub line: u32,
    pub reasons: Vec<Reason>,
    /// Where in it the change is: which of its checks go first when not all fit.
    #[serde(skip)]
    pub touched: Touched,
    /// Which of its requests last-good's server answered: a request it did not (the server
    /// is new, or the Host or listen is new to it) was another server's before the change.
    #[serde(skip)]
    pub before: Predecessor,
    /// Its locations, as `location_key` writes them, but those that answer every request
    /// with a `return` of their own.
    #[serde(skip)]
    pub locations: Vec<String>,
}

/// Last-good's server that a candidate server stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Predecessor {
    /// No last-good tree was compared.
    #[default]
    Unknown,
    /// The change adds the server.
    New,
    /// Last-good's server of this identity, or the block the candidate's replaces: its
    /// listens and names as in [`ServerId`].
    Had {
        listens: Vec<String>,
        names: Vec<String>,
        /// Its WebSocket locations, as `location_key` writes them: a location that was one
        /// is checked with the handshake its clients send, whatever the candidate says.
        websocket: Vec<String>,
        /// Its locations, as `location_key` writes them: a request to a location the change
        /// adds was another location's before.
        locations: Vec<String>,
        /// The candidate's locations, as `location_key` writes them, that pass requests to
        /// something else than last-good's location of that key did: another `*_pass`, or
        /// an `upstream` (or `map`) it goes through that the change edits (see
        /// [`Predecessor::passes_elsewhere`]).
        moved: Vec<String>,
    },
}

impl Predecessor {
    /// Whether last-good's server had a WebSocket location of this key.
    pub fn websocket(&self, location_key: &str) -> bool {
        matches!(self, Predecessor::Had { websocket, .. } if websocket.iter().any(|k| k == location_key))
    }

    /// Whether last-good's server had a location of this key (unknown: yes).
    pub fn had_location(&self, location_key: &str) -> bool {
        match self {
            Predecessor::Had { locations, .. } => locations.iter().any(|k| k == location_key),
            _ => true,
        }
    }

    /// Whether the candidate's location of this key passes its requests elsewhere than
    /// last-good's did: another backend answered them before.
    pub fn passes_elsewhere(&self, location_key: &str) -> bool {
        matches!(self, Predecessor::Had { moved, .. } if moved.iter().any(|k| k == location_key))
    }

    /// Whether a request on `listen` (as [`ServerId`] writes it) with Host `host` (`None`: an
    /// IP or no Host, which the listen alone routes) reached this server before the change.
    pub fn answered(&self, listen: &str, host: Option<&str>) -> bool {
        match self {
            Predecessor::Unknown => true,
            Predecessor::New => false,
            Predecessor::Had { listens, names, .. } => answers(listens, names, listen, host),
        }
    }
}

/// Whether a server of `listens` and `names` (as [`ServerId`] writes them) is the one a
/// request on `listen` with Host `host` (`None`: an IP or no Host) is for.
pub fn answers(listens: &[String], names: &[String], listen: &str, host: Option<&str>) -> bool {
    listens.iter().any(|l| l == listen)
        && host.is_none_or(|h| names.iter().any(|n| host_map::server_name_takes(n, h)))
}

/// Where a change reaches a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Touched {
    /// Only through what it inherits (an `http`-level directive): like every other server.
    #[default]
    Inherited,
    /// Its own directives outside any location, or it is new: every location alike.
    Server,
    /// These locations (as `location_key` writes them: `/api/`, `= /auth`): their blocks,
    /// an upstream or map they pass through, or the location their `auth_request` asks.
    Locations(Vec<String>),
}

impl Touched {
    /// Whether the change reaches this server itself, not only what it inherits.
    pub fn is_direct(&self) -> bool {
        *self != Touched::Inherited
    }

    /// Whether the change reaches this location of the server directly.
    pub fn reaches(&self, location_key: &str) -> bool {
        match self {
            Touched::Inherited => false,
            Touched::Server => true,
            Touched::Locations(keys) => keys.iter().any(|k| k == location_key),
        }
    }
}

/// A server last-good had and the candidate does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub id: ServerId,
    pub label: String,
    pub file: String,
    pub line: u32,
}

/// A listen whose default server (the one that answers a Host no `server_name` matches, and a
/// request with no Host) is another server in the candidate than in last-good: a server added
/// before the first one in file order, the first one removed, `default_server` moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultChange {
    /// `127.0.0.1:8080`.
    pub listen: String,
    /// Last-good's default server, and where it is: `a.example (a.conf:3)`.
    pub from: String,
    /// The candidate's: `new.example (00-new.conf:1)`.
    pub to: String,
    /// The candidate's default server, to check the default route on.
    #[serde(skip)]
    pub to_id: ServerId,
}

impl fmt::Display for DefaultChange {
    /// `127.0.0.1:8080: default server changes from a.example (a.conf:3) to new.example
    /// (00-new.conf:1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: default server changes from {} to {}",
            self.listen, self.from, self.to
        )
    }
}

/// Which servers a change affects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Impact {
    /// Servers in the candidate.
    pub total: usize,
    /// Whether a last-good tree was compared; without one every server counts as affected.
    pub baseline: bool,
    /// In the candidate's order.
    pub affected: Vec<Affected>,
    pub removed: Vec<Removed>,
    /// Listens whose default server changes; both servers are among the affected (or the
    /// removed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub default_changes: Vec<DefaultChange>,
    /// What differs outside every `server` block (main-level directives, `events`, an
    /// `http`/`stream`-level directive, `upstream` or `map`), whether a server uses it or not;
    /// empty when only servers changed, or nothing nginx reads did (a comment).
    pub outside_servers: Vec<Reason>,
    /// Names another server takes from the one that answered them before (see [`Takeover`]):
    /// the change is refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub takeovers: Vec<Takeover>,
    /// Addresses whose `ssl`, `http2` or `proxy_protocol` the change turns on or off: every
    /// server there is affected, whichever server's `listen` says it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub socket_changes: Vec<SocketChange>,
    /// Names a server the change keeps no longer has and no other server takes: their
    /// clients now get the default server of those listens (a typo'd `server_name`, or a name
    /// retired on purpose). A warning.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names_dropped: Vec<DroppedName>,
    /// Stream listens of last-good no stream server of the candidate listens on (a port typo
    /// in a `stream {}` server's `listen`), as the warning says them: stream servers have no
    /// name to say it by, and no request checks them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listens_dropped: Vec<String>,
    /// Last-good's flags of each address the candidate keeps: its clients speak as they did,
    /// and are checked so.
    #[serde(skip)]
    pub sockets_before: HashMap<(Context, String), SocketFlags>,
    /// Shared memory zones declared anew with another key (path) that a reload keeps, and
    /// nginx then refuses (see [`ZoneRekeyed`]): the change is refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub zones_rekeyed: Vec<ZoneRekeyed>,
}

impl Impact {
    /// The `upstream` blocks the change edits, adds or removes, by name (lowercase), each
    /// once: the ones an affected server's requests go through, and the ones none does.
    pub fn upstreams_changed(&self) -> Vec<String> {
        let reasons = (self.affected.iter().flat_map(|a| a.reasons.iter()))
            .chain(self.outside_servers.iter());
        let mut out: Vec<String> = reasons
            .filter_map(|r| r.what.strip_prefix("upstream "))
            .map(str::to_ascii_lowercase)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The addresses the change leaves no server on where it removes two servers or more,
    /// every one of them on those addresses (an include that matches nothing any more), when
    /// that is so.
    pub fn emptied(&self) -> Option<Vec<String>> {
        if !self.baseline || self.removed.len() < 2 {
            return None;
        }
        let mut gone: Vec<String> = (self.removed.iter())
            .flat_map(|r| r.id.listens.iter().cloned())
            .collect();
        gone.sort();
        gone.dedup();
        let stays = |l: &String| {
            (self.names_dropped.iter()).any(|d| d.listens.contains(l) && !d.unlistened)
        };
        let unlistened =
            |l: &String| (self.names_dropped.iter()).any(|d| d.listens.contains(l) && d.unlistened);
        (!gone.is_empty() && gone.iter().all(|l| unlistened(l) && !stays(l))).then_some(gone)
    }
}

/// A name no server answers any more (see `Impact::names_dropped`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedName {
    pub name: String,
    pub listens: Vec<String>,
    /// The server that answered it: `b.test (sites-enabled/b.test:1)`.
    pub from: String,
    /// The name that server gains in its place, when it reads as a typo of this one (two
    /// letters swapped, a letter doubled or undoubled: `a.tset` for `a.test`), and where that
    /// server is: the change is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typo: Option<(String, String)>,
    /// Another server that takes the name now by a wildcard or regex of its own (`the server
    /// at sites-enabled/w.test:1, by its name .w.test`): its clients get that site, not the
    /// default server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<String>,
    /// No server of the candidate listens on any of `listens`: its clients' connections are
    /// refused (a port typo in the only server's `listen`, an include that matches nothing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unlistened: bool,
}

impl DroppedName {
    /// The refusal of a name replaced by its own typo.
    pub fn typo_problem(&self) -> Option<String> {
        let (typo, _) = self.typo.as_ref()?;
        Some(format!(
            "server_name {typo} replaces {} (a typo?): {} answered {} on {}, and its clients \
             would get the default server there",
            self.name,
            self.from,
            self.name,
            self.listens.join(", ")
        ))
    }
}

/// Whether `new` reads as a typo of `old`: two neighbouring characters swapped, or a letter
/// doubled or undoubled (`exmaple`, `exaample`, `exaple` is not: a letter dropped may be a
/// rename). A digit changed (`v1` to `v2`) is a rename, never a typo.
fn typo_of(old: &str, new: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (old.chars().collect(), new.chars().collect());
    if a == b {
        return false;
    }
    if a.len() == b.len() {
        let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        return matches!(differ[..], [i, j] if j == i + 1 && a[i] == b[j] && a[j] == b[i]);
    }
    let (short, long) = if a.len() < b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    if long.len() != short.len() + 1 {
        return false;
    }
    let at = (0..short.len())
        .find(|&i| short[i] != long[i])
        .unwrap_or(short.len());
    let doubled = long[at].is_alphabetic()
        && ((at > 0 && long[at - 1] == long[at]) || long.get(at + 1) == Some(&long[at]));
    doubled && short[at..] == long[at + 1..]
}

impl fmt::Display for DroppedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server_name {} is no longer any server's on {}: {} answered it, and {}",
            self.name,
            self.listens.join(", "),
            self.from,
            match (&self.taken_by, self.unlistened) {
                (_, true) => "no server listens there any more: its clients' connections are \
                              refused"
                    .to_string(),
                (Some(by), false) => format!("its clients now get {by} there"),
                (None, false) => "its clients now get the default server there".to_string(),
            }
        )
    }
}

/// See [`DroppedName`]: names of last-good's server paired with a candidate one that the
/// candidate's lacks, where no candidate server names them on any of those listens; and
/// names it keeps on the listens it lost (a port typo), where no server names them.
fn names_dropped(
    old: &Prints,
    new: &Prints,
    pairs: &HashMap<&ServerId, &ServerPrint>,
) -> Vec<DroppedName> {
    let mut out = Vec::new();
    for s in &new.servers {
        let Some(o) = pairs.get(&s.id) else {
            continue;
        };
        for n in &o.id.names {
            if n.is_empty() || n == "_" {
                continue;
            }
            // A name the server keeps loses the listens it no longer has (a port typo in
            // its `listen`); one it drops, all of them.
            let kept = s.id.names.contains(n);
            let lost: Vec<String> = (o.id.listens.iter())
                .filter(|l| !kept || !s.id.listens.contains(l))
                .filter(|l| {
                    !(new.servers.iter())
                        .any(|t| t.id.names.contains(n) && t.id.listens.contains(l))
                })
                .cloned()
                .collect();
            // Dropped on some listens but answered on others by another server: moved, said
            // as before only when no server takes it on any of them.
            let taken = !kept
                && (new.servers.iter()).any(|t| {
                    t.id.names.contains(n) && t.id.listens.iter().any(|l| o.id.listens.contains(l))
                });
            if !lost.is_empty() && !taken {
                let gained = (s.id.names.iter()).filter(|g| !kept && !o.id.names.contains(g));
                let typo = gained
                    .into_iter()
                    .find(|g| typo_of(n, g) && less_familiar(g, n, old, new))
                    .map(|g| (g.clone(), format!("{}:{}", rel(&new.root, &s.file), s.line)));
                let listens = if kept { lost } else { o.id.listens.clone() };
                out.push(DroppedName {
                    taken_by: taken_by(new, &listens, n),
                    unlistened: unlistened(new, &listens),
                    name: n.clone(),
                    listens,
                    from: format!("{} ({}:{})", o.id, rel(&old.root, &o.file), o.line),
                    typo,
                });
            }
        }
    }
    // A server whose every name changed is a new server and a removed one (names are part
    // of its identity): the names of the removed one no server answers now, and the new
    // one's that read as their typos, on a listen they share.
    let paired: HashSet<*const ServerPrint> = pairs.values().map(|o| *o as *const _).collect();
    let unpaired: Vec<&ServerPrint> = (new.servers.iter())
        .filter(|s| !pairs.contains_key(&s.id))
        .collect();
    for o in (old.servers.iter()).filter(|o| !paired.contains(&(*o as *const _))) {
        for n in &o.id.names {
            if n.is_empty() || n == "_" {
                continue;
            }
            let taken = (new.servers.iter()).any(|t| {
                t.id.names.contains(n) && t.id.listens.iter().any(|l| o.id.listens.contains(l))
            });
            if taken {
                continue;
            }
            let typo = unpaired.iter().find_map(|s| {
                let shares = s.id.listens.iter().any(|l| o.id.listens.contains(l));
                let g = (s.id.names.iter())
                    .find(|g| shares && typo_of(n, g) && less_familiar(g, n, old, new))?;
                Some((g.clone(), format!("{}:{}", rel(&new.root, &s.file), s.line)))
            });
            out.push(DroppedName {
                taken_by: taken_by(new, &o.id.listens, n),
                unlistened: unlistened(new, &o.id.listens),
                name: n.clone(),
                listens: o.id.listens.clone(),
                from: format!("{} ({}:{})", o.id, rel(&old.root, &o.file), o.line),
                typo,
            });
        }
    }
    out
}

/// The stream listens of `old` no stream server of `new` listens on, each as its warning.
fn stream_listens_dropped(old: &Prints, new: &Prints) -> Vec<String> {
    fn streams(p: &Prints) -> impl Iterator<Item = &ServerPrint> {
        (p.servers.iter()).filter(|s| s.id.context == Context::Stream)
    }
    let mut out = Vec::new();
    for o in streams(old) {
        for l in o.id.listens.iter().filter(|l| !heard(streams(new), l)) {
            out.push(format!(
                "nginx no longer listens on {l} (stream): the stream server at {}:{} did, and \
                 its clients' connections are refused now",
                rel(&old.root, &o.file),
                o.line
            ));
        }
    }
    out
}

/// Whether no server of `new` listens on any of `listens` (as [`ServerId`] writes them), by
/// the address itself or a wildcard address of its port.
fn unlistened(new: &Prints, listens: &[String]) -> bool {
    !listens.is_empty() && !listens.iter().any(|l| heard(new.servers.iter(), l))
}

/// Whether one of `servers` listens on `listen`, by the address itself or a wildcard address
/// of its port (`0.0.0.0:80` for `127.0.0.1:80`).
fn heard<'a>(mut servers: impl Iterator<Item = &'a ServerPrint>, listen: &str) -> bool {
    fn port(l: &str) -> Option<(&str, &str)> {
        l.rsplit_once(':')
    }
    let wildcard = |h: &str| matches!(h, "0.0.0.0" | "*" | "[::]");
    servers.any(|s| {
        s.id.listens.iter().any(|m| {
            m == listen
                || matches!((port(m), port(listen)), (Some((mh, mp)), Some((_, lp))) if wildcard(mh) && mp == lp)
        })
    })
}

/// The server of `new` that takes Host `name` on the first of `listens` by a wildcard or
/// regex name, as shown in [`DroppedName::taken_by`].
fn taken_by(new: &Prints, listens: &[String], name: &str) -> Option<String> {
    if name.starts_with('~') || name.contains('*') {
        return None;
    }
    let (i, by) = host_taker(new, listens.first()?, name.trim_start_matches('.'))?;
    let s = &new.servers[i];
    Some(format!(
        "the server at {}:{}, by its name {by}",
        rel(&new.root, &s.file),
        s.line
    ))
}

/// Whether `new` has more labels no other name of either configuration has than `old`
/// has: `a.tset` for `a.test` where other names end in `.test` is the typo; `www.blog.test`
/// for `wwww.blog.test` is its fix, and a tie tells nothing (a warning, not a refusal).
fn less_familiar(new_name: &str, old_name: &str, old: &Prints, new: &Prints) -> bool {
    let known: HashSet<&str> = (old.servers.iter().chain(&new.servers))
        .flat_map(|s| s.id.names.iter())
        .filter(|n| *n != new_name && *n != old_name)
        .flat_map(|n| n.split('.'))
        .collect();
    let strange = |name: &str| name.split('.').filter(|l| !known.contains(l)).count();
    strange(new_name) > strange(old_name)
}

/// An address whose protocol the change turns on or off (see `Impact::socket_changes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketChange {
    /// `127.0.0.1:8080`.
    pub listen: String,
    /// `now ssl`, `no longer http2`, `now proxy_protocol`.
    pub what: Vec<String>,
}

impl fmt::Display for SocketChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listen {}: {}", self.listen, self.what.join(", "))
    }
}

/// The addresses both have whose flags differ.
fn socket_changes(old: &Prints, new: &Prints) -> Vec<((Context, String), SocketChange)> {
    let mut out: Vec<((Context, String), SocketChange)> = Vec::new();
    for (key, now) in &new.sockets {
        let Some(before) = old.sockets.get(key) else {
            continue;
        };
        let mut what = Vec::new();
        for (name, b, n) in [
            ("ssl", before.ssl, now.ssl),
            ("http2", before.http2, now.http2),
            ("proxy_protocol", before.proxy_protocol, now.proxy_protocol),
        ] {
            match (b, n) {
                (false, true) => what.push(format!("now {name}")),
                (true, false) => what.push(format!("no longer {name}")),
                _ => {}
            }
        }
        if !what.is_empty() {
            let listen = key.1.clone();
            out.push((key.clone(), SocketChange { listen, what }));
        }
    }
    out.sort_by(|a, b| a.1.listen.cmp(&b.1.listen));
    out
}

/// For a server listening on `listens`: each TLS address whose default server's handshake
/// settings (see [`HANDSHAKE`]) the change made differ, as a reason that names them.
fn handshake_changes(old: &Prints, new: &Prints, listens: &[String]) -> Vec<Reason> {
    let mut out = Vec::new();
    for addr in listens {
        let (Some(now), Some(before)) = (new.handshakes.get(addr), old.handshakes.get(addr)) else {
            continue;
        };
        if now.0 == before.0 {
            continue;
        }
        let said = |t: &str| match t {
            "" => "nginx's defaults".to_string(),
            t => format!("`{t}`"),
        };
        out.push(Reason {
            what: format!(
                "TLS handshakes on {addr} now get {} (was {}) from its default server: every \
                 server there gets them before SNI picks one",
                said(&now.0),
                said(&before.0)
            ),
            file: rel(&new.root, &now.1),
            line: now.2,
        });
    }
    out
}

impl Impact {
    /// Every server of the candidate, when there is nothing to compare with.
    pub fn everything(new: &Prints) -> Impact {
        let affected = (new.servers.iter())
            .map(|s| s.affected(vec![]))
            .collect::<Vec<_>>();
        Impact {
            total: new.servers.len(),
            baseline: false,
            affected,
            removed: Vec::new(),
            default_changes: Vec::new(),
            outside_servers: Vec::new(),
            takeovers: Vec::new(),
            socket_changes: Vec::new(),
            names_dropped: Vec::new(),
            listens_dropped: Vec::new(),
            zones_rekeyed: Vec::new(),
            sockets_before: HashMap::new(),
        }
    }

    /// Every server of a configuration with no tree to compare (`recover`): all affected.
    pub fn of_servers(servers: &[Server]) -> Impact {
        let affected = (servers.iter())
            .map(|s| {
                let id = ServerId::of(s);
                Affected {
                    label: id.to_string(),
                    file: s.file.display().to_string(),
                    line: s.line,
                    id,
                    reasons: Vec::new(),
                    touched: Touched::Server,
                    before: Predecessor::Unknown,
                    locations: Vec::new(),
                }
            })
            .collect();
        Impact {
            total: servers.len(),
            baseline: false,
            affected,
            removed: Vec::new(),
            default_changes: Vec::new(),
            outside_servers: Vec::new(),
            takeovers: Vec::new(),
            socket_changes: Vec::new(),
            names_dropped: Vec::new(),
            listens_dropped: Vec::new(),
            zones_rekeyed: Vec::new(),
            sockets_before: HashMap::new(),
        }
    }

    /// Every server of a configuration reloaded unchanged (`--force`, or nginx does not run
    /// it: see `pipeline::not_what_nginx_loaded`): nothing differs, so the
    /// whole configuration is what is being verified.
    pub fn unchanged(new: &Prints) -> Impact {
        let affected = (new.servers.iter())
            .map(|s| {
                let why = Reason {
                    what: "unchanged configuration reloaded: the whole of it is verified".into(),
                    file: rel(&new.root, &s.file),
                    line: s.line,
                };
                s.affected(vec![why])
            })
            .collect();
        Impact {
            total: new.servers.len(),
            baseline: true,
            affected,
            removed: Vec::new(),
            default_changes: Vec::new(),
            outside_servers: Vec::new(),
            takeovers: Vec::new(),
            socket_changes: Vec::new(),
            names_dropped: Vec::new(),
            listens_dropped: Vec::new(),
            zones_rekeyed: Vec::new(),
            sockets_before: HashMap::new(),
        }
    }

    /// Whether running the candidate in a shadow nginx can show anything: not when, against a
    /// last-good, no server is affected or removed and nothing outside the servers differs
    /// (a comment-only change, or one to a file nothing reads as configuration).
    pub fn shadow_needed(&self) -> bool {
        !self.baseline
            || !self.affected.is_empty()
            || !self.removed.is_empty()
            || !self.outside_servers.is_empty()
    }

    /// Whether the server with this identity is affected.
    pub fn affects(&self, id: &ServerId) -> bool {
        self.affected.iter().any(|a| a.id == *id)
    }

    /// The affected servers' identities, for lookups over many servers.
    pub fn affected_ids(&self) -> HashSet<&ServerId> {
        self.affected.iter().map(|a| &a.id).collect()
    }

    /// "this change affects 3 of 40 servers: b.example (upstream api, upstreams.conf:14), ..."
    pub fn summary(&self, shown: usize) -> String {
        let mut out = if !self.baseline {
            format!(
                "no known-good snapshot to compare with: all {} servers count as affected",
                self.total
            )
        } else {
            format!(
                "this change affects {} of {} servers",
                self.affected.len(),
                self.total
            )
        };
        let listed: Vec<String> = (self.affected.iter().take(shown))
            .map(|a| match a.reasons.first() {
                Some(r) if a.reasons.len() > 1 => {
                    format!("{} ({r}; {} more)", a.label, a.reasons.len() - 1)
                }
                Some(r) => format!("{} ({r})", a.label),
                None => a.label.clone(),
            })
            .collect();
        if self.baseline && !listed.is_empty() {
            out.push_str(": ");
            out.push_str(&listed.join(", "));
            if self.affected.len() > shown {
                out.push_str(&format!(", and {} more", self.affected.len() - shown));
            }
        }
        if !self.removed.is_empty() {
            let names: Vec<String> = self.removed.iter().map(|r| r.label.clone()).collect();
            out.push_str(&format!("; removed: {}", names.join(", ")));
        }
        out
    }
}

/// One tree reduced to what `between` compares.
#[derive(Debug, Clone, Default)]
pub struct Prints {
    root: PathBuf,
    servers: Vec<ServerPrint>,
    /// Per context: the inherited directives (main level, then the context's own).
    inherited: Vec<(Context, Vec<Mark>)>,
    /// Every directive outside a `server` block, with its scope (`main`, `http`, `stream`).
    outside: Vec<(&'static str, Mark)>,
    /// How nginx speaks on each address (see `conf::servers::socket_flags`).
    sockets: HashMap<(Context, String), SocketFlags>,
    /// Per TLS address: the handshake settings its default server writes of its own, and
    /// where (see [`HANDSHAKE`]).
    handshakes: HashMap<String, (String, Arc<Path>, u32)>,
    /// The shared memory zones `http {}` declares (see [`zones`]).
    zones: Vec<zones::Zone>,
}

/// The TLS settings nginx takes from an address's default server for every handshake there,
/// before SNI picks a server: the protocol versions its OpenSSL context offers (the version
/// is chosen before the servername callback switches contexts). A server of another name on
/// the address gets them too. Ciphers are not among them: OpenSSL 3 takes the SNI server's
/// (measured with nginx 1.22).
const HANDSHAKE: &[&str] = &["ssl_protocols"];

/// A hash with the place it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mark {
    hash: u64,
    name: Word,
    file: Arc<Path>,
    line: u32,
}

/// One `location` of a server (nested ones too).
#[derive(Debug, Clone)]
struct LocationPrint {
    /// As `location_key` writes it.
    key: Box<str>,
    /// Its own directives, not those of the locations nested in it.
    hash: u64,
    /// The `what` of each [`Dep`] its requests go through.
    uses: Box<[Box<str>]>,
    /// The URI its `auth_request` asks, its own or inherited.
    auth_request: Option<Box<str>>,
    /// It answers every request itself with a `return` of its own (not inside an `if`).
    returns: bool,
    /// Its `*_pass` and target (`proxy_pass http://127.0.0.1:8000`), when it has one.
    pass: Option<Box<str>>,
}

/// An `upstream` block or a variable a server's requests go through.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dep {
    /// `upstream api`, `map $pool`.
    what: String,
    hash: u64,
    file: Arc<Path>,
    line: u32,
}

#[derive(Debug, Clone)]
struct ServerPrint {
    id: ServerId,
    /// The listens (as in `id`) that say `default_server`.
    defaults: Box<[Box<str>]>,
    /// Its WebSocket locations (as `location_key` writes them).
    websocket: Box<[Box<str>]>,
    root: Arc<Path>,
    file: Arc<Path>,
    line: u32,
    /// One hash per directive of the block, depth first, with its place: the first that
    /// differs says where the block changed.
    block: Box<[(u64, Arc<Path>, u32)]>,
    /// Its own directives outside any location.
    own: u64,
    locations: Box<[LocationPrint]>,
    deps: Box<[Dep]>,
}

impl ServerPrint {
    /// Affected, with the change reaching it as a whole.
    fn affected(&self, reasons: Vec<Reason>) -> Affected {
        self.affected_at(reasons, Touched::Server)
    }

    fn affected_at(&self, reasons: Vec<Reason>, touched: Touched) -> Affected {
        Affected {
            label: self.id.to_string(),
            file: rel(&self.root, &self.file),
            line: self.line,
            id: self.id.clone(),
            reasons,
            touched,
            before: Predecessor::Unknown,
            // A location that answers every request with a `return` of its own (`return
            // 410` retiring an endpoint) says what it answers on purpose.
            locations: (self.locations.iter())
                .filter(|l| !l.returns)
                .map(|l| l.key.to_string())
                .collect(),
        }
    }
}

fn rel(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Reduce a tree to its prints. `servers` is `servers::extract(config)`: the same servers in
/// the same order.
pub fn prints(config: &Config, servers: &[Server]) -> Prints {
    let mut defaults = servers.iter().map(|s| {
        (s.listens.iter())
            .filter(|l| l.default_server)
            .map(|l| l.addr.to_string().into_boxed_str())
            .collect::<Box<[Box<str>]>>()
    });
    let root: Arc<Path> = Arc::from(config.conf_prefix.as_path());
    let main: Vec<Mark> = (config.tree.iter())
        .filter(|d| !matches!(d.name.as_str(), "http" | "stream"))
        .map(mark)
        .collect();
    let mut out = Prints {
        root: config.conf_prefix.clone(),
        outside: main.iter().map(|m| ("main", m.clone())).collect(),
        sockets: socket_flags(servers),
        ..Prints::default()
    };
    let mut ids = servers.iter().map(ServerId::of);
    let mut websockets = servers.iter().map(|s| {
        (s.locations.iter())
            .filter(|l| l.websocket)
            .map(|l| l.key().into_boxed_str())
            .collect::<Box<[Box<str>]>>()
    });
    for top in &config.tree {
        let Some(context) = Context::of_block(&top.name) else {
            continue;
        };
        let defs = Defs::of(top.children());
        let mut inherited = main.clone();
        for d in top.children() {
            if !matches!(
                d.name.as_str(),
                "server" | "upstream" | "map" | "geo" | "split_clients"
            ) {
                inherited.push(mark(d));
            }
        }
        out.inherited.push((context, inherited));
        if context == Context::Http {
            (out.zones).extend(top.children().iter().filter_map(zones::Zone::of));
        }
        let scope = match context {
            Context::Http => "http",
            Context::Stream => "stream",
        };
        (out.outside).extend((top.children().iter()).filter_map(|d| {
            let server = d.name == "server" && d.block.is_some();
            (!server).then(|| (scope, mark(d)))
        }));
        for d in top.children() {
            if d.name != "server" || d.block.is_none() {
                continue;
            }
            let (Some(id), Some(defaults), Some(websocket)) =
                (ids.next(), defaults.next(), websockets.next())
            else {
                break;
            };
            if context == Context::Http {
                let own: Vec<String> = (d.children().iter())
                    .filter(|c| HANDSHAKE.contains(&c.name.as_str()))
                    .map(|c| {
                        let args: Vec<&str> = c.args.iter().map(|a| a.as_str()).collect();
                        format!("{} {}", c.name, args.join(" "))
                    })
                    .collect();
                for addr in &id.listens {
                    let tls = (out.sockets.get(&(context, addr.clone()))).is_some_and(|f| f.ssl);
                    let default = defaults.iter().any(|a| **a == **addr);
                    // The first server on the address is its default unless another says so.
                    if tls && (default || !out.handshakes.contains_key(addr)) {
                        let at = (own.join("; "), d.file.clone(), d.line);
                        out.handshakes.insert(addr.clone(), at);
                    }
                }
            }
            out.servers.push(ServerPrint {
                id,
                defaults,
                websocket,
                root: root.clone(),
                file: d.file.clone(),
                line: d.line,
                block: block_marks(d),
                own: own_hash(d),
                locations: defs.locations_of(d),
                deps: defs.deps_of(d),
            });
        }
    }
    out
}

fn mark(d: &Directive) -> Mark {
    Mark {
        hash: subtree_hash(d),
        name: d.name.clone(),
        file: d.file.clone(),
        line: d.line,
    }
}

/// Name, arguments and every child, not the place: moving a directive to another file or line
/// changes nothing nginx does.
fn subtree_hash(d: &Directive) -> u64 {
    let mut h = DefaultHasher::new();
    for (depth, d) in walk_depth(d) {
        (depth, &d.name, &d.args[..]).hash(&mut h);
    }
    h.finish()
}

/// Like [`subtree_hash`], without the `location` blocks nested in `d`: what it holds itself.
fn own_hash(d: &Directive) -> u64 {
    let mut h = DefaultHasher::new();
    let mut stack = vec![(0usize, d)];
    while let Some((depth, d)) = stack.pop() {
        (depth, &d.name, &d.args[..]).hash(&mut h);
        let inner = d.children().iter().rev().filter(|c| c.name != "location");
        stack.extend(inner.map(|c| (depth + 1, c)));
    }
    h.finish()
}

fn block_marks(server: &Directive) -> Box<[(u64, Arc<Path>, u32)]> {
    walk_depth(server)
        .skip(1)
        .map(|(depth, d)| {
            let mut h = DefaultHasher::new();
            (depth, &d.name, &d.args[..], d.block.is_some()).hash(&mut h);
            (h.finish(), d.file.clone(), d.line)
        })
        .collect()
}

/// A directive and everything under it with its depth, parents first.
fn walk_depth(d: &Directive) -> impl Iterator<Item = (usize, &Directive)> {
    let mut stack = vec![(0usize, d)];
    std::iter::from_fn(move || {
        let (depth, d) = stack.pop()?;
        stack.extend(d.children().iter().rev().map(|c| (depth + 1, c)));
        Some((depth, d))
    })
}

/// The `upstream` blocks and variable definitions of one context.
struct Defs<'a> {
    upstreams: HashMap<String, &'a Directive>,
    /// Variable name (lowercase, no `$`) to the `map`/`geo`/`split_clients` defining it.
    vars: HashMap<String, &'a Directive>,
}

impl<'a> Defs<'a> {
    fn of(dirs: &'a [Directive]) -> Defs<'a> {
        let mut defs = Defs {
            upstreams: HashMap::new(),
            vars: HashMap::new(),
        };
        for d in dirs.iter().filter(|d| d.block.is_some()) {
            let var = match d.name.as_str() {
                "upstream" => {
                    defs.upstreams.insert(d.arg0().to_ascii_lowercase(), d);
                    continue;
                }
                // map SOURCE $var; split_clients STRING $var
                "map" | "split_clients" => d.args.get(1),
                // geo [$address] $var
                "geo" => d.args.last(),
                _ => None,
            };
            if let Some(v) = var {
                defs.vars
                    .insert(v.trim_start_matches('$').to_ascii_lowercase(), d);
            }
        }
        defs
    }

    /// Each location of a server, nested ones too, with what its requests go through.
    fn locations_of(&self, server: &Directive) -> Box<[LocationPrint]> {
        let mut out = Vec::new();
        let server_auth = auth_request_of(None, server);
        self.locations_in(server, server_auth, &mut out);
        out.into_boxed_slice()
    }

    fn locations_in(&self, d: &Directive, auth: Option<&str>, out: &mut Vec<LocationPrint>) {
        for loc in d.children().iter().filter(|c| c.name == "location") {
            let (modifier, path) = location_args(&loc.args);
            let auth = auth_request_of(auth, loc);
            out.push(LocationPrint {
                key: location_key(modifier.as_deref(), &path).into_boxed_str(),
                hash: own_hash(loc),
                uses: (self.deps_of(loc).iter())
                    .map(|dep| dep.what.clone().into_boxed_str())
                    .collect(),
                auth_request: auth.map(Box::from),
                returns: loc.children().iter().any(|c| c.name == "return"),
                pass: pass_in(loc.children()).map(|(name, arg)| format!("{name} {arg}").into()),
            });
            self.locations_in(loc, auth, out);
        }
    }

    /// What a server's (or a location's) requests go through: the variables it uses that a
    /// map defines (and the variables those use, at any depth), and the upstreams its
    /// `*_pass` or those maps' values name.
    fn deps_of(&self, server: &Directive) -> Box<[Dep]> {
        let mut names: HashSet<String> = HashSet::new();
        let mut todo: Vec<String> = Vec::new();
        // The values a regex's capture group can take (`(?<svc>alpha|beta)`), for a `*_pass`
        // that names its upstream by one (`proxy_pass http://$svc/;`).
        let captures: Vec<crate::conf::captures::Capture> = (walk_depth(server))
            .flat_map(|(_, d)| regex_patterns(d))
            .flat_map(|p| crate::conf::captures::captures(&p))
            .collect();
        for (_, d) in walk_depth(server) {
            for arg in d.args.iter() {
                todo.extend(variables(arg));
            }
            if PASS_DIRECTIVES.contains(&d.name.as_str()) {
                names.extend(d.args.first().and_then(|a| pass_host(a)));
                if let Some(arg) = d.args.first() {
                    let expanded = crate::conf::captures::expand(arg, &captures);
                    names.extend(expanded.iter().filter_map(|t| pass_host(t)));
                }
            }
        }
        let mut seen_vars: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        while let Some(var) = todo.pop() {
            if !seen_vars.insert(var.clone()) {
                continue;
            }
            let Some(def) = self.vars.get(&var) else {
                continue;
            };
            out.push(dep(format!("{} ${var}", def.name), def));
            for arg in def.args.iter() {
                todo.extend(variables(arg));
            }
            for (_, entry) in walk_depth(def).skip(1) {
                for arg in entry.args.iter() {
                    todo.extend(variables(arg));
                    names.extend(pass_host(arg));
                }
            }
        }
        let mut ups: Vec<&String> = names
            .iter()
            .filter(|n| self.upstreams.contains_key(*n))
            .collect();
        ups.sort();
        for name in ups {
            out.push(dep(format!("upstream {name}"), self.upstreams[name]));
        }
        out.into_boxed_slice()
    }
}

/// The URI a block's `auth_request` asks: its own (`off`: none), else the outer one.
fn auth_request_of<'a>(outer: Option<&'a str>, d: &'a Directive) -> Option<&'a str> {
    match d.children().iter().rev().find(|c| c.name == "auth_request") {
        Some(c) if c.arg0().eq_ignore_ascii_case("off") => None,
        Some(c) => Some(c.arg0()),
        None => outer,
    }
}

fn dep(what: String, d: &Directive) -> Dep {
    Dep {
        what,
        hash: subtree_hash(d),
        file: d.file.clone(),
        line: d.line,
    }
}

/// The variable names in one word: `$pool`, `${pool}`, lowercase, without the `$`.
pub(crate) fn variables(word: &str) -> Vec<String> {
    let b = word.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let braced = b.get(i + 1) == Some(&b'{');
        let start = i + 1 + usize::from(braced);
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if end > start {
            out.push(word[start..end].to_ascii_lowercase());
        }
        i = end.max(i + 1);
    }
    out
}

/// The regexes of a directive whose captures a `*_pass` may read: a regex location's, and a
/// regex `server_name`'s.
fn regex_patterns(d: &Directive) -> Vec<String> {
    match d.name.as_str() {
        "location" => match crate::conf::servers::location_args(&d.args) {
            (Some(m), p) if m == "~" || m == "~*" => vec![p],
            _ => Vec::new(),
        },
        "server_name" => (d.args.iter())
            .filter_map(|a| a.strip_prefix('~').map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The host part of a `*_pass` argument or a map value that may name an upstream:
/// `http://api/x` → `api`, `api:9000` → `api`; `None` for unix sockets.
fn pass_host(arg: &str) -> Option<String> {
    let rest = arg.split_once("://").map_or(arg, |(_, r)| r);
    if rest.starts_with("unix:") || rest.is_empty() {
        return None;
    }
    let end = rest.find(['/', ':', '?']).unwrap_or(rest.len());
    let host = &rest[..end];
    (!host.is_empty() && !host.contains('$')).then(|| host.to_ascii_lowercase())
}

/// Compare two trees' prints: the candidate's servers whose effective configuration differs,
/// each with why, and the servers only last-good had.
pub fn between(old: &Prints, new: &Prints) -> Impact {
    let context_reason: HashMap<Context, Reason> = (new.inherited.iter())
        .filter_map(|(ctx, marks)| {
            let before = old.inherited.iter().find(|(c, _)| c == ctx);
            let before = before.map(|(_, m)| m.as_slice()).unwrap_or(&[]);
            inherited_difference(before, marks, &old.root, &new.root, *ctx).map(|r| (*ctx, r))
        })
        .collect();
    let pairs = pair(old, new);
    let default_changes = default_changes(old, new, &pairs);
    let sockets = socket_changes(old, new);
    let mut affected = Vec::new();
    for s in &new.servers {
        let mut reasons = Vec::new();
        // An address's protocol is every server's there, whichever one's `listen` set it.
        let speaks_otherwise = (sockets.iter())
            .filter(|((ctx, addr), _)| *ctx == s.id.context && s.id.listens.contains(addr))
            .map(|(_, c)| Reason {
                what: c.to_string(),
                file: rel(&new.root, &s.file),
                line: s.line,
            });
        reasons.extend(speaks_otherwise);
        let speaks_anew = !reasons.is_empty();
        // The default server's handshake settings are every TLS handshake's on its address.
        if s.id.context == Context::Http {
            reasons.extend(handshake_changes(old, new, &s.id.listens));
        }
        let mut touched = Touched::Server;
        match pairs.get(&s.id) {
            None => reasons.push(Reason {
                what: "new server".into(),
                file: rel(&new.root, &s.file),
                line: s.line,
            }),
            Some(before) => {
                reasons.extend(context_reason.get(&s.id.context).cloned());
                reasons.extend(identity_differences(before, s, &new.root));
                let inherited = reasons.len();
                reasons.extend(block_difference(before, s));
                let deps = dep_differences(before, s, &old.root);
                touched = match reasons.len() == inherited && deps.is_empty() {
                    true => Touched::Inherited,
                    false => touched_in(before, s, &deps),
                };
                reasons.extend(deps.into_iter().map(|(r, _)| r));
            }
        }
        let defaults =
            (default_changes.iter()).filter(|(c, from)| c.to_id == s.id || *from == s.id);
        let default_reasons: Vec<Reason> = (defaults.map(|(c, _)| Reason {
            what: c.to_string(),
            file: rel(&new.root, &s.file),
            line: s.line,
        }))
        .collect();
        if !default_reasons.is_empty() || speaks_anew {
            // What unknown Hosts get changes, or how every request is spoken: whatever
            // location answers them.
            touched = Touched::Server;
        }
        reasons.extend(default_reasons);
        if !reasons.is_empty() {
            let before = match pairs.get(&s.id) {
                None => Predecessor::New,
                Some(b) => Predecessor::Had {
                    listens: b.id.listens.clone(),
                    names: b.id.names.clone(),
                    websocket: b.websocket.iter().map(|k| k.to_string()).collect(),
                    locations: b.locations.iter().map(|l| l.key.to_string()).collect(),
                    moved: moved_locations(b, s),
                },
            };
            affected.push(Affected {
                before,
                ..s.affected_at(reasons, touched)
            });
        }
    }
    let paired: HashSet<*const ServerPrint> = pairs.values().map(|o| *o as *const _).collect();
    let new_ids: HashSet<&ServerId> = new.servers.iter().map(|s| &s.id).collect();
    let removed = (old.servers.iter())
        .filter(|s| !paired.contains(&(*s as *const _)) && !new_ids.contains(&s.id))
        .map(|s| Removed {
            label: s.id.to_string(),
            file: rel(&old.root, &s.file),
            line: s.line,
            id: s.id.clone(),
        })
        .collect();
    Impact {
        total: new.servers.len(),
        baseline: true,
        affected,
        removed,
        default_changes: default_changes.into_iter().map(|(c, _)| c).collect(),
        outside_servers: outside_differences(old, new),
        takeovers: takeovers(old, new),
        socket_changes: sockets.into_iter().map(|(_, c)| c).collect(),
        names_dropped: names_dropped(old, new, &pairs),
        listens_dropped: stream_listens_dropped(old, new),
        sockets_before: old.sockets.clone(),
        zones_rekeyed: zones::rekeyed(&old.zones, &new.zones, &new.root),
    }
}

/// A name one server answered on a listen before the change that another server takes from
/// it: both now name it there, and nginx gives it to the one defined first, ignoring it in the
/// other ("conflicting server name ... ignored"). A copied site that kept the original's
/// `server_name`, in a file that sorts first, serves the original's clients from its backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Takeover {
    /// `127.0.0.1:8080`.
    pub listen: String,
    pub name: String,
    /// The server that answers it now: `the server at sites-enabled/blog.test:3`.
    pub to: String,
    pub to_file: String,
    pub to_line: u32,
    /// The server that answered it before and still names it: `the server at
    /// sites-enabled/shop.test:1`.
    pub from: String,
    /// For a Host a regex or wildcard name took (`eu0.shop.test`, derived from
    /// `~^eu\d+\.shop\.test$`): why the other server takes it now, by nginx's order (an
    /// exact name, then the longest leading wildcard, then the longest trailing one, then the
    /// first regex in configuration order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_order: Option<String>,
}

impl fmt::Display for Takeover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.by_order {
            return write!(
                f,
                "{} on {} now goes to {} ({why}), not to {}, which answered it before and \
                 still names it",
                self.name, self.listen, self.to, self.from
            );
        }
        write!(
            f,
            "server_name {} on {} now goes to {}, defined first; nginx ignores it in {}, which \
             answered it before (\"conflicting server name\")",
            self.name, self.listen, self.to, self.from
        )
    }
}

/// The names each server of `prints` answers on each listen: the first server (in
/// configuration order) that names it there. `_` and the empty name, which catch-alls share,
/// and regular expressions, which nginx tries in order, are left out.
fn owners(prints: &Prints) -> HashMap<(&str, &str), usize> {
    let mut out = HashMap::new();
    for (i, s) in prints.servers.iter().enumerate() {
        for l in &s.id.listens {
            for n in &s.id.names {
                if n.is_empty() || n == "_" || n.starts_with('~') {
                    continue;
                }
                out.entry((l.as_str(), n.as_str())).or_insert(i);
            }
        }
    }
    out
}

/// Which server of `prints` nginx gives Host `host` on `listen`, by its order: an exact
/// name, the longest leading wildcard, the longest trailing wildcard, the first regex; with
/// what name took it.
fn host_taker<'a>(prints: &'a Prints, listen: &str, host: &str) -> Option<(usize, &'a str)> {
    let on = || {
        (prints.servers.iter().enumerate())
            .filter(|(_, s)| s.id.listens.iter().any(|l| l == listen))
            .flat_map(|(i, s)| s.id.names.iter().map(move |n| (i, n.as_str())))
    };
    let host = host.to_ascii_lowercase();
    if let Some(exact) = on().find(|(_, n)| n.eq_ignore_ascii_case(&host)) {
        return Some(exact);
    }
    let longest = |f: fn(&str, &str) -> Option<usize>| {
        let lower = |n: &str| n.to_ascii_lowercase();
        (on().filter_map(|(i, n)| f(&lower(n), &host).map(|len| (len, i, n))))
            .fold(None, |best: Option<(usize, usize, &str)>, c| match best {
                Some(b) if b.0 >= c.0 => Some(b),
                _ => Some(c),
            })
            .map(|(_, i, n)| (i, n))
    };
    longest(host_map::leading_wildcard)
        .or_else(|| longest(host_map::trailing_wildcard))
        .or_else(|| on().find(|(_, n)| n.starts_with('~') && host_map::server_name_takes(n, &host)))
}

/// Why `name` wins over `lost` by nginx's order of server names.
fn precedence(name: &str, lost: &str) -> String {
    let kind = |n: &str| match () {
        _ if n.starts_with('~') => 3,
        _ if n.ends_with('*') => 2,
        _ if n.starts_with('*') || n.starts_with('.') => 1,
        _ => 0,
    };
    match (kind(name), kind(lost)) {
        (3, 3) => format!("its regex {name} is tried first, in configuration order"),
        (k, l) if k < l => format!("its name {name} wins over the regex or wildcard {lost}"),
        _ => format!("its name {name} matches more of it than {lost}"),
    }
}

/// Takeovers of the Hosts a regex or wildcard name of last-good's server took (see
/// [`Takeover::by_order`]): a site file renamed so another site's regex is tried first, a
/// `*.shop.test` added where `~^eu\d+\.shop\.test$` answered.
fn pattern_takeovers(
    old: &Prints,
    new: &Prints,
    same: impl Fn(&ServerPrint, &ServerPrint) -> bool,
    label: impl Fn(&Prints, &ServerPrint) -> String,
) -> Vec<Takeover> {
    let mut out: Vec<Takeover> = Vec::new();
    for (oi, o) in old.servers.iter().enumerate() {
        for n in &o.id.names {
            let hosts = match n.strip_prefix('~') {
                Some(re) => {
                    crate::conf::example::examples(re, true, crate::conf::example::Kind::Host)
                }
                None if n.contains('*') || n.starts_with('.') => {
                    crate::health::hosts::wildcard_hosts(n)
                }
                None => continue,
            };
            for l in &o.id.listens {
                for h in hosts.iter().take(3) {
                    if host_taker(old, l, h).map(|t| t.0) != Some(oi) {
                        continue;
                    }
                    let Some((ti, by)) = host_taker(new, l, h) else {
                        continue;
                    };
                    let t = &new.servers[ti];
                    let keeps = |s: &&ServerPrint| {
                        s.id.listens.iter().any(|x| x == l) && s.id.names.contains(n)
                    };
                    let Some(s) = (new.servers.iter()).filter(keeps).find(|s| same(o, s)) else {
                        continue;
                    };
                    if std::ptr::eq(s, t) || out.iter().any(|x| x.listen == *l && x.name == *h) {
                        continue;
                    }
                    out.push(Takeover {
                        listen: l.clone(),
                        name: format!("{h} (a Host {n} takes)"),
                        to: label(new, t),
                        to_file: rel(&new.root, &t.file),
                        to_line: t.line,
                        from: label(new, s),
                        by_order: Some(precedence(by, n)),
                    });
                    break;
                }
            }
        }
    }
    out
}

/// See [`Takeover`]: the server that owned a name before is the candidate's server of the same
/// identity in the same file (or at the same place), still naming it, but no longer first.
fn takeovers(old: &Prints, new: &Prints) -> Vec<Takeover> {
    let label =
        |p: &Prints, s: &ServerPrint| format!("the server at {}:{}", rel(&p.root, &s.file), s.line);
    let same = |o: &ServerPrint, s: &ServerPrint| {
        let (of, sf) = (rel(&old.root, &o.file), rel(&new.root, &s.file));
        o.id.context == s.id.context && of == sf && (o.id == s.id || o.line == s.line)
    };
    let before = owners(old);
    let mut out: Vec<Takeover> = Vec::new();
    let mut now: Vec<((&str, &str), usize)> = owners(new).into_iter().collect();
    now.sort();
    for ((listen, name), t) in now {
        let Some(&o) = before.get(&(listen, name)) else {
            continue;
        };
        let (o, t) = (&old.servers[o], &new.servers[t]);
        if same(o, t) {
            continue;
        }
        let claims = |s: &&ServerPrint| {
            !std::ptr::eq(*s, t)
                && s.id.listens.iter().any(|l| l == listen)
                && s.id.names.iter().any(|n| n == name)
        };
        if let Some(s) = (new.servers.iter()).filter(claims).find(|s| same(o, s)) {
            out.push(Takeover {
                listen: listen.to_string(),
                name: name.to_string(),
                to: label(new, t),
                to_file: rel(&new.root, &t.file),
                to_line: t.line,
                from: label(new, s),
                by_order: None,
            });
        }
    }
    out.extend(pattern_takeovers(old, new, same, label));
    out
}

/// Each server of the candidate with the last-good server it is: the one of the same
/// identity, else (for a server whose names or listens changed) one of the same context left
/// unpaired at the same file and line with the same names, or the same listens and a name in
/// common; else one with the same listens and names one holds all of the other's, or the same
/// names and listens one holds all of the other's. A name added or a listen removed is a
/// change of that server, not a new server and a removed one; a block replaced by another of
/// other names is still new, and the one it replaced removed.
fn pair<'a>(old: &'a Prints, new: &'a Prints) -> HashMap<&'a ServerId, &'a ServerPrint> {
    let mut by_id: HashMap<&ServerId, &ServerPrint> = HashMap::new();
    for s in &old.servers {
        by_id.entry(&s.id).or_insert(s);
    }
    let mut out: HashMap<&ServerId, &ServerPrint> = HashMap::new();
    for s in &new.servers {
        if let Some(o) = by_id.get(&s.id) {
            out.insert(&s.id, o);
        }
    }
    let new_ids: HashSet<&ServerId> = new.servers.iter().map(|s| &s.id).collect();
    let mut left: Vec<&ServerPrint> = (old.servers.iter())
        .filter(|o| !new_ids.contains(&o.id))
        .collect();
    let rules: [fn(&ServerId, &ServerId) -> bool; 3] = [
        |o, s| o.names == s.names || (o.listens == s.listens && share(&o.names, &s.names)),
        |o, s| o.listens == s.listens && nested(&o.names, &s.names),
        |o, s| o.names == s.names && nested(&o.listens, &s.listens),
    ];
    let place = |o: &ServerPrint, s: &ServerPrint| o.file == s.file && o.line == s.line;
    // The first rule holds only at the same place.
    for (k, rule) in rules.iter().enumerate() {
        for s in &new.servers {
            if out.contains_key(&s.id) {
                continue;
            }
            let found = (left.iter()).position(|o| {
                o.id.context == s.id.context && rule(&o.id, &s.id) && (k > 0 || place(o, s))
            });
            if let Some(k) = found {
                out.insert(&s.id, left.remove(k));
            }
        }
    }
    out
}

/// Whether one list holds all of the other's, the smaller one not empty.
fn nested(a: &[String], b: &[String]) -> bool {
    let within = |a: &[String], b: &[String]| !a.is_empty() && a.iter().all(|x| b.contains(x));
    within(a, b) || within(b, a)
}

fn share(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.contains(x))
}

/// What changed in a paired server's names and listens: `server_name adds c.example`,
/// `listen removes 127.0.0.1:8443`.
fn identity_differences(old: &ServerPrint, new: &ServerPrint, root: &Path) -> Vec<Reason> {
    let mut out = Vec::new();
    let (o, n) = (&old.id, &new.id);
    let sides = [
        ("server_name adds", &n.names, &o.names),
        ("server_name removes", &o.names, &n.names),
        ("listen adds", &n.listens, &o.listens),
        ("listen removes", &o.listens, &n.listens),
    ];
    for (what, these, from) in sides {
        let only: Vec<&str> = (these.iter())
            .filter(|x| !from.contains(x))
            .map(|x| x.as_str())
            .collect();
        if !only.is_empty() {
            out.push(Reason {
                what: format!("{what} {}", only.join(" ")),
                file: rel(root, &new.file),
                line: new.line,
            });
        }
    }
    out
}

/// Per listen of `http` servers, the server that answers a Host no `server_name` matches: the
/// one whose listen there says `default_server`, else the first in file order.
fn default_servers(prints: &Prints) -> HashMap<&str, &ServerPrint> {
    let mut out: HashMap<&str, (&ServerPrint, bool)> = HashMap::new();
    for s in prints
        .servers
        .iter()
        .filter(|s| s.id.context == Context::Http)
    {
        for listen in &s.id.listens {
            let explicit = s.defaults.iter().any(|d| **d == **listen);
            let slot = out.entry(listen.as_str()).or_insert((s, explicit));
            if explicit && !slot.1 {
                *slot = (s, true);
            }
        }
    }
    out.into_iter().map(|(l, (s, _))| (l, s)).collect()
}

/// The listens both trees have whose default server differs, by listen, each with the
/// identity of last-good's default server.
fn default_changes(
    old: &Prints,
    new: &Prints,
    pairs: &HashMap<&ServerId, &ServerPrint>,
) -> Vec<(DefaultChange, ServerId)> {
    let before = default_servers(old);
    let same = |from: &ServerPrint, to: &ServerPrint| {
        from.id == to.id || pairs.get(&to.id).is_some_and(|o| std::ptr::eq(*o, from))
    };
    let mut out: Vec<(DefaultChange, ServerId)> = (default_servers(new).into_iter())
        .filter_map(|(listen, to)| {
            let from = before.get(listen).filter(|from| !same(from, to))?;
            let change = DefaultChange {
                listen: listen.to_string(),
                from: format!("{} ({}:{})", from.id, rel(&old.root, &from.file), from.line),
                to: format!("{} ({}:{})", to.id, rel(&new.root, &to.file), to.line),
                to_id: to.id.clone(),
            };
            Some((change, from.id.clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.listen.cmp(&b.0.listen));
    out
}

/// The first inherited directive added or changed (else the first removed), as a reason.
fn inherited_difference(
    old: &[Mark],
    new: &[Mark],
    old_root: &Path,
    new_root: &Path,
    ctx: Context,
) -> Option<Reason> {
    let scope = match ctx {
        Context::Http => "http",
        Context::Stream => "stream",
    };
    let count = |marks: &[Mark]| {
        let mut m: HashMap<u64, usize> = HashMap::new();
        for k in marks {
            *m.entry(k.hash).or_default() += 1;
        }
        m
    };
    let (mut before, mut after) = (count(old), count(new));
    let added = new.iter().find(|k| {
        let n = before.entry(k.hash).or_default();
        let missing = *n == 0;
        *n = n.saturating_sub(1);
        missing
    });
    let (k, root, gone) = match added {
        Some(k) => (k, new_root, ""),
        None => {
            let k = old.iter().find(|k| {
                let n = after.entry(k.hash).or_default();
                let missing = *n == 0;
                *n = n.saturating_sub(1);
                missing
            })?;
            (k, old_root, " (removed)")
        }
    };
    Some(Reason {
        what: format!("{scope}: {}{gone}", k.name),
        file: rel(root, &k.file),
        line: k.line,
    })
}

/// Every directive outside the servers that one tree has and the other has not (compared as
/// multisets of subtree hashes, so a move to another file or line is no difference): the
/// candidate's place for one added or changed, last-good's for one removed.
fn outside_differences(old: &Prints, new: &Prints) -> Vec<Reason> {
    let count = |prints: &Prints| {
        let mut m: HashMap<(&str, u64), usize> = HashMap::new();
        for (scope, k) in &prints.outside {
            *m.entry((*scope, k.hash)).or_default() += 1;
        }
        m
    };
    let (mut before, mut after) = (count(old), count(new));
    let mut out = Vec::new();
    let mut unmatched = |prints: &Prints, other: &mut HashMap<(&str, u64), usize>, gone| {
        for (scope, k) in &prints.outside {
            let n = other.entry((*scope, k.hash)).or_default();
            if *n == 0 {
                out.push(Reason {
                    what: format!("{scope}: {}{gone}", k.name),
                    file: rel(&prints.root, &k.file),
                    line: k.line,
                });
            }
            *n = n.saturating_sub(1);
        }
    };
    unmatched(new, &mut before, "");
    unmatched(old, &mut after, " (removed)");
    out
}

/// Where the server's own block first differs.
fn block_difference(old: &ServerPrint, new: &ServerPrint) -> Option<Reason> {
    let first = (old.block.iter().zip(new.block.iter())).position(|(a, b)| a.0 != b.0);
    let (file, line) = match first {
        Some(i) => (&new.block[i].1, new.block[i].2),
        None if old.block.len() == new.block.len() => return None,
        None => match new.block.get(old.block.len()) {
            Some(extra) => (&extra.1, extra.2),
            None => (&new.file, new.line),
        },
    };
    Some(Reason {
        what: "server block".into(),
        file: rel(&new.root, file),
        line,
    })
}

/// Each upstream or variable the server goes through that is new, changed or gone, with the
/// dependency's name (`upstream api`).
/// The locations of `new` (by key) whose requests go elsewhere than those of `old`'s location
/// of the same key: another `*_pass` or target, or an upstream or map on their way whose
/// block differs. A location `old` lacks is not among them (see
/// [`Predecessor::had_location`]).
fn moved_locations(old: &ServerPrint, new: &ServerPrint) -> Vec<String> {
    let dep = |p: &ServerPrint, what: &str| p.deps.iter().find(|d| d.what == what).map(|d| d.hash);
    let mut out = Vec::new();
    for l in new.locations.iter() {
        let Some(o) = old.locations.iter().find(|o| o.key == l.key) else {
            continue;
        };
        let edited = (l.uses.iter()).any(|u| dep(new, u).is_none_or(|h| dep(old, u) != Some(h)));
        if o.pass != l.pass || o.uses != l.uses || edited {
            out.push(l.key.to_string());
        }
    }
    out
}

fn dep_differences(old: &ServerPrint, new: &ServerPrint, old_root: &Path) -> Vec<(Reason, String)> {
    let mut out = Vec::new();
    for d in new.deps.iter() {
        let same = old
            .deps
            .iter()
            .any(|o| o.what == d.what && o.hash == d.hash);
        if !same {
            let reason = Reason {
                what: d.what.clone(),
                file: rel(&new.root, &d.file),
                line: d.line,
            };
            out.push((reason, d.what.clone()));
        }
    }
    for o in old.deps.iter() {
        if !new.deps.iter().any(|d| d.what == o.what) {
            let reason = Reason {
                what: format!("{} (removed)", o.what),
                file: rel(old_root, &o.file),
                line: o.line,
            };
            out.push((reason, o.what.clone()));
        }
    }
    out
}

/// Where in a matched server the change is: its own directives outside locations (the whole
/// server), else the locations whose block differs, that pass through a changed upstream or
/// map (`deps`), or whose `auth_request` asks such a location. A change no location holds (a
/// location removed) is the whole server's.
fn touched_in(old: &ServerPrint, new: &ServerPrint, deps: &[(Reason, String)]) -> Touched {
    if old.own != new.own {
        return Touched::Server;
    }
    let changed = |loc: &LocationPrint| {
        let before = old.locations.iter().find(|o| o.key == loc.key);
        before.is_none_or(|o| o.hash != loc.hash)
            || (loc.uses.iter()).any(|u| deps.iter().any(|(_, d)| **u == **d))
    };
    let mut keys: Vec<String> = (new.locations.iter())
        .filter(|l| changed(l))
        .map(|l| l.key.to_string())
        .collect();
    let gone = (old.locations.iter()).any(|o| !new.locations.iter().any(|l| l.key == o.key));
    if keys.is_empty() || gone {
        return Touched::Server;
    }
    // A location whose subrequest lands on a changed one (`auth_request /auth` and
    // `location = /auth`) fails with it.
    let asks_changed = |uri: &str| (keys.iter()).any(|k| k.strip_prefix("= ").unwrap_or(k) == uri);
    let asking: Vec<String> = (new.locations.iter())
        .filter(|l| l.auth_request.as_deref().is_some_and(asks_changed))
        .map(|l| l.key.to_string())
        .filter(|k| !keys.contains(k))
        .collect();
    keys.extend(asking);
    Touched::Locations(keys)
}

#[cfg(test)]
mod tests;
mod zones;
pub use zones::ZoneRekeyed;
