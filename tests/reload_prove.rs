//! Triggering a reload and proving it took effect, against a real nginx: a good reload shows
//! new workers and old ones draining or gone; a reload whose new `listen` cannot bind is caught
//! as not in effect, with nginx's `[emerg]` line.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use safe_reload::errorlog::Cursors;
use safe_reload::reload::{prove, trigger, workers, Master, ReloadMethod};
use support::*;

#[test]
fn a_good_reload_is_proven_with_new_workers() {
    let ip = unique_loopback();
    let v1 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let v2 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v2");
    let port = free_port(ip);
    let site = SocketAddr::new(ip, port);
    let server = |b: &HttpBackend| {
        format!(
            "server {{ listen {site}; location / {{ proxy_pass http://{}; }} }}",
            b.host_port()
        )
    };
    let n = TestNginx::builder().workers(2).http(&server(&v1)).start();
    assert_eq!(http_get(site, "x", "/").unwrap().1, "app-v1");

    let master = Master {
        pid: n.master_pid(),
    };
    let before = workers(&master);
    let mut logs = Cursors::open(&[&n.error_log]);
    n.write_http(&server(&v2));
    let start = Instant::now();
    trigger(&master, &ReloadMethod::Signal, Duration::from_secs(5)).unwrap();
    let proof = prove(&master, &before, &mut logs, Duration::from_secs(10));
    assert!(proof.took_effect, "{proof:?}");
    // Proven when it happened, well before the 10 s deadline (a loaded machine gets room).
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(proof.new_workers.len(), 2, "{proof:?}");
    assert!(proof
        .new_workers
        .iter()
        .all(|w| !proof.old_workers.contains(w)));
    assert!(proof.emerg.is_empty());
    // Every old worker has stopped accepting: the new config answers on fresh connections.
    for _ in 0..4 {
        assert_eq!(http_get(site, "x", "/").unwrap().1, "app-v2");
    }
}

#[test]
fn a_reload_whose_listen_cannot_bind_is_not_in_effect() {
    let ip = unique_loopback();
    let held = TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
    let held_addr = held.local_addr().unwrap();
    let n = TestNginx::start("");
    let master = Master {
        pid: n.master_pid(),
    };
    let before = workers(&master);
    let mut logs = Cursors::open(&[&n.error_log]);
    n.write_http(&format!("server {{ listen {held_addr}; return 200; }}"));
    let start = Instant::now();
    trigger(&master, &ReloadMethod::Signal, Duration::from_secs(5)).unwrap();
    let proof = prove(&master, &before, &mut logs, Duration::from_secs(10));
    assert!(!proof.took_effect, "{proof:?}");
    // The master gives up binding after about 2.5 s; the proof sees it before its deadline.
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert!(
        proof
            .emerg
            .iter()
            .any(|l| l.contains(&format!("bind() to {held_addr} failed"))),
        "{proof:?}"
    );
    assert!(proof.reason.unwrap().contains("[emerg]"));
    // The old workers still serve the old configuration.
    assert_eq!(workers(&master), before);
    assert_eq!(http_get(n.ctrl, "ctrl", "/__ready").unwrap().0, 200);
}

#[test]
fn a_reload_command_runs_as_argv() {
    let n = TestNginx::start("");
    let master = Master {
        pid: n.master_pid(),
    };
    let before = workers(&master);
    let mut logs = Cursors::open(&[&n.error_log]);
    let mut argv = vec![NGINX.to_string()];
    argv.extend(n.flags());
    argv.extend(["-s".to_string(), "reload".to_string()]);
    trigger(
        &master,
        &ReloadMethod::Command(argv),
        Duration::from_secs(10),
    )
    .unwrap();
    let proof = prove(&master, &before, &mut logs, Duration::from_secs(10));
    assert!(proof.took_effect, "{proof:?}");

    let failing = vec![
        "sh".to_string(),
        "-c".to_string(),
        "echo no such unit >&2; exit 5".to_string(),
    ];
    let err = trigger(
        &master,
        &ReloadMethod::Command(failing),
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no such unit"), "{err}");
}

/// Removing a server on `listen unix:` whose socket file someone deleted: nginx loads the new
/// configuration, starts new workers and lets the old ones drain, but logs `[emerg] unlink()
/// ... failed` while closing the old socket. The processes say the reload took effect, and the
/// `[emerg]` stays in the proof for the operator to read (it was judged a failed reload).
#[test]
fn an_emerg_during_a_reload_that_started_new_workers_took_effect() {
    let ip = unique_loopback();
    let site = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("site.sock");
    let kept = format!("server {{ listen {site}; location / {{ return 200 \"v2\"; }} }}");
    let n = TestNginx::builder()
        .workers(2)
        .http(&format!(
            "server {{ listen {site}; location / {{ return 200 \"v1\"; }} }}\n\
             server {{ listen unix:{}; return 200 \"unix\"; }}",
            sock.display()
        ))
        .start();
    assert_eq!(http_get(site, "x", "/").unwrap().1, "v1");
    std::fs::remove_file(&sock).unwrap();

    let master = Master {
        pid: n.master_pid(),
    };
    let before = workers(&master);
    let mut logs = Cursors::open(&[&n.error_log]);
    n.write_http(&kept);
    trigger(&master, &ReloadMethod::Signal, Duration::from_secs(5)).unwrap();
    let proof = prove(&master, &before, &mut logs, Duration::from_secs(10));
    assert!(proof.took_effect, "{proof:?}");
    assert!(proof.reason.is_none(), "{proof:?}");
    assert!(
        proof
            .emerg
            .iter()
            .any(|l| l.contains("unlink()") && l.contains("site.sock")),
        "the [emerg] is kept: {proof:?}"
    );
    assert_eq!(proof.new_workers.len(), 2, "{proof:?}");
    // nginx serves the new configuration.
    for _ in 0..4 {
        assert_eq!(http_get(site, "x", "/").unwrap().1, "v2");
    }
}
