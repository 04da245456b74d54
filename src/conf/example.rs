//! Strings a regex matches, to send as a request's path or Host: a regex `location`, a regex
//! key of a `map $uri` or `map $host`, a regex `server_name`. A check can only verify what a
//! request reaches, and a regex names no request by itself.
//!
//! The regex is read as the `regex` crate reads nginx's PCRE (bytes, ASCII classes, see
//! `host_map::compile`) and its syntax tree walked: a literal as written, a class as one
//! plain character of it (a letter or digit where it has one; a second one after every
//! example of the first, for where another location takes those), a repetition its minimum
//! count, an alternation one example per branch (so `^/api/(v1|v2)/` offers `/api/v2/` when
//! another location takes `/api/v1/`), anchors and word boundaries nothing. Every example is
//! then matched against the compiled regex, so one the walk got wrong (a word boundary
//! between two letters) is dropped, never sent. What the engine does not take (lookaround,
//! backreferences), a repetition longer than a path or Host, a character a request cannot
//! carry: no example, and the caller says what it could not verify.

use regex_syntax::hir::{Class, Hir, HirKind, Look};
use regex_syntax::ParserBuilder;

use crate::conf::host_map;

/// What an example is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request path, as nginx matches a location: decoded, without the query.
    Path,
    /// A Host, as nginx holds it in `$host`: lowercased.
    Host,
    /// A Host header as sent, as `$http_host` holds it: a Host and maybe `:PORT`.
    HttpHost,
}

/// At most this many examples of one regex (an alternation's branches, their products).
pub const MAX_EXAMPLES: usize = 8;

/// Longer than any path or Host a check sends.
const MAX_LEN: usize = 253;

/// Put before what an unanchored location regex matches, so the derived path names no file.
const PATH_PREFIX: &str = "/safe-reload-check";

/// Filled in where a Host would begin or end with a dot or dash (`^api\d+\.`).
const LABEL: &str = "safe-reload-check";

/// Up to [`MAX_EXAMPLES`] strings that `pattern` (without nginx's `~`/`~*`) matches, each a
/// `kind` a request can carry, in the order of the regex's branches; empty when none can be
/// derived. `caseless` is `~*` (a `server_name` regex always is).
pub fn examples(pattern: &str, caseless: bool, kind: Kind) -> Vec<String> {
    let Some(re) = host_map::compile(pattern, caseless) else {
        return Vec::new();
    };
    let parsed = ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .case_insensitive(caseless)
        .build()
        .parse(pattern);
    let Ok(hir) = parsed else {
        return Vec::new();
    };
    // One character of each class first, so an alternation late in the regex keeps all its
    // branches within the cap; then two, for where another location or server takes the first.
    let raw = (1..=2).flat_map(|picks| walk(&hir, kind, picks).unwrap_or_default());
    let anchored = hir.properties().look_set_prefix().contains(Look::Start);
    let mut out: Vec<String> = Vec::new();
    for bytes in raw {
        if out.len() == MAX_EXAMPLES {
            break;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let Some(text) = finish(text, kind, anchored) else {
            continue;
        };
        if re.is_match(text.as_bytes()) && !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

/// What a request sends for one walked example, if it can send it.
fn finish(text: String, kind: Kind, anchored: bool) -> Option<String> {
    match kind {
        Kind::Path if anchored => text.starts_with('/').then_some(text),
        Kind::Path if text.starts_with('/') || text.starts_with('.') => {
            Some(format!("{PATH_PREFIX}{text}"))
        }
        Kind::Path => Some(format!("{PATH_PREFIX}/{text}")),
        Kind::HttpHost => match text.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                let name = finish(name.to_string(), Kind::Host, anchored)?;
                Some(format!("{name}:{port}"))
            }
            Some(_) => None,
            None => finish(text, Kind::Host, anchored),
        },
        Kind::Host => {
            let mut host = text.to_ascii_lowercase();
            if host.is_empty() || host.starts_with(['.', '-']) {
                host.insert_str(0, LABEL);
            }
            if host.ends_with(['.', '-']) {
                host.push_str(LABEL);
            }
            let labels_ok = (host.split('.')).all(|l| !l.is_empty() && l.len() <= 63);
            (labels_ok && host.len() <= MAX_LEN).then_some(host)
        }
    }
}

/// The examples of one node, with up to `picks` characters of each class; `None` when it has
/// none (a class of nothing sendable, a repetition too long).
fn walk(hir: &Hir, kind: Kind, picks: usize) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(vec![Vec::new()]),
        HirKind::Literal(lit) => {
            let ok = lit.0.len() <= MAX_LEN && lit.0.iter().all(|&b| sendable(b, kind));
            ok.then(|| vec![lit.0.to_vec()])
        }
        HirKind::Class(class) => {
            let bytes: Vec<Vec<u8>> = (pick(class, kind).take(picks)).map(|b| vec![b]).collect();
            (!bytes.is_empty()).then_some(bytes)
        }
        HirKind::Repetition(rep) => {
            let times = usize::try_from(rep.min).ok().filter(|&n| n <= MAX_LEN)?;
            if times == 0 {
                return Some(vec![Vec::new()]);
            }
            let subs = walk(&rep.sub, kind, picks)?;
            let out: Vec<Vec<u8>> = (subs.iter())
                .filter(|s| s.len() * times <= MAX_LEN)
                .map(|s| s.repeat(times))
                .collect();
            (!out.is_empty()).then_some(out)
        }
        HirKind::Capture(cap) => walk(&cap.sub, kind, picks),
        HirKind::Concat(parts) => {
            let mut acc = vec![Vec::new()];
            for part in parts {
                let ends = walk(part, kind, picks)?;
                let mut next = Vec::new();
                for head in &acc {
                    for end in &ends {
                        if next.len() < MAX_EXAMPLES && head.len() + end.len() <= MAX_LEN {
                            next.push([head.as_slice(), end].concat());
                        }
                    }
                }
                if next.is_empty() {
                    return None;
                }
                acc = next;
            }
            Some(acc)
        }
        HirKind::Alternation(branches) => {
            let mut out = Vec::new();
            for branch in branches {
                for example in walk(branch, kind, picks).unwrap_or_default() {
                    if out.len() < MAX_EXAMPLES {
                        out.push(example);
                    }
                }
            }
            (!out.is_empty()).then_some(out)
        }
    }
}

