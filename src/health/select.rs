//! The checks for a candidate: requests through nginx for every server the change affects.
//!
//! Each affected server is checked on every `server_name` (a leading-dot name as the name
//! itself, a wildcard with a label filled in, a regex one on a Host derived from it that nginx
//! gives this server, else it is said to be unchecked), on each Host a `map $host` routes to
//! another upstream than those names get (`hosts`), on each path a `map $uri` routes to
//! another upstream than the location's own path gets (`conf::uri_map`), on every proxied
//! location a path is known to reach (prefix and exact ones as written, regex ones on the
//! first path derived from their branches that no other location takes, named and `internal`
//! ones through the `try_files` (or, where no backend answers, the `error_page 404`) that
//! leads to them, those with no `*_pass` whose `auth_request` reaches a backend, and those
//! with none that `rewrite` to one, see `conf::rewrites`; the `internal` location such a
//! subrequest or rewrite lands on is verified through them, never requested itself), and on
//! every listen this machine can reach. A location only a backend's 404 or failure leads to
//! is not verified, and neither is a backend whose own 502 or 504 an `error_page` answers for
//! (`*_intercept_errors on`): the answer does not say which one answered. Where nginx makes
//! the 502 itself (the backend refused, closed, timed out) it logs the failure, and that
//! upstream error decides.
//! Where the change makes it the default server of a listen, the default route (a Host no
//! name matches) is checked too. A request must land on that server: a wildcard listen is
//! reached through a loopback address no specific listen on the same port claims, and a
//! server with no name is asked by its listen's IP where it is the default server there, else
//! with no Host at all (HTTP/1.0), which nginx gives to the server whose implicit
//! `server_name ""` it is. What cannot be checked is listed with why.
//!
//! A change to thousands of servers cannot have all of that checked inside the window, so a
//! round holds at most `MAX_CHECKS` requests: one per affected server first (an even spread when
//! even that is too many), then more of each server's checks, round-robin. What the change
//! reaches directly goes first at each step: the servers it touched (their block, an upstream
//! or map they pass through) before those that only inherit it, and their checks of the
//! locations it touched before the others. Every affected server left without a check is
//! listed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::Serialize;

use super::hosts::{self, Taker, UNKNOWN_HOST};
use super::{Check, Gate};
use crate::conf::example::{self, Kind};
use crate::conf::servers::SocketFlags;
use crate::conf::targets::Context;
use crate::conf::variants::{Extra, Variant};
use crate::conf::{Listen, ListenAddr, Location, Reach, Server};
use crate::impact::{Affected, Impact, Predecessor, Reason, ServerId};

/// The most requests in one round.
pub const MAX_CHECKS: usize = 256;

/// Why a check, or a server, was left out by [`MAX_CHECKS`].
pub fn over_the_bound() -> String {
    format!("over the bound of {MAX_CHECKS} requests per round")
}

/// What will be checked, and what will not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub checks: Vec<Check>,
    /// Affected servers with at least one check.
    pub checked: Vec<Covered>,
    /// Affected servers, locations and names that no request checks, each with why.
    pub not_checked: Vec<Unchecked>,
}

/// An affected server some request checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Covered {
    pub server: String,
    /// Where the server block is: `sites.conf:12`.
    pub at: String,
    /// The URLs of its checks.
    #[serde(skip)]
    pub checks: Vec<String>,
    /// What of it no request checks (also in `Plan::not_checked`): a server is verified only
    /// when this is empty and every check passed.
    #[serde(skip)]
    pub left_out: Vec<Unchecked>,
}

/// Something affected that is not verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unchecked {
    pub server: String,
    /// `location ~ \.php$`, `server_name ~^api`, `server` (the whole server).
    pub what: String,
    pub at: String,
    pub why: String,
}

impl Plan {
    /// How many affected servers have no check at all.
    pub fn servers_not_checked(&self) -> usize {
        let whole: HashSet<&str> = (self.not_checked.iter())
            .filter(|u| u.what == "server")
            .map(|u| u.server.as_str())
            .collect();
        whole.len()
    }
}

