//! SIGKILL at every step of a run that ends in rollback, from the first snapshot write to the
//! last health request. The binary stops itself at a named point (the `SAFE_RELOAD_TEST_PAUSE`
//! test hook: SIGSTOP right after that journal phase or write is durable); the test SIGKILLs it
//! there. After each kill: nginx.conf is whole (the old or the new content, never a mix), no
//! temp file is left in the config tree (but by a kill inside a restore's write, which recover
//! sweeps), `status` reports the interrupted run, and `recover` leaves nginx serving the good
//! configuration (checked by HTTP through nginx) and clears the journal. A few more kills at delays spread over the run's duration cover the moments
//! between the named points.

#![allow(clippy::print_stderr)] // timings, for the report

mod rel_support;
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use rel_support::*;

/// The pause points in the order a rolling-back run reaches them.
const POINTS: &[&str] = &[
    "started",
    "snapshot-object",
    "snapshotted",
    "reloading",
    "signalled",
    "signal-sent",
    "reloaded",
    "verifying",
    "rolling_back",
    "restore-file",
    "restored",
    "rollback-verifying",
];

/// After a kill: files whole, no temp files, status sees it (when `journal` is expected),
/// recover brings back the good site and clears the journal. With `good_on_disk`, nginx may
/// have run the bad change, so recover must also have put the good files back; before nginx
/// is signalled the operator's edit stays on disk, untouched, while nginx serves the old one.
fn check_after_kill(site: &Site, what: &str, bad: &str, journal: bool, good_on_disk: Option<bool>) {
    let conf = std::fs::read_to_string(&site.nginx.conf).expect("read nginx.conf");
    assert!(
        conf == site.good_conf() || conf == bad,
        "{what}: nginx.conf is neither the old nor the new content:\n{conf}"
    );
    let (code, doc) = site.status();
    let interrupted = &doc["status"]["interrupted"];
    // A kill between an atomic write's temp file and its rename leaves the temp file: only a
    // restore writes into the tree, and recover's restore sweeps it (checked below).
    if interrupted["phase"] != "rolling_back" {
        assert_eq!(
            site.temp_files(),
            Vec::<std::path::PathBuf>::new(),
            "{what}"
        );
    }
    if journal {
        assert_ne!(code, Some(0), "{what}: status must fail: {doc}");
        assert!(interrupted.is_object(), "{what}: status JSON: {doc}");
        assert!(interrupted["phase"].is_string(), "{what}: {doc}");
        // Once the run reloaded nginx, what nginx runs is the run's own doing, which recover
        // verifies or undoes: never "reloaded outside safe-reload".
        let reloaded = ["reloaded", "verifying", "rolling_back", "restored"];
        if reloaded.iter().any(|p| interrupted["phase"] == *p) {
            let st = &doc["status"];
            assert!(st["loaded_outside"].is_null(), "{what}: {doc}");
            assert!(st["not_loaded"].is_null(), "{what}: {doc}");
            assert!(st["interrupted_reload"].is_string(), "{what}: {doc}");
        }
    }
    let out = site.run(&["recover", "--json"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{what}: recover: {}",
        text(&out)
    );
    assert_eq!(
        site.answer(),
        Some((200, "good".to_string())),
        "{what}: after recover: {}",
        text(&out)
    );
    let conf = std::fs::read_to_string(&site.nginx.conf).unwrap();
    match good_on_disk {
        Some(true) => assert_eq!(conf, site.good_conf(), "{what}: good files after recover"),
        Some(false) => assert_eq!(conf, bad, "{what}: the edit is kept on disk"),
        None => assert!(conf == site.good_conf() || conf == bad, "{what}"),
    }
    assert!(site.temp_files().is_empty(), "{what}: after recover");
    let (code, doc) = site.status();
    assert_eq!(code, Some(0), "{what}: status after recover: {doc}");
    assert!(doc["status"]["interrupted"].is_null(), "{what}: {doc}");
}

/// Start the bad change's reload with the pause hook at `point`. The change carries `tag` as
/// a comment so its content is new to the store each time (objects are stored once by hash).
fn start_run(site: &Site, point: Option<&str>, tag: &str) -> (Proc, String) {
    let http = format!("{}\n# {tag}", site.bad_http());
    site.nginx.write_http(&http);
    let mut cmd = site.cmd(&["reload", "-y"]);
    if let Some(p) = point {
        cmd.env("SAFE_RELOAD_TEST_PAUSE", p);
    }
    let run = Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start safe-reload"),
    );
    (run, site.nginx.render(&http))
}

