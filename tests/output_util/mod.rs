//! A site for driving the built binary end to end: a real nginx (tests/support) in front of a
//! real backend, a private state directory, and a `Command` for `safe-reload` pointed at both.
//! Used by the edit, JSON and output tests.

#![allow(dead_code)]

pub mod pty;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

/// nginx with one proxied server (`Host: site.test`) in front of `app`.
pub struct Site {
    pub ip: IpAddr,
    /// The address nginx serves the site on.
    pub addr: SocketAddr,
    pub app: HttpBackend,
    pub nginx: TestNginx,
    pub state: tempfile::TempDir,
}

impl Site {
    /// Start the site; nothing recorded yet.
    pub fn start() -> Site {
        let ip = unique_loopback();
        let app = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
        let addr = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&proxy_site(addr, &app.host_port()));
        let state = tempfile::tempdir().expect("state tempdir");
        Site {
            ip,
            addr,
            app,
            nginx,
            state,
        }
    }

    /// Start the site and record its configuration as last-good.
    pub fn started_with_baseline() -> Site {
        let site = Site::start();
        let out = site.run(&["init"]);
        assert_eq!(out.status.code(), Some(0), "init: {}", text(&out));
        site
    }

    /// `safe-reload` with this site's nginx, config, prefix and state directory; colors off
    /// unless a test asks for them.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--nginx")
            .arg(NGINX)
            .args(self.nginx.flags())
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--config")
            .arg("/dev/null")
            .env_remove("NO_COLOR")
            .env_remove("SAFE_RELOAD_STATE_DIR")
            .env_remove("VISUAL")
            .env_remove("EDITOR")
            .stdin(std::process::Stdio::null());
        c
    }

    /// Run with these arguments and wait.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run safe-reload")
    }

    /// The site's server block pointing at another backend address.
    pub fn server_for(&self, backend: &str) -> String {
        proxy_site(self.addr, backend)
    }

    /// What the site answers now.
    pub fn get(&self) -> (u16, String) {
        http_get(self.addr, "site.test", "/").expect("the site answers")
    }

    /// Files kept under `STATE/edits/`.
    pub fn kept_edits(&self) -> Vec<PathBuf> {
        let dir = self.state.path().join("edits");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// stdout as one JSON document.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", text(out)))
}

/// Replace what changes from run to run (temp paths, pids, snapshot ids, timings) so text can
/// be compared with a snapshot.
pub fn normalize(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut s = text.to_string();
    for (from, to) in replacements {
        if !from.is_empty() {
            s = s.replace(from, to);
        }
    }
    let pid = regex_lite_replace(&s, "pid ", |c| c.is_ascii_digit(), "PID");
    regex_snapshot_ids(&pid)
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replace every `prefix` followed by a run of `keep` characters with `prefix` + `with`.
fn regex_lite_replace(s: &str, prefix: &str, keep: impl Fn(char) -> bool, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        rest = &rest[i + prefix.len()..];
        let n = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        if n > 0 {
            out.push_str(with);
        }
        rest = &rest[n..];
    }
    out.push_str(rest);
    out
}

/// Snapshot ids look like `20261121T155343Z-172115-283f52`.
fn regex_snapshot_ids(s: &str) -> String {
    let mut out = String::new();
    for word in s.split_inclusive(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        let core = word.trim_end_matches(|c: char| c.is_whitespace() || c == '(' || c == ')');
        let tail = &word[core.len()..];
        if is_snapshot_id(core) {
            out.push_str("SNAPSHOT");
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
    }
    out
}

fn is_snapshot_id(w: &str) -> bool {
    let parts: Vec<&str> = w.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 16
        && parts[0].as_bytes()[8] == b'T'
        && parts[0].ends_with('Z')
        && parts[1].chars().all(|c| c.is_ascii_digit())
        && parts[2].chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether bytes hold an ANSI escape.
pub fn has_escape(bytes: &[u8]) -> bool {
    bytes.contains(&0x1b)
}

/// Files and mode bytes of a path, for "byte-identical" assertions.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}
