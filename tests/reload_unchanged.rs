//! "Nothing changed" is about what nginx runs, not only about the files: files that equal
//! last-good are reloaded when nginx loaded its configuration after last-good was recorded
//! (an `nginx -s reload` outside safe-reload, perhaps of other files), or when a certificate it
//! reads only at load time was renewed in place. Each case with a real nginx, checked by what
//! it serves afterwards; and files that equal what nginx loaded stay "unchanged".

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::*;

/// nginx's own reload, as a colleague or a cron job runs it; returns once new workers serve.
fn reload_outside(nginx: &TestNginx) {
    let before = nginx.ready_workers();
    let out = Command::new(NGINX)
        .args(nginx.flags())
        .args(["-s", "reload"])
        .output()
        .expect("run nginx -s reload");
    assert!(out.status.success(), "nginx -s reload: {out:?}");
    let replaced = wait_for(Duration::from_secs(10), || {
        let now = nginx.ready_workers();
        !now.is_empty() && now.iter().all(|w| !before.contains(w))
    });
    assert!(replaced, "nginx -s reload never replaced its workers");
}

/// `site.test` on its own loopback address, proxied to a live backend ("app"), with that
/// configuration recorded as last-good.
struct Site {
    ip: std::net::IpAddr,
    _app: HttpBackend,
    listen: SocketAddr,
    /// The configuration recorded as last-good.
    good: String,
    nginx: TestNginx,
    sr: SafeReload,
}

impl Site {
    fn on_last_good() -> Site {
        let ip = unique_loopback();
        let _app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
        let listen = SocketAddr::new(ip, free_port(ip));
        let good = proxy_site(listen, &_app.host_port());
        let nginx = TestNginx::start(&good);
        let sr = SafeReload::new(&nginx);
        sr.init();
        Site {
            ip,
            _app,
            listen,
            good,
            nginx,
            sr,
        }
    }
}

#[test]
fn files_put_back_after_a_reload_outside_safe_reload_are_reloaded() {
    let Site {
        ip,
        _app,
        listen,
        good,
        nginx,
        sr,
    } = Site::on_last_good();
    let dead = SocketAddr::new(ip, free_port(ip));

    // Untouched since last-good: unchanged, nothing reloaded.
    let workers = nginx.ready_workers();
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "unchanged", "{run}");
    assert_eq!(nginx.ready_workers(), workers);

    // Someone reloads a broken file by hand, then puts the file back.
    nginx.write_http(&proxy_site(listen, &dead.to_string()));
    reload_outside(&nginx);
    assert_eq!(http_get(listen, "site.test", "/").expect("GET").0, 502);
    nginx.write_http(&good);

    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    let notes = run.json()["notes"].to_string();
    assert!(notes.contains("outside safe-reload"), "{run}");
    assert!(!run.to_string().contains("--force"), "{run}");
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".to_string())
    );

    // And once nginx runs last-good again, the next run has nothing to do.
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "unchanged", "{run}");
}

#[test]
fn a_certificate_renewed_in_place_is_reloaded_though_no_configuration_file_changed() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path(), "site");
    let ip = unique_loopback();
    let tls = SocketAddr::new(ip, free_port(ip));
    let http = format!(
        "server {{ listen {tls} ssl; ssl_certificate {}; ssl_certificate_key {}; \
         location / {{ return 200 \"tls\"; }} }}",
        cert.display(),
        key.display()
    );
    let nginx = TestNginx::start(&http);
    let sr = SafeReload::new(&nginx);
    sr.init();
    let old = tls_subject(&tls.to_string(), None);
    assert!(old.contains("site"), "{old}");

    // certbot renews: new files in place of the old ones (here a new subject to tell them by).
    let renewed = tempfile::tempdir().expect("tempdir");
    let (new_cert, new_key) = self_signed(renewed.path(), "renewed");
    // Copied as `cp -p` and `rsync -a` copy: with an old modification time.
    let touched = Command::new("touch")
        .args(["-d", "2020-01-01"])
        .args([&new_cert, &new_key])
        .status()
        .expect("run touch");
    assert!(touched.success());
    std::fs::rename(&new_key, &key).expect("move the key");
    std::fs::rename(&new_cert, &cert).expect("move the certificate");
    // `status` says nginx does not run what is on disk.
    let status = sr.run(&["status", "--json"]);
    let not_loaded = status.json()["status"]["not_loaded"].to_string();
    assert!(not_loaded.contains(&cert.display().to_string()), "{status}");

    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    let notes = run.json()["notes"].to_string();
    assert!(notes.contains(&cert.display().to_string()), "{run}");
    let now = tls_subject(&tls.to_string(), None);
    assert!(now.contains("renewed"), "nginx still serves {now}");

    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "unchanged", "{run}");
}

