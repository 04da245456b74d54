//! Requests of another kind than the plain GET a check sends, that a location passes to
//! another backend: a `map` on the request's method, a cookie, a header or a query parameter
//! (`map $cookie_canary $pool { default stable; 1 canary; }`, a read/write split on
//! `$request_method`), or an `if` on one of them around a `*_pass`. A check of the plain GET
//! says nothing of those backends.
//!
//! Where a GET can carry what takes the branch (a cookie, a header, a query parameter), the
//! variant says what to add to it; a check then verifies that backend as clients reach it.
//! A branch only another method takes (POST, PUT, DELETE) is not requested: such a request
//! can change data behind the backend, and nothing tells a harmless one. It is said to be
//! unverified, with why.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use crate::conf::example::{self, Kind};
use crate::conf::host_map::{self, HostMap, Lookup, Pattern, Source};
use crate::conf::tree::Directive;

/// What a GET adds to take a branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Extra {
    /// A header (a cookie goes as `Cookie: name=value`).
    Header(String, String),
    /// A query parameter.
    Query(String, String),
    /// The loopback address to connect from (a `split_clients` of `$remote_addr` hashes it
    /// into the branch).
    From(Ipv4Addr),
}

impl Extra {
    /// As shown: `Cookie: canary=1`, `?v=2`, `from 127.0.3.7`.
    pub fn shown(&self) -> String {
        match self {
            Extra::Header(name, value) => format!("{name}: {value}"),
            Extra::Query(name, value) => format!("?{name}={value}"),
            Extra::From(ip) => format!("from {ip}"),
        }
    }
}

/// One branch of a location's requests the plain check does not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// `map $backend ($cookie_canary: 1)`, `if ($request_method = POST)`.
    pub what: String,
    /// What to add to the GET, or why no check takes the branch.
    pub send: Result<Extra, String>,
    /// The method that takes the branch (`POST`), when it is a method's.
    pub method: Option<String>,
    pub file: Arc<Path>,
    pub line: u32,
    /// The backend the branch passes to, when it has a `*_pass` of its own (`if (...) {
    /// proxy_pass http://canary; }`); `None`: the location's.
    pub target: Option<String>,
}

/// What the plain check sends for `map`'s source: its method, its User-Agent and Accept, no
/// cookie, no other header, no query.
fn plain_value(map: &HostMap) -> String {
    match (map.source, map.name.to_ascii_lowercase().as_str()) {
        (Source::Method, _) => "GET".into(),
        (Source::Header, "user-agent") => format!("safe-reload/{}", env!("CARGO_PKG_VERSION")),
        (Source::Header, "accept") => "*/*".into(),
        _ => String::new(),
    }
}

/// What a request sends to make `source` read `value`, or why a check cannot.
fn extra(source: Source, name: &str, value: &str) -> Result<Extra, String> {
    let plain = |v: &str| {
        !v.is_empty() && (v.bytes()).all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    match source {
        Source::Method => Err(format!(
            "only {} requests take it, and a check sends only GET: such a request can change \
             data behind the backend",
            value.to_ascii_uppercase()
        )),
        Source::Cookie if plain(value) => {
            Ok(Extra::Header("Cookie".into(), format!("{name}={value}")))
        }
        Source::Header
            if !value.is_empty() && (value.bytes()).all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Ok(Extra::Header(name.into(), value.into()))
        }
        Source::Arg if plain(value) => Ok(Extra::Query(name.into(), value.into())),
        _ => Err(format!(
            "no value a request can send is known to take it ({value:?})"
        )),
    }
}

/// The value of `map`'s source that gives `key`'s value, or why none is known.
fn key_source(map: &HostMap, key: &host_map::Key) -> Result<String, String> {
    match &key.pattern {
        Pattern::Exact(e) => Ok(e.clone()),
        Pattern::Wildcard(w) => Err(format!("a wildcard key ({w})")),
        Pattern::Regex(text, _) => {
            let caseless = text.starts_with("~*");
            let re = text.trim_start_matches("~*").trim_start_matches('~');
            (example::examples(re, caseless, Kind::Host).into_iter())
                .find(|x| map.lookup(x) == Lookup::Value(&key.value))
                .ok_or_else(|| format!("no value is derived from the regex key {text}"))
        }
    }
}

