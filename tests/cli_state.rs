//! The state directory through the binary: `history` and `rollback`, `status` with drift and an
//! interrupted run that `recover` finishes, and the lock against parallel runs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::*;

struct Site {
    nginx: TestNginx,
    sr: SafeReload,
    listen: SocketAddr,
}

impl Site {
    fn start(http: &dyn Fn(SocketAddr) -> String) -> Site {
        let ip = unique_loopback();
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&http(listen));
        let sr = SafeReload::new(&nginx);
        Site { nginx, sr, listen }
    }

    fn body(&self) -> String {
        http_get(self.listen, "site.test", "/")
            .expect("GET through nginx")
            .1
    }

    fn history(&self) -> Value {
        let run = self.sr.run(&["history", "--json"]);
        run.expect(0);
        run.json()
    }
}

fn ids(history: &Value) -> Vec<String> {
    history["history"]
        .as_array()
        .expect("history list")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn history_lists_runs_newest_first_and_rollback_restores_an_earlier_good_one() {
    let ip = unique_loopback();
    let apps: Vec<HttpBackend> = ["v1", "v2", "v3"]
        .iter()
        .map(|n| HttpBackend::start(SocketAddr::new(ip, 0), n))
        .collect();
    let site = Site::start(&|l| proxy_site(l, &apps[0].host_port()));
    let v1 = site.sr.init();
    let mut good = vec![v1.clone()];
    for app in &apps[1..] {
        site.nginx
            .write_http(&proxy_site(site.listen, &app.host_port()));
        let run = site.sr.run(&["-y", "--json"]);
        run.expect(0);
        good.push(run.json()["snapshot"].as_str().expect("id").to_string());
    }
    assert_eq!(site.body(), "v3");

    let h = site.history();
    let listed = ids(&h);
    let newest_first: Vec<String> = good.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first, "{h:#}");
    assert_eq!(h["last_good"], good[2].as_str());
    assert_eq!(h["history"][0]["meta"]["outcome"], "good");
    assert_eq!(h["history"][2]["meta"]["outcome"], "baseline");
    assert_eq!(
        h["history"][0]["meta"]["changed_files"],
        serde_json::json!(["nginx.conf"])
    );
    let text = site.sr.run(&["history"]);
    text.expect(0);
    for id in &good {
        assert!(text.stdout.contains(id.as_str()), "{text}");
    }

    // Without an id: the good snapshot before last-good (v2).
    let back = site.sr.run(&["rollback", "-y", "--json"]);
    back.expect(0);
    assert_eq!(back.outcome(), "reloaded", "{back}");
    assert_eq!(site.body(), "v2");
    let conf = std::fs::read_to_string(&site.nginx.conf).expect("conf");
    assert!(conf.contains(&apps[1].host_port()));

    // An explicit id: the baseline.
    let back = site.sr.run(&["rollback", &v1, "-y", "--json"]);
    back.expect(0);
    assert_eq!(site.body(), "v1");
    let h = site.history();
    assert_eq!(
        replaced(&h).len(),
        0,
        "each rollback found last-good's files on disk: nothing displaced: {h:#}"
    );

    let missing = site
        .sr
        .run(&["rollback", "20000101T000000Z-000000-000000", "-y"]);
    missing.expect(2);
    assert_eq!(site.body(), "v1");
}

/// `rollback` twice went v3 → v2 → v3: the first rollback records v2's files as a new
/// last-good, and "the good one before it" was v3, the change just undone (r11 K F20). A
/// second `rollback` goes on back, to v1, and a third to the baseline.
#[test]
fn rollback_twice_goes_back_two_steps_not_to_the_change_it_undid() {
    let ip = unique_loopback();
    let apps: Vec<HttpBackend> = ["v0", "v1", "v2", "v3"]
        .iter()
        .map(|n| HttpBackend::start(SocketAddr::new(ip, 0), n))
        .collect();
    let site = Site::start(&|l| proxy_site(l, &apps[0].host_port()));
    site.sr.init();
    for app in &apps[1..] {
        site.nginx
            .write_http(&proxy_site(site.listen, &app.host_port()));
        site.sr.run(&["-y"]).expect(0);
    }
    assert_eq!(site.body(), "v3");
    for want in ["v2", "v1", "v0"] {
        let back = site.sr.run(&["rollback", "-y"]);
        back.expect(0);
        assert_eq!(site.body(), want, "{back}");
    }
}

/// The `replaced` snapshots in `history --json`.
fn replaced(history: &Value) -> Vec<Value> {
    (history["history"].as_array().into_iter().flatten())
        .filter(|s| s["meta"]["outcome"] == "replaced")
        .cloned()
        .collect()
}

