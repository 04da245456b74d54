//! What a failing probe means, as nginx behaves: an upstream pool fails over to a live member
//! (`ngx_http_upstream_round_robin.c`), a name's addresses are peers of their own, so one
//! member or one address family down while a sibling answers is a warning that names it;
//! refusal only when no member of a pool can answer. Each case runs the real nginx and checks
//! what it serves afterwards. Hints for a member nginx fails over past agree with the warning:
//! they point the config only at a listener that would serve, say where nginx sends the request
//! instead of "502", and say each thing once per address.

#![allow(clippy::print_stdout)] // a skipped test says why

mod support;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};

use support::*;

/// A site proxying `/` to the upstream `pool` whose `server` lines are `members`.
fn pool_site(listen: SocketAddr, members: &[String], extra: &str) -> String {
    let servers: String = members.iter().map(|m| format!("server {m}; ")).collect();
    format!(
        "upstream pool {{ {servers}}}\n\
         server {{ listen {listen}; server_name site.test; {extra} \
         location / {{ proxy_pass http://pool; }} }}"
    )
}

/// A free address on loopback where nothing listens.
fn dead(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_port(ip))
}

fn result_for<'a>(report: &'a serde_json::Value, target: &str) -> &'a serde_json::Value {
    report["probe"]["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["target"] == target))
        .unwrap_or_else(|| panic!("no probe result for {target}: {report}"))
}

#[test]
fn a_pool_member_down_with_a_live_sibling_is_a_warning_and_the_reload_goes_through() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let down = dead(ip);
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [live.host_port(), down.to_string()];
    let nginx = TestNginx::start(&pool_site(listen, &members, ""));
    let sr = SafeReload::new(&nginx);
    sr.init();

    // check and probe: exit 0, the dead member named as a warning, in JSON and in text.
    let run = sr.run(&["check", "--json"]);
    run.expect(0);
    let report = run.json();
    let r = result_for(&report, &down.to_string());
    assert_eq!(r["status"], "refused", "{run}");
    assert_eq!(r["severity"], "warning", "{run}");
    let hints = r["hints"].to_string();
    assert!(
        hints.contains("upstream pool") && hints.contains(&live.host_port()),
        "the hint names the pool and the member that answers: {hints}"
    );
    let text = sr.run(&["probe"]);
    text.expect(0);
    assert!(
        text.stdout.contains(&format!("warn {down}")),
        "the text names the dead member as a warning:\n{text}"
    );

    // A reload (a real change, and --force with none) goes through and nginx serves the
    // live member, however often it is asked.
    nginx.write_http(&pool_site(listen, &members, "add_header X-Changed 1;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    let run = sr.run(&["-y", "--force", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    assert_serves_live(listen);
}

/// A member whose connect times out (a full accept queue on loopback) beside a live one: a
/// warning that says what it costs a request nginx sends there (the connect timeout first).
#[test]
fn a_pool_member_that_times_out_is_a_warning_that_names_the_wait() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let hung = hanging_listener(ip);
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [live.host_port(), hung.addr.to_string()];
    let nginx = TestNginx::start(&pool_site(listen, &members, ""));
    let sr = SafeReload::new(&nginx);
    let run = sr.run(&["check", "--json", "--probe-timeout", "300ms"]);
    run.expect(0);
    let r = result_for(&run.json(), &hung.addr.to_string()).clone();
    assert_eq!(
        (r["status"].as_str(), r["severity"].as_str()),
        (Some("timeout"), Some("warning")),
        "{run}"
    );
    assert!(
        r["hints"][0]["message"]
            .as_str()
            .unwrap()
            .contains("proxy_connect_timeout"),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "site.test", "/").unwrap(),
        (200, "live".into())
    );
}

#[test]
fn a_pool_with_no_member_answering_is_refused_with_nginx_untouched() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&pool_site(listen, &[live.host_port()], ""));
    let sr = SafeReload::new(&nginx);
    sr.init();
    let (a, b) = (dead(ip), dead(ip));
    let members = [a.to_string(), format!("{b} backup")];
    nginx.write_http(&pool_site(listen, &members, ""));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    for t in [a, b] {
        assert_eq!(
            result_for(&report, &t.to_string())["severity"],
            "failure",
            "{run}"
        );
    }
    assert_eq!(
        http_get(listen, "site.test", "/").unwrap(),
        (200, "live".into())
    );
}

