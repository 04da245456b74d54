//! Failures after the reload, through the binary: a change nginx answers 502 for, an added
//! file that breaks the site, a refused upstream hidden by `--no-probe` or by failover, a
//! `listen` that cannot bind; and what is not the change's doing: a site failing before the
//! change as after it, a check of a listen only the change had, failover nginx logged before
//! the change too.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// A site on its own address under a running nginx, with a recorded baseline.
struct Site {
    nginx: TestNginx,
    sr: SafeReload,
    listen: SocketAddr,
    baseline: Vec<u8>,
}

impl Site {
    fn start(http: impl Fn(SocketAddr) -> String) -> Site {
        let ip = unique_loopback();
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&http(listen));
        let sr = SafeReload::new(&nginx);
        sr.init();
        let baseline = std::fs::read(&nginx.conf).expect("conf");
        Site {
            nginx,
            sr,
            listen,
            baseline,
        }
    }

    fn get(&self) -> (u16, String) {
        http_get(self.listen, "site.test", "/").expect("GET through nginx")
    }

    /// Write the change, run `-y --json` with `flags`, expect `code` and `outcome`.
    fn reload(&self, http: &str, flags: &[&str], code: i32, outcome: &str) -> (Run, Value) {
        self.nginx.write_http(http);
        // These tests are about the rollback: without the shadow, which would refuse most of
        // these changes before the reload (tests/shadow_instance.rs).
        let mut args = vec!["-y", "--json", "--no-shadow"];
        args.extend_from_slice(flags);
        let run = self.sr.run(&args);
        run.expect(code);
        let report = run.json();
        assert_eq!(report["outcome"], outcome, "{run}");
        (run, report)
    }

    /// The rejected snapshot from `history --json`.
    fn history_entry(&self, id: &str) -> Value {
        let run = self.sr.run(&["history", "--json"]);
        run.expect(0);
        let history = run.json()["history"].clone();
        history
            .as_array()
            .expect("history list")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("snapshot {id} in history:\n{run}"))
    }
}

/// The bytes a snapshot entry for `path` (relative to the config root) points at.
fn stored(sr: &SafeReload, snap: &Value, path: &str) -> Vec<u8> {
    let entry = snap["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} in snapshot {snap:#}"));
    sr.object(entry["hash"].as_str().expect("hash"))
}

#[test]
fn a_change_that_makes_nginx_answer_502_is_rolled_back_and_kept() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let site = Site::start(|l| proxy_site(l, &good.host_port()));
    let baseline_id = site.sr.last_good().expect("baseline");
    let workers = site.nginx.ready_workers();

    let edit = proxy_site(site.listen, &closer.addr.to_string());
    let (run, report) = site.reload(&edit, &[], 3, "rolled_back");
    let edited = site.nginx.render(&edit).into_bytes();

    let rb = &report["rollback"];
    assert_eq!(rb["restored_to"], baseline_id.as_str(), "{run}");
    assert!(rb["reason"].as_str().unwrap_or("").contains("502"), "{run}");
    assert_eq!(rb["health"]["passed"], true, "{run}");
    // The rollback's own time covers its reload (it runs no nginx -t of its own), and is no
    // longer than the run.
    let ms = |v: &Value| v.as_f64().expect("elapsed_ms");
    let rollback_reload = (report["steps"].as_array().expect("steps").iter())
        .rfind(|s| s["name"] == "reload")
        .expect("the rollback's reload step");
    assert!(rb["test"].is_null(), "{run}");
    assert!(
        ms(&rb["elapsed_ms"]) >= ms(&rollback_reload["elapsed_ms"]),
        "{run}"
    );
    assert_eq!(
        std::fs::read(&site.nginx.conf).expect("conf"),
        site.baseline,
        "the files are byte-identical to last-good"
    );
    assert_eq!(site.sr.last_good(), Some(baseline_id));
    assert_eq!(site.get(), (200, "app-v1".into()));
    assert!(site
        .nginx
        .ready_workers()
        .iter()
        .all(|w| !workers.contains(w)));

    let rejected = rb["rejected"].as_str().expect("rejected id");
    let snap = site.history_entry(rejected);
    assert_eq!(snap["meta"]["outcome"], "rejected", "{snap:#}");
    assert_eq!(stored(&site.sr, &snap, "nginx.conf"), edited);
}