/// A variant of `map`'s key: what it reads, as shown, and what a request sends for it.
fn key_variant(map: &HostMap, key: &host_map::Key, what: impl Fn(&str) -> String) -> Variant {
    let value = key_source(map, key);
    let send = value.clone().and_then(|v| extra(map.source, &map.name, &v));
    // A method as it is written and sent; the key is held lowercased.
    let value = match map.source {
        Source::Method => value.map(|v| v.to_ascii_uppercase()),
        _ => value,
    };
    let shown = format!(
        "{}: {}",
        map.reads,
        value.as_deref().unwrap_or(key.pattern.text())
    );
    Variant {
        target: None,
        what: what(&shown),
        send,
        method: (map.source == Source::Method)
            .then(|| value.clone().ok())
            .flatten(),
        file: key.file.clone(),
        line: key.line,
    }
}

/// The branches of the first request `map` (see [`Source::is_request`]) among `target`'s
/// variables: one per value the plain check does not get, with the first key that gives it.
pub fn of_map(maps: &Maps, target: &str) -> Vec<Variant> {
    let Some(map) = host_map::of_target(maps, target, Source::is_request) else {
        return Vec::new();
    };
    let plain = match map.lookup(&plain_value(&map)) {
        Lookup::Value(v) => v.to_string(),
        Lookup::Unknown => return Vec::new(),
    };
    let mut seen = vec![plain];
    let mut out = Vec::new();
    for key in &map.keys {
        if seen.contains(&key.value) {
            continue;
        }
        seen.push(key.value.clone());
        out.push(key_variant(&map, key, |shown| {
            format!("map ${} ({shown})", map.var)
        }));
    }
    if !seen.contains(&map.default) {
        out.extend(default_variant(&map));
    }
    out
}

/// The branch of `map`'s `default`, when the plain check does not get it (`map $cookie_beta
/// $pool { "" stable; default beta; }`, a read/write split `{ default writers; GET readers; }`):
/// a value no key takes, or for a method map why no check sends one.
fn default_variant(map: &HostMap) -> Option<Variant> {
    let takes_default = |v: &str| map.lookup(v) == Lookup::Value(&map.default);
    let (value, method) = match map.source {
        Source::Method => {
            let m = ["POST", "PUT", "DELETE", "PATCH"]
                .into_iter()
                .find(|m| takes_default(m))?;
            (m.to_string(), Some(m.to_string()))
        }
        _ => {
            let v = ["safe-reload-check", "1", "yes", "on"]
                .into_iter()
                .find(|v| takes_default(v))?;
            (v.to_string(), None)
        }
    };
    Some(Variant {
        target: None,
        what: format!("map ${} ({}: {value}, its default)", map.var, map.reads),
        send: extra(map.source, &map.name, &value),
        method,
        file: map.file.clone(),
        line: map.line,
    })
}

/// The `if` blocks directly in a location (`dirs`) that pass to another target than `own` on
/// a condition of the request's method, a cookie, a header or a query parameter, each as a
/// variant. `pass_of` gives a block's `*_pass` argument.
pub fn of_ifs<'a>(
    dirs: &'a [Directive],
    own: Option<&str>,
    maps: &Maps,
    pass_of: impl Fn(&'a [Directive]) -> Option<&'a str>,
) -> Vec<Variant> {
    let mut out = Vec::new();
    for d in dirs.iter().filter(|d| d.name == "if" && d.block.is_some()) {
        let Some(to) = pass_of(d.children()) else {
            // `set $be B;` inside the `if`, for the location's own `proxy_pass http://$be`.
            let sets = |c: &Directive| c.name == "set" && own.is_some_and(|t| reads(t, c.arg0()));
            if d.children().iter().any(sets) {
                out.extend(of_condition(d, maps));
            }
            continue;
        };
        if Some(to) == own {
            continue;
        }
        out.extend(of_condition(d, maps).map(|v| Variant {
            target: Some(to.to_string()),
            ..v
        }));
    }
    out
}

