//! A full disk under the state directory, through the binary: the candidate snapshot cannot
//! be written, so the run stops before nginx is signalled, says why, and leaves the site as it
//! was; a disk that fills once nginx is signalled stops neither the verification nor the
//! rollback. Needs root to mount a small tmpfs; skips with a printed reason otherwise.

#![allow(clippy::print_stderr)] // the skip reason

mod rel_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// A site whose state directory is on a 1 MiB tmpfs of its own, `init` recorded there.
fn site_on_tmpfs() -> Option<(Site, Tmpfs)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs for a full state directory needs root");
        return None;
    }
    let Some(fs) = Tmpfs::mount("1m") else {
        eprintln!("skipped: mount -t tmpfs failed (no privilege for mounts here)");
        return None;
    };
    let mut site = Site::start();
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
    Some((site, fs))
}

#[test]
fn a_full_state_dir_stops_the_run_before_nginx_is_touched() {
    let Some((site, fs)) = site_on_tmpfs() else {
        return;
    };
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

/// `reload -y` of what is on disk, the state directory's file system filled where the run
/// stops itself at `point`: its output, and the filler to remove.
fn reload_filling_at(site: &Site, fs: &Tmpfs, point: &str) -> (std::process::Output, PathBuf) {
    let mut run = site.spawn_paused(&["reload", "-y"], point);
    if !run.wait_stopped(Duration::from_secs(20)) {
        let out = run.finish(Duration::from_secs(5));
        panic!("the run never reached {point}: {}", text(&out));
    }
    let filler = fill(fs.path());
    run.resume();
    (run.finish(Duration::from_secs(30)), filler)
}

/// r14 u F1: the state directory fills up while the reloaded change is verified. The journal
/// write failed, the run stopped with exit 2 ("usage or environment error", what a script
/// reads as "nothing happened") and nginx kept serving the broken change. A journal phase
/// after the signal is recorded best effort: the change is verified, found broken and rolled
/// back (exit 3), the site answers again, and the output says what could not be recorded.
#[test]
fn a_state_dir_that_fills_up_after_the_signal_still_rolls_a_broken_change_back() {
    let Some((site, fs)) = site_on_tmpfs() else {
        return;
    };
    site.nginx.write_http(&site.bad_http());
    let (out, filler) = reload_filling_at(&site, &fs, "signal-sent");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("could not record the run's phase"), "{said}");
    assert_eq!(site.answer(), Some((200, "good".into())), "{said}");
    std::fs::remove_file(filler).unwrap();
}

/// The same once a good change is verified: recording it as last-good fails. It is live and
/// verified; its journal goes (r15 w F1: left at `verifying`, `recover` rolled the verified
/// change back), the run says so and exits 0, and the next run, with room again, records it.
#[test]
fn a_state_dir_that_fills_up_before_a_verified_change_is_recorded_leaves_it_to_the_next_run() {
    let Some((site, fs)) = site_on_tmpfs() else {
        return;
    };
    let before = site.last_good_id();
    let changed = format!("{}\n# a harmless edit", site.good_http());
    site.nginx.write_http(&changed);
    let (out, filler) = reload_filling_at(&site, &fs, "recheck-after-verify");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("recording it as last-good failed"), "{said}");
    assert_eq!(site.answer(), Some((200, "good".into())), "{said}");
    let (_, doc) = site.status();
    assert!(doc["status"]["interrupted"].is_null(), "{doc}");
    std::fs::remove_file(filler).unwrap();
    let out = site.run(&["reload", "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(site.last_good_id(), before, "recorded by the next run");
    let (code, doc) = site.status();
    assert_eq!(code, Some(0), "{doc}");
}

/// r14 u F7: the state directory fills up between the journal's first write and the
/// snapshot's objects. nginx is untouched (exit 2), and the run leaves no journal: `status`
/// said an interrupted run needed `recover`, and every later run refused until then.
#[test]
fn a_state_dir_that_fills_up_during_the_snapshot_leaves_no_journal() {
    let Some((site, fs)) = site_on_tmpfs() else {
        return;
    };
    let workers = site.nginx.worker_pids();
    site.nginx.write_http(&format!(
        "{}\n{}",
        site.good_http(),
        "# a harmless edit\n".repeat(200)
    ));
    let (out, filler) = reload_filling_at(&site, &fs, "snapshot-object");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    let (_, doc) = site.status();
    assert!(doc["status"]["interrupted"].is_null(), "{doc}");
    std::fs::remove_file(filler).unwrap();
}
