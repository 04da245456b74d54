//! Names nginx resolves per request: a `*_pass` holding variables
//! (`set $up app.service.consul; proxy_pass http://$up:8080;`) is worked out for each request,
//! and a host name in it that is no `upstream` block is resolved then, through the `resolver`
//! directive in scope, never the system resolver (`ngx_http_upstream_init_request`: with no
//! `resolver` configured nginx answers 502, "no resolver defined to resolve ..."). So these
//! names are asked of that resolver, over UDP as nginx would, within `resolver_timeout`
//! (bounded by the probe timeout), and the answers are probed; a resolver that does not answer
//! here is reported, never a refusal.
//!
//! `resolver` and `resolver_timeout` are inherited `http` → `server` → `location` (and
//! `stream` → `server`), an inner one replacing the outer (`ngx_http_core_merge_loc_conf`).
//! nginx asks for A and AAAA records unless `ipv4=off` or `ipv6=off` (`ngx_resolver_create`),
//! and the resolver's own address, when a name, is looked up once at startup.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::dns;
use crate::conf::{Config, Directive, Reference, Target, TargetAddr};

/// nginx's default `resolver_timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The port of a `resolver` address without one.
const DNS_PORT: u16 = 53;

/// A `resolver` directive as nginx reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolver {
    /// The addresses as written: `127.0.0.1:8600`, `[::1]`, `dns.internal`.
    pub written: Vec<String>,
    pub file: Arc<Path>,
    pub line: u32,
    #[serde(skip)]
    pub timeout: Duration,
    #[serde(skip)]
    pub ipv4: bool,
    #[serde(skip)]
    pub ipv6: bool,
}

impl std::fmt::Display for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "resolver {} ({}:{})",
            self.written.join(" "),
            self.file.display(),
            self.line
        )
    }
}

impl Resolver {
    /// The addresses to query, with the default port.
    fn servers(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for w in &self.written {
            if let Ok(sa) = w.parse::<SocketAddr>() {
                out.push(sa);
            } else if let Ok(ip) = w.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
                out.push(SocketAddr::new(ip, DNS_PORT));
            } else {
                let (host, port) = match w.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse().unwrap_or(DNS_PORT)),
                    None => (w.as_str(), DNS_PORT),
                };
                out.extend((host, port).to_socket_addrs().into_iter().flatten());
            }
        }
        out
    }

    fn types(&self) -> Vec<u16> {
        let mut t = Vec::new();
        if self.ipv4 {
            t.push(dns::A);
        }
        if self.ipv6 {
            t.push(dns::AAAA);
        }
        t
    }
}

/// For every `*_pass`, by its file and line: the resolver in scope there (`None`: no
/// `resolver`). Which passes nginx evaluates per request is the extraction's
/// (`Reference::per_request`); only the scope of `resolver` is worked out here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerRequest {
    passes: HashMap<(Arc<Path>, u32), Option<Arc<Resolver>>>,
}

impl PerRequest {
    /// Scan a loaded configuration.
    pub fn of(config: &Config) -> PerRequest {
        let mut out = PerRequest::default();
        for d in config
            .tree
            .iter()
            .filter(|d| d.name == "http" || d.name == "stream")
        {
            out.scan(d.children(), None, None);
        }
        out
    }

    fn scan(
        &mut self,
        dirs: &[Directive],
        outer: Option<Arc<Resolver>>,
        timeout: Option<Duration>,
    ) {
        let timeout = dirs
            .iter()
            .rfind(|d| d.name == "resolver_timeout")
            .and_then(|d| humantime_nginx(d.arg0()))
            .or(timeout);
        let here = dirs
            .iter()
            .rfind(|d| d.name == "resolver")
            .map(|d| Arc::new(resolver(d, timeout)))
            .or_else(|| {
                outer.map(|r| match timeout {
                    Some(t) if t != r.timeout => Arc::new(Resolver {
                        timeout: t,
                        ..(*r).clone()
                    }),
                    _ => r,
                })
            });
        for d in dirs {
            if crate::conf::targets::Name::of_pass(&d.name).is_some() {
                self.passes.insert((d.file.clone(), d.line), here.clone());
            }
            if d.block.is_some() && d.name != "upstream" {
                self.scan(d.children(), here.clone(), timeout);
            }
        }
    }

