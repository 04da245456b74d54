//! What the shadow nginx's answers mean, through the binary with a real nginx and real
//! backends: the shadow sends exactly the requests verification after the reload sends (the
//! same Host, the same locations), and judges them by the same rules, so a change it passes is
//! not rolled back for what it saw, and one it could have refused does not reach a client.
//! Each test checks the exit status and what the running nginx serves afterwards.

mod support;
use support::*;

use std::net::SocketAddr;

/// A site on its own loopback address, nginx running `http` with a baseline recorded.
fn running(http: &str) -> (TestNginx, SafeReload) {
    let n = TestNginx::start(http);
    let sr = SafeReload::new(&n);
    sr.init();
    (n, sr)
}

fn listen_on(ip: std::net::IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_port(ip))
}

fn serves(listen: SocketAddr, host: &str, body: &str) {
    let got = http_get(listen, host, "/").expect("the site answers");
    assert_eq!(got, (200, body.to_string()), "what {host} serves");
}

/// `map $http_host` routes by the Host header: production's checks and clients send
/// `site.test` (with the listen's port when it is not 80); the shadow's check must send the
/// same, not the shadow's own port, or it lands on the map's default and refuses a good change.
#[test]
fn the_shadow_sends_the_host_production_gets_so_http_host_maps_route_alike() {
    let ip = unique_loopback();
    let v1 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let v2 = HttpBackend::start(SocketAddr::new(ip, 0), "app-v2");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |app: &HttpBackend| {
        format!(
            "upstream deadpool {{ server {bad}; }}\n\
             upstream app {{ server {app}; }}\n\
             map $http_host $pool {{ site.test app; site.test:{port} app; default deadpool; }}\n\
             server {{ listen {listen}; server_name site.test; \
             location / {{ proxy_pass http://$pool; }} }}",
            bad = bad.addr,
            app = app.host_port(),
            port = listen.port(),
        )
    };
    let (n, sr) = running(&site(&v1));
    serves(listen, "site.test", "app-v1");
    n.write_http(&site(&v2));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "verified", "{run}");
    serves(listen, "site.test", "app-v2");
}

/// A `grpc_pass` location gets the same check in the shadow as after the reload: a change
/// that makes nginx fail every gRPC answer (a buffer too small for the backend's headers) is
/// refused before the reload instead of reaching clients and being rolled back.
#[test]
fn a_grpc_location_is_checked_in_the_shadow_and_a_break_there_is_refused() {
    let ip = unique_loopback();
    let (h2, front) = (listen_on(ip), listen_on(ip));
    let site = |extra: &str| {
        format!(
            "server {{ listen {h2} http2; server_name h2.test; location / {{ return 200 \"h2\\n\"; }} }}\n\
             server {{ listen {front}; server_name g.test; \
             location / {{ grpc_pass grpc://{h2}; {extra} }} }}"
        )
    };
    let (n, sr) = running(&site(""));
    serves(front, "g.test", "h2\n");
    let workers = n.worker_pids();
    n.write_http(&site("grpc_buffer_size 16;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        report["reload"].is_null(),
        "nginx must not be signalled: {run}"
    );
    assert_eq!(
        n.worker_pids(),
        workers,
        "the running workers are unchanged"
    );
    serves(front, "g.test", "h2\n");
}

/// A site whose `/` is proxied to `upstream`, as a `server` block.
fn proxied(listen: SocketAddr, name: &str, upstream: &str) -> String {
    format!(
        "server {{ listen {listen}; server_name {name}; \
         location / {{ proxy_pass http://{upstream}; }} }}"
    )
}

/// Debian's `fastcgi_params` passes `$server_port` to PHP in nearly every PHP site. That is one
/// server's parameter: a break in another server, which reads nothing that differs in the
/// shadow, is refused before the reload.
#[test]
fn a_fastcgi_param_reading_server_port_in_one_server_does_not_hide_a_break_in_another() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-c");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let fpm = AppServer::php_fpm(listen_on(ip));
    let listen = listen_on(ip);
    // Written where the test's nginx reads it, as Debian's is in /etc/nginx.
    let params = tempfile::tempdir().expect("tempdir");
    let params_file = params.path().join("fastcgi_params");
    std::fs::write(
        &params_file,
        "fastcgi_param QUERY_STRING $query_string;\n\
         fastcgi_param SERVER_ADDR $server_addr;\n\
         fastcgi_param SERVER_PORT $server_port;\n",
    )
    .expect("fastcgi_params");
    let site = |c: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; \
             location /php {{ include {params}; fastcgi_pass {fpm}; }} }}\n{}",
            proxied(listen, "c.test", c),
            params = params_file.display(),
            fpm = fpm.addr,
        )
    };
    let (n, sr) = running(&site(&good.host_port()));
    serves(listen, "c.test", "app-c");
    let workers = n.worker_pids();
    n.write_http(&site(&closer.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        report["reload"].is_null(),
        "nginx must not be signalled: {run}"
    );
    assert_eq!(
        n.worker_pids(),
        workers,
        "the running workers are unchanged"
    );
    serves(listen, "c.test", "app-c");
}

/// One server routes on `$server_addr` (a map): its own failure in the shadow is left to
/// verification after the reload, but a break in an unrelated server is still refused.
#[test]
fn a_map_on_server_addr_in_one_server_does_not_hide_a_break_in_another() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-x");
    let sa = HttpBackend::start(SocketAddr::new(ip, 0), "app-sa");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let (l1, l2) = (listen_on(ip), listen_on(ip));
    let site = |x: &str| {
        format!(
            "map $server_addr $sapool {{ default {sa}; }}\n\
             server {{ listen {l1}; server_name sa.test; location / {{ proxy_pass http://$sapool; }} }}\n{}",
            proxied(l2, "x.test", x),
            sa = sa.host_port(),
        )
    };
    let (n, sr) = running(&site(&good.host_port()));
    let workers = n.worker_pids();
    n.write_http(&site(&closer.addr.to_string()));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        report["shadow"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("x.test"),
        "{run}"
    );
    assert_eq!(
        n.worker_pids(),
        workers,
        "the running workers are unchanged"
    );
    serves(l2, "x.test", "app-x");
    serves(l1, "sa.test", "app-sa");
}

/// An upstream error the shadow logs behind a good answer (nginx failing over past a new pool
/// member that closes every connection) that the running nginx does not log is what the
/// verdict after the reload rolls back for: the shadow refuses it instead, with the same words.
#[test]
fn an_upstream_error_only_the_candidate_logs_is_refused_in_the_shadow() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |servers: &str| {
        format!(
            "upstream app {{ {servers} }}\n{}",
            proxied(listen, "site.test", "app")
        )
    };
    let (n, sr) = running(&site(&format!("server {};", good.host_port())));
    let workers = n.worker_pids();
    n.write_http(&site(&format!(
        "server {} max_fails=2; server {};",
        closer.addr,
        good.host_port()
    )));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let why = report["shadow"]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("nginx logged an upstream error the running configuration did not"),
        "{run}"
    );
    assert!(
        report["reload"].is_null(),
        "nginx must not be signalled: {run}"
    );
    assert_eq!(
        n.worker_pids(),
        workers,
        "the running workers are unchanged"
    );
    serves(listen, "site.test", "app-v1");
}

