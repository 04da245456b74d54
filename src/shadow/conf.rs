//! The shadow's copy of the candidate: each file rewritten so a second nginx can run it beside
//! the real one without touching anything the real one owns.
//!
//! Every `listen` moves one-to-one onto the shadow's own loopback port or socket (its other
//! parameters stay, so `default_server`, `ssl`, `http2` and `proxy_protocol` route as in
//! production); every path nginx writes (`error_log`, `access_log`, temp and cache paths,
//! `*_store`) goes into the shadow's directory or is turned off; the main-context directives the
//! command line sets instead (`pid`, `daemon`, `master_process`, `worker_processes`,
//! `lock_file`) are removed; absolute `include`s point into the copy. Every other relative file
//! path is made absolute, as the real nginx would resolve it (`ngx_conf_full_name`): the
//! shadow's prefix and conf dir are its own directory, so `ssl_certificate ../certs/x.pem`
//! would otherwise name a file the copy does not have. Certificates, keys, password files and
//! `auth_basic_user_file` resolve against the real conf dir (the main file's directory);
//! `root`, `alias`, `load_module`, `xslt_stylesheet` and `perl_modules` against the real
//! prefix. Edits keep every line where it was, so the shadow's messages name the candidate's
//! lines.

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use crate::conf::lexer::{Lexer, TokenKind};
use crate::conf::servers::listen_addr;
use crate::conf::targets::pass::PASS_DIRECTIVES;
use crate::conf::targets::Context;
use crate::conf::{ConfFile, ListenAddr, Word};
use crate::error::{Error, Result};

/// Where the shadow listens instead of one production address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShadowAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ShadowAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShadowAddr::Inet(sa) => write!(f, "{sa}"),
            ShadowAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for ShadowAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One production listen address (TCP or UDP) and the shadow's stand-in for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMap {
    map: BTreeMap<(ListenAddr, bool), ShadowAddr>,
}

/// One row of a [`PortMap`], for the report and the lease file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Remapped {
    pub listen: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub udp: bool,
    pub shadow: String,
}

impl PortMap {
    /// Map `listen` (UDP when `udp`) to `to`.
    pub fn insert(&mut self, listen: ListenAddr, udp: bool, to: ShadowAddr) {
        self.map.insert((listen, udp), to);
    }

    /// The shadow's address for a production listen.
    pub fn get(&self, listen: &ListenAddr, udp: bool) -> Option<&ShadowAddr> {
        self.map.get(&(listen.clone(), udp))
    }

    /// Every production address (with its UDP flag).
    pub fn keys(&self) -> impl Iterator<Item = &(ListenAddr, bool)> {
        self.map.keys()
    }

    /// Where a TCP connection to `connect` on the real nginx goes in the shadow: to the socket
    /// the kernel would pick, the exact address first, else the wildcard of its family on the
    /// same port (`localhost:80` stands for `127.0.0.1:80`).
    pub fn route(&self, connect: SocketAddr) -> Option<SocketAddr> {
        let wildcard = match connect.ip() {
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0),
        };
        let mut keys = vec![ListenAddr::Tcp(connect)];
        if connect.ip().is_loopback() {
            keys.push(ListenAddr::Host {
                name: "localhost".into(),
                port: connect.port(),
            });
        }
        keys.push(ListenAddr::Tcp(SocketAddr::new(
            wildcard.ip(),
            connect.port(),
        )));
        keys.iter().find_map(|k| match self.get(k, false) {
            Some(ShadowAddr::Inet(sa)) => Some(*sa),
            _ => None,
        })
    }

    /// `check` as sent to the shadow: to its stand-in for the TCP address (see
    /// [`PortMap::route`]) or for the unix socket the check names.
    pub fn route_check(&self, check: &crate::health::Check) -> Option<crate::health::Check> {
        let mut routed = check.clone();
        match &check.unix {
            Some(path) => match self.get(&ListenAddr::Unix(path.clone()), false)? {
                ShadowAddr::Unix(to) => routed.unix = Some(to.clone()),
                ShadowAddr::Inet(_) => return None,
            },
            // Only the destination differs: the request is the one production gets (Host
            // with production's port, SNI, headers), so what is keyed on them routes alike.
            None => routed.dial = Some(self.route(check.connect)?),
        }
        Some(routed)
    }

    /// The rows, in address order.
    pub fn rows(&self) -> Vec<Remapped> {
        self.map
            .iter()
            .map(|((listen, udp), to)| Remapped {
                listen: listen.to_string(),
                udp: *udp,
                shadow: to.to_string(),
            })
            .collect()
    }
}

