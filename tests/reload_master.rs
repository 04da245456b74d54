//! Finding the master from the pid file, and refusing every pid file that does not lead to a
//! master of this binary (a signal must never reach an unrelated process).

mod support;

use std::path::Path;
use std::time::Duration;

use safe_reload::reload::{find_master, workers, WorkerState};
use support::*;

fn reason(pid_file: &Path) -> String {
    match find_master(pid_file, Path::new(NGINX)) {
        Err(safe_reload::Error::NotRunning { reason }) => reason,
        other => panic!("expected NotRunning, got {other:?}"),
    }
}

#[test]
fn finds_the_running_master_and_its_workers() {
    let n = TestNginx::builder().workers(2).start();
    let master = find_master(&n.pid_file, Path::new(NGINX)).unwrap();
    assert_eq!(master.pid, n.master_pid());
    let ws = workers(&master);
    assert_eq!(ws.len(), 2, "{ws:?}");
    assert!(ws.iter().all(|w| w.state == WorkerState::Ready), "{ws:?}");
}

#[test]
fn each_reason_for_not_running_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("nginx.pid");
    assert!(reason(&pid_file).contains("no pid file"));

    // `nginx -t` leaves an empty pid file behind.
    let n = TestNginx::start("");
    let conf = n.conf.clone();
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        &n.pid_file.display().to_string(),
        &pid_file.display().to_string(),
    );
    let tconf = dir.path().join("nginx.conf");
    std::fs::write(&tconf, text).unwrap();
    let st = std::process::Command::new(NGINX)
        .args(["-t", "-q", "-c"])
        .arg(&tconf)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), "");
    assert!(
        reason(&pid_file).contains("is empty"),
        "{}",
        reason(&pid_file)
    );

    // A stale pid of a process that is not nginx.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
    let r = reason(&pid_file);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(r.contains("not an nginx master"), "{r}");

    // A pid nobody has.
    assert!(wait_for(Duration::from_secs(2), || !alive(
        sleeper.id() as i32
    )));
    std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
    assert!(
        reason(&pid_file).contains("no process"),
        "{}",
        reason(&pid_file)
    );

    // The master of a different binary: the real master checked against another path.
    match find_master(&n.pid_file, Path::new("/bin/true")) {
        Err(safe_reload::Error::NotRunning { reason }) => {
            assert!(reason.contains("different binary"), "{reason}")
        }
        other => panic!("expected NotRunning, got {other:?}"),
    }
}
