//! The shadow nginx through the binary: a bad change is refused before the reload with the real
//! nginx untouched and no client seeing it; what only production can show is still caught
//! after the reload; `--no-shadow` and the setting turn it off.

mod support;
use support::*;

use std::net::SocketAddr;

/// A site whose `/` goes to a backend answering `app-v1`, with a baseline, and a second
/// backend on the same loopback address.
fn site_and<B>(other: impl FnOnce(SocketAddr) -> B) -> (ProxiedSite, HttpBackend, B) {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let second = other(SocketAddr::new(ip, 0));
    (ProxiedSite::start(&good.host_port()), good, second)
}

#[test]
fn a_backend_answering_502_is_refused_before_the_reload_and_no_client_sees_it() {
    let (site, _good, bad) = site_and(BadGatewayBackend::start);
    site.point_at(&bad.addr.to_string());
    let run = site.refused_before_reload("app-v1");
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
    assert_eq!(
        problem["file"],
        site.nginx.conf.display().to_string(),
        "{run}"
    );
    // The text output names the server and what the shadow answered.
    let text = site.sr.run(&["-y"]);
    text.expect(1);
    assert!(
        text.stderr.contains("shadow nginx answered HTTP 502"),
        "{text}"
    );
    assert!(
        std::fs::read_dir(site.sr.state.join("shadow")).map_or(0, |d| d.count()) == 0,
        "the lease is removed when the shadow stops"
    );
}

#[test]
fn a_backend_that_accepts_and_closes_is_refused_before_the_reload() {
    let (site, _good, bad) = site_and(CloseBackend::start);
    site.point_at(&bad.addr.to_string());
    let run = site.refused_before_reload("app-v1");
    // A protocol probe may refuse it first; either way nothing was reloaded.
    let report = run.json();
    if !report["shadow"].is_null() {
        assert_eq!(report["shadow"]["state"], "refused", "{run}");
    }
}