#[test]
fn an_added_file_that_causes_502_is_moved_out_of_the_tree() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let site_body = |l: SocketAddr| {
        format!(
            "{}\ninclude conf.d/*.conf;",
            proxy_site(l, &good.host_port())
        )
    };
    let site = Site::start(site_body);
    let conf_d = site.nginx.prefix.join("conf.d");
    std::fs::create_dir(&conf_d).expect("mkdir conf.d");
    let added = conf_d.join("api.conf");
    let api = SocketAddr::new(ip, free_port(ip));
    let text = format!(
        "server {{ listen {api}; server_name api.test; location /api/ {{ proxy_pass http://{}; }} }}\n",
        closer.addr
    );
    std::fs::write(&added, &text).expect("write conf.d/api.conf");

    let run = site.sr.run(&["-y", "--json", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    assert_eq!(report["outcome"], "rolled_back", "{run}");
    let diff = report["diff"].to_string();
    assert!(
        diff.contains("conf.d/api.conf"),
        "the diff shows the added file: {diff}"
    );
    assert!(!added.exists(), "the added file is gone from conf.d");
    assert_eq!(std::fs::read_dir(&conf_d).expect("conf.d").count(), 0);
    let rejected = report["rollback"]["rejected"].as_str().expect("rejected");
    let snap = site.history_entry(rejected);
    assert_eq!(stored(&site.sr, &snap, "conf.d/api.conf"), text.as_bytes());
    assert_eq!(site.get(), (200, "app-v1".into()));
    assert!(
        http_get(api, "api.test", "/api/").is_err(),
        "the added server no longer listens"
    );
}

#[test]
fn no_probe_with_a_refused_upstream_rolls_back_showing_the_connect_error() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let site = Site::start(|l| proxy_site(l, &good.host_port()));
    let dead = SocketAddr::new(ip, free_port(ip));

    let (run, report) = site.reload(
        &proxy_site(site.listen, &dead.to_string()),
        &["--no-probe"],
        3,
        "rolled_back",
    );
    assert!(report.get("probe").is_none_or(Value::is_null), "{run}");
    let errors = report["health"]["upstream_errors"]
        .as_array()
        .expect("errors");
    let upstream = format!("http://{dead}/");
    let line = errors
        .iter()
        .find(|e| e["upstream"] == upstream.as_str())
        .unwrap_or_else(|| panic!("an upstream error for {upstream}: {run}"));
    let text = line["text"].as_str().expect("text");
    assert!(
        text.contains("connect() failed (111: Connection refused)")
            && text.contains(&format!("upstream: \"{upstream}\"")),
        "nginx's own line: {text}"
    );
    assert_eq!(
        std::fs::read(&site.nginx.conf).expect("conf"),
        site.baseline
    );
    assert_eq!(site.get(), (200, "app-v1".into()));

    let human = site.sr.run(&["-y", "--no-probe", "--no-shadow"]);
    // The first run restored the baseline: nothing to do now.
    human.expect(0);
    site.nginx
        .write_http(&proxy_site(site.listen, &dead.to_string()));
    let human = site.sr.run(&["-y", "--no-probe", "--no-shadow"]);
    human.expect(3);
    let all = format!("{}{}", human.stdout, human.stderr);
    assert!(
        all.contains("111: Connection refused") && all.contains(&upstream),
        "the text report shows the connect() line:\n{human}"
    );
}

