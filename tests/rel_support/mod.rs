//! Helpers for the reliability tests (crash, signals, lock, hostile input, untrusted): a site
//! with a real nginx in a private prefix, one good backend and one that makes nginx answer 502,
//! a private state directory, and the built binary pointed at all of them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

pub use crate::support::{text, BIN};

/// A site nginx serves: `GOOD` answers 200 "good", `BAD` accepts and closes (nginx: 502).
pub struct Site {
    pub nginx: TestNginx,
    pub good: HttpBackend,
    pub bad: CloseBackend,
    /// The site's listen address.
    pub addr: SocketAddr,
    pub state: tempfile::TempDir,
}

impl Site {
    /// nginx serving the good backend, and a state dir with that config recorded by `init`.
    pub fn start() -> Site {
        let ip = unique_loopback();
        let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
        let bad = CloseBackend::start(SocketAddr::new(ip, 0));
        let addr = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&site_http(addr, &good.host_port()));
        let site = Site {
            nginx,
            good,
            bad,
            addr,
            state: tempfile::tempdir().expect("state tempdir"),
        };
        let out = site.run(&["init"]);
        assert_eq!(out.status.code(), Some(0), "init: {}", text(&out));
        site
    }

    /// The http body proxying to the bad backend.
    pub fn bad_http(&self) -> String {
        site_http(self.addr, &self.bad.addr.to_string())
    }

    /// The http body proxying to the good backend.
    pub fn good_http(&self) -> String {
        site_http(self.addr, &self.good.host_port())
    }

    /// The whole nginx.conf for the good and the bad change.
    pub fn good_conf(&self) -> String {
        self.nginx.render(&self.good_http())
    }

    pub fn bad_conf(&self) -> String {
        self.nginx.render(&self.bad_http())
    }

    /// Argv flags pointing the binary at this site.
    pub fn flags(&self) -> Vec<String> {
        let mut f = vec!["--nginx".to_string(), NGINX.to_string()];
        f.extend(self.nginx.flags());
        f.push("--state-dir".into());
        f.push(self.state.path().display().to_string());
        f.push("--health".into());
        f.push(format!("http://{}/", self.addr));
        f.push("--color".into());
        f.push("never".into());
        // These tests drive bad changes through the reload, its journal and the rollback; the
        // shadow would refuse them before the reload (tests/shadow_instance.rs covers it).
        f.push("--no-shadow".into());
        f
    }

    /// `safe-reload ARGS FLAGS` as a command, not started.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .args(self.flags())
            .env_remove("SAFE_RELOAD_TEST_PAUSE")
            .stdin(Stdio::null());
        c
    }

    /// Run `safe-reload ARGS` to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run safe-reload")
    }

    /// What the site answers through nginx right now.
    pub fn answer(&self) -> Option<(u16, String)> {
        http_get(self.addr, "site", "/").ok()
    }

    /// Every file in the config tree whose name marks it as a temp file of an atomic write.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.nginx.prefix, &mut found);
        found
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".safe-reload-tmp."))
            })
            .collect()
    }

    /// `status --json`: exit status and the parsed document.
    pub fn status(&self) -> (Option<i32>, serde_json::Value) {
        let out = self.run(&["status", "--json"]);
        let doc = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", text(&out)));
        (out.status.code(), doc)
    }
}

impl Site {
    /// Write an `http {}` body and make it the last good configuration through a normal
    /// reload (e.g. to move the site into an include layout after `init`).
    pub fn adopt(&self, http: &str) {
        self.nginx.write_http(http);
        let out = self.run(&["reload", "-y"]);
        assert_eq!(out.status.code(), Some(0), "adopt: {}", text(&out));
        assert_eq!(self.answer(), Some((200, "good".to_string())), "adopt");
    }

    /// Start `safe-reload ARGS` stopping itself at each of `points` (comma-separated), stdout
    /// and stderr piped.
    pub fn spawn_paused(&self, args: &[&str], points: &str) -> Proc {
        Proc(
            self.cmd(args)
                .env("SAFE_RELOAD_TEST_PAUSE", points)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start safe-reload"),
        )
    }

    /// `history --json`, parsed.
    pub fn history(&self) -> serde_json::Value {
        let out = self.run(&["history", "--json"]);
        assert_eq!(out.status.code(), Some(0), "history: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("history --json")
    }

    /// The snapshot with this id from `history --json`.
    pub fn snapshot(&self, id: &str) -> serde_json::Value {
        let doc = self.history();
        doc["history"]
            .as_array()
            .and_then(|h| h.iter().find(|s| s["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no snapshot {id} in {doc:#}"))
    }

    /// Whether some object in the state directory holds exactly `bytes`.
    pub fn stored(&self, bytes: &[u8]) -> bool {
        let mut found = Vec::new();
        walk(&self.state.path().join("objects"), &mut found);
        found
            .iter()
            .any(|p| p.is_file() && std::fs::read(p).is_ok_and(|b| b == bytes))
    }

    /// The id `STATE/last-good` names.
    pub fn last_good_id(&self) -> String {
        std::fs::read_to_string(self.state.path().join("last-good"))
            .expect("a last-good snapshot")
            .trim()
            .to_string()
    }

    /// Whether a journal (an unfinished run) is in the state directory.
    pub fn journal_exists(&self) -> bool {
        self.state.path().join("journal.json").exists()
    }
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, found);
        }
        found.push(path);
    }
}

/// A server on `addr` proxying everything to `upstream`.
pub fn site_http(addr: SocketAddr, upstream: &str) -> String {
    format!("server {{ listen {addr}; location / {{ proxy_pass http://{upstream}; }} }}")
}

/// A child process that is SIGKILLed and reaped when dropped, whatever the test did.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Wait until the process has stopped itself (state `T`), within `within`.
    pub fn wait_stopped(&mut self, within: Duration) -> bool {
        let pid = self.pid();
        wait_for(within, || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    == Some("T")
            })
        })
    }

    /// Let a stopped process continue.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Send `sig` by pid.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by pid; it is not reaped until `Drop` or `finish`.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Wait for the exit within `within`; stdout and stderr when they were piped.
    pub fn finish(mut self, within: Duration) -> Output {
        let done = wait_for(within, || self.0.try_wait().ok().flatten().is_some());
        if !done {
            let _ = self.0.kill();
        }
        let child = std::mem::replace(&mut self.0, spawn_true());
        let out = child.wait_with_output().expect("wait for safe-reload");
        assert!(
            done,
            "safe-reload did not exit within {within:?}: {}",
            text(&out)
        );
        out
    }
}

/// A finished placeholder child, so `finish` can move the real one out.
fn spawn_true() -> Child {
    let mut c = Command::new("true").spawn().expect("run true");
    let _ = c.wait();
    c
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
