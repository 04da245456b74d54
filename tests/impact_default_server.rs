//! The implicit default server of a listen (the first server in file order, unless one says
//! `default_server`) answers every Host no `server_name` matches and requests by IP. A change
//! that makes another server the default (a new file sorted first in `include
//! sites-enabled/*`, the first server removed) is said in the impact, counts both servers as
//! affected, and the default route is checked before and after, through the binary with a real
//! nginx.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::*;

/// The Host a check of the default route sends.
const UNKNOWN: &str = "safe-reload-check.invalid";

fn labels(report: &Value) -> Vec<&str> {
    (report["impact"]["affected"]
        .as_array()
        .into_iter()
        .flatten())
    .filter_map(|a| a["label"].as_str())
    .collect()
}

/// The check of the default route, with what it got.
fn default_route(report: &Value) -> &Value {
    (report["health"]["results"].as_array().into_iter().flatten())
        .find(|r| r["host"] == UNKNOWN)
        .unwrap_or_else(|| panic!("no check of the default route: {report}"))
}

/// nginx started on `include sites-enabled/*.conf;` with these sites, and a baseline taken.
fn sites(files: &[(&str, String)]) -> (TestNginx, SafeReload, std::path::PathBuf) {
    let n = TestNginx::start("include sites-enabled/*.conf;");
    let dir = n.conf.parent().expect("conf dir").join("sites-enabled");
    std::fs::create_dir_all(&dir).expect("mkdir sites-enabled");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write site");
    }
    let sr = SafeReload::new(&n);
    sr.run(&["-y", "--force"]).expect(0);
    sr.init();
    (n, sr, dir)
}

#[test]
fn a_new_file_sorted_first_makes_its_server_the_default_and_the_run_says_so() {
    let ip = unique_loopback();
    let (a, new) = (
        HttpBackend::start(SocketAddr::new(ip, 0), "a"),
        HttpBackend::start(SocketAddr::new(ip, 0), "new"),
    );
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |name: &str, to: &HttpBackend| {
        format!(
            "server {{ listen {listen}; server_name {name}; location / {{ proxy_pass http://{}; }} }}\n",
            to.host_port()
        )
    };
    let (_n, sr, dir) = sites(&[("a.conf", site("a.example", &a))]);
    assert_eq!(
        http_get(listen, "unknown.test", "/").expect("GET"),
        (200, "a".into())
    );

    std::fs::write(dir.join("00-new.conf"), site("new.example", &new)).expect("write");
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    let change = format!(
        "{listen}: default server changes from a.example (sites-enabled/a.conf:1) to \
         new.example (sites-enabled/00-new.conf:1)"
    );
    assert_eq!(
        report["impact"]["default_changes"][0]["listen"],
        listen.to_string()
    );
    assert_eq!(labels(&report), ["new.example", "a.example"], "{run}");
    let reasons = report["impact"]["affected"][1]["reasons"].to_string();
    assert!(reasons.contains(&change), "{run}");
    // And a warning (r13 P M1): every client by IP or unknown Host gets another site.
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains(&change) && warnings.contains("now get new.example"),
        "{run}"
    );
    // Checked before and after: the old default answered it before, the new one does now.
    let checked = default_route(&report);
    assert_eq!(checked["status"], 200, "{run}");
    assert_eq!(
        checked["what"],
        format!("location /, default server of {listen}")
    );
    assert_eq!(
        (report["baseline"]["results"]
            .as_array()
            .into_iter()
            .flatten())
        .filter(|r| r["host"] == UNKNOWN)
        .count(),
        1,
        "{run}"
    );
    assert_eq!(
        http_get(listen, "unknown.test", "/").expect("GET"),
        (200, "new".into())
    );
    assert_eq!(
        http_get(listen, "a.example", "/").expect("GET"),
        (200, "a".into())
    );

    // And back: the operator is told before the reload, in the impact's words.
    std::fs::remove_file(dir.join("00-new.conf")).expect("remove");
    let run = sr.run(&["-y"]);
    run.expect(0);
    let back = format!(
        "a.example ({listen}: default server changes from new.example \
         (sites-enabled/00-new.conf:1) to a.example (sites-enabled/a.conf:1)"
    );
    assert!(run.stderr.contains(&back), "{run}");
    assert_eq!(
        http_get(listen, "unknown.test", "/").expect("GET"),
        (200, "a".into())
    );
}

/// The first server removed: the second becomes the default, and its `map $host` sends every
/// Host but its own to a backend that fails. Its own name still passes; only the default
/// route shows what requests by IP and for unknown Hosts get.
#[test]
fn removing_the_first_server_hands_unknown_hosts_to_a_default_route_that_fails() {
    let ip = unique_loopback();
    let (a, good) = (
        HttpBackend::start(SocketAddr::new(ip, 0), "a"),
        HttpBackend::start(SocketAddr::new(ip, 0), "b"),
    );
    let closing = CloseBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let first = format!(
        "server {{ listen {listen}; server_name a.example; location / {{ proxy_pass http://{}; }} }}\n",
        a.host_port()
    );
    let second = format!(
        "upstream good {{ server {}; }}\nupstream bad {{ server {}; }}\n\
         map $host $pool {{ b.example good; default bad; }}\n\
         server {{ listen {listen}; server_name b.example; location / {{ proxy_pass http://$pool; }} }}\n",
        good.host_port(),
        closing.addr
    );
    let (_n, sr, dir) = sites(&[("a.conf", first), ("b.conf", second)]);
    assert_eq!(
        http_get(listen, "unknown.test", "/").expect("GET"),
        (200, "a".into())
    );

    std::fs::write(dir.join("a.conf"), "").expect("empty a.conf");
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(labels(&report), ["b.example"], "{run}");
    assert_eq!(report["impact"]["removed"][0]["label"], "a.example");
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        (report["shadow"]["reason"].as_str()).is_some_and(|r| r.contains(UNKNOWN)),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "unknown.test", "/").expect("GET"),
        (200, "a".into()),
        "refused before the reload: {run}"
    );

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    assert_eq!(default_route(&report)["status"], 502, "{run}");
    assert_eq!(
        http_get(listen, "unknown.test", "/").expect("GET"),
        (200, "a".into()),
        "rolled back: {run}"
    );
    assert_eq!(
        http_get(listen, "b.example", "/").expect("GET"),
        (200, "b".into())
    );
}