/// Whether `target` reads the variable `var` (`$be`), by nginx's rules: names ignore case,
/// and one ends where a character that cannot be in a name does (`${be}` is the same).
pub fn reads(target: &str, var: &str) -> bool {
    let Some(name) = var.strip_prefix('$').filter(|n| !n.is_empty()) else {
        return false;
    };
    let (t, name) = (target.to_ascii_lowercase(), name.to_ascii_lowercase());
    let braced = format!("${{{name}}}");
    let plain = format!("${name}");
    t.contains(&braced)
        || t.match_indices(&plain).any(|(at, _)| {
            let next = t.as_bytes().get(at + plain.len());
            next.is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        })
}

/// A variable whose value depends on the client's address: a `geo`, a `split_clients`, or
/// a `map` on `$remote_addr`, with more than one value. Checks come from loopback, and take
/// only the branch loopback gets.
#[derive(Debug, Clone)]
pub struct ByClient {
    /// `$gpool`, as written.
    pub var: String,
    /// `geo`, `split_clients`, `map $remote_addr`.
    pub what: String,
    pub file: Arc<Path>,
    pub line: u32,
    /// A `split_clients` block's key and shares.
    pub split: Option<Split>,
}

/// A `split_clients` block as nginx reads it (`ngx_http_split_clients_module.c`): the key
/// (a complex value, hashed with MurmurHash2) and each share's upper bound of the hash, in
/// order; a bound of 0 takes every hash left (`*`, or the share that reaches 100%). A hash
/// past the last bound gets the empty value.
#[derive(Debug, Clone)]
pub struct Split {
    pub key: String,
    pub parts: Vec<(u32, String)>,
}

/// How many loopback addresses (127.0.K.L) are tried for a share: 64,516 cover any share of
/// 0.01% (nginx's finest) with near certainty.
const SPLIT_SOURCES: u32 = 254 * 254;

impl Split {
    /// Read from the block's lines (`10% canary;`, `* stable;`); `None` for what nginx
    /// refuses (a percent it cannot read, a total over 100%).
    fn of(d: &Directive) -> Option<Split> {
        let mut parts = Vec::new();
        let (mut sum, mut last) = (0u32, 0u32);
        for c in d.children() {
            let value = c.arg0().to_string();
            let percent = match c.name.as_str() {
                "*" => 0,
                p => hundredths(p.strip_suffix('%')?).filter(|n| *n > 0)?,
            };
            sum = if percent > 0 { sum + percent } else { 10_000 };
            if sum > 10_000 {
                return None;
            }
            let bound = if sum == 10_000 {
                0
            } else {
                last = last.wrapping_add((u64::from(percent) * 0xffff_ffff / 10_000) as u32);
                last
            };
            parts.push((bound, value));
        }
        Some(Split {
            key: d.args.first()?.as_str().to_string(),
            parts,
        })
    }

    /// The value a key of this hash gets, as `ngx_http_split_clients_variable` picks it.
    pub fn value(&self, hash: u32) -> &str {
        (self.parts.iter())
            .find(|(bound, _)| hash < *bound || *bound == 0)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The first loopback address 127.0.K.L whose key lands on `value`, when the key reads
    /// nothing but `$remote_addr` (anything else of the request is not the source's to set).
    pub fn source_for(&self, value: &str) -> Option<Ipv4Addr> {
        let pieces = remote_addr_pieces(&self.key)?;
        (0..SPLIT_SOURCES).find_map(|i| {
            let ip = Ipv4Addr::new(127, 0, (i / 254) as u8 + 1, (i % 254) as u8 + 1);
            let key = pieces.join(&ip.to_string());
            (self.value(murmur2(key.as_bytes())) == value).then_some(ip)
        })
    }
}

/// A key's literal text around each `$remote_addr` (or `${remote_addr}`; names ignore case),
/// at least one; `None` when it reads another variable.
fn remote_addr_pieces(key: &str) -> Option<Vec<&str>> {
    let (mut pieces, mut from, mut i) = (Vec::new(), 0, 0);
    let b = key.as_bytes();
    let name_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let rest = key[i..].to_ascii_lowercase();
        let len = if rest.starts_with("${remote_addr}") {
            "${remote_addr}".len()
        } else if rest.starts_with("$remote_addr")
            && !rest
                .as_bytes()
                .get("$remote_addr".len())
                .is_some_and(|c| name_char(*c))
        {
            "$remote_addr".len()
        } else {
            return None;
        };
        pieces.push(&key[from..i]);
        i += len;
        from = i;
    }
    pieces.push(&key[from..]);
    (pieces.len() > 1).then_some(pieces)
}

