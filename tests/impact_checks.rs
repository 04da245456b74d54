//! Checks for every server a change affects, through the binary with a real nginx: an upstream
//! changed in a shared file, a map that routes a second name or a wildcard server's Host, a
//! wildcard listen beside a specific one, listens spoken to as they are (`ssl on;`,
//! `proxy_protocol`), statuses nginx makes itself (`return 444`, `auth_basic`), slow but
//! healthy backends, a snippet included inside a location, a change to a map, added and
//! removed servers, and the impact the run reports.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// Write `http`, run `-y --json` plus `flags`; the run and its report.
fn reload(n: &TestNginx, sr: &SafeReload, http: &str, flags: &[&str]) -> (Run, Value) {
    n.write_http(http);
    let mut args = vec!["-y", "--json"];
    args.extend_from_slice(flags);
    let run = sr.run(&args);
    let report = run.json();
    (run, report)
}

/// One string field of every health result in `report`, in order.
fn result_strs<'a>(report: &'a Value, field: &str) -> Vec<&'a str> {
    (report["health"]["results"]
        .as_array()
        .expect("results")
        .iter())
    .filter_map(|r| r[field].as_str())
    .collect()
}

/// A self-signed certificate and key for `tls.test` under `dir`, as config paths.
fn tls_pair(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = self_signed(dir, "tls.test");
    (cert.display().to_string(), key.display().to_string())
}

/// 40 sites in their own file, their upstreams in another: the case a file-based selection
/// missed (exit 0 "verified" while the changed site answered 502). The shadow sends the same
/// checks and refuses the change before the reload; without it, verification after the reload
/// rolls it back.
#[test]
fn an_upstream_changed_in_a_shared_file_is_checked_on_the_server_that_uses_it() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let upstreams = |bad: Option<usize>| -> String {
        (0..40)
            .map(|i| {
                let to = if Some(i) == bad {
                    closing.addr.to_string()
                } else {
                    good.host_port()
                };
                format!("upstream up{i} {{ server {to}; }}\n")
            })
            .collect()
    };
    let sites: String = (0..40)
        .map(|i| {
            format!(
                "server {{ listen {listen}; server_name s{i}.test; \
                 location / {{ proxy_pass http://up{i}; }} }}\n"
            )
        })
        .collect();
    let n = TestNginx::start("include conf.d/*.conf;");
    let confd = n.conf.parent().expect("conf dir").join("conf.d");
    std::fs::create_dir_all(&confd).expect("mkdir conf.d");
    std::fs::write(confd.join("00-upstreams.conf"), upstreams(None)).expect("write");
    std::fs::write(confd.join("sites.conf"), &sites).expect("write");
    let sr = SafeReload::new(&n);
    sr.run(&["-y", "--force"]).expect(0);
    sr.init();

    std::fs::write(confd.join("00-upstreams.conf"), upstreams(Some(13))).expect("write");
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    let report = run.json();
    let impact = &report["impact"];
    // The 40 sites and the harness's control server.
    assert_eq!(impact["total"], 41, "{run}");
    let affected = impact["affected"].as_array().expect("affected");
    assert_eq!(affected.len(), 1, "{run}");
    assert_eq!(affected[0]["label"], "s13.test");
    assert_eq!(affected[0]["reasons"][0]["what"], "upstream up13");
    assert_eq!(
        affected[0]["reasons"][0]["file"],
        "conf.d/00-upstreams.conf"
    );
    assert_eq!(affected[0]["reasons"][0]["line"], 14);
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        (report["shadow"]["reason"].as_str()).is_some_and(|r| r.starts_with("server s13.test (location / at conf.d/sites.conf:14):")),
        "{run}"
    );
    // Refused before the reload: nginx still runs the good upstream.
    let (status, body) = http_get(listen, "s13.test", "/").expect("GET");
    assert_eq!((status, body.as_str()), (200, "good"), "{run}");

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    assert_eq!(
        report["impact"]["affected"][0]["label"], "s13.test",
        "{run}"
    );
    let hosts = result_strs(&report, "host");
    assert_eq!(hosts, ["s13.test"], "{run}");
    // Rolled back: the site answers again through the restored upstream.
    let (status, body) = http_get(listen, "s13.test", "/").expect("GET");
    assert_eq!((status, body.as_str()), (200, "good"), "{run}");
}

