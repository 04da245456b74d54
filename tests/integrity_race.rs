//! Another writer during a run, made deterministic: the binary stops itself right before it
//! reads the file set again (the `SAFE_RELOAD_TEST_PAUSE` hook: `recheck-before-signal`, or
//! `verifying` once the reload is proven), the test writes a file as config management would,
//! and lets the run continue. Before the signal: exit 1, nginx not signalled (same workers),
//! the changed file named, no journal, the candidate recorded as refused, and the run can be
//! repeated. During the reload: rolled back (exit 3), and the other writer's version, which
//! neither the candidate nor last-good holds, is saved as a snapshot of its own and named.

mod rel_support;
mod support;

use std::time::Duration;

use rel_support::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

/// A change that verifies: the good site with a comment.
fn harmless(site: &Site, tag: &str) -> String {
    format!("{}\n# {tag}", site.good_http())
}

#[test]
fn a_file_changed_right_before_the_signal_stops_the_run_with_nginx_untouched() {
    let site = Site::start();
    let workers = site.nginx.worker_pids();
    site.nginx
        .write_http(&harmless(&site, "the operator's change"));
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "recheck-before-signal");
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "never reached the recheck"
    );
    // The other writer: the same file, another content, after it was read and tested.
    let other = harmless(&site, "config management's change");
    site.nginx.write_http(&other);
    run.resume();
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["outcome"], "refused", "{doc:#}");
    let conf = site.nginx.conf.display().to_string();
    assert!(
        doc["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["file"] == conf.as_str()),
        "the changed file is named: {doc:#}"
    );
    assert!(doc["notes"].to_string().contains("Run again"), "{doc:#}");
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert!(!site.journal_exists(), "no journal is left");
    let id = doc["snapshot"].as_str().expect("candidate id");
    assert_eq!(site.snapshot(id)["meta"]["outcome"], "refused");
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).unwrap(),
        site.nginx.render(&other),
        "the other writer's file is left as written"
    );
    // Repeatable: the next run tests and reloads what is on disk now.
    let again = site.run(&["reload", "-y"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_ne!(site.nginx.worker_pids(), workers);
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn a_file_a_glob_starts_matching_before_the_signal_stops_the_run() {
    let site = Site::start();
    let dir = site.nginx.prefix.join("conf.d");
    std::fs::create_dir_all(&dir).unwrap();
    let with_glob = format!("{}\ninclude {}/*.conf;", site.good_http(), dir.display());
    site.adopt(&with_glob);
    let workers = site.nginx.worker_pids();
    site.nginx.write_http(&format!("{with_glob}\n# change"));
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "recheck-before-signal");
    assert!(run.wait_stopped(Duration::from_secs(20)));
    let late = dir.join("late.conf");
    std::fs::write(&late, "# dropped in by another tool\n").unwrap();
    run.resume();
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert!(
        doc["notes"].to_string().contains("late.conf (added)"),
        "{doc:#}"
    );
    assert_eq!(site.nginx.worker_pids(), workers, "nginx was signalled");
    assert!(!site.journal_exists());
}

#[test]
fn a_write_during_the_reload_rolls_back_and_keeps_the_third_version() {
    let site = Site::start();
    let good_conf = site.good_conf();
    let candidate = harmless(&site, "candidate");
    site.nginx.write_http(&candidate);
    // `signal-sent`: nginx was signalled and may be reading the files; they are read again
    // once the reload is proven.
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "signal-sent");
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "never reached signal-sent"
    );
    let third = site.nginx.render(&harmless(&site, "a third version"));
    // Whole, by a rename: nginx may be reading the file right now, and a truncating write
    // could hand it half a file (`no "events" section`), a failed reload rather than a race.
    let tmp = site.nginx.conf.with_extension("third");
    std::fs::write(&tmp, &third).unwrap();
    std::fs::rename(&tmp, &site.nginx.conf).unwrap();
    run.resume();
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let doc = json(&out);
    let rb = &doc["rollback"];
    assert!(
        rb["reason"]
            .as_str()
            .unwrap()
            .contains("changed during the reload"),
        "{doc:#}"
    );
    assert!(rb["reason"].as_str().unwrap().contains("cannot vouch"));
    // last-good is back on disk and live.
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).unwrap(),
        good_conf
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    // The third version was saved before the restore overwrote it, and the output says where.
    let saved = rb["restore"]["displaced"]["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no displaced snapshot: {doc:#}"));
    assert_eq!(rb["restore"]["displaced"]["paths"][0], "nginx.conf");
    assert!(doc["notes"].to_string().contains(saved), "{doc:#}");
    let snap = site.snapshot(saved);
    assert_eq!(snap["meta"]["outcome"], "displaced", "{snap:#}");
    assert!(site.stored(third.as_bytes()), "the third version is stored");
    assert!(site.stored(site.nginx.render(&candidate).as_bytes()));
    assert!(!site.journal_exists());
}

