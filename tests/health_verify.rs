//! Health verification through a real nginx with real backends: a good backend passes; a
//! backend that accepts and closes (502) fails; a refused server hidden by failover still fails
//! through the error log, shown with its `upstream:` field; nginx not listening fails; https
//! with a self-signed certificate and SNI works.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use safe_reload::errorlog::{Cursors, UpstreamErrorKind};
use safe_reload::health::{parse_url, verify, HealthOptions};
use support::*;

fn opts() -> HealthOptions {
    HealthOptions {
        window: Duration::from_secs(3),
        rounds: 3,
        request_timeout: Duration::from_secs(2),
        expect_status: None,
        expected_down: Vec::new(),
        headers: Vec::new(),
        tls12_memo: None,
        unknown_before: false,
    }
}

fn site(ip: IpAddr, upstream: &str) -> (SocketAddr, String) {
    let addr = SocketAddr::new(ip, free_port(ip));
    let http = format!(
        "{upstream}\nserver {{ listen {addr}; server_name app.test; location / {{ proxy_pass http://pool; }} }}"
    );
    (addr, http)
}

fn url(addr: SocketAddr) -> Vec<safe_reload::health::Check> {
    let resolve = vec![format!("app.test:{}:{}", addr.port(), addr.ip())];
    vec![parse_url(&format!("http://app.test:{}/", addr.port()), &resolve).unwrap()]
}

#[test]
fn a_good_backend_passes_and_a_closing_one_fails_with_502() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let (addr, http) = site(
        ip,
        &format!("upstream pool {{ server {}; }}", good.host_port()),
    );
    let n = TestNginx::start(&http);
    let mut logs = Cursors::open(&[&n.error_log]);
    let report = verify(&url(addr), &mut logs, &opts());
    assert!(report.passed, "{report:?}");
    // One result per check, over the three rounds it passed.
    assert_eq!(report.results.len(), 1);
    assert_eq!((report.results[0].attempts, report.rounds), (3, 3));
    assert!(report
        .results
        .iter()
        .all(|r| r.status == Some(200) && r.check.host == "app.test"));
    assert!(report.elapsed < Duration::from_secs(1), "{report:?}");

    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let ip2 = unique_loopback();
    let (addr2, http2) = site(
        ip2,
        &format!("upstream pool {{ server {}; }}", closing.addr),
    );
    let n2 = TestNginx::start(&http2);
    let mut logs2 = Cursors::open(&[&n2.error_log]);
    let report = verify(&url(addr2), &mut logs2, &opts());
    assert!(!report.passed);
    assert_eq!(report.results.len(), 1, "ends at the first 502: {report:?}");
    assert_eq!(report.results[0].status, Some(502));
    assert_eq!(
        report.upstream_errors[0].kind,
        UpstreamErrorKind::PrematureClose
    );
}

#[test]
fn a_refused_server_hidden_by_failover_still_fails_through_the_log() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let dead = SocketAddr::new(ip, free_port(ip));
    let (addr, http) = site(
        ip,
        &format!(
            "upstream pool {{ server {dead}; server {}; }}\nproxy_next_upstream error timeout;",
            good.host_port()
        ),
    );
    let n = TestNginx::start(&http);
    let mut logs = Cursors::open(&[&n.error_log]);
    let report = verify(&url(addr), &mut logs, &opts());
    assert!(!report.passed, "{report:?}");
    assert!(
        report.results.iter().all(|r| r.status == Some(200)),
        "the client saw only 200: {report:?}"
    );
    let e = &report.upstream_errors[0];
    assert_eq!(e.kind, UpstreamErrorKind::Refused);
    assert_eq!(
        e.upstream.as_deref(),
        Some(format!("http://{dead}/").as_str())
    );
    assert_eq!(e.server.as_deref(), Some("app.test"));
}

#[test]
fn nginx_not_listening_fails_at_once() {
    let ip = unique_loopback();
    let addr = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().unwrap();
    let mut logs = Cursors::open(&[dir.path().join("error.log")]);
    let report = verify(&url(addr), &mut logs, &opts());
    assert!(!report.passed);
    assert_eq!(report.results.len(), 1);
    let err = report.results[0].error.as_deref().unwrap();
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn https_with_a_self_signed_certificate_and_sni() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "secure");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "app.test");
    let addr = SocketAddr::new(ip, free_port(ip));
    let n = TestNginx::start(&format!(
        "server {{ listen {addr} ssl; server_name app.test; ssl_certificate {}; ssl_certificate_key {};\n\
         location / {{ proxy_pass http://{}; }} }}",
        cert.display(),
        key.display(),
        good.host_port()
    ));
    let resolve = vec![format!("app.test:{}:{}", addr.port(), addr.ip())];
    let check = parse_url(&format!("https://app.test:{}/x?y=1", addr.port()), &resolve).unwrap();
    assert!(check.tls && check.path == "/x?y=1");
    let mut logs = Cursors::open(&[&n.error_log]);
    let report = verify(&[check], &mut logs, &opts());
    assert!(report.passed, "{report:?}");
}