#[test]
fn a_pool_whose_failover_hides_a_refused_server_still_fails_verification() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let site = Site::start(|l| proxy_site(l, &good.host_port()));
    let dead = SocketAddr::new(ip, free_port(ip));
    let pool = format!(
        "upstream pool {{ server {dead}; server {}; }}\n{}",
        good.host_port(),
        proxy_site(site.listen, "pool")
    );

    let (run, report) = site.reload(&pool, &["--no-probe"], 3, "rolled_back");
    let results = report["health"]["results"].as_array().expect("results");
    assert!(
        results.iter().all(|r| r["status"] == 200),
        "failover hid the refused server from the client: {run}"
    );
    let errors = report["health"]["upstream_errors"].to_string();
    assert!(errors.contains(&format!("http://{dead}/")), "{run}");
    assert_eq!(report["rollback"]["health"]["passed"], true, "{run}");
    assert_eq!(
        std::fs::read(&site.nginx.conf).expect("conf"),
        site.baseline
    );
}

#[test]
fn a_listen_that_cannot_bind_is_detected_as_not_taken_effect() {
    // A socket bound but not listening holds the port: `nginx -t` passes (it ignores
    // EADDRINUSE), the preflight sees no listener, and the reload's bind() fails for real.
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let site = Site::start(|l| proxy_site(l, &good.host_port()));
    let workers = site.nginx.ready_workers();
    let blocker = bound_not_listening(ip);
    let port = blocker
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("addr");
    let change = format!(
        "{}\nserver {{ listen {port}; location / {{ return 200 \"new\"; }} }}",
        proxy_site(site.listen, &good.host_port())
    );

    let (run, report) = site.reload(&change, &[], 3, "rolled_back");
    assert_eq!(report["reload"]["took_effect"], false, "{run}");
    let emerg = report["reload"]["emerg"].to_string();
    assert!(
        emerg.contains(&format!("bind() to {port} failed (98: Address")),
        "nginx's [emerg] line is reported: {run}"
    );
    let reason = report["rollback"]["reason"].as_str().expect("reason");
    assert!(reason.contains("did not take effect"), "{reason}");
    assert_eq!(report["rollback"]["reload"]["took_effect"], true, "{run}");
    assert_eq!(
        std::fs::read(&site.nginx.conf).expect("conf"),
        site.baseline
    );
    assert_eq!(site.get(), (200, "app-v1".into()));
    // The failed reload left the old workers serving; the rollback's reload replaced them.
    assert!(wait_for(Duration::from_secs(2), || site
        .nginx
        .ready_workers()
        .iter()
        .all(|w| !workers.contains(w))));
}

#[test]
fn a_site_failing_before_and_after_a_harmless_change_is_kept_and_exits_4_saying_before_and_after() {
    // It used to be rolled back, then exit 4 "the backend is failing" by guess: the change is
    // not the cause, so nothing is rolled back, and the message says what the check answered
    // before the change and after it.
    let ip = unique_loopback();
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let site = Site::start(|l| proxy_site(l, &closer.addr.to_string()));
    let baseline_id = site.sr.last_good().expect("baseline");
    let change = format!(
        "server {{ listen {}; server_name site.test; \
         location / {{ proxy_set_header X-Changed 1; proxy_pass http://{}; }} \
         location = /new {{ return 200 \"new\"; }} }}",
        site.listen, closer.addr
    );

    let (run, report) = site.reload(&change, &["--no-probe"], 4, "already_failing");
    assert!(report.get("rollback").is_none_or(Value::is_null), "{run}");
    assert_eq!(report["verdict"]["decision"], "keep", "{run}");
    let failing = &report["verdict"]["still_failing"][0];
    assert_eq!(failing["before"]["status"], 502, "{run}");
    assert_eq!(failing["after"]["status"], 502, "{run}");
    assert_eq!(report["baseline"]["results"][0]["status"], 502, "{run}");
    // The change is live and recorded; the site answers as it did before it.
    assert_eq!(
        std::fs::read(&site.nginx.conf).expect("conf"),
        site.nginx.render(&change).into_bytes()
    );
    assert_ne!(site.sr.last_good(), Some(baseline_id));
    assert_eq!(
        http_get(site.listen, "site.test", "/new").expect("GET /new"),
        (200, "new".into())
    );
    assert_eq!(site.get().0, 502);

    let text = site.sr.run(&["-y", "--force", "--no-probe"]);
    text.expect(4);
    let all = format!("{}{}", text.stdout, text.stderr);
    assert!(
        all.contains("an operator must act")
            && all.contains("answered HTTP 502 before this change and still does")
            && !all.contains("backend is failing"),
        "{text}"
    );
}

