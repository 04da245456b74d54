//! `auth_request` in front of the upstream, through the binary with a real nginx: the
//! subrequest's `internal` location is never requested itself (nginx answers 404 to that), the
//! locations that ask it are checked (also one with no `*_pass` of its own), and a change that
//! makes the subrequest fail, so that nginx answers 500 where it answered 200 or 401, is the
//! change's: refused by the shadow, rolled back without it.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::*;

/// The paths of the health results in `report`.
fn paths(report: &Value) -> Vec<&str> {
    (report["health"]["results"].as_array().into_iter().flatten())
        .filter_map(|r| r["path"].as_str())
        .collect()
}

/// The result of the check of `path`.
fn result<'a>(report: &'a Value, path: &str) -> &'a Value {
    (report["health"]["results"].as_array().into_iter().flatten())
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no check of {path}: {report}"))
}

/// An auth backend that lets everyone in, then one that answers 500: nginx answers 500 to
/// every protected request. The 200 before and the 500 after are the change's doing.
#[test]
fn an_auth_request_backend_answering_500_is_a_failure_the_change_caused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let allow = HttpBackend::start(SocketAddr::new(ip, 0), "allow");
    let broken = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |auth: &str| {
        format!(
            "upstream auth {{ server {auth}; }}\nupstream app {{ server {}; }}\n\
             server {{ listen {listen}; server_name site.test;\n\
             location = /auth {{ internal; proxy_pass http://auth; \
             proxy_pass_request_body off; proxy_set_header Content-Length \"\"; }}\n\
             location / {{ auth_request /auth; proxy_pass http://app; }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&http(&allow.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".into())
    );

    n.write_http(&http(&broken.addr.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let why = report["shadow"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("answered HTTP 500 (the running nginx answers HTTP 200)"),
        "{run}"
    );
    // Refused before the reload: clients still get the page.
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".into()),
        "{run}"
    );

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    assert!(!paths(&report).contains(&"/auth"), "{run}");
    assert_eq!(result(&report, "/")["status"], 500, "{run}");
    assert!(
        (report["rollback"]["reason"].as_str()).is_some_and(
            |r| r.ends_with("answered HTTP 200 before this change and HTTP 500 after it")
        ),
        "{run}"
    );
    // Rolled back: the auth backend that lets everyone in is asked again.
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".into()),
        "{run}"
    );
}

/// An auth backend that turns everyone away (nginx answers 401), then one on a dead port
/// (nginx answers 500), in front of a location with no `*_pass` of its own: that location is
/// checked (its 401 is the auth backend's answer), and its 401 before and 500 after are the
/// change's doing.
#[test]
fn a_dead_auth_request_backend_fails_a_location_that_answered_401() {
    let ip = unique_loopback();
    let deny = StatusBackend::start(SocketAddr::new(ip, 0), 401);
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let files = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(files.path().join("private")).expect("mkdir");
    std::fs::write(files.path().join("private/index.html"), "secret").expect("write");
    let http = |auth: &str| {
        format!(
            "server {{ listen {listen}; server_name files.test; root {};\n\
             location = /auth {{ internal; proxy_pass http://{auth}; }}\n\
             location /private/ {{ auth_request /auth; }} }}",
            files.path().display()
        )
    };
    let n = TestNginx::start(&http(&deny.addr.to_string()));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "files.test", "/private/").expect("GET").0,
        401
    );

    n.write_http(&http(&dead.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        (report["shadow"]["reason"].as_str()).is_some_and(|r| r.contains("/private/")),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "files.test", "/private/").expect("GET").0,
        401,
        "{run}"
    );

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    assert_eq!(paths(&report), ["/private/"], "{run}");
    assert_eq!(result(&report, "/private/")["status"], 500, "{run}");
    let before = &report["baseline"]["results"][0];
    assert_eq!(
        (&before["status"], &before["answer"]),
        (&Value::from(401), &Value::from("passed")),
        "the auth backend's own answer: {run}"
    );
    assert_eq!(
        http_get(listen, "files.test", "/private/").expect("GET").0,
        401,
        "{run}"
    );
}

/// A harmless change beside an `auth_request` that works: verified, and the 401 nginx gives
/// without credentials is said to be nginx's own answer, not a pass of the backend.
#[test]
fn a_harmless_change_beside_a_working_auth_request_is_not_a_failure() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let deny = StatusBackend::start(SocketAddr::new(ip, 0), 401);
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test; {extra}\n\
             location = /auth {{ internal; proxy_pass http://{}; }}\n\
             location / {{ auth_request /auth; proxy_pass http://{}; }} }}",
            deny.addr,
            app.host_port()
        )
    };
    let n = TestNginx::start(&http(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http("add_header X-A 1;"));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(paths(&report), ["/"], "{run}");
    assert_eq!(result(&report, "/")["answer"], "not_reached", "{run}");
    assert_eq!(http_get(listen, "site.test", "/").expect("GET").0, 401);
}