/// Letters and digits first: what a path or a Host most plainly carries.
const PREFERRED: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The bytes of the class a request can carry, plain ones first.
fn pick(class: &Class, kind: Kind) -> impl Iterator<Item = u8> + '_ {
    let has = |b: u8| match class {
        Class::Bytes(c) => c.ranges().iter().any(|r| r.start() <= b && b <= r.end()),
        Class::Unicode(c) => {
            (c.ranges().iter()).any(|r| r.start() <= b as char && b as char <= r.end())
        }
    };
    let rest: &[u8] = match kind {
        Kind::Path => b"-._~/!$&'()*+,;=:@",
        Kind::Host => b"-._",
        Kind::HttpHost => b"-._:",
    };
    // A letter's other case is no other example: hosts are lowercased, `~*` ignores case.
    let mut seen = Vec::new();
    (PREFERRED.iter().chain(rest)).copied().filter(move |&b| {
        let fresh = has(b) && !seen.contains(&b.to_ascii_lowercase());
        if fresh {
            seen.push(b.to_ascii_lowercase());
        }
        fresh
    })
}

/// A byte a `kind` can carry as it is: in a path what needs no percent-encoding (nginx
/// decodes before it matches, and this tool sends what it derived), in a Host what a name
/// holds.
fn sendable(b: u8, kind: Kind) -> bool {
    match kind {
        Kind::Path => b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b),
        Kind::Host => b.is_ascii_alphanumeric() || b"-._".contains(&b),
        Kind::HttpHost => b.is_ascii_alphanumeric() || b"-._:".contains(&b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(re: &str) -> Vec<String> {
        examples(re, false, Kind::Path)
    }

    fn hosts(re: &str) -> Vec<String> {
        examples(re, true, Kind::Host)
    }

    /// The first example: what is sent unless another location or server takes it.
    fn first(examples: Vec<String>) -> String {
        examples.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn a_path_for_each_branch_of_a_location_regex() {
        assert_eq!(paths("\\.php$"), ["/safe-reload-check.php"]);
        assert_eq!(paths("^/api/(v1|v2)/"), ["/api/v1/", "/api/v2/"]);
        assert_eq!(paths("^/(images|css)/"), ["/images/", "/css/"]);
        assert_eq!(
            paths("^/(?:aa|bb)(?:cc|dd)$"),
            ["/aacc", "/aadd", "/bbcc", "/bbdd"]
        );
        assert_eq!(paths("/v1/"), ["/safe-reload-check/v1/"]);
        assert_eq!(paths("^/UP"), ["/UP"]);
        let shapes = [
            ("^/api/v[0-9]+/", "/api/v0/"),
            ("^/a.*$", "/a"),
            ("^/u/\\d+/\\w+$", "/u/0/a"),
            ("^/x{3}/", "/xxx/"),
            ("^/v[^a-z/]/", "/v0/"),
            ("\\d+", "/safe-reload-check/0"),
            ("^/(?<name>[a-z]+)/", "/a/"),
            ("^/(?P<id>\\d{2,4})$", "/00"),
            ("^/static/.+\\.(css|js)$", "/static/a.css"),
            ("(?i)^/Admin", "/admin"),
        ];
        for (re, path) in shapes {
            assert_eq!(first(paths(re)), path, "{re}");
        }
    }

    #[test]
    fn a_class_offers_a_second_character_after_every_branch() {
        // `(a|b)` is read as the class `[ab]`: `b` is there for when `a` is taken.
        assert_eq!(paths("^/(a|b)/"), ["/a/", "/b/"]);
        assert_eq!(
            paths("^/[0-9]/(x1|x2)$"),
            ["/0/x1", "/0/x2", "/1/x1", "/1/x2"]
        );
        assert_eq!(
            examples("^/UP", true, Kind::Path),
            ["/up"],
            "a class of both cases gives the lower, and not the upper after it"
        );
    }

    #[test]
    fn an_alternation_is_capped() {
        let many = format!(
            "^/({})/({})$",
            (0..20)
                .map(|i| format!("a{i}"))
                .collect::<Vec<_>>()
                .join("|"),
            (0..20)
                .map(|i| format!("b{i}"))
                .collect::<Vec<_>>()
                .join("|"),
        );
        assert_eq!(paths(&many).len(), MAX_EXAMPLES);
    }

    #[test]
    fn what_cannot_be_sent_gives_nothing() {
        for re in [
            "^[^/]",
            "^api",
            "^/a b",
            "^/a\\?b",
            "^/%41",
            "^/a{300}",
            "^/a{1000000000}",
            "(?<=x)/y",
            "^/(a)\\1",
            "^/(",
            "^/\\xff",
            "^/é",
            "^/a\\bb",
            "^/a$b",
            "[^\\x00-\\x7f]",
            "^/#",
        ] {
            assert_eq!(paths(re), Vec::<String>::new(), "{re}");
        }
    }

    #[test]
    fn a_host_for_a_server_name_or_map_regex() {
        assert_eq!(
            hosts("^(www|api)\\.x\\.test$"),
            ["www.x.test", "api.x.test"]
        );
        let shapes = [
            ("^shop-(\\d+)\\.map\\.test$", "shop-0.map.test"),
            ("^(?<tenant>[a-z]+)\\.shop\\.test$", "a.shop.test"),
            ("^api\\d+\\.", "api0.safe-reload-check"),
            ("\\.x\\.test$", "safe-reload-check.x.test"),
            ("^(?P<sub>.+)\\.ex\\.test$", "a.ex.test"),
            ("^[A-Z]+\\.test$", "a.test"),
        ];
        for (re, host) in shapes {
            assert_eq!(first(hosts(re)), host, "{re}");
        }
        assert_eq!(
            examples("^api\\.test:(80|8080)$", true, Kind::HttpHost),
            ["api.test:80", "api.test:8080"]
        );
        assert_eq!(
            examples("^api\\.test(:\\d+)?$", true, Kind::HttpHost),
            ["api.test"]
        );
        assert!(examples("^a:b$", true, Kind::HttpHost).is_empty());
        assert!(examples("^a:8080$", true, Kind::Host).is_empty());
        assert_eq!(
            examples("^[A-Z]+\\.test$", false, Kind::Host),
            Vec::<String>::new(),
            "$host is lowercase: a case-sensitive upper-case key never matches"
        );
    }

    #[test]
    fn a_host_carries_only_what_a_name_holds() {
        for re in [
            "^a/b$",
            "^a b\\.test$",
            "^a\\.\\.test$",
            "^[^a-z0-9._-]+\\.test$",
            "(?=x)",
            "^\\w{100}\\.test$",
        ] {
            assert_eq!(hosts(re), Vec::<String>::new(), "{re}");
        }
        assert_eq!(hosts("^[_a]x\\.test$"), ["ax.test", "_x.test"]);
    }
}
