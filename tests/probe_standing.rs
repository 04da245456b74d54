//! A failing probe judged against the change: a backend that was already down before it
//! (refused, or accepting and closing) refuses only a change that introduced that use of it;
//! a change elsewhere reloads with a warning that says it was down before, and one that
//! points an affected server at it is still refused. A target that is one of the candidate's
//! own listens is nginx itself after the reload, not a dead backend. Each case runs the real
//! nginx and checks what it serves afterwards.

mod support;

use std::net::{IpAddr, SocketAddr};

use support::*;

/// A free address on loopback where nothing listens.
fn dead(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, free_port(ip))
}

/// `a.test` and `c.test` on `listen`, proxying `/` to `a_to` and `c_to`; `a_extra` goes into
/// `a.test`'s block, `c_extra` into `c.test`'s.
fn two_sites(listen: SocketAddr, a_to: &str, a_extra: &str, c_to: &str, c_extra: &str) -> String {
    format!(
        "server {{ listen {listen}; server_name a.test; {a_extra} \
         location / {{ proxy_pass http://{a_to}; }} }}\n\
         server {{ listen {listen}; server_name c.test; {c_extra} \
         location / {{ proxy_pass http://{c_to}; }} }}"
    )
}

const NEW: &str = "location = /new { return 200 \"new\"; }";

/// A running nginx where `a.test` is served by a live backend and `c.test` points at `down`
/// (already failing), with `safe-reload init` done.
struct Machine {
    nginx: TestNginx,
    sr: SafeReload,
    listen: SocketAddr,
    live: HttpBackend,
    down: String,
}

impl Machine {
    fn start(down: &str) -> Machine {
        let ip = unique_loopback();
        let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&two_sites(listen, &live.host_port(), "", down, ""));
        let sr = SafeReload::new(&nginx);
        sr.init();
        Machine {
            nginx,
            sr,
            listen,
            live,
            down: down.to_string(),
        }
    }

    fn change(&self, a_extra: &str, c_extra: &str) {
        let a = self.live.host_port();
        let http = two_sites(self.listen, &a, a_extra, &self.down, c_extra);
        self.nginx.write_http(&http);
    }

    fn get(&self, host: &str, path: &str) -> (u16, String) {
        http_get(self.listen, host, path).expect("nginx answers")
    }
}

fn result_for(run: &Run, target: &str) -> serde_json::Value {
    run.json()["probe"]["results"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["target"] == target).cloned())
        .unwrap_or_else(|| panic!("no probe result for {target}:\n{run}"))
}

/// Regression (findings F19): one backend already down refused every change anywhere.
#[test]
fn a_backend_down_before_the_change_does_not_refuse_a_change_to_another_server() {
    let ip = unique_loopback();
    let closing = AcceptCloseBackend::start(SocketAddr::new(ip, 0));
    for (down, status) in [
        (dead(ip).to_string(), "refused"),
        (closing.addr.to_string(), "closed"),
    ] {
        let m = Machine::start(&down);
        assert_eq!(
            m.get("c.test", "/").0,
            502,
            "c.test fails before the change"
        );
        m.change(NEW, "");
        // `check` and the reload agree: a warning that says it was down before, exit 0.
        let check = m.sr.run(&["check", "--json"]);
        check.expect(0);
        let run = m.sr.run(&["-y", "--json"]);
        run.expect(0);
        assert_eq!(run.outcome(), "reloaded", "{run}");
        for r in [result_for(&check, &down), result_for(&run, &down)] {
            assert_eq!(r["status"], status, "{run}");
            assert_eq!(r["severity"], "warning", "{run}");
            assert_eq!(r["cause"], "pre-existing", "{run}");
            assert_eq!(
                r["hints"][0]["message"],
                format!(
                    "{down} was already down before this change ({status}); c.test answers 502 \
                     today; this change does not touch it"
                ),
                "{run}"
            );
        }
        // The change is live; a.test is served as before, c.test fails as it did.
        assert_eq!(m.get("a.test", "/new"), (200, "new".into()));
        assert_eq!(m.get("a.test", "/"), (200, "live".into()));
        assert_eq!(m.get("c.test", "/").0, 502);
        // `probe` judges no change: the dead backend is a failure there.
        m.sr.run(&["probe"]).expect(1);
    }
}