#[test]
fn sigkill_at_each_phase_of_a_rolling_back_run_is_recovered() {
    let site = Site::start();
    // The uninterrupted run: it must end in rollback, or the points below are not all reached.
    site.nginx.write_http(&site.bad_http());
    let t = Instant::now();
    let out = site.run(&["reload", "-y"]);
    let full_run = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(site.answer(), Some((200, "good".into())));
    eprintln!("full rolling-back run: {full_run:?}");
    for point in POINTS {
        let (mut run, bad) = start_run(&site, Some(point), point);
        assert!(
            run.wait_stopped(Duration::from_secs(20)),
            "the run never reached {point}"
        );
        run.signal(libc::SIGKILL);
        let out = run.finish(Duration::from_secs(5));
        assert_eq!(out.status.code(), None, "{point}: killed by a signal");
        let touched =
            POINTS.iter().position(|p| p == point) >= POINTS.iter().position(|p| *p == "reloading");
        let t = Instant::now();
        check_after_kill(&site, point, &bad, true, Some(touched));
        eprintln!("{point}: checks and recover took {:?}", t.elapsed());
    }
}

#[test]
fn sigkill_at_delays_across_the_run_is_recovered() {
    let site = Site::start();
    site.nginx.write_http(&site.bad_http());
    let t = Instant::now();
    let out = site.run(&["reload", "-y"]);
    let full = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    const N: u32 = 3;
    for i in 0..N {
        let delay = full * (2 * i + 1) / (2 * N);
        let (run, bad) = start_run(&site, None, &format!("delay {i}"));
        std::thread::sleep(delay);
        run.signal(libc::SIGKILL);
        let out = run.finish(Duration::from_secs(5));
        // A run may finish just before the kill: then there is no journal to see.
        let killed = out.status.code().is_none();
        check_after_kill(&site, &format!("kill after {delay:?}"), &bad, false, None);
        eprintln!("kill after {delay:?} of {full:?}: killed={killed}");
    }
}

