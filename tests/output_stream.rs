//! Text output is one buffered stream per file descriptor: a long listing costs a handful of
//! `write` calls and one terminal check per stream, not one of each per line, and stdout and
//! stderr written to one place keep their order.
#![allow(clippy::print_stderr)] // a skipped test says why

mod output_util;
mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use output_util::*;
use support::*;

/// A tree of `n` servers, each with an upstream of two servers and two more `proxy_pass`
/// lines: `targets` prints about ten lines per server.
fn tree(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let mut text = String::from("events {}\nhttp {\n");
    for i in 0..n {
        let (a, b) = (i / 250, i % 250);
        text.push_str(&format!(
            "upstream app{i} {{ server 127.{a}.{b}.1:8000; server 127.{a}.{b}.2:8000 backup; }}\n\
             server {{ listen 127.0.0.1:{port}; server_name site{i}.test;\n\
             location / {{ proxy_pass http://app{i}; }}\n\
             location /ws {{ proxy_pass http://127.{a}.{b}.3:9000; }} }}\n",
            port = 10000 + i
        ));
    }
    text.push_str("}\n");
    let main = dir.join("nginx.conf");
    std::fs::write(&main, text).expect("write the tree");
    main
}

/// `(calls, errors)` of one syscall in `strace -c` output.
fn syscall_count(summary: &str, name: &str) -> (u64, u64) {
    summary
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .map_or((0, 0), |l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors], syscall
            let calls = f.get(3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let errors = if f.len() == 6 {
                f[4].parse().unwrap_or(0)
            } else {
                0
            };
            (calls, errors)
        })
}

#[test]
fn a_long_target_listing_is_a_few_writes_and_one_terminal_check_per_stream() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed (scripts/test.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let main = tree(dir.path(), 300);
    let counts = dir.path().join("strace.txt");
    let out = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&counts)
        .arg(BIN)
        .arg("-c")
        .arg(&main)
        .args(["--config", "/dev/null", "targets"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run strace");
    let summary = std::fs::read_to_string(&counts).unwrap_or_default();
    if !out.status.success() && summary.is_empty() {
        eprintln!(
            "skipped: strace cannot trace here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout.lines().count();
    assert!(lines >= 2_400, "{lines} lines:\n{summary}");
    let (writes, _) = syscall_count(&summary, "write");
    let (ioctls, failed) = syscall_count(&summary, "ioctl");
    assert!(
        writes <= 30,
        "{writes} write calls for {lines} lines:\n{summary}"
    );
    assert!(
        ioctls <= 10 && failed <= 10,
        "{ioctls} ioctl calls ({failed} failed):\n{summary}"
    );
}

#[test]
fn stdout_and_stderr_into_one_file_keep_their_order() {
    let site = Site::start();
    let wrong = SocketAddr::new(site.ip, free_port(site.ip));
    site.nginx.write_http(&site.server_for(&wrong.to_string()));
    let dir = tempfile::tempdir().expect("tempdir");
    let both = dir.path().join("both.txt");
    let file = std::fs::File::create(&both).expect("create");
    let status = site
        .cmd()
        .arg("check")
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .status()
        .expect("run check");
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&both).expect("read");
    let problem = text
        .find(&wrong.to_string())
        .unwrap_or_else(|| panic!("names the dead target:\n{text}"));
    let outcome = text
        .find("check: problems found")
        .unwrap_or_else(|| panic!("the outcome line:\n{text}"));
    assert!(
        problem < outcome,
        "the diagnostics (stderr) come before the outcome (stdout):\n{text}"
    );
    assert!(
        text.trim_end().ends_with("(nothing was reloaded)"),
        "the outcome is the last line:\n{text}"
    );
}
