//! Every input is resolved before anything changes, and a reload request that never reached
//! nginx is a refusal: no snapshot rolled back, no journal left, the running workers untouched.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;

/// A site serving `app-v1` with a baseline, and a candidate on disk pointing at `app-v2`.
struct Edited {
    nginx: TestNginx,
    sr: SafeReload,
    listen: SocketAddr,
    _old: HttpBackend,
    _new: HttpBackend,
    workers: Vec<i32>,
    last_good: String,
}

impl Edited {
    fn start() -> Edited {
        let ip = unique_loopback();
        let old = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
        let new = HttpBackend::start(SocketAddr::new(ip, 0), "app-v2");
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&proxy_site(listen, &old.host_port()));
        let sr = SafeReload::new(&nginx);
        let last_good = sr.init();
        nginx.write_http(&proxy_site(listen, &new.host_port()));
        let workers = nginx.ready_workers();
        Edited {
            nginx,
            sr,
            listen,
            _old: old,
            _new: new,
            workers,
            last_good,
        }
    }

    /// nginx runs what it ran: the same workers, serving the old backend; last-good unchanged
    /// and no run left for `recover`.
    fn assert_untouched(&self, run: &Run) {
        assert_eq!(self.nginx.ready_workers(), self.workers, "workers:\n{run}");
        assert_eq!(
            http_get(self.listen, "site.test", "/").ok(),
            Some((200, "app-v1".into())),
            "still the previous configuration:\n{run}"
        );
        assert_eq!(
            self.sr.last_good().as_deref(),
            Some(self.last_good.as_str())
        );
        assert!(
            !self.sr.state.join("journal.json").exists(),
            "no journal left:\n{run}"
        );
    }

    fn snapshots(&self) -> usize {
        let h = self.sr.run(&["history", "--json"]);
        h.expect(0);
        h.json()["history"].as_array().map_or(0, Vec::len)
    }

    /// A later plain run is not blocked and takes the candidate live.
    fn assert_next_run_reloads(&self) {
        self.sr.run(&["-y"]).expect(0);
        assert_eq!(
            http_get(self.listen, "site.test", "/").ok(),
            Some((200, "app-v2".into()))
        );
    }
}

#[test]
fn regression_a_malformed_health_url_is_a_usage_error_before_the_snapshot() {
    let site = Edited::start();
    let before = site.snapshots();
    let run = site.sr.run(&["-y", "--health", "ftp://x/"]);
    run.expect(2);
    assert!(run.stderr.contains("ftp://x/"), "{run}");
    site.assert_untouched(&run);
    assert_eq!(site.snapshots(), before, "no snapshot taken");
    site.assert_next_run_reloads();
}

/// Regression: `--health-header 'Host: x'` was sent beside each check's own Host; nginx
/// answers a request with two Host fields with its own 400, which counted as a pass. A Host
/// (or a framing field) is now a usage error that points at `--resolve`, before any snapshot.
#[test]
fn regression_a_host_health_header_is_a_usage_error_before_the_snapshot() {
    let site = Edited::start();
    let before = site.snapshots();
    let health = format!("http://127.0.0.1:{}/", site.listen.port());
    for header in ["Host: site.test", "content-length: 4"] {
        let run = (site.sr).run(&["-y", "--health", &health, "--health-header", header]);
        run.expect(2);
        assert!(run.stderr.contains(&format!("{header:?}")), "{run}");
        site.assert_untouched(&run);
    }
    let run = (site.sr).run(&["-y", "--health-header", "Host: site.test"]);
    assert!(run.stderr.contains("--resolve"), "{run}");
    assert_eq!(site.snapshots(), before, "no snapshot taken");
    site.assert_next_run_reloads();
}

