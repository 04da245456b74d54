//! The walk that finds targets: per context, upstream blocks first (by lowercased name, as
//! nginx compares them), then every `*_pass` in any nesting, with the server and location
//! whose rewrite codes run before it (`rewrite`). One pass over the tree, hash lookups only, so
//! a 10,000-server configuration costs no more than reading it; the rewrite state is worked
//! out only for a `*_pass` that holds a variable.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use super::addr::{self, AddrError, Parsed};
use super::pass::{self, PassTarget};
use super::rewrite::{self, Frame, ServerState};
use super::vars::{self, Binding, Defs, Env};
use super::{Context, Finding, Name, Reference, Target, TargetAddr, Targets};
use crate::conf::servers::upgrade_in_force;
use crate::conf::tree::{Directive, Word};
use crate::conf::Config;

/// Blocks whose children are data, not directives that could hold a `*_pass`.
const DATA_BLOCKS: [&str; 7] = [
    "upstream",
    "map",
    "split_clients",
    "geo",
    "types",
    "charset_map",
    "match",
];

struct UpstreamServer {
    /// The server's target, by its place in `Collector::targets`: every upstream server is a
    /// target already, so a `*_pass` expanding the block adds to it without another lookup.
    target: usize,
    backup: bool,
    down: bool,
}

struct Upstream {
    /// As written; shared by every reference to the block.
    name: Arc<str>,
    servers: Box<[UpstreamServer]>,
}

/// What the walk of one context needs to look up.
struct Ctx<'s, 'a> {
    context: Context,
    upstreams: &'s HashMap<Word, Upstream>,
    /// The context's own directives, for `defs`.
    children: &'a [Directive],
    /// Its `map`/`geo`/`split_clients` and `set` variables, read at the first `*_pass` that
    /// holds a variable.
    defs: OnceCell<Defs<'a>>,
}

impl<'a> Ctx<'_, 'a> {
    fn defs(&self) -> &Defs<'a> {
        self.defs.get_or_init(|| vars::context_defs(self.children))
    }
}

/// Extract every target of the configuration.
pub(crate) fn extract(config: &Config) -> Targets {
    let mut c = Collector::default();
    for d in &config.tree {
        let Some(context) = Context::of_block(&d.name) else {
            continue;
        };
        let children = d.children();
        let upstreams = c.upstreams(context, children);
        let cx = Ctx {
            context,
            upstreams: &upstreams,
            children,
            defs: OnceCell::new(),
        };
        c.walk(&cx, children, Frame::default(), &mut None);
    }
    c.finish()
}

#[derive(Default)]
struct Collector {
    index: HashMap<TargetAddr, usize>,
    /// Hashes of (target, reference) pairs seen: a file included twice or a server listed
    /// twice must not repeat a reference, and comparing only on a hash hit keeps this linear.
    seen: HashSet<u64>,
    hasher: RandomState,
    /// Each target's address and references, in the order first met.
    targets: Vec<(TargetAddr, Vec<Reference>)>,
    findings: Vec<Finding>,
}

/// The capture groups with a few plain values of the regex location around a `*_pass` and of
/// its server's regex names (see `conf::captures`).
fn captures_around(frame: &Frame<'_>) -> Vec<crate::conf::captures::Capture> {
    let location = (frame.regex_location)
        .map(|d| crate::conf::servers::location_args(&d.args).1)
        .into_iter();
    let names = (frame.server.unwrap_or_default().iter())
        .filter(|d| d.name == "server_name")
        .flat_map(|d| {
            d.args
                .iter()
                .filter_map(|a| a.strip_prefix('~').map(str::to_string))
        });
    (location.chain(names))
        .flat_map(|p| crate::conf::captures::captures(&p))
        .collect()
}