/// The checks for the servers `impact` names among `servers` (the configuration the requests
/// go to: the candidate's, or the restored one's on a rollback, where servers only the
/// candidate had find no match and drop out).
pub fn focused_checks(servers: &[Server], impact: &Impact, root: &Path) -> Plan {
    let claimed = specific_listens(servers);
    let affected: HashMap<&ServerId, &Affected> =
        impact.affected.iter().map(|a| (&a.id, a)).collect();
    // How many affected servers share each reason: a server the change reaches by a line of
    // its own (its block's proxy_pass) goes before those only a broad change (a snippet every
    // server includes) reaches, so the bound never leaves out the one site an edit broke.
    let mut sharing: HashMap<(&str, &str, u32), usize> = HashMap::new();
    for a in &impact.affected {
        for r in &a.reasons {
            *sharing
                .entry((r.what.as_str(), r.file.as_str(), r.line))
                .or_default() += 1;
        }
    }
    let rarest = |a: &Affected| {
        (a.reasons.iter())
            .map(|r| sharing[&(r.what.as_str(), r.file.as_str(), r.line)])
            .min()
            .unwrap_or(usize::MAX)
    };
    let mut plan = Plan::default();
    let mut per_server: Vec<Candidates> = Vec::new();
    // Per server in `per_server`: where its entries in `plan.not_checked` start and end.
    let mut skipped_at: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let id = ServerId::of(server);
        let Some(&a) = affected.get(&id) else {
            continue;
        };
        if server.context != Context::Http {
            plan.not_checked.push(Unchecked {
                server: id.to_string(),
                what: "server".into(),
                at: at(root, &server.file, server.line),
                why: "a stream server: no request is made to it".into(),
            });
            continue;
        }
        let start = plan.not_checked.len();
        let defaults: Vec<&str> = (impact.default_changes.iter())
            .filter(|c| c.to_id == id)
            .map(|c| c.listen.as_str())
            .collect();
        let found = candidates(servers, i, &defaults, &claimed, root, &mut plan.not_checked);
        skipped_at.push(start..plan.not_checked.len());
        let mut c = Candidates::of(i, found, a, &impact.sockets_before);
        c.rarest = rarest(a);
        per_server.push(c);
    }
    let chosen = choose(&per_server);
    let mut taken = take(&per_server, &chosen, servers, root, &mut plan.checks);
    for (k, c) in per_server.iter().enumerate() {
        let server = &servers[c.server];
        let (label, at) = (
            ServerId::of(server).to_string(),
            at(root, &server.file, server.line),
        );
        if chosen.contains(&k) {
            let (checks, took) = std::mem::take(&mut taken[k]);
            let mut left_out = plan.not_checked[skipped_at[k].clone()].to_vec();
            // Its requests the bound left out, each at the location it stands for.
            let mut over: Vec<Unchecked> = Vec::new();
            for i in took..c.found.len() {
                let check = c.check(i, servers, root);
                let what = format!("GET {}", check.url);
                if !checks.contains(&check.url) && !over.iter().any(|u| u.what == what) {
                    over.push(Unchecked {
                        server: label.clone(),
                        what,
                        at: check.at,
                        why: over_the_bound(),
                    });
                }
            }
            left_out.extend(over.iter().cloned());
            plan.not_checked.extend(over);
            plan.checked.push(Covered {
                server: label,
                at,
                checks,
                left_out,
            });
        } else {
            let why = if c.found.is_empty() {
                unreachable_why(&plan.not_checked[skipped_at[k].clone()])
            } else {
                over_the_bound()
            };
            plan.not_checked.push(Unchecked {
                server: label,
                what: "server".into(),
                at,
                why,
            });
        }
    }
    plan
}

/// The most of last-good's checks carried into a round (see [`carried_checks`]).
pub const MAX_CARRIED: usize = 64;

/// Last-good's checks of the servers the change affects that the candidate no longer asks:
/// the same request, at a location both configurations have, that the change no longer
/// derives a check for (`rewrite ^/(.*)$ /v1/$1 last;` written `/v2/`, so `location /` leads
/// to no backend; `try_files $uri @backnd`): what it answered before is the baseline, and a
/// 404 or 500 where it was served is the change's. `old` is last-good's servers, `asked` the
/// candidate's checks. A location the change removes or renames is carried only where its
/// request now lands on no location that passes or answers it (nginx's own files, or nothing:
/// `location /` renamed `location /app/`, a site's only location deleted); where another
/// location takes it, its requests go elsewhere on purpose.
pub fn carried_checks(
    (old, new): (&[Server], &[Server]),
    impact: &Impact,
    asked: &[Check],
    root: &Path,
) -> Vec<Check> {
    // Last-good's side of each affected server it had, by last-good's identity.
    let mut theirs: HashMap<ServerId, &Affected> = HashMap::new();
    let mut old_impact = Impact::default();
    for a in &impact.affected {
        let Predecessor::Had { listens, names, .. } = &a.before else {
            continue;
        };
        let id = ServerId {
            context: a.id.context,
            listens: listens.clone(),
            names: names.clone(),
            label: None,
        };
        old_impact.affected.push(Affected {
            id: id.clone(),
            before: Predecessor::Unknown,
            ..a.clone()
        });
        theirs.insert(id, a);
    }
    if theirs.is_empty() {
        return Vec::new();
    }
    let by_label: HashMap<String, &Affected> = (old.iter())
        .filter_map(|s| {
            let id = ServerId::of(s);
            theirs.get(&id).map(|a| (id.to_string(), *a))
        })
        .collect();
    // A WebSocket handshake is another request than a plain GET of the same URL: a new
    // location that takes a socket's path and answers it without the upgrade asks the GET.
    let request = |c: &Check| {
        (
            c.connect,
            c.unix.clone(),
            c.host.to_ascii_lowercase(),
            c.path.clone(),
            c.tls,
            c.handshakes(),
        )
    };
    let asked: HashSet<_> = asked.iter().map(request).collect();
    let plan = focused_checks(old, &old_impact, root);
    let mut out: Vec<Check> = Vec::new();
    for mut c in plan.checks {
        let Some(a) = by_label.get(&c.server) else {
            continue;
        };
        // The same server still answers it there: not a name or listen the change retires.
        let host =
            (!c.host.is_empty() && c.host.parse::<IpAddr>().is_err()).then_some(c.host.as_str());
        let now = new.iter().find(|s| ServerId::of(s) == a.id);
        // A location the change removed whose request no location takes now: nginx answers
        // it from files where a backend did.
        let orphaned = || now.is_some_and(|s| taken_by_location(s, &c.path) == Some(false));
        if c.location.is_empty()
            || (!a.locations.contains(&c.location) && !orphaned())
            || !crate::impact::answers(&a.id.listens, &a.id.names, &c.listen, host)
            || asked.contains(&request(&c))
            || out.iter().any(|o| request(o) == request(&c))
        {
            continue;
        }
        c.server = a.label.clone();
        c.what = match a.locations.contains(&c.location) {
            true => format!("{}, as last-good checked it", c.what),
            false => format!(
                "{}, which the change removes (no location takes its requests now), as \
                 last-good checked it",
                c.what
            ),
        };
        // A path made up to reach the location (`/tf/safe-reload-check` for its `try_files`)
        // is no page a client asks: where the location it lands on now serves files alone
        // (`try_files $uri =404`, made static on purpose) its 404 is no regression, but a
        // server error is, as for a request with no baseline. Where it still falls through
        // to a backend (a front controller's `try_files ... index.php`), what it got before
        // is its baseline: a 404 for every permalink is the change's. So it is where the
        // location it stood for still passes to its backend (a WordPress `location /` whose
        // `try_files` now ends in `=404` in front of `location ~ \.php$`, which `/index.php`
        // still reaches): the fallback to it is gone by mistake, not the backend.
        let made_up = c.path.contains("safe-reload-check");
        // A named location left in the file is reached by nothing else: no sign of a mistake.
        let still_passes = |s: &Server| {
            (s.locations.iter())
                .any(|l| l.key() == c.location && l.pass != "return" && !l.path.starts_with('@'))
        };
        c.fresh = made_up && now.is_none_or(|s| serves_files_at(s, &c.path) && !still_passes(s));
        c.made_up_in_new = false;
        c.new_backend = false;
        out.push(c);
        if out.len() >= MAX_CARRIED {
            break;
        }
    }
    out
}