#[test]
fn a_backup_that_answers_keeps_a_dead_primary_a_warning() {
    let ip = unique_loopback();
    let backup = HttpBackend::start(SocketAddr::new(ip, 0), "backup");
    let primary = dead(ip);
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [
        primary.to_string(),
        format!("{} backup", backup.host_port()),
    ];
    let nginx = TestNginx::start(&pool_site(listen, &members, ""));
    let sr = SafeReload::new(&nginx);
    let run = sr.run(&["check", "--json"]);
    run.expect(0);
    assert_eq!(
        result_for(&run.json(), &primary.to_string())["severity"],
        "warning",
        "{run}"
    );
    assert_eq!(
        http_get(listen, "site.test", "/").unwrap(),
        (200, "backup".into())
    );
}

#[test]
fn a_down_member_is_not_probed_and_does_not_count_as_answering() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let (a, b) = (dead(ip), dead(ip));
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let nginx = TestNginx::start(&proxy_site(listen, &live.host_port()));
    let sr = SafeReload::new(&nginx);
    // `b down` is not probed; `a` is then the only member that could answer, and it cannot.
    let members = [a.to_string(), format!("{b} down")];
    nginx.write_http(&pool_site(listen, &members, ""));
    let run = sr.run(&["check", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(result_for(&report, &a.to_string())["severity"], "failure");
    assert_eq!(result_for(&report, &b.to_string())["status"], "skipped");
}

/// A name that is `::1` and `127.0.0.1` (`/etc/hosts` of a private namespace): nginx makes a
/// peer of each address and fails over between them, so a backend on one family only is a
/// warning, and nginx serves it through the other.
#[test]
fn a_dual_stack_name_with_one_family_answering_is_a_warning() {
    let hosts = "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 dual.test\n::1 dual.test\n";
    if !in_private_network_with_hosts(
        "a_dual_stack_name_with_one_family_answering_is_a_warning",
        Some(hosts),
    ) {
        return;
    }
    // The backend on 127.0.0.1 only, on a port nothing holds on ::1.
    let app = HttpBackend::start("127.0.0.1:0".parse().unwrap(), "v4-only");
    let port = app.addr.expect("a TCP backend").port();
    drop(TcpListener::bind((Ipv6Addr::LOCALHOST, port)).expect("the port is free on ::1"));
    let target = format!("dual.test:{port}");
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&proxy_site(listen, &target));
    let sr = SafeReload::new(&nginx);
    sr.init();
    let run = sr.run(&["check", "--json"]);
    run.expect(0);
    let r = result_for(&run.json(), &target).clone();
    assert_eq!(r["severity"], "warning", "{run}");
    let addresses = r["addresses"].to_string();
    assert!(
        addresses.contains(&format!("[::1]:{port}")) && addresses.contains("\"ok\""),
        "both families probed: {addresses}"
    );
    nginx.write_http(&format!(
        "{}\nserver {{ listen {}; }}",
        proxy_site(listen, &target),
        SocketAddr::new(ip, free_port(ip))
    ));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    for _ in 0..4 {
        assert_eq!(
            http_get(listen, "site.test", "/").unwrap(),
            (200, "v4-only".into())
        );
    }
}

/// Regression: a unix socket that listens but that the worker user (`user nobody`) may not
/// open got the hint "no backend listens on ...; ... listens on <a similar socket>". nginx
/// answers 502 with (13: Permission denied); the hint says why: the owner, the mode, the user.
#[test]
fn a_listening_socket_the_worker_user_may_not_open_gets_a_permission_hint() {
    use std::os::unix::fs::PermissionsExt;
    if let Some(why) = namespaces_unavailable() {
        println!("SKIPPED: needs root to own a socket that `nobody` may not open ({why})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("app.sock");
    let app = HttpBackend::start_unix(&sock, "app");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A socket of a similar name that nobody may open: the old hint pointed at it.
    let other = dir.path().join("app2.sock");
    let _other = HttpBackend::start_unix(&other, "other");
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o666)).unwrap();

    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let target = format!("unix:{}:", sock.display());
    // Debian has no group `nobody`: nginx's `user nobody;` would look it up and fail.
    let group = nobody_group();
    let nginx = TestNginx::builder()
        .user(&format!("nobody {group}"))
        .http(&proxy_site(listen, &target))
        .start();
    // What nginx does with it: 502, and the reason in its log.
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 502);
    assert!(
        wait_for(std::time::Duration::from_secs(5), || nginx
            .error_log_text()
            .contains("(13: Permission denied)")),
        "{}",
        nginx.error_log_text()
    );

    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    run.expect(1);
    let report = run.json();
    let r = result_for(&report, &format!("unix:{}", sock.display()));
    assert_eq!(r["status"], "permission-denied", "{run}");
    let hints = r["hints"].to_string();
    assert!(
        hints.contains("worker user `nobody` (group `nogroup`) cannot open")
            && hints.contains("mode 0600 owner root"),
        "{hints}"
    );
    assert!(!hints.contains("no backend listens"), "{hints}");
    drop(app);
}

