//! SIGINT and SIGTERM sent to a real run at known moments (the binary stops itself at a named
//! point through the `SAFE_RELOAD_TEST_PAUSE` test hook; the test signals it there and lets it
//! continue). Before the reload: exit 130 and nothing changed (same workers, same answer, no
//! journal). After the reload: the run finishes verification or rollback and exits with the
//! matching status, printing what is in progress for every signal, the second one included.

mod rel_support;
mod support;

use std::process::Stdio;
use std::time::Duration;

use rel_support::*;

/// Start `reload -y` on `http`, stopping at each of `points`.
fn start(site: &Site, http: &str, points: &str) -> Proc {
    site.nginx.write_http(http);
    Proc(
        site.cmd(&["reload", "-y"])
            .env("SAFE_RELOAD_TEST_PAUSE", points)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start safe-reload"),
    )
}

/// Wait for the stop, deliver `sig`, continue.
fn signal_at_stop(run: &mut Proc, sig: i32, what: &str) {
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "never stopped at {what}"
    );
    run.signal(sig);
    run.signal(libc::SIGCONT);
}

#[test]
fn interrupt_before_the_reload_exits_130_with_nothing_changed() {
    let site = Site::start();
    for (sig, point) in [(libc::SIGINT, "started"), (libc::SIGTERM, "snapshotted")] {
        let workers = site.nginx.worker_pids();
        let mut run = start(&site, &site.bad_http(), point);
        signal_at_stop(&mut run, sig, point);
        let out = run.finish(Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(130), "{point}: {}", text(&out));
        assert_eq!(
            site.nginx.worker_pids(),
            workers,
            "{point}: nginx was signalled"
        );
        assert_eq!(site.answer(), Some((200, "good".into())), "{point}");
        let (code, doc) = site.status();
        assert!(doc["status"]["interrupted"].is_null(), "{point}: {doc}");
        // Only the drift of the edit on disk is left, and drift alone does not fail status.
        assert_eq!(code, Some(0), "{point}: {doc}");
        // A candidate snapshotted before the interrupt was never loaded: not left "pending".
        let out = site.run(&["history", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history JSON");
        let outcomes: Vec<&str> = (doc["history"].as_array().expect("history").iter())
            .filter_map(|s| s["meta"]["outcome"].as_str())
            .collect();
        assert!(!outcomes.contains(&"pending"), "{point}: {outcomes:?}");
        if point == "snapshotted" {
            assert!(outcomes.contains(&"interrupted"), "{point}: {outcomes:?}");
        }
    }
}

/// SIGKILL after the candidate was snapshotted and before nginx was signalled: `recover` has
/// nothing to undo, and the candidate, never loaded, is marked `interrupted`, not left
/// `pending` in `history` for good.
#[test]
fn a_candidate_killed_before_the_signal_is_not_left_pending_by_recover() {
    let site = Site::start();
    let mut run = start(&site, &site.bad_http(), "snapshotted");
    assert!(run.wait_stopped(Duration::from_secs(20)), "never stopped");
    run.signal(libc::SIGKILL);
    let out = run.finish(Duration::from_secs(5));
    assert_eq!(out.status.code(), None, "killed: {}", text(&out));
    let outcomes = || {
        let out = site.run(&["history", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("history JSON");
        (doc["history"].as_array().expect("history").iter())
            .filter_map(|s| s["meta"]["outcome"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert!(
        outcomes().iter().any(|o| o == "pending"),
        "{:?}",
        outcomes()
    );
    let out = site.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(site.answer(), Some((200, "good".into())));
    let now = outcomes();
    assert!(!now.iter().any(|o| o == "pending"), "{now:?}");
    assert!(now.iter().any(|o| o == "interrupted"), "{now:?}");
}

#[test]
fn interrupts_after_the_reload_finish_the_rollback_and_say_so() {
    let site = Site::start();
    let mut run = start(&site, &site.bad_http(), "reloaded,rolling_back");
    signal_at_stop(&mut run, libc::SIGINT, "reloaded");
    signal_at_stop(&mut run, libc::SIGINT, "rolling_back");
    let out = run.finish(Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr.contains("finishing verification"),
        "first interrupt: {stderr}"
    );
    assert!(
        stderr.contains("restoring the last good configuration"),
        "second interrupt: {stderr}"
    );
    assert_eq!(site.answer(), Some((200, "good".into())));
    assert_eq!(site.status().0, Some(0));
}

#[test]
fn sigterm_during_verification_of_a_good_change_finishes_with_0() {
    let site = Site::start();
    let http = format!("{}\n# a harmless change", site.good_http());
    let mut run = start(&site, &http, "verifying");
    signal_at_stop(&mut run, libc::SIGTERM, "verifying");
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("finishing verification"));
    let (code, doc) = site.status();
    assert_eq!(code, Some(0), "{doc}");
    assert!(doc["status"]["interrupted"].is_null(), "{doc}");
}

/// r13 Q F5: `status` while another run holds the lock said nothing of it (`rollback` and
/// `recover` exit 2 naming it). It names the run now, read from the kernel's lock table
/// without taking the lock, and says nothing once the run is over.
#[test]
fn status_names_a_run_in_progress() {
    let site = Site::start();
    site.nginx
        .write_http(&format!("{}\n# a comment", site.good_http()));
    let mut run = site.spawn_paused(&["reload", "-y"], "verifying");
    assert!(
        run.wait_stopped(Duration::from_secs(20)),
        "the run never reached verifying"
    );
    let pid = run.pid();
    let out = site.run(&["status"]);
    let said = text(&out);
    assert!(
        said.contains(&format!("a run is in progress: pid {pid}")) && said.contains("reload -y"),
        "{said}"
    );
    // r14 u F2: its journal is its own, not an interrupted run's to recover.
    assert!(said.contains("now verifying"), "{said}");
    assert!(
        !said.contains("interrupted") && !said.contains("recover"),
        "{said}"
    );
    // r15 w F6: nor a reload outside safe-reload, with `rollback` to undo it.
    assert!(
        !said.contains("outside safe-reload") && !said.contains("rollback"),
        "{said}"
    );
    assert_eq!(out.status.code(), Some(0), "{said}");
    let (_, doc) = site.status();
    assert!(doc["status"]["run_in_progress"].is_string(), "{doc}");
    assert!(doc["status"]["interrupted"].is_null(), "{doc}");
    run.resume();
    let done = run.finish(Duration::from_secs(30));
    assert_eq!(done.status.code(), Some(0), "{}", text(&done));
    let (code, doc) = site.status();
    assert_eq!(code, Some(0), "{doc}");
    assert!(doc["status"]["run_in_progress"].is_null(), "{doc}");
}