/// A site that already failed (502) and fails another way after the change (504) was broken
/// for its clients before: the shadow lets the change through as not the change's, and the
/// verdict after the reload agrees. No rollback: exit 4, an operator must act, and the
/// change is live.
#[test]
fn a_site_failing_before_and_differently_after_is_pre_existing_in_both_verdicts() {
    let ip = unique_loopback();
    let b502 = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let b504 = StatusBackend::start(SocketAddr::new(ip, 0), 504);
    let listen = listen_on(ip);
    let (n, sr) = running(&proxied(listen, "c.test", &b502.addr.to_string()));
    assert_eq!(http_get(listen, "c.test", "/").expect("GET").0, 502);
    n.write_http(&proxied(listen, "c.test", &b504.addr.to_string()));
    let run = sr.run(&["-y"]);
    run.expect(4);
    assert!(
        run.stdout.contains("reloaded, but an operator must act")
            && run
                .stdout
                .contains("failed before this change (HTTP 502) and still fails (HTTP 504)"),
        "{run}"
    );
    assert!(
        !run.stderr.contains("rollback:"),
        "nothing is rolled back: {run}"
    );
    assert!(
        run.stderr
            .contains("not verified in the shadow: every check fails in the running nginx too"),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "c.test", "/").expect("GET").0,
        504,
        "the change is live"
    );
}

/// After a rollback, the headline says "verified" only when no check of the restored
/// configuration still fails: a site that failed before the change is named, not vouched for.
#[test]
fn a_rollback_headline_does_not_call_a_site_that_still_fails_verified() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-a");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let b502 = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (la, lc) = (listen_on(ip), listen_on(ip));
    let site = |http_level: &str, a: &str| {
        format!(
            "{http_level}\n{}\n{}",
            proxied(la, "a.test", a),
            proxied(lc, "c.test", &b502.addr.to_string())
        )
    };
    let (n, sr) = running(&site("", &good.host_port()));
    // An http-level change affects both servers; it breaks a.test. Without the shadow, which
    // would refuse it before the reload: this is about the rollback's headline.
    n.write_http(&site("proxy_connect_timeout 5s;", &closer.addr.to_string()));
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(!run.stdout.contains("live and verified"), "{run}");
    assert!(
        run.stdout.contains("not verified: http://c.test/")
            && run
                .stdout
                .contains("answered HTTP 502 before this change and still does"),
        "{run}"
    );
    serves(la, "a.test", "app-a");
    assert_eq!(http_get(lc, "c.test", "/").expect("GET").0, 502);
}

/// `working_directory` naming a directory that does not exist passes `nginx -t`, and the
/// reload's workers then exit with "fatal code 2 and cannot be respawned": the old workers
/// leave and nothing accepts until the rollback. The shadow's workers die the same way (the
/// shadow keeps `working_directory`): the change is refused with the master's line, by
/// `check` and before the signal.
#[test]
fn a_working_directory_that_does_not_exist_is_refused_when_the_shadows_workers_die() {
    let listen = listen_on(unique_loopback());
    let http = format!("server {{ listen {listen}; server_name a.test; return 200 \"old\"; }}");
    let (n, sr) = running(&http);
    let missing = n.prefix.join("nonexistent");
    let candidate = n.render(&http).replacen(
        "events {",
        &format!("working_directory {};\nevents {{", missing.display()),
        1,
    );
    std::fs::write(&n.conf, candidate).expect("write nginx.conf");
    assert!(n.test().0, "nginx -t passes the candidate");
    let workers = n.ready_workers();
    for args in [&["check"][..], &["-y"][..]] {
        let run = sr.run(args);
        run.expect(1);
        for said in ["cannot be respawned", "chdir("] {
            assert!(run.stderr.contains(said), "{said:?} in:\n{run}");
        }
    }
    assert_eq!(n.ready_workers(), workers, "nginx was not signalled");
    serves(listen, "a.test", "old");
}

/// A server added to a pool that answers 502 to every request: nginx passes a backend's own
/// 502 on and does not retry it, so round robin sends every second client to it. Through the
/// shadow, one check fails and then passes (a pool, not a flaky backend), so it is asked again
/// of both nginxes: the shadow fails about half of them, the running nginx none, and the
/// change is refused before the reload, by `check` as by the reload, with nginx untouched.
#[test]
fn a_pool_member_the_change_adds_that_answers_502_is_refused_though_its_sibling_answers() {
    // Round robin, and `ip_hash`, which picks the server by the client's network: the
    // requests asked again come from several.
    pool_member_answering_502_is_refused("", "", false);
    pool_member_answering_502_is_refused("ip_hash;", "", false);
    // Regression (findings n2 F1): `hash $request_uri` sent every request asked again to one
    // server, as they all asked the same URI; each asks a query of its own now. (The new
    // server first: `/` itself hashes to the second of two, and this is about the samples.)
    pool_member_answering_502_is_refused("hash $request_uri;", "", true);
    // Regression (r9 H F1): `hash $host$uri` (or `$uri`) picks by the path alone, and the
    // samples' queries of their own all reached one server; their paths vary now.
    pool_member_answering_502_is_refused("hash $host$uri;", "", true);
    pool_member_answering_502_is_refused("hash $uri;", "", true);
    // Weighted: the new server gets one request in 21.
    pool_member_answering_502_is_refused("", " weight=20", false);
    // Regression (r9 H F3): a canary at one request in 100, reached once by 64 samples.
    pool_member_answering_502_is_refused("", " weight=99", false);
}

fn pool_member_answering_502_is_refused(balancer: &str, weight: &str, new_first: bool) {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |members: &str| {
        format!(
            "upstream pool {{ {balancer} {members} }}\n\
             server {{ listen {listen}; server_name pool.test; \
             location / {{ proxy_pass http://pool; }} }}"
        )
    };
    let one = format!("server {}{weight};", app.host_port());
    let (n, sr) = running(&site(&one));
    let workers = n.worker_pids();
    let added = format!("server {};", bad.addr);
    n.write_http(&site(&match new_first {
        true => format!("{added} {one}"),
        false => format!("{one} {added}"),
    }));

    for args in [&["check", "--json"][..], &["-y", "--json"][..]] {
        let run = sr.run(args);
        run.expect(1);
        let report = run.json();
        assert_eq!(report["shadow"]["state"], "refused", "{run}");
        let reason = report["shadow"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("the running nginx none of"),
            "{args:?}: {reason}\n{run}"
        );
    }
    assert_eq!(n.worker_pids(), workers, "nginx was reloaded");
    for _ in 0..6 {
        serves(listen, "pool.test", "app");
    }
}

