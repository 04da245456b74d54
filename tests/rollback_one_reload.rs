//! A rollback costs one reload: last-good's bytes are restored and hash-verified, then the
//! master is signalled without a second `nginx -t`. When the restored configuration no longer
//! loads, nginx says so in its error log and keeps running the candidate, which the proof reads
//! exactly as a refusing `nginx -t`: the rollback failed, exit 4.

mod rel_support;
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use rel_support::Proc;
use support::*;

/// A server proxying to `upstream` on `listen`; with `log`, an access log in that file.
fn site(listen: SocketAddr, upstream: &str, log: Option<&std::path::Path>) -> String {
    let log = log.map_or(String::new(), |l| format!("access_log {};", l.display()));
    format!(
        "server {{ listen {listen}; server_name site.test; {log} \
         location / {{ proxy_pass http://{upstream}; }} }}"
    )
}

#[test]
fn a_rollback_reloads_once_without_a_second_nginx_test() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&site(listen, &good.host_port(), None));
    let sr = SafeReload::new(&nginx);
    sr.init();
    nginx.write_http(&site(listen, &bad.addr.to_string(), None));
    let health = format!("http://{listen}/");
    // The rollback path: without the shadow, which refuses this change before the reload.
    let run = sr.run(&["-y", "--json", "--no-shadow", "--health", &health]);
    run.expect(3);
    let report = run.json();
    let tests = report["steps"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["name"] == "nginx -t").count());
    assert_eq!(tests, 1, "only the candidate is tested:\n{run}");
    assert!(report["rollback"]["test"].is_null(), "{run}");
    assert_eq!(
        report["rollback"]["restore"]["mismatches"],
        serde_json::json!([])
    );
    assert_eq!(report["rollback"]["reload"]["took_effect"], true, "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "good".into()))
    );
}

#[test]
fn a_restored_configuration_nginx_cannot_load_fails_the_rollback_and_nginx_keeps_the_candidate() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let logs = tempfile::tempdir().expect("tempdir");
    let gone = logs.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let access = gone.join("access.log");
    // Last-good logs into a directory that will be gone by the time it is restored.
    let nginx = TestNginx::start(&site(listen, &good.host_port(), Some(&access)));
    let sr = SafeReload::new(&nginx);
    sr.init();
    nginx.write_http(&site(listen, &bad.addr.to_string(), None));
    let health = format!("http://{listen}/");
    let mut run = Proc(
        sr.command(&["-y", "--json", "--no-shadow", "--health", &health])
            .env("SAFE_RELOAD_TEST_PAUSE", "rolling_back")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start safe-reload"),
    );
    assert!(
        run.wait_stopped(Duration::from_secs(30)),
        "the run never started rolling back"
    );
    let workers = nginx.ready_workers();
    std::fs::remove_dir_all(&gone).unwrap();
    run.signal(libc::SIGCONT);
    let out = run.finish(Duration::from_secs(60));
    let code = out.status.code();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}): {}", text(&out)));
    assert_eq!(code, Some(4), "{}", text(&out));
    assert_eq!(report["outcome"], "rollback_failed", "{report}");
    let rb = &report["rollback"];
    assert!(rb["test"].is_null(), "no second nginx -t: {rb}");
    assert_eq!(rb["reload"]["took_effect"], false, "{rb}");
    let emerg = rb["reload"]["emerg"].to_string();
    assert!(
        emerg.contains("access.log"),
        "the error log's [emerg] is the evidence: {rb}"
    );
    // nginx kept the configuration it ran: the candidate's workers, answering 502.
    assert_eq!(nginx.ready_workers(), workers);
    assert_eq!(
        http_get(listen, "site.test", "/").map(|(s, _)| s).ok(),
        Some(502)
    );
    // The files are last-good's.
    assert!(std::fs::read_to_string(&nginx.conf)
        .unwrap()
        .contains(&access.display().to_string()));
}

