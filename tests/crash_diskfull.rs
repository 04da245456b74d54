//! A full disk under the state directory, through the binary: the candidate snapshot cannot
//! be written, so the run stops before nginx is signalled, says why, and leaves the site as it
//! was. Needs root to mount a small tmpfs; skips with a printed reason otherwise.

#![allow(clippy::print_stderr)] // the skip reason

mod rel_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use rel_support::{text, Site};

/// A tmpfs mounted on a fresh dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fill the file system holding `dir` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    path
}

#[test]
fn a_full_state_dir_stops_the_run_before_nginx_is_touched() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs for a full state directory needs root");
        return;
    }
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("skipped: mount -t tmpfs failed (no privilege for mounts here)");
        return;
    };
    let mut site = Site::start();
    // The state dir lives on the small tmpfs: record the baseline there, then fill it.
    let state = fs.path().join("state");
    let moved = Command::new("cp")
        .arg("-a")
        .arg(site.state.path())
        .arg(&state)
        .status()
        .unwrap();
    assert!(moved.success());
    site.state = tempfile::TempDir::new_in(fs.path()).unwrap();
    std::fs::remove_dir(site.state.path()).unwrap();
    std::fs::rename(&state, site.state.path()).unwrap();
    let filler = fill(fs.path());
    let workers = site.nginx.worker_pids();
    site.nginx
        .write_http(&format!("{}\n# {}", site.bad_http(), "x".repeat(64 * 1024)));
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert_eq!(site.answer(), Some((200, "good".into())));
    // The failed run cleared its own journal: with room again, the next run just works.
    std::fs::remove_file(filler).unwrap();
    let (_, doc) = site.status();
    assert!(doc["status"]["interrupted"].is_null(), "{doc}");
    site.nginx.write_http(&site.good_http());
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