/// A pool member the change adds after one that answers, which answers 500 to every request,
/// or answers the probe and closes every request (nginx fails the GET over to the sibling, and
/// a POST gets 502). The shadow's first answer came from the sibling and passed, and its
/// samples counted only answers that failed: a 500 alone is none, and failover hid the
/// hang-up. The first went live as "intermittent" and "verified", the second was rolled back
/// only after the reload. Each sample is now judged against the first answer, and by what
/// nginx logged for its own request: both are refused before the reload, by `check` too.
#[test]
fn a_pool_member_added_after_a_good_one_that_fails_all_it_gets_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    // The third sends `$server_port` on, which differs in the shadow: half the samples failing
    // and half passing with the same value is no answer that value explains (r5 D N8).
    let port = "proxy_set_header X-Forwarded-Port $server_port;";
    for (bad, what, extra) in [
        (erring.addr, "HTTP 500", ""),
        (closer.addr, "prematurely closed", ""),
        (erring.addr, "HTTP 500", port),
    ] {
        let listen = listen_on(ip);
        let site = |members: &str| {
            format!(
                "upstream pool {{ {members} }}\n\
                 server {{ listen {listen}; server_name pool.test; \
                 location / {{ {extra} proxy_pass http://pool; }} }}"
            )
        };
        let one = format!("server {};", app.host_port());
        let (n, sr) = running(&site(&one));
        let workers = n.worker_pids();
        n.write_http(&site(&format!("{one} server {bad};")));
        for args in [&["check", "--json"][..], &["-y", "--json"][..]] {
            let run = sr.run(args);
            run.expect(1);
            let report = run.json();
            assert_eq!(report["shadow"]["state"], "refused", "{what}: {run}");
            let reason = report["shadow"]["reason"].as_str().unwrap_or_default();
            assert!(reason.contains(what), "{what}: {reason}");
        }
        assert_eq!(n.worker_pids(), workers, "{what}: nginx was reloaded");
        for _ in 0..6 {
            serves(listen, "pool.test", "app");
        }
    }
}

/// TLS settings our own client cannot negotiate but OpenSSL's can (`ssl_ecdh_curve
/// secp521r1`: curl and browsers connect) are asked through `openssl s_client` before the
/// handshake counts as a failure: the change goes live. Settings OpenSSL's client refuses as
/// well (`ssl_protocols TLSv1`) are still refused before the reload.
#[test]
fn tls_settings_openssl_clients_accept_pass_and_ones_they_refuse_are_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "tls.test");
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = listen_on(ip);
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen} ssl; server_name tls.test; ssl_certificate {}; \
             ssl_certificate_key {}; {extra} location / {{ proxy_pass http://{}; }} }}",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let (n, sr) = running(&site(""));
    n.write_http(&site("ssl_ecdh_curve secp521r1;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.json()["shadow"]["state"], "verified", "{run}");
    assert_eq!(run.outcome(), "reloaded", "{run}");

    let workers = n.worker_pids();
    n.write_http(&site("ssl_protocols TLSv1;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(n.worker_pids(), workers, "nginx was reloaded");
}

/// A site switched to its maintenance backend (503 for everything): a 5xx where there was
/// none is the change's, unless `--expect-status` names it; then it goes live, through the
/// shadow and the verification after the reload alike, and nginx serves the 503.
#[test]
fn a_status_expect_status_names_is_not_a_failure_before_or_after_the_reload() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let maintenance = StatusBackend::start(SocketAddr::new(ip, 0), 503);
    let listen = listen_on(ip);
    let site = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name m.test; \
             location / {{ proxy_pass http://{to}; }} }}"
        )
    };
    let (n, sr) = running(&site(&app.host_port()));
    n.write_http(&site(&maintenance.addr.to_string()));
    let run = sr.run(&["-y"]);
    run.expect(1);
    serves(listen, "m.test", "app");

    let allowed = ["--expect-status", "200", "--expect-status", "503"];
    let run = sr.run(&[&["-y", "--json"][..], &allowed].concat());
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    assert_eq!(http_get(listen, "m.test", "/").expect("GET").0, 503);
    // Back to the app, then the same switch judged only after the reload.
    n.write_http(&site(&app.host_port()));
    sr.run(&["-y"]).expect(0);
    serves(listen, "m.test", "app");
    n.write_http(&site(&maintenance.addr.to_string()));
    let run = sr.run(&[&["-y", "--json", "--no-shadow"][..], &allowed].concat());
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    assert_eq!(http_get(listen, "m.test", "/").expect("GET").0, 503);
}

/// A certificate key nginx loads per handshake (`ssl_certificate_key
/// DIR/$ssl_server_name.key`), which `nginx -t` does not read, missing for the site's name:
/// the shadow's handshake fails with only an alert on the client's side. The refusal quotes
/// what nginx logged (`cannot load certificate key ...`), not only "received fatal alert".
#[test]
fn a_failed_handshake_in_the_shadow_is_told_with_what_nginx_logged() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "tls.test");
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = listen_on(ip);
    let site = |key: &str| {
        format!(
            "server {{ listen {listen} ssl; server_name tls.test; ssl_certificate {}; \
             ssl_certificate_key {key}; location / {{ proxy_pass http://{}; }} }}",
            cert.display(),
            app.host_port()
        )
    };
    let (n, sr) = running(&site(&key.display().to_string()));
    // Not where the key is.
    let by_name = certs.path().join("keys/$ssl_server_name.key");
    n.write_http(&site(&by_name.display().to_string()));
    let workers = n.worker_pids();
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let reason = report["shadow"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot load certificate key") && reason.contains("tls.test.key"),
        "{run}"
    );
    assert_eq!(n.worker_pids(), workers, "nginx was reloaded");
}

/// The usual HTTP-to-HTTPS server: one `server` on a plain and a TLS listen, with `if ($scheme
/// = http) { return 301 https://$host$request_uri; }`. nginx answers every plain request with
/// its own 301, which says nothing of the backend: the checks go over the TLS listen, so a
/// change that points the beta branch (`if ($cookie_beta) { rewrite ... }`) at a backend
/// answering 502 is refused. Its check went over the plain listen, got the 301 and passed:
/// "live and verified", every beta user 502.
#[test]
fn a_server_that_redirects_plain_http_is_checked_over_its_tls_listen() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "shop.test");
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (plain, tls) = (listen_on(ip), listen_on(ip));
    let site = |to: &str| {
        format!(
            "server {{ listen {plain}; listen {tls} ssl; server_name shop.test;\n\
             ssl_certificate {}; ssl_certificate_key {};\n\
             if ($scheme = http) {{ return 301 https://$host$request_uri; }}\n\
             if ($cookie_beta) {{ rewrite ^ /beta$uri last; }}\n\
             location / {{ proxy_pass http://{}; }}\n\
             location /beta/ {{ internal; proxy_pass http://{to}; }} }}",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let (n, sr) = running(&site(&app.host_port()));
    n.write_http(&site(&bad.addr.to_string()));
    let workers = n.worker_pids();
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(n.worker_pids(), workers, "nginx was reloaded");
    assert_eq!(https_get(tls, "shop.test", "/").expect("GET"), 200);
    assert_eq!(http_get(plain, "shop.test", "/").expect("GET").0, 301);

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(
        https_get(tls, "shop.test", "/").expect("GET"),
        200,
        "rolled back"
    );
}

/// A server that asks every client for a certificate (`ssl_verify_client on`): a check has
/// none, and nginx answers it with its own 400. That says nothing of the backend: a change
/// that breaks it is listed as not verified, not "live and verified" on the 400, and clients
/// that have a certificate get the 502 it was said to be (curl with one shows it).
#[test]
fn a_400_for_a_missing_client_certificate_is_nginxs_own_answer() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "mtls.test");
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let tls = listen_on(ip);
    let site = |to: &str| {
        format!(
            "server {{ listen {tls} ssl; server_name mtls.test;\n\
             ssl_certificate {c}; ssl_certificate_key {k};\n\
             ssl_client_certificate {c}; ssl_verify_client on;\n\
             location / {{ proxy_pass http://{to}; }} }}",
            c = cert.display(),
            k = key.display()
        )
    };
    let (n, sr) = running(&site(&app.host_port()));
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let report = run.json();
    let unverified = report["coverage"]["not_verified"].to_string();
    assert!(unverified.contains("mtls.test"), "{run}");
    assert_ne!(report["shadow"]["state"], "verified", "{run}");
    assert_eq!(https_get(tls, "mtls.test", "/").expect("GET"), 400);
    let with_cert = std::process::Command::new("curl")
        .args([
            "-sSk",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-w",
            "%{http_code}",
        ])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--resolve")
        .arg(format!("mtls.test:{}:{}", tls.port(), tls.ip()))
        .arg(format!("https://mtls.test:{}/", tls.port()))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&with_cert.stdout),
        "502",
        "{with_cert:?}"
    );
}

