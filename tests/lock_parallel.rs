//! Three runs of the real binary at once on one state directory: the one holding the lock
//! reloads, one without `--wait` exits 2 naming the holder's pid, one with `--wait` blocks until
//! the first finishes and then runs. A lock left by a SIGKILLed run does not block the next
//! one (the kernel drops a dead process's flock); its unfinished journal does, until `recover`.

mod rel_support;
mod support;

use std::process::Stdio;
use std::time::Duration;

use rel_support::*;
use support::wait_for;

#[test]
fn three_parallel_runs_one_reloads_one_waits_one_exits_2() {
    let site = Site::start();
    site.nginx
        .write_http(&format!("{}\n# change one", site.good_http()));
    // The first run stops itself while holding the lock, after nginx was signalled.
    let mut first = Proc(
        site.cmd(&["reload", "-y"])
            .env("SAFE_RELOAD_TEST_PAUSE", "reloaded")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(first.wait_stopped(Duration::from_secs(20)));
    let waiter = Proc(
        site.cmd(&["reload", "-y", "--wait"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let refused = site.run(&["reload", "-y"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("holds the lock"), "{msg}");
    assert!(msg.contains(&format!("pid {}", first.pid())), "{msg}");
    // The waiter is still blocked on the lock while the holder is stopped.
    let mut waiter = waiter;
    assert!(
        waiter.0.try_wait().unwrap().is_none(),
        "the --wait run did not wait"
    );
    first.signal(libc::SIGCONT);
    let out = first.finish(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = waiter.finish(Duration::from_secs(20));
    // It ran after the first: nothing changed since the now last-good configuration.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(site.answer(), Some((200, "good".into())));
}

#[test]
fn a_sigkilled_holder_does_not_block_but_its_journal_does_until_recover() {
    let site = Site::start();
    site.nginx.write_http(&site.bad_http());
    let mut run = Proc(
        site.cmd(&["reload", "-y"])
            .env("SAFE_RELOAD_TEST_PAUSE", "snapshotted")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(run.wait_stopped(Duration::from_secs(20)));
    run.signal(libc::SIGKILL);
    let _ = run.finish(Duration::from_secs(5));
    // No "lock held": the kernel released it. The unfinished run is named instead.
    for cmd in [&["reload", "-y"][..], &["init"], &["rollback"]] {
        let out = site.run(cmd);
        let msg = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", text(&out));
        assert!(!msg.contains("holds the lock"), "{cmd:?}: {msg}");
        assert!(msg.contains("safe-reload recover"), "{cmd:?}: {msg}");
    }
    let out = site.run(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(wait_for(Duration::from_secs(1), || site.status().0 == Some(0)));
}