/// The group `user nobody GROUP;` can name here: Debian has no group `nobody` (nginx's
/// `user nobody;` would look it up and fail), and `nogroup` instead.
fn nobody_group() -> &'static str {
    match nix_group_exists("nobody") {
        true => "nobody",
        false => "nogroup",
    }
}

fn nix_group_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/group")
        .is_ok_and(|g| g.lines().any(|l| l.split(':').next() == Some(name)))
}

/// Where `proxy_next_upstream` leaves `error` out, nginx does not pass a refused request on:
/// a dead member answers 502 even with a live sibling, so the probe refuses it.
#[test]
fn a_dead_member_where_nginx_does_not_fail_over_is_refused() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let down = dead(ip);
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [live.host_port(), down.to_string()];
    let nginx = TestNginx::start(&pool_site(listen, &members, "proxy_next_upstream timeout;"));
    // What nginx does: round robin sends one of the first requests to the dead member, and
    // that one is answered 502. Each worker keeps its own round robin: asked until both
    // answers were seen, at most 20 times.
    let mut statuses: Vec<u16> = Vec::new();
    while statuses.len() < 20 && !(statuses.contains(&502) && statuses.contains(&200)) {
        statuses.push(http_get(listen, "site.test", "/").unwrap().0);
    }
    assert!(
        statuses.contains(&502) && statuses.contains(&200),
        "{statuses:?}"
    );
    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    run.expect(1);
    let r = result_for(&run.json(), &down.to_string()).clone();
    assert_eq!(r["severity"], "failure", "{run}");
    assert!(
        r["hints"]
            .to_string()
            .contains("proxy_next_upstream is in scope without `error`"),
        "{run}"
    );
}

/// `proxy_next_upstream_tries 1` allows nginx one server per request: a dead member answers
/// 502 as it does without `error`. It was "verified", the hint saying nginx fails over.
#[test]
fn a_dead_member_where_nginx_tries_one_server_is_refused() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let down = dead(ip);
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [live.host_port(), down.to_string()];
    let nginx = TestNginx::start(&pool_site(listen, &members, "proxy_next_upstream_tries 1;"));
    let statuses: Vec<u16> = (0..4)
        .map(|_| http_get(listen, "site.test", "/").unwrap().0)
        .collect();
    assert!(statuses.contains(&502), "what nginx does: {statuses:?}");
    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    run.expect(1);
    let r = result_for(&run.json(), &down.to_string()).clone();
    assert_eq!(r["severity"], "failure", "{run}");
    assert!(
        r["hints"]
            .to_string()
            .contains("proxy_next_upstream_tries 1 is in scope"),
        "{run}"
    );
}

/// The hints of the result for `target` in `check --json`, as one text.
fn hints_of(run: &Run, target: &str) -> (String, String) {
    let report = run.json();
    let r = result_for(&report, target);
    let hints: Vec<String> = (r["hints"].as_array().into_iter().flatten())
        .map(|h| {
            format!(
                "{} | {}",
                h["message"].as_str().unwrap_or(""),
                h["suggestion"].as_str().unwrap_or("")
            )
        })
        .collect();
    (
        r["severity"].as_str().unwrap_or("").to_string(),
        hints.join("\n"),
    )
}

fn assert_serves_live(listen: SocketAddr) {
    for _ in 0..4 {
        assert_eq!(
            http_get(listen, "site.test", "/").unwrap(),
            (200, "live".into())
        );
    }
}

