//! The text an operator reads, pinned for fixed situations where it is deterministic: the target
//! list of a fixed config, a syntax error refused by the real `nginx -t`, a config that does not
//! load. Temp paths are replaced by `[DIR]`; stdout, stderr and the exit status are pinned
//! together.

mod output_util;
mod support;

use std::path::Path;
use std::process::Command;

use output_util::*;
use support::BIN;

fn snapshot_of(out: &std::process::Output, dir: &Path) -> String {
    let dir = dir.display().to_string();
    let reps = [(dir.as_str(), "[DIR]")];
    format!(
        "exit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        normalize(&String::from_utf8_lossy(&out.stdout), &reps),
        normalize(&String::from_utf8_lossy(&out.stderr), &reps)
    )
}

fn cmd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "--config",
        "/dev/null",
        "--nginx",
        support::NGINX,
        "--no-probe",
    ])
    .arg("-p")
    .arg(dir)
    .arg("-c")
    .arg(dir.join("nginx.conf"))
    .arg("--state-dir")
    .arg(dir.join("state"))
    .env_remove("NO_COLOR");
    c
}

fn write_conf(dir: &Path, http: &str) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("logs")).expect("mkdir");
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {d}/logs/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{}}\nhttp {{\n\
             client_body_temp_path {d}/tmp;\nproxy_temp_path {d}/tmp;\n\
             fastcgi_temp_path {d}/tmp;\nuwsgi_temp_path {d}/tmp;\nscgi_temp_path {d}/tmp;\n\
             {http}\n}}\n"
        ),
    )
    .expect("write nginx.conf");
}

#[test]
fn targets_of_a_fixed_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("php.sock");
    write_conf(
        dir.path(),
        &format!(
            "upstream app {{\n  server 127.0.0.1:3000;\n  server 127.0.0.1:3001 backup;\n}}\n\
             server {{\n  listen 127.0.0.1:8080;\n  location / {{ proxy_pass http://app; }}\n  \
             location /api/ {{ proxy_pass http://127.0.0.1:8000; }}\n  \
             location ~ \\.php$ {{ fastcgi_pass unix:{}; }}\n}}",
            sock.display()
        ),
    );
    let out = cmd(dir.path()).arg("targets").output().expect("run");
    insta::assert_snapshot!(snapshot_of(&out, dir.path()));
}

#[test]
fn a_syntax_error_refused_by_nginx_t() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_conf(
        dir.path(),
        "server {\n  listen 127.0.0.1:8080;\n  proxy_pas http://127.0.0.1:3000;\n}",
    );
    let out = cmd(dir.path()).arg("check").output().expect("run");
    insta::assert_snapshot!(snapshot_of(&out, dir.path()));
}

#[test]
fn a_config_that_does_not_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_conf(dir.path(), "include missing.conf;\nserver {\n");
    let out = cmd(dir.path()).arg("targets").output().expect("run");
    insta::assert_snapshot!(snapshot_of(&out, dir.path()));
}
