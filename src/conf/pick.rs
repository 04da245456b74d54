//! Which `location` of a server nginx picks for a path, as `ngx_http_core_find_location` does:
//! an exact (`=`) match ends the search; else the longest prefix is taken and the search goes
//! on among the locations nested in it; then, unless that prefix is `^~`, the regexes of the
//! level in the order written, the first match winning (and its nested locations searched in
//! turn); else the longest prefix stands. Named locations are never picked for a path.
//!
//! Used to tell where a path the checks derive lands (a `map $uri` key), and which location
//! answers an `auth_request` subrequest.

use crate::conf::host_map;
use crate::conf::servers::location_args;
use crate::conf::tree::Directive;

/// The location a path lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picked<'a> {
    Location(&'a Directive),
    /// No location takes it: the server's own directives answer.
    Nothing,
    /// A regex this tool cannot evaluate is asked first.
    Unknown,
}

/// The location of `server` (the server block's directives) nginx picks for `path`.
pub fn location<'a>(server: &'a [Directive], path: &str) -> Picked<'a> {
    match search(server, path) {
        Some((Some(d), _)) => Picked::Location(d),
        Some((None, _)) => Picked::Nothing,
        None => Picked::Unknown,
    }
}

/// One level's search: the location found and whether it is final (an exact or regex match,
/// after which no outer regex is asked); `None` when a regex cannot be evaluated.
fn search<'a>(dirs: &'a [Directive], path: &str) -> Option<(Option<&'a Directive>, bool)> {
    let locations = || {
        (dirs.iter())
            .filter(|d| d.name == "location" && d.block.is_some())
            .map(|d| (d, location_args(&d.args)))
    };
    let mut longest: Option<(&Directive, usize, bool)> = None;
    for (d, (modifier, p)) in locations() {
        match modifier.as_deref() {
            Some("=") if p == path => return Some((Some(d), true)),
            None | Some("^~")
                if !p.starts_with('@')
                    && path.starts_with(p.as_str())
                    && longest.is_none_or(|(_, len, _)| p.len() > len) =>
            {
                longest = Some((d, p.len(), modifier.is_some()));
            }
            _ => {}
        }
    }
    let mut found = longest.map(|(d, _, _)| d);
    if let Some((d, _, noregex)) = longest {
        let (inner, done) = search(d.children(), path)?;
        if done {
            return Some((inner, true));
        }
        found = inner.or(found);
        if noregex {
            return Some((found, false));
        }
    }
    for (d, (modifier, p)) in locations() {
        let caseless = match modifier.as_deref() {
            Some("~") => false,
            Some("~*") => true,
            _ => continue,
        };
        if host_map::compile(&p, caseless)?.is_match(path.as_bytes()) {
            let (inner, _) = search(d.children(), path)?;
            return Some((inner.or(Some(d)), true));
        }
    }
    Some((found, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, LoadOptions};

    /// The picked location's first argument after its modifier, for a server block's body.
    fn picks(server: &str, paths: &[&str]) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        let conf = format!("events {{}}\nhttp {{ server {{\n{server}\n}} }}\n");
        std::fs::write(&main, conf).expect("write");
        let config = load(&main, &LoadOptions::default()).expect("loads");
        let server = config.tree[1].children()[0].children();
        (paths.iter())
            .map(|p| match location(server, p) {
                Picked::Location(d) => location_args(&d.args).1,
                Picked::Nothing => "-".into(),
                Picked::Unknown => "?".into(),
            })
            .collect()
    }

    #[test]
    fn locations_are_picked_as_nginx_picks_them() {
        let server =
            "location / {}\n location = /x {}\n location /api/ { location ~ \\.json$ {} }\n\
             location ^~ /static/ {}\n location ~ \\.(png|json)$ {}\n location ~* ^/UP {}\n\
             location @app {}";
        assert_eq!(
            picks(
                server,
                &[
                    "/x",
                    "/x/",
                    "/api/a",
                    "/api/a.json",
                    "/static/a.png",
                    "/b.png",
                    "/up",
                    "/@app"
                ]
            ),
            [
                "/x",
                "/",
                "/api/",
                "\\.json$",
                "/static/",
                "\\.(png|json)$",
                "^/UP",
                "/"
            ]
        );
        assert_eq!(picks("location /a/ {}", &["/b"]), ["-"]);
        assert_eq!(picks("location ~ (?<=a)b {}", &["/ab"]), ["?"]);
    }
}
