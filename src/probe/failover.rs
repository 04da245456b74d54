//! Where nginx does not fail over: `proxy_next_upstream` (and the `fastcgi_`, `uwsgi_`,
//! `scgi_`, `grpc_`, `memcached_` ones) says which failures send a request on to the next
//! peer; the default is `error timeout`. Without `error`, a refused connect ends the request
//! with 502 (`ngx_http_upstream_next`: `(u->conf->next_upstream & ft_type) != ft_type`), and
//! the peer is tried again after `fail_timeout`, so a member down while its siblings answer
//! still fails requests. In `stream`, `proxy_next_upstream off` does the same for both.
//!
//! Inherited `http` → `server` → `location` (`stream` → `server`), an inner one replacing the
//! outer, like every `*_next_upstream` (`ngx_conf_merge_bitmask_value`). A
//! `*_next_upstream_tries 1` (inherited on its own) allows no next peer whatever the setting.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::conf::targets::Name;
use crate::conf::{Config, Directive};

/// Which connect failures make nginx try the next peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// `error`: refused, reset, unreachable, no such socket, permission denied.
    pub error: bool,
    /// `timeout`: the connect timed out.
    pub timeout: bool,
    /// `non_idempotent`: a POST, LOCK or PATCH already sent to a peer is passed on too when
    /// that peer fails; without it nginx answers it 502 (`ngx_http_upstream_next`). A stream
    /// connection has no method: always so there.
    pub non_idempotent: bool,
    /// `*_next_upstream_tries 1` is in scope: no next peer at all.
    pub one_try: bool,
}

impl Next {
    const DEFAULT: Next = Next {
        error: true,
        timeout: true,
        non_idempotent: false,
        one_try: false,
    };

    fn of(d: &Directive, stream: bool) -> Next {
        let has = |w: &str| d.args.iter().any(|a| a == w);
        if stream {
            let on = !has("off");
            return Next {
                error: on,
                timeout: on,
                non_idempotent: true,
                one_try: false,
            };
        }
        Next {
            error: has("error"),
            timeout: has("timeout"),
            non_idempotent: has("non_idempotent"),
            one_try: false,
        }
    }
}

/// Every `*_pass` line whose next-upstream setting is not nginx's default, with its setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failover {
    passes: HashMap<(Arc<Path>, u32), Next>,
}

impl Failover {
    /// Scan a loaded configuration.
    pub fn of(config: &Config) -> Failover {
        let mut out = Failover::default();
        for d in &config.tree {
            match d.name.as_str() {
                "http" => out.scan(d.children(), false, &HashMap::new(), &HashMap::new()),
                "stream" => out.scan(d.children(), true, &HashMap::new(), &HashMap::new()),
                _ => {}
            }
        }
        out
    }

    fn scan(
        &mut self,
        dirs: &[Directive],
        stream: bool,
        outer: &HashMap<String, Next>,
        outer_tries: &HashMap<String, bool>,
    ) {
        let mut here = outer.clone();
        for d in dirs.iter().filter(|d| d.name.ends_with("_next_upstream")) {
            here.insert(d.name.to_string(), Next::of(d, stream));
        }
        // `*_next_upstream_tries 1`: one try, no next peer.
        let mut tries = outer_tries.clone();
        for d in dirs
            .iter()
            .filter(|d| d.name.ends_with("_next_upstream_tries"))
        {
            let setting = d.name.trim_end_matches("_tries").to_string();
            tries.insert(setting, d.arg0().trim() == "1");
        }
        for d in dirs {
            if let Some(pass) = Name::of_pass(&d.name) {
                let setting = pass.trim_end_matches("_pass").to_string() + "_next_upstream";
                let mut next = here.get(&setting).copied().unwrap_or(Next::DEFAULT);
                if tries.get(&setting).copied().unwrap_or(false) {
                    (next.error, next.timeout, next.one_try) = (false, false, true);
                }
                if next != Next::DEFAULT {
                    self.passes.insert((d.file.clone(), d.line), next);
                }
            }
            if d.block.is_some() && d.name != "upstream" {
                self.scan(d.children(), stream, &here, &tries);
            }
        }
    }

    /// The setting for the `*_pass` at `file:line`.
    pub fn at(&self, file: &Arc<Path>, line: u32) -> Next {
        (self.passes.get(&(file.clone(), line)).copied()).unwrap_or(Next::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load, LoadOptions};

    #[test]
    fn the_innermost_setting_applies_per_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        std::fs::write(
            &path,
            "http {\n proxy_next_upstream timeout;\n server {\n\
             location /a { proxy_pass http://app; }\n\
             location /b { proxy_next_upstream error timeout http_502; proxy_pass http://app; }\n\
             location /c { fastcgi_pass app; }\n\
             location /d { grpc_next_upstream off; grpc_pass grpc://app; }\n\
             location /e { proxy_next_upstream error timeout non_idempotent; proxy_pass http://app; }\n }\n}\n\
             stream { proxy_next_upstream off; server { proxy_pass app; } }\n",
        )
        .unwrap();
        let c = load(&path, &LoadOptions::default()).unwrap();
        let f = Failover::of(&c);
        let file: Arc<Path> = path.as_path().into();
        let none = Next {
            error: false,
            timeout: false,
            non_idempotent: false,
            one_try: false,
        };
        assert_eq!(
            f.at(&file, 4),
            Next {
                timeout: true,
                ..none
            }
        );
        assert_eq!(f.at(&file, 5), Next::DEFAULT);
        assert_eq!(f.at(&file, 6), Next::DEFAULT);
        assert_eq!(f.at(&file, 7), none);
        assert_eq!(
            f.at(&file, 8),
            Next {
                non_idempotent: true,
                ..Next::DEFAULT
            }
        );
        assert_eq!(
            f.at(&file, 11),
            Next {
                non_idempotent: true,
                ..none
            }
        );
    }

    #[test]
    fn one_try_allows_no_next_peer_whatever_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        std::fs::write(
            &path,
            "http {\n proxy_next_upstream_tries 1;\n server {\n\
             location /a { proxy_pass http://app; }\n\
             location /b { proxy_next_upstream_tries 2; proxy_pass http://app; }\n\
             location /c { fastcgi_pass app; }\n }\n}\n",
        )
        .unwrap();
        let c = load(&path, &LoadOptions::default()).unwrap();
        let f = Failover::of(&c);
        let file: Arc<Path> = path.as_path().into();
        let a = f.at(&file, 4);
        assert!(!a.error && !a.timeout && a.one_try, "{a:?}");
        assert_eq!(f.at(&file, 5), Next::DEFAULT);
        assert_eq!(f.at(&file, 6), Next::DEFAULT, "fastcgi has its own");
    }
}
