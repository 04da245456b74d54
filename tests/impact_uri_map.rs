//! `map $uri $pool` (and `$request_uri`) in front of `proxy_pass http://$pool`: the path
//! picks the upstream, so each branch gets a request of its own, on a path derived from its
//! key (an exact one as written, a regex one where a matching path can be derived from one of
//! its branches, else the branch is said to be unverified), through the binary with a real nginx.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::*;

/// The path of each health result in `report`, with its status.
fn statuses(report: &Value) -> Vec<(String, i64)> {
    (report["health"]["results"].as_array().into_iter().flatten())
        .map(|r| {
            let path = r["path"].as_str().unwrap_or_default().to_string();
            (path, r["status"].as_i64().unwrap_or(0))
        })
        .collect()
}

/// Upstreams behind one location, picked by `source` (`$uri` or `$request_uri`); the one a
/// change breaks goes to a backend that closes every request.
struct Site {
    nginx: TestNginx,
    sr: SafeReload,
    listen: SocketAddr,
    source: &'static str,
    /// Upstream name and backend address.
    upstreams: Vec<(&'static str, String)>,
    closing: String,
    _backends: (HttpBackend, HttpBackend, HttpBackend, CloseBackend),
}

impl Site {
    fn start(source: &'static str) -> Site {
        let ip = unique_loopback();
        let backends = (
            HttpBackend::start(SocketAddr::new(ip, 0), "api"),
            HttpBackend::start(SocketAddr::new(ip, 0), "static"),
            HttpBackend::start(SocketAddr::new(ip, 0), "web"),
            CloseBackend::start(SocketAddr::new(ip, 0)),
        );
        let upstreams = vec![
            ("api", backends.0.host_port()),
            ("static", backends.1.host_port()),
            ("web", backends.2.host_port()),
            ("legacy", backends.2.host_port()),
            ("spaced", backends.2.host_port()),
        ];
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start("");
        let sr = SafeReload::new(&nginx);
        let site = Site {
            nginx,
            sr,
            listen,
            source,
            upstreams,
            closing: backends.3.addr.to_string(),
            _backends: backends,
        };
        site.nginx.write_http(&site.http(None));
        site.sr.run(&["-y", "--force"]).expect(0);
        site.sr.init();
        site
    }

    /// The `http {}` body, with the upstream `broken` names sent to the closing backend.
    fn http(&self, broken: Option<&str>) -> String {
        let ups: String = (self.upstreams.iter())
            .map(|(name, addr)| {
                let to = if broken == Some(*name) {
                    &self.closing
                } else {
                    addr
                };
                format!("upstream {name} {{ server {to}; }}\n")
            })
            .collect();
        format!(
            "{ups}map {} $pool {{ /api/ api; ~^/static/ static; ~^/v\\d+/ legacy; \
             ~^/old/\\x20 spaced; default web; }}\n\
             server {{ listen {}; server_name site.test; \
             location / {{ proxy_pass http://$pool; }} }}",
            self.source, self.listen
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.listen, "site.test", path).expect("GET")
    }
}

#[test]
fn a_map_on_the_uri_gets_a_check_per_branch_and_the_broken_one_is_caught() {
    let site = Site::start("$uri");
    assert_eq!(site.get("/static/a.css"), (200, "static".into()));

    site.nginx.write_http(&site.http(Some("static")));
    let run = site.sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert!(
        (report["shadow"]["reason"].as_str()).is_some_and(|r| r.contains("/static/")),
        "{run}"
    );
    assert_eq!(site.get("/static/a.css"), (200, "static".into()), "{run}");

    let run = site.sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    let seen = statuses(&report);
    assert!(seen.contains(&("/static/".into(), 502)), "{run}");
    assert!(seen.contains(&("/".into(), 200)), "{run}");
    let routed = (report["health"]["results"].as_array().into_iter().flatten())
        .find(|r| r["path"] == "/static/")
        .expect("the branch's check");
    assert_eq!(
        routed["what"],
        "location /, path routed by map $pool ~^/static/"
    );
    // Rolled back: the branch reaches its upstream again.
    assert_eq!(site.get("/static/a.css"), (200, "static".into()), "{run}");
    assert_eq!(site.get("/api/"), (200, "api".into()));
}

#[test]
fn a_map_on_the_request_uri_checks_the_exact_key_and_names_the_branch_it_cannot_reach() {
    let site = Site::start("$request_uri");
    site.nginx.write_http(&site.http(Some("api")));
    let run = site.sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    let seen = statuses(&report);
    assert!(seen.contains(&("/api/".into(), 502)), "{run}");
    assert_eq!(site.get("/api/"), (200, "api".into()), "rolled back: {run}");

    // A harmless change: every branch answers, and the one no path is derived for is named.
    let harmless = site.http(None).replace(
        "server_name site.test;",
        "server_name site.test; add_header X-A 1;",
    );
    site.nginx.write_http(&harmless);
    let run = site.sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let report = run.json();
    let mut paths: Vec<String> = statuses(&report).into_iter().map(|(p, _)| p).collect();
    paths.sort();
    assert_eq!(paths, ["/", "/api/", "/static/", "/v0/"], "{run}");
    assert!(statuses(&report).iter().all(|(_, s)| *s == 200), "{run}");
    let not_verified = report["coverage"]["not_verified"].to_string();
    assert!(
        not_verified.contains("map $pool ~^/old/\\\\x20"),
        "no path a request can send is derived from a regex that asks for a space: {run}"
    );
    assert_eq!(
        report["coverage"]["verified"], 0,
        "so the server is not called verified"
    );
    assert_eq!(site.get("/static/x"), (200, "static".into()));
}