#[test]
fn an_explicit_health_url_on_a_listen_only_the_change_has_is_not_reverified_after_the_rollback() {
    // The URL's listen is gone after the rollback, as it should be: it used to be verified
    // again, refused, and the run exited 4.
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let site = Site::start(|l| proxy_site(l, &good.host_port()));
    let added = SocketAddr::new(ip, free_port(ip));
    let change = format!(
        "{}\nserver {{ listen {added}; server_name new.test; \
         location / {{ proxy_pass http://{}; }} }}",
        proxy_site(site.listen, &good.host_port()),
        closer.addr
    );
    let url = format!("http://{added}/");

    let (run, report) = site.reload(&change, &["--no-probe", "--health", &url], 3, "rolled_back");
    assert_eq!(report["baseline"]["results"][0]["refused"], true, "{run}");
    // Not sent: nothing of the running nginx listens there (`nginx -t` may, for a moment).
    let error = report["baseline"]["results"][0]["error"].as_str();
    assert!(
        error.is_some_and(|e| e.contains("does not listen")),
        "{run}"
    );
    let reason = report["rollback"]["reason"].as_str().expect("reason");
    assert!(reason.contains("nothing answered there before"), "{run}");
    assert_eq!(
        report["rollback"]["dropped"],
        serde_json::json!([url]),
        "{run}"
    );
    assert_eq!(report["rollback"]["verdict"]["state"], "back", "{run}");
    assert_eq!(
        std::fs::read(&site.nginx.conf).expect("conf"),
        site.baseline
    );
    assert_eq!(site.get(), (200, "app-v1".into()));
    assert!(http_get(added, "new.test", "/").is_err(), "{run}");

    site.nginx.write_http(&change);
    let text = site
        .sr
        .run(&["-y", "--no-probe", "--no-shadow", "--health", &url]);
    text.expect(3);
    assert!(
        text.stderr.contains(&format!(
            "not re-verified: {url} (only the rejected configuration"
        )),
        "{text}"
    );
}

#[test]
fn localhost_as_ipv6_and_ipv4_with_the_backend_on_ipv4_only_is_a_warning_not_exit_4() {
    // nginx resolves `localhost` to [::1] and 127.0.0.1, logs `connect() failed` for [::1] and
    // fails over: every client gets 200, before the change and after it. That used to fail
    // every change, harmless or not, with exit 4. `--no-probe`: the probe finds [::1] down on
    // its own (its connect errors are then expected, probe_policy tests that); without it the
    // baseline is what shows the running configuration fails over the same way.
    let name = "localhost_as_ipv6_and_ipv4_with_the_backend_on_ipv4_only_is_a_warning_not_exit_4";
    if !in_private_network_with_hosts(name, Some("::1 localhost\n127.0.0.1 localhost\n")) {
        return;
    }
    let backend = HttpBackend::start("127.0.0.1:0".parse().expect("addr"), "app-v1");
    let port = backend.addr.expect("tcp").port();
    // [::1] on the same port refuses: bound, never listening (no other program can take it).
    let _refusing = bound_not_listening_at(SocketAddr::new("::1".parse().expect("ip"), port));
    let upstream = format!("localhost:{port}");
    let site = Site::start(|l| proxy_site(l, &upstream));
    let change = |header: &str| {
        format!(
            "server {{ listen {}; server_name site.test; \
             location / {{ add_header X-Changed {header}; proxy_pass http://{upstream}; }} }}",
            site.listen
        )
    };

    let (run, report) = site.reload(&change("1"), &["--no-probe"], 0, "reloaded");
    let v6 = format!("http://[::1]:{port}/");
    assert!(
        report["baseline"]["upstream_errors"]
            .to_string()
            .contains(&v6),
        "the running configuration logs the failover too: {run}"
    );
    let known = report["verdict"]["known_errors"].as_array().expect("known");
    assert!(known.iter().any(|e| e["upstream"] == v6.as_str()), "{run}");
    assert!(
        (report["health"]["results"]
            .as_array()
            .expect("results")
            .iter())
        .all(|r| r["status"] == 200),
        "{run}"
    );
    assert_eq!(site.get(), (200, "app-v1".into()));

    site.nginx.write_http(&change("2"));
    let text = site.sr.run(&["-y", "--no-probe"]);
    text.expect(0);
    assert!(
        text.stderr.contains("warning:") && text.stderr.contains(&v6),
        "the warning names the upstream: {text}"
    );
    assert!(text.stdout.contains("reloaded"), "{text}");
}