/// The http temp path directives and the module each needs.
pub const HTTP_TEMP_PATHS: [(&str, &str); 5] = [
    ("client_body_temp_path", "http_core"),
    ("proxy_temp_path", "http_proxy"),
    ("fastcgi_temp_path", "http_fastcgi"),
    ("uwsgi_temp_path", "http_uwsgi"),
    ("scgi_temp_path", "http_scgi"),
];

/// Where a copy's listens go: each production listen's stand-in, and the `server {}` blocks
/// (file, line) of `http` with no `listen` at all, which nginx would give `*:80`: the copy
/// gives them that address's stand-in explicitly.
#[derive(Debug, Clone, Default)]
pub struct StandIns {
    pub ports: PortMap,
    pub add_listen: HashSet<(PathBuf, u32)>,
}

/// Everything the rewrite of one file needs beyond the file itself.
#[derive(Debug, Clone)]
pub struct Plan {
    pub listens: StandIns,
    /// The shadow's directory: the copy goes under `conf/`, logs under `logs/`, temp and cache
    /// directories under `temp/` and `cache/`.
    pub dir: PathBuf,
    /// The real prefix, against which relative `root`, `alias` and `load_module` resolve.
    pub prefix: PathBuf,
    /// The real conf dir (the main file's directory), against which relative certificates,
    /// keys and `auth_basic_user_file` resolve.
    pub conf_prefix: PathBuf,
    /// Temp path directives the `http {}` block does not set: without one nginx creates its
    /// compiled-in directory (e.g. `/var/lib/nginx/body`), so each gets one in `temp/`.
    pub http_temp: Vec<&'static str>,
}

impl Plan {
    /// Where the copy of a configuration file goes: under `conf/` at its absolute path with
    /// `.` and `..` resolved first, as the kernel resolves them for the real nginx (`..` of
    /// `/` is `/`), so that no `..` can lead out of the copy.
    pub fn copy_of(&self, path: &Path) -> PathBuf {
        let mut out = self.dir.join("conf");
        let root = out.components().count();
        for part in path.components() {
            match part {
                Component::Normal(p) => out.push(p),
                Component::ParentDir if out.components().count() > root => {
                    out.pop();
                }
                _ => {}
            }
        }
        out
    }

    /// The shadow's error log: every `error_log` of the candidate writes here.
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("logs/error.log")
    }
}

/// Blocks whose entries are values, not directives: nothing inside them is rewritten.
fn holds_values(block: &str) -> bool {
    matches!(
        block,
        "map" | "geo" | "types" | "split_clients" | "charset_map" | "match"
    )
}

/// Where nginx resolves a directive's relative file path (its first argument), as
/// `ngx_conf_full_name` is called for it: against the conf dir (`true`), the prefix (`false`),
/// or `None` for a directive that names no file. `include` is handled apart (it points into
/// the copy).
fn relative_to_conf_dir(name: &str) -> Option<bool> {
    // The ssl file directives of http, stream and mail, and of the proxy, grpc and uwsgi
    // modules toward upstreams: `ngx_ssl_certificate`, `ngx_ssl_trusted_certificate`,
    // `ngx_ssl_crl`, `ngx_ssl_dhparam`, `ngx_ssl_read_password_file`, `ngx_ssl_stapling_file`,
    // `ngx_ssl_session_ticket_keys` all take the conf dir.
    let ssl = name
        .strip_prefix("proxy_")
        .or_else(|| name.strip_prefix("grpc_"))
        .or_else(|| name.strip_prefix("uwsgi_"))
        .unwrap_or(name);
    let conf_dir = matches!(
        ssl,
        "ssl_certificate"
            | "ssl_certificate_key"
            | "ssl_trusted_certificate"
            | "ssl_client_certificate"
            | "ssl_crl"
            | "ssl_dhparam"
            | "ssl_password_file"
            | "ssl_stapling_file"
            | "ssl_session_ticket_key"
    ) || matches!(name, "auth_basic_user_file" | "quic_host_key");
    if conf_dir {
        return Some(true);
    }
    matches!(
        name,
        "root" | "alias" | "load_module" | "xslt_stylesheet" | "perl_modules"
    )
    .then_some(false)
}

