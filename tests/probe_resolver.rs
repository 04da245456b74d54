//! Names nginx resolves per request through its `resolver` (a `*_pass` built from variables):
//! they are asked of that resolver, over UDP as nginx does, never of the system resolver, and
//! the answers probed; a resolver that does not answer is reported, not a refusal; with no
//! `resolver` nginx answers 502, a refusal. The resolver is a responder the test starts on
//! loopback, and nginx really resolves through it. Each test runs in a private network
//! namespace: `app.service.consul` must never reach this machine's resolver.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

const NAME: &str = "app.service.consul";

fn site(listen: SocketAddr, resolver: Option<SocketAddr>, port: u16) -> String {
    let resolver = resolver.map_or(String::new(), |r| {
        // Well under `--health-timeout` (2 s): a silent resolver gives both nginxes their 502
        // at once, never one a 502 and the other a timed-out read.
        format!("resolver {r} ipv6=off; resolver_timeout 1s;")
    });
    format!(
        "server {{ listen {listen}; server_name site.test; {resolver} \
         set $up {NAME}; location / {{ proxy_pass http://$up:{port}; }} }}"
    )
}

fn result(report: &serde_json::Value) -> &serde_json::Value {
    report["probe"]["results"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["target"].as_str().is_some_and(|t| t.starts_with(NAME)))
        })
        .unwrap_or_else(|| panic!("no result for {NAME}: {report}"))
}

/// nginx serving `site` (the control server only until `site` is written).
fn start(site_text: &str) -> (TestNginx, SafeReload) {
    let nginx = TestNginx::start(site_text);
    let sr = SafeReload::new(&nginx);
    (nginx, sr)
}

#[test]
fn a_name_only_the_resolver_knows_is_resolved_through_it_and_probed() {
    if !in_private_network("a_name_only_the_resolver_knows_is_resolved_through_it_and_probed") {
        return;
    }
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let port = app.addr.unwrap().port();
    let dns = DnsResponder::start(ip, &[(NAME, &[ip])]);
    let listen = SocketAddr::new(ip, free_port(ip));
    let (_nginx, sr) = start(&site(listen, Some(dns.addr), port));

    // nginx itself resolves the name through the responder and reaches the backend.
    assert_eq!(
        http_get(listen, "site.test", "/").unwrap(),
        (200, "app".into())
    );
    let before = dns.queries.load(std::sync::atomic::Ordering::Relaxed);
    let run = sr.run(&["check", "--json"]);
    run.expect(0);
    let r = result(&run.json()).clone();
    assert_eq!(r["status"], "ok", "{run}");
    assert_eq!(
        r["addresses"][0]["address"],
        format!("{ip}:{port}"),
        "{run}"
    );
    assert!(
        r["resolver"]
            .as_str()
            .unwrap()
            .contains(&dns.addr.to_string()),
        "{run}"
    );
    assert!(
        dns.queries.load(std::sync::atomic::Ordering::Relaxed) > before,
        "the probe asked the configured resolver"
    );

    // The resolver now points at a dead port: nginx answers 502, and the check refuses.
    drop(app);
    let run = sr.run(&["check", "--json"]);
    run.expect(1);
    assert_eq!(result(&run.json())["severity"], "failure", "{run}");
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 502);
}

#[test]
fn a_resolver_that_does_not_answer_is_reported_not_refused() {
    if !in_private_network("a_resolver_that_does_not_answer_is_reported_not_refused") {
        return;
    }
    let ip = unique_loopback();
    let dns = DnsResponder::silent(ip);
    let listen = SocketAddr::new(ip, free_port(ip));
    let (_nginx, sr) = start(&site(listen, Some(dns.addr), 8080));
    let run = sr.run(&["check", "--json", "--probe-timeout", "300ms"]);
    run.expect(0);
    let r = result(&run.json()).clone();
    assert_eq!(r["status"], "dynamic", "{run}");
    assert_eq!(r["severity"], "warning", "{run}");
    let hints = r["hints"].to_string();
    assert!(
        hints.contains(&format!(
            "resolved by nginx at request time through resolver {}",
            dns.addr
        )),
        "{hints}"
    );
    assert!(!hints.contains("fails to start"), "{hints}");
    assert!(!hints.contains("system resolver"), "{hints}");

    // A name the resolver says does not exist: a warning too (nginx answers 502 until it does).
    let nx = DnsResponder::start(ip, &[("other.consul", &[ip])]);
    let nx_listen = SocketAddr::new(ip, free_port(ip));
    let (_nx_nginx, nx_sr) = start(&site(nx_listen, Some(nx.addr), 8080));
    let run = nx_sr.run(&["check", "--json"]);
    run.expect(0);
    let r = result(&run.json()).clone();
    assert_eq!(
        (r["status"].as_str(), r["severity"].as_str()),
        (Some("unresolvable"), Some("warning")),
        "{run}"
    );
    assert!(r["hints"].to_string().contains("does not exist"), "{run}");
}