/// Whether one of `server`'s locations takes `path` (a prefix, exact or regex match; `None`
/// where a regex cannot be evaluated): one that passes it on, answers it itself, or serves
/// files alone (a site made static on purpose, `location / { try_files $uri =404; }`, or
/// `location / { root ...; }`).
fn taken_by_location(server: &Server, path: &str) -> Option<bool> {
    // A server-level `return` answers every request itself.
    if server.answers.is_some() {
        return Some(true);
    }
    let written = (server.locations.iter())
        .map(|l| (l.modifier.as_deref(), l.path.as_str()))
        .chain((server.unbacked.iter()).map(|u| (u.modifier.as_deref(), u.path.as_str())))
        .chain((server.static_files.iter()).map(|(m, p)| (m.as_deref(), p.as_str())));
    let mut unknown = false;
    for (modifier, location) in written {
        match location_takes(modifier, location, path) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    (!unknown).then_some(false)
}

/// Whether a location of `modifier` and `location` takes a request for `path`; `None` for a
/// regex that does not compile here.
fn location_takes(modifier: Option<&str>, location: &str, path: &str) -> Option<bool> {
    match modifier {
        None | Some("^~") => Some(path.starts_with(location)),
        Some("=") => Some(path == location),
        Some(m) => (regex::RegexBuilder::new(location).case_insensitive(m == "~*"))
            .build()
            .ok()
            .map(|re| re.is_match(path)),
    }
}

/// Whether `path` lands, by the longest prefix, on one of `server`'s locations that answer
/// from files alone (see `Server::unbacked`); a regex location is not matched here.
fn serves_files_at(server: &Server, path: &str) -> bool {
    let prefix_len = |modifier: Option<&str>, location: &str| match modifier {
        None | Some("^~") | Some("=") => location_takes(modifier, location, path)
            .unwrap_or(false)
            .then_some(location.len()),
        Some(_) => None,
    };
    let longest_static = (server.unbacked.iter())
        .filter_map(|u| prefix_len(u.modifier.as_deref(), &u.path))
        .max();
    let longest_proxied = (server.locations.iter())
        .filter(|l| l.modifier.as_deref() != Some("="))
        .filter_map(|l| prefix_len(l.modifier.as_deref(), &l.path))
        .max();
    longest_static.is_some_and(|s| longest_proxied.is_none_or(|p| s >= p))
}

/// One affected server's candidates, those the change reaches directly first.
struct Candidates<'a> {
    /// Its index among the servers.
    server: usize,
    found: Vec<Candidate<'a>>,
    /// How many of `found` (the first ones) the change reaches directly: their location,
    /// what it passes to, or the default route.
    touched: usize,
    /// Whether the change reaches the server itself, not only what it inherits.
    direct: bool,
    /// How many affected servers share the reason it has that the fewest share.
    rarest: usize,
    /// Which of its requests last-good's server answered.
    before: &'a Predecessor,
    /// How last-good spoke on each address (see `Impact::sockets_before`).
    sockets_before: &'a HashMap<(Context, String), SocketFlags>,
}

impl<'a> Candidates<'a> {
    fn of(
        server: usize,
        mut found: Vec<Candidate<'a>>,
        a: &'a Affected,
        sockets_before: &'a HashMap<(Context, String), SocketFlags>,
    ) -> Candidates<'a> {
        let touched = &a.touched;
        let reaches = |c: &Candidate| {
            matches!(c.route, Route::Default(_)) || touched.reaches(&c.location.key())
        };
        // Within each part, one request per listen before a second on any (its other names
        // on port 80 after its first request over TLS, so a bound that takes one or two per
        // server still reaches each address it listens on), and over TLS first where the
        // change is to TLS (`ssl_protocols`, a certificate renewed).
        let tls_first = a.reasons.iter().any(Reason::is_tls);
        let mut rank: Vec<usize> = Vec::with_capacity(found.len());
        let mut per_listen: HashMap<String, usize> = HashMap::new();
        for c in &found {
            let n = per_listen.entry(c.listen.addr.to_string()).or_default();
            rank.push(*n);
            *n += 1;
        }
        let mut keyed: Vec<(bool, usize, bool, Candidate<'a>)> = (found.drain(..).zip(rank))
            .map(|(c, r)| (!reaches(&c), r, tls_first && !c.listen.ssl, c))
            .collect();
        // A stable sort: each part keeps the most telling first.
        keyed.sort_by_key(|(far, rank, plain, _)| (*far, *rank, *plain));
        found.extend(keyed.into_iter().map(|(.., c)| c));
        Candidates {
            server,
            touched: found.iter().filter(|c| reaches(c)).count(),
            found,
            direct: touched.is_direct(),
            rarest: usize::MAX,
            before: &a.before,
            sockets_before,
        }
    }

