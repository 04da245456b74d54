//! Probe results that do not need diagnosis: name resolution, `down`, `backup`, dynamic targets,
//! allowed failures, and the total time of many probes with some timing out.

mod probe_support;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use probe_support::*;
use safe_reload::conf::TargetAddr;
use safe_reload::probe::{probe_all, Severity, Status};

#[test]
fn hundreds_of_targets_with_some_timing_out_take_about_one_timeout() {
    let listeners: Vec<TcpListener> = (0..100)
        .map(|i| TcpListener::bind(format!("127.83.20.{}:0", 1 + i % 50)).unwrap())
        .collect();
    let hung: Vec<Hung> = (0..5)
        .map(|i| hung_listener(&format!("127.83.21.{}", i + 1)))
        .collect();
    let mut list = Vec::new();
    for l in &listeners {
        let sa = l.local_addr().unwrap();
        list.push(ip(sa));
        list.push(ip(SocketAddr::new(
            sa.ip(),
            free_port(&sa.ip().to_string()),
        )));
    }
    for i in 0..95 {
        let ip_text = format!("127.83.22.{}", 1 + i);
        list.push(ip(format!("{ip_text}:{}", free_port(&ip_text))
            .parse()
            .unwrap()));
    }
    list.extend(hung.iter().map(|h| ip(h.addr)));
    assert_eq!(list.len(), 300);

    let timeout = Duration::from_millis(1000);
    let t0 = Instant::now();
    let report = probe_all(&targets(list), &opts(1000));
    let wall = t0.elapsed();
    // Five hung targets probed one after another take five timeouts (5 s); concurrently
    // about one. The bound leaves room for a loaded machine (300 probes and the diagnosis,
    // which reads /proc for socket owners, took 1.6 s beside the timeout at load 9) and
    // still tells the two apart.
    assert!(wall < timeout * 4, "300 probes took {wall:?}");
    let count = |s: Status| report.results.iter().filter(|r| r.status == s).count();
    assert_eq!(count(Status::Ok), 100);
    assert_eq!(count(Status::Refused), 195);
    assert_eq!(count(Status::Timeout), 5);
    assert_eq!(report.failures().count(), 200);
}

#[test]
fn unresolvable_host_is_a_failure() {
    let t = target(TargetAddr::Host {
        name: "backend.invalid".into(),
        port: 8000,
    });
    let report = probe_all(&targets(vec![t]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Unresolvable);
    assert_eq!(r.severity, Severity::Failure);
    assert!(r.errno.is_some());
    assert!(r.addresses.is_empty());
}

#[test]
fn localhost_is_resolved_and_every_address_probed() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = target(TargetAddr::Host {
        name: "localhost".into(),
        port,
    });
    let report = probe_all(&targets(vec![t]), &opts(1000));
    let r = &report.results[0];
    assert!(r
        .addresses
        .iter()
        .any(|a| a.address == format!("127.0.0.1:{port}") && a.status == Status::Ok));
    // Where localhost also resolves to ::1 and nothing listens there, that address fails and
    // the target is a warning (nginx falls through to the next address), never a failure.
    assert_ne!(r.severity, Severity::Failure, "{r:?}");
}

#[test]
fn down_target_is_skipped_without_connecting() {
    let mut t = ip(format!("127.83.23.1:{}", free_port("127.83.23.1"))
        .parse()
        .unwrap());
    std::sync::Arc::make_mut(&mut t.references)[0].down = true;
    let report = probe_all(&targets(vec![t]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Skipped);
    assert_eq!(r.severity, Severity::Ok);
    assert!(r.addresses.is_empty());
}

/// A failing `backup` server while its upstream's primary answers: nginx never needs it, a
/// warning. (The whole pool down, backup included, is a failure: see `probe_policy`.)
#[test]
fn failing_backup_with_a_live_primary_is_a_warning() {
    let live = TcpListener::bind("127.83.24.2:0").unwrap();
    let in_pool = |mut t: safe_reload::conf::Target, backup: bool| {
        let r = &mut std::sync::Arc::make_mut(&mut t.references)[0];
        r.upstream = Some("app".into());
        r.backup = backup;
        t
    };
    let backup = in_pool(
        ip(format!("127.83.24.1:{}", free_port("127.83.24.1"))
            .parse()
            .unwrap()),
        true,
    );
    let primary = in_pool(ip(live.local_addr().unwrap()), false);
    let report = probe_all(&targets(vec![backup, primary]), &opts(1000));
    assert_eq!(report.results[0].status, Status::Refused);
    assert_eq!(report.results[0].severity, Severity::Warning);
    assert!(report.is_ok());
    assert_eq!(report.warnings().count(), 1);
}

#[test]
fn dynamic_target_is_reported_not_probed() {
    let t = target(TargetAddr::Dynamic("http://$backend".into()));
    let report = probe_all(&targets(vec![t]), &opts(1000));
    let r = &report.results[0];
    assert_eq!(r.status, Status::Dynamic);
    assert_eq!(r.severity, Severity::Warning);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["results"][0]["status"], "dynamic");
    assert_eq!(json["results"][0]["target"], "http://$backend");
}

#[test]
fn allowed_failure_is_reported_but_not_a_failure() {
    let addr: SocketAddr = format!("127.83.25.1:{}", free_port("127.83.25.1"))
        .parse()
        .unwrap();
    let mut o = opts(1000);
    o.allow_fail = vec![addr.to_string()];
    let report = probe_all(&targets(vec![ip(addr)]), &o);
    assert_eq!(report.results[0].status, Status::Refused);
    assert_eq!(report.results[0].severity, Severity::Allowed);
    assert!(report.is_ok());
}

#[test]
fn json_uses_the_documented_status_words() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone.sock");
    let report = probe_all(&targets(vec![unix(&missing)]), &opts(1000));
    let json = serde_json::to_value(&report).unwrap();
    let r = &json["results"][0];
    assert_eq!(r["status"], "no-such-socket");
    assert_eq!(r["severity"], "failure");
    assert_eq!(r["references"][0]["line"], 10);
    assert!(r["elapsed_ms"].is_number());
}