/// A write after the reload was proven, while the checks run: nginx had parsed the tested
/// candidate before its new workers started, so what it runs is what was tested and verified.
/// The change is kept (it was rolled back as "changed during the reload", taking the other
/// writer's edit off the disk), the new content stays on disk, and the run says it is not live.
#[test]
fn a_write_after_the_reload_was_proven_keeps_the_verified_change_and_the_new_content() {
    let site = Site::start();
    let candidate = harmless(&site, "candidate");
    site.nginx.write_http(&candidate);
    let mut run = site.spawn_paused(&["reload", "-y", "--json"], "verifying");
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "never reached verifying"
    );
    let workers = site.nginx.worker_pids();
    let third = site.nginx.render(&harmless(&site, "a third version"));
    std::fs::write(&site.nginx.conf, &third).unwrap();
    run.resume();
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["outcome"], "reloaded", "{doc:#}");
    let snap = doc["snapshot"].as_str().expect("a snapshot").to_string();
    assert!(
        doc["notes"].to_string().contains(&format!(
            "changed after the reload was proven ({} (modified)): nginx runs the tested \
             snapshot {snap}",
            site.nginx.conf.display()
        )),
        "{doc:#}"
    );
    // The other writer's version stays on disk; nginx runs the candidate, not reloaded again.
    assert_eq!(std::fs::read_to_string(&site.nginx.conf).unwrap(), third);
    assert_eq!(site.nginx.worker_pids(), workers);
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(site.last_good_id(), snap);
    assert!(!site.journal_exists());
    // The next run applies it.
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_ne!(site.nginx.worker_pids(), workers);
}

#[test]
fn sigkill_at_the_new_pause_points_is_recovered_with_every_version_kept() {
    let site = Site::start();
    // Killed right before the first recheck: nginx untouched, the edit stays on disk.
    let edit = harmless(&site, "kill at the recheck");
    site.nginx.write_http(&edit);
    let mut run = site.spawn_paused(&["reload", "-y"], "recheck-before-signal");
    assert!(run.wait_stopped(Duration::from_secs(20)));
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(5));
    assert!(site.journal_exists());
    let out = site.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).unwrap(),
        site.nginx.render(&edit)
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert!(!site.journal_exists());

    // A third version written right after the signal; killed right after the proof, before
    // the second recheck; then killed again after that version was saved and before the
    // rollback overwrote it.
    for point in ["recheck-after-proof", "displaced-saved"] {
        site.nginx.write_http(&site.good_http());
        let reset = site.run(&["reload", "-y", "--force"]);
        assert_eq!(reset.status.code(), Some(0), "{}", text(&reset));
        let candidate = site.nginx.render(&site.bad_http());
        site.nginx.write_http(&site.bad_http());
        let mut run = site.spawn_paused(&["reload", "-y"], &format!("signal-sent,{point}"));
        assert!(
            run.wait_stopped(Duration::from_secs(20)),
            "{point}: signal-sent"
        );
        let third = site
            .nginx
            .render(&format!("{}\n# third {point}", site.bad_http()));
        // By rename, as editors and deploy tools write: the master, reloading now, reads one
        // whole version or the other (a truncated file it read mid-write is an [emerg]).
        let tmp = site.nginx.conf.with_extension("third");
        std::fs::write(&tmp, &third).unwrap();
        std::fs::rename(&tmp, &site.nginx.conf).unwrap();
        run.resume();
        if !run.wait_stopped(Duration::from_secs(30)) {
            let out = run.finish(Duration::from_secs(5));
            panic!("{point}: never reached: {}", text(&out));
        }
        run.signal(libc::SIGKILL);
        let _ = run.finish(Duration::from_secs(5));
        assert!(site.journal_exists(), "{point}");
        // Killed after the signal or inside the rollback: either way recover rolls the
        // journal's candidate back.
        let out = site.run(&["recover"]);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{point}: recover: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("your change is kept as snapshot"),
            "{point}: {}",
            text(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&site.nginx.conf).unwrap(),
            site.good_conf(),
            "{point}: recover restores last-good"
        );
        assert_eq!(site.answer(), Some((200, "good".into())), "{point}");
        assert!(!site.journal_exists(), "{point}");
        assert!(site.stored(candidate.as_bytes()), "{point}: candidate kept");
        assert!(site.stored(third.as_bytes()), "{point}: third version kept");
        assert!(site.stored(site.good_conf().as_bytes()), "{point}");
        assert!(site.temp_files().is_empty(), "{point}");
    }
}

