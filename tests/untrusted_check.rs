//! `check --untrusted`, through the binary: code-loading directives and includes outside the
//! repository are refused before nginx runs at all; an allowed configuration is tested by the
//! real nginx on a throwaway copy, so file-writing directives cannot touch the machine, and
//! nginx's messages still name the repository's files and lines.

#![allow(clippy::print_stderr)] // the skip reason

mod rel_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rel_support::{text, BIN};
use support::{
    fresh_machine, namespaces_unavailable, self_signed, unique_loopback, NGINX, NOT_FRESH,
    STREAM_MODULE,
};

/// A repository of nginx config in a tempdir, and a state dir beside it.
struct Repo {
    dir: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Repo {
    fn new(main: &str) -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        };
        repo.write("nginx.conf", main);
        repo
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// `check --untrusted --json` with `nginx` as the nginx binary, as on a machine where
    /// nginx never ran (`/var/lib/nginx` and `/var/log/nginx` empty, see `fresh_machine`).
    fn check(&self, nginx: &Path) -> (Output, serde_json::Value) {
        self.check_with(Command::new(BIN), nginx)
    }

    /// [`Repo::check`] as the developer who commits runs it: unprivileged. As root, the check
    /// runs as `nobody` (the repository is made readable for it); otherwise as ourselves.
    fn check_unprivileged(&self) -> (Output, serde_json::Value) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: the check runs as this user, already unprivileged");
            return self.check(Path::new(NGINX));
        }
        for dir in [self.dir.path(), self.state.path()] {
            let _ = Command::new("chmod")
                .arg("-R")
                .arg("a+rwX")
                .arg(dir)
                .status();
        }
        let gid = Command::new("id").args(["-g", "nobody"]).output().unwrap();
        let gid = String::from_utf8_lossy(&gid.stdout).trim().to_string();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=nobody",
            &format!("--regid={gid}"),
            "--clear-groups",
            BIN,
        ]);
        self.check_with(cmd, Path::new(NGINX))
    }

    /// `cmd` (the binary, or a wrapper that runs it) with the check's arguments.
    fn check_with(&self, mut cmd: Command, nginx: &Path) -> (Output, serde_json::Value) {
        cmd.args(["check", "--untrusted", "--no-probe", "--json", "--nginx"])
            .arg(nginx)
            .arg("-c")
            .arg(self.path("nginx.conf"))
            .arg("--state-dir")
            .arg(self.state.path().join("state"));
        let out = fresh_machine(cmd).output().unwrap();
        assert_ne!(out.status.code(), Some(NOT_FRESH), "{}", text(&out));
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, doc)
    }
}

/// A stand-in for nginx that only records that it was called. This is not a mock of nginx's
/// behaviour: the point of these tests is that nginx is NOT run at all, and a real nginx
/// leaves no trace to prove that.
struct Recorder {
    dir: tempfile::TempDir,
}

impl Recorder {
    fn new() -> Recorder {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("nginx");
        let marker = dir.path().join("called");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" >> {}\nexit 0\n", marker.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Recorder { dir }
    }

    fn binary(&self) -> PathBuf {
        self.dir.path().join("nginx")
    }

    fn called(&self) -> bool {
        self.dir.path().join("called").exists()
    }
}

fn http(body: &str) -> String {
    let ip = unique_loopback();
    format!("events {{}}\nhttp {{\n  server {{\n    listen {ip}:8080;\n{body}\n  }}\n}}\n")
}

#[test]
fn each_forbidden_directive_is_refused_without_running_nginx() {
    let cases = [
        ("load_module modules/ngx_stream_module.so;\nevents {}\n", 1),
        (
            &*http("    location / { content_by_lua_block { ngx.say(1) } }"),
            5,
        ),
        (&*http("    location / { access_by_lua_file x.lua; }"), 5),
        (&*http("    location / { perl Hello::handler; }"), 5),
        ("perl_modules lib;\nevents {}\n", 1),
        (&*http("    location / { js_content main.hello; }"), 5),
        ("events {}\nhttp {\n  js_import main.js;\n}\n", 3),
    ];
    for (conf, line) in cases {
        let repo = Repo::new(conf);
        let nginx = Recorder::new();
        let (out, doc) = repo.check(&nginx.binary());
        assert_eq!(out.status.code(), Some(1), "{conf}\n{}", text(&out));
        assert!(!nginx.called(), "nginx ran for:\n{conf}");
        let problem = &doc["problems"][0];
        assert_eq!(problem["line"], line, "{conf}: {doc}");
        assert!(
            problem["message"].as_str().unwrap().contains("untrusted"),
            "{doc}"
        );
    }
}