/// Regression: `rollback ID` recorded a `replaced` snapshot on every run, also when the files
/// on disk were last-good's or already the target's, so `history` listed copies of what it
/// already held as displaced configurations. Only files that neither holds are kept.
#[test]
fn rollback_records_a_replaced_snapshot_only_for_files_no_snapshot_holds() {
    let ip = unique_loopback();
    let (a, b) = (
        HttpBackend::start(SocketAddr::new(ip, 0), "v1"),
        HttpBackend::start(SocketAddr::new(ip, 0), "v2"),
    );
    let site = Site::start(&|l| proxy_site(l, &a.host_port()));
    let v1 = site.sr.init();
    site.nginx
        .write_http(&proxy_site(site.listen, &b.host_port()));
    site.sr.run(&["-y"]).expect(0);

    // On disk: last-good (v2). Then on disk: the target itself (v1).
    for _ in 0..2 {
        site.sr.run(&["rollback", &v1, "-y"]).expect(0);
        assert_eq!(site.body(), "v1");
        let h = site.history();
        assert_eq!(replaced(&h), Vec::<Value>::new(), "{h:#}");
    }

    // A hand edit nobody reloaded: neither v1 nor last-good holds it, so it is kept.
    let edited = format!("{}\n# by hand", proxy_site(site.listen, &b.host_port()));
    site.nginx.write_http(&edited);
    let by_hand = std::fs::read(&site.nginx.conf).expect("conf");
    site.sr.run(&["rollback", &v1, "-y"]).expect(0);
    assert_eq!(site.body(), "v1");
    let kept = replaced(&site.history());
    assert_eq!(kept.len(), 1, "{kept:#?}");
    let hash = (kept[0]["files"].as_array().into_iter().flatten())
        .find(|f| f["path"] == "nginx.conf")
        .and_then(|f| f["hash"].as_str())
        .expect("nginx.conf in the replaced snapshot");
    assert_eq!(site.sr.object(hash), by_hand);
}

#[test]
fn status_reports_running_drift_and_not_running() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let site = Site::start(&|l| proxy_site(l, &app.host_port()));
    site.sr.init();

    let run = site.sr.run(&["status", "--json"]);
    run.expect(0);
    let st = run.json();
    assert_eq!(st["status"]["master_pid"], site.nginx.master_pid(), "{run}");
    assert!(
        st["diff"]["files"].as_array().is_some_and(Vec::is_empty),
        "{run}"
    );

    site.nginx.write_http(&format!(
        "{}\n# drift",
        proxy_site(site.listen, &app.host_port())
    ));
    let run = site.sr.run(&["status", "--json"]);
    run.expect(0);
    let drift = run.json()["diff"].to_string();
    assert!(
        drift.contains("nginx.conf") && drift.contains("# drift"),
        "{run}"
    );

    let stopped = TestNginx::builder()
        .http(&proxy_site(site.listen, &app.host_port()))
        .prepare();
    let sr = SafeReload::new(&stopped);
    let run = sr.run(&["status", "--json"]);
    run.expect(1);
    let st = run.json();
    assert!(st["status"]["master_pid"].is_null(), "{run}");
    let why = st["status"]["not_running"].as_str().unwrap_or_default();
    assert!(why.contains("nginx.pid"), "names the pid file: {run}");
}

