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

#[test]
fn files_put_back_after_a_reload_outside_safe_reload_are_reloaded() {
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let good = proxy_site(listen, &app.host_port());
    let nginx = TestNginx::start(&good);
    let sr = SafeReload::new(&nginx);
    sr.init();

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