#[test]
fn includes_outside_the_repository_are_refused_without_running_nginx() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("evil.conf"), "events {}\n").unwrap();
    for include in [
        format!("{}/evil.conf", outside.path().display()),
        "../evil.conf".to_string(),
        format!("{}/*.conf", outside.path().display()),
    ] {
        let repo = Repo::new(&format!("include {include};\n"));
        repo.write("../evil.conf", "events {}\n");
        let nginx = Recorder::new();
        let (out, doc) = repo.check(&nginx.binary());
        assert_eq!(out.status.code(), Some(1), "{include}: {}", text(&out));
        assert!(!nginx.called(), "nginx ran for include {include}");
        assert!(
            doc["problems"][0]["message"]
                .as_str()
                .unwrap()
                .contains("outside"),
            "{doc}"
        );
    }
}

#[test]
fn file_writing_directives_do_not_touch_the_machine() {
    let victims = tempfile::tempdir().unwrap();
    let pid = victims.path().join("victim.pid");
    std::fs::write(&pid, "precious\n").unwrap();
    let log = victims.path().join("created.log");
    let temp = victims.path().join("tempdir");
    let repo = Repo::new(&format!(
        "pid {};\nerror_log {};\nevents {{}}\nhttp {{\n  access_log {};\n  proxy_temp_path {};\n  include sites/*.conf;\n}}\n",
        pid.display(),
        log.display(),
        log.display(),
        temp.display()
    ));
    repo.write(
        "sites/a.conf",
        &format!(
            "server {{\n  listen {}:8080;\n  access_log {};\n}}\n",
            unique_loopback(),
            log.display()
        ),
    );
    let (out, _) = repo.check(Path::new(NGINX));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&pid).unwrap(), "precious\n");
    assert!(!log.exists(), "nginx -t created {}", log.display());
    assert!(!temp.exists(), "nginx -t created {}", temp.display());
    // The repository itself is left as it was: the copy was changed, not the files.
    assert!(std::fs::read_to_string(repo.path("nginx.conf"))
        .unwrap()
        .starts_with("pid "));
}