/// Regression: a `--resolve` entry was read only when a `--health` URL looked it up, so a
/// malformed one (or one a URL did not match, or any without `--health`) was ignored and a
/// port out of range never matched: the health check went to the system resolver or nowhere.
/// Every entry is now checked when the settings are read: exit 2 naming the value, before any
/// snapshot, journal or signal; the same entry written well then works.
#[test]
fn regression_a_malformed_resolve_entry_is_a_usage_error_before_the_snapshot() {
    let site = Edited::start();
    let before = site.snapshots();
    let port = site.listen.port();
    let ip = site.listen.ip();
    let health = format!("http://site.test:{port}/");
    let good = format!("site.test:{port}:{ip}");
    for (resolve, why) in [
        (
            format!("site.test:{port}"),
            "expected HOST:PORT:ADDR".to_string(),
        ),
        ("site.test:70000:127.0.0.1".into(), "port \"70000\"".into()),
        ("site.test:0:127.0.0.1".into(), "port \"0\"".into()),
        (
            format!("site.test:{port}:localhost"),
            "\"localhost\" is not an IP address".into(),
        ),
        (format!(":{port}:{ip}"), "is not a host name".into()),
    ] {
        for args in [
            vec![
                "-y",
                "--health",
                &health,
                "--resolve",
                &good,
                "--resolve",
                &resolve,
            ],
            vec!["-y", "--resolve", &resolve],
        ] {
            let run = site.sr.run(&args);
            run.expect(2);
            let quoted = format!("--resolve \"{resolve}\": ");
            assert!(run.stderr.contains(&quoted), "{args:?}: {run}");
            assert!(run.stderr.contains(&why), "{args:?}: {run}");
            assert!(!run.stderr.contains("panicked"), "{run}");
            site.assert_untouched(&run);
        }
    }
    assert_eq!(site.snapshots(), before, "no snapshot taken");
    let run = site
        .sr
        .run(&["-y", "--health", &health, "--resolve", &good]);
    run.expect(0);
    assert_eq!(
        http_get(site.listen, "site.test", "/").ok(),
        Some((200, "app-v2".into())),
        "{run}"
    );
}

#[test]
fn a_reload_command_that_cannot_run_is_a_usage_error() {
    let site = Edited::start();
    let run = site
        .sr
        .run(&["-y", "--reload-cmd", "/nonexistent/systemctl reload nginx"]);
    run.expect(2);
    assert!(run.stderr.contains("/nonexistent/systemctl"), "{run}");
    site.assert_untouched(&run);
}

#[test]
fn a_failing_reload_command_is_a_refusal_that_shows_its_stderr() {
    let site = Edited::start();
    let cmd = "sh -c 'echo Unit nginx.service is not active. >&2; exit 1'";
    let t = Instant::now();
    let run = site.sr.run(&["-y", "--json", "--reload-cmd", cmd]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["outcome"], "refused", "{run}");
    assert!(report["rollback"].is_null(), "nothing to roll back:\n{run}");
    assert_eq!(report["reload"]["untouched"], true, "{run}");
    let text = site.sr.run(&["-y", "--reload-cmd", cmd]);
    text.expect(1);
    assert!(
        text.stderr.contains("Unit nginx.service is not active.")
            && text
                .stderr
                .contains("still runs the previous configuration"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    site.assert_untouched(&text);
    site.assert_next_run_reloads();
}

#[test]
fn a_reload_command_that_does_nothing_is_not_rolled_back() {
    let site = Edited::start();
    site.sr.write_settings("reload-timeout = \"2s\"\n");
    let t = Instant::now();
    let run = site.sr.run(&["-y", "--json", "--reload-cmd", "true"]);
    let took = t.elapsed();
    run.expect(1);
    let report = run.json();
    assert!(report["rollback"].is_null(), "nothing to roll back:\n{run}");
    assert_eq!(report["reload"]["took_effect"], false, "{run}");
    assert_eq!(report["reload"]["untouched"], true, "{run}");
    let reloads = report["steps"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["name"] == "reload").count());
    assert_eq!(reloads, 1, "one proof, not a second for a rollback:\n{run}");
    // One proof deadline (2 s here), not two: measured on the report's own proof steps, as
    // the run's wall time also holds everything else a loaded machine slows down.
    let proving: f64 = report["steps"].as_array().map_or(0.0, |s| {
        s.iter()
            .filter(|s| s["name"] == "reload")
            .filter_map(|s| s["elapsed_ms"].as_f64())
            .sum()
    });
    assert!(proving < 4000.0, "proofs took {proving} ms:\n{run}");
    assert!(took < Duration::from_secs(20), "took {took:?}:\n{run}");
    site.assert_untouched(&run);
    let history = site.sr.run(&["history", "--json"]).json();
    let candidate = report["snapshot"].as_str().expect("a candidate snapshot");
    let kept = history["history"]
        .as_array()
        .and_then(|h| h.iter().find(|s| s["id"] == candidate))
        .expect("the candidate is kept");
    assert_eq!(kept["meta"]["outcome"], "rejected", "{kept}");

    let text = site.sr.run(&["-y", "--reload-cmd", "true"]);
    text.expect(1);
    assert!(
        text.stderr.contains("the reload did not take effect")
            && text
                .stderr
                .contains("nginx still runs the previous configuration"),
        "{text}"
    );
    // It exited 0: nothing says it will not reload nginx later, and the run says so.
    assert!(
        text.stderr.contains("the reload command (true) exited 0")
            && text.stderr.contains("nginx loads the candidate unverified"),
        "{text}"
    );
    site.assert_next_run_reloads();
}

/// `sh -c 'kill -HUP MASTER; echo ... >&2; exit 1'`: a reload command that reloads nginx and
/// then fails, as a wrapper does whose own later step fails.
fn reloads_then_fails(master: i32) -> String {
    format!("sh -c 'kill -HUP {master}; echo post-reload step failed >&2; exit 1'")
}

#[test]
fn regression_a_reload_command_that_reloads_and_exits_nonzero_is_proven_not_called_unloaded() {
    let site = Edited::start();
    let cmd = reloads_then_fails(site.nginx.master_pid());
    let run = site.sr.run(&["-y", "--json", "--reload-cmd", &cmd]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["outcome"], "reloaded", "{run}");
    assert_eq!(report["reload"]["took_effect"], true, "{run}");
    assert!(report["rollback"].is_null(), "{run}");
    assert_eq!(
        http_get(site.listen, "site.test", "/").ok(),
        Some((200, "app-v2".into())),
        "nginx serves the change:\n{run}"
    );
    assert!(
        site.nginx
            .ready_workers()
            .iter()
            .all(|w| !site.workers.contains(w)),
        "new workers:\n{run}"
    );
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("exit status 1") && notes.contains("post-reload step failed"),
        "the command's failure is said:\n{run}"
    );
    // The command as one copyable argv: the shell's script stays one quoted word.
    let quoted = format!(
        "sh -c 'kill -HUP {}; echo post-reload step failed >&2; exit 1'",
        site.nginx.master_pid()
    );
    assert!(notes.contains(&quoted), "shell-quoted:\n{run}");
    assert!(!site.sr.state.join("journal.json").exists(), "{run}");
    assert_ne!(
        site.sr.last_good().as_deref(),
        Some(site.last_good.as_str())
    );
}