#[test]
fn unix_socket_backends_and_a_missing_socket() {
    let dir = tempfile::tempdir().unwrap();
    // Workers must reach the socket: the tempdir is private to root, workers run as root here.
    let sock = dir.path().join("app.sock");
    let missing = dir.path().join("gone.sock");
    let app = HttpBackend::start_unix(&sock, "unix-app");
    let ip = unique_loopback();
    let (ok_addr, missing_addr) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let n = TestNginx::start(&format!(
        "server {{ listen {ok_addr}; location / {{ proxy_pass http://unix:{}:; }} }}\n\
         server {{ listen {missing_addr}; location / {{ proxy_pass http://unix:{}:; }} }}",
        sock.display(),
        missing.display()
    ));
    assert_eq!(http_get(ok_addr, "x", "/").unwrap().1, "unix-app");
    let mut logs = Cursors::open(&[&n.error_log]);
    let check = |a: SocketAddr| parse_url(&format!("http://{a}/"), &[]).unwrap();
    assert!(verify(&[check(ok_addr)], &mut logs, &opts()).passed);
    let report = verify(&[check(missing_addr)], &mut logs, &opts());
    assert_eq!(report.results[0].status, Some(502));
    assert_eq!(
        report.upstream_errors[0].kind,
        UpstreamErrorKind::NoSuchFile
    );
    drop(app);
}

#[test]
fn a_hanging_listener_makes_requests_time_out() {
    let hang = hanging_listener(unique_loopback());
    let check = parse_url(&format!("http://{}/", hang.addr), &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut logs = Cursors::open(&[dir.path().join("error.log")]);
    let o = HealthOptions {
        request_timeout: Duration::from_millis(300),
        ..opts()
    };
    let report = verify(&[check], &mut logs, &o);
    assert!(!report.passed);
    let err = report.results[0].error.as_deref().unwrap();
    assert!(
        err.contains("timed out") || err.contains("temporarily unavailable"),
        "{err}"
    );
    assert!(report.elapsed < Duration::from_secs(1), "{report:?}");
}

/// A backend that closes every 3rd request unanswered (nginx answers 502): the third round's
/// failed answer is asked again, twice at once, and both pass. The check passes with its
/// failed answer counted, and the log line nginx wrote for it goes with the check instead of
/// failing the window (the window failed on whichever round hit the bad answer).
#[test]
fn a_flaky_backend_fails_no_check_and_its_failed_answer_is_counted() {
    let ip = unique_loopback();
    let flaky = FlakyBackend::start(SocketAddr::new(ip, 0), "flaky", 3, Flake::Close);
    let (addr, http) = site(
        ip,
        &format!("upstream pool {{ server {}; }}", flaky.host_port()),
    );
    let n = TestNginx::start(&http);
    let mut logs = Cursors::open(&[&n.error_log]);
    let report = verify(&url(addr), &mut logs, &opts());
    assert!(report.passed, "{report:?}");
    let r = &report.results[0];
    assert_eq!(
        (r.failed, r.failures, r.attempts, report.rounds),
        (false, 1, 5, 3),
        "{report:?}"
    );
    assert!(r.intermittent());
    assert_eq!(r.first_failure.as_deref(), Some("HTTP 502"));
    assert!(report.upstream_errors.is_empty(), "{report:?}");
    assert_eq!(
        r.intermittent_errors[0].kind,
        UpstreamErrorKind::PrematureClose
    );
    assert_eq!(flaky.requests(), 5);
    // What nginx serves: 502 on every 3rd request (the 6th is next), the backend's 200 else.
    assert_eq!(http_get(addr, "app.test", "/").expect("GET").0, 502);
    assert_eq!(
        http_get(addr, "app.test", "/").expect("GET"),
        (200, "flaky".into())
    );
}

/// One slow answer (every 3rd after 1.5 s, with a 1 s request timeout) is the same: asked
/// again, it passes, counted as intermittent with the timeout as its failed answer.
#[test]
fn one_slow_answer_fails_no_check() {
    let ip = unique_loopback();
    let slow = Duration::from_millis(1500);
    let flaky = FlakyBackend::start(SocketAddr::new(ip, 0), "flaky", 3, Flake::Slow(slow));
    let (addr, http) = site(
        ip,
        &format!("upstream pool {{ server {}; }}", flaky.host_port()),
    );
    let n = TestNginx::start(&http);
    let mut logs = Cursors::open(&[&n.error_log]);
    let o = HealthOptions {
        request_timeout: Duration::from_secs(1),
        ..opts()
    };
    let report = verify(&url(addr), &mut logs, &o);
    assert!(report.passed, "{report:?}");
    let r = &report.results[0];
    assert_eq!(
        (r.failed, r.failures, r.status),
        (false, 1, Some(200)),
        "{report:?}"
    );
    let first = r.first_failure.as_deref().unwrap_or_default();
    assert!(first.contains("timed out after 1s"), "{report:?}");
    assert_eq!(
        http_get(addr, "app.test", "/").expect("GET"),
        (200, "flaky".into())
    );
}

#[test]
fn an_operators_header_replaces_the_default_of_its_name() {
    // nginx keeps the first of two User-Agent fields: a second one sent after the default
    // would never be the one the site sees.
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let (addr, http) = site(
        ip,
        &format!(
            "log_format ua \"ua=$http_user_agent\";\n\
             upstream pool {{ server {}; }}",
            good.host_port()
        ),
    );
    let http = http.replace(
        "server_name app.test;",
        "server_name app.test; access_log logs/ua.log ua;",
    );
    let n = TestNginx::start(&http);
    let mut logs = Cursors::open(&[&n.error_log]);
    let mut o = opts();
    o.headers = vec![("User-Agent".into(), "probe/1".into())];
    let report = verify(&url(addr), &mut logs, &o);
    assert!(report.passed, "{report:?}");
    let seen = std::fs::read_to_string(n.prefix.join("logs/ua.log")).unwrap();
    assert!(!seen.is_empty());
    assert!(seen.lines().all(|l| l == "ua=probe/1"), "{seen}");
}