/// Regression (findings n3 F1): an edit that makes the site 502, loaded by hand with `nginx -s
/// reload`, then run through safe-reload: the "baseline" it took was the edit itself, so the
/// run said the site "answered 502 before this change", exited 4 and made the broken edit
/// last-good. What nginx loaded outside safe-reload is no baseline now: the failure is the
/// change's, and last-good is put back.
#[test]
fn an_edit_loaded_by_hand_before_the_run_is_judged_against_last_good_and_rolled_back() {
    let Site {
        ip,
        _app,
        listen,
        nginx,
        sr,
        ..
    } = Site::on_last_good();
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let last_good = sr.run(&["history", "--json"]).json()["last_good"].clone();

    nginx.write_http(&proxy_site(listen, &bad.addr.to_string()));
    reload_outside(&nginx);
    assert_eq!(http_get(listen, "site.test", "/").expect("GET").0, 502);
    let status = sr.run(&["status", "--json"]);
    assert!(
        status.json()["status"]["loaded_outside"]
            .as_str()
            .is_some_and(|w| w.contains("outside safe-reload")),
        "status says nginx may run other files than last-good: {status}"
    );

    let run = sr.run(&["-y", "--json"]);
    run.expect(3);
    assert_eq!(run.outcome(), "rolled_back", "{run}");
    assert!(
        run.json()["warnings"].to_string().contains("no baseline"),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".into()),
        "last-good is served again"
    );
    let history = sr.run(&["history", "--json"]).json();
    assert_eq!(history["last_good"], last_good, "the edit is not last-good");
}

/// Regression (findings n3 F3): after safe-reload's own rollback, `status` said nginx "was
/// reloaded or restarted outside safe-reload", and the next run with the file put back
/// reloaded once more for nothing.
#[test]
fn a_rollback_of_our_own_is_no_reload_outside_safe_reload() {
    let Site {
        ip,
        _app,
        listen,
        good,
        nginx,
        sr,
    } = Site::on_last_good();
    let dead = SocketAddr::new(ip, free_port(ip));
    nginx.write_http(&proxy_site(listen, &dead.to_string()));
    // The probe would refuse it: --no-probe --no-shadow, so it is reloaded and rolled back.
    sr.run(&["-y", "--no-probe", "--no-shadow"]).expect(3);
    assert_eq!(
        http_get(listen, "site.test", "/").expect("GET"),
        (200, "app".into())
    );
    nginx.write_http(&good);
    let status = sr.run(&["status", "--json"]);
    assert!(
        status.json()["status"]["not_loaded"].is_null(),
        "nobody reloaded nginx outside safe-reload: {status}"
    );
    let workers = nginx.ready_workers();
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "unchanged", "{run}");
    assert_eq!(nginx.ready_workers(), workers, "nothing reloaded");
}

/// A colleague pointed the site at a backend that never answers in time and ran `nginx -s
/// reload` outside safe-reload; then an unrelated change is reloaded through it. What nginx
/// ran is no baseline (the run warns so), so the check that gets no answer after the reload
/// is the change's, not a slow site's: rolled back to last-good, which answers. It was kept
/// ("slow before and after") and recorded as last-good.
#[test]
fn a_timeout_after_an_outside_reload_is_held_against_the_change() {
    let site = Site::on_last_good();
    let silent = HttpBackend::start_slow(
        SocketAddr::new(site.ip, 0),
        "silent",
        Duration::from_secs(4),
    );
    let broken = proxy_site(site.listen, &silent.host_port());
    // A run that finds nothing to do first: the outside reload's workers then start a clock
    // tick (10 ms) or more after last-good was recorded, as they do on a real box.
    site.sr.run(&["-y"]).expect(0);
    site.nginx.write_http(&broken);
    reload_outside(&site.nginx);
    site.nginx
        .write_http(&broken.replace("location /", "add_header X-Rev 1; location /"));
    let run = site.sr.run(&["-y", "--health-timeout", "300ms"]);
    run.expect(3);
    assert!(
        run.stderr.contains("no baseline for the last good"),
        "{run}"
    );
    assert_eq!(
        http_get(site.listen, "site.test", "/").expect("GET"),
        (200, "app".into()),
        "last-good is back"
    );
}