/// Behind a load balancer that ends TLS (the AWS recipe): `if ($http_x_forwarded_proto !=
/// "https") { return 301 https://$host$request_uri; }`. Every client comes through the
/// balancer with `X-Forwarded-Proto: https`; a check without it gets nginx's own 301. The
/// checks carry it, so a change that breaks the backend is refused. It was "live and
/// verified" on the 301 while every client got 502.
#[test]
fn checks_carry_the_header_a_server_level_return_asks_for() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name elb.test;\n\
             if ($http_x_forwarded_proto != \"https\") {{ return 301 https://$host$request_uri; }}\n\
             location / {{ proxy_pass http://{to}; }} }}"
        )
    };
    let (n, sr) = running(&site(&app.host_port()));
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert!(run.stdout.contains("X-Forwarded-Proto: https"), "{run}");
    let through_balancer = "GET / HTTP/1.1\r\nHost: elb.test\r\nX-Forwarded-Proto: https\r\n\
                            Connection: close\r\n\r\n";
    assert_eq!(exchange(listen, through_balancer).expect("GET").0, 200);

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(
        exchange(listen, through_balancer).expect("GET").0,
        200,
        "rolled back"
    );
}

/// The same gates inside the location (`if ($http_x_api_key != "k-123") { return 401; }`, the
/// load balancer's `X-Forwarded-Proto` redirect): the checks did not send the header, got
/// nginx's own 401 or 301, and a backend that now answers 500 to every client went live.
/// They send it now, as the location's clients do, and the change is refused.
#[test]
fn checks_carry_the_header_a_locations_own_return_asks_for() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    for (gate, header) in [
        (
            "if ($http_x_api_key != \"k-123\") { return 401; }",
            "X-Api-Key: k-123",
        ),
        (
            "if ($http_x_forwarded_proto != \"https\") { return 301 https://$host$request_uri; }",
            "X-Forwarded-Proto: https",
        ),
    ] {
        let listen = listen_on(ip);
        let site = |to: &str| {
            format!(
                "server {{ listen {listen}; server_name gate.test;\n\
                 location / {{ {gate} proxy_pass http://{to}; }} }}"
            )
        };
        let (n, sr) = running(&site(&app.host_port()));
        n.write_http(&site(&erring.addr.to_string()));
        let run = sr.run(&["-y", "--json"]);
        run.expect(1);
        assert_eq!(run.json()["shadow"]["state"], "refused", "{gate}: {run}");
        assert!(run.stdout.contains(header), "{gate}: {run}");
        let client =
            format!("GET / HTTP/1.1\r\nHost: gate.test\r\n{header}\r\nConnection: close\r\n\r\n");
        assert_eq!(exchange(listen, &client).expect("GET").0, 200, "{gate}");
    }
}

/// What nginx answers a client's WebSocket handshake for `/ws/chat` with (`101` when it
/// passes the upgrade).
fn handshake_head(listen: SocketAddr) -> Option<u16> {
    handshake_status(listen, "ws.test", "/ws/chat")
}