/// Whether a file argument is relative the way nginx completes it: not absolute, not made by
/// a variable from its first byte (its value is only known per request), and not one of the
/// certificate forms that name no file (`data:`, `engine:`, `store:`).
fn completes_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.starts_with('$')
        && !["data:", "engine:", "store:"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// Directives the command line sets for the shadow (`-g`), or that it must not have.
fn removed(name: &str) -> bool {
    matches!(
        name,
        "pid"
            | "daemon"
            | "master_process"
            | "worker_processes"
            | "worker_cpu_affinity"
            | "lock_file"
            | "ssl_session_log"
    ) || name.starts_with("google_perftools")
}

struct Edit {
    start: usize,
    end: usize,
    text: String,
}

/// The file rewritten for the shadow (see the module header). Fails on a `listen` the map has
/// no address for, and on bytes nginx would not parse (`nginx -t` reports those).
pub fn shadow_conf(file: &ConfFile, plan: &Plan) -> Result<Vec<u8>> {
    let path = &file.path;
    edit(
        file,
        |name, args, line| rewrite(name, args, line, path, plan),
        |name, line, top| opened(name, line, top, path, plan),
    )
}

/// The file with nothing but its listens moved onto their stand-ins (and one added to each
/// server nginx would give `*:80`), every line where it was: for a copy that only `nginx -t`
/// reads (`check --untrusted`), which binds every address the configuration names, so the
/// test no longer depends on which ports this machine lets it bind.
pub fn remap_listens(file: &ConfFile, listens: &StandIns) -> Result<Vec<u8>> {
    let path = &file.path;
    edit(
        file,
        |name, args, _| match name {
            "listen" => moved_listen(args, &listens.ports).map(Some),
            _ => Ok(None),
        },
        |name, line, _| added_listen(name, line, path, listens),
    )
}

/// The result of one edit: the new text, `None` to keep the original, or why it cannot be
/// rewritten (reported at the directive's line).
pub(crate) type EditResult = std::result::Result<Option<String>, String>;

/// Walk the file's directives as nginx reads them and apply the edits `directive` (for each
/// simple directive outside value blocks: name, arguments, line) and `opened` (right after a
/// block's `{`: name, line, whether it is in the main context) return. A directive is found
/// where nginx's tokenizer puts it, so its name inside a string, a comment or another
/// directive's argument is never one.
pub(crate) fn edit(
    file: &ConfFile,
    directive: impl Fn(&str, &[&str], u32) -> EditResult,
    opened: impl Fn(&str, u32, bool) -> EditResult,
) -> Result<Vec<u8>> {
    let bytes = &file.bytes;
    let err = |line: u32, message: String| Error::config(file.path.clone(), line, message);
    let mut lexer = Lexer::new(bytes);
    let mut edits: Vec<Edit> = Vec::new();
    let mut stack: Vec<Word> = Vec::new();
    let mut words: Vec<(Word, usize, u32)> = Vec::new();
    loop {
        let before = lexer.offset();
        let tok = lexer.next_token().map_err(|e| err(e.line, e.message))?;
        match tok.kind {
            TokenKind::Word | TokenKind::Quoted => {
                words.push((tok.text, token_start(bytes, before), tok.line))
            }
            TokenKind::Semicolon => {
                // `include` is read as an include inside value blocks too (map, geo, types).
                let in_values = stack.last().is_some_and(|b| holds_values(b))
                    && words.first().is_none_or(|w| w.0 != "include");
                if let (false, Some((name, start, line))) = (in_values, words.first()) {
                    let args: Vec<&str> = words[1..].iter().map(|w| w.0.as_str()).collect();
                    let end = lexer.offset();
                    if let Some(text) = directive(name, &args, *line).map_err(|m| err(*line, m))? {
                        edits.push(Edit {
                            start: *start,
                            end,
                            text,
                        });
                    }
                }
                words.clear();
            }
            TokenKind::BlockStart => {
                let Some((name, _, line)) = words.first().cloned() else {
                    return Err(err(tok.line, "unexpected \"{\"".into()));
                };
                words.clear();
                if name.ends_with("_by_lua_block") {
                    lexer.raw_block().map_err(|e| err(e.line, e.message))?;
                    continue;
                }
                let at = lexer.offset();
                let insert = opened(&name, line, stack.is_empty()).map_err(|m| err(line, m))?;
                if let Some(text) = insert {
                    edits.push(Edit {
                        start: at,
                        end: at,
                        text,
                    });
                }
                stack.push(name);
            }
            TokenKind::BlockEnd => {
                stack.pop();
                words.clear();
            }
            TokenKind::Eof => break,
        }
    }
    Ok(apply(bytes, &edits))
}

/// Text to insert right after a block's `{`.
fn opened(name: &str, line: u32, top: bool, path: &Path, plan: &Plan) -> EditResult {
    if name == "http" && top {
        // The compiled-in access log (e.g. /var/log/nginx/access.log) is opened without one.
        let mut text = " access_log off;".to_string();
        for d in &plan.http_temp {
            let kind = d.trim_end_matches("_temp_path");
            text.push_str(&format!(
                " {d} {};",
                word(&plan.dir.join("temp").join(kind).to_string_lossy())
            ));
        }
        return Ok(Some(text));
    }
    added_listen(name, line, path, &plan.listens)
}

/// ` listen STAND-IN;` right after the `{` of a server nginx would give `*:80`.
fn added_listen(name: &str, line: u32, path: &Path, listens: &StandIns) -> EditResult {
    if name != "server" || !listens.add_listen.contains(&(path.to_path_buf(), line)) {
        return Ok(None);
    }
    let default = ListenAddr::Tcp(SocketAddr::from(([0, 0, 0, 0], 80)));
    let to = (listens.ports)
        .get(&default, false)
        .ok_or("no shadow address for the default listen *:80")?;
    Ok(Some(format!(" listen {};", word(&to.to_string()))))
}

/// `listen ADDRESS PARAMETERS;` with the address's stand-in and every parameter kept, so
/// `default_server`, `ssl`, `http2` and `proxy_protocol` route as they do in production.
fn moved_listen(args: &[&str], ports: &PortMap) -> std::result::Result<String, String> {
    let text = args.first().ok_or("listen without an address")?;
    let addr = listen_addr(Context::Http, text)
        .ok_or_else(|| format!("cannot read the listen address \"{text}\""))?;
    let udp = args.contains(&"udp");
    let to = ports
        .get(&addr, udp)
        .ok_or_else(|| format!("no shadow address for listen {addr}"))?;
    let mut out = format!("listen {}", word(&to.to_string()));
    for a in &args[1..] {
        out.push(' ');
        out.push_str(&word(a));
    }
    out.push(';');
    Ok(out)
}

/// The replacement for one simple directive, `None` to keep it.
fn rewrite(name: &str, args: &[&str], line: u32, path: &Path, plan: &Plan) -> EditResult {
    let put = |name: &str, args: &[String]| -> Option<String> {
        let mut text = name.to_string();
        for a in args {
            text.push(' ');
            text.push_str(&word(a));
        }
        text.push(';');
        Some(text)
    };
    let rest =
        |from: usize| -> Vec<String> { args.iter().skip(from).map(|a| a.to_string()).collect() };
    let place = |dir: &str| -> String {
        let tag = format!(
            "{}-{:08x}-{line}",
            name,
            fnv(path.as_os_str().as_encoded_bytes())
        );
        plan.dir.join(dir).join(tag).to_string_lossy().into_owned()
    };
    Ok(match name {
        "listen" => Some(moved_listen(args, &plan.listens.ports)?),
        n if removed(n) => Some(String::new()),
        "error_log" => put(
            "error_log",
            &[
                plan.error_log().to_string_lossy().into_owned(),
                "notice".into(),
            ],
        ),
        "access_log" => put("access_log", &["off".into()]),
        "proxy_store" | "fastcgi_store" | "uwsgi_store" | "scgi_store" => {
            put(name, &["off".into()])
        }
        n if n.ends_with("_temp_path") => {
            let mut new = vec![place("temp")];
            new.extend(rest(1));
            put(name, &new)
        }
        n if n.ends_with("_cache_path") => {
            let mut new = vec![place("cache")];
            new.extend(rest(1));
            put(name, &new)
        }
        // A backend that is one of nginx's own listens is nginx itself: in the shadow, the
        // shadow's copy of that listen, so a front proxying to an internal vhost of the
        // candidate reaches the candidate's vhost (which the real nginx may not have yet).
        n if PASS_DIRECTIVES.contains(&n) || n == "server" => {
            match args
                .first()
                .and_then(|a| own_listen(a, &plan.listens.ports))
            {
                Some(to) => {
                    let mut new = vec![to];
                    new.extend(rest(1));
                    put(name, &new)
                }
                None => None,
            }
        }
        // A relative include is the conf dir's: it names the same file in the copy.
        "include" => match args.first() {
            Some(p) => put(
                "include",
                &[plan
                    .copy_of(&plan.conf_prefix.join(p))
                    .to_string_lossy()
                    .into()],
            ),
            None => None,
        },
        n => match (relative_to_conf_dir(n), args.first()) {
            (Some(conf_dir), Some(p)) if completes_relative(p) => {
                let base = if conf_dir {
                    &plan.conf_prefix
                } else {
                    &plan.prefix
                };
                let mut new = vec![base.join(p).to_string_lossy().into_owned()];
                new.extend(rest(1));
                put(name, &new)
            }
            _ => None,
        },
    })
}

/// A `*_pass` or upstream `server` address (`http://127.0.0.1:8091/x`, `127.0.0.1:8091`)
/// that connects to one of the mapped listens, rewritten to the shadow's address for it;
/// `None` for anything else (names, upstream blocks, unix sockets, variables, an address that
/// may be another machine's). nginx's default
/// ports apply where none is written: 80 for http and an upstream `server`, 443 for https.
fn own_listen(arg: &str, ports: &PortMap) -> Option<String> {
    if arg.contains('$') {
        return None;
    }
    let (scheme, rest) = match arg.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, arg),
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (host, uri) = rest.split_at(end);
    let host = host.replacen("localhost:", "127.0.0.1:", 1);
    let connect: SocketAddr = match host.parse() {
        Ok(sa) => sa,
        Err(_) => {
            let port = match scheme {
                Some("https") => 443,
                Some("http") | None => 80,
                _ => return None,
            };
            let ip: IpAddr = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?;
            SocketAddr::new(ip, port)
        }
    };
    // An address nginx listens on is this machine's; through a wildcard listen only a loopback
    // one is known to be (another may be a remote machine's).
    let exact = matches!(
        ports.get(&ListenAddr::Tcp(connect), false),
        Some(ShadowAddr::Inet(_))
    );
    if !exact && !connect.ip().is_loopback() {
        return None;
    }
    let to = ports.route(connect)?;
    Some(match scheme {
        Some(scheme) => format!("{scheme}://{to}{uri}"),
        None => format!("{to}{uri}"),
    })
}