/// The preview says what the change affects, before reloading.
#[test]
fn the_preview_names_the_affected_servers_with_why() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |extra: &str| {
        format!(
            "upstream api {{ server {}; {extra} }}\n\
             server {{ listen {listen}; server_name a.test; location / {{ proxy_pass http://api; }} }}\n\
             server {{ listen {listen}; server_name b.test; location / {{ proxy_pass http://{}; }} }}",
            good.host_port(),
            good.host_port()
        )
    };
    let n = TestNginx::start(&http(""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http("keepalive 4;"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    let err = &run.stderr;
    assert!(
        err.contains("this change affects 1 of 3 servers: a.test (upstream api, nginx.conf:"),
        "{run}"
    );
}

/// A healthy backend that takes 1.1 s and a harmless change: the request's own timeout is not
/// cut by the window, so this is no failure.
#[test]
fn a_slow_healthy_backend_and_a_harmless_change_is_verified() {
    let ip = unique_loopback();
    let slow = HttpBackend::start_slow(SocketAddr::new(ip, 0), "slow", Duration::from_millis(1100));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test; {extra} \
             location / {{ proxy_pass http://{}; proxy_read_timeout 5s; }} }}",
            slow.host_port()
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &site("add_header X-A 1;"), &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(report["outcome"], "reloaded", "{run}");
    let (status, _) = http_get(listen, "site.test", "/").expect("GET");
    assert_eq!(status, 200);
}

/// One server with 40 proxied locations to a 30 ms backend: a round runs its requests
/// concurrently, so three rounds fit the window.
#[test]
fn forty_proxied_locations_to_a_30ms_backend_fit_the_window() {
    let ip = unique_loopback();
    let slow = HttpBackend::start_slow(SocketAddr::new(ip, 0), "b", Duration::from_millis(30));
    let listen = SocketAddr::new(ip, free_port(ip));
    let locations: String = (0..40)
        .map(|i| {
            format!(
                "location /l{i}/ {{ proxy_pass http://{}; }}\n",
                slow.host_port()
            )
        })
        .collect();
    let site = |extra: &str| {
        format!("server {{ listen {listen}; server_name site.test; {extra}\n{locations} }}")
    };
    let n = TestNginx::builder().http(&site("")).workers(2).start();
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &site("add_header X-A 1;"), &[]);
    assert_eq!(run.code, 0, "{run}");
    let results = report["health"]["results"].as_array().expect("results");
    assert_eq!(results.len(), 40, "{run}");
    assert!(results.iter().all(|r| r["status"] == 200), "{run}");
    assert_eq!(http_get(listen, "site.test", "/l7/").expect("GET").0, 200);
}

/// `map $host $pool` sends the second name to another upstream: that name is checked too.
#[test]
fn a_map_that_routes_a_second_server_name_is_checked_on_that_name() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |second: &str| {
        format!(
            "upstream one {{ server {}; }}\nupstream two {{ server {second}; }}\n\
             map $host $pool {{ default one; b.test two; }}\n\
             server {{ listen {listen}; server_name a.test b.test; \
             location / {{ proxy_pass http://$pool; }} }}",
            good.host_port()
        )
    };
    let n = TestNginx::start(&http(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(
        &n,
        &sr,
        &http(&closing.addr.to_string()),
        &["--no-probe", "--no-shadow"],
    );
    assert_eq!(run.code, 3, "{run}");
    let hosts = result_strs(&report, "host");
    assert!(hosts.contains(&"b.test"), "{run}");
    assert_eq!(
        http_get(listen, "b.test", "/").expect("GET").0,
        200,
        "{run}"
    );
}

/// A wildcard server whose `map $host` sends one exact Host to another upstream: that Host
/// gets its own check, so a change that breaks only that upstream is caught (refused by the
/// shadow, rolled back without it); the regex key is checked on a Host derived from it.
#[test]
fn a_host_a_map_routes_to_another_upstream_of_a_wildcard_server_is_checked() {
    let ip = unique_loopback();
    let (one, two) = (
        HttpBackend::start(SocketAddr::new(ip, 0), "one"),
        HttpBackend::start(SocketAddr::new(ip, 0), "two"),
    );
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |second: &str| {
        format!(
            "upstream one {{ server {}; }}\nupstream two {{ server {second}; }}\n\
             upstream three {{ server {}; }}\n\
             map $host $pool {{ default one; api.example.test two; ~^v[0-9]+\\.example\\.test$ three; }}\n\
             server {{ listen {listen}; server_name *.example.test; \
             location / {{ proxy_pass http://$pool; }} }}",
            one.host_port(),
            one.host_port()
        )
    };
    let n = TestNginx::start(&http(&two.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();

    let (run, report) = reload(&n, &sr, &http(&closing.addr.to_string()), &["--no-probe"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert_eq!(
        http_get(listen, "api.example.test", "/").expect("GET"),
        (200, "two".into()),
        "{run}"
    );

    let (run, report) = reload(
        &n,
        &sr,
        &http(&closing.addr.to_string()),
        &["--no-probe", "--no-shadow"],
    );
    assert_eq!(run.code, 3, "{run}");
    let routed = (report["health"]["results"]
        .as_array()
        .expect("results")
        .iter())
    .find(|r| r["host"] == "api.example.test")
    .unwrap_or_else(|| panic!("no check of the map's Host: {run}"));
    assert_eq!(routed["status"], 502, "{run}");
    assert_eq!(
        routed["what"], "location /, Host routed by map $pool",
        "{run}"
    );
    let hosts = result_strs(&report, "host");
    assert!(hosts.contains(&"v0.example.test"), "{run}");
    // Rolled back: that Host reaches its upstream again, the wildcard's own Host too.
    assert_eq!(
        http_get(listen, "api.example.test", "/").expect("GET"),
        (200, "two".into()),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "www.example.test", "/").expect("GET"),
        (200, "one".into())
    );
}

/// `map $host` with `hostnames`, a wildcard and a regex key in front of a wildcard server:
/// neither key named a Host to send, so a change that made every `shop-N` tenant's backend
/// answer 502 was "verified 0 of 1", exit 0. Each key now gets a Host derived from it that the
/// map really routes there and that reaches this server: the shadow refuses the change, and
/// without it the change is rolled back and the tenants are served again.
#[test]
fn a_map_regex_key_tenant_group_broken_by_a_change_is_caught() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let eu = HttpBackend::start(SocketAddr::new(ip, 0), "eu");
    let shop = HttpBackend::start(SocketAddr::new(ip, 0), "shop");
    let broken = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |shops: &str| {
        format!(
            "map $host $tenant_pool {{\n hostnames;\n a.map.test {app};\n \
             *.eu.map.test {eu};\n ~^shop-(\\d+)\\.map\\.test$ {shops};\n default {app};\n}}\n\
             server {{ listen {listen}; server_name *.map.test; \
             location / {{ proxy_pass http://$tenant_pool; }} }}",
            app = app.host_port(),
            eu = eu.host_port(),
        )
    };
    let n = TestNginx::start(&http(&shop.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "shop-7.map.test", "/").expect("GET"),
        (200, "shop".into())
    );

    let (run, report) = reload(&n, &sr, &http(&broken.addr.to_string()), &[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert_eq!(
        http_get(listen, "shop-7.map.test", "/").expect("GET"),
        (200, "shop".into()),
        "refused: nginx still runs the old map: {run}"
    );

    let (run, report) = reload(&n, &sr, &http(&broken.addr.to_string()), &["--no-shadow"]);
    assert_eq!(run.code, 3, "{run}");
    let results = report["health"]["results"].as_array().expect("results");
    let of = |host: &str| {
        (results.iter())
            .find(|r| r["host"] == host)
            .unwrap_or_else(|| panic!("no check of {host}: {run}"))
    };
    assert_eq!(of("shop-0.map.test")["status"], 502, "{run}");
    assert_eq!(
        of("shop-0.map.test")["what"],
        "location /, Host routed by map $tenant_pool",
        "{run}"
    );
    assert_eq!(of("safe-reload-check.eu.map.test")["status"], 200, "{run}");
    let not_verified = report["coverage"]["not_verified"].to_string();
    assert!(!not_verified.contains("map $tenant_pool"), "{run}");
    // Rolled back: every tenant group reaches its own backend again.
    for (host, body) in [
        ("shop-7.map.test", "shop"),
        ("shop-0.map.test", "shop"),
        ("x.eu.map.test", "eu"),
        ("a.map.test", "app"),
        ("b.map.test", "app"),
    ] {
        assert_eq!(
            http_get(listen, host, "/").expect("GET"),
            (200, body.into()),
            "{host}: {run}"
        );
    }
}

/// `map $http_host` sees the Host header as sent, with the port: a regex key that names the
/// port (`~^shop\.test:PORT$`) is checked on a Host sent to that port, so a change that makes
/// its backend answer 502 is rolled back.
#[test]
fn a_map_on_the_host_header_checks_a_regex_key_that_carries_the_port() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let shop = HttpBackend::start(SocketAddr::new(ip, 0), "shop");
    let broken = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |shops: &str| {
        format!(
            "map $http_host $pool {{ default {app}; ~^shop\\.test:{port}$ {shops}; }}\n\
             server {{ listen {listen} default_server; server_name app.test; \
             location / {{ proxy_pass http://$pool; }} }}",
            app = app.host_port(),
            port = listen.port(),
        )
    };
    let n = TestNginx::start(&http(&shop.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &http(&broken.addr.to_string()), &["--no-shadow"]);
    assert_eq!(run.code, 3, "{run}");
    let hosts = result_strs(&report, "host");
    assert!(hosts.contains(&"shop.test"), "{run}");
    let header = format!("shop.test:{}", listen.port());
    assert_eq!(
        http_get(listen, &header, "/").expect("GET"),
        (200, "shop".into()),
        "rolled back: {run}"
    );
}

/// A server whose only name is a regex (`~^(?<tenant>[a-z]+)\.shop\.test$`): no Host was
/// derived from it, so no request reached it and a change that made its backend answer 502
/// went live unverified. It is checked on a Host derived from the regex (`a.shop.test`) that
/// nginx gives it: the shadow refuses the change, and without it the change is rolled back.
#[test]
fn a_server_named_only_by_a_regex_is_checked_on_a_host_derived_from_it() {
    let ip = unique_loopback();
    let shop = HttpBackend::start(SocketAddr::new(ip, 0), "shop");
    let other = HttpBackend::start(SocketAddr::new(ip, 0), "other");
    let broken = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |to: &str| {
        format!(
            "server {{ listen {listen} default_server; server_name other.test; \
             location / {{ proxy_pass http://{}; }} }}\n\
             server {{ listen {listen}; server_name ~^(?<tenant>[a-z]+)\\.shop\\.test$; \
             location / {{ proxy_pass http://{to}; }} }}",
            other.host_port()
        )
    };
    let n = TestNginx::start(&http(&shop.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();

    let (run, report) = reload(&n, &sr, &http(&broken.addr.to_string()), &[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(report["shadow"]["state"], "refused", "{run}");

    let (run, report) = reload(&n, &sr, &http(&broken.addr.to_string()), &["--no-shadow"]);
    assert_eq!(run.code, 3, "{run}");
    let check = (report["health"]["results"]
        .as_array()
        .expect("results")
        .iter())
    .find(|r| r["host"] == "a.shop.test")
    .unwrap_or_else(|| panic!("no check on a Host the regex matches: {run}"));
    assert_eq!(check["status"], 502, "{run}");
    // Rolled back: every tenant is served again, the other server too.
    assert_eq!(
        http_get(listen, "acme.shop.test", "/").expect("GET"),
        (200, "shop".into()),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "other.test", "/").expect("GET"),
        (200, "other".into())
    );
}

/// `listen PORT` beside `listen 127.0.0.1:PORT`: the wildcard server is reached through an
/// address the specific one does not claim, not answered by the other server.
#[test]
fn a_wildcard_listen_is_checked_where_the_specific_listen_does_not_answer() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let port = free_port(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let http = |wild: &str| {
        format!(
            "server {{ listen {port}; server_name w.test; location / {{ proxy_pass http://{wild}; }} }}\n\
             server {{ listen 127.0.0.1:{port}; server_name s.test; \
             location / {{ proxy_pass http://{}; }} }}",
            good.host_port()
        )
    };
    let n = TestNginx::start(&http(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(
        &n,
        &sr,
        &http(&closing.addr.to_string()),
        &["--no-probe", "--no-shadow"],
    );
    assert_eq!(run.code, 3, "{run}");
    let first = &report["health"]["results"][0];
    assert_eq!(first["host"], "w.test", "{run}");
    assert_eq!(first["connect"], format!("127.0.0.2:{port}"), "{run}");
    let back = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port);
    assert_eq!(http_get(back, "w.test", "/").expect("GET").0, 200);
}

/// A `proxy_protocol` listen and a location that closes unauthenticated requests with
/// `return 444`: a harmless change is verified, the 444 said to be nginx's own answer.
#[test]
fn proxy_protocol_listens_and_return_444_do_not_fail_a_harmless_change() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let pp = SocketAddr::new(ip, free_port(ip));
    let plain = SocketAddr::new(ip, free_port(ip));
    let http = |extra: &str| {
        format!(
            "server {{ listen {pp} proxy_protocol; server_name pp.test; {extra} \
             location / {{ proxy_pass http://{b}; }} }}\n\
             server {{ listen {plain}; server_name gate.test; {extra} \
             location /api/ {{ if ($http_x_key = \"\") {{ return 444; }} proxy_pass http://{b}; }} }}",
            b = good.host_port()
        )
    };
    let n = TestNginx::start(&http(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &http("add_header X-A 1;"), &[]);
    assert_eq!(run.code, 0, "{run}");
    let results = report["health"]["results"].as_array().expect("results");
    let pp_result = results
        .iter()
        .find(|r| r["host"] == "pp.test")
        .expect("pp check");
    assert_eq!(
        (
            pp_result["status"].clone(),
            pp_result["proxy_protocol"].clone()
        ),
        (200.into(), true.into()),
        "{run}"
    );
    let gated = results
        .iter()
        .find(|r| r["host"] == "gate.test")
        .expect("gate check");
    assert_eq!(gated["answer"], "not_reached", "{run}");
    // With the header, the location proxies: that is what clients with a key get.
    let (status, _) = http_get(plain, "gate.test", "/api/").map_or((0, String::new()), |r| r);
    assert_eq!(status, 0, "no answer without the key (444)");
}

/// `ssl on;` (the directive form) makes the listen TLS: the check speaks TLS and sees the 502.
#[test]
fn ssl_on_is_spoken_to_over_tls() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = tls_pair(certs.path());
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; ssl on; server_name .tls.test; ssl_certificate {cert}; \
             ssl_certificate_key {key}; location / {{ proxy_pass http://{to}; }} }}"
        )
    };
    let n = TestNginx::start(&http(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(
        &n,
        &sr,
        &http(&closing.addr.to_string()),
        &["--no-probe", "--no-shadow"],
    );
    assert_eq!(run.code, 3, "{run}");
    let first = &report["health"]["results"][0];
    assert_eq!(
        (first["tls"].clone(), first["host"].clone()),
        (true.into(), "tls.test".into()),
        "{run}"
    );
    assert_eq!(first["status"], 502, "{run}");
}

/// `auth_basic` in front of the upstream: without credentials the 401 is nginx's own answer,
/// not a pass; `--health http://user:pass@host/` gets through to the backend and sees the 502.
#[test]
fn auth_basic_in_front_of_the_upstream_with_credentials_in_the_url() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().expect("tempdir");
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, "ops:{PLAIN}s3cret\n").expect("write htpasswd");
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test; auth_basic \"x\"; \
             auth_basic_user_file {}; location / {{ proxy_pass http://{to}; }} }}",
            users.display()
        )
    };
    let n = TestNginx::start(&http(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    // Derived checks only: the 401 is reported as not reaching the backend.
    let harmless =
        http(&good.host_port()).replace("auth_basic \"x\";", "auth_basic \"x\"; add_header X-A 1;");
    let (run, report) = reload(&n, &sr, &harmless, &[]);
    let first = &report["health"]["results"][0];
    assert_eq!(first["status"], 401, "{run}");
    assert_eq!(first["answer"], "not_reached", "{run}");
    // With credentials the request reaches the backend and the 502 rolls the change back.
    let url = format!("http://ops:s3cret@site.test:{}/", listen.port());
    let resolve = format!("site.test:{}:{}", listen.port(), listen.ip());
    let (run, report) = reload(
        &n,
        &sr,
        &http(&closing.addr.to_string()),
        &[
            "--no-probe",
            "--no-shadow",
            "--health",
            &url,
            "--resolve",
            &resolve,
        ],
    );
    assert_eq!(run.code, 3, "{run}");
    assert!(
        !run.to_string().contains("s3cret"),
        "the password is never shown: {run}"
    );
    assert_eq!(report["health"]["results"][0]["status"], 502, "{run}");
    let history = sr.run(&["history", "--json"]).to_string();
    assert!(!history.contains("s3cret"), "nor stored: {history}");
}

/// Added and removed servers: the added one is affected and checked, the removed one listed
/// and no longer served.
#[test]
fn added_and_removed_servers_are_reported() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let old = HttpBackend::start(SocketAddr::new(ip, 0), "old");
    let listen = SocketAddr::new(ip, free_port(ip));
    let server = |name: &str, backend: &HttpBackend| {
        format!(
            "server {{ listen {listen}; server_name {name}; location / {{ proxy_pass http://{}; }} }}\n",
            backend.host_port()
        )
    };
    let n = TestNginx::start(&format!(
        "{}{}",
        server("a.test", &good),
        server("old.test", &old)
    ));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "old.test", "/").expect("GET"),
        (200, "old".into())
    );
    let (run, report) = reload(
        &n,
        &sr,
        &format!("{}{}", server("a.test", &good), server("new.test", &good)),
        &[],
    );
    assert_eq!(run.code, 0, "{run}");
    let impact = &report["impact"];
    assert_eq!(impact["affected"][0]["label"], "new.test", "{run}");
    assert_eq!(impact["affected"][0]["reasons"][0]["what"], "new server");
    assert_eq!(impact["removed"][0]["label"], "old.test", "{run}");
    let hosts = result_strs(&report, "host");
    assert_eq!(hosts, ["new.test"], "{run}");
    // The added server answers; the removed one's Host falls to the listen's default server.
    assert_eq!(
        http_get(listen, "new.test", "/").expect("GET"),
        (200, "good".into())
    );
    assert_eq!(
        http_get(listen, "old.test", "/").expect("GET"),
        (200, "good".into())
    );
}

/// A `server_name` alias added, then one of two listens removed: the same server changed
/// (it was labelled "new server b.example; removed: b.example"), checked on the new name, and
/// nginx serves the alias afterwards.
#[test]
fn an_added_alias_or_a_removed_listen_is_a_changed_server_not_new_and_removed() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let listen = SocketAddr::new(ip, free_port(ip));
    let second = SocketAddr::new(ip, free_port(ip));
    let server = |names: &str, listens: &str| {
        format!(
            "server {{ {listens} server_name {names}; location / {{ proxy_pass http://{}; }} }}\n",
            good.host_port()
        )
    };
    let both = format!("listen {listen}; listen {second};");
    let n = TestNginx::start(&server("b.example", &both));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &server("b.example c.example", &both), &[]);
    assert_eq!(run.code, 0, "{run}");
    let impact = &report["impact"];
    assert_eq!(impact["affected"][0]["label"], "b.example", "{run}");
    assert_eq!(
        impact["affected"][0]["reasons"][0]["what"], "server_name adds c.example",
        "{run}"
    );
    assert_eq!(impact["removed"].as_array().map(Vec::len), Some(0), "{run}");
    assert!(result_strs(&report, "host").contains(&"c.example"), "{run}");
    assert_eq!(
        http_get(listen, "c.example", "/").expect("GET"),
        (200, "good".into())
    );

    let (run, report) = reload(
        &n,
        &sr,
        &server("b.example c.example", &format!("listen {listen};")),
        &[],
    );
    assert_eq!(run.code, 0, "{run}");
    let impact = &report["impact"];
    assert_eq!(
        impact["affected"][0]["reasons"][0]["what"],
        format!("listen removes {second}").as_str(),
        "{run}"
    );
    assert_eq!(impact["removed"].as_array().map(Vec::len), Some(0), "{run}");
    assert!(http_get(second, "b.example", "/").is_err(), "{run}");
    assert_eq!(
        http_get(listen, "b.example", "/").expect("GET"),
        (200, "good".into())
    );
}

/// An http-level `proxy_set_header` change affects every server; the checks stay bounded and
/// the count of affected servers is said.
#[test]
fn an_http_level_change_affects_every_server() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let listen = SocketAddr::new(ip, free_port(ip));
    let sites: String = (0..30)
        .map(|i| {
            format!(
                "server {{ listen {listen}; server_name s{i}.test; location / {{ proxy_pass http://{}; }} }}\n",
                good.host_port()
            )
        })
        .collect();
    let n = TestNginx::start(&sites);
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &format!("proxy_set_header X-A 1;\n{sites}"), &[]);
    assert_eq!(run.code, 0, "{run}");
    // 30 sites plus the harness's control server.
    assert_eq!(
        report["impact"]["affected"].as_array().map(Vec::len),
        Some(31),
        "{run}"
    );
    assert_eq!(
        report["impact"]["affected"][5]["reasons"][0]["what"],
        "http: proxy_set_header"
    );
    let results = report["health"]["results"].as_array().expect("results");
    assert!(results.len() >= 30 && results.len() <= 256, "{run}");
    // Said to the operator too, before the reload.
    n.write_http(&format!("proxy_set_header X-A 2;\n{sites}"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr.contains("this change affects 31 of 31 servers"),
        "{run}"
    );
    for i in [0, 17, 29] {
        let host = format!("s{i}.test");
        assert_eq!(
            http_get(listen, &host, "/").expect("GET"),
            (200, "good".into())
        );
    }
}

/// A change in a file included inside a `location`: only the server that includes it is
/// affected, its check sees the 502 the change causes, and the change is rolled back.
#[test]
fn a_change_in_a_file_included_inside_a_location_is_checked_on_that_server() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let n = TestNginx::start("");
    let snippets = n.conf.parent().expect("conf dir").join("snippets");
    std::fs::create_dir_all(&snippets).expect("mkdir snippets");
    let snippet = |to: &str| format!("proxy_set_header X-A 1;\nproxy_pass http://{to};\n");
    std::fs::write(snippets.join("app.conf"), snippet(&good.host_port())).expect("write");
    n.write_http(&format!(
        "server {{ listen {listen}; server_name a.test; \
         location /app/ {{ include snippets/app.conf; }} }}\n\
         server {{ listen {listen}; server_name b.test; location / {{ proxy_pass http://{}; }} }}",
        good.host_port()
    ));
    let sr = SafeReload::new(&n);
    sr.run(&["-y", "--force"]).expect(0);
    sr.init();

    std::fs::write(
        snippets.join("app.conf"),
        snippet(&closing.addr.to_string()),
    )
    .expect("write");
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    let affected = report["impact"]["affected"].as_array().expect("affected");
    assert_eq!(affected.len(), 1, "{run}");
    assert_eq!(affected[0]["label"], "a.test", "{run}");
    assert_eq!(
        affected[0]["reasons"][0]["what"]
            .as_str()
            .map(|w| w.contains("server block")),
        Some(true),
        "{run}"
    );
    assert_eq!(
        affected[0]["reasons"][0]["file"], "snippets/app.conf",
        "{run}"
    );
    let r = &report["health"]["results"][0];
    assert_eq!(
        (&r["host"], &r["path"]),
        (&Value::from("a.test"), &Value::from("/app/")),
        "{run}"
    );
    assert_eq!(r["status"], 502, "{run}");
    // Rolled back: the location answers through the restored snippet.
    assert_eq!(
        http_get(listen, "a.test", "/app/").expect("GET"),
        (200, "good".into()),
        "{run}"
    );
}

/// A change to a `map` itself (a value the second name gets): the server whose `*_pass`
/// goes through it is affected because of the map, that name is checked and the change is
/// rolled back.
#[test]
fn a_map_change_is_checked_on_the_host_it_changes() {
    let ip = unique_loopback();
    let (one, two) = (
        HttpBackend::start(SocketAddr::new(ip, 0), "one"),
        HttpBackend::start(SocketAddr::new(ip, 0), "two"),
    );
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |b: &str| {
        format!(
            "upstream one {{ server {}; }}\nupstream two {{ server {}; }}\n\
             upstream three {{ server {}; }}\n\
             map $host $pool {{ default one; b.test {b}; }}\n\
             server {{ listen {listen}; server_name a.test b.test; \
             location / {{ proxy_pass http://$pool; }} }}\n\
             server {{ listen {listen}; server_name c.test; location / {{ proxy_pass http://one; }} }}",
            one.host_port(),
            two.host_port(),
            closing.addr
        )
    };
    let n = TestNginx::start(&http("two"));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &http("three"), &["--no-probe", "--no-shadow"]);
    assert_eq!(run.code, 3, "{run}");
    let affected = report["impact"]["affected"].as_array().expect("affected");
    assert_eq!(affected.len(), 1, "only the server using the map: {run}");
    assert_eq!(affected[0]["reasons"][0]["what"], "map $pool", "{run}");
    let failed = (report["health"]["results"]
        .as_array()
        .expect("results")
        .iter())
    .find(|r| r["host"] == "b.test")
    .unwrap_or_else(|| panic!("no check of b.test: {run}"));
    assert_eq!(failed["status"], 502, "{run}");
    assert_eq!(
        http_get(listen, "b.test", "/").expect("GET"),
        (200, "two".into()),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "a.test", "/").expect("GET"),
        (200, "one".into())
    );
}

/// `try_files ... @app` and a regex location: both get a request, through the path that
/// reaches them.
#[test]
fn named_and_regex_locations_are_checked() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |app: &str, php: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test; root /nonexistent;\n\
             location / {{ try_files $uri @app; }}\n location @app {{ proxy_pass http://{app}; }}\n\
             location ~ \\.php$ {{ proxy_pass http://{php}; }} }}"
        )
    };
    let g = good.host_port();
    let n = TestNginx::start(&http(&g, &g));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(
        &n,
        &sr,
        &http(&g, &closing.addr.to_string()),
        &["--no-probe", "--no-shadow"],
    );
    assert_eq!(run.code, 3, "the regex location's 502 is seen: {run}");
    let paths = result_strs(&report, "path");
    assert!(paths.contains(&"/safe-reload-check"), "{run}");
    let (run, report) = reload(
        &n,
        &sr,
        &http(&closing.addr.to_string(), &g),
        &["--no-probe", "--no-shadow"],
    );
    assert_eq!(run.code, 3, "the named location's 502 is seen: {run}");
    assert_eq!(
        report["health"]["results"][0]["what"], "location @app",
        "{run}"
    );
    assert_eq!(http_get(listen, "site.test", "/x").expect("GET").0, 200);
}

/// 300 proxied locations in one server, one of them changed to a backend that fails: more
/// checks than a round holds, and the location the change touched is among them, first.
#[test]
fn the_location_a_change_touched_is_checked_first_when_not_all_fit() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |last: &str| {
        let locations: String = (0..300)
            .map(|i| {
                let to = if i == 299 {
                    last.to_string()
                } else {
                    good.host_port()
                };
                format!("location /l{i}/ {{ proxy_pass http://{to}; }}\n")
            })
            .collect();
        format!("server {{ listen {listen}; server_name site.test;\n{locations} }}")
    };
    let n = TestNginx::start(&site(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &site(&closing.addr.to_string()), &["--no-probe"]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        (report["shadow"]["reason"].as_str()).is_some_and(|r| r.contains("/l299/")),
        "{run}"
    );
    // Still bounded.
    assert_eq!(
        report["shadow"]["checks"].as_array().map(Vec::len),
        Some(256),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "site.test", "/l299/").expect("GET"),
        (200, "good".into()),
        "refused before the reload: {run}"
    );
}

/// An http-level change affects all 300 sites, more than a round holds one check each; an
/// upstream changed in the same edit is one site's, and that site is checked whatever the
/// even spread of the others leaves out: its 502 rolls the change back, and the sites left
/// without a check are counted.
#[test]
fn the_server_whose_upstream_changed_is_checked_when_every_server_is_affected() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let upstreams = |bad: Option<usize>| -> String {
        (0..300)
            .map(|i| {
                let to = if Some(i) == bad {
                    closing.addr.to_string()
                } else {
                    good.host_port()
                };
                format!("upstream up{i} {{ server {to}; }}\n")
            })
            .collect()
    };
    let sites: String = (0..300)
        .map(|i| {
            format!(
                "server {{ listen {listen}; server_name s{i}.test; \
                 location / {{ proxy_pass http://up{i}; }} }}\n"
            )
        })
        .collect();
    let n = TestNginx::start("include conf.d/*.conf;");
    let confd = n.conf.parent().expect("conf dir").join("conf.d");
    std::fs::create_dir_all(&confd).expect("mkdir conf.d");
    std::fs::write(confd.join("00-upstreams.conf"), upstreams(None)).expect("write");
    std::fs::write(confd.join("sites.conf"), &sites).expect("write");
    let sr = SafeReload::new(&n);
    sr.run(&["-y", "--force"]).expect(0);
    sr.init();

    // s299 is one an even spread of 256 over 300 leaves out.
    std::fs::write(confd.join("00-upstreams.conf"), upstreams(Some(299))).expect("write");
    let (run, report) = reload(
        &n,
        &sr,
        "proxy_set_header X-Edit 1;\ninclude conf.d/*.conf;",
        &["--no-probe", "--no-shadow"],
    );
    assert_eq!(run.code, 3, "{run}");
    // The 300 sites and the harness's control server.
    assert_eq!(
        report["impact"]["affected"].as_array().map(Vec::len),
        Some(301),
        "{run}"
    );
    let failed = (report["health"]["results"].as_array().into_iter().flatten())
        .find(|r| r["host"] == "s299.test")
        .unwrap_or_else(|| panic!("s299.test was not checked: {run}"));
    assert_eq!(failed["status"], 502, "{run}");
    let not_checked = report["health"]["not_checked"]
        .as_array()
        .expect("not checked");
    let servers_left = not_checked.iter().filter(|u| u["what"] == "server").count();
    assert_eq!(
        servers_left,
        300 - 256 + 1,
        "and the control server, which has no proxied location: {run}"
    );
    assert_eq!(
        http_get(listen, "s299.test", "/").expect("GET"),
        (200, "good".into()),
        "rolled back: {run}"
    );
}

/// A site copied from another that kept its `server_name`, in a file that sorts first
/// (`blog.conf` before `shop.conf`): nginx loads it, warning "conflicting server name ...
/// ignored", and serves the shop's clients from the blog's backend. It was "live and
/// verified": the check for shop.test reached the copy, which answered. It is refused, naming
/// both servers, and the shop's clients still get the shop. Adding the name to another
/// existing server that sorts first is refused alike; moving the name (removed from one,
/// added to the other) goes live.
#[test]
fn a_server_name_another_server_takes_from_the_one_that_answered_it_is_refused() {
    let ip = unique_loopback();
    let shop = HttpBackend::start(SocketAddr::new(ip, 0), "shop");
    let blog = HttpBackend::start(SocketAddr::new(ip, 0), "blog");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |names: &str, backend: &HttpBackend| {
        format!(
            "server {{ listen {listen}; server_name {names}; \
             location / {{ proxy_pass http://{}; }} }}\n",
            backend.host_port()
        )
    };
    let mut n = TestNginx::builder().http("include sites/*.conf;").prepare();
    let sites = n.prefix.join("sites");
    std::fs::create_dir_all(&sites).expect("sites");
    let write = |file: &str, text: &str| std::fs::write(sites.join(file), text).expect("write");
    write("shop.conf", &site("shop.test", &shop));
    write("a-blog.conf", &site("blog.test", &blog));
    n.restart();
    let sr = SafeReload::new(&n);
    sr.init();
    let shop_gets = || http_get(listen, "shop.test", "/").expect("GET").1;
    assert_eq!(shop_gets(), "shop");

    for (what, blog_names) in [
        ("a copy", None),
        ("a name added", Some("blog.test shop.test")),
    ] {
        match blog_names {
            None => write("0-copy.conf", &site("shop.test", &blog)),
            Some(names) => write("a-blog.conf", &site(names, &blog)),
        }
        for args in [&["check", "--json"][..], &["-y", "--json"][..]] {
            let run = sr.run(args);
            run.expect(1);
            let problems = run.json()["problems"].to_string();
            assert!(
                problems.contains("conflicting server name")
                    && problems.contains("shop.conf:1")
                    && problems.contains("server_name shop.test"),
                "{what}: {run}"
            );
        }
        assert_eq!(shop_gets(), "shop", "{what}: refused");
        let _ = std::fs::remove_file(sites.join("0-copy.conf"));
        write("a-blog.conf", &site("blog.test", &blog));
    }

    // The name moved: the operator's intent, and nginx warns of nothing.
    write("shop.conf", &site("shop-old.test", &shop));
    write("a-blog.conf", &site("blog.test shop.test", &blog));
    sr.run(&["-y"]).expect(0);
    assert_eq!(shop_gets(), "blog");
}

/// `ssl`, `http2` and `proxy_protocol` belong to an address, whichever server's `listen` says
/// them (nginx ORs them over the servers there). One server's `listen ... http2` copied onto a
/// plain address (nginx 1.22 then speaks only HTTP/2 there), or its `listen ... ssl`, left
/// every HTTP/1.1 client of every server there without an answer; only that server counted as
/// affected, and it was "verified" over HTTP/2 or TLS, which its clients do not speak. Every
/// server there is affected now, and checked as its clients spoke before: refused, and
/// rolled back without the shadow. A `proxy_protocol` is the load balancer's, which sends it:
/// live, every server affected, with a warning for direct clients.
#[test]
fn a_protocol_one_listen_turns_on_is_every_server_of_its_address() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "a.test");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |api_flags: &str| {
        let mut out = String::new();
        for name in ["a.test", "b.test", "api.test"] {
            let flags = if name == "api.test" { api_flags } else { "" };
            out.push_str(&format!(
                "server {{ listen {listen}{flags}; server_name {name}; \
                 ssl_certificate {}; ssl_certificate_key {}; \
                 location / {{ proxy_pass http://{}; }} }}\n",
                cert.display(),
                key.display(),
                app.host_port()
            ));
        }
        out
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    let served = |host: &str| http_get(listen, host, "/").ok().map(|r| r.0);
    for flag in [" http2", " ssl"] {
        let (run, report) = reload(&n, &sr, &site(flag), &[]);
        run.expect(1);
        assert_eq!(report["shadow"]["state"], "refused", "{flag}: {run}");
        assert_eq!(
            report["impact"]["affected"].as_array().map(Vec::len),
            Some(3),
            "{flag}: {run}"
        );
        for host in ["a.test", "b.test", "api.test"] {
            assert_eq!(served(host), Some(200), "{flag}: {host} refused");
        }
        let (run, _) = reload(&n, &sr, &site(flag), &["--no-shadow"]);
        run.expect(3);
        assert_eq!(served("b.test"), Some(200), "{flag}: rolled back");
    }

    let (run, report) = reload(&n, &sr, &site(" proxy_protocol"), &[]);
    run.expect(0);
    assert_eq!(
        report["impact"]["affected"].as_array().map(Vec::len),
        Some(3),
        "{run}"
    );
    assert!(
        run.stdout.contains("now expects the PROXY protocol"),
        "{run}"
    );
    let proxied = format!(
        "PROXY TCP4 127.0.0.1 {} 40000 {}\r\nGET / HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        listen.ip(),
        listen.port()
    );
    assert_eq!(exchange(listen, &proxied).ok().map(|r| r.0), Some(200));
}