/// A decimal with at most two digits after the point, in hundredths (`ngx_atofp(..., 2)`):
/// `0.5` is 50, `10` is 1000.
fn hundredths(text: &str) -> Option<u32> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if text.is_empty() || frac.len() > 2 || !digits(whole) || !digits(frac) {
        return None;
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: u32 = format!("{frac:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(frac)
}

/// MurmurHash2 as `ngx_murmur_hash2` computes it (seed 0, little-endian blocks).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// The `geo`, `split_clients` and `map $remote_addr` blocks of `http` (`dirs`) that give
/// more than one value.
pub fn by_client(dirs: &[Directive]) -> Vec<ByClient> {
    let mut out = Vec::new();
    for d in dirs.iter().filter(|d| d.block.is_some()) {
        let (var, what) = match (d.name.as_str(), &d.args[..]) {
            ("geo", [v]) => (v.as_str(), "geo".to_string()),
            ("geo", [src, v]) => (v.as_str(), format!("geo {}", src.as_str())),
            ("split_clients", [_, v]) => (v.as_str(), "split_clients".to_string()),
            ("map", [src, v])
                if matches!(
                    src.as_str().to_ascii_lowercase().as_str(),
                    "$remote_addr" | "$binary_remote_addr" | "$realip_remote_addr"
                ) =>
            {
                (v.as_str(), format!("map {}", src.as_str()))
            }
            _ => continue,
        };
        let mut values: Vec<&str> = (d.children().iter())
            .filter(|c| {
                !matches!(
                    c.name.as_str(),
                    "ranges"
                        | "include"
                        | "delete"
                        | "proxy"
                        | "proxy_recursive"
                        | "hostnames"
                        | "volatile"
                )
            })
            .filter_map(|c| c.args.last().map(|w| w.as_str()))
            .collect();
        values.sort_unstable();
        values.dedup();
        if values.len() > 1 && var.starts_with('$') {
            out.push(ByClient {
                var: var.to_string(),
                split: (d.name == "split_clients").then(|| Split::of(d)).flatten(),
                what,
                file: d.file.clone(),
                line: d.line,
            });
        }
    }
    out
}

/// The variants of a `*_pass` (`target`) that reads a variable of `by_client`. Each share of
/// a `split_clients` on `$remote_addr` is checked from a loopback address that hashes into it
/// (a share with no value, the hashes past the last one, is nginx's empty value either way);
/// any other is listed as not verified, with why.
pub fn of_client(by_client: &[ByClient], target: &str) -> Vec<Variant> {
    let Some(b) = by_client.iter().find(|b| reads(target, &b.var)) else {
        return Vec::new();
    };
    let variant = |what: String, send| Variant {
        target: None,
        what,
        send,
        method: None,
        file: b.file.clone(),
        line: b.line,
    };
    let unverified = || {
        variant(
            format!("{} {}", b.what, b.var),
            Err(
                "which backend a request gets depends on the client's address, and checks \
                 come from loopback: only the branch loopback gets is checked"
                    .into(),
            ),
        )
    };
    let Some(split) = &b.split else {
        return vec![unverified()];
    };
    let mut values: Vec<&str> = Vec::new();
    for (_, v) in &split.parts {
        if !v.is_empty() && !values.contains(&v.as_str()) {
            values.push(v);
        }
    }
    let mut out = Vec::new();
    for value in values {
        let what = format!("split_clients {} ({value})", b.var);
        match split.source_for(value) {
            Some(ip) => out.push(variant(what, Ok(Extra::From(ip)))),
            None if split.key.to_ascii_lowercase().contains("remote_addr") => out.push(variant(
                what,
                Err("no loopback address hashes into this share".into()),
            )),
            None => return vec![unverified()],
        }
    }
    out
}

/// The maps of the configuration, by the variable each defines.
pub type Maps = std::collections::HashMap<String, Arc<HostMap>>;

/// `if` block `d` as a variant, when its condition is on the request's method, a cookie, a
/// header or a query parameter, or on a `map` of one of them (`if ($is_bot)` with `map
/// $http_user_agent $is_bot`), and the plain check does not meet it: what a GET carries to
/// meet it, or why none does.
pub fn of_condition(d: &Directive, maps: &Maps) -> Option<Variant> {
    let words: Vec<&str> = d.args.iter().map(|w| w.as_str()).collect();
    let cond = words.join(" ");
    let cond = cond.trim_start_matches('(').trim_end_matches(')').trim();
    let mut parts = cond.splitn(3, ' ');
    let (var, op, value) = (
        parts.next().unwrap_or("").to_ascii_lowercase(),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").trim_matches(['"', '\'']),
    );
    let (source, name) = match var.as_str() {
        "$request_method" => (Source::Method, String::new()),
        v => match (
            v.strip_prefix("$cookie_"),
            v.strip_prefix("$http_"),
            v.strip_prefix("$arg_"),
        ) {
            (Some(c), _, _) => (Source::Cookie, c.to_string()),
            (_, Some("host"), _) => return None,
            (_, Some(h), _) => (Source::Header, header_name(h)),
            (_, _, Some(a)) => (Source::Arg, a.to_string()),
            _ if op.is_empty() => return of_true_map(d, maps, v.strip_prefix('$')?, cond),
            _ => return None,
        },
    };
    let value = match op {
        // A variable alone is true unless empty or "0".
        "" if source == Source::Method => return None,
        "" => Ok("1".to_string()),
        "=" => Ok(value.to_string()),
        "~" | "~*" => (example::examples(value, op == "~*", Kind::Host).into_iter())
            .next()
            .or_else(|| literal_regex(value))
            .ok_or_else(|| format!("no value is derived from the regex {value}")),
        _ => Err("a negated condition: which backend a request gets depends on it".into()),
    };
    let method = match (source, op) {
        (Source::Method, "=") => Some(value.clone().ok()?.to_ascii_uppercase()),
        _ => None,
    };
    Some(Variant {
        target: None,
        what: format!("if ({cond})"),
        send: value.and_then(|v| extra(source, &name, &v)),
        method,
        file: d.file.clone(),
        line: d.line,
    })
}