/// A TCP socket bound to a free port of `ip` that never listens: invisible in
/// `/proc/net/tcp`'s listeners, yet nginx's bind() to that port fails with EADDRINUSE.
fn bound_not_listening(ip: std::net::IpAddr) -> socket2::Socket {
    let free = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    bound_not_listening_at(addr)
}

/// A TCP socket bound to `addr` that never listens: connects to it are refused.
fn bound_not_listening_at(addr: SocketAddr) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    if addr.is_ipv6() {
        s.set_only_v6(true).expect("IPV6_V6ONLY");
    }
    s.bind(&addr.into()).expect("bind without listen");
    s
}

/// After a rollback that put the last good configuration back, the text output printed the
/// rejected candidate's failed check and upstream error as `FAIL verify: ... -> HTTP 502`, as if
/// that were how the site answers now. They are what the change broke, said as such with the
/// answer from before the change; the site answers 200 again and the rollback says so.
#[test]
fn after_a_rollback_the_candidates_failures_are_said_as_what_the_change_broke() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let n = TestNginx::start(&proxy_site(listen, &good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&proxy_site(listen, &dead.to_string()));
    let run = sr.run(&["-y", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert!(!run.stderr.lines().any(|l| l.starts_with("FAIL")), "{run}");
    let broke = (run.stderr.lines())
        .find(|l| l.starts_with("the change broke: GET"))
        .unwrap_or_else(|| panic!("{run}"));
    assert!(
        broke.contains("-> HTTP 502 (HTTP 200 before this change)"),
        "{run}"
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("the change broke: nginx logged an upstream error")),
        "{run}"
    );
    assert!(run.stderr.contains("is live and verified"), "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app-v1".into())
    );
}

/// A rollback whose candidate also fails a check that failed before it (another site's
/// backend answers 502 today): only the check the change broke is "the change broke"; the
/// other is said to have failed before, and the rollback is still for the first.
#[test]
fn a_rollback_says_which_failures_the_change_broke_and_which_were_there_before() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let failing = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let (a, b) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let http = |b_to: &str| {
        format!(
            "server {{ listen {a}; server_name a.test; location / {{ proxy_pass http://{}; }} }}\n\
             server {{ listen {b}; server_name b.test; location / {{ proxy_pass http://{b_to}; }} \
             add_header X-Rev 2; }}",
            failing.addr
        )
    };
    let nginx = TestNginx::start(&http(&app.host_port()));
    let sr = SafeReload::new(&nginx);
    sr.init();
    // A change to both servers (a shared header would do the same): a.test fails as before.
    nginx.write_http(&http(&bad.addr.to_string()).replace(
        "server_name a.test;",
        "server_name a.test; add_header X-Rev 2;",
    ));
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(3);
    assert!(
        run.stderr.contains("the change broke: GET http://b.test"),
        "{run}"
    );
    assert!(
        run.stderr.contains("already failing: GET http://a.test")
            && !run.stderr.contains("the change broke: GET http://a.test"),
        "{run}"
    );
    // After the rollback it still fails, as before the change: not a FAIL of the rollback.
    assert!(
        run.stderr
            .contains("still failing re-verify: GET http://a.test")
            && !run.stderr.contains("FAIL re-verify: GET http://a.test"),
        "{run}"
    );
    assert_eq!(
        http_get(b, "b.test", "/").expect("GET"),
        (200, "app".to_string())
    );
}