#[test]
fn check_refuses_through_the_shadow_too() {
    let (site, good, bad) = site_and(BadGatewayBackend::start);
    site.point_at(&bad.addr.to_string());
    let run = site.sr.run(&["check", "--json"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    site.serves("app-v1");
    // A good change passes `check` with the shadow verified.
    site.point_at(&good.host_port());
    let run = site.sr.run(&["check", "--json"]);
    run.expect(0);
    assert_eq!(run.json()["shadow"]["state"], "verified", "{run}");
}

#[test]
fn a_good_change_is_verified_in_the_shadow_then_reloaded() {
    let (site, _v1, v2) = site_and(|a| HttpBackend::start(a, "app-v2"));
    site.point_at(&v2.host_port());
    let run = site.sr.run(&["-y", "--json"]);
    run.expect(0);
    let shadow = &run.json()["shadow"];
    assert_eq!(shadow["state"], "verified", "{run}");
    assert_eq!(shadow["checks"][0]["shadow"]["status"], 200, "{run}");
    let pid = shadow["master_pid"].as_i64().expect("master pid") as i32;
    assert!(!alive(pid), "the shadow is stopped when the run ends");
    site.serves("app-v2");
}

#[test]
fn no_shadow_flag_and_setting_leave_it_to_verification_after_the_reload() {
    let (site, _good, bad) = site_and(BadGatewayBackend::start);
    site.point_at(&bad.addr.to_string());
    let run = site.sr.run(&["-y", "--json", "--no-shadow"]);
    run.expect(3);
    assert_eq!(run.json()["shadow"]["state"], "off", "{run}");
    site.serves("app-v1");
    let settings = tempfile::tempdir().unwrap();
    let file = settings.path().join("s.toml");
    std::fs::write(&file, "no-shadow = true\n").unwrap();
    let run = run_command(
        site.sr
            .command(&["check", "--json"])
            .env("SAFE_RELOAD_CONFIG", &file),
    );
    run.expect(0);
    assert_eq!(run.json()["shadow"]["state"], "off", "{run}");
}

#[test]
fn a_failure_only_production_shows_is_caught_after_the_reload_and_rolled_back() {
    let (site, good, bad) = site_and(BadGatewayBackend::start);
    let listen = site.listen;
    // The target depends on the port the request came in on, which the shadow does not share.
    site.nginx.write_http(&format!(
        "map $server_port $backend {{ default {good}; {port} {bad}; }}\n\
         server {{ listen {listen}; server_name site.test; \
         location / {{ proxy_pass http://$backend; }} }}",
        good = good.host_port(),
        port = listen.port(),
        bad = bad.addr,
    ));
    let run = site.sr.run(&["-y", "--json"]);
    run.expect(3);
    let report = run.json();
    assert_eq!(report["outcome"], "rolled_back", "{run}");
    assert_ne!(report["shadow"]["state"], "refused", "{run}");
    site.serves("app-v1");
}

#[test]
fn a_shadow_that_cannot_start_does_not_refuse_a_good_change() {
    let (site, _v1, v2) = site_and(|a| HttpBackend::start(a, "app-v2"));
    site.point_at(&v2.host_port());
    // A temp directory the shadow cannot make its own in (TMPDIR names a file): the shadow
    // is not started, and that is the shadow's problem, not the change's.
    let not_a_dir = site.sr.state.with_extension("tmpfile");
    std::fs::write(&not_a_dir, "not a directory").unwrap();
    let run = run_command(site.sr.command(&["-y", "--json"]).env("TMPDIR", &not_a_dir));
    let _ = std::fs::remove_file(&not_a_dir);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "not_verified", "{run}");
    let notes = report["notes"].to_string();
    assert!(notes.contains("not verified in the shadow"), "{run}");
    site.serves("app-v2");
}

/// Paths relative to the configuration's directory that leave it (`../elsewhere/...`): nginx
/// reads `include`, certificates and `auth_basic_user_file` relative to the directory of the
/// main file, and the shadow's copy must find the same files. The shadow failed to start
/// ("not verified in the shadow") on a change the real nginx reloads fine.
#[test]
fn relative_paths_leaving_the_conf_dir_resolve_in_the_shadow_as_in_production() {
    let (site, _v1, v2) = site_and(|a| HttpBackend::start(a, "app-v2"));
    let outside = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(outside.path(), "tls.test");
    std::fs::write(
        outside.path().join("snippet.conf"),
        "location = /snippet { return 200 \"snippet\"; }\n",
    )
    .unwrap();
    std::fs::write(outside.path().join("htpasswd"), "u:{PLAIN}p\n").unwrap();
    // Relative to the conf dir (the prefix here), up and over into the other directory.
    let up = |p: &std::path::Path| {
        format!(
            "../{}",
            p.strip_prefix(site.nginx.prefix.parent().unwrap())
                .unwrap()
                .display()
        )
    };
    let ip = site.listen.ip();
    let tls = SocketAddr::new(ip, free_port(ip));
    let body = |upstream: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test; include {snippet}; \
             location / {{ proxy_pass http://{upstream}; }} \
             location /private {{ auth_basic on; auth_basic_user_file {htpasswd}; \
             proxy_pass http://{upstream}; }} }}\n\
             server {{ listen {tls} ssl; server_name tls.test; ssl_certificate {cert}; \
             ssl_certificate_key {key}; location / {{ proxy_pass http://{upstream}; }} }}",
            listen = site.listen,
            snippet = up(&outside.path().join("snippet.conf")),
            htpasswd = up(&outside.path().join("htpasswd")),
            cert = up(&cert),
            key = up(&key),
        )
    };
    site.nginx.write_http(&body(&site.upstream));
    assert!(site.nginx.test().0, "{}", site.nginx.test().1);
    site.sr.run(&["-y"]).expect(0);
    site.nginx.write_http(&body(&v2.host_port()));
    let run = site.sr.run(&["-y", "--json"]);
    run.expect(0);
    let shadow = &run.json()["shadow"];
    assert_eq!(shadow["state"], "verified", "{run}");
    site.serves("app-v2");
    let got = http_get(site.listen, "site.test", "/snippet").expect("GET /snippet");
    assert_eq!(got, (200, "snippet".into()));
}

/// An include climbing with `..` above `/` from the conf dir names, for nginx, the file at
/// the path below the root; the copy of it was written there too, out of the shadow's
/// directory: over the real file, with the shadow's listens in it.
#[test]
fn an_include_climbing_above_the_root_is_copied_into_the_shadow_not_over_the_real_file() {
    let (site, _v1, v2) = site_and(|a| HttpBackend::start(a, "app-v2"));
    let outside = tempfile::tempdir().unwrap();
    let snippet = outside.path().join("listen.conf");
    let second = SocketAddr::new(site.listen.ip(), free_port(site.listen.ip()));
    let text = format!("listen {second};\n");
    std::fs::write(&snippet, &text).unwrap();
    let depth = site.nginx.prefix.components().count();
    let climb = format!(
        "{}{}",
        "../".repeat(depth + 2),
        snippet.strip_prefix("/").unwrap().display()
    );
    let body = |upstream: &str| {
        format!(
            "server {{ listen {}; include {climb}; server_name site.test; \
             location / {{ proxy_pass http://{upstream}; }} }}",
            site.listen
        )
    };
    site.nginx.write_http(&body(&site.upstream));
    site.sr.run(&["-y"]).expect(0);
    site.nginx.write_http(&body(&v2.host_port()));
    let run = site.sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.json()["shadow"]["state"], "verified", "{run}");
    assert_eq!(
        std::fs::read_to_string(&snippet).unwrap(),
        text,
        "the real file is untouched"
    );
    site.serves("app-v2");
    let got = http_get(second, "site.test", "/").expect("GET on the included listen");
    assert_eq!(got, (200, "app-v2".into()));
}

/// When the shadow nginx cannot start, its `[emerg] ... in FILE:LINE` named the copy
/// (`$TMPDIR/safe-reload-shadow.*/conf/...`), a file the operator never wrote. Here a real
/// shadow-only failure: with a long `$TMPDIR`, the shadow's stand-in for a unix listen is too
/// long a socket path, which nginx refuses at that `listen`.
#[test]
fn a_shadow_startup_error_names_the_candidates_file_not_the_copy() {
    let (site, _v1, v2) = site_and(|a| HttpBackend::start(a, "app-v2"));
    let sock = site.nginx.prefix.join("site.sock");
    let http = |upstream: &str| {
        format!(
            "{}\nserver {{ listen unix:{}; server_name unix.test; return 200 unix; }}",
            proxy_site(site.listen, upstream),
            sock.display()
        )
    };
    site.nginx.write_http(&http(&site.upstream));
    site.sr.run(&["-y"]).expect(0);
    site.nginx.write_http(&http(&v2.host_port()));
    let conf = std::fs::read_to_string(&site.nginx.conf).unwrap();
    let line = 1 + conf.lines().position(|l| l.contains("unix.test")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let long = tmp.path().join("d".repeat(60)).join("e".repeat(60));
    std::fs::create_dir_all(&long).unwrap();
    let run = run_command(site.sr.command(&["check", "--json"]).env("TMPDIR", &long));
    run.expect(0);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "not_verified", "{run}");
    let why = report["shadow"]["reason"].as_str().unwrap_or_default();
    let at = format!(
        "of the \"listen\" directive in {}:{line}",
        site.nginx.conf.display()
    );
    assert!(why.contains(&at), "{why}");
    let copy = format!("/conf{}", site.nginx.conf.display());
    assert!(!run.stdout.contains(&copy), "{run}");
}

/// A check of a server named only by a wildcard goes with a made-up Host (`*.example.test`
/// is asked as some `x.example.test`); its refusal named that Host and no file:line, so the
/// operator could not tell which server broke.
#[test]
fn a_shadow_refusal_for_a_wildcard_server_names_the_server_and_its_line() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |upstream: &str| {
        format!(
            "server {{ listen {listen}; server_name *.example.test;\n\
             location / {{ proxy_pass http://{upstream}; }} }}"
        )
    };
    let n = TestNginx::start(&site(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&bad.addr.to_string()));
    let conf = std::fs::read_to_string(&n.conf).unwrap();
    let line = 1 + conf.lines().position(|l| l.contains("location /")).unwrap();
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    let why = report["shadow"]["reason"].as_str().unwrap_or_default();
    assert!(why.contains("server *.example.test"), "{why}");
    assert!(why.contains(&format!("nginx.conf:{line}")), "{why}");
    assert!(why.contains("answered HTTP 502"), "{why}");
    assert!(report["reload"].is_null(), "{run}");
    let got = http_get(listen, "a.example.test", "/").expect("GET");
    assert_eq!(
        got,
        (200, "app-v1".into()),
        "the running nginx still serves"
    );
}
