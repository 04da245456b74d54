//! Exit statuses through the binary that the other `cli_*` tests do not reach: 2 when nginx is
//! not running (nothing touched) and 130 for an interrupt before the reload. The rest of the
//! table is reached there: 0 and 1 in `cli_reload` and `cli_check`, 2 for bad paths and a
//! missing nginx in `cli_bad_input` and for a held lock in `cli_state`, 3 and 4 in
//! `cli_rollback`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

#[test]
fn nginx_not_running_exits_2_and_touches_nothing() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::builder()
        .http(&proxy_site(listen, &app.host_port()))
        .prepare();
    let before = std::fs::read(&nginx.conf).expect("conf");
    let sr = SafeReload::new(&nginx);

    let run = sr.run(&["-y", "--json"]);
    run.expect(2);
    let report = run.json();
    assert_eq!(report["outcome"], "error", "{run}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("nginx is not running"), "{run}");
    assert!(error.contains("nothing was changed"), "{run}");
    let text = sr.run(&["-y"]);
    text.expect(2);
    assert!(text.stderr.contains("nginx is not running"), "{text}");

    assert_eq!(std::fs::read(&nginx.conf).expect("conf"), before);
    assert!(sr.last_good().is_none());
    let snapshots = std::fs::read_dir(sr.state.join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(snapshots, 0, "no snapshot was recorded");
    assert!(!nginx.pid_file.exists(), "nginx was not started either");
}

#[test]
fn sigint_before_the_reload_exits_130_with_nothing_changed() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let hang = hanging_listener(unique_loopback());
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&proxy_site(listen, &app.host_port()));
    let sr = SafeReload::new(&nginx);
    let baseline = sr.init();
    let workers = nginx.ready_workers();
    // The change adds a backup server whose probe hangs until the timeout: the run is still
    // probing, before any snapshot or signal, when SIGINT arrives.
    let edit = nginx.render(&format!(
        "upstream pool {{ server {}; server {} backup; }}\n{}",
        app.host_port(),
        hang.addr,
        proxy_site(listen, "pool")
    ));
    std::fs::write(&nginx.conf, &edit).expect("edit");

    let child = sr.spawn(&["-y", "--json", "--probe-timeout", "1s"]);
    let probing = wait_for(Duration::from_secs(5), || syn_sent_to(hang.addr));
    // SAFETY: signalling the run this test started, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = finish(child, Duration::from_secs(10));
    assert!(probing, "the run was probing when interrupted");
    run.expect(130);
    assert_eq!(run.outcome(), "interrupted", "{run}");

    assert_eq!(nginx.ready_workers(), workers, "nginx was not reloaded");
    assert_eq!(std::fs::read_to_string(&nginx.conf).expect("conf"), edit);
    assert_eq!(sr.last_good(), Some(baseline.clone()));
    let history = sr.run(&["history", "--json"]);
    history.expect(0);
    let ids: Vec<_> = history.json()["history"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, [baseline.as_str()], "no snapshot was recorded");
    assert!(!sr.state.join("journal.json").exists());
    sr.run(&["status"]).expect(0);
}

/// nginx runs this configuration and its pid file is gone (a tmpfiles clean-up, a careless
/// `rm`): the run said "nginx is not running ... start it first", and a start fails to bind
/// (r16 z F7). It names the master it found and what to do, signals nothing (exit 2), and
/// `status` does not call it "not running"; with the pid written back, the run reloads.
#[test]
fn a_running_master_whose_pid_file_is_gone_is_named_not_called_stopped() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |body: &str| {
        format!("server {{ listen {listen}; location / {{ return 200 \"{body}\"; }} }}")
    };
    let nginx = TestNginx::start(&site("v1"));
    let sr = SafeReload::new(&nginx);
    sr.init();
    std::fs::remove_file(&nginx.pid_file).expect("remove the pid file");
    nginx.write_http(&site("v2"));
    let workers = nginx.ready_workers();
    let run = sr.run(&["-y"]);
    run.expect(2);
    let master = nginx.master_pid();
    for said in [
        format!("nginx runs this configuration (master process {master})"),
        format!("echo {master} > {}", nginx.pid_file.display()),
    ] {
        assert!(run.stderr.contains(&said), "{said:?} in:\n{run}");
    }
    assert!(!run.stderr.contains("start it first"), "{run}");
    assert_eq!(nginx.ready_workers(), workers, "nothing was signalled");
    let status = sr.run(&["status"]);
    assert!(!status.stdout.contains("not running"), "{status}");
    assert!(
        status.stdout.contains("nginx runs this configuration"),
        "{status}"
    );
    std::fs::write(&nginx.pid_file, format!("{master}\n")).expect("write the pid back");
    sr.run(&["-y"]).expect(0);
    assert_eq!(
        http_get(listen, "a.test", "/").ok(),
        Some((200, "v2".into()))
    );
}