    /// Candidate `k`'s check, marked fresh when another server answered it before the change.
    fn check(&self, k: usize, servers: &[Server], root: &Path) -> Check {
        let c = &self.found[k];
        let host = match &c.host {
            Host::Name(name) => Some(name.as_str()),
            Host::Ip(_) | Host::Absent => None,
        };
        let websocket = self.before.websocket(&c.location.key());
        let server = &servers[self.server];
        let listen = c.listen.addr.to_string();
        // An address whose `ssl` or `http2` the change turns on or off is spoken to as its
        // clients did before (they do not change with it: an `http2` copied onto a plain
        // listen leaves every browser without an answer); a `proxy_protocol` is the load
        // balancer's, which sends it as nginx asks.
        let mut speak = c.listen.flags();
        let mut running_proxy_protocol = None;
        if let Some(before) = self.sockets_before.get(&(server.context, listen.clone())) {
            (speak.ssl, speak.http2) = (before.ssl, before.http2);
            running_proxy_protocol =
                (before.proxy_protocol != speak.proxy_protocol).then_some(before.proxy_protocol);
        }
        // A location the change adds, checked on a path made up to reach it: that path was
        // another location's before, and the new app's 404 for it (where an old catch-all
        // served every path) is no regression. Its own paths keep their baseline.
        let made_up = c.path.contains("safe-reload-check");
        let new_location = !self.before.had_location(&c.location.key());
        let moved = self.before.passes_elsewhere(&c.location.key());
        Check {
            fresh: !self.before.answered(&listen, host),
            made_up_in_new: made_up && new_location,
            new_backend: new_location || moved,
            location: c.location.key(),
            listen: listen.clone(),
            running_proxy_protocol,
            ..c.check(server, root, websocket, speak)
        }
    }
}

/// Which servers get checks (indices into `per_server`): one check each where the bound
/// allows, those the change reaches directly first, then the others. Over the bound, each
/// part starts with a server for every backend it passes to (the first server that passes to
/// a target no server chosen yet reaches): 253 checks of three shared backends would say
/// nothing of the one server on a backend of its own. An even spread of the rest fills what
/// is left.
fn choose(per_server: &[Candidates]) -> BTreeSet<usize> {
    let with = |direct: bool| -> Vec<usize> {
        (0..per_server.len())
            .filter(|&k| !per_server[k].found.is_empty() && per_server[k].direct == direct)
            .collect()
    };
    let mut chosen = BTreeSet::new();
    let mut reached: HashSet<&str> = HashSet::new();
    for direct in [true, false] {
        let mut list = with(direct);
        if chosen.len() + list.len() > MAX_CHECKS {
            // Those with a reason of their own first, when they are few enough to say
            // something apart from the rest (a stable sort keeps the file order).
            list.sort_by_key(|&k| per_server[k].rarest);
            let own = list
                .iter()
                .filter(|&&k| per_server[k].rarest <= FEW)
                .count();
            if own <= MAX_CHECKS / 2 {
                chosen.extend(list.iter().take(own));
            }
            for &k in &list {
                if chosen.len() >= MAX_CHECKS {
                    break;
                }
                let targets = per_server[k]
                    .found
                    .iter()
                    .map(|c| c.location.target.as_str());
                if targets.clone().any(|t| !reached.contains(t)) {
                    reached.extend(targets);
                    chosen.insert(k);
                }
            }
        }
        let rest: Vec<usize> = list.into_iter().filter(|k| !chosen.contains(k)).collect();
        chosen.extend(spread(&rest, MAX_CHECKS.saturating_sub(chosen.len())));
    }
    chosen
}

/// A reason shared by at most this many affected servers is theirs, not a broad change's.
const FEW: usize = 8;

/// At most `at_most` of `list`, evenly spread over it.
fn spread(list: &[usize], at_most: usize) -> impl Iterator<Item = usize> + '_ {
    let (n, m) = (list.len(), list.len().min(at_most));
    (0..m).map(move |k| list[k * n / m])
}

/// The checks of the `chosen` servers, round-robin up to the bound, into `checks`: one for
/// each first, then every one the change reaches directly, then the rest. Per server: the
/// URLs of its checks, and how many of its candidates (always the first ones) were taken.
fn take(
    per_server: &[Candidates],
    chosen: &BTreeSet<usize>,
    servers: &[Server],
    root: &Path,
    checks: &mut Vec<Check>,
) -> Vec<(Vec<String>, usize)> {
    let mut seen: HashSet<Check> = HashSet::new();
    let mut taken: Vec<(Vec<String>, usize)> = vec![(Vec::new(), 0); per_server.len()];
    let rounds: [fn(&Candidates) -> usize; 3] = [|_| 1, |c| c.touched, |c| c.found.len()];
    for upto in rounds {
        loop {
            let mut took_any = false;
            for &k in chosen {
                let (c, next) = (&per_server[k], taken[k].1);
                if checks.len() >= MAX_CHECKS || next >= upto(c).min(c.found.len()) {
                    continue;
                }
                took_any = true;
                taken[k].1 += 1;
                let check = c.check(next, servers, root);
                if !taken[k].0.contains(&check.url) {
                    taken[k].0.push(check.url.clone());
                }
                if seen.insert(check.clone()) {
                    checks.push(check);
                }
            }
            if !took_any || checks.len() >= MAX_CHECKS {
                break;
            }
        }
    }
    taken
}

/// Why a server has no check, from what of it could not be checked (said in full: with `-q`
/// those entries are not shown).
fn unreachable_why(skipped: &[Unchecked]) -> String {
    if skipped.is_empty() {
        return "no proxied location to request".into();
    }
    let reasons: Vec<String> = (skipped.iter())
        .map(|u| format!("{}: {}", u.what, u.why))
        .collect();
    format!("no request is made to it ({})", reasons.join("; "))
}

/// A check before its strings are built: a server's listen, Host and location.
#[derive(Debug, Clone)]
struct Candidate<'a> {
    listen: &'a Listen,
    connect: SocketAddr,
    host: Host,
    location: &'a Location,
    path: &'a str,
    /// Why this Host is sent, when it is not one of the server's names.
    route: Route<'a>,
    /// What the GET adds to take a branch of the location the plain request does not.
    extra: Option<&'a Variant>,
}

