//! The main job through the binary: a good change goes live, a change to a dead port is refused
//! with nginx untouched, and a syntax error or a `listen` another program holds stops the run
//! before nginx is signalled.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use support::*;

/// A site on its own address, proxying to `app`, under a running nginx with a baseline.
struct Site {
    nginx: TestNginx,
    sr: SafeReload,
    listen: SocketAddr,
}

impl Site {
    fn start(upstream: &str) -> Site {
        let ip = unique_loopback();
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&proxy_site(listen, upstream));
        let sr = SafeReload::new(&nginx);
        sr.init();
        Site { nginx, sr, listen }
    }

    fn get(&self) -> (u16, String) {
        http_get(self.listen, "site.test", "/").expect("GET through nginx")
    }
}

#[test]
fn a_good_change_goes_live_with_new_workers_and_a_new_last_good() {
    let ip = unique_loopback();
    let old = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let new = HttpBackend::start(SocketAddr::new(ip, 0), "app-v2");
    let site = Site::start(&old.host_port());
    assert_eq!(site.get(), (200, "app-v1".into()));
    let baseline = site.sr.last_good().expect("init wrote last-good");
    let workers = site.nginx.ready_workers();

    site.nginx
        .write_http(&proxy_site(site.listen, &new.host_port()));
    let run = site.sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["outcome"], "reloaded", "{run}");
    assert_eq!(report["reload"]["took_effect"], true, "{run}");
    assert_eq!(report["health"]["passed"], true, "{run}");
    assert_eq!(
        report["reload"]["master"],
        site.nginx.master_pid(),
        "the same master"
    );

    let now = site.nginx.ready_workers();
    assert!(!now.is_empty() && now.iter().all(|w| !workers.contains(w)));
    assert_eq!(site.get(), (200, "app-v2".into()));
    let snapshot = report["snapshot"].as_str().expect("snapshot id");
    assert_eq!(site.sr.last_good().as_deref(), Some(snapshot));
    assert_ne!(snapshot, baseline);
    let diff = report["diff"].to_string();
    assert!(
        diff.contains("nginx.conf"),
        "the diff names the file: {diff}"
    );
}

#[test]
fn a_change_to_a_dead_port_is_refused_with_nginx_untouched() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let site = Site::start(&app.host_port());
    let baseline = site.sr.last_good();
    let workers = site.nginx.ready_workers();
    let dead = SocketAddr::new(ip, free_port(ip));
    let edit = site
        .nginx
        .render(&proxy_site(site.listen, &dead.to_string()));
    std::fs::write(&site.nginx.conf, &edit).expect("edit");

    let run = site.sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["outcome"], "refused", "{run}");
    let results = report["probe"]["results"]
        .as_array()
        .expect("probe results");
    let failed = results
        .iter()
        .find(|r| r["status"] == "refused")
        .unwrap_or_else(|| panic!("a refused target: {run}"));
    let hints = failed.to_string();
    assert!(
        hints.contains(&app.addr.expect("tcp").port().to_string()),
        "the hint names the port that listens: {failed:#}"
    );

    assert_eq!(
        site.nginx.ready_workers(),
        workers,
        "nginx was not reloaded"
    );
    assert_eq!(site.get(), (200, "app-v1".into()));
    assert_eq!(
        std::fs::read_to_string(&site.nginx.conf).expect("conf"),
        edit
    );
    assert_eq!(site.sr.last_good(), baseline);
}

#[test]
fn a_syntax_error_is_refused_with_file_and_line() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let site = Site::start(&app.host_port());
    let workers = site.nginx.ready_workers();
    // The `location` line loses its `;`: nginx reports it at the closing brace.
    let broken = site.nginx.render(&format!(
        "server {{ listen {};\n location / {{ proxy_pass http://{}\n }}\n}}",
        site.listen,
        app.host_port()
    ));
    std::fs::write(&site.nginx.conf, &broken).expect("edit");
    let line = broken
        .lines()
        .position(|l| l.trim() == "}" || l.starts_with(" }"))
        .expect("closing brace")
        + 1;

    let run = site.sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["outcome"], "refused", "{run}");
    let problem = &report["problems"][0];
    assert_eq!(
        problem["file"],
        site.nginx.conf.display().to_string(),
        "{run}"
    );
    assert_eq!(problem["line"], line, "{run}");
    assert_eq!(site.nginx.ready_workers(), workers);

    let text = site.sr.run(&["-y"]);
    text.expect(1);
    let place = format!("{}:{line}", site.nginx.conf.display());
    assert!(
        text.stdout.contains(&place) || text.stderr.contains(&place),
        "the human report names {place}:\n{text}"
    );
}