/// A WebSocket endpoint (`proxy_set_header Upgrade $http_upgrade;`) whose backend speaks only
/// WebSocket: a plain GET gets nothing from it, and nginx answers 502. Its check sends the
/// handshake a client sends and takes the `101 Switching Protocols`, and so does the probe of
/// its backend: adding it and a harmless change after it go live (the probe refused it, and
/// once live every change was exit 4), and pointing it at a backend that does not answer the
/// handshake is refused.
#[test]
fn a_websocket_location_is_checked_with_a_handshake() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let dead = AcceptCloseBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |ws_to: &str, rev: u32| {
        format!(
            "map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
             server {{ listen {listen}; server_name ws.test;\n\
             location = /rev {{ return 200 \"{rev}\"; }}\n\
             location / {{ proxy_pass http://{}; }}\n\
             location /ws/ {{ proxy_pass http://{ws_to}; proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade; }} }}",
            app.host_port()
        )
    };
    let (n, sr) = running(&site(&app.host_port(), 0));
    let w = ws.addr.to_string();
    for rev in [1, 2] {
        n.write_http(&site(&w, rev));
        let run = sr.run(&["-y", "--json"]);
        run.expect(0);
        assert!(run.stdout.contains("WebSocket handshake"), "{run}");
        assert_eq!(
            http_get(listen, "ws.test", "/rev").expect("GET").1,
            rev.to_string()
        );
    }
    assert_eq!(
        handshake_head(listen),
        Some(101),
        "nginx passes the handshake"
    );

    n.write_http(&site(&dead.addr.to_string(), 3));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(http_get(listen, "ws.test", "/rev").expect("GET").1, "2");

    // Pointed at a plain HTTP app: the handshake gets 200, not 101. The shadow asks the
    // running nginx, which switches it, and refuses (it went live and was rolled back).
    n.write_http(&site(&app.host_port(), 4));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(http_get(listen, "ws.test", "/rev").expect("GET").1, "2");
    assert_eq!(handshake_head(listen), Some(101));
}

/// A change that drops a WebSocket location's `proxy_set_header Upgrade`/`Connection` lines
/// (a "cleanup") breaks every WebSocket client: nginx no longer passes the upgrade on. The
/// checks were chosen from the candidate alone, so both nginxes got a plain GET and the
/// result was "the site failed before" (or, with a backend that answers 426, "verified"). A
/// location last-good had as a WebSocket one is checked with the handshake: refused, and
/// nginx still passes a real handshake.
#[test]
fn dropping_a_locations_upgrade_headers_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |upgrade: &str| {
        format!(
            "server {{ listen {listen}; server_name ws.test;\n\
             location / {{ proxy_pass http://{}; }}\n\
             location /ws/ {{ proxy_pass http://{}; proxy_http_version 1.1; {upgrade} }} }}",
            app.host_port(),
            ws.addr
        )
    };
    let headers = "proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade;";
    let (n, sr) = running(&site(headers));
    n.write_http(&site(""));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert!(run.stdout.contains("WebSocket handshake"), "{run}");
    assert_eq!(
        handshake_head(listen),
        Some(101),
        "nginx still passes the handshake"
    );
}

/// The same WebSocket location on an `ssl http2` listen: over TLS a client's ALPN picks
/// HTTP/1.1 for the handshake, so the check is the handshake too. It was a plain GET there,
/// which the WebSocket-only backend closes: every change to the site was refused.
#[test]
fn a_websocket_location_on_an_ssl_http2_listen_is_checked_with_a_handshake() {
    let ip = unique_loopback();
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "ws.test");
    let listen = listen_on(ip);
    let site = |rev: u32| {
        format!(
            "server {{ listen {listen} ssl http2; server_name ws.test;\n\
             ssl_certificate {}; ssl_certificate_key {};\n\
             location = /rev {{ return 20{rev}; }}\n\
             location /ws/ {{ proxy_pass http://{}; proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection upgrade; }} }}",
            cert.display(),
            key.display(),
            ws.addr
        )
    };
    let (n, sr) = running(&site(0));
    n.write_http(&site(1));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert!(run.stdout.contains("WebSocket handshake"), "{run}");
    // `/rev` answers 201 in the new configuration: it is the one nginx runs.
    assert_eq!(https_get(listen, "ws.test", "/rev").expect("GET"), 201);
}

/// A pool whose servers take two connections each (`max_conns=2`), answering in 300 ms: the
/// shadow's samples of a new site on it go at most four at a time, as nginx would take them.
/// Sixteen at once got "no live upstreams" 502s from nginx itself, and the shadow refused a
/// site that serves every client (`--no-shadow` accepted it).
#[test]
fn samples_of_a_pool_with_max_conns_stay_within_it() {
    let ip = unique_loopback();
    let delay = std::time::Duration::from_millis(300);
    let a = HttpBackend::start_slow(SocketAddr::new(ip, 0), "app", delay);
    let b = HttpBackend::start_slow(SocketAddr::new(ip, 0), "app", delay);
    let listen = listen_on(ip);
    let base = format!(
        "upstream small {{ server {} max_conns=2; server {} max_conns=2; }}\n\
         server {{ listen {listen}; server_name old.test; location / {{ return 200 \"old\"; }} }}",
        a.host_port(),
        b.host_port()
    );
    let (n, sr) = running(&base);
    n.write_http(&format!(
        "{base}\nserver {{ listen {listen}; server_name mc.test; \
         location / {{ proxy_pass http://small; }} }}"
    ));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    serves(listen, "mc.test", "app");
}

/// A site switched to another site's certificate (a copied `ssl_certificate` line): nginx
/// answers 200 as before, but every browser refuses the certificate. The checks' TLS client
/// did not compare the certificate's names with the SNI, so the change went live "verified".
/// A certificate that named the Host before the change and does not now is the change's: the
/// shadow refuses it (exit 1), and past the shadow it is rolled back (exit 3); a.test keeps
/// serving its own certificate. A harmless change under the same certificates goes live.
#[test]
fn a_site_served_with_another_sites_certificate_is_the_changes() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let a = certificate_for(certs.path(), &["a.test", "www.a.test"]);
    let b = certificate_for(certs.path(), &["b.test", "www.b.test"]);
    let listen = listen_on(ip);
    let sites = |a_cert: &(std::path::PathBuf, std::path::PathBuf), extra: &str| {
        let server = |name: &str, (cert, key): &(std::path::PathBuf, std::path::PathBuf)| {
            format!(
                "server {{ listen {listen} ssl; server_name {name} www.{name}; {extra}\n\
                 ssl_certificate {}; ssl_certificate_key {};\n\
                 location / {{ proxy_pass http://{}; }} }}\n",
                cert.display(),
                key.display(),
                app.host_port()
            )
        };
        server("a.test", a_cert) + &server("b.test", &b)
    };
    let (n, sr) = running(&sites(&a, ""));
    let subject = || tls_subject(&listen.to_string(), Some("a.test"));
    assert!(subject().contains("a.test"), "{}", subject());

    n.write_http(&sites(&b, ""));
    let run = sr.run(&["-y", "-v"]);
    run.expect(1);
    assert!(
        run.to_string().contains("does not name a.test"),
        "the reason names the host: {run}"
    );
    assert!(subject().contains("a.test"), "not reloaded: {}", subject());

    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(run.to_string().contains("does not name a.test"), "{run}");
    assert!(subject().contains("a.test"), "rolled back: {}", subject());

    n.write_http(&sites(&a, "add_header X-Rev 1;"));
    sr.run(&["-y"]).expect(0);
    assert_eq!(https_get(listen, "a.test", "/").expect("GET"), 200);
}

/// `ssl_verify_client on` pasted into the TLS snippet every site includes (meant for one
/// admin site): nginx answers every client without a certificate with 400, which is its own
/// answer, as adding client certificates on purpose gives it. The change goes live, and the
/// run says which sites it made ask for a certificate and where the line is; a site that
/// asked before gets a note, not the warning.
#[test]
fn a_client_certificate_asked_of_every_site_is_named_with_its_line() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let a = certificate_for(certs.path(), &["a.test"]);
    let b = certificate_for(certs.path(), &["b.test"]);
    let listen = listen_on(ip);
    let snippet = certs.path().join("ssl.conf");
    let sites = |extra: &str| {
        let server = |name: &str, (cert, key): &(std::path::PathBuf, std::path::PathBuf)| {
            format!(
                "server {{ listen {listen} ssl; server_name {name};\n\
                 ssl_certificate {}; ssl_certificate_key {};\n\
                 include {};\n\
                 location / {{ proxy_pass http://{}; }} }}\n",
                cert.display(),
                key.display(),
                snippet.display(),
                app.host_port()
            )
        };
        format!("{extra}\n{}{}", server("a.test", &a), server("b.test", &b))
    };
    std::fs::write(&snippet, "ssl_session_timeout 5m;\n").expect("snippet");
    let (n, sr) = running(&sites(""));
    assert_eq!(https_get(listen, "a.test", "/").expect("GET"), 200);

    let verify = format!(
        "ssl_session_timeout 5m;\nssl_client_certificate {};\nssl_verify_client on;\n",
        a.0.display()
    );
    std::fs::write(&snippet, verify).expect("snippet");
    let run = sr.run(&["-y"]);
    run.expect(0);
    let said = run.to_string();
    assert!(
        said.contains("this change makes nginx ask every client of a.test and b.test for a certificate (ssl_verify_client on, ")
            && said.contains("ssl.conf:3): they were served before it and answer HTTP 400 now"),
        "the sites and the line are named: {run}"
    );
    for host in ["a.test", "b.test"] {
        assert_eq!(
            https_get(listen, host, "/").expect("GET"),
            400,
            "{host} is live"
        );
    }

    n.write_http(&sites("add_header X-Rev 1;"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    let said = run.to_string();
    assert!(
        said.contains("note: a.test and b.test ask every client for a certificate")
            && !said.contains("this change makes nginx ask"),
        "asked before the change: a note: {run}"
    );
}

/// Three ways a change serves a name with a certificate that does not name it, each checked
/// against what the name's clients got before: the name moved into another site's block
/// (another server answered it before, with a certificate that named it), a certificate
/// with no subjectAltName at all (X.509 v1, which browsers find no name in), and a new site
/// with another site's certificate (nothing to compare with: live, not verified, and said).
#[test]
fn a_name_moved_to_a_server_whose_certificate_lacks_it_or_a_v1_certificate_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let a = certificate_for(certs.path(), &["a.test", "www.a.test"]);
    let b = certificate_for(certs.path(), &["b.test", "www.b.test"]);
    let v1 = v1_certificate(certs.path(), "a.test");
    let listen = listen_on(ip);
    type Pair = (std::path::PathBuf, std::path::PathBuf);
    let server = |names: &str, (cert, key): &Pair| {
        format!(
            "server {{ listen {listen} ssl; server_name {names};\n\
             ssl_certificate {}; ssl_certificate_key {};\n\
             location / {{ proxy_pass http://{}; }} }}\n",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let before = server("a.test www.a.test", &a) + &server("b.test www.b.test", &b);
    let (n, sr) = running(&before);
    let subject = || tls_subject(&listen.to_string(), Some("www.a.test"));
    assert!(subject().contains("a.test"), "{}", subject());

    n.write_http(&(server("a.test", &a) + &server("b.test www.b.test www.a.test", &b)));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.to_string().contains("does not name www.a.test"),
        "{run}"
    );
    assert!(subject().contains("a.test"), "not reloaded: {}", subject());

    n.write_http(&(server("a.test www.a.test", &v1) + &server("b.test www.b.test", &b)));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.to_string()
            .contains("(an X.509 v1 certificate: no subjectAltName)"),
        "{run}"
    );
    assert!(subject().contains("a.test"), "not reloaded: {}", subject());

    n.write_http(&(before.clone() + &server("d.test", &b)));
    let run = sr.run(&["-y"]);
    run.expect(0);
    let headline = run.stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        headline.contains("not verified")
            && headline.contains("the certificate nginx sent does not name d.test"),
        "live, and said: {run}"
    );
    assert_eq!(https_get(listen, "d.test", "/").expect("GET"), 200);
}