/// A run killed while it verified a change (one that would have passed) left nginx running a
/// configuration nothing vouches for. `recover` rolls it back: last-good is restored and live,
/// the journal's candidate is the rejected snapshot that keeps the change (no new snapshot,
/// nothing pending), and last-good stays last-good. It used to verify the files on disk and
/// keep them, recording a snapshot the interrupted run never judged.
#[test]
fn a_run_killed_during_verification_shows_in_status_and_recover_rolls_it_back() {
    let ip = unique_loopback();
    let v1 = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let v2 = HttpBackend::start(SocketAddr::new(ip, 0), "v2");
    let hang = hanging_listener(unique_loopback());
    let site = Site::start(&|l| proxy_site(l, &v1.host_port()));
    let last_good = site.sr.init();
    let workers = site.nginx.ready_workers();
    site.nginx
        .write_http(&proxy_site(site.listen, &v2.host_port()));

    // The health request hangs, so the run is still verifying when it is killed.
    let health = format!("http://{}/", hang.addr);
    let mut child = site.sr.spawn(&["-y", "--health", &health]);
    let journal = site.sr.state.join("journal.json");
    let reloaded = wait_for(Duration::from_secs(5), || {
        journal.exists()
            && syn_sent_to(hang.addr)
            && site
                .nginx
                .ready_workers()
                .iter()
                .all(|w| !workers.contains(w))
    });
    // SAFETY: killing the run this test started, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(reloaded, "the run reached verification");

    let run = site.sr.run(&["status", "--json"]);
    run.expect(1);
    let interrupted = &run.json()["status"]["interrupted"];
    assert_eq!(interrupted["pid"], child.id(), "{run}");
    assert_eq!(interrupted["phase"], "verifying", "{run}");
    let blocked = site.sr.run(&["-y"]);
    blocked.expect(2);
    assert!(blocked.stderr.contains("recover"), "{blocked}");

    let candidate = interrupted["candidate"]
        .as_str()
        .expect("the journal names the candidate")
        .to_string();
    let snapshots = |sr: &SafeReload| -> Vec<serde_json::Value> {
        let h = sr.run(&["history", "--json"]);
        h.expect(0);
        h.json()["history"].as_array().cloned().unwrap_or_default()
    };
    let before = snapshots(&site.sr).len();

    let run = site.sr.run(&["recover", "--json"]);
    run.expect(3);
    assert_eq!(run.outcome(), "rolled_back", "{run}");
    let report = run.json();
    assert_eq!(report["snapshot"], candidate.as_str(), "{run}");
    assert_eq!(report["rollback"]["rejected"], candidate.as_str(), "{run}");
    assert_eq!(
        report["rollback"]["restored_to"],
        last_good.as_str(),
        "{run}"
    );
    assert_eq!(site.body(), "v1", "last-good is live again");
    assert!(!journal.exists());
    assert_eq!(site.sr.last_good(), Some(last_good));
    let history = snapshots(&site.sr);
    assert_eq!(history.len(), before, "no new snapshot: {run}");
    let kept = (history.iter())
        .find(|h| h["id"] == candidate.as_str())
        .expect("the candidate is kept");
    assert_eq!(kept["meta"]["outcome"], "rejected", "{kept}");
    site.sr.run(&["status"]).expect(0);
    let again = site.sr.run(&["recover", "--json"]);
    again.expect(0);
    assert!(again.stdout.contains("nothing to recover"), "{again}");
}

/// A site whose upstream has a `backup` server behind a full accept queue: its probe takes the
/// whole `--probe-timeout` (a warning, not a failure), which keeps a run holding the lock.
fn slow_site(app: &HttpBackend, hang: &HangingListener) -> Site {
    let pool = |l: SocketAddr| {
        format!(
            "upstream pool {{ server {}; server {} backup; }}\n{}",
            app.host_port(),
            hang.addr,
            proxy_site(l, "pool")
        )
    };
    Site::start(&pool)
}

#[test]
fn the_lock_lets_one_of_three_parallel_runs_reload() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let hang = hanging_listener(unique_loopback());
    let site = slow_site(&app, &hang);
    let args = ["-y", "--json", "--probe-timeout", "1s"];
    let runs: Vec<_> = (0..3).map(|_| site.sr.spawn(&args)).collect();
    let runs: Vec<Run> = runs
        .into_iter()
        .map(|c| finish(c, Duration::from_secs(20)))
        .collect();

    let reloaded: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
    let locked: Vec<&Run> = runs.iter().filter(|r| r.code == 2).collect();
    assert_eq!(reloaded.len(), 1, "{runs:#?}");
    assert_eq!(locked.len(), 2, "{runs:#?}");
    assert_eq!(reloaded[0].outcome(), "reloaded");
    for r in locked {
        assert_eq!(r.outcome(), "error", "{r}");
        let why = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(why.contains("holds the lock"), "{r}");
        assert!(why.contains("pid"), "says who holds it: {r}");
    }
}

#[test]
fn with_wait_parallel_runs_take_turns() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "v1");
    let site = Site::start(&|l| proxy_site(l, &app.host_port()));
    site.sr.init();
    site.nginx.write_http(&format!(
        "{}\n# v2",
        proxy_site(site.listen, &app.host_port())
    ));
    let runs: Vec<_> = (0..3)
        .map(|_| site.sr.spawn(&["-y", "--json", "--wait"]))
        .collect();
    let runs: Vec<Run> = runs
        .into_iter()
        .map(|c| finish(c, Duration::from_secs(20)))
        .collect();
    for r in &runs {
        r.expect(0);
    }
    let mut outcomes: Vec<String> = runs.iter().map(Run::outcome).collect();
    outcomes.sort();
    // One reloaded the change; the others ran after it and found nothing left to do.
    assert_eq!(
        outcomes,
        ["reloaded", "unchanged", "unchanged"],
        "{runs:#?}"
    );
}