/// A port typo (`:40011` for `:40001`) beside another backend on a lower port of the same
/// address: the hint said "point the config at" the lowest port (another site's backend, a
/// retired one), and the one a digit away came later or in "and 3 more" (r11 K F1, L F2).
/// The likeliest port, one typo away, is named first and suggested.
#[test]
fn a_port_typo_is_pointed_at_the_port_one_typo_away_not_the_lowest() {
    let ip = unique_loopback();
    let at = |port: u16| SocketAddr::new(ip, port);
    let other = HttpBackend::start(at(20002), "other site");
    let app = HttpBackend::start(at(40001), "app");
    let typo = at(40011);
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = format!(
        "server {{ listen {listen}; server_name site.test; location / {{ proxy_pass http://{typo}; }} \
         location /other {{ proxy_pass http://{}; }} }}",
        other.host_port()
    );
    let nginx = TestNginx::start(&site);
    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    let (severity, hints) = hints_of(&run, &typo.to_string());
    assert_eq!(severity, "failure", "{run}");
    assert!(
        hints.contains(&format!("point the config at {}", app.host_port())),
        "{hints}"
    );
}

/// Regression: the dead member's "point the config at X" named any listener on its address:
/// the live member already in the pool, and a listener the probes found closing every
/// connection. Only a listener that answered in the directive's protocol and is not a member
/// is a fix.
#[test]
fn a_dead_member_is_not_pointed_at_a_closing_listener_or_its_own_pool() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let spare = HttpBackend::start(SocketAddr::new(ip, 0), "spare");
    let closer = AcceptCloseBackend::start(SocketAddr::new(ip, 0));
    let down = dead(ip);
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [live.host_port(), down.to_string()];
    // The closing listener and the spare are used elsewhere, so the probes know what they do.
    let extra = format!(
        "location /closer {{ proxy_pass http://{}; }} location /spare {{ proxy_pass http://{}; }}",
        closer.addr,
        spare.host_port()
    );
    let nginx = TestNginx::start(&pool_site(listen, &members, &extra));
    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    let (severity, hints) = hints_of(&run, &down.to_string());
    assert_eq!(severity, "warning", "{run}");
    assert!(
        !hints.contains(&closer.addr.to_string()),
        "a listener that closes connections is no fix:\n{hints}"
    );
    assert!(
        !hints.contains(&format!("point the config at {}", live.host_port())),
        "the live member already serves the pool:\n{hints}"
    );
    assert!(
        hints.contains(&format!("point the config at {}", spare.host_port())),
        "the listener that answers HTTP outside the pool is the one to name:\n{hints}"
    );
    assert_serves_live(listen);
}

/// What makes nginx pass a POST it has already sent on to the next server.
const NON_IDEMPOTENT: &str = "proxy_next_upstream error timeout non_idempotent;";

/// Regression: a member that accepts and closes beside a live one is a warning, yet its hint
/// said "nginx answers 502". Where `proxy_next_upstream` has `non_idempotent`, nginx fails over
/// to the live member for every request; the hint says so and names it. (Without it a POST is
/// answered 502: see the next test.)
#[test]
fn a_member_that_accepts_and_closes_beside_a_live_one_says_nginx_fails_over() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let closer = AcceptCloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [live.host_port(), closer.addr.to_string()];
    let nginx = TestNginx::start(&pool_site(listen, &members, NON_IDEMPOTENT));
    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    run.expect(0);
    let (severity, hints) = hints_of(&run, &closer.addr.to_string());
    assert_eq!(severity, "warning", "{run}");
    assert!(!hints.contains("nginx answers 502"), "{hints}");
    assert!(
        hints.contains(&format!("fails over to {}", live.host_port())),
        "{hints}"
    );
    assert_serves_live(listen);
    for _ in 0..4 {
        assert_eq!(
            http_post(listen, "site.test", "/").unwrap(),
            (200, "live".into())
        );
    }
}