/// `repo`'s check run on a fresh machine (empty `/var/lib/nginx`, `/var/log/nginx`, and a
/// tmpfs `/run` holding a running nginx's `/run/nginx.pid`) with its own `TMPDIR`; the
/// listing of those directories, `TMPDIR` and `watched` (with each file's content) before and
/// after. `None` where namespaces are unavailable (said on stderr).
fn check_listing(repo: &Repo, watched: &Path) -> Option<(Output, String, String)> {
    if let Some(why) = namespaces_unavailable() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "check",
        "--untrusted",
        "--no-probe",
        "--json",
        "--nginx",
        NGINX,
    ])
    .arg("-c")
    .arg(repo.path("nginx.conf"))
    .arg("--state-dir")
    .arg(repo.state.path().join("state"));
    let script = "mount -t tmpfs -o mode=0755 tmpfs /run || exit 97\n\
                  echo 4242 > /run/nginx.pid\n\
                  list() { find /run /var/lib/nginx /var/log/nginx \"$W\" \"$TMPDIR\" \
                  -printf '%p %y %s\\n' | sort; \
                  find /run \"$W\" -type f | sort | while read -r f; do echo \"$f: $(cat \"$f\")\"; done; }\n\
                  list > \"$W.before\"; \"$@\"; rc=$?; list > \"$W.after\"; exit $rc\n";
    let mut wrapped = fresh_machine(Command::new("sh"));
    wrapped
        .args(["-c", script, "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env("W", watched)
        .env("TMPDIR", tmp.path());
    let out = wrapped.output().unwrap();
    assert_ne!(out.status.code(), Some(NOT_FRESH), "{}", text(&out));
    let read = |ext: &str| {
        std::fs::read_to_string(format!("{}.{ext}", watched.display())).unwrap_or_default()
    };
    Some((out, read("before"), read("after")))
}

/// Regression: file-writing directives were found by searching each line's text and commented
/// out whole: two on one line, or one sharing its line with a block, were refused; a name in a
/// string, a comment or a `map` entry was taken for one. They are now removed by their position
/// as nginx reads them, and the check on a fresh machine writes nothing outside its throwaway
/// copy: not the configuration's pid file, not a running nginx's `/run/nginx.pid` (`nginx -t`
/// empties the pid file it is given), no log, temp or cache path.
#[test]
fn writers_are_disabled_by_position_and_nothing_is_written_outside_the_copy() {
    let victims = tempfile::tempdir().unwrap();
    let v = victims.path().display().to_string();
    let w = |name: &str| format!("{v}/{name}");
    std::fs::write(w("victim.pid"), "precious\n").unwrap();
    let repo = Repo::new(&format!(
        "pid {}; error_log {} ; lock_file {};\nevents {{}}\nhttp {{ access_log {} ; error_log {};\n  \
         log_format x 'access_log {} $host'; # error_log {};\n  \
         client_body_temp_path {}; proxy_cache_path {} keys_zone=z:1m;\n  \
         map $uri $m {{ access_log 1; default 0; }}\n  include sites/*.conf;\n}}\n",
        w("victim.pid"),
        w("e.log"),
        w("lock"),
        w("a.log"),
        w("e2.log"),
        w("string.log"),
        w("comment.log"),
        w("body"),
        w("cache"),
    ));
    repo.write(
        "sites/a.conf",
        &format!(
            "server {{ listen {}:8080; access_log {} x; error_log\n  {};\n  \
             add_header X-A \"proxy_temp_path {}\"; location / {{ proxy_temp_path {}; return 200; }}\n}}\n",
            unique_loopback(),
            w("s.log"),
            w("s-e.log"),
            w("header"),
            w("proxy"),
        ),
    );
    let Some((out, before, after)) = check_listing(&repo, victims.path()) else {
        return;
    };
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(test_step_passed(&doc), "{doc}");
    assert!(before.contains("/run/nginx.pid: 4242"), "{before}");
    assert!(before.contains("victim.pid: precious"), "{before}");
    assert_eq!(before, after, "the check wrote outside its copy");

    // Without a pid directive, nginx -t would empty the build default, /run/nginx.pid.
    let plain = Repo::new(&http("    location / { return 200; }"));
    let (out, before, after) = check_listing(&plain, victims.path()).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(before.contains("/run/nginx.pid: 4242"), "{before}");
    assert_eq!(before, after, "the check wrote outside its copy");
}

#[test]
fn a_valid_untrusted_config_passes_and_errors_name_the_repository_files() {
    let ok = Repo::new(&http("    location / { return 200 'ok'; }"));
    let (out, doc) = ok.check(Path::new(NGINX));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(doc["outcome"], "ok", "{doc}");

    let bad = Repo::new("events {}\nhttp {\n  include sites/*.conf;\n}\n");
    bad.write(
        "sites/b.conf",
        "server {\n  listen 8080;\n  no_such_directive on;\n}\n",
    );
    let (out, doc) = bad.check(Path::new(NGINX));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let problem = &doc["problems"][0];
    assert_eq!(
        problem["file"].as_str(),
        Some(bad.path("sites/b.conf").to_str().unwrap()),
        "{doc}"
    );
    assert_eq!(problem["line"], 3, "{doc}");
}

/// A repository (or an `nginx -p DIR` tree) that holds a file named `nginx.pid`: it is copied
/// owned by root, and the unprivileged `nginx -t` of the copy failed to open it as its own pid
/// file (`open() ".../nginx.pid" failed (13: Permission denied)`), naming a file the
/// configuration never reads. The copy's pid file has a name of its own.
#[test]
fn a_pid_file_in_the_repository_does_not_fail_the_check() {
    let repo = Repo::new(&http("    location / { return 200 'ok'; }"));
    repo.write("nginx.pid", "12345\n");
    repo.write(".safe-reload-test.pid", "12345\n");
    let (out, doc) = repo.check(Path::new(NGINX));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(doc["outcome"], "ok", "{doc}");
    assert_eq!(
        std::fs::read_to_string(repo.path("nginx.pid")).unwrap(),
        "12345\n",
        "the repository's file is untouched"
    );
}

/// Regression: on a machine where nginx never ran, the copy's `nginx -t` (as `nobody`) tried to
/// create the compiled-in temp paths (`/var/lib/nginx/body`, ...) and failed. Every temp path
/// is now inside the throwaway prefix; this runs with `/var/lib/nginx` an empty tmpfs and
/// checks nothing was created there.
#[test]
fn untrusted_check_needs_no_nginx_directories_on_the_machine() {
    if let Some(why) = namespaces_unavailable() {
        eprintln!("SKIPPED untrusted_check_needs_no_nginx_directories_on_the_machine: {why}");
        return;
    }
    let repo = Repo::new(&http(
        "    location / { proxy_pass http://127.0.0.1:9; }\n    location /f { fastcgi_pass 127.0.0.1:9; }",
    ));
    let mut cmd = Command::new(BIN);
    cmd.args([
        "check",
        "--untrusted",
        "--no-probe",
        "--json",
        "--nginx",
        NGINX,
    ])
    .arg("-c")
    .arg(repo.path("nginx.conf"))
    .arg("--state-dir")
    .arg(repo.state.path().join("state"));
    // The wrapper runs the check, then lists what the check left in /var/lib/nginx.
    let mut wrapped = fresh_machine(Command::new("sh"));
    let listed =
        "\"$@\"; rc=$?; ls -A /var/lib/nginx 2>/dev/null | sed 's/^/left: /' >&2; exit $rc";
    wrapped
        .args(["-c", listed, "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    let out = wrapped.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("left: "), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], "ok", "{doc}");
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "nginx -t");
    assert_eq!(
        step.map(|s| s["ok"].clone()),
        Some(serde_json::json!(true)),
        "{doc}"
    );
}

/// The `nginx -t` step of a report passed.
fn test_step_passed(doc: &serde_json::Value) -> bool {
    let steps = doc["steps"].as_array().cloned().unwrap_or_default();
    steps
        .iter()
        .any(|s| s["name"] == "nginx -t" && s["ok"] == serde_json::json!(true))
}

/// Regression (#6): the pre-commit hook refused every real configuration. `nginx -t` binds
/// every listen, and the copy's test runs unprivileged, so `listen 80;` failed with
/// "bind() to 0.0.0.0:80 failed (13: Permission denied)" (`listen unix:` in a root-only
/// directory the same). Each listen of the copy is now moved onto a loopback stand-in: the
/// check passes as root (nginx -t as `nobody`) and run as an unprivileged user.
#[test]
fn untrusted_check_passes_listen_80_and_443_ssl_unprivileged() {
    let repo = Repo::new("events {}\nhttp {\n  include sites/*.conf;\n}\n");
    let (cert, key) = self_signed(repo.dir.path(), "site.test");
    repo.write(
        "sites/site.conf",
        &format!(
            "server {{\n  listen 80 default_server;\n  server_name site.test;\n  return 301 https://$host$request_uri;\n}}\n\
             server {{\n  listen 443 ssl;\n  server_name site.test;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  location / {{ proxy_pass http://127.0.0.1:9; }}\n}}\n\
             server {{\n  server_name no-listen.test;\n}}\n\
             server {{\n  listen unix:/run/safe-reload-untrusted-test.sock;\n}}\n",
            cert.file_name().unwrap().to_str().unwrap(),
            key.file_name().unwrap().to_str().unwrap(),
        ),
    );
    let _ = Command::new("chmod").arg("a+r").arg(&key).status();
    let (out, doc) = repo.check(Path::new(NGINX));
    assert_eq!(out.status.code(), Some(0), "as root: {}", text(&out));
    assert_eq!(doc["outcome"], "ok", "{doc}");
    assert!(test_step_passed(&doc), "{doc}");

    let (out, doc) = repo.check_unprivileged();
    assert_eq!(out.status.code(), Some(0), "unprivileged: {}", text(&out));
    assert_eq!(doc["outcome"], "ok", "{doc}");
    assert!(test_step_passed(&doc), "{doc}");
    assert!(
        !Path::new("/run/safe-reload-untrusted-test.sock").exists(),
        "nginx -t bound the repository's unix socket on the machine"
    );
}

/// With the listens moved, nginx's messages about them still name the repository's file and
/// line, and the address as written (`0.0.0.0:80`), not the stand-in it bound.
#[test]
fn untrusted_check_errors_name_the_listen_as_written_not_its_stand_in() {
    let repo = Repo::new("events {}\nhttp {\n  include sites/*.conf;\n}\n");
    repo.write(
        "sites/a.conf",
        "server {\n  listen 80 default_server;\n}\nserver {\n  listen 80 default_server;\n}\n",
    );
    for (who, (out, doc)) in [
        ("as root", repo.check(Path::new(NGINX))),
        ("unprivileged", repo.check_unprivileged()),
    ] {
        assert_eq!(out.status.code(), Some(1), "{who}: {}", text(&out));
        let problem = &doc["problems"][0];
        assert_eq!(
            problem["file"].as_str(),
            Some(repo.path("sites/a.conf").to_str().unwrap()),
            "{who}: {doc}"
        );
        assert_eq!(problem["line"], 5, "{who}: {doc}");
        let message = problem["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("a duplicate default server for 0.0.0.0:80 in "),
            "{who}: {doc}"
        );
    }
}

/// Regression (#20): the pre-commit hook checked the repository's listens against the
/// workstation and refused `listen 0.0.0.0:8443` because a program of the developer listened
/// on another loopback address of the port ("nginx cannot listen on 0.0.0.0:8443: python3 ...
/// listens on ..."). Who listens where on the machine that checks untrusted configuration
/// decides nothing: no listen preflight runs.
#[test]
fn untrusted_check_ignores_what_listens_on_the_workstation() {
    let held = std::net::TcpListener::bind((unique_loopback(), 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let repo = Repo::new(&format!(
        "events {{}}\nhttp {{\n  server {{\n    listen 0.0.0.0:{port};\n    return 200 ok;\n  }}\n}}\n"
    ));
    let (out, doc) = repo.check(Path::new(NGINX));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(doc["outcome"], "ok", "{doc}");
    assert!(
        doc["conflicts"].as_array().is_none_or(Vec::is_empty),
        "{doc}"
    );
    let steps = doc["steps"].as_array().cloned().unwrap_or_default();
    assert!(!steps.iter().any(|s| s["name"] == "preflight"), "{doc}");
    assert!(test_step_passed(&doc), "{doc}");
    drop(held);
}

/// Debian builds `stream` as a module: `stream {}` needs `load_module` of the installed
/// `ngx_stream_module.so`. A module of the installed nginx's own modules directory (`nginx
/// -V`'s `--modules-path`) is not the pusher's code, so the check passes; a module the
/// repository brings, or one reached by `..`, is still refused, and nginx is not run for it.
#[test]
fn the_installed_stream_module_may_be_loaded_and_a_module_of_the_repository_may_not() {
    let ip = unique_loopback();
    let conf = format!(
        "load_module {STREAM_MODULE};\nevents {{}}\n\
         stream {{ server {{ listen {ip}:3306; proxy_pass {ip}:13306; }} }}\n"
    );
    let repo = Repo::new(&conf);
    let (out, doc) = repo.check(Path::new(NGINX));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(doc["test"]["passed"], true, "{doc}");

    let repo = Repo::new("events {}\n");
    repo.write("evil.so", "");
    let sideways = format!(
        "{}/../../{}/evil.so",
        STREAM_MODULE,
        repo.dir.path().display()
    );
    for module in [repo.path("evil.so").display().to_string(), sideways] {
        repo.write(
            "nginx.conf",
            &format!("load_module {module};\nevents {{}}\n"),
        );
        let nginx = Recorder::new();
        let (out, doc) = repo.check(&nginx.binary());
        assert_eq!(out.status.code(), Some(1), "{module}: {}", text(&out));
        assert!(
            doc["problems"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("load_module")),
            "{doc}"
        );
        // `nginx -V` may be asked (it reads no configuration); `nginx -t` never.
        let calls = std::fs::read_to_string(nginx.dir.path().join("called")).unwrap_or_default();
        assert!(!calls.contains("-t"), "nginx -t ran for {module}: {calls}");
    }
}
