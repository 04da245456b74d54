//! Faults made real, through the binary with a real nginx: a read-only configuration
//! directory and a bind-mounted file are found before the reload (exit 1, nginx not
//! signalled), not during the rollback; a rollback with the state directory on another file
//! system than the configuration; a disk that fills during the restore (exit 4, the failing
//! file named, every file whole, no temp file left; `recover` finishes once there is room).
//!
//! The read-only and bind mounts are made inside a private mount namespace (`unshare -m`) that
//! only the safe-reload process sees. The full disk is a small tmpfs that nginx must read too,
//! so it is mounted in the test's own namespace and unmounted on drop. All of it needs root:
//! each test says so on stderr and returns when unprivileged.

#![allow(clippy::print_stderr)] // the skip reasons

mod rel_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rel_support::*;

fn root_or_skip(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: {what} needs root (mounts)");
    }
    root
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// `safe-reload FLAGS ARGS` in a private mount namespace after `setup` (a shell snippet; `$D`
/// is `dir`, `$F` is `file`).
fn in_namespace(site: &Site, setup: &str, dir: &Path, file: &Path, args: &[&str]) -> Output {
    let script = format!("set -e; {setup}; exec \"$@\"");
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(BIN)
        .args(site.flags())
        .args(args)
        .env("D", dir)
        .env("F", file)
        .env_remove("SAFE_RELOAD_TEST_PAUSE")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare")
}

/// The site's server in `PREFIX/conf.d/site.conf`, included by a glob, as last-good.
fn site_in_conf_d(site: &Site) -> PathBuf {
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("site.conf");
    std::fs::write(&file, site.good_http()).unwrap();
    site.adopt(&format!("include {}/*.conf;", dir.display()));
    file
}

#[test]
fn a_read_only_configuration_directory_is_refused_before_the_reload() {
    if !root_or_skip("a read-only bind mount") {
        return;
    }
    let site = Site::start();
    let file = site_in_conf_d(&site);
    let dir = file.parent().unwrap().to_path_buf();
    std::fs::write(&file, format!("{}\n# change", site.good_http())).unwrap();
    let workers = site.nginx.worker_pids();
    let setup = "mount --bind \"$D\" \"$D\"; mount -o remount,bind,ro \"$D\"";
    let out = in_namespace(&site, setup, &dir, &file, &["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems = json(&out)["problems"].to_string();
    assert!(problems.contains(&dir.display().to_string()), "{problems}");
    assert!(problems.contains("Read-only file system"), "{problems}");
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert!(!site.journal_exists());
}

#[test]
fn a_bind_mounted_file_is_refused_before_the_reload() {
    if !root_or_skip("a bind-mounted file") {
        return;
    }
    let site = Site::start();
    let file = site_in_conf_d(&site);
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), format!("{}\n# mounted", site.good_http())).unwrap();
    let workers = site.nginx.worker_pids();
    let setup = format!("mount --bind {} \"$F\"", source.path().display());
    let out = in_namespace(
        &site,
        &setup,
        file.parent().unwrap(),
        &file,
        &["reload", "-y", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problems = json(&out)["problems"].to_string();
    assert!(problems.contains("mount point"), "{problems}");
    assert!(problems.contains(&file.display().to_string()), "{problems}");
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
}

#[test]
fn a_rollback_with_the_state_directory_on_another_file_system() {
    if !root_or_skip("a tmpfs state directory") {
        return;
    }
    let site = Site::start();
    site.nginx.write_http(&site.good_http());
    // A fresh tmpfs over the state directory: a baseline recorded there, then a bad change.
    let state = site.state.path().to_path_buf();
    let script = "set -e; mount -t tmpfs -o size=8m,mode=0700 tmpfs \"$D\"; \
                  \"$@\" init >/dev/null; \
                  printf '%s' \"$BAD\" > \"$F\"; exec \"$@\" reload -y --json";
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(BIN)
        .args(site.flags())
        .env("D", &state)
        .env("F", &site.nginx.conf)
        .env("BAD", site.bad_conf())
        .env_remove("SAFE_RELOAD_TEST_PAUSE")
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(json(&out)["outcome"], "rolled_back");
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).unwrap(),
        site.good_conf()
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
}

/// A small tmpfs on `dir` in this namespace (nginx reads it too), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join(".filler");
    let mut f = std::fs::File::create(&path).expect("create filler");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_during_the_restore_names_the_file_and_recover_finishes() {
    if !root_or_skip("a full tmpfs") {
        return;
    }
    let site = Site::start();
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    let Some(_fs) = Tmpfs::mount(&dir, "64k") else {
        eprintln!("skipped: mount -t tmpfs failed here");
        return;
    };
    let file = site_in_conf_d(&site);
    // The good version is longer, so restoring it needs room the filler takes.
    let bad = format!("{}\n", site.bad_http());
    std::fs::write(&file, &bad).unwrap();
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "rolling_back");
    assert!(
        run.wait_stopped(Duration::from_secs(30)),
        "never rolled back"
    );
    let filler = fill(&dir);
    run.resume();
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let doc = json(&out);
    let failed = doc["rollback"]["restore"]["failed"].to_string();
    assert!(failed.contains("conf.d/site.conf"), "{doc:#}");
    assert!(failed.contains("No space left"), "{failed}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        bad,
        "the file is whole"
    );
    assert!(site.temp_files().is_empty(), "{:?}", site.temp_files());
    assert!(site.journal_exists(), "the run is left for recover");

    std::fs::remove_file(&filler).unwrap();
    let out = site.run(&["recover"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), site.good_http());
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(!site.journal_exists());
}