/// The change adds a server on `listen unix:SOCK` and breaks the site; while it is verified
/// someone deletes SOCK. The rollback's reload (last-good has no such listen) loads last-good,
/// starts new workers and logs `[emerg] unlink() SOCK failed` closing the candidate's socket:
/// a rollback that took effect, exit 3, the journal closed (it was "reloading the last good
/// configuration failed", exit 4, and the journal left for `recover`).
#[test]
fn a_rollback_whose_reload_logs_an_emerg_but_starts_new_workers_is_back_and_closes_the_journal() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("new.sock");
    let nginx = TestNginx::start(&site(listen, &good.host_port(), None));
    let sr = SafeReload::new(&nginx);
    sr.init();
    nginx.write_http(&format!(
        "{}\nserver {{ listen unix:{}; return 200 \"ux\"; }}",
        site(listen, &bad.addr.to_string(), None),
        sock.display()
    ));
    let health = format!("http://{listen}/");
    let mut run = Proc(
        sr.command(&["-y", "--json", "--no-shadow", "--health", &health])
            .env("SAFE_RELOAD_TEST_PAUSE", "verifying")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start safe-reload"),
    );
    assert!(
        run.wait_stopped(Duration::from_secs(30)),
        "the run never started verifying"
    );
    std::fs::remove_file(&sock).expect("delete the candidate's socket file");
    run.signal(libc::SIGCONT);
    let out = run.finish(Duration::from_secs(60));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON ({e}): {}", text(&out)));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(report["outcome"], "rolled_back", "{report}");
    let rb = &report["rollback"];
    assert_eq!(rb["reload"]["took_effect"], true, "{rb}");
    let emerg = rb["verdict"]["emerg"].to_string();
    assert!(
        emerg.contains("unlink()") && emerg.contains("new.sock"),
        "{rb}"
    );
    let status = sr.run(&["status", "--json"]);
    status.expect(0);
    assert!(status.json()["status"]["interrupted"].is_null(), "{status}");
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "good".into()))
    );
}

/// The same rollback, killed after it restored the files and before it signalled; SOCK is
/// deleted meanwhile. One `recover` finishes it: its reload logs the `[emerg]` and takes
/// effect, exit 3, and nothing is left to recover (it exited 4 and left the journal, so a
/// second `recover` was needed).
#[test]
fn recover_finishes_a_rollback_whose_reload_logs_an_emerg_in_one_go() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("new.sock");
    let nginx = TestNginx::start(&site(listen, &good.host_port(), None));
    let sr = SafeReload::new(&nginx);
    sr.init();
    nginx.write_http(&format!(
        "{}\nserver {{ listen unix:{}; return 200 \"ux\"; }}",
        site(listen, &bad.addr.to_string(), None),
        sock.display()
    ));
    let health = format!("http://{listen}/");
    let mut run = Proc(
        sr.command(&["-y", "--no-shadow", "--health", &health])
            .env("SAFE_RELOAD_TEST_PAUSE", "restored")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start safe-reload"),
    );
    assert!(
        run.wait_stopped(Duration::from_secs(30)),
        "the run never restored"
    );
    run.signal(libc::SIGKILL);
    run.finish(Duration::from_secs(5));
    // nginx still runs the candidate, which listens on SOCK.
    assert_eq!(
        http_get(listen, "site.test", "/").map(|(s, _)| s).ok(),
        Some(502)
    );
    std::fs::remove_file(&sock).expect("delete the candidate's socket file");
    let recover = sr.run(&["recover", "--json"]);
    recover.expect(3);
    let rb = &recover.json()["rollback"];
    assert_eq!(rb["reload"]["took_effect"], true, "{recover}");
    assert!(
        rb["verdict"]["emerg"].to_string().contains("unlink()"),
        "{recover}"
    );
    let status = sr.run(&["status", "--json"]);
    status.expect(0);
    assert!(status.json()["status"]["interrupted"].is_null(), "{status}");
    assert_eq!(
        http_get(listen, "site.test", "/").ok(),
        Some((200, "good".into()))
    );
    let again = sr.run(&["recover"]);
    again.expect(0);
    assert!(again.stderr.contains("nothing to recover"), "{again}");
}