    /// When nginx resolves `target` per request only (each live reference is a `*_pass`
    /// with variables, none an upstream server), the resolver it asks: `Some(None)` for none
    /// in scope. `None` when nginx resolves it at startup (or it is no host name): before
    /// resolving a per-request host, `ngx_http_upstream_init_request` looks it up among the
    /// upstreams, the implicit ones of static `*_pass` lines included (same host, caseless, and
    /// port), and uses that one's startup addresses; here such a target has a static reference.
    pub fn resolver_for(&self, target: &Target) -> Option<Option<Arc<Resolver>>> {
        if !matches!(target.address, TargetAddr::Host { .. }) {
            return None;
        }
        let passes: Vec<&Reference> = (target.references.iter())
            .filter(|r| !r.down && crate::conf::targets::Name::of_pass(&r.directive).is_some())
            .collect();
        let mut found: Option<Option<Arc<Resolver>>> = None;
        for r in &passes {
            // A static pass, or an upstream block's server (resolved at startup whatever named
            // the block): the extraction says so.
            if !r.per_request {
                return None;
            }
            let resolver = self.passes.get(&(r.file.clone(), r.line))?;
            // Several places: the first one's resolver speaks for them; a name under several
            // resolvers is split into one target per resolver first (`split_by_resolver`).
            found.get_or_insert_with(|| resolver.clone());
        }
        found
    }
}

/// `targets` with each name nginx resolves per request through more than one `resolver` (a
/// server of its own, a location's) split into one target per resolver, each with the
/// references that ask it: every one of them is asked, and one that does not answer is
/// reported for the places that use it, never hidden behind another's answer. `None` when no
/// target needs it.
pub fn split_by_resolver(targets: &[Target], per_request: &PerRequest) -> Option<Vec<Target>> {
    let groups = |t: &Target| -> Option<Vec<Vec<Reference>>> {
        per_request.resolver_for(t)?;
        let mut groups: Vec<(Option<Arc<Resolver>>, Vec<Reference>)> = Vec::new();
        let mut rest = Vec::new();
        for r in t.references.iter() {
            let asked = (!r.down && crate::conf::targets::Name::of_pass(&r.directive).is_some())
                .then(|| per_request.passes.get(&(r.file.clone(), r.line)))
                .flatten();
            match asked {
                Some(resolver) => match groups.iter_mut().find(|(g, _)| g == resolver) {
                    Some((_, refs)) => refs.push(r.clone()),
                    None => groups.push((resolver.clone(), vec![r.clone()])),
                },
                None => rest.push(r.clone()),
            }
        }
        if groups.len() < 2 {
            return None;
        }
        groups[0].1.extend(rest);
        Some(groups.into_iter().map(|(_, refs)| refs).collect())
    };
    let split: Vec<Option<Vec<Vec<Reference>>>> = targets.iter().map(groups).collect();
    if split.iter().all(Option::is_none) {
        return None;
    }
    let mut out = Vec::with_capacity(targets.len() + 1);
    for (t, split) in targets.iter().zip(split) {
        match split {
            Some(groups) => out.extend(groups.into_iter().map(|refs| Target {
                address: t.address.clone(),
                references: refs.into(),
            })),
            None => out.push(t.clone()),
        }
    }
    Some(out)
}

fn resolver(d: &Directive, timeout: Option<Duration>) -> Resolver {
    let mut r = Resolver {
        written: Vec::new(),
        file: d.file.clone(),
        line: d.line,
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        ipv4: true,
        ipv6: true,
    };
    for a in d.args.iter() {
        match a.as_str() {
            "ipv4=off" => r.ipv4 = false,
            "ipv6=off" => r.ipv6 = false,
            s if s.contains('=') => {}
            s => r.written.push(s.to_string()),
        }
    }
    r
}

