//! The shadow nginx through the binary: a bad change is refused before the reload with the real
//! nginx untouched and no client seeing it; what only production can show is still caught
//! after the reload; `--no-shadow` and the setting turn it off.

mod support;
use support::*;

use std::net::SocketAddr;

/// A site on its own loopback address whose `/` goes to `upstream`, with a baseline recorded.
fn site(upstream: &str) -> (TestNginx, SafeReload, SocketAddr) {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let n = TestNginx::start(&proxy_site(listen, upstream));
    let sr = SafeReload::new(&n);
    sr.init();
    (n, sr, listen)
}

fn serves(listen: SocketAddr, body: &str) {
    let got = http_get(listen, "site.test", "/").expect("the site answers");
    assert_eq!(got, (200, body.to_string()), "what the site serves");
}

#[test]
fn a_backend_answering_502_is_refused_before_the_reload_and_no_client_sees_it() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (n, sr, listen) = site(&good.host_port());
    let workers = n.worker_pids();
    let clients = ClientLoop::start(listen, "site.test", "/");
    n.write_http(&proxy_site(listen, &bad.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    let seen: Vec<_> = (clients.finish().into_iter())
        .filter(|a| !matches!(a, Ok(200)))
        .collect();
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let why = report["shadow"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("site.test") && why.contains("HTTP 502"),
        "{why}"
    );
    assert!(why.contains("running nginx answers HTTP 200"), "{why}");
    let problem = &report["problems"][0];
    assert!(
        problem["message"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 502"),
        "{run}"
    );
    assert_eq!(problem["file"], n.conf.display().to_string(), "{run}");
    assert!(
        report["reload"].is_null(),
        "nginx must not be signalled: {run}"
    );
    assert_eq!(
        n.worker_pids(),
        workers,
        "the real nginx's workers are unchanged"
    );
    serves(listen, "app-v1");
    assert!(
        seen.is_empty(),
        "a client saw something other than 200: {seen:?}"
    );
    // The text output names the server and what the shadow answered.
    let text = sr.run(&["-y"]);
    text.expect(1);
    assert!(
        text.stderr.contains("shadow nginx answered HTTP 502"),
        "{text}"
    );
    assert!(
        std::fs::read_dir(sr.state.join("shadow")).map_or(0, |d| d.count()) == 0,
        "the lease is removed when the shadow stops"
    );
}

#[test]
fn a_backend_that_accepts_and_closes_is_refused_before_the_reload() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let bad = CloseBackend::start(SocketAddr::new(ip, 0));
    let (n, sr, listen) = site(&good.host_port());
    let workers = n.worker_pids();
    let clients = ClientLoop::start(listen, "site.test", "/");
    n.write_http(&proxy_site(listen, &bad.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    let seen: Vec<_> = (clients.finish().into_iter())
        .filter(|a| !matches!(a, Ok(200)))
        .collect();
    run.expect(1);
    // A protocol probe may refuse it first; either way nothing was reloaded.
    let report = run.json();
    assert!(report["reload"].is_null(), "{run}");
    if !report["shadow"].is_null() {
        assert_eq!(report["shadow"]["state"], "refused", "{run}");
    }
    assert_eq!(n.worker_pids(), workers);
    serves(listen, "app-v1");
    assert!(
        seen.is_empty(),
        "a client saw something other than 200: {seen:?}"
    );
}

#[test]
fn check_refuses_through_the_shadow_too() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (n, sr, listen) = site(&good.host_port());
    n.write_http(&proxy_site(listen, &bad.addr.to_string()));
    let run = sr.run(&["check", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    serves(listen, "app-v1");
    // A good change passes `check` with the shadow verified.
    n.write_http(&proxy_site(listen, &good.host_port()));
    let run = sr.run(&["check", "--json"]);
    run.expect(0);
    assert_eq!(run.json()["shadow"]["state"], "verified", "{run}");
}

#[test]
fn a_good_change_is_verified_in_the_shadow_then_reloaded() {
    let ip = unique_loopback();
    let v1 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let v2 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v2");
    let (n, sr, listen) = site(&v1.host_port());
    n.write_http(&proxy_site(listen, &v2.host_port()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let shadow = &run.json()["shadow"];
    assert_eq!(shadow["state"], "verified", "{run}");
    assert_eq!(shadow["checks"][0]["shadow"]["status"], 200, "{run}");
    let pid = shadow["master_pid"].as_i64().expect("master pid") as i32;
    assert!(!alive(pid), "the shadow is stopped when the run ends");
    serves(listen, "app-v2");
}

#[test]
fn no_shadow_flag_and_setting_leave_it_to_verification_after_the_reload() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (n, sr, listen) = site(&good.host_port());
    n.write_http(&proxy_site(listen, &bad.addr.to_string()));
    let run = sr.run(&["-y", "--json", "--no-shadow"]);
    run.expect(3);
    assert_eq!(run.json()["shadow"]["state"], "off", "{run}");
    serves(listen, "app-v1");
    let settings = tempfile::tempdir().unwrap();
    let file = settings.path().join("s.toml");
    std::fs::write(&file, "no-shadow = true\n").unwrap();
    let run = run_command(
        sr.command(&["check", "--json"])
            .env("SAFE_RELOAD_CONFIG", &file),
    );
    run.expect(0);
    assert_eq!(run.json()["shadow"]["state"], "off", "{run}");
}

#[test]
fn a_failure_only_production_shows_is_caught_after_the_reload_and_rolled_back() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (n, sr, listen) = site(&good.host_port());
    // The target depends on the port the request came in on, which the shadow does not share.
    n.write_http(&format!(
        "map $server_port $backend {{ default {good}; {port} {bad}; }}\n\
         server {{ listen {listen}; server_name site.test; \
         location / {{ proxy_pass http://$backend; }} }}",
        good = good.host_port(),
        port = listen.port(),
        bad = bad.addr,
    ));
    let run = sr.run(&["-y", "--json"]);
    run.expect(3);
    let report = run.json();
    assert_eq!(report["outcome"], "rolled_back", "{run}");
    assert_ne!(report["shadow"]["state"], "refused", "{run}");
    serves(listen, "app-v1");
}

#[test]
fn a_shadow_that_cannot_start_does_not_refuse_a_good_change() {
    let ip = unique_loopback();
    let v1 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let v2 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v2");
    let (n, sr, listen) = site(&v1.host_port());
    n.write_http(&proxy_site(listen, &v2.host_port()));
    // A state directory the lease cannot be written to: the shadow cannot be recorded, so it
    // is not started, and that is the shadow's problem, not the change's.
    std::fs::create_dir_all(&sr.state).unwrap();
    std::fs::write(sr.state.join("shadow"), "not a directory").unwrap();
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "not_verified", "{run}");
    let notes = report["notes"].to_string();
    assert!(notes.contains("not verified in the shadow"), "{run}");
    serves(listen, "app-v2");
}
