//! `map $host $var { ... }` (and `map $http_host`): the request's Host picks the value, so a
//! `*_pass` through `$var` goes to another upstream for another Host, and a check on one Host
//! says nothing about the others. Read once per configuration; each location whose `*_pass`
//! goes through such a variable keeps its map, so the checks can send each Host it routes
//! elsewhere.
//!
//! Keys are matched as nginx's map module does: exact keys ignoring case, with `hostnames`
//! the wildcard forms (`.example.test`, `*.example.test`, `mail.*`), then regexes (`~`, `~*`)
//! in the order written, then `default`. `$server_name` is not the request's Host and is not
//! read here.
//!
//! A map on the request's path (`map $uri`, `map $request_uri`) is read the same way and kept
//! apart (see `uri_map`): there the path picks the upstream, and `hostnames` means nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use crate::conf::tree::Directive;
use crate::conf::Config;

/// What a map reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `$host`: the Host without its port, lowercased.
    Host,
    /// `$http_host`: the Host header as sent, with its port when there is one.
    HttpHost,
    /// `$uri`: the path, decoded, without the query.
    Uri,
    /// `$request_uri`: the path and query as sent.
    RequestUri,
    /// `$request_method`.
    Method,
    /// `$cookie_NAME`: that cookie's value (the name in [`HostMap::name`]).
    Cookie,
    /// `$http_NAME`, a header other than Host (`X-Api-Version` in [`HostMap::name`]).
    Header,
    /// `$arg_NAME`: that query parameter's value.
    Arg,
}

impl Source {
    /// Whether it reads the request's Host.
    pub fn is_host(self) -> bool {
        matches!(self, Source::Host | Source::HttpHost)
    }

    /// Whether it reads the request's path.
    pub fn is_path(self) -> bool {
        matches!(self, Source::Uri | Source::RequestUri)
    }

    /// Whether it reads something else a client chooses per request: its method, a cookie, a
    /// header, a query parameter.
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Source::Method | Source::Cookie | Source::Header | Source::Arg
        )
    }
}

/// One `map` whose source is the request's Host (or its path, method, a cookie, a header or a
/// query parameter: see [`Source`]).
#[derive(Debug, Clone)]
pub struct HostMap {
    /// The variable it defines, without `$`, lowercased.
    pub var: String,
    pub source: Source,
    /// The source variable as written, lowercased: `$host`, `$cookie_canary`.
    pub reads: String,
    /// The cookie, header (`X-Api-Version`) or query parameter a [`Source::Cookie`],
    /// [`Source::Header`] or [`Source::Arg`] map reads; empty for the others.
    pub name: String,
    pub keys: Vec<Key>,
    /// The `default` value; nginx's is the empty string.
    pub default: String,
    pub file: Arc<Path>,
    pub line: u32,
}

/// Maps are told apart by where they are written.
impl PartialEq for HostMap {
    fn eq(&self, other: &HostMap) -> bool {
        (&self.var, &self.file, self.line) == (&other.var, &other.file, other.line)
    }
}

impl Eq for HostMap {}

/// One key and its value.
#[derive(Debug, Clone)]
pub struct Key {
    pub pattern: Pattern,
    pub value: String,
    pub file: Arc<Path>,
    pub line: u32,
}

/// A key as nginx matches it.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Matched as a whole, ignoring case (lowercased here).
    Exact(String),
    /// `.example.test`, `*.example.test` or `mail.*` in a `hostnames` map.
    Wildcard(String),
    /// `~re` or `~*re` as written; `None` when this tool cannot compile it.
    Regex(String, Option<Regex>),
}

impl Pattern {
    /// As written.
    pub fn text(&self) -> &str {
        match self {
            Pattern::Exact(t) | Pattern::Wildcard(t) | Pattern::Regex(t, _) => t,
        }
    }
}

/// What a map gives for a source value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Value(&'a str),
    /// A regex this tool cannot compile comes first: the value cannot be told.
    Unknown,
}