/// After a reload outside safe-reload, a site that is only slow (its backend takes longer
/// than `--health-timeout`, every client is served): a harmless change is waited for as
/// the rollback is, and stays (exit 0). One slower still is rolled back, and the restored
/// configuration, as slow, is no failed rollback: exit 3, not 4 ("an operator must act").
#[test]
fn a_slow_site_after_an_outside_reload_is_no_emergency() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    for (delay, exit) in [(Duration::from_millis(800), 0), (Duration::from_secs(3), 3)] {
        let slow = HttpBackend::start_slow(SocketAddr::new(ip, 0), "slow", delay);
        let good = proxy_site(listen, &slow.host_port());
        let nginx = TestNginx::start(&good);
        let sr = SafeReload::new(&nginx);
        sr.init();
        sr.run(&["-y"]).expect(0);
        reload_outside(&nginx);
        nginx.write_http(&good.replace("location /", "add_header X-Rev 1; location /"));
        let run = sr.run(&["-y", "--health-timeout", "300ms"]);
        run.expect(exit);
        assert_eq!(
            http_get(listen, "site.test", "/").expect("GET"),
            (200, "slow".into()),
            "served, slowly"
        );
    }
}

/// After a reload outside safe-reload (what nginx runs is no baseline), a change that points
/// the site at an app answering 500 to every request was "live and verified" and recorded as
/// last-good: with nothing to compare with, only a 502, 504 or no answer failed (r16 x F1).
/// A 500 or 503 now fails as a new site's does, and last-good decides: it answers, so the
/// change is rolled back (exit 3) and the site serves the app again.
#[test]
fn a_500_after_an_outside_reload_is_held_against_the_change() {
    let site = Site::on_last_good();
    let erring = StatusBackend::start(SocketAddr::new(site.ip, 0), 500);
    site.sr.run(&["-y"]).expect(0);
    // An unrelated edit loaded outside safe-reload.
    let hand = site
        .good
        .replace("location /", "add_header X-Hand 1; location /");
    site.nginx.write_http(&hand);
    reload_outside(&site.nginx);
    site.nginx
        .write_http(&proxy_site(site.listen, &erring.addr.to_string()));
    for args in [&["-y"][..], &["-y", "--no-shadow"][..]] {
        let run = site.sr.run(args);
        assert!(matches!(run.code, 1 | 3), "{args:?}: {run}");
        assert!(!run.to_string().contains("verified (snapshot"), "{run}");
        assert_eq!(
            http_get(site.listen, "site.test", "/").expect("GET"),
            (200, "app".into()),
            "{args:?}: {run}"
        );
        // The rollback is safe-reload's own reload: the next run starts from last-good again,
        // loaded outside once more.
        site.nginx.write_http(&hand);
        reload_outside(&site.nginx);
        site.nginx
            .write_http(&proxy_site(site.listen, &erring.addr.to_string()));
    }
}

/// After a reload outside safe-reload, a harmless change to a site whose backend is down
/// (502 before the change and after it): the change is held to account and rolled back, and
/// last-good answers the same 502. That was "worse than before this change", "ROLLBACK
/// FAILED", exit 4 (r16 x F2): the restored configuration failing as the change did shows
/// the change was not the cause. Exit 3, saying so; an app that answers 500 to everything is
/// alike, and never "verified".
#[test]
fn a_site_failing_alike_under_last_good_after_an_outside_reload_is_not_the_changes() {
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let erring = StatusBackend::start(SocketAddr::new(ip, 0), 500);
    let down = {
        let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap();
        l.local_addr().unwrap()
    };
    for (backend, status) in [(down.to_string(), 502), (erring.addr.to_string(), 500)] {
        let good = proxy_site(listen, &backend);
        let nginx = TestNginx::start(&good);
        let sr = SafeReload::new(&nginx);
        sr.init();
        nginx.write_http(&good.replace("location /", "add_header X-Hand 1; location /"));
        reload_outside(&nginx);
        nginx.write_http(&good.replace("location /", "add_header X-Rev 1; location /"));
        let run = sr.run(&["-y", "--no-shadow"]);
        run.expect(3);
        assert!(
            run.to_string().contains("the change was not the cause"),
            "{run}"
        );
        assert!(!run.to_string().contains("ROLLBACK FAILED"), "{run}");
        assert!(!run.to_string().contains("live and verified"), "{run}");
        assert_eq!(http_get(listen, "site.test", "/").expect("GET").0, status);
    }
}