/// The other half of F19: pointing an affected server at a dead target is still refused,
/// with nginx untouched.
#[test]
fn pointing_a_server_at_a_backend_that_is_down_is_still_refused() {
    let ip = unique_loopback();
    let down = dead(ip).to_string();
    let m = Machine::start(&down);
    let workers = m.nginx.worker_pids();
    let http = two_sites(m.listen, &down, NEW, &down, "");
    m.nginx.write_http(&http);
    let run = m.sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(run.outcome(), "refused", "{run}");
    let r = result_for(&run, &down);
    assert_eq!(
        (&r["severity"], &r["cause"]),
        (&"failure".into(), &"change".into()),
        "{run}"
    );
    assert_eq!(m.nginx.worker_pids(), workers, "nginx was not reloaded");
    assert_eq!(m.get("a.test", "/"), (200, "live".into()));
    assert_eq!(
        m.get("a.test", "/new"),
        (200, "live".into()),
        "the change is not live"
    );
    // --allow-fail still lets it through.
    let run = m.sr.run(&["-y", "--json", "--allow-fail", &down]);
    assert_eq!(result_for(&run, &down)["severity"], "allowed", "{run}");
}

/// A change to the very server that uses the dead backend as before: not refused, and the
/// verdict after the reload says the site failed before the change and still does (exit 4),
/// without rolling the change back.
#[test]
fn a_change_to_a_server_whose_backend_was_already_down_reloads_and_reports_it() {
    let ip = unique_loopback();
    let down = dead(ip).to_string();
    let m = Machine::start(&down);
    m.change("", NEW);
    let run = m.sr.run(&["-y", "--json"]);
    run.expect(4);
    let r = result_for(&run, &down);
    assert_eq!(
        (&r["severity"], &r["cause"]),
        (&"warning".into(), &"pre-existing".into()),
        "{run}"
    );
    assert!(
        r["hints"][0]["message"]
            .as_str()
            .is_some_and(|h| h.contains("leaves c.test's use of it as it was")),
        "{run}"
    );
    let report = run.json();
    assert_eq!(report["outcome"], "already_failing", "{run}");
    let verdict = &report["verdict"];
    assert_eq!(verdict["decision"], "keep", "nothing rolled back: {run}");
    let still = &verdict["still_failing"][0];
    assert_eq!(
        (
            &still["host"],
            &still["before"]["status"],
            &still["after"]["status"]
        ),
        (&"c.test".into(), &502.into(), &502.into()),
        "the verdict names the failure that was there before: {run}"
    );
    assert!(report["rollback"].is_null(), "nothing rolled back: {run}");
    assert_eq!(
        m.get("c.test", "/new"),
        (200, "new".into()),
        "the change is live"
    );
    assert_eq!(m.get("c.test", "/").0, 502);
    assert_eq!(m.get("a.test", "/"), (200, "live".into()));
}

/// Without a last-good snapshot there is nothing to tell an old failure from a new one: a
/// dead backend refuses, as before.
#[test]
fn without_a_snapshot_a_dead_backend_still_refuses() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let down = dead(ip).to_string();
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&two_sites(listen, &live.host_port(), "", &down, ""));
    let sr = SafeReload::new(&nginx);
    nginx.write_http(&two_sites(listen, &live.host_port(), NEW, &down, ""));
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(result_for(&run, &down)["cause"], "change", "{run}");
    assert_eq!(
        http_get(listen, "a.test", "/new").unwrap(),
        (200, "live".into())
    );
}