impl HostMap {
    /// The value for `source` (the Host as `$host` or `$http_host` holds it, the path as
    /// `$uri` or `$request_uri` does). Exact keys are matched ignoring case, as nginx hashes
    /// them; regexes see the value as it is.
    pub fn lookup(&self, source: &str) -> Lookup<'_> {
        let lower = source.to_ascii_lowercase();
        if let Some(k) =
            (self.keys.iter()).find(|k| matches!(&k.pattern, Pattern::Exact(e) if *e == lower))
        {
            return Lookup::Value(&k.value);
        }
        let wild = |keep: fn(&str, &str) -> Option<usize>| {
            (self.keys.iter())
                .filter_map(|k| match &k.pattern {
                    Pattern::Wildcard(w) => keep(w, &lower).map(|len| (len, k)),
                    _ => None,
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, k)| k.value.as_str())
        };
        if let Some(v) = wild(leading_wildcard).or_else(|| wild(trailing_wildcard)) {
            return Lookup::Value(v);
        }
        for k in &self.keys {
            match &k.pattern {
                Pattern::Regex(_, Some(re)) if re.is_match(source.as_bytes()) => {
                    return Lookup::Value(&k.value)
                }
                Pattern::Regex(_, None) => return Lookup::Unknown,
                _ => {}
            }
        }
        Lookup::Value(&self.default)
    }
}

/// Whether `server_name` entry `name` takes Host `host`, as nginx matches them: the same name
/// (case ignored), a leading or trailing wildcard, or a regex (`~`).
pub fn server_name_takes(name: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    if let Some(re) = name.strip_prefix('~') {
        // nginx compiles server name regexes caseless.
        return compile(re, true).is_some_and(|r| r.is_match(host.as_bytes()));
    }
    let name = name.to_ascii_lowercase();
    name == host
        || leading_wildcard(&name, &host).is_some()
        || trailing_wildcard(&name, &host).is_some()
}

/// How much of `host` a leading wildcard (`*.example.test`, `.example.test`) matches.
pub fn leading_wildcard(pattern: &str, host: &str) -> Option<usize> {
    if let Some(suffix) = pattern.strip_prefix('*') {
        return (suffix.starts_with('.') && host.ends_with(suffix) && host.len() > suffix.len())
            .then_some(suffix.len());
    }
    let bare = pattern.strip_prefix('.')?;
    (host == bare || host.ends_with(pattern)).then_some(pattern.len())
}

/// How much of `host` a trailing wildcard (`mail.*`) matches.
pub fn trailing_wildcard(pattern: &str, host: &str) -> Option<usize> {
    let prefix = pattern.strip_suffix('*')?;
    (prefix.ends_with('.') && host.starts_with(prefix) && host.len() > prefix.len())
        .then_some(prefix.len())
}

/// A regex as nginx compiles a server name or map key one: bytes, ASCII classes (PCRE without
/// UTF), case ignored when asked; `None` for what this engine does not take (lookaround,
/// backreferences) or what would cost too much to hold.
pub fn compile(pattern: &str, caseless: bool) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(caseless)
        .size_limit(1 << 20)
        .build()
        .ok()
}

/// The maps of `config`'s `http` blocks on the request's Host or path, by the variable each
/// defines.
pub fn index(config: &Config) -> HashMap<String, Arc<HostMap>> {
    let mut out = HashMap::new();
    let maps = (config.tree.iter())
        .filter(|d| d.name == "http")
        .flat_map(|d| d.children())
        .filter(|d| d.name == "map" && d.block.is_some());
    let mut chained = Vec::new();
    for d in maps {
        match host_map(d) {
            Some(map) => {
                out.insert(map.var.clone(), Arc::new(map));
            }
            None => chained.push(d),
        }
    }
    // A map of a request map's variable (`map $http_x_canary $c1 { default 0; 1 1; }` then
    // `map $c1 $pool { 0 stable; 1 canary; }`): the two as one map of the request.
    for d in chained {
        if let Some(map) = composed(d, &out) {
            out.insert(map.var.clone(), Arc::new(map));
        }
    }
    out
}