/// Where a word token starts: past the whitespace and comments after the previous token.
fn token_start(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&b) = bytes.get(at) {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => at += 1,
            b'#' => {
                while bytes.get(at).is_some_and(|&c| c != b'\n') {
                    at += 1;
                }
            }
            _ => break,
        }
    }
    at
}

/// Apply edits (sorted, not overlapping); each replacement is followed by as many newlines as
/// the text it replaces held, so every later line keeps its number.
fn apply(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + edits.len() * 32);
    let mut at = 0;
    for e in edits {
        out.extend_from_slice(&bytes[at..e.start]);
        out.extend_from_slice(e.text.as_bytes());
        let lines = bytes[e.start..e.end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        out.extend(std::iter::repeat_n(b'\n', lines));
        at = e.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// A word as nginx reads it back: bare when it holds nothing special, else double-quoted.
pub(crate) fn word(text: &str) -> String {
    let plain = !text.is_empty()
        && !text
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b";{}\"'\\#$".contains(&b));
    if plain {
        return text.to_string();
    }
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A short stable tag for a path (FNV-1a), so two files' temp paths never share a directory.
fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn plan() -> Plan {
        let mut ports = PortMap::default();
        let any80 = ListenAddr::Tcp("0.0.0.0:80".parse().unwrap());
        ports.insert(
            any80,
            false,
            ShadowAddr::Inet("127.0.0.1:5001".parse().unwrap()),
        );
        ports.insert(
            ListenAddr::Tcp("[::]:443".parse().unwrap()),
            false,
            ShadowAddr::Inet("[::1]:5002".parse().unwrap()),
        );
        ports.insert(
            ListenAddr::Unix("/run/site.sock".into()),
            false,
            ShadowAddr::Unix("/s/sock/0.sock".into()),
        );
        ports.insert(
            ListenAddr::Tcp("0.0.0.0:53".parse().unwrap()),
            true,
            ShadowAddr::Inet("127.0.0.1:5003".parse().unwrap()),
        );
        Plan {
            listens: StandIns {
                ports,
                add_listen: HashSet::from([(PathBuf::from("/etc/nginx/nginx.conf"), 9)]),
            },
            dir: "/s".into(),
            prefix: "/usr/share/nginx".into(),
            conf_prefix: "/etc/nginx".into(),
            http_temp: vec!["proxy_temp_path"],
        }
    }

    fn rewrite_text(text: &str) -> String {
        let file = ConfFile {
            path: "/etc/nginx/nginx.conf".into(),
            bytes: Arc::from(text.as_bytes()),
            via: None,
        };
        String::from_utf8(shadow_conf(&file, &plan()).unwrap()).unwrap()
    }

    #[test]
    fn listens_move_one_to_one_and_keep_their_parameters() {
        let text = "http {\nserver { listen 80 default_server; listen [::]:443 ssl http2; }\n\
                    server { listen unix:/run/site.sock proxy_protocol; }\n}\n\
                    stream { server { listen 53 udp; } }\n";
        let out = rewrite_text(text);
        assert_eq!(
            out,
            "http { access_log off; proxy_temp_path /s/temp/proxy;\n\
             server { listen 127.0.0.1:5001 default_server; listen [::1]:5002 ssl http2; }\n\
             server { listen unix:/s/sock/0.sock proxy_protocol; }\n}\n\
             stream { server { listen 127.0.0.1:5003 udp; } }\n"
        );
    }

    #[test]
    fn writers_move_into_the_shadow_and_lines_stay_put() {
        let text = "pid /run/nginx.pid;\nuser www-data;\nworker_processes\n  auto;\n\
                    error_log syslog:server=unix:/dev/log warn;\nload_module modules/x.so;\n\
                    events {}\nhttp {\nserver { # no listen\n access_log /var/log/a.log main;\n\
                    proxy_cache_path /var/cache/nginx levels=1:2 keys_zone=c:10m;\n\
                    client_body_temp_path /var/lib/nginx/body 1 2;\n proxy_store on;\n\
                    root html; alias $x; include /etc/nginx/snippets/*.conf; include mime.types;\n}\n}\n";
        let out = rewrite_text(text);
        let want = "\nuser www-data;\n\n\n\
                    error_log /s/logs/error.log notice;\nload_module /usr/share/nginx/modules/x.so;\n\
                    events {}\nhttp { access_log off; proxy_temp_path /s/temp/proxy;\n\
                    server { listen 127.0.0.1:5001; # no listen\n access_log off;\n\
                    proxy_cache_path /s/cache/proxy_cache_path-";
        assert!(out.starts_with(want), "{out}");
        assert!(
            out.contains(
                "levels=1:2 keys_zone=c:10m;\nclient_body_temp_path /s/temp/client_body_temp_path-"
            ),
            "{out}"
        );
        assert!(out.contains("-12 1 2;\n proxy_store off;\nroot /usr/share/nginx/html; alias $x; include /s/conf/etc/nginx/snippets/*.conf; include /s/conf/etc/nginx/mime.types;\n}\n}\n"), "{out}");
        assert_eq!(out.lines().count(), text.lines().count());
    }

    #[test]
    fn relative_file_paths_resolve_where_the_real_nginx_reads_them() {
        let text = "http {\nserver { listen 80;\nssl_certificate ../certs/x.pem; \
                    ssl_certificate_key data:$k; proxy_ssl_trusted_certificate ca.pem;\n\
                    auth_basic_user_file ../htpasswd; ssl_password_file $p;\n\
                    xslt_stylesheet x.xslt a=b; root /srv; include ../shared/s.conf; }\n}\n";
        let out = rewrite_text(text);
        assert!(
            out.contains(
                "ssl_certificate /etc/nginx/../certs/x.pem; ssl_certificate_key data:$k; \
                 proxy_ssl_trusted_certificate /etc/nginx/ca.pem;\n\
                 auth_basic_user_file /etc/nginx/../htpasswd; ssl_password_file $p;\n\
                 xslt_stylesheet /usr/share/nginx/x.xslt a=b; root /srv; include /s/conf/etc/shared/s.conf;"
            ),
            "{out}"
        );
    }

    #[test]
    fn values_and_lua_are_left_alone() {
        let text = "http {\nmap $a $b { listen 1; pid 2; }\n\
                    server { listen 80; content_by_lua_block { pid = 1; error_log(\"x\") } }\n}\n";
        let out = rewrite_text(text);
        assert!(out.contains("map $a $b { listen 1; pid 2; }"), "{out}");
        assert!(
            out.contains("listen 127.0.0.1:5001; content_by_lua_block { pid = 1;"),
            "{out}"
        );
    }

    #[test]
    fn remapping_listens_changes_nothing_else() {
        let text = "pid /run/nginx.pid;\nhttp {\nserver { listen 80 default_server; root html; }\n\
                    server { # no listen\n proxy_pass http://127.0.0.1:80; }\n}\n\
                    stream { server { listen 53 udp; } }\n";
        let file = ConfFile {
            path: "/etc/nginx/nginx.conf".into(),
            bytes: Arc::from(text.as_bytes()),
            via: None,
        };
        let mut listens = plan().listens;
        listens.add_listen = HashSet::from([(PathBuf::from("/etc/nginx/nginx.conf"), 4)]);
        let out = String::from_utf8(remap_listens(&file, &listens).unwrap()).unwrap();
        assert_eq!(
            out,
            "pid /run/nginx.pid;\nhttp {\nserver { listen 127.0.0.1:5001 default_server; root html; }\n\
             server { listen 127.0.0.1:5001; # no listen\n proxy_pass http://127.0.0.1:80; }\n}\n\
             stream { server { listen 127.0.0.1:5003 udp; } }\n"
        );
    }

    #[test]
    fn an_unmapped_listen_is_an_error_at_its_line() {
        let file = ConfFile {
            path: "/c".into(),
            bytes: Arc::from(&b"http {\n server { listen 10.0.0.1:8080; }\n}\n"[..]),
            via: None,
        };
        let e = shadow_conf(&file, &plan()).unwrap_err();
        assert!(matches!(e, Error::Config { line: 2, .. }), "{e}");
    }

    #[test]
    fn connections_route_like_the_kernel_would() {
        let p = plan();
        assert_eq!(
            p.listens.ports.route("127.0.0.1:80".parse().unwrap()),
            Some("127.0.0.1:5001".parse().unwrap())
        );
        assert_eq!(
            p.listens.ports.route("[::1]:443".parse().unwrap()),
            Some("[::1]:5002".parse().unwrap())
        );
        assert_eq!(
            p.listens.ports.route("127.0.0.1:8080".parse().unwrap()),
            None
        );
    }

    #[test]
    fn no_dot_dot_leads_out_of_the_copy() {
        let p = plan();
        let deep = Path::new("/etc/nginx/../../../../tmp/x.conf");
        assert_eq!(p.copy_of(deep), Path::new("/s/conf/tmp/x.conf"));
        assert_eq!(p.copy_of(Path::new("/a/./b")), Path::new("/s/conf/a/b"));
    }

    #[test]
    fn a_backend_on_one_of_nginxs_own_listens_goes_to_the_shadows_copy() {
        let text = "http {\nupstream u { server 127.0.0.1 weight=2; server 10.0.0.1:80; }\n\
                    server { listen 80; location / { proxy_pass http://127.0.0.1:80/in/; }\n\
                    location /b { proxy_pass https://[::1]; } location /c { proxy_pass http://u; }\n\
                    location /d { proxy_pass http://$x:80; } location /e { fastcgi_pass localhost:80; } }\n}\n";
        let out = rewrite_text(text);
        assert!(
            out.contains("upstream u { server 127.0.0.1:5001 weight=2; server 10.0.0.1:80; }"),
            "{out}"
        );
        assert!(
            out.contains("proxy_pass http://127.0.0.1:5001/in/;"),
            "{out}"
        );
        assert!(out.contains("proxy_pass https://[::1]:5002;"), "{out}");
        assert!(out.contains("proxy_pass http://u;"), "{out}");
        assert!(out.contains("proxy_pass http://$x:80;"), "{out}");
        assert!(out.contains("fastcgi_pass 127.0.0.1:5001;"), "{out}");
    }

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(word("/a/b"), "/a/b");
        assert_eq!(word("/a b"), "\"/a b\"");
        assert_eq!(word("a\"b"), "\"a\\\"b\"");
    }
}