/// Regression (findings F17): a change that adds an internal vhost and a front proxying to it
/// was refused, because nothing listens on the internal vhost's address before the reload.
#[test]
fn a_front_proxying_to_a_new_internal_vhost_of_the_same_change_reloads() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let site = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&proxy_site(site, &app.host_port()));
    let sr = SafeReload::new(&nginx);
    sr.init();
    let internal = SocketAddr::new(ip, free_port(ip));
    let front = SocketAddr::new(ip, free_port(ip));
    nginx.write_http(&format!(
        "{}\n\
         server {{ listen {internal}; server_name internal.test; \
         location / {{ proxy_pass http://{}; }} }}\n\
         server {{ listen {front}; server_name front.test; \
         location / {{ proxy_pass http://{internal}; }} }}",
        proxy_site(site, &app.host_port()),
        app.host_port()
    ));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    let r = result_for(&run, &internal.to_string());
    assert_eq!(
        (&r["severity"], &r["cause"]),
        (&"warning".into(), &"own-listen".into()),
        "{run}"
    );
    assert!(
        r["hints"][0]["message"]
            .as_str()
            .is_some_and(|h| h.contains("nginx's own listen in this configuration")),
        "{run}"
    );
    // The shadow sent front.test's check to its own copy of the internal listen.
    let shadow = &run.json()["shadow"];
    assert_eq!(shadow["state"], "verified", "{run}");
    let checked = shadow["checks"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["host"] == "front.test" && c["shadow"]["status"] == 200)
    });
    assert!(checked, "front.test answered 200 through the shadow: {run}");
    assert_eq!(
        http_get(front, "front.test", "/").unwrap(),
        (200, "app".into())
    );
    assert_eq!(
        http_get(site, "site.test", "/").unwrap(),
        (200, "app".into())
    );
}

/// `a.test` through `upstream a_pool` (one server `live`, marked `down` when `live_down`,
/// and one already `down`), `c.test` through `upstream c_pool`, whose only server is `down`.
fn pools(listen: SocketAddr, live: &str, live_down: bool, a_extra: &str, dead: &str) -> String {
    let flag = if live_down { " down" } else { "" };
    format!(
        "upstream a_pool {{\n server {live}{flag};\n server {dead} down;\n}}\n\
         upstream c_pool {{\n server {dead} down;\n}}\n\
         server {{ listen {listen}; server_name a.test; {a_extra} \
         location / {{ proxy_pass http://a_pool; }} }}\n\
         server {{ listen {listen}; server_name c.test; \
         location / {{ proxy_pass http://c_pool; }} }}"
    )
}