/// A certificate renewed in place with another site's (a deploy hook's mix-up), the
/// configuration unchanged: the running nginx still serves the good one from memory. The
/// shadow loads the files on disk, sees the certificate that does not name the site and
/// refuses, so nginx keeps serving the good one.
#[test]
fn a_certificate_renewed_in_place_with_another_sites_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let a = certificate_for(certs.path(), &["a.test", "www.a.test"]);
    let b = certificate_for(certs.path(), &["b.test", "www.b.test"]);
    let listen = listen_on(ip);
    let site = format!(
        "server {{ listen {listen} ssl; server_name a.test www.a.test;\n\
         ssl_certificate {}; ssl_certificate_key {};\n\
         location / {{ proxy_pass http://{}; }} }}\n",
        a.0.display(),
        a.1.display(),
        app.host_port()
    );
    let (_n, sr) = running(&site);
    let subject = || tls_subject(&listen.to_string(), Some("a.test"));
    assert!(subject().contains("a.test"), "{}", subject());
    std::fs::copy(&b.0, &a.0).expect("renew");
    std::fs::copy(&b.1, &a.1).expect("renew");
    let run = sr.run(&["-y", "-v"]);
    run.expect(1);
    assert!(run.to_string().contains("does not name a.test"), "{run}");
    assert!(subject().contains("a.test"), "not reloaded: {}", subject());
}

/// The same on a `proxy_protocol` TLS listen (behind a load balancer): `openssl s_client`
/// cannot send the PROXY header, so it went unasked there, and `ssl_ecdh_curve secp521r1`,
/// which every OpenSSL client negotiates, was refused. It is asked through a relay that
/// sends the header; the change goes live, and a client that sends the header is served.
#[test]
fn tls_settings_openssl_clients_accept_pass_behind_the_proxy_protocol() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate_for(certs.path(), &["lb.test"]);
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = listen_on(ip);
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen} ssl proxy_protocol; server_name lb.test; \
             ssl_certificate {}; ssl_certificate_key {}; {extra} \
             location / {{ proxy_pass http://{}; }} }}",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let (n, sr) = running(&site(""));
    n.write_http(&site("ssl_ecdh_curve secp521r1;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.json()["shadow"]["state"], "verified", "{run}");
    assert_eq!(run.outcome(), "reloaded", "{run}");
    assert_eq!(
        https_get_as(listen, "lb.test", "/", true).expect("GET"),
        200
    );

    // Another site's certificate behind that curve: the certificate `openssl s_client` got
    // is name-checked as our client's would be.
    let (other_cert, other_key) = certificate_for(certs.path(), &["other.test"]);
    let swapped = site("ssl_ecdh_curve secp521r1;")
        .replace(
            &cert.display().to_string(),
            &other_cert.display().to_string(),
        )
        .replace(&key.display().to_string(), &other_key.display().to_string());
    n.write_http(&swapped);
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.to_string().contains("does not name lb.test"), "{run}");

    let workers = n.worker_pids();
    n.write_http(&site("ssl_protocols TLSv1;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(n.worker_pids(), workers, "nginx was reloaded");
}

/// Servers that answer every request themselves (port 80's redirects to https, a catch-all's
/// `return 444`) are checked too: what they answer is nginx's own, never a pass, but a
/// change that stops them answering shows. `http2` copied onto one of their plain listens
/// (nginx applies it to the address) leaves every HTTP/1.1 client without an answer: refused
/// before the reload, rolled back after it. A redirect changed on purpose goes live.
#[test]
fn redirect_servers_are_checked_and_http2_copied_onto_their_port_is_refused() {
    let ip = unique_loopback();
    let listen = listen_on(ip);
    let sites = |b_flags: &str, a_code: u16| {
        format!(
            "server {{ listen {listen} default_server; return 444; }}\n\
             server {{ listen {listen}; server_name a.test; \
             return {a_code} https://a.test$request_uri; }}\n\
             server {{ listen {listen}{b_flags}; server_name b.test; \
             location / {{ return 301 https://b.test$request_uri; }} }}\n"
        )
    };
    let (n, sr) = running(&sites("", 301));
    let redirected = |host: &str| http_get(listen, host, "/x").expect("GET").0;
    assert_eq!((redirected("a.test"), redirected("b.test")), (301, 301));

    n.write_http(&sites(" http2", 301));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.stderr.contains("speaks only HTTP/2"), "{run}");
    assert_eq!((redirected("a.test"), redirected("b.test")), (301, 301));
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert_eq!((redirected("a.test"), redirected("b.test")), (301, 301));

    n.write_http(&sites("", 302));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert!(
        run.stdout.contains("not verified") && run.stdout.contains("return 302"),
        "nginx's own answer, never a pass: {run}"
    );
    assert_eq!(redirected("a.test"), 302);
}

/// A location the change adds for a new app (`location /app/ { try_files $uri @app; }`):
/// its check's path, one made up for it, was the old catch-all's before (an SPA answering
/// 200 to every path), and the new app rightly answers it 404. That is no regression. The
/// change goes live; a new location whose app fails is still refused, and so is one whose
/// own path (`/api/`) the old catch-all served and the new app answers 404.
#[test]
fn a_made_up_path_of_a_new_location_has_no_baseline_in_the_location_that_answered_it() {
    let ip = unique_loopback();
    let spa = HttpBackend::start(SocketAddr::new(ip, 0), "spa");
    let app = StatusBackend::start(SocketAddr::new(ip, 0), 404);
    let broken = StatusBackend::start(SocketAddr::new(ip, 0), 502);
    let listen = listen_on(ip);
    let site = |extra: &str| {
        format!(
            "server {{ listen {listen}; server_name s.test; \
             location / {{ proxy_pass http://{}; }} {extra} }}",
            spa.host_port()
        )
    };
    let (n, sr) = running(&site(""));
    let new_app = |to: SocketAddr| {
        format!(
            "location /app/ {{ try_files $uri @app; }} location @app {{ proxy_pass http://{to}; }}"
        )
    };
    n.write_http(&site(&new_app(broken.addr)));
    sr.run(&["-y"]).expect(1);
    // Its own path keeps its baseline: `location /api/` split off `/` to an app that
    // answers 404 there, where the old catch-all served it, is refused.
    n.write_http(&site(&format!(
        "location /api/ {{ proxy_pass http://{}; }}",
        app.addr
    )));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert_eq!(http_get(listen, "s.test", "/api/").expect("GET").1, "spa");

    n.write_http(&site(&new_app(app.addr)));
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(http_get(listen, "s.test", "/app/x").expect("GET").0, 404);
    assert_eq!(http_get(listen, "s.test", "/").expect("GET").1, "spa");
}

/// `ssl_certificate` pointed at an old file of the renewal (the right names, expired):
/// browsers refuse it whatever it names. Refused where the site was served a valid one
/// before; the site keeps serving it.
#[test]
fn an_expired_certificate_where_a_valid_one_was_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let good = certificate_for(certs.path(), &["a.test"]);
    let old = expired_certificate_for(certs.path(), &["a.test"]);
    let listen = listen_on(ip);
    let site = |(cert, key): &(std::path::PathBuf, std::path::PathBuf)| {
        format!(
            "server {{ listen {listen} ssl; server_name a.test;\n\
             ssl_certificate {}; ssl_certificate_key {};\n\
             location / {{ proxy_pass http://{}; }} }}\n",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let (n, sr) = running(&site(&good));
    n.write_http(&site(&old));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.to_string()
            .contains("the certificate nginx sent expired at"),
        "{run}"
    );
    let dates = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &listen.to_string(),
            "-servername",
            "a.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl s_client");
    let seen = String::from_utf8_lossy(&dates.stdout).into_owned();
    let served = std::fs::read_to_string(&good.0).expect("read");
    let first_line = served.lines().nth(1).unwrap_or_default();
    assert!(
        seen.contains(first_line),
        "the valid certificate is still served"
    );
}

/// Two servers of the same name on two addresses (a site and its load-balancer side): the
/// refusal names the one the failing check went to, not the first of that name.
#[test]
fn a_refusal_names_the_server_of_that_name_where_the_check_went() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let dead = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (front, back) = (listen_on(ip), listen_on(ip));
    let sites = |to: &str| {
        format!(
            "server {{ listen {front}; server_name a.test; location / {{ proxy_pass http://{}; }} }}\n\
             server {{ listen {back}; server_name a.test; location / {{ proxy_pass http://{to}; }} }}\n",
            app.host_port()
        )
    };
    let (n, sr) = running(&sites(&app.host_port()));
    n.write_http(&sites(&dead.addr.to_string()));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.stderr.contains("nginx.conf:18: error: "), "{run}");
    assert_eq!(http_get(back, "a.test", "/").expect("GET").1, "app");
}

