//! A check verifies only what its answer came from, through the binary with a real nginx: a
//! server with no `server_name` that is not the default server of its listen is reached by a
//! request with no Host, not by its IP (which the default server takes); an `internal`
//! location through the `try_files` that leads to it; a named location only a backend's 404
//! or failure reaches, and a primary whose failure a fallback answers for, are not verified.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::*;

/// The result of the check of `server` in `report`.
fn result_of<'a>(report: &'a Value, server: &str) -> &'a Value {
    (report["health"]["results"].as_array().into_iter().flatten())
        .find(|r| r["server"] == server)
        .unwrap_or_else(|| panic!("no check of {server}: {report}"))
}

/// A second server of no name on a listen whose default server is `a.test`: its check went
/// with `Host: <ip>`, landed on `a.test` (200) and called it verified while it answered 502.
/// nginx gives it the requests without a Host (its implicit `server_name ""`): the check goes
/// as one, so the shadow refuses the dead upstream and verification rolls it back.
#[test]
fn a_server_with_no_name_that_is_not_the_default_is_checked_without_a_host() {
    let ip = unique_loopback();
    let a = HttpBackend::start(SocketAddr::new(ip, 0), "a");
    let b = HttpBackend::start(SocketAddr::new(ip, 0), "b");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; location / {{ proxy_pass http://{}; }} }}\n\
             server {{ listen {listen}; location / {{ proxy_pass http://{to}; }} }}",
            a.host_port()
        )
    };
    let n = TestNginx::start(&http(&b.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    // What nginx routes where: the IP to the default server, no Host to the unnamed one.
    assert_eq!(
        http_get(listen, &ip.to_string(), "/").expect("GET"),
        (200, "a".into())
    );
    assert_eq!(http10_get(listen, "/").expect("GET"), (200, "b".into()));

    n.write_http(&http(&dead.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(http10_get(listen, "/").expect("GET"), (200, "b".into()));

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    let check = result_of(&report, &listen.to_string());
    assert_eq!(check["host"], "", "{run}");
    assert_eq!(check["status"], 502, "{run}");
    // Rolled back: the unnamed server passes to the live backend again.
    assert_eq!(http10_get(listen, "/").expect("GET"), (200, "b".into()));
    assert_eq!(
        http_get(listen, "a.test", "/").expect("GET"),
        (200, "a".into())
    );
}

/// The `not_checked` entry of the plan for `what`.
/// The change is refused by the shadow, and without it is reloaded and rolled back, its
/// check of `site.test` on `path` answering 502 (the probe is off: this is about the checks).
fn refused_then_rolled_back(sr: &SafeReload, path: &str) {
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    let check = result_of(&report, "site.test");
    assert_eq!(
        (&check["path"], &check["status"]),
        (&Value::from(path), &Value::from(502)),
        "{run}"
    );
}

fn not_checked<'a>(report: &'a Value, what: &str) -> &'a Value {
    (report["health"]["not_checked"]
        .as_array()
        .into_iter()
        .flatten())
    .find(|u| u["what"] == what)
    .unwrap_or_else(|| panic!("{what} is not listed as not checked: {report}"))
}

/// An `internal` location is never requested itself (nginx answers 404 to that): the one a
/// `try_files` sends missing files to is checked through that location, so a dead backend
/// behind it is refused by the shadow and rolled back after the reload; one nothing in the
/// configuration leads to is listed as reached only by an X-Accel-Redirect.
#[test]
fn an_internal_location_is_checked_through_the_try_files_that_reaches_it() {
    let ip = unique_loopback();
    let files = HttpBackend::start(SocketAddr::new(ip, 0), "files");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let docs = tempfile::tempdir().expect("tempdir");
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test; root {};\n\
             location /files/ {{ try_files $uri /protected/missing; }}\n\
             location /protected/ {{ internal; proxy_pass http://{to}; }}\n\
             location /private/ {{ internal; proxy_pass http://{to}; }} }}",
            docs.path().display()
        )
    };
    let n = TestNginx::start(&http(&files.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "site.test", "/protected/x")
            .expect("GET")
            .0,
        404
    );
    assert_eq!(
        http_get(listen, "site.test", "/files/x").expect("GET"),
        (200, "files".into())
    );

    n.write_http(&http(&dead.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    let check = &report["health"]["results"][0];
    assert_eq!(
        (&check["what"], &check["path"], &check["status"]),
        (
            &Value::from("location /protected/"),
            &Value::from("/files/safe-reload-check"),
            &Value::from(502)
        ),
        "{run}"
    );
    let why = not_checked(&report, "location /private/")["why"].to_string();
    assert!(why.contains("reached only by an X-Accel-Redirect"), "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/files/x").expect("GET"),
        (200, "files".into())
    );
}

/// `error_page 404 = @fallback` in front of a backend that answers 200: no check makes that
/// backend answer 404, so the check made for @fallback reached the primary, and a dead
/// fallback was called verified. It is listed as not verified instead.
#[test]
fn a_named_location_only_a_backends_404_reaches_is_not_verified() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let fallback = HttpBackend::start(SocketAddr::new(ip, 0), "fallback");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ proxy_pass http://{}; proxy_intercept_errors on; \
             error_page 404 = @fallback; }}\n\
             location @fallback {{ proxy_pass http://{to}; }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&http(&fallback.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&dead.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let report = run.json();
    let why = not_checked(&report, "location @fallback")["why"].to_string();
    assert!(
        why.contains("reached only when the backend of location / answers 404"),
        "{run}"
    );
    assert_eq!(report["coverage"]["verified"], 0, "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".into())
    );
}

/// `error_page 502 = @fallback` with `proxy_intercept_errors on`: a primary that answers 502
/// is replaced by the fallback's 200, and nginx logs nothing. `/` was counted as passed; the
/// primary is now listed as not verified, since the answer does not say which one answered.
#[test]
fn a_primary_whose_502_a_fallback_replaces_is_not_verified_by_the_200() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let fallback = HttpBackend::start(SocketAddr::new(ip, 0), "fallback");
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |primary: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ proxy_pass http://{primary}; proxy_intercept_errors on; \
             error_page 502 504 = @fallback; }}\n\
             location @fallback {{ proxy_pass http://{}; }} }}",
            fallback.host_port()
        )
    };
    let n = TestNginx::start(&http(&app.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&bad.addr.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let report = run.json();
    let what = format!("location / backend http://{}", bad.addr);
    let why = not_checked(&report, &what)["why"].to_string();
    assert!(why.contains("does not say which one answered"), "{run}");
    assert_eq!(report["coverage"]["verified"], 0, "{run}");
    // What clients get: the fallback, in place of the primary's 502.
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "fallback".into())
    );
}

/// Without `proxy_intercept_errors`, `error_page 502 = @fallback` takes only nginx's own 502
/// (the primary refused, timed out, closed): nginx logs that failure for the request, and the
/// upstream error is the change's though the client got the fallback's 200.
#[test]
fn a_dead_primary_hidden_by_a_fallback_is_caught_in_the_error_log() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let fallback = HttpBackend::start(SocketAddr::new(ip, 0), "fallback");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |primary: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ proxy_pass http://{primary}; error_page 502 = @fallback; }}\n\
             location @fallback {{ proxy_pass http://{}; }} }}",
            fallback.host_port()
        )
    };
    let n = TestNginx::start(&http(&app.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&dead.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".into()),
        "{run}"
    );
}

/// `location /api/` behind `location = /api/ { return 200; }`: its check asked `/api/`, which
/// the exact location answers, so a dead backend behind `/api/` was called verified (exit 0)
/// while every other path under it answered 502. The check now asks a path under `/api/` that
/// no exact or regex location takes: the shadow refuses the dead backend, and without the
/// shadow the change is rolled back.
#[test]
fn a_prefix_location_is_checked_on_a_path_no_exact_location_takes_from_it() {
    let ip = unique_loopback();
    let api = HttpBackend::start(SocketAddr::new(ip, 0), "api");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location = /api/ {{ return 200 \"index\"; }}\n\
             location /api/ {{ proxy_pass http://{to}; }} }}"
        )
    };
    let n = TestNginx::start(&http(&api.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&dead.to_string()));
    refused_then_rolled_back(&sr, "/api/safe-reload-check");
    assert_eq!(
        http_get(listen, "site.test", "/api/x").expect("GET"),
        (200, "api".into())
    );
}

/// `location /api/` whose every path a regex location listed before it takes: no request
/// reaches its backend, so it is listed as not verified with the location that answers, never
/// counted as verified.
#[test]
fn a_prefix_location_a_regex_takes_every_path_of_is_not_verified() {
    let ip = unique_loopback();
    let api = HttpBackend::start(SocketAddr::new(ip, 0), "api");
    let other = HttpBackend::start(SocketAddr::new(ip, 0), "other");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location ~ ^/api/ {{ proxy_pass http://{}; }}\n\
             location /api/ {{ proxy_pass http://{to}; }} }}",
            other.host_port()
        )
    };
    let n = TestNginx::start(&http(&api.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&dead.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    let report = run.json();
    let why = not_checked(&report, "location /api/")["why"].to_string();
    assert!(why.contains("by location ~ ^/api/"), "{run}");
    run.expect(0);
    assert_eq!(report["coverage"]["verified"], 0, "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/api/x").expect("GET"),
        (200, "other".into())
    );
}

/// `location ~ ^/api/(v1|v2)/` behind `location ~ /v1/`: the one path derived from the regex
/// (`/api/v1/`) went to the earlier regex, so a change that made its backend answer 502 was
/// "not verified", exit 0, while every `/api/v2/` request failed. Each branch of the
/// alternation gives a path now: the check asks `/api/v2/`, the shadow refuses the change,
/// and without the shadow it is rolled back and `/api/v2/` is served again.
#[test]
fn a_regex_location_shadowed_on_one_branch_is_checked_on_another() {
    let ip = unique_loopback();
    let api = HttpBackend::start(SocketAddr::new(ip, 0), "api");
    let v1 = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let broken = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location ~ /v1/ {{ proxy_pass http://{}; }}\n\
             location ~ ^/api/(v1|v2)/ {{ proxy_pass http://{to}; }} }}",
            v1.host_port()
        )
    };
    let n = TestNginx::start(&http(&api.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&broken.addr.to_string()));
    refused_then_rolled_back(&sr, "/api/v2/");
    assert_eq!(
        http_get(listen, "site.test", "/api/v2/x").expect("GET"),
        (200, "api".into())
    );
    assert_eq!(
        http_get(listen, "site.test", "/api/v1/x").expect("GET"),
        (200, "v1".into())
    );
}

/// Two backends on a loopback address of its own: one that answers 200, one that answers 502;
/// and the address nginx listens on.
struct Backends {
    good: HttpBackend,
    bad: BadGatewayBackend,
    listen: SocketAddr,
}

impl Backends {
    fn start() -> Backends {
        let ip = unique_loopback();
        Backends {
            good: HttpBackend::start(SocketAddr::new(ip, 0), "v1"),
            bad: BadGatewayBackend::start(SocketAddr::new(ip, 0)),
            listen: SocketAddr::new(ip, free_port(ip)),
        }
    }
}

/// The change on disk is refused by the shadow (`--no-probe`); the shadow's check whose `what`
/// starts with `what` answered 502. The report.
fn refused_through(sr: &SafeReload, what: &str) -> Value {
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let check = (report["shadow"]["checks"].as_array().into_iter().flatten())
        .map(|c| &c["shadow"])
        .find(|r| r["what"].as_str().is_some_and(|w| w.starts_with(what)))
        .unwrap_or_else(|| panic!("no check of {what}: {run}"));
    assert_eq!(check["status"], 502, "{run}");
    report
}

/// A location that only rewrites (`location / { rewrite ^/(.*)$ /v1/$1 last; }`) passes
/// nowhere itself, yet every request to it reaches the backend of the location it rewrites
/// to. Its check is made on its own path: a change of where it rewrites to, onto a location
/// that already answered 502 (a half-built `/v2/`), is refused by the shadow and rolled back
/// after the reload. It was never requested, and the 502 of `/v2/` before the change made it
/// "already failing, not the cause", and last-good.
#[test]
fn a_location_that_only_rewrites_is_checked_through_the_location_it_rewrites_to() {
    let Backends { good, bad, listen } = Backends::start();
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ rewrite ^/(.*)$ /{to}/$1 last; }}\n\
             location /v1/ {{ proxy_pass http://{}; }}\n\
             location /v2/ {{ proxy_pass http://{}; }}\n}}",
            good.host_port(),
            bad.addr
        )
    };
    let n = TestNginx::start(&http("v1"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http("v2"));
    refused_through(&sr, "location /, rewritten to /v2/");
    assert_eq!(
        http_get(listen, "site.test", "/x").expect("GET").0,
        200,
        "refused: still v1"
    );

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(
        http_get(listen, "site.test", "/x").expect("GET").0,
        200,
        "rolled back to v1"
    );
}

/// A server-level `rewrite ^/shop/(.*)$ /v1/$1 last;` is checked on a path derived from its
/// regex, and an `internal` location only a rewrite leads to is verified through it, not
/// listed as reached only by an X-Accel-Redirect.
#[test]
fn a_server_level_rewrite_is_checked_on_a_path_its_regex_matches() {
    let Backends { good, bad, listen } = Backends::start();
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             rewrite ^/shop/(.*)$ /{to}/$1 last;\n\
             location / {{ proxy_pass http://{g}; }}\n\
             location /v1/ {{ internal; proxy_pass http://{g}; }}\n\
             location /v2/ {{ internal; proxy_pass http://{b}; }}\n}}",
            g = good.host_port(),
            b = bad.addr
        )
    };
    let n = TestNginx::start(&http("v1"));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "site.test", "/shop/a").expect("GET").0,
        200
    );
    n.write_http(&http("v2"));
    let report = refused_through(&sr, "rewrite ^/shop/(.*)$");
    let unchecked = report["health"]["not_checked"].to_string() + &report["shadow"].to_string();
    assert!(!unchecked.contains("location /v2/\""), "{report}");
    assert_eq!(
        http_get(listen, "site.test", "/shop/a").expect("GET").0,
        200,
        "refused: still v1"
    );
}

/// `location /old { rewrite ^/old/(.*)$ /legacy/$1 last; }`: the location's own path `/old`
/// is not what the rewrite takes, so the check is made on a path derived from the rewrite's
/// regex that nginx brings to the location (`/old/...`), and the `internal` location it
/// rewrites to is verified through it. A 502 there went live, "not verified".
#[test]
fn a_rewrite_that_does_not_take_its_locations_own_path_is_checked_on_one_it_takes() {
    let Backends { good, bad, listen } = Backends::start();
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ proxy_pass http://{g}; }}\n\
             location /old {{ rewrite ^/old/(.*)$ /legacy/$1 last; }}\n\
             location /legacy/ {{ internal; proxy_pass http://{to}; }}\n}}",
            g = good.host_port()
        )
    };
    let n = TestNginx::start(&http(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&bad.addr.to_string()));
    let report = refused_through(&sr, "location /old, rewritten to /legacy/");
    assert!(
        report["shadow"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("location /old, rewritten to /legacy/")),
        "{report}"
    );
    assert_eq!(http_get(listen, "site.test", "/old/x").expect("GET").0, 200);
}