/// Map `d`, whose source is the variable of `inner` in `index` (a request map), as one map of
/// `inner`'s source: each of `inner`'s keys gives what `d` gives for its value.
fn composed(d: &Directive, index: &HashMap<String, Arc<HostMap>>) -> Option<HostMap> {
    let source = d.args.first()?.to_ascii_lowercase();
    let inner = index.get(source.strip_prefix('$')?)?;
    if !inner.source.is_request() {
        return None;
    }
    let var = d.args.get(1)?.strip_prefix('$')?.to_ascii_lowercase();
    // `d`'s own keys, exact ones only: a regex on another map's value is not followed.
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut default = String::new();
    for entry in d.children() {
        let Some(value) = entry.args.first() else {
            continue;
        };
        match entry.name.as_str() {
            "default" => default = value.to_string(),
            k if k.starts_with('~') || k == "include" || k == "hostnames" => return None,
            k => keys.push((
                k.strip_prefix('\\').unwrap_or(k).to_string(),
                value.to_string(),
            )),
        }
    }
    let give = |v: &str| {
        (keys.iter().find(|(k, _)| k == v)).map_or(default.clone(), |(_, out)| out.clone())
    };
    Some(HostMap {
        keys: (inner.keys.iter())
            .map(|k| Key {
                value: give(&k.value),
                ..k.clone()
            })
            .collect(),
        default: give(&inner.default),
        var,
        file: d.file.clone(),
        line: d.line,
        ..(**inner).clone()
    })
}

/// The first map among a `*_pass` argument's variables whose source is one `reads` takes
/// ([`Source::is_host`], [`Source::is_path`]).
pub fn of_target(
    index: &HashMap<String, Arc<HostMap>>,
    target: &str,
    reads: fn(Source) -> bool,
) -> Option<Arc<HostMap>> {
    if index.is_empty() || !target.contains('$') {
        return None;
    }
    let mut rest = target;
    while let Some(at) = rest.find('$') {
        let after = rest[at + 1..].trim_start_matches('{');
        let end = (after.bytes())
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
            .unwrap_or(after.len());
        let map = index.get(&after[..end].to_ascii_lowercase());
        if let Some(map) = map.filter(|m| reads(m.source)) {
            return Some(map.clone());
        }
        rest = &after[end..];
    }
    None
}