fn reference(d: &Directive, directive: Name, context: Context) -> Reference {
    Reference {
        file: d.file.clone(),
        line: d.line,
        directive,
        context,
        upstream: None,
        backup: false,
        down: false,
        scheme: None,
        per_request: false,
        udp: false,
        also_udp: false,
        mirror: false,
        websocket: false,
        ssl: false,
    }
}

/// Whether `proxy_ssl on` is in force in a stream server: its own setting, else the `stream`
/// block's.
fn stream_ssl(server: &[Directive], stream: &[Directive]) -> bool {
    let own = |dirs: &[Directive]| {
        (dirs.iter().rev())
            .find(|d| d.name == "proxy_ssl")
            .map(|d| d.arg0().eq_ignore_ascii_case("on"))
    };
    own(server).or_else(|| own(stream)).unwrap_or(false)
}

/// Whether `location` (a location's directives) is `internal` and a `mirror` of `server` sends
/// its copies there: no client request reaches it.
fn mirror_only(server: &[Directive], location: &[Directive]) -> bool {
    fn mirrors<'a>(dirs: &'a [Directive], out: &mut Vec<&'a str>) {
        for d in dirs {
            match d.name.as_str() {
                "mirror" if d.arg0() != "off" => out.push(d.arg0()),
                _ => mirrors(d.children(), out),
            }
        }
    }
    if !location.iter().any(|d| d.name == "internal") {
        return false;
    }
    let mut uris = Vec::new();
    mirrors(server, &mut uris);
    uris.iter().any(|uri| {
        let path = uri.split('?').next().unwrap_or(uri);
        matches!(crate::conf::pick::location(server, path),
            crate::conf::pick::Picked::Location(d) if std::ptr::eq(d.children(), location))
    })
}

/// How many of a stream server's `listen`s are `udp`, and how many are TCP.
fn listen_kinds(server: &[Directive]) -> (usize, usize) {
    let listens = server.iter().filter(|d| d.name == "listen");
    let udp = listens
        .clone()
        .filter(|d| d.args.iter().any(|a| a == "udp"));
    let udp = udp.count();
    (udp, listens.count() - udp)
}

fn target_addr(p: Parsed) -> TargetAddr {
    match p {
        Parsed::Ip(sa) => TargetAddr::Ip(sa),
        Parsed::Host { name, port } => TargetAddr::Host { name, port },
        Parsed::Unix(path) => TargetAddr::Unix(path),
    }
}

impl Collector {
    /// The place of `addr` in `targets`, added with no references if new.
    fn place(&mut self, addr: TargetAddr) -> usize {
        match self.index.get(&addr) {
            Some(&i) => i,
            None => {
                self.index.insert(addr.clone(), self.targets.len());
                self.targets.push((addr, Vec::new()));
                self.targets.len() - 1
            }
        }
    }

    /// Add a reference to `addr`; returns the target's place.
    fn add(&mut self, addr: TargetAddr, r: Reference) -> usize {
        let i = self.place(addr);
        self.add_at(i, r);
        i
    }

    /// Add a reference to the target at place `i`, unless it is there already.
    fn add_at(&mut self, i: usize, r: Reference) {
        // The path as bytes: hashing a `PathBuf` walks its components, which costs more here.
        let key = (
            i,
            r.file.as_os_str().as_encoded_bytes(),
            r.line,
            &r.directive,
            &r.upstream,
        );
        let h = self.hasher.hash_one(key);
        let refs = &mut self.targets[i].1;
        if !self.seen.insert(h) && refs.contains(&r) {
            return;
        }
        if refs.len() == refs.capacity() {
            // A backend behind thousands of servers has as many references: grow by a quarter
            // instead of doubling, so spare capacity stays small at the peak.
            refs.reserve_exact(refs.len() / 4 + 4);
        }
        refs.push(r);
    }

    fn finding(&mut self, d: &Directive, message: String, hint: Option<String>) {
        self.findings.push(Finding {
            file: d.file.clone(),
            line: d.line,
            message,
            hint,
        });
    }