/// A pool member the change adds that accepts connections and never answers (a hung app
/// worker): round robin sent the requests asked again to its healthy sibling, so its
/// timeouts read as chance ("intermittent"), while every client nginx sends it waits for its
/// read timeout. With the probe's "no reply" for that member, refused.
#[test]
fn a_pool_member_the_change_adds_that_never_answers_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let silent = HttpBackend::start_slow(
        SocketAddr::new(ip, 0),
        "silent",
        // Past the shadow's longer wait (four times --health-timeout, 1.2 s) even on an idle
        // machine; within the 3 s of the run that puts it live.
        std::time::Duration::from_millis(1500),
    );
    let listen = listen_on(ip);
    let site = |members: &[String]| {
        let servers: String = members.iter().map(|m| format!("server {m}; ")).collect();
        format!(
            "upstream pool {{ {servers}}}\n\
             server {{ listen {listen}; server_name p.test; \
             location / {{ proxy_pass http://pool; }} }}\n"
        )
    };
    let (n, sr) = running(&site(&[app.host_port()]));
    n.write_http(&site(&[app.host_port(), silent.host_port()]));
    let run = sr.run(&["-y", "--health-timeout", "300ms"]);
    run.expect(1);
    assert!(
        run.to_string().contains(
            "which this change adds to upstream pool, accepts connections and answered neither"
        ),
        "{run}"
    );
    for _ in 0..4 {
        assert_eq!(http_get(listen, "p.test", "/").expect("GET").1, "app");
    }
    // Live without the shadow where the tool waits long enough for it (slow, not failing:
    // the pool asked again around the reload is answered), it is last-good's: a later change
    // that leaves the pool as it is does not answer for it.
    let run = sr.run(&["-y", "--no-shadow", "--health-timeout", "3s"]);
    run.expect(0);
    n.write_http(&(site(&[app.host_port(), silent.host_port()]) + "add_header X-Rev 1;"));
    let run = sr.run(&["-y", "--health-timeout", "300ms"]);
    run.expect(0);
}

/// A server that proxies over TLS and redirects its plain listen itself (`if ($scheme =
/// http) { return 301 https://...; }`): its checks go over TLS, and its plain listen gets the
/// redirect's check, so `http2` copied onto it (every HTTP/1.1 client then gets HTTP/2
/// frames instead of the redirect) is refused.
#[test]
fn the_plain_side_of_a_server_that_redirects_it_is_checked() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate_for(certs.path(), &["a.test"]);
    let (plain, tls) = (listen_on(ip), listen_on(ip));
    let site = |flags: &str| {
        format!(
            "server {{ listen {plain}{flags}; listen {tls} ssl; server_name a.test;\n\
             ssl_certificate {}; ssl_certificate_key {};\n\
             if ($scheme = http) {{ return 301 https://$host$request_uri; }}\n\
             location / {{ proxy_pass http://{}; }} }}\n",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let (n, sr) = running(&site(""));
    assert_eq!(http_get(plain, "a.test", "/").expect("GET").0, 301);
    n.write_http(&site(" http2"));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.stderr.contains("speaks only HTTP/2"), "{run}");
    assert_eq!(http_get(plain, "a.test", "/").expect("GET").0, 301);
    assert_eq!(https_get(tls, "a.test", "/").expect("GET"), 200);
    n.write_http(&site(" default_server"));
    let run = sr.run(&["-y"]);
    run.expect(0);
    // Its TLS side reached the backend and passed; the redirect has nothing behind it to
    // leave unverified.
    assert!(
        run.stdout.contains("live and verified"),
        "the redirect cancelled the verified server: {run}"
    );
    assert_eq!(http_get(plain, "a.test", "/").expect("GET").0, 301);
}

/// Regression (r9 H F9): a pool reached through a `map` variable (`proxy_pass
/// http://$tier_pool`) gained a member that answers 502: the shadow asked it once (the good
/// member answered), sampled nothing, as the pool's name is a variable there, and it went live
/// "verified" with one client in two getting 502. A variable pass is sampled as a pool is.
#[test]
fn a_pool_reached_through_a_map_variable_is_sampled() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |members: &str| {
        format!(
            "upstream pool_lc {{ {members} }}\n\
             map $http_x_tier $tier_pool {{ default pool_lc; gold pool_lc; }}\n\
             server {{ listen {listen}; server_name var.test; \
             location / {{ proxy_pass http://$tier_pool; }} }}"
        )
    };
    let one = format!("server {};", app.host_port());
    let (n, sr) = running(&site(&one));
    let workers = n.worker_pids();
    n.write_http(&site(&format!("{one} server {};", bad.addr)));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(n.worker_pids(), workers, "nginx was reloaded");
    for _ in 0..6 {
        serves(listen, "var.test", "app");
    }
}