/// `if ($var)` on a request `map`'s variable: the first key whose value is true (not empty,
/// not "0") where the plain check's is not.
fn of_true_map(d: &Directive, maps: &Maps, var: &str, cond: &str) -> Option<Variant> {
    let map = maps.get(var).filter(|m| m.source.is_request())?;
    let truthy = |v: &str| !v.is_empty() && v != "0";
    match map.lookup(&plain_value(map)) {
        Lookup::Value(v) if !truthy(v) => {}
        // The plain value meets it (`map $http_user_agent $not_browser { default 1; ~*mozilla
        // 0; }`): the checks avoid it (see [`avoiding`]), and this one sends the plain value.
        Lookup::Value(_) if map.source == Source::Header => {
            let plain = plain_value(map);
            return Some(Variant {
                target: None,
                what: format!("if ({cond}), map ${var} ({}: {plain})", map.reads),
                send: extra(map.source, &map.name, &plain),
                method: None,
                file: d.file.clone(),
                line: d.line,
            });
        }
        _ => return None,
    }
    let key = map.keys.iter().find(|k| truthy(&k.value))?;
    let v = key_variant(map, key, |shown| {
        format!("if ({cond}), map ${var} ({shown})")
    });
    Some(Variant {
        target: None,
        file: d.file.clone(),
        line: d.line,
        ..v
    })
}