/// Why a check sends its Host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    /// One of the server's names (or its listen's IP when it has none).
    Own,
    /// A `map` on the Host routes this one elsewhere: the map's variable.
    HostMap(&'a str),
    /// A Host no `server_name` matches, for the default server of this listen.
    Default(&'a str),
    /// A plain request beside the WebSocket handshake, to a location that passes `Upgrade`
    /// on at a path that is no socket's alone (`/` of a Node app): its pages.
    Pages,
    /// A `map` on the path routes this path elsewhere: the map's branch (`map $pool /api/`).
    PathMap(&'a str),
    /// A capture of the server's regex name picks the upstream (`server_name
    /// ~^(?<app>x|y)\.test$` with `proxy_pass http://$app`): this Host takes another value.
    NameCapture,
}

/// A WebSocket handshake's request headers (RFC 6455, the RFC's own sample key).
const WEBSOCKET_HANDSHAKE: [(&str, &str); 3] = [
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

/// The path with a variant's query parameter, and the headers it adds.
fn with_extra(path: &str, extra: Option<&Variant>) -> (String, Vec<(String, String)>) {
    match extra.map(|v| &v.send) {
        Some(Ok(Extra::Query(name, value))) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            (format!("{path}{sep}{name}={value}"), Vec::new())
        }
        Some(Ok(Extra::Header(name, value))) => {
            (path.to_string(), vec![(name.clone(), value.clone())])
        }
        _ => (path.to_string(), Vec::new()),
    }
}

/// The Host header: a name, or the listen's IP when the server has none and that reaches it,
/// or none at all (HTTP/1.0) for a server of no name another server takes the IP from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
    Absent,
}

impl Candidate<'_> {
    /// The Host header's value.
    fn host_text(host: &Host) -> String {
        match host {
            Host::Name(name) => name.clone(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Absent => String::new(),
        }
    }

    /// `was_websocket`: last-good's location was a WebSocket one, so its clients send the
    /// handshake, which the check sends too (before and after alike).
    /// `speak`: the protocol to speak on the listen (see `Candidates::check`).
    fn check(
        &self,
        server: &Server,
        root: &Path,
        was_websocket: bool,
        speak: SocketFlags,
    ) -> Check {
        let host = Candidate::host_text(&self.host);
        let scheme = if speak.ssl { "https" } else { "http" };
        let loc = self.location;
        let mut what = match &loc.rewritten {
            Some(r) if r.server => r.what.clone(),
            Some(r) => format!("{}, {}", location_what(loc), r.what),
            None => location_what(loc),
        };
        match self.route {
            Route::Own => {}
            Route::HostMap(var) => what.push_str(&format!(", Host routed by map ${var}")),
            Route::Default(listen) => what.push_str(&format!(", default server of {listen}")),
            Route::PathMap(branch) => what.push_str(&format!(", path routed by {branch}")),
            Route::Pages => what.push_str(", its pages"),
            Route::NameCapture => {
                what.push_str(", Host routed by a capture of its regex server_name")
            }
        }
        if let Some(v) = self.extra {
            what.push_str(&format!(", {}", v.what));
        }
        let (mut path, mut headers) = with_extra(self.path, self.extra);
        let source = match self.extra.map(|v| &v.send) {
            Some(Ok(Extra::From(ip))) => Some(IpAddr::V4(*ip)),
            _ => None,
        };
        for (name, value) in loc.check_headers.iter().chain(&server.check_headers) {
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                headers.push((name.clone(), value.clone()));
            }
        }
        let mut sent: String = (headers.iter())
            .map(|(name, value)| format!(", {name}: {value}"))
            .collect();
        if let Some(ip) = source {
            sent.push_str(&format!(", from {ip}"));
        }
        // A WebSocket endpoint gets the handshake its clients send; one that only speaks
        // WebSocket closes on a plain GET, which nginx answers 502. Where last-good's location
        // passed `Upgrade` on (its own or inherited), its clients may open WebSockets there:
        // asked with the handshake, whatever the candidate says. Where only the candidate
        // passes it (the lines written once at the server level for its one socket path), a
        // location is an endpoint where it says so (see `Location::websocket_endpoint`): an
        // app's `/` answers a handshake its browsers never send with its own 400. nginx 1.22
        // speaks only HTTP/2 on a plaintext `http2` listen (no Upgrade there); over TLS, ALPN
        // lets HTTP/1.1 through.
        let http2_only = speak.http2 && !speak.ssl;
        let pages = self.route == Route::Pages;
        if (loc.websocket_endpoint || was_websocket) && !http2_only && !pages {
            for (name, value) in WEBSOCKET_HANDSHAKE {
                headers.push((name.to_string(), value.to_string()));
            }
            sent.push_str(", WebSocket handshake");
            // A Socket.IO server answers a handshake without its protocol version and
            // transport with its own 400: the check sends what its clients send.
            if path.to_ascii_lowercase().contains("/socket.io/") && !path.contains('?') {
                path.push_str(SOCKET_IO_QUERY);
            }
        }
        let unix = match &self.listen.addr {
            ListenAddr::Unix(path) => Some(path.clone()),
            _ => None,
        };
        let via = match &unix {
            Some(path) => format!("unix:{}", path.display()),
            None => self.connect.to_string(),
        };
        Check {
            server: ServerId::of(server).to_string(),
            what,
            at: at(root, &loc.file, loc.line),
            url: match self.host {
                Host::Absent => format!("{scheme}://{via}{path} (HTTP/1.0, no Host{sent})"),
                _ => format!("{scheme}://{host}{path} (via {via}{sent})"),
            },
            connect: self.connect,
            unix,
            dial: None,
            host,
            path,
            tls: speak.ssl,
            proxy_protocol: speak.proxy_protocol,
            http2: http2_only,
            h2: speak.ssl && speak.http2,
            samples_through: None,
            grpc: loc.pass == "grpc_pass",
            gate: Gate {
                auth: loc.auth,
                returns: loc.returns.to_vec(),
                client_certificate: (loc.client_certificate.as_ref())
                    .map(|(file, line)| at(root, file, *line)),
            },
            upstream: (loc.pass != "return").then(|| {
                (self.extra.and_then(|v| v.target.clone())).unwrap_or_else(|| loc.target.clone())
            }),
            headers,
            auth: None,
            source,
            fresh: false,
            running_proxy_protocol: None,
            read_timeout: loc.read_timeout,
            made_up_in_new: false,
            new_backend: false,
            location: String::new(),
            listen: String::new(),
            spread_sources: loc.spread_sources,
        }
    }
}