/// Regression (findings v1 F2): a pool's primary changed to a backend that accepts and closes
/// was "live and verified", while nginx then answered POSTs 502: it has sent the request when
/// the peer hangs up, and passes only idempotent ones on to the next server. The probe refuses
/// it now, saying why, and nginx keeps serving the primary.
#[test]
fn a_primary_that_accepts_and_closes_is_refused_as_nginx_answers_its_posts_502() {
    let ip = unique_loopback();
    let primary = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let spare = HttpBackend::start(SocketAddr::new(ip, 0), "spare");
    let closer = AcceptCloseBackend::start(SocketAddr::new(ip, 0));
    let members = |first: &str| {
        [
            format!("{first} max_fails=3 fail_timeout=5s"),
            format!("{} backup", spare.host_port()),
        ]
    };
    // What the candidate does, shown by an nginx of its own: GETs fail over, POSTs do not.
    let shown = SocketAddr::new(ip, free_port(ip));
    let candidate = TestNginx::start(&pool_site(shown, &members(&closer.addr.to_string()), ""));
    let posts: Vec<u16> = (0..3)
        .map(|_| http_post(shown, "site.test", "/").unwrap().0)
        .collect();
    assert!(
        posts.contains(&502),
        "POSTs through the candidate: {posts:?}"
    );
    assert_eq!(
        http_get(shown, "site.test", "/").unwrap(),
        (200, "spare".into())
    );
    drop(candidate);

    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&pool_site(listen, &members(&primary.host_port()), ""));
    let sr = SafeReload::new(&nginx);
    sr.init();
    let workers = nginx.worker_pids();
    nginx.write_http(&pool_site(listen, &members(&closer.addr.to_string()), ""));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    let r = result_for(&report, &closer.addr.to_string());
    assert_eq!(
        (&r["status"], &r["severity"], &r["cause"]),
        (&"closed".into(), &"failure".into(), &"change".into()),
        "{run}"
    );
    let hint = r["hints"][0]["message"].as_str().unwrap_or_default();
    assert!(
        hint.contains("answers a POST (or PATCH) it has already sent 502")
            && hint.contains("does not have `non_idempotent`"),
        "{run}"
    );
    assert_eq!(nginx.worker_pids(), workers, "nginx was not reloaded");
    for _ in 0..3 {
        assert_eq!(
            http_post(listen, "site.test", "/").unwrap(),
            (200, "live".into())
        );
    }
}

/// Regression: a dead `backup` server of a healthy pool got two "nothing listens on ..." lines
/// for one address (one for the same port elsewhere, one for other ports here), and no word
/// that a backup matters only when the primaries fail.
#[test]
fn a_dead_backup_of_a_healthy_pool_gets_one_line_per_address() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let backup = dead(ip);
    // The backup's port is held on another loopback address: the diagnosis sees it.
    let elsewhere = HttpBackend::start(SocketAddr::new(unique_loopback(), backup.port()), "x");
    let listen = SocketAddr::new(ip, free_port(ip));
    let members = [live.host_port(), format!("{backup} backup")];
    let nginx = TestNginx::start(&pool_site(listen, &members, ""));
    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    run.expect(0);
    let (severity, hints) = hints_of(&run, &backup.to_string());
    assert_eq!(severity, "warning", "{run}");
    assert_eq!(
        hints
            .matches(&format!("nothing listens on {backup}"))
            .count(),
        1,
        "{hints}"
    );
    assert!(
        hints.contains("backup server") && hints.contains("only when the primary servers fail"),
        "{hints}"
    );
    assert!(!hints.contains(&elsewhere.host_port()), "{hints}");
    assert_serves_live(listen);
}

/// Regression (F13): a master started as `nobody` ignores `user` and its workers run as
/// `nobody`. A socket `daemon` owns with mode 0660 was judged for `user daemon;`: probe "ok",
/// `check` exit 0, while nginx answered 502 (13: Permission denied). The running master's
/// identity is now what the socket is judged by.
#[test]
fn a_master_run_as_nobody_is_the_worker_user_whatever_user_says() {
    let Some((_dir, sock, app, listen, target)) = daemon_socket(
        "uw.sock",
        "start nginx as nobody and own a socket as daemon",
    ) else {
        return;
    };
    let nginx = TestNginx::builder()
        .user("daemon")
        .run_as(65534, 65534)
        .http(&proxy_site(listen, &target))
        .start();
    // Logged while the configuration is parsed, before error_log is open: to stderr.
    let startup = std::fs::read_to_string(nginx.prefix.join("logs/stderr.log")).unwrap_or_default();
    assert!(
        startup.contains("\"user\" directive makes sense only"),
        "{startup}"
    );
    // What nginx does with it: 502, permission denied.
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 502);
    assert!(
        wait_for(std::time::Duration::from_secs(5), || nginx
            .error_log_text()
            .contains("(13: Permission denied)")),
        "{}",
        nginx.error_log_text()
    );

    for cmd in ["check", "probe"] {
        let run = SafeReload::new(&nginx).run(&[cmd, "--json"]);
        run.expect(1);
        let report = run.json();
        let r = result_for(&report, &format!("unix:{}", sock.display()));
        assert_eq!(r["status"], "permission-denied", "{cmd}: {run}");
        let hints = r["hints"].to_string();
        assert!(
            hints.contains("worker user `nobody` (group `nogroup`) cannot open")
                && hints.contains("the `user` directive is ignored"),
            "{cmd}: {hints}"
        );
    }
    // Still 502: the check changed nothing.
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 502);
    drop(app);
}