#[test]
fn a_variable_name_without_a_resolver_is_refused_as_nginx_answers_502() {
    if !in_private_network("a_variable_name_without_a_resolver_is_refused_as_nginx_answers_502") {
        return;
    }
    let ip = unique_loopback();
    let listen = SocketAddr::new(ip, free_port(ip));
    let (nginx, sr) = start(&site(listen, None, 8080));
    assert_eq!(http_get(listen, "site.test", "/").unwrap().0, 502);
    assert!(
        wait_for(Duration::from_secs(5), || nginx
            .error_log_text()
            .contains("no resolver defined to resolve")),
        "{}",
        nginx.error_log_text()
    );
    let run = sr.run(&["check", "--json"]);
    run.expect(1);
    let r = result(&run.json()).clone();
    assert_eq!(r["severity"], "failure", "{run}");
    assert_eq!(r["resolver"], "none", "{run}");
    let hints = r["hints"].to_string();
    assert!(hints.contains("no `resolver` is in scope"), "{hints}");
    assert!(!hints.contains("fails to start"), "{hints}");
}

/// Regression (findings i12 F2): the same name under two resolvers was asked of whichever
/// came first, so a server whose own resolver does not answer showed "ok". Each resolver is
/// asked now, and each result says which places it speaks for.
#[test]
fn the_same_name_under_two_resolvers_is_asked_of_each() {
    if !in_private_network("the_same_name_under_two_resolvers_is_asked_of_each") {
        return;
    }
    let ip = unique_loopback();
    let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
    let port = app.addr.unwrap().port();
    let dns = DnsResponder::start(ip, &[(NAME, &[ip])]);
    let silent = DnsResponder::silent(ip);
    let (a, b) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let text = format!(
        "resolver {} ipv6=off; resolver_timeout 1s;\n{}\n\
         server {{ listen {b}; server_name other.test; \
         set $up {NAME}; location / {{ proxy_pass http://$up:{port}; }} }}",
        silent.addr,
        site(a, Some(dns.addr), port)
    );
    let (_nginx, sr) = start(&text);
    // nginx: the server with the answering resolver is served, the other one is not.
    assert_eq!(http_get(a, "site.test", "/").unwrap(), (200, "app".into()));
    assert_eq!(http_get(b, "other.test", "/").unwrap().0, 502);

    let run = sr.run(&["probe", "--json", "--probe-timeout", "300ms"]);
    let report = run.json();
    let results: Vec<&serde_json::Value> = (report["probe"]["results"].as_array().unwrap())
        .iter()
        .filter(|r| r["target"] == format!("{NAME}:{port}"))
        .collect();
    assert_eq!(results.len(), 2, "one result per resolver: {run}");
    let through = |r: &serde_json::Value, d: SocketAddr| {
        r["resolver"]
            .as_str()
            .is_some_and(|t| t.contains(&d.to_string()))
    };
    let answered = results.iter().find(|r| through(r, dns.addr)).expect("dns");
    let unanswered = results
        .iter()
        .find(|r| through(r, silent.addr))
        .expect("silent");
    assert_eq!(answered["status"], "ok", "{run}");
    assert_eq!(
        (&unanswered["status"], &unanswered["severity"]),
        (&"dynamic".into(), &"warning".into()),
        "{run}"
    );
    assert!(
        unanswered["hints"].to_string().contains(&format!(
            "resolved by nginx at request time through resolver {}",
            silent.addr
        )),
        "{run}"
    );
}