/// What a Socket.IO client's WebSocket handshake asks (Engine.IO protocol 4).
const SOCKET_IO_QUERY: &str = "?EIO=4&transport=websocket";

fn at(root: &Path, file: &Path, line: u32) -> String {
    let shown = file.strip_prefix(root).unwrap_or(file);
    format!("{}:{line}", shown.display())
}

/// Server `me`'s candidates, most telling first: the default route of each listen in
/// `defaults` (where the change makes it the default server), the first name on each
/// location, each Host a map routes elsewhere on its location, each path a map routes
/// elsewhere, then each other name, then each other listen. What cannot be checked goes to
/// `skipped`.
fn candidates<'a>(
    servers: &'a [Server],
    me: usize,
    defaults: &[&'a str],
    claimed: &HashSet<SocketAddr>,
    root: &Path,
    skipped: &mut Vec<Unchecked>,
) -> Vec<Candidate<'a>> {
    let server = &servers[me];
    let label = ServerId::of(server).to_string();
    let mut skip = |what: String, at: String, why: String| {
        skipped.push(Unchecked {
            server: label.clone(),
            what,
            at,
            why,
        })
    };
    let mut listens = Vec::new();
    let mut order: Vec<&Listen> = server.listens.iter().filter(|l| !l.udp).collect();
    // nginx redirects every plain request of this server itself: its TLS listens are the
    // ones a check reaches the backend through, and its plain ones get the redirect's check.
    let mut plain = Vec::new();
    if server.redirects_plain && order.iter().any(|l| l.ssl) {
        if server.plain_answer.is_some() {
            for &l in order.iter().filter(|l| !l.ssl) {
                if let Ok(addr) = connect_for(l, claimed) {
                    plain.push((l, addr));
                }
            }
        }
        order.retain(|l| l.ssl);
    }
    for l in order {
        match connect_for(l, claimed) {
            Ok(addr) => listens.push((l, addr)),
            Err(why) => skip(format!("listen {}", l.addr), at(root, &l.file, l.line), why),
        }
    }
    let mut names = Vec::new();
    for n in &server.server_names {
        let host = match n.strip_prefix('~') {
            Some(re) => regex_host(servers, me, re, listens.first().map(|&(l, _)| l)).map(Some),
            None => host_for(n).map_err(String::from),
        };
        match host {
            Ok(Some(h)) if !names.contains(&h) => names.push(h),
            Ok(_) => {}
            Err(why) => skip(
                format!("server_name {n}"),
                at(root, &server.file, server.line),
                why,
            ),
        }
    }
    let mut locations = Vec::new();
    let mut conditional = Vec::new();
    for loc in server.locations.iter().chain(&server.answers) {
        if let Some(fallback) = &loc.hidden_failure {
            skip(
                format!("{} backend {}", location_what(loc), loc.target),
                at(root, &loc.file, loc.line),
                format!(
                    "{fallback} answers for it when it fails, and with *_intercept_errors on \
                     nginx logs nothing when the backend answers 502 or 504 itself: an answer \
                     does not say which one answered"
                ),
            );
        }
        let rewritten_when = loc.rewritten.as_ref().and_then(|r| r.when.as_ref());
        let when = rewritten_when.or(loc.only_when.as_ref());
        match (&loc.reach, when) {
            // Reached only by a request that meets an `if`: checked with what meets it.
            (Reach::Path(p), Some(w)) => match &w.send {
                Ok(_) => conditional.push((loc, p.as_str(), w)),
                Err(why) => skip(
                    format!("{}, {}", location_what(loc), w.what),
                    at(root, &w.file, w.line),
                    why.clone(),
                ),
            },
            (Reach::Path(p), None) => locations.push((loc, p.as_str())),
            // Checked through the locations whose `auth_request` asks it.
            (Reach::Subrequest, _) => {}
            (Reach::Unknown(why), _) => skip(
                location_what(loc),
                at(root, &loc.file, loc.line),
                why.clone(),
            ),
        }
    }
    for u in &server.unbacked {
        skip(
            u.what.clone(),
            at(root, &u.file, u.line),
            format!(
                "no backend: {} answers from files or with nginx's own status, so no check \
                 verifies it",
                u.try_files
            ),
        );
    }
    let mut out = Vec::new();
    let Some(&(first_listen, first_addr)) = listens.first() else {
        return out;
    };
    let first_host = match (names.first(), &first_listen.addr) {
        (Some(n), _) => Host::Name(n.clone()),
        (None, ListenAddr::Unix(_)) => Host::Name("localhost".into()),
        (None, _) => match unnamed_host(servers, me, first_listen, first_addr.ip()) {
            Ok(host) => host,
            Err(why) => {
                skip("Host".into(), at(root, &server.file, server.line), why);
                return Vec::new();
            }
        },
    };
    let make =
        |listen: &'a Listen, connect, host: &Host, (location, path): (&'a Location, &'a str)| {
            Candidate {
                listen,
                connect,
                host: host.clone(),
                location,
                path,
                route: Route::Own,
                extra: None,
            }
        };
    if let Some(answer) = &server.plain_answer {
        for &(l, addr) in &plain {
            out.push(make(l, addr, &first_host, (answer, "/")));
        }
    }
    for &listen in defaults {
        let Some(&(l, addr)) = listens.iter().find(|(l, _)| l.addr.to_string() == listen) else {
            continue;
        };
        let what = format!("default route of {listen}");
        let place = at(root, &server.file, server.line);
        let Some(&loc) = locations.first() else {
            skip(
                what,
                place,
                "no proxied location to request it through".into(),
            );
            continue;
        };
        match hosts::taker(servers, &l.addr, UNKNOWN_HOST) {
            Some(Taker::Server(i)) if i == me => out.push(Candidate {
                route: Route::Default(listen),
                ..make(l, addr, &Host::Name(UNKNOWN_HOST.into()), loc)
            }),
            Some(Taker::Unknown(why)) => skip(what, place, why),
            _ => skip(
                what,
                place,
                format!("{UNKNOWN_HOST} is taken by another server's name there"),
            ),
        }
    }
    for &loc in &locations {
        out.push(make(first_listen, first_addr, &first_host, loc));
    }
    // A location that may upgrade at a path that is no socket's alone serves pages too: they
    // are asked beside the handshake (a plain request its check would not otherwise make).
    for &(location, path) in &locations {
        if location.websocket && !crate::conf::servers::socket_path(&location.path) {
            out.push(Candidate {
                route: Route::Pages,
                ..make(first_listen, first_addr, &first_host, (location, path))
            });
        }
    }
    // The Hosts the checks above send; a map key routed elsewhere gets its own.
    let own = match &first_host {
        Host::Name(_) => names.clone(),
        Host::Ip(_) | Host::Absent => vec![Candidate::host_text(&first_host)],
    };
    let mut said: HashSet<String> = HashSet::new();
    for &(location, path) in &locations {
        let Some(map) = &location.host_map else {
            continue;
        };
        let (hosts, unverified) =
            hosts::map_hosts(map, servers, me, first_listen, first_addr.port(), &own);
        for u in unverified {
            if said.insert(u.what.clone()) {
                skip(u.what, at(root, &u.file, u.line), u.why);
            }
        }
        for host in hosts {
            out.push(Candidate {
                route: Route::HostMap(&map.var),
                ..make(
                    first_listen,
                    first_addr,
                    &Host::Name(host),
                    (location, path),
                )
            });
        }
    }
    // A regex name whose capture the `*_pass` reads: a Host for each other value.
    let first_text = Candidate::host_text(&first_host);
    for re in server
        .server_names
        .iter()
        .filter_map(|n| n.strip_prefix('~'))
    {
        let caps = crate::conf::captures::captures(re);
        for &(location, path) in &locations {
            for cap in caps.iter().filter(|c| c.read_in(&location.target)) {
                for value in &cap.values {
                    let fixed = cap.fixed(re, value);
                    let first = listens.first().map(|&(l, _)| l);
                    match regex_host(servers, me, &fixed, first) {
                        Ok(host) if host.eq_ignore_ascii_case(&first_text) => {}
                        Ok(host) => out.push(Candidate {
                            route: Route::NameCapture,
                            ..make(
                                first_listen,
                                first_addr,
                                &Host::Name(host),
                                (location, path),
                            )
                        }),
                        Err(why) => skip(
                            format!("server_name ~{re} ({value})"),
                            at(root, &server.file, server.line),
                            why,
                        ),
                    }
                }
            }
        }
    }
    for &(location, _) in &locations {
        for branch in location.uri_branches.iter() {
            match &branch.reach {
                Ok(path) => out.push(Candidate {
                    route: Route::PathMap(&branch.what),
                    ..make(first_listen, first_addr, &first_host, (location, path))
                }),
                Err(why) => skip(
                    branch.what.clone(),
                    at(root, &branch.file, branch.line),
                    why.clone(),
                ),
            }
        }
    }
    for &(location, path, when) in &conditional {
        out.push(Candidate {
            extra: Some(when),
            ..make(first_listen, first_addr, &first_host, (location, path))
        });
    }
    for &(location, path) in &locations {
        for v in location.variants.iter() {
            match &v.send {
                Ok(_) => out.push(Candidate {
                    extra: Some(v),
                    ..make(first_listen, first_addr, &first_host, (location, path))
                }),
                Err(why) => skip(
                    format!("{}, {}", location_what(location), v.what),
                    at(root, &v.file, v.line),
                    why.clone(),
                ),
            }
        }
    }
    let Some(&first_loc) = locations.first() else {
        return out;
    };
    for name in names.iter().skip(1) {
        out.push(make(
            first_listen,
            first_addr,
            &Host::Name(name.clone()),
            first_loc,
        ));
    }
    // Each name over each other listen: over TLS the name is the SNI too, which a `map
    // $ssl_server_name` or a certificate per name answers differently.
    let hosts: Vec<Host> = match &first_host {
        Host::Name(_) => names.iter().map(|n| Host::Name(n.clone())).collect(),
        other => vec![other.clone()],
    };
    for &(l, addr) in listens.iter().skip(1) {
        for host in &hosts {
            out.push(make(l, addr, host, first_loc));
        }
    }
    // A name another server takes on that listen (it is defined first: nginx warns of a
    // "conflicting server name" and ignores it here) reaches that one: its answer is not
    // this server's.
    let mut taken: Vec<(String, &ListenAddr)> = Vec::new();
    out.retain(|c| {
        let (Route::Own, Host::Name(h)) = (c.route, &c.host) else {
            return true;
        };
        match hosts::taker(servers, &c.listen.addr, &h.to_ascii_lowercase()) {
            Some(Taker::Server(i)) if i != me => {
                if !taken.iter().any(|(n, a)| n == h && *a == &c.listen.addr) {
                    taken.push((h.clone(), &c.listen.addr));
                }
                false
            }
            _ => true,
        }
    });
    for (name, addr) in taken {
        skip(
            format!("server_name {name} on {addr}"),
            at(root, &server.file, server.line),
            "another server, defined first, has this name there: nginx ignores it in this one \
             (\"conflicting server name\"), and requests for it reach the other"
                .into(),
        );
    }
    out
}

