//! `map $uri $var { ... }` (and `map $request_uri`): the request's path picks the value, so a
//! `*_pass` through `$var` goes to another upstream for another path, and a check of the
//! location's own path says nothing about the others.
//!
//! For each value the map gives besides the one the location's own path gets, a path is
//! derived that gets that value and lands on this same location (as nginx picks locations,
//! see `pick`): an exact key as written, a match of a regex key for each of its branches where
//! one can be derived (`example`, confirmed against the regex itself), for the default a path
//! under the location that no key takes. Where no key of a value gives such a path, that
//! branch is said to be unverified, never guessed.

use std::path::Path;
use std::sync::Arc;

use crate::conf::example::{self, Kind};
use crate::conf::host_map::{HostMap, Lookup, Pattern, Source};
use crate::conf::pick::{self, Picked};
use crate::conf::servers::{location_args, missing_path_under};
use crate::conf::tree::Directive;

/// One value of a map a location's requests can get, and how a request gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    /// `map $pool /api/`, `map $pool ~^/static/`, `map $pool default`.
    pub what: String,
    /// The path that takes it, or why none is known.
    pub reach: Result<String, String>,
    pub file: Arc<Path>,
    pub line: u32,
}

/// One value of the map with the keys that give it (`None`: the default), in the order
/// written, and where the first of them is.
struct Value<'a> {
    value: &'a str,
    keys: Vec<Option<&'a Pattern>>,
    file: &'a Arc<Path>,
    line: u32,
}

/// The branches of `map` that requests to `location` (among `server`, the server block's
/// directives) can take besides the one its own path `own` gets. A value no path of this
/// location can get (an exact key another location answers) is none of its branches.
pub fn branches(
    map: &HostMap,
    own: &str,
    server: &[Directive],
    location: &Directive,
) -> Vec<Branch> {
    let Lookup::Value(own_value) = map.lookup(own) else {
        return vec![Branch {
            what: format!("map ${}", map.var),
            reach: Err("a regex key this tool cannot evaluate comes first".into()),
            file: map.file.clone(),
            line: map.line,
        }];
    };
    // Each value once, the default's last.
    let mut values: Vec<Value> = Vec::new();
    let entries = (map.keys.iter())
        .map(|k| (k.value.as_str(), Some(&k.pattern), &k.file, k.line))
        .chain([(map.default.as_str(), None, &map.file, map.line)]);
    for (value, key, file, line) in entries.filter(|(v, ..)| *v != own_value) {
        match values.iter_mut().find(|v| v.value == value) {
            Some(v) => v.keys.push(key),
            None => values.push(Value {
                value,
                keys: vec![key],
                file,
                line,
            }),
        }
    }
    let exact = location_args(&location.args).0.as_deref() == Some("=");
    // Locations are picked on the path alone, the query aside.
    let lands_here = |path: &str| {
        let path = path.split('?').next().unwrap_or(path);
        matches!(pick::location(server, path), Picked::Location(d) if std::ptr::eq(d, location))
    };
    (values.iter())
        .filter_map(|v| branch(map, own, v, exact, &lands_here))
        .collect()
}

/// The branch of one value: the first path one of its keys gives that gets the value and
/// lands on the location, else why none does; `None` when only paths another location
/// answers get it.
fn branch(
    map: &HostMap,
    own: &str,
    value: &Value,
    exact_location: bool,
    lands_here: &dyn Fn(&str) -> bool,
) -> Option<Branch> {
    let text = |key: Option<&Pattern>| key.map_or("default", Pattern::text).to_string();
    let made = |key: Option<&Pattern>, reach| Branch {
        what: format!("map ${} {}", map.var, text(key)),
        reach,
        file: value.file.clone(),
        line: value.line,
    };
    let mut why: Option<String> = None;
    for &key in &value.keys {
        let paths = match paths_for(map.source, key, own) {
            Ok(paths) => paths,
            Err(e) => {
                why.get_or_insert(e);
                continue;
            }
        };
        let gets = |p: &&String| map.lookup(p) == Lookup::Value(value.value);
        if let Some(path) = paths.iter().filter(gets).find(|p| lands_here(p)) {
            return Some(made(key, Ok(path.clone())));
        }
        match paths.iter().find(gets) {
            // Only that path gets it, and another location answers it.
            Some(_) if matches!(key, Some(Pattern::Exact(_))) || exact_location => {}
            Some(path) => {
                why.get_or_insert(format!("{path} is answered by another location"));
            }
            None => {
                why.get_or_insert(format!("{} gets another value first", paths[0]));
            }
        }
    }
    let why = format!(
        "{}: what it routes to ({}) is not verified",
        why?, value.value
    );
    Some(made(value.keys[0], Err(why)))
}