/// Regression (F1): a change of `user` that locks the workers out of a unix socket they could
/// open before was a warning, "already down before this change", and `check` passed, while
/// every request through it would answer 502 after the reload. The account is the change's.
#[test]
fn a_user_change_that_locks_the_workers_out_of_a_socket_is_the_changes_failure() {
    let Some((_dir, sock, app, listen, target)) = daemon_socket(
        "php.sock",
        "run workers as daemon and own a socket as daemon",
    ) else {
        return;
    };
    let nginx = TestNginx::builder()
        .user("daemon daemon")
        .http(&proxy_site(listen, &target))
        .start();
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 200);
    let sr = SafeReload::new(&nginx);
    sr.init();

    let group = nobody_group();
    let conf = std::fs::read_to_string(&nginx.conf).unwrap();
    assert!(conf.contains("user daemon daemon;"), "{conf}");
    std::fs::write(
        &nginx.conf,
        conf.replace("user daemon daemon;", &format!("user nobody {group};")),
    )
    .unwrap();
    for args in [&["check", "--json"][..], &["reload", "-y", "--json"]] {
        let run = sr.run(args);
        run.expect(1);
        let report = run.json();
        let r = result_for(&report, &format!("unix:{}", sock.display()));
        assert_eq!(r["status"], "permission-denied", "{args:?}: {run}");
        assert_eq!(r["severity"], "failure", "{args:?}: {run}");
        let hints = r["hints"].to_string();
        assert!(!hints.contains("already down"), "{args:?}: {hints}");
        assert!(hints.contains("worker user `nobody`"), "{args:?}: {hints}");
    }
    // Refused before the signal: nginx still serves through the socket.
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 200);
    drop(app);
}

/// A unix-socket backend owned by `daemon` (uid 1) with mode 0660, a loopback listen for a site
/// proxying to it, and the `*_pass` target; `None` (with the reason printed) unless root.
fn daemon_socket(
    name: &str,
    why: &str,
) -> Option<(
    tempfile::TempDir,
    std::path::PathBuf,
    HttpBackend,
    SocketAddr,
    String,
)> {
    use std::os::unix::fs::PermissionsExt;
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: needs root to {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join(name);
    let app = HttpBackend::start_unix(&sock, "app");
    std::os::unix::fs::chown(&sock, Some(1), Some(1)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660)).unwrap();
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let target = format!("unix:{}:", sock.display());
    Some((dir, sock, app, listen, target))
}

/// Regression (F6): a member that accepts and closes, added beside a live one, was a warning
/// for `check` (nginx fails over) and a rollback for `reload`: its "upstream prematurely
/// closed connection" lines counted as new upstream errors though every client got 200. The
/// errors of a member the probe already found failing are nginx failing over, like the connect
/// errors of a dead member; the answers still decide. (Under `non_idempotent`: without it a
/// POST to that member is answered 502, and the change is refused, as the test above shows.)
#[test]
fn adding_a_member_that_accepts_and_closes_beside_a_live_one_reloads_like_check_says() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let closer = AcceptCloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&pool_site(listen, &[live.host_port()], NON_IDEMPOTENT));
    let sr = SafeReload::new(&nginx);
    sr.init();
    nginx.write_http(&pool_site(
        listen,
        &[live.host_port(), closer.addr.to_string()],
        NON_IDEMPOTENT,
    ));
    sr.run(&["check"]).expect(0);
    let run = sr.run(&[
        "reload",
        "-y",
        "--health",
        &format!("http://site.test:{}/", listen.port()),
        "--resolve",
        &format!("site.test:{}:{}", listen.port(), listen.ip()),
        "--json",
    ]);
    run.expect(0);
    // The change is live: nginx sends requests to the closer too, and fails over.
    assert!(
        std::fs::read_to_string(&nginx.conf)
            .unwrap()
            .contains(&closer.addr.to_string()),
        "{run}"
    );
    for _ in 0..4 {
        assert_serves_live(listen);
    }
}

