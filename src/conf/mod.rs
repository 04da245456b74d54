//! The configuration model: nginx's configuration read the way nginx reads it.
//!
//! `lexer` turns bytes into tokens by the rules of `ngx_conf_read_token`, `tree` builds
//! directives from tokens, `load` follows `include` and knows the full file set, `targets` finds
//! every upstream target and `servers` every `server {}` with its listens, names and proxied
//! locations. `nginx -t` stays the judge of validity: this model only has to find files,
//! targets, listens and server names, each with file and line.

pub mod captures;
pub mod example;
pub mod host_map;
pub mod lexer;
pub mod load;
pub mod pick;
pub mod reads;
pub mod rewrites;
pub mod servers;
pub mod sni;
pub mod targets;
pub mod tree;
pub mod untrusted;
pub mod uri_map;
pub mod variants;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use load::{load, load_from, LoadOptions, Source};
pub use servers::{Listen, ListenAddr, Location, Reach, Rewritten, Server};
pub use targets::{Reference, Target, TargetAddr, Targets};
pub use tree::{Directive, Word};

/// One file of the configuration, as read once from disk.
#[derive(Debug, Clone)]
pub struct ConfFile {
    /// The path as nginx resolves it (absolute; a symlink is not resolved).
    pub path: PathBuf,
    /// The bytes read, exactly as on disk.
    pub bytes: Arc<[u8]>,
    /// The path as the `include` wrote it (made absolute), when a `..` in it comes after a
    /// symlink (`current/../shared/site.conf`, `current -> releases/7`): the kernel goes up
    /// from where the link leads, so that link decides which file `path` is, though `path`
    /// no longer names it. Recorded and restored like every link on the way.
    pub via: Option<PathBuf>,
}

/// A loaded configuration: the directive tree with includes spliced in place, and the set of
/// files it was read from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main configuration file (`-c`).
    pub main: PathBuf,
    /// The directory relative includes resolve against: the main file's directory.
    pub conf_prefix: PathBuf,
    /// Every file read, main file first, then in the order first included; each once.
    pub files: Vec<ConfFile>,
    /// Top-level directives. An `include` is replaced by the directives of the files it names,
    /// each keeping its own file and line.
    pub tree: Vec<Directive>,
}

impl Config {
    /// The file set's paths, main file first, each followed by the path its include wrote
    /// when that goes through a link by `..` ([`ConfFile::via`]).
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        (self.files.iter()).flat_map(|f| std::iter::once(f.path.as_path()).chain(f.via.as_deref()))
    }

    /// Every directive in the tree, depth first, parents before their children.
    pub fn walk(&self) -> tree::Walk<'_> {
        tree::Walk::new(&self.tree)
    }

    /// The first top-level directive of this name (e.g. `user`, `pid`).
    pub fn main_directive(&self, name: &str) -> Option<&Directive> {
        self.tree.iter().find(|d| d.name == name)
    }
}

/// The files nginx reads once, when it loads a configuration, and not again until the next
/// load: certificates, keys, CRLs, DH parameters and the like, of its listens and of its
/// upstream connections (`proxy_ssl_certificate`, `grpc_ssl_*`, `uwsgi_ssl_*`). A renewal in
/// place is invisible to clients until nginx reloads. Relative paths are completed against the
/// conf prefix, as `ngx_conf_full_name` does for them; a path built from variables (read per
/// handshake) and the forms that name no file (`data:`, `engine:`, `store:`) are left out.
pub fn load_time_files(config: &Config) -> Vec<PathBuf> {
    const SSL_FILES: &[&str] = &[
        "ssl_certificate",
        "ssl_certificate_key",
        "ssl_trusted_certificate",
        "ssl_client_certificate",
        "ssl_crl",
        "ssl_dhparam",
        "ssl_password_file",
        "ssl_stapling_file",
        "ssl_session_ticket_key",
    ];
    let mut out: Vec<PathBuf> = Vec::new();
    for d in config.walk() {
        let name = ["proxy_", "grpc_", "uwsgi_"]
            .iter()
            .find_map(|p| d.name.strip_prefix(p))
            .unwrap_or(&d.name);
        let path = d.arg0();
        let names_file = !path.is_empty()
            && !path.contains('$')
            && !["data:", "engine:", "store:"]
                .iter()
                .any(|p| path.starts_with(p));
        if SSL_FILES.contains(&name) && names_file {
            let full = config.conf_prefix.join(path);
            if !out.contains(&full) {
                out.push(full);
            }
        }
    }
    out
}

/// Every `upstream` block of `http {}` with more than one `server` that takes requests (not
/// `down`, not `backup`), by name (lowercase, as nginx matches a `*_pass` to it), and the sum
/// of their weights (`weight=N`, 1 by default): nginx spreads requests over them by weighted
/// round robin, so one request reaches one of them, and a server of weight 1 beside two of
/// weight 10 gets one request in 21.
pub fn pool_sizes(config: &Config) -> std::collections::HashMap<String, usize> {
    let mut out = std::collections::HashMap::new();
    for http in config.tree.iter().filter(|d| d.name == "http") {
        for up in http.children().iter().filter(|d| d.name == "upstream") {
            let live: Vec<usize> = (up.children().iter())
                .filter(|d| d.name == "server")
                .filter(|d| {
                    !(d.args.iter().skip(1)).any(|a| a.as_str() == "down" || a.as_str() == "backup")
                })
                .map(|d| {
                    (d.args.iter().skip(1))
                        .find_map(|a| a.strip_prefix("weight=")?.parse().ok())
                        .unwrap_or(1)
                })
                .collect();
            if live.len() > 1 {
                out.insert(up.arg0().to_ascii_lowercase(), live.iter().sum());
            }
        }
    }
    out
}

