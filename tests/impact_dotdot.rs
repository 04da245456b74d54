//! An include path with `..` in it (`include sites/../sites-enabled/*.conf;`, or an absolute
//! `/etc/nginx/../nginx/conf.d/*.conf`), or a main file named so (`-c /etc/nginx/../nginx/nginx.conf`),
//! names the same files as the plain path: each server keeps
//! its identity between last-good and the candidate, through the binary with a real nginx.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::*;

/// Two sites in `sites-enabled/`, included through `include`; a harmless change to one of them.
/// `-c` is the main file as `main` names it from the prefix. Returns the run's report after
/// checking nginx serves the change.
fn change_one_site(
    include: impl Fn(&std::path::Path) -> String,
    main: impl Fn(&std::path::Path) -> std::path::PathBuf,
) -> (Run, Value) {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |name: &str, extra: &str| {
        format!(
            "server {{ listen {listen}; server_name {name}; \
             location / {{ {extra} proxy_pass http://{}; }} }}\n",
            good.host_port()
        )
    };
    let n = TestNginx::builder().prepare();
    let root = n.conf.parent().expect("conf dir").to_path_buf();
    let enabled = root.join("sites-enabled");
    std::fs::create_dir_all(&enabled).expect("mkdir sites-enabled");
    std::fs::create_dir_all(root.join("sites")).expect("mkdir sites");
    std::fs::write(enabled.join("a.conf"), site("a.test", "")).expect("write a.conf");
    std::fs::write(enabled.join("b.conf"), site("b.test", "")).expect("write b.conf");
    let mut n = n;
    n.write_http(&include(&root));
    n.restart();
    let sr = SafeReload::for_paths(&main(&root), &n.prefix);
    sr.init();
    assert_eq!(
        http_get(listen, "a.test", "/").expect("GET"),
        (200, "good".into())
    );

    std::fs::write(
        enabled.join("a.conf"),
        site("a.test", "add_header X-Changed yes;"),
    )
    .expect("write a.conf");
    let run = sr.run(&["-y", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    let (status, _) = http_get(listen, "a.test", "/").expect("GET");
    assert_eq!(status, 200, "{run}");
    assert!(
        raw_get(listen, "a.test").contains("X-Changed: yes"),
        "{run}"
    );
    let report = run.json();
    (run, report)
}

/// The response head and body of `GET /` with `Host: host`.
fn raw_get(addr: SocketAddr, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn assert_one_changed_server(run: &Run, report: &Value) {
    let impact = &report["impact"];
    let affected = impact["affected"].as_array().expect("affected");
    let labels: Vec<&str> = affected
        .iter()
        .filter_map(|a| a["label"].as_str())
        .collect();
    assert_eq!(labels, ["a.test"], "{run}");
    assert_ne!(
        affected[0]["reasons"][0]["what"], "new server",
        "the same server is not new: {run}"
    );
    assert_eq!(impact["removed"].as_array().map(Vec::len), Some(0), "{run}");
}

#[test]
fn a_relative_include_through_dotdot_keeps_each_servers_identity() {
    let (run, report) = change_one_site(
        |_| "include sites/../sites-enabled/*.conf;".into(),
        |root| root.join("nginx.conf"),
    );
    assert_one_changed_server(&run, &report);
}

#[test]
fn an_absolute_include_through_dotdot_keeps_each_servers_identity() {
    let (run, report) = change_one_site(
        |root| {
            let name = root.file_name().expect("name").to_string_lossy();
            format!("include {}/../{name}/sites-enabled/*.conf;", root.display())
        },
        |root| root.join("nginx.conf"),
    );
    assert_one_changed_server(&run, &report);
}

#[test]
fn a_main_file_named_through_dotdot_keeps_each_servers_identity() {
    let (run, report) = change_one_site(
        |_| "include sites-enabled/*.conf;".into(),
        |root| {
            let name = root.file_name().expect("name").to_string_lossy();
            root.join("..").join(&*name).join("nginx.conf")
        },
    );
    assert_one_changed_server(&run, &report);
}