/// nginx's workers run with the group `user NAME GROUP;` names (`setgid`), and the socket
/// permission check took the user's own group instead (r16 y F1, F2). A socket of `daemon`'s
/// group (mode 0660): `user nobody nogroup;` gets 502 with (13: Permission denied); the
/// change to `user nobody daemon;`, which mends it, was refused, its hint asking for the very
/// `user` directive the change sets. It goes live now and the site answers. The change back
/// breaks it again: it was passed by `check --no-shadow`, and is refused now, with nginx
/// still serving the app.
#[test]
fn the_group_the_user_directive_names_decides_who_may_open_a_socket() {
    let Some((_dir, sock, _app, listen, target)) =
        daemon_socket("grp.sock", "own a socket of another group")
    else {
        return;
    };
    // Owned by root, of group daemon (gid 1): only the group's bits let `nobody` in.
    std::os::unix::fs::chown(&sock, Some(0), Some(1)).unwrap();
    let with_group = |group: &str| {
        TestNginx::builder()
            .user(&format!("nobody {group}"))
            .http(&proxy_site(listen, &target))
    };
    let nginx = with_group("nogroup").start();
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 502);
    let sr = SafeReload::new(&nginx);
    sr.init();
    let as_group = |group: &str| {
        let conf = std::fs::read_to_string(&nginx.conf).unwrap();
        let line = (conf.lines())
            .find(|l| l.starts_with("user "))
            .unwrap()
            .to_string();
        let conf = conf.replace(&line, &format!("user nobody {group};"));
        std::fs::write(&nginx.conf, conf).unwrap();
    };
    as_group("daemon");
    let run = sr.run(&["-y"]);
    run.expect(0);
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "app".into())),
        "{run}"
    );
    as_group("nogroup");
    let run = sr.run(&["check", "--no-shadow", "--json"]);
    run.expect(1);
    let r = result_for(&run.json(), &format!("unix:{}", sock.display())).clone();
    assert_eq!(r["status"], "permission-denied", "{run}");
    assert!(
        r["hints"]
            .to_string()
            .contains("worker user `nobody` (group `nogroup`) cannot open"),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "app".into()))
    );
}

/// A socket that grants nginx's worker user access through a POSIX ACL (php-fpm's
/// `listen.acl_users`, `setfacl -m u:nobody:rw`): its mode bits alone (0660, another owner
/// and group) refuse it, and the change was refused with "Permission denied" though nginx
/// serves through it (r17 a F3). An ACL's entries decide: no refusal.
#[test]
fn a_socket_a_posix_acl_opens_to_the_worker_user_is_no_refusal() {
    let Some((_dir, sock, _app, listen, target)) =
        daemon_socket("acl.sock", "own a socket nobody may open only by its ACL")
    else {
        return;
    };
    // The ACL as the kernel stores it (`posix_acl_xattr`, version 2): owner rw, user nobody
    // (65534) rw, owning group rw, mask rw, others nothing.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 6, 65534),
        (0x04, 6, u32::MAX),
        (0x10, 6, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    let path = std::ffi::CString::new(sock.to_str().unwrap()).unwrap();
    let name = std::ffi::CString::new("system.posix_acl_access").unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the length passed, all alive for the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    if rc != 0 {
        println!(
            "SKIPPED: this filesystem takes no POSIX ACL: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let group = nobody_group();
    let nginx = TestNginx::builder()
        .user(&format!("nobody {group}"))
        .http(&proxy_site(listen, &target))
        .start();
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "app".into())),
        "what nginx does: the ACL lets its workers in"
    );
    let run = SafeReload::new(&nginx).run(&["check", "--json"]);
    run.expect(0);
    let r = result_for(&run.json(), &format!("unix:{}", sock.display())).clone();
    assert_ne!(r["status"], "permission-denied", "{run}");
}
