//! Finding the master from the pid file, and refusing every pid file that does not lead to this
//! configuration's master (a signal must never reach an unrelated process or another nginx).

mod support;

use std::path::Path;
use std::time::Duration;

use safe_reload::nginx::{build_info, BuildInfo, Nginx};
use safe_reload::reload::{find_master, workers, Master, WorkerState};
use support::*;

/// The run's view of a test instance: this binary, its main file and prefix.
fn ours(n: &TestNginx) -> (Nginx, BuildInfo) {
    let nginx = Nginx {
        binary: NGINX.into(),
        conf: n.conf.clone(),
        prefix: n.prefix.clone(),
        timeout: Duration::from_secs(30),
    };
    (nginx, build_info(Path::new(NGINX)).expect("nginx -V"))
}

fn find(pid_file: &Path, n: &TestNginx) -> safe_reload::Result<Master> {
    let (nginx, info) = ours(n);
    find_master(pid_file, &nginx, &info)
}

fn reason(pid_file: &Path, n: &TestNginx) -> String {
    match find(pid_file, n) {
        Err(safe_reload::Error::NotRunning { reason }) => reason,
        other => panic!("expected NotRunning, got {other:?}"),
    }
}

fn wrong(pid_file: &Path, nginx: &Nginx, info: &BuildInfo) -> String {
    match find_master(pid_file, nginx, info) {
        Err(e @ safe_reload::Error::WrongMaster { .. }) => e.to_string(),
        other => panic!("expected WrongMaster, got {other:?}"),
    }
}

#[test]
fn finds_the_running_master_and_its_workers() {
    let n = TestNginx::builder().workers(2).start();
    let master = find(&n.pid_file, &n).unwrap();
    assert_eq!(master.pid, n.master_pid());
    let ws = workers(&master);
    assert_eq!(ws.len(), 2, "{ws:?}");
    assert!(ws.iter().all(|w| w.state == WorkerState::Ready), "{ws:?}");
}

#[test]
fn each_reason_for_not_running_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("nginx.pid");
    let n = TestNginx::start("");
    assert!(reason(&pid_file, &n).contains("no pid file"));

    // `nginx -t` leaves an empty pid file behind.
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
        reason(&pid_file, &n).contains("is empty"),
        "{}",
        reason(&pid_file, &n)
    );

    // A stale pid of a process that is not nginx.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
    let r = reason(&pid_file, &n);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(r.contains("not an nginx master"), "{r}");

    // A pid nobody has.
    assert!(wait_for(Duration::from_secs(2), || !alive(
        sleeper.id() as i32
    )));
    std::fs::write(&pid_file, format!("{}\n", sleeper.id())).unwrap();
    assert!(
        reason(&pid_file, &n).contains("no process"),
        "{}",
        reason(&pid_file, &n)
    );

    // The master of a different binary: the real master checked against another path.
    let (mut other, info) = ours(&n);
    other.binary = "/bin/true".into();
    let r = wrong(&n.pid_file, &other, &info);
    assert!(r.contains("different binary"), "{r}");
}

#[test]
fn the_master_of_another_main_file_or_prefix_is_not_ours() {
    let a = TestNginx::start("");
    let b = TestNginx::start("");
    let (nginx_b, info) = ours(&b);
    // A's pid file checked for B's configuration: a master, the same binary, another instance.
    let r = wrong(&a.pid_file, &nginx_b, &info);
    assert!(r.contains(&a.pid_file.display().to_string()), "{r}");
    assert!(r.contains(&a.master_pid().to_string()), "{r}");
    assert!(r.contains(&a.conf.display().to_string()), "{r}");
    assert!(r.contains("nothing was signalled"), "{r}");
    // Same main file, another prefix.
    let (mut moved, info) = ours(&a);
    moved.prefix = b.prefix.clone();
    let r = wrong(&a.pid_file, &moved, &info);
    assert!(r.contains("prefix"), "{r}");
    // The paths may be spelled differently (a symlinked prefix, no trailing slash).
    let link = b.prefix.join("a-link");
    std::os::unix::fs::symlink(&a.prefix, &link).unwrap();
    let (mut spelled, info) = ours(&a);
    spelled.prefix = link.clone();
    spelled.conf = link.join("nginx.conf");
    assert_eq!(
        find_master(&a.pid_file, &spelled, &info).unwrap().pid,
        a.master_pid()
    );
}

#[test]
fn a_pid_file_older_than_its_process_is_stale() {
    let n = TestNginx::start("");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let f = std::fs::File::options()
        .write(true)
        .open(&n.pid_file)
        .unwrap();
    f.set_modified(hour_ago).unwrap();
    let (nginx, info) = ours(&n);
    let r = wrong(&n.pid_file, &nginx, &info);
    assert!(r.contains("stale"), "{r}");
}