#[test]
fn a_new_listen_held_by_another_program_is_refused_naming_the_holder() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let site = Site::start(&app.host_port());
    let workers = site.nginx.ready_workers();
    let squatter = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind");
    let held = squatter.local_addr().expect("addr");
    site.nginx.write_http(&format!(
        "{}\nserver {{ listen {held}; location / {{ proxy_pass http://{}; }} }}",
        proxy_site(site.listen, &app.host_port()),
        app.host_port()
    ));

    let run = site.sr.run(&["-y", "--json"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["outcome"], "refused", "{run}");
    let conflict = report["conflicts"][0].to_string();
    assert!(conflict.contains(&held.to_string()), "{run}");
    let me = std::process::id().to_string();
    assert!(
        conflict.contains(&me),
        "the holder (this test process, pid {me}) is named: {conflict}"
    );
    assert_eq!(site.nginx.ready_workers(), workers);
    let text = site.sr.run(&["-y"]);
    text.expect(1);
    assert!(
        format!("{}{}", text.stdout, text.stderr).contains(&held.to_string()),
        "{text}"
    );
}

#[test]
fn no_change_is_not_reloaded_unless_forced() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let site = Site::start(&app.host_port());
    let workers = site.nginx.ready_workers();

    let run = site.sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "unchanged", "{run}");
    assert_eq!(site.nginx.ready_workers(), workers);

    let forced = site.sr.run(&["-y", "--json", "--force"]);
    forced.expect(0);
    assert_eq!(forced.outcome(), "reloaded", "{forced}");
    let now = site.nginx.ready_workers();
    assert!(wait_for(Duration::from_secs(2), || site
        .nginx
        .ready_workers()
        .iter()
        .all(|w| !workers.contains(w))));
    assert!(!now.is_empty());
}