/// r13 P HIGH-1: the `proxy_set_header Upgrade`/`Connection` lines written at server level,
/// inherited by the WebSocket location. A `proxy_set_header` the change adds to that location
/// replaces every one it inherited (nginx's rule for array directives): the upgrade is no
/// longer passed on, and every WebSocket client fails. The location was not seen as a
/// WebSocket one (only its own lines were read), so both nginxes got a plain GET: "live and
/// verified". And pointing such a location at a WebSocket-only backend was refused (the plain
/// GET gets nothing from it). The lines in force, inherited or its own, decide now.
#[test]
fn upgrade_headers_inherited_from_the_server_make_a_websocket_location() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let ws = WebSocketBackend::start(SocketAddr::new(ip, 0));
    let listen = listen_on(ip);
    let site = |ws_to: &str, own: &str| {
        format!(
            "server {{ listen {listen}; server_name ws.test; proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade;\n\
             location / {{ proxy_pass http://{}; }}\n\
             location /ws/ {{ proxy_pass http://{ws_to}; {own} }} }}",
            app.host_port()
        )
    };
    let (n, sr) = running(&site(&app.host_port(), ""));
    // Moved to the WebSocket-only backend: its handshake is switched.
    n.write_http(&site(&ws.addr.to_string(), ""));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert!(run.stdout.contains("WebSocket handshake"), "{run}");
    assert_eq!(handshake_head(listen), Some(101));
    // A header of its own replaces the inherited upgrade lines.
    n.write_http(&site(
        &ws.addr.to_string(),
        "proxy_set_header X-Real-IP $remote_addr;",
    ));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(
        handshake_head(listen),
        Some(101),
        "nginx still passes the handshake"
    );
}

/// r14 t F1, F2: 150 sites on port 80 and on one TLS address, two names each. A change that
/// reaches every server gets more checks than one round takes, and they were taken plain
/// HTTP first: every name on port 80 before any request over TLS, so no handshake was made
/// at all. `ssl_protocols TLSv1 TLSv1.1` (every TLS client refused) and a renewal that wrote
/// another site's certificate into one site's files were "live and verified". Each server's
/// requests go one per listen before a second on any, over TLS first where the change is to
/// TLS, and a server that reads a renewed file is checked first: both are refused, and the
/// sites still answer over TLS with their own certificate.
#[test]
fn tls_changes_on_a_big_tree_are_checked_over_tls() {
    const SITES: usize = 150;
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (0..SITES).map(|k| format!("site{k}.big.test")).collect();
    let wildcard = certificate_for(certs.path(), &["*.big.test"]);
    let site18 = certificate_for(certs.path(), &["site18.big.test"]);
    let site20 = certificate_for(certs.path(), &["site20.big.test"]);
    let (plain, tls) = (listen_on(ip), listen_on(ip));
    let tree = |protocols: &str| {
        let mut http = format!("ssl_protocols {protocols};\n");
        for (k, name) in names.iter().enumerate() {
            let (cert, key) = if k == 18 { &site18 } else { &wildcard };
            http.push_str(&format!(
                "server {{ listen {plain}; listen {tls} ssl; server_name {name} www.{name}; \
                 ssl_certificate {}; ssl_certificate_key {}; \
                 location / {{ proxy_pass http://{}; }} }}\n",
                cert.display(),
                key.display(),
                app.host_port()
            ));
        }
        http
    };
    let (n, sr) = running(&tree("TLSv1.2 TLSv1.3"));
    let subject = || tls_subject(&tls.to_string(), Some("site18.big.test"));
    assert!(subject().contains("site18"), "{}", subject());

    n.write_http(&tree("TLSv1 TLSv1.1"));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.to_string().contains("ProtocolVersion"), "{run}");
    assert_eq!(https_get(tls, "site7.big.test", "/").ok(), Some(200));

    n.write_http(&tree("TLSv1.2 TLSv1.3"));
    std::fs::copy(&site20.0, &site18.0).expect("renew");
    std::fs::copy(&site20.1, &site18.1).expect("renew");
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(
        run.to_string().contains("does not name site18.big.test"),
        "{run}"
    );
    assert!(subject().contains("site18"), "not reloaded: {}", subject());
}

/// r14 t F6: the default server of a TLS address moves to a site (`listen ... ssl
/// default_server`, the `ssl_reject_handshake` catch-all removed). Its default route is
/// checked with a Host made up for it, `safe-reload-check.invalid`, which no certificate can
/// name: the site was "not verified" for the certificate it sent. That name says nothing of the
/// site's certificate: live and verified, and the site answers under its own name.
#[test]
fn a_tls_default_server_moved_to_a_site_is_verified() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let (ac, ak) = certificate_for(certs.path(), &["a.test"]);
    let (cc, ck) = certificate_for(certs.path(), &["c.test"]);
    let tls = listen_on(ip);
    let site = |name: &str, (cert, key): (&std::path::Path, &std::path::Path), flags: &str| {
        format!(
            "server {{ listen {tls} ssl{flags}; server_name {name}; ssl_certificate {}; \
             ssl_certificate_key {}; location / {{ proxy_pass http://{}; }} }}\n",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let catch_all =
        format!("server {{ listen {tls} ssl default_server; ssl_reject_handshake on; }}\n");
    let (a, c) = ((ac.as_path(), ak.as_path()), (cc.as_path(), ck.as_path()));
    let (n, sr) = running(&format!(
        "{catch_all}{}{}",
        site("a.test", a, ""),
        site("c.test", c, "")
    ));
    n.write_http(&format!(
        "{}{}",
        site("a.test", a, ""),
        site("c.test", c, " default_server")
    ));
    let run = sr.run(&["-y"]);
    run.expect(0);
    let headline = run.stdout.lines().last().unwrap_or_default().to_string();
    assert!(!headline.contains("not verified"), "{run}");
    assert_eq!(https_get(tls, "c.test", "/").ok(), Some(200));
}

/// A TLS site on `listen ... ssl http2`, where every browser speaks HTTP/2: a change that
/// fails HTTP/2 alone (`http2_max_concurrent_streams 0` refuses every stream) was "live and
/// verified", the checks speaking HTTP/1.1 only (r16 z F1). Each check of such a listen asks
/// over HTTP/2 too: refused in the shadow, and rolled back without it; HTTP/2 clients are
/// answered afterwards. A harmless change goes live.
#[test]
fn a_change_that_fails_http2_alone_on_a_tls_listen_is_refused() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate_for(certs.path(), &["a.test"]);
    let tls = listen_on(ip);
    let site = |extra: &str| {
        format!(
            "server {{ listen {tls} ssl http2; server_name a.test; {extra}\n\
             ssl_certificate {}; ssl_certificate_key {};\n\
             location / {{ proxy_pass http://{}; }} }}",
            cert.display(),
            key.display(),
            app.host_port()
        )
    };
    let (n, sr) = running(&site(""));
    assert_eq!(https_get_h2(tls, "a.test"), Some(200));
    n.write_http(&site("http2_max_concurrent_streams 0;"));
    assert_eq!(https_get(tls, "a.test", "/").ok(), Some(200));
    let run = sr.run(&["-y"]);
    run.expect(1);
    assert!(run.to_string().contains("over HTTP/2"), "{run}");
    assert_eq!(https_get_h2(tls, "a.test"), Some(200), "{run}");
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert_eq!(https_get_h2(tls, "a.test"), Some(200), "{run}");
    n.write_http(&site("add_header X-A 1;"));
    sr.run(&["-y"]).expect(0);
    assert_eq!(https_get_h2(tls, "a.test"), Some(200));
}
