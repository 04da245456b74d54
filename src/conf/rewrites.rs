//! Where nginx's `rewrite` sends a request: the URI a block's `rewrite` directives make of a
//! path, as `ngx_http_rewrite_module` runs them in order, and the location that URI then lands
//! on. A location whose body only rewrites (`location / { rewrite ^/(.*)$ /v1/$1 last; }`, a
//! front controller's `rewrite ^ /index.php last;`) passes nowhere itself, yet every request
//! to it reaches the backend of the location it rewrites to; a server-level `rewrite` does the
//! same for the paths its regex matches, before any location is chosen.
//!
//! Only what is certain for the request is followed: the block's own `rewrite` and `return`
//! directives (those inside an `if` depend on what the request carries, and are taken only for
//! a request said to meet its condition, see [`apply_taking`]), a replacement made of text, the
//! regex's captures and `$uri`. A redirect, a `return`, a
//! `break` in a location with no backend, a replacement with any other variable, or more
//! than nginx's 10 rewrite cycles end the search: no backend is known to answer.

use regex::bytes::{Captures, Regex};

use crate::conf::host_map;
use crate::conf::pick::{self, Picked};
use crate::conf::tree::Directive;

/// nginx gives up after this many URI changes (`NGX_HTTP_MAX_URI_CHANGES`) and answers 500.
const MAX_URI_CHANGES: usize = 10;

/// One `rewrite` or `return` of a block, in the order written.
enum Rule<'a> {
    Rewrite {
        regex: Regex,
        replacement: &'a str,
        flag: &'a str,
    },
    Return,
}

/// What a block's rules make of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No `rewrite` matched and nothing returned: the request goes on in this block.
    Unchanged,
    /// The URI was rewritten; nginx searches the locations again for it.
    Search(String),
    /// Rewritten with `break`: the request stays in this block with this URI.
    Stays(String),
    /// A redirect, a `return`, or a URI this tool cannot work out: no backend is known.
    Leaves,
}

/// The `rewrite` and `return` directives directly in `dirs`, and those of `taken`, one of
/// its `if` blocks whose condition the request meets, where it stands.
fn rules<'a>(dirs: &'a [Directive], taken: Option<&Directive>) -> Vec<Rule<'a>> {
    let mut out = Vec::new();
    for d in dirs {
        match d.name.as_str() {
            "if" if taken.is_some_and(|t| std::ptr::eq(t, d)) => {
                out.extend(rules(d.children(), None))
            }
            "return" => out.push(Rule::Return),
            "rewrite" if d.args.len() >= 2 => match host_map::compile(&d.args[0], false) {
                Some(regex) => out.push(Rule::Rewrite {
                    regex,
                    replacement: d.args[1].as_str(),
                    flag: d.args.get(2).map_or("", |w| w.as_str()),
                }),
                // A regex this tool cannot run: what follows is not known.
                None => out.push(Rule::Return),
            },
            _ => {}
        }
    }
    out
}

/// Whether `dirs` (a block's body) holds a `rewrite` of its own.
pub fn rewrites(dirs: &[Directive]) -> bool {
    dirs.iter().any(|d| d.name == "rewrite")
}

/// The block's rules run on `path`, as nginx's rewrite phase runs them.
pub fn apply(dirs: &[Directive], path: &str) -> Outcome {
    apply_taking(dirs, path, None)
}

/// As [`apply`], for a request that meets the condition of `taken`, one of the block's `if`
/// blocks: its rules run where it stands.
pub fn apply_taking(dirs: &[Directive], path: &str, taken: Option<&Directive>) -> Outcome {
    let mut uri = path.to_string();
    let mut changed = false;
    for rule in rules(dirs, taken) {
        let (regex, replacement, flag) = match rule {
            Rule::Return => return Outcome::Leaves,
            Rule::Rewrite {
                regex,
                replacement,
                flag,
            } => (regex, replacement, flag),
        };
        let Some(caps) = regex.captures(uri.as_bytes()) else {
            continue;
        };
        let redirect = ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| replacement.starts_with(p));
        if redirect || flag == "redirect" || flag == "permanent" {
            return Outcome::Leaves;
        }
        // The query (`?$args`) does not choose a location.
        let path_part = replacement.split('?').next().unwrap_or("");
        let Some(new) = substitute(path_part, &caps, &uri) else {
            return Outcome::Leaves;
        };
        uri = new;
        changed = true;
        match flag {
            "last" => return Outcome::Search(uri),
            "break" => return Outcome::Stays(uri),
            _ => {}
        }
    }
    match changed {
        true => Outcome::Search(uri),
        false => Outcome::Unchanged,
    }
}