/// The snapshots in `history --json`, newest first.
fn history(site: &Site) -> Vec<serde_json::Value> {
    let out = site.run(&["history", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history JSON");
    doc["history"].as_array().cloned().unwrap_or_default()
}

fn outcome_of(history: &[serde_json::Value], id: &str) -> String {
    history
        .iter()
        .find(|s| s["id"] == id)
        .and_then(|s| s["meta"]["outcome"].as_str())
        .unwrap_or("missing")
        .to_string()
}

/// A kill while the run rolls back is finished by `recover` exactly as the journal says: the
/// journal's candidate is the rejected snapshot (marked before the restore begins), a file the
/// change added leaves the tree and is kept in that snapshot, last-good stays last-good, and
/// nothing new is snapshotted.
#[test]
fn regression_recover_finishes_the_interrupted_rollback_with_the_journals_candidate() {
    let site = Site::start();
    let last_good = std::fs::read_to_string(site.state.path().join("last-good"))
        .expect("init wrote last-good")
        .trim()
        .to_string();
    let added = site.nginx.prefix.join("added.conf");
    for point in [
        "rolling_back",
        "restore-file",
        "restored",
        "rollback-verifying",
        "rolled_back",
    ] {
        // The change adds a file (included from nginx.conf) and points the site at the bad
        // backend; the comment makes its content new to the store each time.
        std::fs::write(&added, format!("# added by the change, {point}\n")).unwrap();
        let http = format!("{}\ninclude {};", site.bad_http(), added.display());
        site.nginx.write_http(&http);
        let mut run = Proc(
            site.cmd(&["reload", "-y"])
                .env("SAFE_RELOAD_TEST_PAUSE", point)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start safe-reload"),
        );
        assert!(
            run.wait_stopped(Duration::from_secs(20)),
            "the run never reached {point}"
        );
        run.signal(libc::SIGKILL);
        let out = run.finish(Duration::from_secs(5));
        assert_eq!(out.status.code(), None, "{point}: killed by a signal");
        let (_, status) = site.status();
        let candidate = status["status"]["interrupted"]["candidate"]
            .as_str()
            .unwrap_or_else(|| panic!("{point}: the journal names the candidate: {status}"))
            .to_string();
        let before = history(&site);
        assert_eq!(
            outcome_of(&before, &candidate),
            "rejected",
            "{point}: the candidate is marked rejected before the restore begins"
        );

        let out = site.run(&["recover", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{point}: recover JSON ({e}): {}", text(&out)));
        let expected = if point == "rolled_back" { 0 } else { 3 };
        assert_eq!(out.status.code(), Some(expected), "{point}: {}", text(&out));
        if expected == 3 {
            assert_eq!(doc["outcome"], "rolled_back", "{point}: {doc}");
            assert_eq!(
                doc["rollback"]["rejected"], candidate,
                "{point}: the kept change is the journal's candidate: {doc}"
            );
            assert_eq!(doc["rollback"]["restored_to"], last_good, "{point}: {doc}");
        }
        assert_eq!(
            site.answer(),
            Some((200, "good".into())),
            "{point}: {}",
            text(&out)
        );
        assert_eq!(
            std::fs::read_to_string(&site.nginx.conf).unwrap(),
            site.good_conf(),
            "{point}: last-good's files are back"
        );
        assert!(
            !added.exists(),
            "{point}: the file the change added left the tree"
        );
        let after = history(&site);
        assert_eq!(
            after.len(),
            before.len(),
            "{point}: recover took no new snapshot"
        );
        assert_eq!(outcome_of(&after, &candidate), "rejected", "{point}");
        let kept = after
            .iter()
            .find(|s| s["id"] == candidate)
            .map(|s| s["files"].to_string())
            .unwrap_or_default();
        assert!(
            kept.contains("added.conf"),
            "{point}: the added file is kept in the rejected snapshot: {kept}"
        );
        assert_eq!(
            std::fs::read_to_string(site.state.path().join("last-good"))
                .unwrap()
                .trim(),
            last_good,
            "{point}: last-good stays last-good"
        );
        let (code, doc) = site.status();
        assert_eq!(code, Some(0), "{point}: status after recover: {doc}");
    }
}

/// #16: `edit` promises the file back byte for byte unless the edit verifies. An edit run
/// killed before nginx is signalled (at `snapshotted`) left the unverified edit on disk, and
/// `recover` said the files were as the operator left them: the next reload would have put
/// the 502 live. `recover` puts the file back from the journal and says where the edit is kept.
#[test]
fn regression_recover_after_a_killed_edit_puts_the_file_back() {
    let site = Site::start();
    let conf = site.nginx.conf.display().to_string();
    let editor = format!("sed -i s|{}|{}|", site.good.host_port(), site.bad.addr);
    let mut run = Proc(
        site.cmd(&["edit", &conf, "-y"])
            .env("EDITOR", editor)
            .env("SAFE_RELOAD_TEST_PAUSE", "snapshotted")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start safe-reload edit"),
    );
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "the edit never reached snapshotted"
    );
    run.signal(libc::SIGKILL);
    let out = run.finish(Duration::from_secs(5));
    assert_eq!(out.status.code(), None, "killed by a signal");
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).unwrap(),
        site.bad_conf(),
        "the killed edit left its change in the file"
    );

    let out = site.run(&["recover"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).unwrap(),
        site.good_conf(),
        "the file is as it was before the edit: {all}"
    );
    let edits: Vec<_> = std::fs::read_dir(site.state.path().join("edits"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert!(
        all.contains(&edits[0].display().to_string()),
        "recover names where the edit is kept: {all}"
    );
    assert!(
        std::fs::read_to_string(&edits[0])
            .unwrap()
            .contains(&site.bad.addr.to_string()),
        "the kept copy holds the edit"
    );
    assert!(!site.journal_exists(), "{all}");
    assert_eq!(site.answer(), Some((200, "good".into())), "{all}");
    // What is on disk is what nginx runs: the next reload has nothing to do.
    let out = site.run(&["reload", "-y", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("reload JSON");
    assert_eq!(doc["outcome"], "unchanged", "{doc}");
    assert_eq!(site.answer(), Some((200, "good".into())));
}

/// #17: a run killed at `verifying` leaves its unverified candidate live; with nginx stopped
/// since, `recover` failed with "nginx is not running … (nothing was changed)", left the
/// candidate on disk (starting nginx served the 502), and had already written its own pid and
/// command over the interrupted run's. Now a recover that does not finish leaves the record
/// the interrupted run's, and with nginx down recover puts last-good's files back for nginx to
/// read when it starts.
#[test]
fn regression_recover_with_nginx_down_restores_last_good_and_keeps_the_record() {
    let mut site = Site::start();
    let (mut run, bad) = start_run(&site, Some("verifying"), "down");
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "the run never reached verifying"
    );
    run.signal(libc::SIGKILL);
    let out = run.finish(Duration::from_secs(5));
    assert_eq!(out.status.code(), None, "killed by a signal");
    let (_, status) = site.status();
    let record = status["status"]["interrupted"].clone();
    assert_eq!(record["phase"], "verifying", "{status}");
    assert!(
        record["command"]
            .as_str()
            .unwrap_or_default()
            .contains("reload -y"),
        "{status}"
    );

    // A recover killed before it finishes leaves the interrupted run's pid and command. It
    // rolls the unjudged candidate back, so it is killed as its rollback begins.
    let mut again = site.spawn_paused(&["recover", "-y"], "rolling_back");
    assert!(
        again.wait_stopped(Duration::from_secs(20)),
        "recover never reached rolling_back"
    );
    again.signal(libc::SIGKILL);
    let _ = again.finish(Duration::from_secs(5));
    let (_, status) = site.status();
    let now = &status["status"]["interrupted"];
    assert_eq!(now["pid"], record["pid"], "{status}");
    assert_eq!(now["command"], record["command"], "{status}");
    assert_eq!(now["run_id"], record["run_id"], "{status}");
    let candidate = now["candidate"]
        .as_str()
        .expect("the candidate")
        .to_string();

    site.nginx.stop();
    // The killed recover had put last-good's files back before its rollback began, or not.
    let conf = std::fs::read_to_string(&site.nginx.conf).unwrap();
    assert!(conf == bad || conf == site.good_conf(), "{conf}");
    let out = site.run(&["recover", "-y", "--json"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(4), "{all}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("recover JSON");
    assert_eq!(doc["outcome"], "not_running", "{doc}");
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains("nginx is not running") && notes.contains("reads them when it starts"),
        "{notes}"
    );
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).unwrap(),
        site.good_conf(),
        "last-good's files are back: {all}"
    );
    assert!(!site.journal_exists(), "the run is finished: {all}");
    assert_eq!(site.snapshot(&candidate)["meta"]["outcome"], "rejected");

    // nginx started on what is on disk serves the good site.
    site.nginx.restart();
    assert_eq!(site.answer(), Some((200, "good".into())));
    let (code, status) = site.status();
    assert_eq!(code, Some(0), "{status}");
}

/// A run killed while it verified: `recover` rolls the unverified change back, and its
/// headline says why. It said "the change failed after the reload"; nothing had failed.
/// `reload -y` of the change on disk, SIGKILLed where it stops itself at `point`.
fn killed_at(site: &Site, point: &str) {
    let mut run = site.spawn_paused(&["reload", "-y"], point);
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "the run never reached {point}"
    );
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(5));
}

#[test]
fn recover_after_a_kill_while_verifying_says_the_change_was_not_verified_not_that_it_failed() {
    let site = Site::start();
    site.nginx.write_http(&site.bad_http());
    killed_at(&site, "verifying");
    // The phase as the journal names it (r14 u F9: `Verifying`, as the code spells it).
    let status = text(&site.run(&["status"]));
    assert!(status.contains("stopped during verifying"), "{status}");
    let out = site.run(&["recover", "-y"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(
            "rolled back: the run that reloaded the change was killed before it verified it"
        ) && !said.contains("the change failed after the reload"),
        "{said}"
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
}

/// r12 N F3: a long-poll location that never answers within `--health-timeout`, before any
/// change or after it. A run killed while it verified is rolled back by `recover`, which has no
/// baseline to compare with: that location's timeout is a slow site's (not verified), not a
/// rollback that left things worse, so `recover` exits 3, not 4 ("an operator must act").
#[test]
fn recover_does_not_page_for_a_location_that_is_only_slower_than_the_health_timeout() {
    let site = Site::start();
    let slow = support::HttpBackend::start_slow(
        std::net::SocketAddr::new(site.addr.ip(), 0),
        "poll",
        // Longer than a check asked again waits (four times --health-timeout).
        Duration::from_secs(3),
    );
    let http = |up: &str| {
        format!(
            "server {{ listen {}; location / {{ proxy_pass http://{up}; }} \
             location /poll {{ proxy_pass http://{}; proxy_read_timeout 60s; }} }}",
            site.addr,
            slow.host_port()
        )
    };
    let args = |cmd: &str| {
        let mut c = std::process::Command::new(BIN);
        c.arg(cmd)
            .args(["--nginx", support::NGINX])
            .args(site.nginx.flags())
            .arg("--state-dir")
            .arg(site.state.path())
            .args([
                "--health-timeout",
                "500ms",
                "--no-shadow",
                "-y",
                "--color",
                "never",
            ])
            .env_remove("SAFE_RELOAD_TEST_PAUSE")
            .stdin(Stdio::null());
        c
    };
    site.nginx.write_http(&http(&site.good.host_port()));
    // Made last-good with only `/` checked: /poll was `/`'s before it, and answered at once.
    let out = (args("reload").arg("--health"))
        .arg(format!("http://{}/", site.addr))
        .output()
        .expect("run safe-reload");
    assert_eq!(out.status.code(), Some(0), "adopt: {}", text(&out));
    site.nginx.write_http(&http(&site.bad.addr.to_string()));
    let mut run = Proc(
        args("reload")
            .env("SAFE_RELOAD_TEST_PAUSE", "verifying")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start safe-reload"),
    );
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "the run never reached verifying"
    );
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(5));
    assert_eq!(
        support::http_get(site.addr, "site", "/").map(|a| a.0).ok(),
        Some(502)
    );
    let out = args("recover").output().expect("run safe-reload");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        !said.contains("an operator must act")
            && !said.contains("worse than before")
            && said.contains("did not answer within --health-timeout"),
        "{said}"
    );
    assert_eq!(site.answer(), Some((200, "good".into())), "{said}");
    let (code, doc) = site.status();
    assert_eq!(code, Some(0), "status after recover: {doc}");
}

/// r13 Q F6: a run killed while it rolled back had verified its change and found it failing.
/// `recover` finishes that rollback, and says so, not that the run "was killed before it
/// verified" the change.
#[test]
fn recover_after_a_kill_during_the_rollback_says_the_change_had_failed() {
    let site = Site::start();
    site.nginx.write_http(&site.bad_http());
    killed_at(&site, "rolling_back");
    let out = site.run(&["recover", "-y"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("the change had failed after the reload")
            && !said.contains("killed before it verified"),
        "{said}"
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
}