/// Regression (findings v1 F15): marking the last live server of an upstream `down` passed
/// `check --no-shadow` with no word, though nginx then answers every request for it 502 ("no
/// live upstreams") without connecting anywhere. It is refused now, with nginx untouched; an
/// upstream that had no live server before the change refuses nothing and is said to.
#[test]
fn an_upstream_whose_every_server_is_down_is_refused_when_the_change_made_it_so() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let dead = dead(ip).to_string();
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&pools(listen, &live.host_port(), false, "", &dead));
    let sr = SafeReload::new(&nginx);
    sr.init();
    assert_eq!(http_get(listen, "c.test", "/").unwrap().0, 502);

    // A change elsewhere: c_pool was dead before it, a warning that says so.
    nginx.write_http(&pools(listen, &live.host_port(), false, NEW, &dead));
    let run = sr.run(&["-y", "--json", "--no-shadow"]);
    run.expect(0);
    let r = result_for(&run, &dead);
    assert_eq!(r["status"], "no-live-upstreams", "{run}");
    assert_eq!(
        (&r["severity"], &r["cause"]),
        (&"warning".into(), &"pre-existing".into()),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "a.test", "/new").unwrap(),
        (200, "new".into())
    );
    assert_eq!(http_get(listen, "c.test", "/").unwrap().0, 502);

    // The change marks a_pool's live server `down` too: refused by the probe alone.
    let workers = nginx.worker_pids();
    nginx.write_http(&pools(listen, &live.host_port(), true, NEW, &dead));
    let check = sr.run(&["check", "--no-shadow", "--json"]);
    check.expect(1);
    let r = result_for(&check, &live.host_port());
    assert_eq!(r["status"], "no-live-upstreams", "{check}");
    assert_eq!(
        (&r["severity"], &r["cause"]),
        (&"failure".into(), &"change".into()),
        "{check}"
    );
    let hint = r["hints"][0]["message"].as_str().unwrap_or_default();
    assert!(
        hint.starts_with("every server of upstream a_pool (") && hint.contains("no live upstreams"),
        "{check}"
    );
    // c_pool shares its server with a_pool, and is still judged on its own uses.
    let c = result_for(&check, &dead);
    assert_eq!(
        (&c["severity"], &c["dead_upstream"]),
        (&"warning".into(), &"c_pool".into()),
        "{check}"
    );
    assert!(
        c["hints"][0]["message"]
            .as_str()
            .is_some_and(|h| h.starts_with("every server of upstream c_pool was marked `down` before this change too; c.test answers 502 today")),
        "{check}"
    );
    let run = sr.run(&["-y", "--no-shadow"]);
    run.expect(1);
    assert!(
        run.stderr.contains("no-live-upstreams"),
        "the refusal names it: {run}"
    );
    assert_eq!(nginx.worker_pids(), workers, "nginx was not reloaded");
    assert_eq!(
        http_get(listen, "a.test", "/").unwrap(),
        (200, "live".into()),
        "a.test is served as before"
    );
}

/// An `upstream` no `*_pass` names, whose server is down: nginx sends it no request. Added by
/// the change, or checked with no last-good at all (a pre-commit hook's fresh state, CI), it
/// is a warning, `cause: "unused"`, and the change goes live; it was a refusal, exit 1.
#[test]
fn an_upstream_no_server_uses_is_a_warning_with_or_without_last_good() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let listen = SocketAddr::new(ip, free_port(ip));
    let down = dead(ip);
    let site = format!(
        "server {{ listen {listen}; server_name a.test; location / {{ proxy_pass http://{}; }} }}",
        live.host_port()
    );
    let unused = format!("upstream leftover {{ server {down}; }}\n{site}");
    let n = TestNginx::start(&unused);
    let sr = SafeReload::new(&n);
    // No last-good yet.
    let run = sr.run(&["check", "--json"]);
    run.expect(0);
    let r = result_for(&run, &down.to_string());
    assert_eq!(
        (&r["severity"], &r["cause"]),
        (&"warning".into(), &"unused".into()),
        "{run}"
    );

    drop(sr);
    drop(n);

    let n = TestNginx::start(&site);
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&unused);
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let r = result_for(&run, &down.to_string());
    assert_eq!(r["cause"], "unused", "{run}");
    assert_eq!(http_get(listen, "a.test", "/").expect("GET").0, 200);
}

/// A dead backend on an address where only nginx listens (the production site, and during a
/// reload the shadow nginx on ports of its own): the hint does not offer nginx's listens as
/// the backend to point at, which would be a proxy loop or a port that is gone a moment later.
#[test]
fn a_hint_never_offers_nginx_itself_as_the_backend() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let down = dead(ip);
    let site = format!(
        "server {{ listen {listen}; server_name a.test; location / {{ proxy_pass http://{down}; }} }}"
    );
    let n = TestNginx::start(&format!("server {{ listen {listen}; return 200; }}"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site);
    let run = sr.run(&["-y", "--json", "--no-shadow"]);
    run.expect(1);
    let r = result_for(&run, &down.to_string());
    let hints = r["hints"].to_string();
    assert!(
        hints.contains(&format!("nothing listens on port {}", down.port())),
        "{run}"
    );
    assert!(!hints.contains("nginx (pid"), "{run}");
    assert_eq!(
        http_get(listen, "a.test", "/").expect("GET").0,
        200,
        "refused: the old site"
    );
}

