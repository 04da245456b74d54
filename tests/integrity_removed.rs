//! A configuration file removed while a run is in progress, after it was read and tested and
//! before the signal, made deterministic with the `SAFE_RELOAD_TEST_PAUSE` hook (the run stops
//! itself at `recheck-before-signal`, the test removes the file, the run goes on): exit 1, the
//! removed file named ("... was removed after it was tested"), nothing signalled (the same
//! workers), no journal, no panic, nginx still serving what it served. A file a glob picked
//! up, a file named by a literal `include` (the configuration no longer loads) and the main
//! file itself. Removed during the reload (after the signal, before the files are read again):
//! rolled back to last-good, the removed file named in the reason and back on disk.

mod rel_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rel_support::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// The site's server in `PREFIX/conf.d/site.conf`, included as `include`, recorded as
/// last-good; then a harmless change to it, so the run has something to reload.
fn site_in(site: &Site, include: impl Fn(&Path) -> String) -> PathBuf {
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("site.conf");
    std::fs::write(&file, site.good_http()).unwrap();
    site.adopt(&include(&dir));
    std::fs::write(&file, format!("{}\n# a change", site.good_http())).unwrap();
    file
}

/// Remove `victim` while the run waits right before the signal; the run's output.
fn removed_before_the_signal(site: &Site, victim: &Path) -> std::process::Output {
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "recheck-before-signal");
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "never reached the recheck"
    );
    std::fs::remove_file(victim).unwrap();
    run.resume();
    run.finish(Duration::from_secs(20))
}

/// Exit 1 naming `victim` as removed after the test, nginx not signalled and serving the
/// good site, no journal.
fn assert_refused_naming(site: &Site, out: &std::process::Output, victim: &Path, workers: &[i32]) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    let doc = json(out);
    assert_eq!(doc["outcome"], "refused", "{doc:#}");
    let victim = victim.display().to_string();
    let named = doc["problems"].as_array().is_some_and(|p| {
        p.iter().any(|p| {
            p["file"] == victim.as_str()
                && p["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("removed after it was tested"))
        })
    });
    assert!(named, "the removed file is named: {doc:#}");
    let notes = doc["notes"].to_string();
    assert!(notes.contains("nginx was not signalled"), "{doc:#}");
    assert!(notes.contains("Run again"), "{doc:#}");
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert!(!site.journal_exists(), "no journal is left");
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn a_file_a_glob_included_removed_before_the_signal_stops_the_run() {
    let site = Site::start();
    let file = site_in(&site, |dir| format!("include {}/*.conf;", dir.display()));
    let workers = site.nginx.worker_pids();
    let out = removed_before_the_signal(&site, &file);
    assert_refused_naming(&site, &out, &file, &workers);
}

#[test]
fn a_literally_included_file_removed_before_the_signal_stops_the_run() {
    let site = Site::start();
    let file = site_in(&site, |dir| format!("include {}/site.conf;", dir.display()));
    let workers = site.nginx.worker_pids();
    let out = removed_before_the_signal(&site, &file);
    assert_refused_naming(&site, &out, &file, &workers);
    // Repeatable once the file is back: the next run tests and reloads it.
    std::fs::write(&file, site.good_http()).unwrap();
    let again = site.run(&["reload", "-y"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn the_main_file_removed_before_the_signal_stops_the_run() {
    let site = Site::start();
    let conf = site.nginx.conf.clone();
    let kept = std::fs::read_to_string(&conf).unwrap();
    site.nginx
        .write_http(&format!("{}\n# a change", site.good_http()));
    let workers = site.nginx.worker_pids();
    let out = removed_before_the_signal(&site, &conf);
    // Put it back first, so the nginx under test can be stopped as it was started.
    std::fs::write(&conf, &kept).unwrap();
    assert_refused_naming(&site, &out, &conf, &workers);
}

#[test]
fn a_file_removed_during_the_reload_is_rolled_back_to_last_good() {
    removed_during_the_reload(|dir| format!("include {}/*.conf;", dir.display()));
}

#[test]
fn a_literally_included_file_removed_during_the_reload_is_rolled_back_to_last_good() {
    removed_during_the_reload(|dir| format!("include {}/site.conf;", dir.display()));
}

/// Removed once nginx was signalled, before the reload was proven: the verdict cannot vouch
/// for what nginx loaded, so it is rolled back (exit 3) and last-good's file is back and served.
fn removed_during_the_reload(include: impl Fn(&Path) -> String) {
    let site = Site::start();
    let file = site_in(&site, include);
    // `signal-sent`: nginx was signalled; the files are read again once the reload is proven.
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "signal-sent");
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "never reached signal-sent"
    );
    std::fs::remove_file(&file).unwrap();
    run.resume();
    let out = run.finish(Duration::from_secs(30));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    let doc = json(&out);
    let reason = doc["rollback"]["reason"].as_str().unwrap_or_default();
    // The master parses the tree when the signal reaches it: before the removal, the recheck
    // after the proof names the file; after it, nginx's [emerg] (open() ... failed) does.
    let emerg = reason.contains("[emerg]") && doc.to_string().contains(&file.display().to_string());
    assert!(
        reason.contains(&format!("{} (removed)", file.display())) || emerg,
        "{doc:#}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), site.good_http());
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(!site.journal_exists());
}