/// An nginx time (`5s`, `500ms`, `1m`, `30`: seconds by default).
fn humantime_nginx(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).ok()
}

/// What asking a name's resolver found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Addresses to probe, with the target's port.
    Found(Vec<SocketAddr>),
    /// The resolver says the name does not exist or has no address.
    NoSuchName,
    /// The resolver did not answer here: why.
    NoAnswer(String),
    /// No `resolver` in scope: nginx answers 502 for the name.
    NoResolver,
}

/// Ask each target's resolver, at most `within` per name (and `resolver_timeout`).
pub fn lookup(target: &Target, resolver: Option<&Resolver>, within: Duration) -> Answer {
    let (TargetAddr::Host { name, port }, Some(r)) = (&target.address, resolver) else {
        return Answer::NoResolver;
    };
    let servers = r.servers();
    match dns::lookup(&servers, name, &r.types(), r.timeout.min(within)) {
        dns::Lookup::Found(ips) => Answer::Found(
            ips.into_iter()
                .map(|ip| SocketAddr::new(ip, *port))
                .collect(),
        ),
        dns::Lookup::NoSuchName => Answer::NoSuchName,
        dns::Lookup::NoAnswer(why) => Answer::NoAnswer(why),
    }
}

impl Answer {
    /// The errno-like text of a name that will not resolve.
    pub fn why(&self, target: &Target) -> String {
        let name = match &target.address {
            TargetAddr::Host { name, .. } => name.as_str(),
            _ => "",
        };
        match self {
            Answer::NoResolver => format!("no resolver defined to resolve {name}"),
            Answer::NoSuchName => format!("{name} could not be resolved (3: Host not found)"),
            Answer::NoAnswer(why) => why.clone(),
            Answer::Found(_) => String::new(),
        }
    }
}

/// Most lookups in flight at once.
const MAX_LOOKUPS: usize = 16;

/// For each target: the resolver nginx asks for it per request (`Some(None)`: none in scope),
/// or `None` when nginx resolves it at startup.
pub fn resolvers(
    targets: &[Target],
    per_request: &PerRequest,
) -> Vec<Option<Option<Arc<Resolver>>>> {
    targets
        .iter()
        .map(|t| {
            (!t.is_down())
                .then(|| per_request.resolver_for(t))
                .flatten()
        })
        .collect()
}