#[test]
fn a_rollback_through_a_reload_command_that_exits_nonzero_is_proven_too() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&proxy_site(listen, &good.host_port()));
    let sr = SafeReload::new(&nginx);
    let last_good = sr.init();
    nginx.write_http(&proxy_site(listen, &closer.addr.to_string()));
    let cmd = reloads_then_fails(nginx.master_pid());
    // Without the shadow, which would refuse the 502 before the reload.
    let run = sr.run(&["-y", "--json", "--no-shadow", "--reload-cmd", &cmd]);
    run.expect(3);
    let report = run.json();
    assert_eq!(report["outcome"], "rolled_back", "{run}");
    assert_eq!(report["reload"]["took_effect"], true, "{run}");
    let rb = &report["rollback"];
    assert_eq!(rb["restored_to"], last_good.as_str(), "{run}");
    assert_eq!(
        rb["reload"]["took_effect"], true,
        "the rollback is proven:\n{run}"
    );
    assert_eq!(rb["health"]["passed"], true, "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "app-v1".into())),
        "nginx serves last-good again:\n{run}"
    );
    assert_eq!(sr.last_good(), Some(last_good));
    assert!(!sr.state.join("journal.json").exists(), "{run}");
}

/// r14 u F3: nginx stops while the reload command runs (its unit stopped by someone else).
/// The run said "nginx began a reload all the same: it is proven from its processes" of an
/// nginx that was not running. It says nginx is not running any more, and exits 4: an
/// operator must start it (last-good's files are on disk for it).
#[test]
fn nginx_stopped_while_the_reload_command_runs_is_said_to_be_stopped() {
    let site = Edited::start();
    site.sr.write_settings("reload-timeout = \"2s\"\n");
    let pid = site.nginx.master_pid();
    let cmd = format!(
        "sh -c 'kill -QUIT {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done; exit 1'"
    );
    let run = site.sr.run(&["-y", "--reload-cmd", &cmd]);
    run.expect(4);
    assert!(
        run.stderr.contains("nginx is not running any more")
            && !run.stderr.contains("began a reload all the same"),
        "{run}"
    );
    assert!(!alive(pid), "nginx stopped");
}