/// A server with a plain and a TLS listen and two names, whose backend a `map
/// $ssl_server_name` picks per name: only the first name went over TLS, so a change that
/// pointed www's branch at a backend answering 502 was "live and verified" while every https
/// client of www got 502. Each name goes over each listen now (the name is the SNI there):
/// refused, and www still answers.
#[test]
fn every_name_is_checked_over_every_listen() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let www = HttpBackend::start(SocketAddr::new(ip, 0), "www");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "tls.test");
    let plain = SocketAddr::new(ip, free_port(ip));
    let tls = SocketAddr::new(ip, free_port(ip));
    let site = |www_to: &str| {
        format!(
            "map $ssl_server_name $tls_be {{ default {}; www.tls.test {www_to}; }}\n\
             server {{ listen {plain}; listen {tls} ssl; server_name tls.test www.tls.test;\n\
             ssl_certificate {}; ssl_certificate_key {};\n\
             location / {{ proxy_pass http://$tls_be; }} }}",
            app.host_port(),
            cert.display(),
            key.display()
        )
    };
    let n = TestNginx::start(&site(&www.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    let (run, report) = reload(&n, &sr, &site(&bad.addr.to_string()), &["--no-probe"]);
    run.expect(1);
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(run.stdout.contains("https://www.tls.test/"), "{run}");
    assert_eq!(
        https_get(tls, "www.tls.test", "/").ok(),
        Some(200),
        "refused"
    );
}

/// A `server_name` typo (`www.b.test` became `ww.b.test`) leaves www's clients to the
/// catch-all's `return 444`. It was "live and verified", and the text said only what the
/// server now adds. A name no server answers any more is a warning that says where its
/// clients go (retiring a name is a change made on purpose, too: it goes live).
#[test]
fn a_name_no_server_answers_any_more_is_said() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |names: &str| {
        format!(
            "server {{ listen {listen} default_server; server_name _; return 444; }}\n\
             server {{ listen {listen}; server_name {names}; \
             location / {{ proxy_pass http://{}; }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site("b.test www.b.test"));
    let sr = SafeReload::new(&n);
    sr.init();
    // Retired on purpose (`ww.b.test` in its place would read as a typo, and is refused).
    n.write_http(&site("b.test"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr
            .contains("server_name www.b.test is no longer any server's on")
            && run.stderr.contains("default server"),
        "{run}"
    );
    assert!(
        http_get(listen, "www.b.test", "/").is_err(),
        "the catch-all drops it"
    );
}

/// A port typo in a site's `listen` (8080 written 8081): its clients on the old port get the
/// default server there. Said as a name no server answers any more on that listen.
#[test]
fn a_name_a_server_keeps_on_a_listen_it_loses_is_said() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let other = SocketAddr::new(ip, free_port(ip));
    let site = |at: SocketAddr| {
        format!(
            "server {{ listen {listen} default_server; server_name _; return 444; }}\n\
             server {{ listen {at}; server_name b.test; \
             location / {{ proxy_pass http://{}; }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site(listen));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(other));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr.contains(&format!(
            "server_name b.test is no longer any server's on {listen}"
        )),
        "{run}"
    );
    assert!(
        http_get(listen, "b.test", "/").is_err(),
        "the catch-all drops it"
    );
    assert_eq!(http_get(other, "b.test", "/").expect("GET").1, "app");
}

/// A name retired where a wildcard server of the same listen matches it: its clients get
/// that server, not the default one, and the warning says which (it said "the default
/// server").
#[test]
fn a_name_a_wildcard_takes_is_said_with_the_server_that_takes_it() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let wild = HttpBackend::start(SocketAddr::new(ip, 0), "wild");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |names: &str| {
        format!(
            "server {{ listen {listen} default_server; server_name _; return 444; }}\n\
             server {{ listen {listen}; server_name *.b.test; \
             location / {{ proxy_pass http://{}; }} }}\n\
             server {{ listen {listen}; server_name {names}; \
             location / {{ proxy_pass http://{}; }} }}",
            wild.host_port(),
            app.host_port()
        )
    };
    let n = TestNginx::start(&site("b.test www.b.test"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site("b.test"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr
            .contains("server_name www.b.test is no longer any server's on")
            && run.stderr.contains("now get the server at")
            && run.stderr.contains("by its name *.b.test"),
        "{run}"
    );
    assert_eq!(http_get(listen, "www.b.test", "/").expect("GET").1, "wild");
}

/// A port typo in the only server on an address (`listen 127.x:28081` written 28018): no
/// default server answers there, nothing does. The warning said its clients "get the default
/// server there"; it says their connections are refused.
#[test]
fn a_name_on_an_address_nothing_listens_on_any_more_says_connections_are_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let (listen, other) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let site = |at: SocketAddr| {
        format!(
            "server {{ listen {at}; server_name b.test; location / {{ proxy_pass http://{}; }} }}",
            app.host_port()
        )
    };
    let n = TestNginx::start(&site(listen));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(other));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stderr.contains(&format!(
            "server_name b.test is no longer any server's on {listen}: b.test (nginx.conf"
        )) && run
            .stderr
            .contains("no server listens there any more: its clients' connections are refused"),
        "{run}"
    );
    assert!(http_get(listen, "b.test", "/").is_err(), "refused");
    assert_eq!(http_get(other, "b.test", "/").expect("GET").1, "app");
}

/// An include glob that matches nothing any more (`sites-enabled/*` written `*.cnf`): every
/// server of the address gone, nothing listening there, and the run said "live and
/// verified". Refused.
#[test]
fn a_change_that_removes_every_server_of_an_address_at_once_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let sites = tempfile::tempdir().expect("tempdir");
    for name in ["a.test", "b.test"] {
        std::fs::write(
            sites.path().join(name),
            format!(
                "server {{ listen {listen}; server_name {name}; \
                 location / {{ proxy_pass http://{}; }} }}",
                app.host_port()
            ),
        )
        .expect("write site");
    }
    let include = |pattern: &str| format!("include {}/{pattern};", sites.path().display());
    let n = TestNginx::start(&include("*"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&include("*.cnf"));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.stderr.contains(&format!(
            "this change removes all 2 servers of {listen}, and no server listens there"
        )),
        "{run}"
    );
    assert_eq!(http_get(listen, "b.test", "/").expect("GET").1, "app");
    // One site retired on purpose goes live.
    std::fs::remove_file(sites.path().join("a.test")).expect("rm");
    n.write_http(&include("*"));
    sr.run(&["-y"]).expect(0);
    assert_eq!(http_get(listen, "b.test", "/").expect("GET").1, "app");
}