#[test]
fn the_headline_names_what_a_change_left_unverified() {
    // "live and verified" used to be said of a change whose regex location no request reaches
    // (no path is derived from one that asks for a `?`, which a path never holds).
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let listen = SocketAddr::new(ip, free_port(ip));
    let body = |tag: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test; add_header X-Tag {tag};\n\
             location / {{ proxy_pass http://{}; }}\n\
             location ~ (?<x>a)\\?b {{ proxy_pass http://{}; }} }}",
            app.host_port(),
            app.host_port()
        )
    };
    let nginx = TestNginx::start(&body("1"));
    let sr = SafeReload::new(&nginx);
    sr.init();
    let line = |text: &str| {
        1 + text
            .lines()
            .position(|l| l.contains("location ~"))
            .expect("the regex location")
    };

    nginx.write_http(&body("2"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["outcome"], "reloaded", "{run}");
    let coverage = &report["coverage"];
    let at = format!("nginx.conf:{}", line(&nginx.render(&body("2"))));
    let regex = (coverage["not_verified"]
        .as_array()
        .expect("not_verified")
        .iter())
    .find(|n| n["server"] == "site.test" && n["what"] == "location ~ (?<x>a)\\?b")
    .unwrap_or_else(|| panic!("the regex location is not verified: {run}"));
    assert_eq!(regex["at"], at.as_str(), "{run}");
    assert!(
        coverage["verified"].as_u64() < coverage["affected"].as_u64(),
        "{run}"
    );
    // The change is live, on both locations.
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET /"),
        (200, "app".into())
    );
    assert_eq!(
        http_get(listen, "site.test", "/ab").expect("GET /ab"),
        (200, "app".into())
    );

    nginx.write_http(&body("3"));
    let text = sr.run(&["-y"]);
    text.expect(0);
    assert!(
        text.stdout.contains("reloaded: live; verified ")
            && text.stdout.contains("; not verified: ")
            && text
                .stdout
                .contains(&format!("site.test location ~ (?<x>a)\\?b ({at})"))
            && !text.stdout.contains("live and verified"),
        "{text}"
    );
}

/// A TLS server that loads one certificate and key 800 times: a real `nginx -t` that spends
/// seconds in OpenSSL on a configuration our own parse, diff and impact analysis read in a
/// moment (a few thousand short directives in one unchanged server), also in a debug build on
/// a loaded machine. The directory holding the key pair goes with the returned guard.
fn slow_to_test(listen: SocketAddr) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("slow.pem"), dir.path().join("slow.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=slow.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl req");
    assert!(out.status.success(), "openssl req: {out:?}");
    let pair = format!(
        "  ssl_certificate {}; ssl_certificate_key {};\n",
        cert.display(),
        key.display()
    );
    let server = format!(
        "server {{\n  listen {listen} ssl;\n  server_name slow.test;\n{}}}\n",
        pair.repeat(800)
    );
    (server, dir)
}

/// Start offset and end of the step `name` in a JSON report, in ms since the run began.
fn step_span(report: &serde_json::Value, name: &str) -> (f64, f64) {
    let step = (report["steps"].as_array().expect("steps").iter())
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} step: {report:#}"));
    let started = step["started_ms"].as_f64().expect("started_ms");
    (
        started,
        started + step["elapsed_ms"].as_f64().expect("elapsed_ms"),
    )
}

/// The baseline (the affected server's check against the running configuration) needs only
/// the impact analysis, not `nginx -t`: it runs while `nginx -t` does, and the report's step
/// times say so.
#[test]
fn the_baseline_is_taken_while_nginx_t_runs() {
    let ip = unique_loopback();
    let old = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let new = HttpBackend::start(SocketAddr::new(ip, 0), "app-v2");
    let listen = SocketAddr::new(ip, free_port(ip));
    let (slow, _certs) = slow_to_test(SocketAddr::new(ip, free_port(ip)));
    let nginx = TestNginx::start(&format!("{}{slow}", proxy_site(listen, &old.host_port())));
    let sr = SafeReload::new(&nginx);
    sr.init();
    let before = old.hits();

    nginx.write_http(&format!("{}{slow}", proxy_site(listen, &new.host_port())));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    let (test_started, test_ended) = step_span(&report, "nginx -t");
    let (baseline_started, baseline_ended) = step_span(&report, "baseline");
    assert!(
        test_started <= baseline_started && baseline_ended <= test_ended,
        "the baseline ran inside nginx -t ({test_started}..{test_ended} ms): \
         {baseline_started}..{baseline_ended} ms"
    );
    let (reload_started, _) = step_span(&report, "reload");
    assert!(baseline_ended <= reload_started, "{report:#}");
    // The running configuration answered it: the old backend, before the signal.
    let results = report["baseline"]["results"].as_array().expect("results");
    assert!(
        !results.is_empty() && results.iter().all(|r| r["status"] == 200),
        "{report:#}"
    );
    assert!(old.hits() > before, "the baseline reached the old backend");
    assert_eq!(report["health"]["passed"], true, "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app-v2".into())
    );
}

#[test]
fn a_check_on_a_listen_only_the_change_has_is_not_sent_to_the_running_nginx() {
    // `nginx -t` binds the candidate's free listens for a moment while the baseline runs: a
    // check sent there could reach that socket instead of being refused, and the new server's
    // failure would be taken for one it had before. Nothing of the running nginx listens
    // there, so the baseline records it without sending it, and the change is rolled back.
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "app-v1");
    let closer = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let added = SocketAddr::new(ip, free_port(ip));
    let (slow, _certs) = slow_to_test(SocketAddr::new(ip, free_port(ip)));
    let running = format!("{}\n{slow}", proxy_site(listen, &good.host_port()));
    let nginx = TestNginx::start(&running);
    let sr = SafeReload::new(&nginx);
    sr.init();
    let baseline = std::fs::read(&nginx.conf).expect("conf");

    nginx.write_http(&format!(
        "{running}\nserver {{ listen {added}; server_name new.test; \
         location / {{ proxy_pass http://{}; }} }}",
        closer.addr
    ));
    let url = format!("http://{added}/");
    let run = sr.run(&[
        "-y",
        "--json",
        "--no-probe",
        "--no-shadow",
        "--health",
        &url,
    ]);
    run.expect(3);
    let report = run.json();
    let result = &report["baseline"]["results"][0];
    assert_eq!(result["refused"], true, "{report:#}");
    let error = result["error"].as_str().expect("error");
    assert!(
        error.contains(&format!("does not listen on {added}")),
        "{report:#}"
    );
    assert_eq!(report["rollback"]["verdict"]["state"], "back", "{report:#}");
    assert_eq!(std::fs::read(&nginx.conf).expect("conf"), baseline);
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app-v1".into())
    );
    assert!(http_get(added, "new.test", "/").is_err(), "{run}");
}