    /// Record every `server` of every `upstream` block and index the blocks by name.
    fn upstreams(&mut self, context: Context, children: &[Directive]) -> HashMap<Word, Upstream> {
        // `ngx_http_upstream_server`: `u.default_port = 80`, the whole text to `ngx_parse_url`
        // (no URI part, so `server unix:/run/app.sock:80;` is that path, colon included).
        // `ngx_stream_upstream_server`: no default, "no port in upstream".
        let default_port = (context == Context::Http).then_some(80);
        let mut out = HashMap::new();
        for block in children.iter().filter(|d| d.name == "upstream") {
            let name = block.arg0();
            let shared: Arc<str> = Arc::from(name);
            let mut servers = Vec::new();
            for s in block.children().iter().filter(|d| d.name == "server") {
                let Some(text) = s.args.first() else { continue };
                let flags = &s.args[1..];
                let backup = flags.iter().any(|f| f == "backup");
                let down = flags.iter().any(|f| f == "down");
                let addr = match addr::parse(text, default_port) {
                    Ok(p) => target_addr(p),
                    Err(AddrError::NoPort(_)) => {
                        let msg = format!("upstream \"{name}\": server \"{text}\" has no port (required in stream)");
                        self.finding(s, msg, Some(format!("write `server {text}:PORT;`")));
                        continue;
                    }
                    Err(AddrError::Invalid(why)) => {
                        self.finding(s, format!("upstream \"{name}\": {why}"), None);
                        continue;
                    }
                };
                let mut r = reference(s, Name::SERVER, context);
                r.upstream = Some(shared.clone());
                r.backup = backup;
                r.down = down;
                let target = self.add(addr, r);
                servers.push(UpstreamServer {
                    target,
                    backup,
                    down,
                });
            }
            // nginx refuses a duplicate upstream name; the first one stands here.
            out.entry(Word::from(name.to_ascii_lowercase()))
                .or_insert(Upstream {
                    name: shared,
                    servers: servers.into_boxed_slice(),
                });
        }
        out
    }