/// The paths that may get a key's value (`None`: the default's), before knowing whether
/// another key or another location takes them first.
fn paths_for(source: Source, pattern: Option<&Pattern>, own: &str) -> Result<Vec<String>, String> {
    match pattern {
        None => {
            let mut paths = vec![missing_path_under(own)];
            if source == Source::RequestUri {
                paths.push(format!("{own}?safe-reload-check"));
            }
            Ok(paths)
        }
        Some(Pattern::Exact(key)) => {
            let sendable = key.starts_with('/')
                && (key.bytes()).all(|b| b.is_ascii_graphic() && b != b'#' && b != b'%')
                && (source == Source::RequestUri || !key.contains('?'));
            match sendable {
                true => Ok(vec![key.clone()]),
                false => Err(format!("the key {key} is not a path this tool sends")),
            }
        }
        Some(Pattern::Regex(text, re)) => {
            let (caseless, body) = match text.strip_prefix("~*") {
                Some(body) => (true, body),
                None => (false, text.trim_start_matches('~')),
            };
            let paths = match re {
                Some(_) => example::examples(body, caseless, Kind::Path),
                None => Vec::new(),
            };
            match paths.is_empty() {
                true => Err("a regex key no matching path could be derived from".into()),
                false => Ok(paths),
            }
        }
        Some(Pattern::Wildcard(w)) => Err(format!("{w} is not a path")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{host_map, load, LoadOptions};

    /// The branches of `$pool` for the location at `loc` (its index among the server's
    /// locations), shown as `what -> path` or `what: why`.
    fn shown(http: &str, loc: usize, own: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, format!("events {{}}\nhttp {{\n{http}\n}}\n")).expect("write");
        let config = load(&main, &LoadOptions::default()).expect("loads");
        let index = host_map::index(&config);
        let http = config.tree.iter().find(|d| d.name == "http").expect("http");
        let server = http
            .children()
            .iter()
            .find(|d| d.name == "server")
            .expect("server");
        let locations: Vec<&Directive> = (server.children().iter())
            .filter(|d| d.name == "location")
            .collect();
        (branches(&index["pool"], own, server.children(), locations[loc]).iter())
            .map(|b| match &b.reach {
                Ok(path) => format!("{} -> {path}", b.what),
                Err(why) => format!("{}: {why}", b.what),
            })
            .collect()
    }

    #[test]
    fn a_path_for_each_value_the_location_can_get() {
        let http = "map $uri $pool { /api/ api; /v2/ api; ~^/static/ static; ~^/v\\d+/ v; \
                    ~^[^/] bare; /Other/ other; /x?y web; default web; }\n\
                    server { location / { proxy_pass http://$pool; } }";
        assert_eq!(
            shown(http, 0, "/"),
            [
                "map $pool /api/ -> /api/",
                "map $pool ~^/static/ -> /static/",
                "map $pool ~^/v\\d+/ -> /v0/",
                "map $pool ~^[^/]: a regex key no matching path could be derived from: what it \
                 routes to (bare) is not verified",
                "map $pool /other/ -> /other/",
            ],
            "the default is what / gets; /x?y cannot be a $uri"
        );
    }

    #[test]
    fn a_path_another_location_answers_is_no_branch_of_this_one() {
        let http =
            "map $request_uri $pool { /api/ api; ~^/app/ app; /api/?v=2 two; default web; }\n\
                    server { location / { proxy_pass http://$pool; } location /app/ { } \
                    location = /api/ { proxy_pass http://$pool; } }";
        // /api/ and /api/?v=2 only ever reach `location = /api/`: no branches of `/`.
        assert_eq!(
            shown(http, 0, "/"),
            [
                "map $pool ~^/app/: /app/ is answered by another location: what it routes to \
              (app) is not verified"
            ]
        );
        // The exact location gets another value with a query, and the default with another.
        assert_eq!(
            shown(http, 2, "/api/"),
            [
                "map $pool /api/?v=2 -> /api/?v=2",
                "map $pool default -> /api/?safe-reload-check",
            ]
        );
    }
}