/// The Host that reaches server `me`, which has no name, on `listen`: its IP when nginx gives
/// that to it (it is the default server there), else none at all when it is the server
/// whose implicit name `""` takes requests without a Host (not over plaintext HTTP/2, where a
/// request always names its authority); else why no request reaches it.
fn unnamed_host(
    servers: &[Server],
    me: usize,
    listen: &Listen,
    ip: IpAddr,
) -> Result<Host, String> {
    let by_ip = Host::Ip(ip);
    match hosts::taker(servers, &listen.addr, &Candidate::host_text(&by_ip)) {
        Some(Taker::Server(i)) if i == me => return Ok(by_ip),
        Some(Taker::Unknown(why)) => return Err(why),
        _ => {}
    }
    let plain_h2 = listen.http2 && !listen.ssl;
    match hosts::taker(servers, &listen.addr, "") {
        Some(Taker::Server(i)) if i == me && !plain_h2 => Ok(Host::Absent),
        Some(Taker::Server(i)) if i == me => Err(format!(
            "no server_name and not the default server of {}: only a request without a Host \
             reaches it, and HTTP/2 always sends one",
            listen.addr
        )),
        _ => Err(format!(
            "no server_name and not the default server of {}: another server answers both \
             its IP and requests without a Host",
            listen.addr
        )),
    }
}