    fn walk<'a>(
        &mut self,
        cx: &Ctx<'_, 'a>,
        dirs: &'a [Directive],
        frame: Frame<'a>,
        server_state: &mut ServerState<'a>,
    ) {
        for d in dirs {
            if let Some(directive) = Name::of_pass(&d.name) {
                self.pass(cx, d, directive, &frame, server_state);
                continue;
            }
            let Some(children) = &d.block else { continue };
            let name = d.name.as_str();
            if DATA_BLOCKS.contains(&name) || name.ends_with("_by_lua_block") {
                continue;
            }
            match name {
                "server" => {
                    let inner = Frame {
                        server: Some(children),
                        ..Frame::default()
                    };
                    self.walk(cx, children, inner, &mut None);
                }
                "location" | "limit_except" => {
                    let own = if name == "location" {
                        &children[..]
                    } else {
                        &[]
                    };
                    // A `limit_except` block keeps its location's name.
                    let named = match name {
                        "location" => (d.args.first())
                            .filter(|a| a.starts_with('@'))
                            .map(|a| a.as_str()),
                        _ => frame.named,
                    };
                    let regex = name == "location"
                        && matches!(
                            crate::conf::servers::location_args(&d.args).0.as_deref(),
                            Some("~" | "~*")
                        );
                    let inner = Frame {
                        location: Some(own),
                        inside_if: None,
                        named,
                        regex_location: if regex { Some(d) } else { frame.regex_location },
                        ..frame
                    };
                    self.walk(cx, children, inner, server_state);
                }
                "if" => {
                    let inner = Frame {
                        inside_if: Some(d),
                        ..frame
                    };
                    self.walk(cx, children, inner, server_state);
                }
                _ => self.walk(cx, children, frame, server_state),
            }
        }
    }

    fn pass<'a>(
        &mut self,
        cx: &Ctx<'_, 'a>,
        d: &'a Directive,
        directive: Name,
        frame: &Frame<'a>,
        server_state: &mut ServerState<'a>,
    ) {
        let Some(arg) = d.args.first() else { return };
        let read = |text: &str| {
            pass::read(cx.context, &directive, text, |n| {
                cx.upstreams.contains_key(n)
            })
        };
        let mut base = reference(d, directive, cx.context);
        if let (Some(server), Some(location)) = (frame.server, frame.location) {
            base.mirror = cx.context == Context::Http && mirror_only(server, location);
            base.websocket =
                cx.context == Context::Http && upgrade_in_force(&[cx.children, server, location]);
        }
        if cx.context == Context::Stream {
            // Datagrams only, or datagrams beside TCP connections (`listen 53; listen 53 udp;`).
            let (udp, tcp) = frame.server.map_or((0, 0), listen_kinds);
            base.udp = udp > 0 && tcp == 0;
            base.also_udp = udp > 0 && tcp > 0;
            base.ssl = frame.server.is_some_and(|s| stream_ssl(s, cx.children));
        }
        if !arg.contains('$') {
            let p = read(arg);
            match p.target {
                PassTarget::Invalid { message, hint } => self.finding(d, message, hint),
                // `ngx_http_upstream_add` (and the stream one) finds the upstream block by
                // host and refuses a port: "upstream \"backend\" may not have port 8080".
                // Never a name to look up.
                PassTarget::Addr(Parsed::Host { name, port })
                    if cx.upstreams.contains_key(name.as_str()) =>
                {
                    let message = format!("upstream \"{name}\" may not have port {port}");
                    let hint = format!("drop the port: the upstream block's `server` lines say where it goes, e.g. `{directive} {}`", arg.replacen(&format!(":{port}"), "", 1));
                    self.finding(d, message, Some(hint));
                }
                target => self.add_pass(cx, base, p.scheme, target, &[], arg),
            }
            return;
        }
        // A `*_pass` holding a variable is compiled as a script and read per request
        // (`ngx_http_script_variables_count` is non-zero): `nginx -t` checks nothing of it, so
        // nothing found here is a refusal. Each value it may take is read by the same rules as
        // nginx's `*_eval`; a value nginx cannot use (no host, no port, no scheme) fails that
        // request, and leaves the target dynamic.
        base.per_request = true;
        let defs = cx.defs();
        let Some(state) = rewrite::state_at(defs, frame, server_state) else {
            return;
        };
        let mut unusable = false;
        let captures = captures_around(frame);
        for cand in (Env {
            defs,
            state: &state,
        })
        .expand(arg)
        {
            // A host that is a regex capture with a few plain values (`http://$svc/` behind
            // `(?<svc>alpha|beta)`): each value, as nginx reads it for the request that gets it.
            let by_capture = crate::conf::captures::expand(&cand.text, &captures);
            if !by_capture.is_empty() {
                for text in by_capture {
                    let p = read(&text);
                    match p.target {
                        PassTarget::Invalid { .. } => unusable = true,
                        target => {
                            self.add_pass(cx, base.clone(), p.scheme, target, &cand.origins, arg)
                        }
                    }
                }
                continue;
            }
            let p = read(&cand.text);
            match p.target {
                PassTarget::Invalid { .. } => unusable = true,
                target => self.add_pass(cx, base.clone(), p.scheme, target, &cand.origins, arg),
            }
        }
        if unusable {
            self.add(TargetAddr::Dynamic(arg.to_string()), base);
        }
    }

    /// One value of a `*_pass` (`arg` as written) into targets, with the lines that gave it.
    fn add_pass(
        &mut self,
        cx: &Ctx<'_, '_>,
        mut base: Reference,
        scheme: Option<String>,
        target: PassTarget,
        origins: &[Binding<'_>],
        arg: &str,
    ) {
        base.scheme = scheme.as_deref().and_then(pass::known_scheme);
        match target {
            PassTarget::Addr(a) => {
                let i = self.place(target_addr(a));
                self.add_with_origins(i, base, origins);
            }
            PassTarget::Upstream(key) => {
                let Some(up) = cx.upstreams.get(key.as_str()) else {
                    return;
                };
                // An upstream block's servers are resolved at startup, whatever named it.
                base.per_request = false;
                for s in up.servers.iter() {
                    let mut r = base.clone();
                    r.upstream = Some(up.name.clone());
                    r.backup = s.backup;
                    r.down = s.down;
                    self.add_with_origins(s.target, r, origins);
                }
            }
            PassTarget::Dynamic => {
                self.add(TargetAddr::Dynamic(arg.to_string()), base);
            }
            PassTarget::Invalid { .. } => {}
        }
    }

    /// The pass reference to the target at place `i`, then one for each `set`/`map` line that
    /// supplied the value.
    fn add_with_origins(&mut self, i: usize, base: Reference, origins: &[Binding<'_>]) {
        let (context, backup, down) = (base.context, base.backup, base.down);
        let (udp, also_udp) = (base.udp, base.also_udp);
        let upstream = base.upstream.clone();
        self.add_at(i, base);
        for o in origins {
            let mut r = reference(o.origin, o.kind, context);
            r.upstream = upstream.clone();
            r.backup = backup;
            r.down = down;
            r.udp = udp;
            r.also_udp = also_udp;
            self.add_at(i, r);
        }
    }

    fn finish(mut self) -> Targets {
        // The lookup tables go first: on a large configuration they are megabytes.
        drop((self.index, self.seen));
        self.targets.sort_by(|a, b| a.0.cmp(&b.0));
        // Shared from here on: probe results and reports hold the same list, not copies. One
        // list at a time is copied into its final place, so the peak is one list, not all.
        let targets = (self.targets.into_iter())
            .map(|(address, references)| Target {
                address,
                references: references.into(),
            })
            .collect();
        let mut seen = HashSet::new();
        self.findings
            .retain(|f| seen.insert((f.file.clone(), f.line, f.message.clone())));
        Targets {
            targets,
            findings: self.findings,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::conf::tree;

    fn targets(text: &str) -> Targets {
        let file: Arc<Path> = Arc::from(Path::new("/t.conf"));
        let config = Config {
            main: "/t.conf".into(),
            conf_prefix: "/".into(),
            files: Vec::new(),
            tree: tree::parse(&file, text.as_bytes()).expect("parses"),
        };
        extract(&config)
    }

    #[test]
    fn only_targets_every_pass_reaches_from_udp_servers_are_datagram_only() {
        let t = targets(
            "stream {\n\
             upstream dns { server 127.0.0.1:53; }\n\
             upstream both { server 127.0.0.2:53; }\n\
             upstream unused { server 127.0.0.3:53; }\n\
             server { listen 53 udp; proxy_pass dns; }\n\
             server { listen 54 udp; proxy_pass both; }\n\
             server { listen 54; proxy_pass both; }\n\
             server { listen 55 udp; listen 55; proxy_pass 127.0.0.4:53; }\n\
             server { listen 56 udp; proxy_pass 127.0.0.5:53; }\n\
             }\n",
        );
        let only: Vec<String> = (t.targets.iter())
            .filter(|t| t.is_datagram_only())
            .map(|t| t.address.to_string())
            .collect();
        assert_eq!(only, ["127.0.0.1:53", "127.0.0.5:53"]);
        let datagrams: Vec<String> = (t.targets.iter())
            .filter(|t| t.receives_datagrams())
            .map(|t| t.address.to_string())
            .collect();
        assert_eq!(
            datagrams,
            [
                "127.0.0.1:53",
                "127.0.0.2:53",
                "127.0.0.4:53",
                "127.0.0.5:53"
            ]
        );
    }
}
