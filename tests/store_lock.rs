//! The run lock: a second run is told who holds it, a dead holder's lock is released by the
//! kernel, and a waiting run gets the lock as soon as it is released.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use safe_reload::store::Store;
use safe_reload::Error;

const CHILD_ENV: &str = "SAFE_RELOAD_TEST_LOCK_CHILD";

/// Kills the child by pid when the test ends, passing or not.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn second_lock_fails_naming_the_holder_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let guard = store.lock(false, None).unwrap();
    let err = store.lock(false, None).unwrap_err();
    let Error::LockHeld { path, holder } = &err else {
        panic!("expected LockHeld, got {err}");
    };
    assert_eq!(path, guard.path());
    assert!(
        holder.contains(&format!("pid {}", std::process::id())),
        "{holder}"
    );
    drop(guard);
    store.lock(false, None).unwrap();
}

#[test]
fn lock_is_released_when_the_holder_process_dies() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        hold_until_killed(&dir);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_is_released_when_the_holder_process_dies",
            "--nocapture",
        ])
        .env(CHILD_ENV, tmp.path())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let pid = child.0.id();

    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        match store.lock(false, None) {
            Err(Error::LockHeld { holder, .. }) if holder.contains(&format!("pid {pid}")) => {
                break holder
            }
            Err(Error::LockHeld { .. }) => {}
            Ok(guard) => drop(guard),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "the child never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        holder.contains("lock_is_released_when_the_holder_process_dies"),
        "{holder}"
    );

    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    store
        .lock(false, None)
        .expect("the kernel released the dead holder's lock");
}

/// The child side: take the lock and keep it until killed (bounded, so a lost child ends).
fn hold_until_killed(dir: &str) {
    let store = Store::open(std::path::Path::new(dir)).unwrap();
    // Waits: the parent's polling holds the lock for a moment at a time.
    let _guard = store.lock(true, Some(Duration::from_secs(10))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn waiting_lock_is_granted_when_released() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let guard = store.lock(false, None).unwrap();
    let (tx, rx) = mpsc::channel();
    let waiter = store.clone();
    let thread = std::thread::spawn(move || {
        let got = waiter.lock(true, None).map(|g| (Instant::now(), g));
        let _ = tx.send(got.map(|(at, _guard)| at).map_err(|e| e.to_string()));
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the waiter must not get a held lock"
    );
    let released = Instant::now();
    drop(guard);
    let acquired = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert!(acquired >= released);
    thread.join().unwrap();
}

#[test]
fn bounded_wait_gives_up_with_lock_held() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let _guard = store.lock(false, None).unwrap();
    let start = Instant::now();
    let err = store
        .lock(true, Some(Duration::from_millis(150)))
        .unwrap_err();
    assert!(matches!(err, Error::LockHeld { .. }), "{err}");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}