/// The header a request sends not to meet the condition of `if` block `d`, when the plain
/// check would meet it: `($http_x_forwarded_proto != "https")` is not met with
/// `X-Forwarded-Proto: https`, `($not_browser)` on `map $http_user_agent $not_browser {
/// default 1; ~*mozilla 0; }` with `User-Agent: mozilla`. `None` when the plain check does not
/// meet it, or no header keeps it from it.
pub fn avoiding(d: &Directive, maps: &Maps) -> Option<(String, String)> {
    let words: Vec<&str> = d.args.iter().map(|w| w.as_str()).collect();
    let cond = words.join(" ");
    let cond = cond.trim_start_matches('(').trim_end_matches(')').trim();
    let mut parts = cond.splitn(3, ' ');
    let (var, op, value) = (
        parts.next().unwrap_or("").to_ascii_lowercase(),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").trim_matches(['"', '\'']),
    );
    // A value read from a variable (`!= $expected_key`) is not known here.
    let printable =
        |v: &str| !v.is_empty() && !v.contains('$') && v.bytes().all(|b| (0x20..0x7f).contains(&b));
    if let Some(name) = var.strip_prefix("$http_").filter(|n| *n != "host") {
        let value = match op {
            "!=" => Some(value.to_string()),
            "!~" | "!~*" => (example::examples(value, op == "!~*", Kind::Host).into_iter()).next(),
            _ => None,
        };
        return value
            .filter(|v| printable(v))
            .map(|v| (header_name(name), v));
    }
    let map = maps.get(var.strip_prefix('$')?).filter(|_| op.is_empty())?;
    let truthy = |v: &str| !v.is_empty() && v != "0";
    match map.lookup(&plain_value(map)) {
        Lookup::Value(v) if truthy(v) => {}
        _ => return None,
    }
    let key = map.keys.iter().find(|k| !truthy(&k.value))?;
    let v = key_source(map, key).ok().filter(|v| printable(v))?;
    match map.source {
        Source::Header => Some((map.name.clone(), v)),
        Source::Cookie => Some(("Cookie".into(), format!("{}={v}", map.name))),
        _ => None,
    }
}

/// A regex with no special character (`beta=1`, `^beta=1`): the text it looks for, which a
/// header value holding it matches (`if ($http_cookie ~* "beta=1")`).
fn literal_regex(re: &str) -> Option<String> {
    let text = re.strip_prefix('^').unwrap_or(re);
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"=_-;: ,/@".contains(&b);
    (!text.is_empty() && text.bytes().all(plain)).then(|| text.to_string())
}