/// SIGKILL once the run began signalling nginx and before the journal says the reload is
/// proven: `signalled` is written before the signal (killed there, nginx never got it) and
/// `signal-sent` comes right after it (nginx loads the candidate). Either way the journal says
/// `signalled`, and `recover` treats it as a reloaded candidate nothing vouches for: last-good
/// is restored, reloaded and verified, the candidate is marked rejected, nothing is left
/// pending and last-good stays last-good. Where nginx's workers are older than the run, its
/// signal never reached nginx (r14 u F4): exit 0, saying so, not 3 ("the change made a check
/// fail").
#[test]
fn regression_a_kill_right_after_the_signal_is_rolled_back_by_recover() {
    let site = Site::start();
    let last_good = site.last_good_id();
    // The run starts in a later second than nginx loaded: its journal's start, to the
    // second, then says the workers are older than the run.
    let loaded = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    assert!(support::wait_for(Duration::from_secs(2), || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .is_ok_and(|d| d.as_secs() > loaded)
    }));
    for (point, exit) in [("signalled", 0), ("signal-sent", 3)] {
        let bad = format!("{}\n# killed at {point}", site.bad_http());
        site.nginx.write_http(&bad);
        let mut run = site.spawn_paused(&["reload", "-y"], point);
        assert!(
            run.wait_stopped(Duration::from_secs(20)),
            "{point}: never reached"
        );
        if point == "signal-sent" {
            // The signal went out: nginx runs the candidate and its dead backend.
            assert!(
                support::wait_for(Duration::from_secs(10), || site
                    .answer()
                    .is_some_and(|(code, _)| code == 502)),
                "{point}: nginx never loaded the candidate: {:?}",
                site.answer()
            );
        }
        run.signal(libc::SIGKILL);
        let _ = run.finish(Duration::from_secs(5));
        let (_, doc) = site.status();
        let interrupted = &doc["status"]["interrupted"];
        assert_eq!(interrupted["phase"], "signalled", "{point}: {doc:#}");
        let candidate = interrupted["candidate"]
            .as_str()
            .unwrap_or_else(|| panic!("{point}: no candidate: {doc:#}"))
            .to_string();

        let out = site.run(&["recover"]);
        assert_eq!(out.status.code(), Some(exit), "{point}: {}", text(&out));
        assert_eq!(
            text(&out).contains("killed before nginx loaded its change"),
            point == "signalled",
            "{point}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains(&format!("your change is kept as snapshot {candidate}")),
            "{point}: {}",
            text(&out)
        );
        assert_eq!(site.answer(), Some((200, "good".into())), "{point}");
        assert_eq!(
            std::fs::read_to_string(&site.nginx.conf).unwrap(),
            site.good_conf(),
            "{point}: recover restores last-good"
        );
        assert!(site.stored(site.nginx.render(&bad).as_bytes()), "{point}");
        let history = site.history();
        let snaps = history["history"].as_array().cloned().unwrap_or_default();
        let outcome = |id: &str| {
            snaps
                .iter()
                .find(|s| s["id"] == id)
                .map(|s| s["meta"]["outcome"].clone())
        };
        assert_eq!(outcome(&candidate), Some("rejected".into()), "{point}");
        assert!(
            snaps.iter().all(|s| s["meta"]["outcome"] != "pending"),
            "{point}: {history:#}"
        );
        assert_eq!(site.last_good_id(), last_good, "{point}");
        assert!(!site.journal_exists(), "{point}");
        assert!(site.temp_files().is_empty(), "{point}");
    }
}
