//! The Hosts a server is checked on beyond its own names: those a `map $host` (or
//! `$http_host`) routes to another upstream than the names get, when such a Host reaches the
//! server at all. A key reaches it when nginx would pick this server for that Host on the
//! listen the check goes to: the same order nginx uses (exact names, the longest leading
//! wildcard, the longest trailing one, the first regex, then the listen's default server), so
//! a wildcard or regex `server_name`, or being the default server, lets a map key in that no
//! other server claims. A wildcard key is sent with a label filled in (`*.eu.test` as
//! `safe-reload-check.eu.test`, `mail.*` as `mail.safe-reload-check`), a regex key as a Host
//! derived from it (`conf::example`), each only when the map really gives that Host the key's
//! value (no exact or longer wildcard key takes it first) and nginx picks this server for
//! it; else what it routes to is said to be unverified, and why, never guessed.

use std::cmp::Reverse;
use std::path::Path;
use std::sync::Arc;

use crate::conf::example::{self, Kind};
use crate::conf::host_map::{self, HostMap, Lookup, Pattern, Source};
use crate::conf::targets::Context;
use crate::conf::{Listen, ListenAddr, Server};

/// A Host no `server_name` matches (nobody names a server under `.invalid`): what the
/// default server of a listen gets.
pub const UNKNOWN_HOST: &str = "safe-reload-check.invalid";

/// Which server takes a Host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taker {
    /// The index of the server in the list.
    Server(usize),
    /// A regex `server_name` this tool cannot evaluate comes first; why.
    Unknown(String),
}

/// The server of `servers` nginx picks for `host` on a listen at `addr` (`""` for a request
/// with no Host); `None` when no server listens there.
pub fn taker(servers: &[Server], addr: &ListenAddr, host: &str) -> Option<Taker> {
    let on = |s: &Server| s.listens.iter().any(|l| !l.udp && l.addr == *addr);
    let group: Vec<usize> = (0..servers.len())
        .filter(|&i| servers[i].context == Context::Http && on(&servers[i]))
        .collect();
    let names = |i: usize| servers[i].server_names.iter();
    if host.is_empty() {
        // No Host (HTTP/1.0): the name is "", a server's own when it names none.
        let unnamed = |i: usize| names(i).len() == 0 || names(i).any(|n| n.is_empty());
        if let Some(&i) = group.iter().find(|&&i| unnamed(i)) {
            return Some(Taker::Server(i));
        }
    }
    for &i in &group {
        for n in names(i).filter(|n| !n.starts_with('~') && !n.contains('*')) {
            let n = n.to_ascii_lowercase();
            if n == host || n.strip_prefix('.') == Some(host) {
                return Some(Taker::Server(i));
            }
        }
    }
    let longest = |matches: fn(&str, &str) -> Option<usize>| {
        (group.iter())
            .flat_map(|&i| {
                names(i).filter_map(move |n| matches(&n.to_ascii_lowercase(), host).map(|m| (m, i)))
            })
            .min_by_key(|&(m, i)| (Reverse(m), i))
            .map(|(_, i)| Taker::Server(i))
    };
    let wild = longest(host_map::leading_wildcard).or_else(|| longest(host_map::trailing_wildcard));
    if wild.is_some() {
        return wild;
    }
    for &i in &group {
        for n in names(i) {
            let Some(re) = n.strip_prefix('~') else {
                continue;
            };
            match host_map::compile(re, true) {
                Some(re) if re.is_match(host.as_bytes()) => return Some(Taker::Server(i)),
                Some(_) => {}
                None => {
                    return Some(Taker::Unknown(format!(
                        "server_name {n} is a regex this tool cannot evaluate"
                    )))
                }
            }
        }
    }
    let default = (group.iter())
        .find(|&&i| (servers[i].listens.iter()).any(|l| l.addr == *addr && l.default_server));
    default.or(group.first()).map(|&i| Taker::Server(i))
}

/// Something a map routes that no request checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// `map $pool ~^api\.`.
    pub what: String,
    pub file: Arc<Path>,
    pub line: u32,
    pub why: String,
}