/// The header `$http_x_api_version` reads: `X-Api-Version`.
pub fn header_name(var: &str) -> String {
    (var.split('_'))
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, LoadOptions};

    fn loaded(http: &str) -> (tempfile::TempDir, crate::conf::Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        std::fs::write(&main, format!("events {{}}\nhttp {{\n{http}\n}}\n")).expect("write");
        let config = load(&main, &LoadOptions::default()).expect("loads");
        (dir, config)
    }

    #[test]
    fn each_value_the_plain_get_does_not_get_is_a_variant() {
        let (_d, c) = loaded(
            "map $request_method $rw { default reader; POST writer; PUT writer; GET reader; }\n\
             map $cookie_canary $pool { default stable; 1 canary; }\n\
             map $http_x_api_version $api { default web; 2 api; }\n\
             map $http_user_agent $ua { default web; ~*mobile m; }\n\
             map $arg_v $arg { default web; 2 api; \"a b\" odd; }",
        );
        let maps = host_map::index(&c);
        let sends = |target: &str| -> Vec<(String, Result<Extra, String>)> {
            (of_map(&maps, target).into_iter())
                .map(|v| (v.what, v.send))
                .collect()
        };
        let rw = sends("http://$rw");
        assert_eq!(rw.len(), 1, "{rw:?}");
        assert_eq!(rw[0].0, "map $rw ($request_method: POST)");
        assert!(rw[0]
            .1
            .as_ref()
            .is_err_and(|e| e.contains("only POST requests")));
        assert_eq!(
            sends("http://$pool"),
            [(
                "map $pool ($cookie_canary: 1)".into(),
                Ok(Extra::Header("Cookie".into(), "canary=1".into()))
            )]
        );
        assert_eq!(
            sends("http://$api")[0].1,
            Ok(Extra::Header("X-Api-Version".into(), "2".into()))
        );
        assert_eq!(
            sends("http://$ua")[0].1,
            Ok(Extra::Header("User-Agent".into(), "mobile".into()))
        );
        let arg = sends("http://$arg");
        assert_eq!(arg[0].1, Ok(Extra::Query("v".into(), "2".into())));
        assert!(arg[1].1.is_err(), "{arg:?}");
        assert!(sends("http://fixed").is_empty());
    }

    #[test]
    fn ifs_on_the_request_that_pass_elsewhere_are_variants() {
        let (_d, c) = loaded(
            "server { location / {\n\
             if ($request_method = POST) { proxy_pass http://w; }\n\
             if ($http_x_beta ~* ^on$) { proxy_pass http://beta; }\n\
             if ($arg_debug != 1) { proxy_pass http://dbg; }\n\
             if (-f $request_filename) { proxy_pass http://files; }\n\
             if ($cookie_a = x) { proxy_pass http://pool; }\n\
             proxy_pass http://pool; } }",
        );
        let loc = &c.tree[1].children()[0].children()[0];
        fn pass(dirs: &[Directive]) -> Option<&str> {
            (dirs.iter())
                .find(|d| d.name == "proxy_pass")
                .map(|d| d.arg0())
        }
        let vs = of_ifs(
            loc.children(),
            Some("http://pool"),
            &host_map::index(&c),
            pass,
        );
        let whats: Vec<&str> = vs.iter().map(|v| v.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "if ($request_method = POST)",
                "if ($http_x_beta ~* ^on$)",
                "if ($arg_debug != 1)"
            ]
        );
        assert!(vs[0].send.is_err());
        assert_eq!(vs[1].send, Ok(Extra::Header("X-Beta".into(), "on".into())));
        assert!(vs[2].send.is_err());
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn percents_read_as_nginx_reads_them() {
        assert_eq!(hundredths("0.5"), Some(50));
        assert_eq!(hundredths("10"), Some(1000));
        assert_eq!(hundredths(".25"), Some(25));
        assert_eq!(hundredths("1.234"), None);
        assert_eq!(hundredths("x"), None);
        assert_eq!(murmur2(b""), 0);
    }

    #[test]
    fn shares_take_the_hashes_below_their_bound_and_the_last_takes_the_rest() {
        let file: Arc<Path> = Path::new("t.conf").into();
        let text = "split_clients \"${remote_addr}AAA\" $v { 0.5% one; 2.0% two; * three; }";
        let conf = crate::conf::tree::parse(&file, text.as_bytes()).expect("parse");
        let d = &conf[0];
        let split = Split::of(d).expect("split");
        assert_eq!(split.key, "${remote_addr}AAA");
        let one = (50u64 * 0xffff_ffff / 10_000) as u32;
        assert_eq!(split.parts[0], (one, "one".to_string()));
        assert_eq!(split.parts[2].0, 0);
        assert_eq!(split.value(0), "one");
        assert_eq!(split.value(one), "two");
        assert_eq!(split.value(u32::MAX), "three");
        assert_eq!(
            remote_addr_pieces("${REMOTE_ADDR}AAA"),
            Some(vec!["", "AAA"])
        );
        assert_eq!(remote_addr_pieces("$remote_addr$http_x"), None);
        assert_eq!(remote_addr_pieces("$remote_address"), None);
        for v in ["one", "two", "three"] {
            let ip = split.source_for(v).expect(v);
            let key = format!("{ip}AAA");
            assert_eq!(split.value(murmur2(key.as_bytes())), v);
        }
    }
}