/// `replacement` with `$1`..`$9`, `${N}`, named captures and `$uri` (the URI it is applied to)
/// filled in; `None` when it reads any other variable.
fn substitute(replacement: &str, caps: &Captures, uri: &str) -> Option<String> {
    let b = replacement.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let braced = b.get(i + 1) == Some(&b'{');
        let start = i + 1 + usize::from(braced);
        let mut end = start;
        if b.get(start).is_some_and(u8::is_ascii_digit) {
            // nginx reads one digit: `$12` is `$1` then `2`.
            end = start + 1;
        } else {
            while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                end += 1;
            }
        }
        let name = &replacement[start..end];
        if braced && b.get(end) != Some(&b'}') {
            return None;
        }
        if (name.eq_ignore_ascii_case("uri") || name.eq_ignore_ascii_case("document_uri"))
            && caps.name(name).is_none()
        {
            out.extend_from_slice(uri.as_bytes());
            i = end + usize::from(braced);
            continue;
        }
        let group = match name.parse::<usize>() {
            Ok(n) => caps.get(n),
            Err(_) if name.is_empty() => return None,
            Err(_) => Some(caps.name(name)?),
        };
        out.extend_from_slice(group.map_or(&[][..], |m| m.as_bytes()));
        i = end + usize::from(braced);
    }
    String::from_utf8(out).ok()
}

/// Where a rewritten `uri` ends up in `server` (the server block's body): the location nginx
/// picks for it, after that location's own rewrites (each a cycle, at most nginx's 10), with
/// the URI it holds there; `None` when no location is known to take it with a backend behind
/// it (`has_backend` says which do).
pub fn land(
    server: &[Directive],
    mut uri: String,
    has_backend: impl Fn(&Directive) -> bool,
) -> Option<(&Directive, String)> {
    for _ in 0..MAX_URI_CHANGES {
        let Picked::Location(d) = pick::location(server, &uri) else {
            return None;
        };
        if has_backend(d) {
            // A backend location's own rewrites only change the URI it passes on.
            return Some((d, uri));
        }
        match apply(d.children(), &uri) {
            Outcome::Search(next) => uri = next,
            Outcome::Unchanged | Outcome::Stays(_) | Outcome::Leaves => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, LoadOptions};

    fn server_body(server: &str) -> (tempfile::TempDir, crate::conf::Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        let conf = format!("events {{}}\nhttp {{ server {{\n{server}\n}} }}\n");
        std::fs::write(&main, conf).expect("write");
        let config = load(&main, &LoadOptions::default()).expect("loads");
        (dir, config)
    }

    #[test]
    fn rewrites_run_in_order_with_their_flags() {
        let (_d, c) = server_body(
            "rewrite ^/shop/(.*)$ /v1/$1 last;\n rewrite ^/old/(?<rest>.*)$ /new/${rest};\n\
             rewrite ^/new/(.*)$ /v2/$1?x=$args;\n rewrite ^/gone https://a.test/ permanent;\n\
             rewrite ^/b/(.*) /c/$1 break;\n rewrite ^/var/ /$host/;\n\
             if ($arg_v = 2) { rewrite ^ /v2$uri last; }\n rewrite ^/u/ /w$uri;",
        );
        let server = c.tree[1].children()[0].children();
        let cases = [
            ("/shop/a", Outcome::Search("/v1/a".into())),
            ("/old/x", Outcome::Search("/v2/x".into())),
            ("/gone", Outcome::Leaves),
            ("/b/q", Outcome::Stays("/c/q".into())),
            ("/var/", Outcome::Leaves),
            ("/other", Outcome::Unchanged),
            ("/u/a", Outcome::Search("/w/u/a".into())),
        ];
        for (path, want) in cases {
            assert_eq!(apply(server, path), want, "{path}");
        }
        // A request that meets the `if` takes its rewrite where the `if` stands.
        let taken = server.iter().find(|d| d.name == "if");
        let met = apply_taking(server, "/other", taken);
        assert_eq!(met, Outcome::Search("/v2/other".into()));
    }

    #[test]
    fn a_rewritten_uri_lands_on_a_location_with_a_backend_through_others() {
        let (_d, c) = server_body(
            "location / { rewrite ^/(.*)$ /app/$1 last; }\n\
             location /app/ { rewrite ^/app/(.*)$ /v1/$1 last; }\n\
             location /v1/ { proxy_pass http://a; }\n\
             location /loop/ { rewrite ^ /loop/ last; }\n\
             location /ret/ { return 403; }",
        );
        let server = c.tree[1].children()[0].children();
        let backend = |d: &Directive| d.children().iter().any(|c| c.name == "proxy_pass");
        let (d, uri) = land(server, "/app/x".into(), backend).expect("lands");
        assert_eq!((d.args[0].as_str(), uri.as_str()), ("/v1/", "/v1/x"));
        assert!(land(server, "/loop/".into(), backend).is_none());
        assert!(land(server, "/ret/".into(), backend).is_none());
    }
}