/// The Hosts of `map` that reach server `me` through `listen` (port `port`, TLS or not) and
/// get another value than every one of `own` (the Hosts its checks already send), and what of
/// the map cannot be checked that way.
pub fn map_hosts(
    map: &HostMap,
    servers: &[Server],
    me: usize,
    listen: &Listen,
    port: u16,
    own: &[String],
) -> (Vec<String>, Vec<Unverified>) {
    let default_port = if listen.ssl { 443 } else { 80 };
    // What the map reads for a Host this tool sends (see `verify::host_header`).
    let source = |host: &str| match map.source {
        Source::HttpHost if port != default_port => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    let own_values: Vec<Lookup> = own.iter().map(|h| map.lookup(&source(h))).collect();
    let differs = |value: &str| !own_values.contains(&Lookup::Value(value));
    let me_server = &servers[me];
    let open = (me_server.server_names.iter())
        .any(|n| n.starts_with('~') || n.starts_with('.') || n.contains('*'))
        || taker(servers, &listen.addr, UNKNOWN_HOST) == Some(Taker::Server(me));
    let (mut hosts, mut unverified) = (Vec::new(), Vec::new());
    let var = &map.var;
    for key in map.keys.iter().filter(|k| differs(&k.value)) {
        let skip = |why: String| Unverified {
            what: format!("map ${var} {}", key.pattern.text()),
            file: key.file.clone(),
            line: key.line,
            why,
        };
        let exact = match &key.pattern {
            Pattern::Exact(k) => k,
            Pattern::Wildcard(_) | Pattern::Regex(..) => {
                if !open {
                    continue;
                }
                let reaches = |host: &str| match map.lookup(&source(host)) {
                    Lookup::Value(v) if v != key.value && std::ptr::eq(v, map.default.as_str()) => {
                        Err(format!("{} gets the default ({v})", source(host)))
                    }
                    Lookup::Value(v) if v == key.value => {
                        match taker(servers, &listen.addr, host) {
                            Some(Taker::Server(i)) if i == me => Ok(()),
                            Some(Taker::Unknown(why)) => Err(why),
                            _ => Err(format!("{host} is answered by another server")),
                        }
                    }
                    Lookup::Value(v) => {
                        Err(format!("{} gets {v} from another key first", source(host)))
                    }
                    Lookup::Unknown => Err(format!(
                        "a regex this tool cannot evaluate comes before it for {host}"
                    )),
                };
                match derived(&key.pattern, map.source, port, reaches) {
                    Ok(host) if own.contains(&host) || hosts.contains(&host) => {}
                    Ok(host) => hosts.push(host),
                    Err(why) => unverified.push(skip(format!(
                        "{why}: what it routes to ({}) is not verified",
                        key.value
                    ))),
                }
                continue;
            }
        };
        let host = match (map.source, exact.rsplit_once(':')) {
            (Source::HttpHost, Some((h, p))) if p.parse() == Ok(port) => h,
            (Source::HttpHost, Some(_)) => continue,
            (Source::HttpHost, None) if port != default_port => {
                if open {
                    unverified.push(skip(format!(
                        "the Host sent to port {port} carries the port, which this key does not"
                    )));
                }
                continue;
            }
            _ => exact.as_str(),
        };
        if own.iter().any(|o| o == host) || hosts.iter().any(|h: &String| h == host) {
            continue;
        }
        if !is_host(host) {
            continue;
        }
        match taker(servers, &listen.addr, host) {
            Some(Taker::Server(i)) if i == me => hosts.push(host.to_string()),
            Some(Taker::Unknown(why)) if open => unverified.push(skip(why)),
            _ => {}
        }
    }
    (hosts, unverified)
}

/// The first Host a wildcard or regex key matches that `reaches` (gets the key's value and
/// lands on the server), else why none does.
/// A regex key of a `$http_host` map is matched against the Host header as sent: an example
/// with `:PORT` is sent as its Host only to that port (the header carries it then).
fn derived(
    pattern: &Pattern,
    source: Source,
    port: u16,
    reaches: impl Fn(&str) -> Result<(), String>,
) -> Result<String, String> {
    let (kind, candidates) = match pattern {
        Pattern::Wildcard(w) => ("wildcard", wildcard_hosts(w)),
        Pattern::Regex(text, _) if source == Source::HttpHost => {
            let (caseless, body) = regex_body(text);
            let examples = example::examples(body, caseless, Kind::HttpHost);
            let sent: Vec<String> = (examples.iter())
                .filter_map(|e| match e.rsplit_once(':') {
                    Some((host, p)) => (p.parse() == Ok(port)).then(|| host.to_string()),
                    None => Some(e.clone()),
                })
                .collect();
            if sent.is_empty() && !examples.is_empty() {
                return Err(format!(
                    "the Hosts derived from it carry another port than {port} ({})",
                    examples[0]
                ));
            }
            ("regex", sent)
        }
        Pattern::Regex(text, _) => {
            let (caseless, body) = regex_body(text);
            ("regex", example::examples(body, caseless, Kind::Host))
        }
        Pattern::Exact(k) => ("exact", vec![k.clone()]),
    };
    let mut why = None;
    for host in candidates.iter().filter(|h| is_host(h)) {
        match reaches(host) {
            Ok(()) => return Ok(host.clone()),
            Err(e) => {
                why.get_or_insert(e);
            }
        }
    }
    Err(why.unwrap_or_else(|| format!("no Host to send is derived from the {kind} key")))
}

/// `~*re` (case ignored) or `~re`: whether case is ignored, and the regex.
fn regex_body(text: &str) -> (bool, &str) {
    match text.strip_prefix("~*") {
        Some(body) => (true, body),
        None => (false, text.trim_start_matches('~')),
    }
}

/// The Hosts a wildcard name matches, plainest first: `.example.test` is `example.test` (and
/// any name under it), `*.example.test` and `mail.*` get a label filled in.
pub fn wildcard_hosts(name: &str) -> Vec<String> {
    const LABEL: &str = "safe-reload-check";
    if let Some(rest) = name.strip_prefix('.') {
        return vec![rest.to_string(), format!("{LABEL}.{rest}")];
    }
    if let Some(rest) = name.strip_prefix("*.") {
        return vec![format!("{LABEL}.{rest}")];
    }
    if let Some(rest) = name.strip_suffix(".*") {
        return vec![format!("{rest}.{LABEL}")];
    }
    Vec::new()
}

/// A name a Host header (and SNI) can carry.
fn is_host(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with('.')
        && text.len() <= 253
        && (text.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, servers, LoadOptions};

    fn servers_of(http: &str) -> Vec<Server> {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, format!("events {{}}\nhttp {{\n{http}\n}}\n")).expect("write");
        servers::extract(&load(&main, &LoadOptions::default()).expect("loads"))
    }

    #[test]
    fn the_server_nginx_picks_for_a_host() {
        let s = servers_of(
            "server { listen 127.0.0.1:80; server_name a.test; location / { proxy_pass http://u; } }\n\
             server { listen 127.0.0.1:80 default_server; server_name *.w.test; location / { proxy_pass http://u; } }\n\
             server { listen 127.0.0.1:80; server_name *.x.w.test mail.*; location / { proxy_pass http://u; } }\n\
             server { listen 127.0.0.1:80; server_name ~^api\\d+\\.; location / { proxy_pass http://u; } }\n\
             server { listen 127.0.0.1:81; server_name ~(?<=x)y; location / { proxy_pass http://u; } }",
        );
        let addr = &s[0].listens[0].addr;
        let t = |host: &str| taker(&s, addr, host);
        assert_eq!(t("a.test"), Some(Taker::Server(0)));
        assert_eq!(t("b.w.test"), Some(Taker::Server(1)));
        assert_eq!(
            t("b.x.w.test"),
            Some(Taker::Server(2)),
            "the longest wildcard"
        );
        assert_eq!(t("mail.a.test"), Some(Taker::Server(2)));
        assert_eq!(t("api7.z"), Some(Taker::Server(3)));
        assert_eq!(
            t("nobody.test"),
            Some(Taker::Server(1)),
            "the default server"
        );
        let other = &s[4].listens[0].addr;
        assert!(matches!(taker(&s, other, "q"), Some(Taker::Unknown(_))));
    }

    #[test]
    fn map_keys_that_reach_the_server_and_route_elsewhere() {
        let s = servers_of(
            "map $host $pool { hostnames; default one; a.w.test two; b.w.test one; \
             other.test three; c.test four; ~^r five; *.z.w.test six; s.w.test one; \
             .s.w.test seven; ~^x\\.c\\.test$ eight; ~^a\\.w\\.test$ nine; *.y.w.test two; \
             *.q.y.w.test ten; }\n\
             server { listen 127.0.0.1:80; server_name *.w.test; location / { proxy_pass http://$pool; } }\n\
             server { listen 127.0.0.1:80; server_name c.test; location / { proxy_pass http://$pool; } }\n\
             server { listen 127.0.0.1:80; server_name *.c.test; location / { return 204; } }",
        );
        let loc = &s[0].locations[0];
        let map = loc.host_map.as_ref().expect("the map");
        let own = ["safe-reload-check.w.test".to_string()];
        let (hosts, unverified) = map_hosts(map, &s, 0, &s[0].listens[0], 80, &own);
        // b.w.test gets the names' own upstream; c.test is another server's; other.test and
        // r (the regex ~^r) are taken by the first server (the default of the listen); the
        // exact s.w.test comes before .s.w.test, which is sent with a label.
        assert_eq!(
            hosts,
            [
                "a.w.test",
                "other.test",
                "r",
                "safe-reload-check.z.w.test",
                "safe-reload-check.s.w.test",
                "safe-reload-check.y.w.test",
                "safe-reload-check.q.y.w.test",
            ]
        );
        let said: Vec<String> = (unverified.iter())
            .map(|u| format!("{} | {}", u.what, u.why))
            .collect();
        assert_eq!(
            said,
            [
                "map $pool ~^x\\.c\\.test$ | x.c.test is answered by another server: what it \
                 routes to (eight) is not verified",
                "map $pool ~^a\\.w\\.test$ | a.w.test gets two from another key first: what it \
                 routes to (nine) is not verified",
            ]
        );
        // The second server is neither open nor the default: only its own name.
        let (hosts, unverified) = map_hosts(map, &s, 1, &s[1].listens[0], 80, &["c.test".into()]);
        assert!(
            hosts.is_empty() && unverified.is_empty(),
            "{hosts:?} {unverified:?}"
        );
    }

    #[test]
    fn a_wildcard_name_gets_a_label() {
        assert_eq!(
            wildcard_hosts(".x.test"),
            ["x.test", "safe-reload-check.x.test"]
        );
        assert_eq!(wildcard_hosts("*.eu.test"), ["safe-reload-check.eu.test"]);
        assert_eq!(wildcard_hosts("mail.*"), ["mail.safe-reload-check"]);
        assert!(wildcard_hosts("a.test").is_empty());
    }

    #[test]
    fn http_host_keys_carry_the_port_the_host_header_does() {
        let s = servers_of(
            "map $http_host $pool { default one; a.test:8080 two; b.test three; a.test:9 four; }\n\
             server { listen 127.0.0.1:8080 default_server; server_name x.test; location / { proxy_pass http://$pool; } }",
        );
        let map = s[0].locations[0].host_map.as_ref().expect("the map");
        let (hosts, unverified) = map_hosts(map, &s, 0, &s[0].listens[0], 8080, &["x.test".into()]);
        assert_eq!(hosts, ["a.test"]);
        assert_eq!(
            unverified.len(),
            1,
            "b.test cannot be sent without the port"
        );
        // A regex key sees the Host with its port too.
        let s = servers_of(
            "map $http_host $pool { hostnames; default one; ~^c\\.test$ five; ~^d\\.test(:\\d+)?$ six; *.e.test seven; \
             ~^f\\.test:8080$ eight; ~^g\\.test:9$ nine; }\n\
             server { listen 127.0.0.1:8080 default_server; server_name x.test; location / { proxy_pass http://$pool; } }",
        );
        let map = s[0].locations[0].host_map.as_ref().expect("the map");
        let (hosts, unverified) = map_hosts(map, &s, 0, &s[0].listens[0], 8080, &["x.test".into()]);
        assert_eq!(hosts, ["d.test", "f.test"]);
        let why: Vec<&str> = unverified.iter().map(|u| u.why.as_str()).collect();
        assert_eq!(
            why,
            [
                "c.test:8080 gets the default (one): what it routes to (five) is not verified",
                "safe-reload-check.e.test:8080 gets the default (one): what it routes to (seven) is \
                 not verified",
                "the Hosts derived from it carry another port than 8080 (g.test:9): what it \
                 routes to (nine) is not verified",
            ]
        );
    }
}
