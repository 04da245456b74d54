//! `nginx -t` through `safe_reload::nginx` against the real binary in a private prefix: a good
//! tree passes; broken ones fail with the file and line nginx blames, parsed from its stderr.

mod support;

use std::path::Path;
use std::time::Duration;

use safe_reload::nginx::{self, Level, Nginx};
use support::*;

fn nginx_for(n: &TestNginx) -> Nginx {
    Nginx {
        binary: NGINX.into(),
        conf: n.conf.clone(),
        prefix: n.prefix.clone(),
        timeout: Duration::from_secs(20),
    }
}

/// A written (not started) prefix whose nginx.conf has `http` as its http body, and the line
/// number of the line holding `marker`.
fn written(n: &TestNginx, http: &str, marker: &str) -> u32 {
    n.write_http(http);
    let text = std::fs::read_to_string(&n.conf).unwrap();
    text.lines().position(|l| l.contains(marker)).unwrap() as u32 + 1
}

#[test]
fn good_tree_passes_and_broken_ones_name_file_and_line() {
    let n = TestNginx::start("");
    let ng = nginx_for(&n);
    let good = ng.test().unwrap();
    assert!(good.passed, "{}", good.stderr);
    assert_eq!(good.status, Some(0));

    let cases = [
        (
            "access_log off\nserver { listen 127.0.0.1:1; }",
            "access_log off",
            "directive \"access_log\" is not terminated by \";\"",
            1,
        ),
        (
            "frobnicate on;",
            "frobnicate",
            "unknown directive \"frobnicate\"",
            0,
        ),
        (
            "server { listen 127.0.0.1:1; location / { proxy_pass 127.0.0.1:8000; } }",
            "proxy_pass",
            "invalid URL prefix",
            0,
        ),
    ];
    for (http, marker, expect, line_offset) in cases {
        let line = written(&n, http, marker) + line_offset;
        let out = ng.test().unwrap();
        assert!(!out.passed, "{http}");
        assert_eq!(out.status, Some(1));
        let emerg = out
            .messages
            .iter()
            .find(|m| m.level == Level::Emerg)
            .unwrap();
        assert!(emerg.text.contains(expect), "{:?}", emerg.text);
        assert_eq!(emerg.file.as_deref(), Some(n.conf.as_path()), "{http}");
        assert_eq!(emerg.line, Some(line), "{http}: {}", out.stderr);
    }
}

#[test]
fn proxy_pass_without_scheme_gets_a_hint() {
    let n = TestNginx::start("");
    let line = written(
        &n,
        "server { listen 127.0.0.1:1;\nlocation / {\nproxy_pass 127.0.0.1:8000; } }",
        "proxy_pass",
    );
    let out = nginx_for(&n).test().unwrap();
    let m = &out.messages[0];
    assert_eq!(m.line, Some(line));
    let config = safe_reload::conf::load(&n.conf, &Default::default()).unwrap();
    let hint = nginx::hint(m, &config).unwrap();
    assert!(hint.contains("proxy_pass http://127.0.0.1:8000;"), "{hint}");
}

#[test]
fn build_info_of_the_real_binary() {
    let info = nginx::build_info(Path::new(NGINX)).unwrap();
    assert!(info.version.starts_with("1."), "{}", info.version);
    assert!(info
        .configure_args
        .iter()
        .any(|a| a.starts_with("--prefix=")));
    assert!(info.conf_path.is_some() && info.prefix.is_some());
    assert_eq!(
        nginx::find_binary(Some(Path::new(NGINX))).unwrap(),
        Path::new(NGINX)
    );
    let missing = nginx::find_binary(Some(Path::new("/nonexistent/nginx"))).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/nginx"),
        "{missing}"
    );
}

#[test]
fn paths_derived_from_the_config() {
    let n = TestNginx::start(
        "server { listen 127.0.0.1:1; error_log logs/server.log; error_log stderr; }",
    );
    let config = safe_reload::conf::load(&n.conf, &Default::default()).unwrap();
    let info = nginx::build_info(Path::new(NGINX)).unwrap();
    assert_eq!(nginx::pid_file(&config, &n.prefix, &info), n.pid_file);
    assert_eq!(
        nginx::error_logs(&config, &n.prefix, &info),
        vec![n.error_log.clone(), n.prefix.join("logs/server.log")]
    );
    let expected_user = if unsafe { libc::geteuid() } == 0 {
        "root"
    } else {
        "nobody"
    };
    assert_eq!(nginx::worker_user(&config, &info), expected_user);
    assert_eq!(nginx::worker_processes(&config), Some(1));
}

#[test]
fn a_hung_command_is_stopped_at_the_timeout() {
    let argv = vec!["sleep".to_string(), "5".to_string()];
    let start = std::time::Instant::now();
    let err = nginx::run_command(&argv, Duration::from_millis(200)).unwrap_err();
    assert!(
        matches!(err, safe_reload::Error::CommandTimeout { .. }),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}