/// `location ~ \.php$`, `location @app`.
fn location_what(loc: &Location) -> String {
    if loc.pass == "return" {
        // What the server answers by itself: `return 301 https://$host$request_uri`.
        return loc.target.clone();
    }
    match &loc.modifier {
        Some(m) => format!("location {m} {}", loc.path),
        None => format!("location {}", loc.path),
    }
}

/// The Host that reaches a `server_name` that is not a regex: `.example.test` is also
/// `example.test`, a wildcard gets a label; `""` is no name (`Ok(None)`).
fn host_for(name: &str) -> Result<Option<String>, &'static str> {
    let name = name.to_ascii_lowercase();
    if name.is_empty() || name == "_" {
        return Ok(None);
    }
    if let Some(host) = hosts::wildcard_hosts(&name).into_iter().next() {
        return Ok(Some(host));
    }
    if name.contains('*') {
        return Err("a wildcard in the middle of a name is not one nginx matches");
    }
    Ok(Some(name))
}

/// A Host derived from the regex `server_name ~re` of server `me` that nginx gives to it on
/// `listen` (no earlier name of another server takes it), else why none is sent.
fn regex_host(
    servers: &[Server],
    me: usize,
    re: &str,
    listen: Option<&Listen>,
) -> Result<String, String> {
    // nginx matches a regex server_name ignoring case.
    let derived = example::examples(re, true, Kind::Host);
    let mut why = None;
    for host in &derived {
        let Some(listen) = listen else {
            return Ok(host.clone());
        };
        match hosts::taker(servers, &listen.addr, host) {
            Some(Taker::Server(i)) if i == me => return Ok(host.clone()),
            Some(Taker::Unknown(e)) => why.get_or_insert(e),
            _ => why.get_or_insert(format!(
                "{host}, derived from it, is answered by another server's name"
            )),
        };
    }
    Err(why.unwrap_or_else(|| "a regex server_name no Host is derived from".into()))
}

/// Every address a listen names exactly (not a wildcard): a request to one of these is taken
/// by the servers listening there, never by a wildcard listen of the same port.
fn specific_listens(servers: &[Server]) -> HashSet<SocketAddr> {
    (servers.iter().flat_map(|s| s.listens.iter()))
        .filter_map(|l| match &l.addr {
            ListenAddr::Tcp(sa) if !sa.ip().is_unspecified() => Some(*sa),
            ListenAddr::Host { name, port } if name == "localhost" => {
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port))
            }
            _ => None,
        })
        .collect()
}

/// How many loopback addresses are tried for a wildcard listen before giving up.
const LOOPBACK_TRIES: u8 = 16;

/// Where to connect to reach a listen, or why this machine cannot.
fn connect_for(listen: &Listen, claimed: &HashSet<SocketAddr>) -> Result<SocketAddr, String> {
    match &listen.addr {
        ListenAddr::Tcp(sa) if sa.ip().is_unspecified() => {
            let port = sa.port();
            let free = |ip: IpAddr| {
                let a = SocketAddr::new(ip, port);
                (!claimed.contains(&a)).then_some(a)
            };
            let found = match sa.ip() {
                IpAddr::V4(_) => {
                    (1..=LOOPBACK_TRIES).find_map(|n| free(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))))
                }
                IpAddr::V6(_) => free(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            };
            found.ok_or_else(|| {
                format!("every loopback address on port {port} is taken by a specific listen")
            })
        }
        ListenAddr::Tcp(sa) if crate::probe::netstat::is_local(sa.ip()) => Ok(*sa),
        ListenAddr::Tcp(sa) => Err(format!("{} is not an address of this machine", sa.ip())),
        ListenAddr::Host { name, port } if name == "localhost" => {
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), *port))
        }
        ListenAddr::Host { name, .. } => Err(format!("{name} is a name, not resolved here")),
        // Reached over the socket itself (`Check::unix`); the address is not used.
        ListenAddr::Unix(_) => Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
    }
}

#[cfg(test)]
mod tests;