/// Two instances without their own `pid` directive share the build default pid file: with A
/// stopped and B started, the pid file names B's master. A run for A must not reload B.
#[test]
fn a_run_for_a_stopped_instance_does_not_signal_the_one_sharing_its_pid_file() {
    let shared = tempfile::tempdir().unwrap();
    let pid_file = shared.path().join("nginx.pid");
    let ip = unique_loopback();
    let app = HttpBackend::start(std::net::SocketAddr::new(ip, 0), "app");
    let listen_a = std::net::SocketAddr::new(ip, free_port(ip));
    let listen_b = std::net::SocketAddr::new(ip, free_port(ip));
    let mut a = TestNginx::builder()
        .pid_file(&pid_file)
        .http(&proxy_site(listen_a, &app.host_port()))
        .start();
    let sr = SafeReload::new(&a);
    sr.init();
    a.stop();
    let b = TestNginx::builder()
        .pid_file(&pid_file)
        .http(&proxy_site(listen_b, &app.host_port()))
        .start();
    let workers = b.ready_workers();

    a.write_http(&format!(
        "{}\nserver {{ listen {listen_b}; return 204; }}",
        proxy_site(listen_a, &app.host_port())
    ));
    let run = sr.run(&["-y"]);
    run.expect(2);
    assert!(
        run.stderr.contains(&pid_file.display().to_string())
            && run.stderr.contains(&b.master_pid().to_string())
            && run.stderr.contains(&b.conf.display().to_string())
            && run.stderr.contains("nothing was signalled"),
        "names what the pid file points at:\n{run}"
    );
    assert_eq!(b.ready_workers(), workers, "B's workers are the same");
    assert!(
        !b.error_log_text().contains("signal 1 (SIGHUP)"),
        "B got no SIGHUP:\n{}",
        b.error_log_text()
    );
    assert_eq!(
        http_get(listen_b, "site.test", "/").map(|(s, _)| s).ok(),
        Some(200),
        "B still serves its own configuration"
    );
    assert!(
        !sr.state.join("journal.json").exists(),
        "no run left in flight"
    );
}

/// systemd starts Debian's nginx as `nginx -g 'daemon on; master_process on;'` with no `-p`
/// and reloads it with `systemctl reload`: such a master is found from the build defaults.
#[test]
fn a_master_started_without_a_prefix_is_found_from_the_build_defaults() {
    let ip = unique_loopback();
    let old = HttpBackend::start(std::net::SocketAddr::new(ip, 0), "app-v1");
    let new = HttpBackend::start(std::net::SocketAddr::new(ip, 0), "app-v2");
    let listen = std::net::SocketAddr::new(ip, free_port(ip));
    let n = TestNginx::builder()
        .launch(&["-g", "worker_priority 0;", "-c", "{conf}"])
        .http(&proxy_site(listen, &old.host_port()))
        .start();
    let title = std::fs::read(format!("/proc/{}/cmdline", n.master_pid())).unwrap();
    assert!(
        !String::from_utf8_lossy(&title).contains(" -p "),
        "started without -p"
    );
    let sr = SafeReload::new(&n).without_prefix();
    sr.init();
    let workers = n.ready_workers();
    n.write_http(&proxy_site(listen, &new.host_port()));
    let reload_cmd = format!("kill -HUP {}", n.master_pid());
    sr.run(&["-y", "--reload-cmd", &reload_cmd]).expect(0);
    assert!(n.ready_workers().iter().all(|w| !workers.contains(w)));
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "app-v2".into()))
    );
}

/// Moving the `pid` file (`pid PREFIX/logs/nginx.pid` to `PREFIX/logs/nginx2.pid`): the running
/// master wrote the old path, the running configuration's, and the candidate's file does not
/// exist yet. `status` and the reload find the master at the old path (under the same checks);
/// the reload goes through and nginx itself moves the pid file to the new path.
#[test]
fn a_changed_pid_path_finds_the_master_at_the_running_configurations_pid_file() {
    let ip = unique_loopback();
    let listen = std::net::SocketAddr::new(ip, free_port(ip));
    let http = format!("server {{ listen {listen}; return 200 \"old\"; }}");
    let n = TestNginx::start(&http);
    let sr = SafeReload::new(&n);
    sr.init();
    let moved = n.prefix.join("logs/nginx2.pid");
    let new_http = format!("server {{ listen {listen}; return 200 \"new\"; }}");
    let candidate = n.render(&new_http).replace(
        &format!("pid {};", n.pid_file.display()),
        &format!("pid {};", moved.display()),
    );
    assert!(candidate.contains("nginx2.pid"), "{candidate}");
    std::fs::write(&n.conf, candidate).expect("write nginx.conf");

    let status = sr.run(&["--json", "status"]);
    assert_eq!(
        status.json()["status"]["master_pid"],
        n.master_pid(),
        "{status}"
    );
    sr.run(&["-y"]).expect(0);
    assert_eq!(
        http_get(listen, "a.test", "/")
            .map(|(_, b)| b)
            .ok()
            .as_deref(),
        Some("new")
    );
    let written = std::fs::read_to_string(&moved).expect("nginx wrote the new pid file");
    assert_eq!(written.trim(), n.master_pid().to_string());
    assert!(!n.pid_file.exists(), "nginx removed the old pid file");
}