fn host_map(d: &Directive) -> Option<HostMap> {
    let reads = d.args.first()?.to_ascii_lowercase();
    let (source, name) = match reads.as_str() {
        "$host" => (Source::Host, String::new()),
        "$http_host" => (Source::HttpHost, String::new()),
        "$uri" => (Source::Uri, String::new()),
        "$request_uri" => (Source::RequestUri, String::new()),
        "$request_method" => (Source::Method, String::new()),
        r => match (
            r.strip_prefix("$cookie_"),
            r.strip_prefix("$http_"),
            r.strip_prefix("$arg_"),
        ) {
            (Some(c), _, _) if !c.is_empty() => (Source::Cookie, c.to_string()),
            (_, Some(h), _) if !h.is_empty() => {
                (Source::Header, crate::conf::variants::header_name(h))
            }
            (_, _, Some(a)) if !a.is_empty() => (Source::Arg, a.to_string()),
            _ => return None,
        },
    };
    let var = d.args.get(1)?.strip_prefix('$')?.to_ascii_lowercase();
    let hostnames = source.is_host() && d.children().iter().any(|c| c.name == "hostnames");
    let mut map = HostMap {
        var,
        source,
        reads: reads.to_string(),
        name,
        keys: Vec::new(),
        default: String::new(),
        file: d.file.clone(),
        line: d.line,
    };
    for entry in d.children() {
        let key = entry.name.as_str();
        let Some(value) = entry.args.first() else {
            // `hostnames;`, `volatile;`
            continue;
        };
        let pattern = if key == "default" {
            map.default = value.to_string();
            continue;
        } else if let Some(re) = key.strip_prefix("~*") {
            Pattern::Regex(key.to_string(), compile(re, true))
        } else if let Some(re) = key.strip_prefix('~') {
            Pattern::Regex(key.to_string(), compile(re, false))
        } else if key == "include" {
            continue;
        } else {
            let key = key.strip_prefix('\\').unwrap_or(key).to_ascii_lowercase();
            if hostnames && (key.starts_with('.') || key.starts_with("*.") || key.ends_with(".*")) {
                Pattern::Wildcard(key)
            } else {
                Pattern::Exact(key)
            }
        };
        map.keys.push(Key {
            pattern,
            value: value.to_string(),
            file: entry.file.clone(),
            line: entry.line,
        });
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, LoadOptions};

    fn maps(http: &str) -> HashMap<String, Arc<HostMap>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, format!("events {{}}\nhttp {{\n{http}\n}}\n")).expect("write");
        index(&load(&main, &LoadOptions::default()).expect("loads"))
    }

    #[test]
    fn keys_are_matched_as_nginx_matches_them() {
        let index = maps(
            "map $host $pool { hostnames; default d; B.test b; *.w.test w; .dot.test dot; \
             mail.* m; ~^api\\d a; ~*^UP u; }\n\
             map $http_host $raw { a.test:8080 p; ~(?<=x)y bad; }\n\
             map $server_name $no { a x; }",
        );
        assert!(!index.contains_key("no"), "$server_name is not the Host");
        let m = &index["pool"];
        assert_eq!(m.source, Source::Host);
        let v = |h: &str| m.lookup(h);
        assert_eq!(v("b.test"), Lookup::Value("b"));
        assert_eq!(v("x.w.test"), Lookup::Value("w"));
        assert_eq!(v("w.test"), Lookup::Value("d"));
        assert_eq!(v("dot.test"), Lookup::Value("dot"));
        assert_eq!(v("a.dot.test"), Lookup::Value("dot"));
        assert_eq!(v("mail.x"), Lookup::Value("m"));
        assert_eq!(v("api7.x"), Lookup::Value("a"));
        assert_eq!(v("up.x"), Lookup::Value("u"));
        assert_eq!(v("other"), Lookup::Value("d"));
        let raw = &index["raw"];
        assert_eq!(raw.source, Source::HttpHost);
        assert_eq!(raw.lookup("a.test:8080"), Lookup::Value("p"));
        assert_eq!(
            raw.lookup("a.test"),
            Lookup::Unknown,
            "a lookbehind is not compiled"
        );
        assert_eq!(raw.default, "");
    }

    #[test]
    fn a_target_goes_through_the_first_host_map_among_its_variables() {
        let index = maps(
            "map $host $pool { default one; }\nmap $uri $other { default x; }\n\
             map $cookie_a $no { default x; }",
        );
        let host = |target: &str| of_target(&index, target, Source::is_host);
        assert!(host("http://$pool").is_some());
        assert!(host("http://${pool}/x").is_some());
        assert!(host("http://$other$pool").is_some());
        assert!(host("http://$other").is_none());
        assert!(host("http://one").is_none());
        let path = |target: &str| of_target(&index, target, Source::is_path);
        let other = path("http://$other$pool").expect("the $uri map");
        assert_eq!((other.var.as_str(), other.source), ("other", Source::Uri));
        assert!(path("http://$no").is_none());
    }

    #[test]
    fn wildcards_match_as_server_names_do() {
        assert_eq!(leading_wildcard("*.a.test", "x.a.test"), Some(7));
        assert_eq!(leading_wildcard("*.a.test", "a.test"), None);
        assert_eq!(leading_wildcard(".a.test", "a.test"), Some(7));
        assert_eq!(leading_wildcard(".a.test", "x.y.a.test"), Some(7));
        assert_eq!(trailing_wildcard("mail.*", "mail.x"), Some(5));
        assert_eq!(trailing_wildcard("mail.*", "mail."), None);
        assert_eq!(leading_wildcard("a.test", "a.test"), None);
    }
}