/// The upstream blocks whose `hash` key reads the path (`hash $uri`, `hash $host$uri
/// consistent`) and nothing of the query: requests that differ only in their query all go to
/// one server of such a pool. By name, lowercase.
pub fn pools_hashed_on_path(config: &Config) -> std::collections::HashSet<String> {
    let reads = |key: &str, vars: &[&str]| vars.iter().any(|v| key.contains(v));
    let mut out = std::collections::HashSet::new();
    for http in config.tree.iter().filter(|d| d.name == "http") {
        for up in http.children().iter().filter(|d| d.name == "upstream") {
            let on_path = (up.children().iter().filter(|d| d.name == "hash")).any(|h| {
                let key = h.arg0().to_ascii_lowercase();
                reads(
                    &key,
                    &["$uri", "${uri}", "$document_uri", "${document_uri}"],
                ) && !reads(&key, &["$request_uri", "$args", "$query_string", "$arg_"])
                    && !reads(
                        &key,
                        &["${request_uri}", "${args}", "${query_string}", "${arg_"],
                    )
            });
            if on_path {
                out.insert(up.arg0().to_ascii_lowercase());
            }
        }
    }
    out
}

/// The URIs `mirror` sends copies of requests to (`mirror /mirror;`), each once: nginx ignores
/// the answers to those subrequests, so their failures reach no client. One with a variable
/// is left out.
pub fn mirror_uris(config: &Config) -> Vec<String> {
    fn walk(dirs: &[tree::Directive], out: &mut Vec<String>) {
        for d in dirs {
            let uri = d.arg0();
            let copies = d.name == "mirror" && uri != "off" && !uri.contains('$');
            if copies && !out.iter().any(|u| u == uri) {
                out.push(uri.to_string());
            }
            walk(d.children(), out);
        }
    }
    let mut out = Vec::new();
    walk(&config.tree, &mut out);
    out
}

/// The pools of [`pool_sizes`] whose every server that takes requests has `max_conns=N`, by
/// name, and the sum: nginx sends no more requests at once to the pool, and answers the
/// others 502 (`no live upstreams`) where clients would have waited their turn one at a time.
pub fn pool_limits(config: &Config) -> std::collections::HashMap<String, usize> {
    let mut out = std::collections::HashMap::new();
    for http in config.tree.iter().filter(|d| d.name == "http") {
        for up in http.children().iter().filter(|d| d.name == "upstream") {
            let live = (up.children().iter())
                .filter(|d| d.name == "server")
                .filter(|d| {
                    !(d.args.iter().skip(1)).any(|a| a.as_str() == "down" || a.as_str() == "backup")
                });
            let limits: Option<Vec<usize>> = live
                .map(|d| {
                    (d.args.iter().skip(1))
                        .find_map(|a| a.strip_prefix("max_conns=")?.parse().ok())
                        .filter(|n: &usize| *n > 0)
                })
                .collect();
            if let Some(limits) = limits.filter(|l| l.len() > 1) {
                out.insert(up.arg0().to_ascii_lowercase(), limits.iter().sum());
            }
        }
    }
    out
}

/// A time as nginx reads it (`ngx_parse_time`): `10s`, `500ms`, `1m30s`, a bare number of
/// seconds; the units `ms`, `s`, `m`, `h`, `d`, `w`, `M` (30 days), `y` (365 days), each at
/// most once, largest first. `None` for what nginx rejects (or a variable).
pub fn nginx_time(text: &str) -> Option<Duration> {
    const UNITS: [(&str, u64); 8] = [
        ("y", 365 * 86_400_000),
        ("M", 30 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1000),
    ];
    let mut rest = text;
    let mut total: u64 = 0;
    // The units still allowed, largest first: `ms` after `m` is a smaller unit.
    let order = ["y", "M", "w", "d", "h", "m", "s", "ms"];
    let mut next = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // A bare number is seconds.
        let (unit, scale) = match UNITS.iter().find(|(u, _)| rest.starts_with(u)) {
            Some(&(u, scale)) => {
                rest = &rest[u.len()..];
                (u, scale)
            }
            None if rest.is_empty() => ("s", 1000),
            None => return None,
        };
        let at = order[next..].iter().position(|u| *u == unit)?;
        next += at + 1;
        total = total.checked_add(n.checked_mul(scale)?)?;
    }
    (!text.is_empty()).then(|| Duration::from_millis(total))
}

#[cfg(test)]
mod time_tests {
    use super::nginx_time;
    use std::time::Duration;

    #[test]
    fn times_read_as_nginx_reads_them() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(nginx_time("10s"), ms(10_000));
        assert_eq!(nginx_time("10"), ms(10_000));
        assert_eq!(nginx_time("500ms"), ms(500));
        assert_eq!(nginx_time("1m30s"), ms(90_000));
        assert_eq!(nginx_time("1m"), ms(60_000));
        assert_eq!(nginx_time("1h"), ms(3_600_000));
        assert_eq!(nginx_time("1s500ms"), ms(1500));
        assert_eq!(nginx_time("30s1m"), None);
        assert_eq!(nginx_time("$t"), None);
        assert_eq!(nginx_time("10x"), None);
        assert_eq!(nginx_time(""), None);
    }
}