/// Ask the resolvers, a few names at a time; about one `within` in all.
pub fn answers(
    targets: &[Target],
    resolvers: &[Option<Option<Arc<Resolver>>>],
    within: Duration,
) -> Vec<Option<Answer>> {
    let jobs: Vec<usize> = (0..targets.len())
        .filter(|&i| resolvers.get(i).is_some_and(Option::is_some))
        .collect();
    let mut out: Vec<Option<Answer>> = vec![None; targets.len()];
    for chunk in jobs.chunks(MAX_LOOKUPS) {
        let found: Vec<(usize, Answer)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (chunk.iter())
                .map(|&i| {
                    let r = resolvers[i].clone().flatten();
                    scope.spawn(move || (i, lookup(&targets[i], r.as_deref(), within)))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, a) in found {
            out[i] = Some(a);
        }
    }
    out
}

/// Say which resolver each per-request name went through, and what it said.
pub fn annotate(
    results: &mut [super::ProbeResult],
    resolvers: &[Option<Option<Arc<Resolver>>>],
    answers: &[Option<Answer>],
) {
    use super::{Hint, RequestResolver};
    for ((r, resolver), answer) in results.iter_mut().zip(resolvers).zip(answers) {
        let (Some(resolver), Some(answer)) = (resolver, answer) else {
            continue;
        };
        let target = r.target.to_string();
        let hint = match (resolver, answer) {
            (None, _) => Hint::new(format!(
                "no `resolver` is in scope for this *_pass: nginx works {target} out per request \
                 and never asks the system resolver, so it answers 502 \
                 (\"no resolver defined to resolve ...\")"
            ))
            .with_suggestion(
                "add `resolver ADDRESS;` to the server or http block, or name an upstream block",
            ),
            (Some(res), Answer::Found(addrs)) => Hint::new(format!(
                "resolved by nginx at request time through {res}: {}",
                addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (Some(res), Answer::NoSuchName) => Hint::new(format!(
                "resolved by nginx at request time through {res}, which says the name does not \
                 exist (or has no address): nginx answers 502 for it until it does"
            )),
            (Some(res), Answer::NoAnswer(why)) => Hint::new(format!(
                "resolved by nginx at request time through {res}; not probed: {why}"
            )),
            (Some(_), Answer::NoResolver) => continue,
        };
        r.resolver = Some(match resolver {
            Some(res) => RequestResolver::Through(res.clone()),
            None => RequestResolver::Missing,
        });
        r.hints.push(hint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, LoadOptions};

    fn config(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, text).unwrap();
        let c = load(&path, &LoadOptions::default()).unwrap();
        (dir, c)
    }

    #[test]
    fn the_innermost_resolver_and_timeout_apply_and_only_variable_passes_use_them() {
        let (_d, c) = config(
            "http {\n resolver 127.0.0.1:8600 ipv6=off;\n resolver_timeout 2s;\n\
             server {\n  location /a { proxy_pass http://$up:8080; }\n\
             location /b { resolver [::1] valid=5s; proxy_pass http://$up; }\n\
             location /c { proxy_pass http://app.test:80; }\n }\n\
             server { location / { resolver_timeout 1s; fastcgi_pass $be; } }\n}\n\
             stream { server { proxy_pass $x:1; } }\n",
        );
        let p = PerRequest::of(&c);
        let at = |line: u32| {
            p.passes
                .get(&(c.files[0].path.as_path().into(), line))
                .cloned()
        };
        let a = at(5).flatten().unwrap();
        assert_eq!(a.written, ["127.0.0.1:8600"]);
        assert_eq!(
            (a.timeout, a.ipv4, a.ipv6),
            (Duration::from_secs(2), true, false)
        );
        assert_eq!(
            a.servers(),
            ["127.0.0.1:8600".parse::<SocketAddr>().unwrap()]
        );
        let b = at(6).flatten().unwrap();
        assert_eq!(b.servers(), ["[::1]:53".parse::<SocketAddr>().unwrap()]);
        // A pass without variables is resolved at startup: the extraction says so.
        let targets = crate::conf::targets::extract(&c).targets;
        let static_name = (targets.iter())
            .find(|t| t.address.to_string() == "app.test:80")
            .expect("the static target");
        assert_eq!(p.resolver_for(static_name), None);
        assert_eq!(at(9).flatten().unwrap().timeout, Duration::from_secs(1));
        assert_eq!(at(11), Some(None), "no resolver in stream");
    }

    #[test]
    fn a_name_a_static_pass_also_uses_is_resolved_at_startup() {
        let (_d, c) = config(
            "http {\n resolver 127.0.0.1:8600;\n server {\n  set $up app.test;\n\
             location /a { proxy_pass http://$up:8080; }\n\
             location /b { proxy_pass http://app.test:8080; }\n }\n}\n",
        );
        let p = PerRequest::of(&c);
        let targets = crate::conf::targets::extract(&c).targets;
        let app = targets
            .iter()
            .find(|t| t.address.to_string() == "app.test:8080")
            .expect("the target");
        assert_eq!(p.resolver_for(app), None, "{app:?}");
        let only_variable = Target {
            address: app.address.clone(),
            references: (app.references.iter())
                .filter(|r| r.line != 6)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        };
        let r = p
            .resolver_for(&only_variable)
            .flatten()
            .expect("through the resolver");
        assert_eq!(r.written, ["127.0.0.1:8600"]);
    }
}