/// A `mirror` whose target (the copy of traffic sent to staging) is down: nginx ignores the
/// answers of mirror subrequests, so every client still gets 200. The probe's failure is a
/// warning, `cause: "mirror"`, and the connect errors nginx logs for the copies are expected,
/// so neither the shadow nor the checks after the reload hold them against the change. It was
/// refused (and rolled back with `--no-shadow`).
#[test]
fn a_mirror_target_that_is_down_is_a_warning_as_clients_never_see_it() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let listen = SocketAddr::new(ip, free_port(ip));
    let down = dead(ip);
    let site = |copy: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test;\n\
             location / {{ mirror /_mirror; proxy_pass http://{l}; }}\n\
             location = /_mirror {{ internal; proxy_pass http://{copy}$request_uri; }} }}",
            l = live.host_port()
        )
    };
    for flags in [&["-y", "--json"][..], &["-y", "--json", "--no-shadow"][..]] {
        let n = TestNginx::start(&site(&live.host_port()));
        let sr = SafeReload::new(&n);
        sr.init();
        n.write_http(&site(&down.to_string()));
        let run = sr.run(flags);
        run.expect(0);
        assert_eq!(run.outcome(), "reloaded", "{run}");
        let r = result_for(&run, &down.to_string());
        assert_eq!(
            (&r["severity"], &r["cause"]),
            (&"warning".into(), &"mirror".into()),
            "{run}"
        );
        assert_eq!(http_get(listen, "a.test", "/x").expect("GET").0, 200);
        // The copies did fail after the reload: nginx logged them.
        let log = n.error_log_text();
        assert!(log.contains("subrequest: \"/_mirror\""), "{log}");
    }
}

/// The same with `--no-probe`: no probe result sets the copies' errors apart, yet nginx logs
/// each for the mirror's subrequest (`subrequest: "/_mirror"`), and those reach no client.
/// Neither the change that points the mirror at a dead target nor a harmless change while it
/// stays dead is refused, rolled back or exit 4. Both were: the copies' connect errors counted.
#[test]
fn a_mirror_copys_errors_are_not_the_changes_without_a_probe_either() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let listen = SocketAddr::new(ip, free_port(ip));
    let down = dead(ip);
    let site = |copy: &str, rev: u32| {
        format!(
            "server {{ listen {listen}; server_name a.test;\n\
             location = /rev {{ return 200 \"{rev}\"; }}\n\
             location / {{ mirror /_mirror; proxy_pass http://{l}; }}\n\
             location = /_mirror {{ internal; proxy_pass http://{copy}$request_uri; }} }}",
            l = live.host_port()
        )
    };
    for flags in [
        &["-y", "--json", "--no-probe"][..],
        &["-y", "--json", "--no-probe", "--no-shadow"][..],
    ] {
        let n = TestNginx::start(&site(&live.host_port(), 0));
        let sr = SafeReload::new(&n);
        sr.init();
        n.write_http(&site(&down.to_string(), 1));
        let run = sr.run(flags);
        run.expect(0);
        assert_eq!(run.outcome(), "reloaded", "{run}");
        n.write_http(&site(&down.to_string(), 2));
        let run = sr.run(flags);
        run.expect(0);
        assert_eq!(run.outcome(), "reloaded", "{run}");
        let (status, _) = http_get(listen, "a.test", "/x").expect("GET");
        assert_eq!(status, 200);
        let log = n.error_log_text();
        assert!(log.contains("subrequest: \"/_mirror\""), "{log}");
        let rev = http_get(listen, "a.test", "/rev").expect("GET").1;
        assert_eq!(rev, "2", "the second change is live");
    }
}
