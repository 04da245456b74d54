//! Shared memory zones nginx carries across a reload, and the changes to them it refuses
//! there. A reload keeps each zone whose name, size and module are the same, and its module
//! then checks the zone's new declaration against the old: `limit_req_zone` and
//! `limit_conn_zone` must keep their key, a `*_cache_path` its path and `levels`. Anything
//! else fails the reload (`[emerg] limit_req "one" uses the "$server_name" key while previously
//! it used the "$binary_remote_addr" key`) after `nginx -t`, which starts with no zones,
//! passed it. A zone whose size changes is a new zone, and reloads.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::conf::tree::Directive;

/// One zone as a tree declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Zone {
    /// The directive (`limit_req_zone`, `proxy_cache_path`).
    directive: String,
    name: String,
    /// The size in bytes, as nginx parses `NAME:SIZE`.
    size: Option<u64>,
    /// What the module insists stays the same: the key, or the path and its `levels`.
    kept: String,
    file: Arc<Path>,
    line: u32,
}

/// The directives that declare a zone, and what of each the module keeps.
const ZONES: &[&str] = &[
    "limit_req_zone",
    "limit_conn_zone",
    "proxy_cache_path",
    "fastcgi_cache_path",
    "uwsgi_cache_path",
    "scgi_cache_path",
];

impl Zone {
    /// The zone `d` declares, when it is one of [`ZONES`].
    pub(super) fn of(d: &Directive) -> Option<Zone> {
        if !ZONES.contains(&d.name.as_str()) {
            return None;
        }
        let cache = d.name.ends_with("_cache_path");
        let flag = if cache { "keys_zone=" } else { "zone=" };
        let spec = d.args.iter().find_map(|a| a.strip_prefix(flag))?;
        let (name, size) = spec.split_once(':').unwrap_or((spec, ""));
        let kept = if cache {
            let levels = (d.args.iter()).find_map(|a| a.strip_prefix("levels="));
            format!("{} levels={}", d.arg0(), levels.unwrap_or(""))
        } else {
            d.arg0().to_string()
        };
        Some(Zone {
            directive: d.name.to_string(),
            name: name.to_string(),
            size: parse_size(size),
            kept,
            file: d.file.clone(),
            line: d.line,
        })
    }
}

/// `10m`, `1024k`, `65536`: bytes.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1 << 10),
        (i, 'm' | 'M') => (&text[..i], 1 << 20),
        (i, 'g' | 'G') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok().map(|n| n * unit)
}

/// A zone the change declares anew with the same name, size and directive but another key
/// (path, levels): the reload fails on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneRekeyed {
    pub directive: String,
    pub zone: String,
    pub before: String,
    pub after: String,
    pub file: String,
    pub line: u32,
}

impl ZoneRekeyed {
    /// What nginx says, in words.
    pub fn message(&self) -> String {
        let what = match self.directive.ends_with("_cache_path") {
            true => "path and levels",
            false => "key",
        };
        format!(
            "{} zone \"{}\" changes its {what} from \"{}\" to \"{}\" and keeps its name and \
             size: a reload keeps the zone nginx has, and nginx refuses the new {what} for it \
             (`[emerg] ... while previously it used ...`) after `nginx -t` passed",
            self.directive, self.zone, self.before, self.after
        )
    }
}

/// The zones of `new` that [`ZoneRekeyed`] says a reload from `old` fails on. `root` makes
/// the places relative.
pub(super) fn rekeyed(old: &[Zone], new: &[Zone], root: &Path) -> Vec<ZoneRekeyed> {
    let mut out = Vec::new();
    for z in new {
        let kept_zone = old.iter().find(|o| {
            o.name == z.name && o.directive == z.directive && o.size.is_some() && o.size == z.size
        });
        if let Some(o) = kept_zone.filter(|o| o.kept != z.kept) {
            out.push(ZoneRekeyed {
                directive: z.directive.clone(),
                zone: z.name.clone(),
                before: o.kept.clone(),
                after: z.kept.clone(),
                file: super::rel(root, &z.file),
                line: z.line,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(line: &str) -> Zone {
        let file: Arc<Path> = Arc::from(Path::new("/t.conf"));
        let conf = crate::conf::tree::parse(&file, line.as_bytes()).expect("parses");
        Zone::of(&conf[0]).expect("a zone")
    }

    #[test]
    fn a_key_changed_at_the_same_size_is_refused_and_a_resized_zone_is_not() {
        let root = Path::new("/");
        let old = [zone(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;",
        )];
        let same_size = [zone(
            "limit_req_zone $server_name zone=one:1024k rate=1r/s;",
        )];
        let found = rekeyed(&old, &same_size, root);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0]
            .message()
            .contains("\"$binary_remote_addr\" to \"$server_name\""));
        let resized = [zone("limit_req_zone $server_name zone=one:2m rate=1r/s;")];
        assert!(rekeyed(&old, &resized, root).is_empty());
        let rate = [zone(
            "limit_req_zone $binary_remote_addr zone=one:1m rate=5r/s;",
        )];
        assert!(rekeyed(&old, &rate, root).is_empty());
        let cache = [zone(
            "proxy_cache_path /var/cache/a levels=1:2 keys_zone=c:10m;",
        )];
        let moved = [zone(
            "proxy_cache_path /var/cache/b levels=1:2 keys_zone=c:10m;",
        )];
        assert_eq!(rekeyed(&cache, &moved, root).len(), 1);
    }
}
