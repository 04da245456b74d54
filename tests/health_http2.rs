//! Checks of servers on a plaintext `listen ... http2` (nginx 1.22 speaks only HTTP/2 with prior
//! knowledge there), through the binary with a real nginx and real backends: the baseline, the
//! shadow and verification after the reload all send HTTP/2, with a PROXY protocol header first
//! when the listen says both, and what nginx serves afterwards is read over HTTP/2 by curl.

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::*;

/// An `http2` server and an `http2 proxy_protocol` one, both proxying to `backend`.
fn sites(h2: SocketAddr, pp: SocketAddr, backend: &str, extra: &str) -> String {
    format!(
        "server {{ listen {h2} http2; server_name h2.test; {extra} \
         location / {{ proxy_pass http://{backend}; }} }}\n\
         server {{ listen {pp} http2 proxy_protocol; server_name pp.test; {extra} \
         location / {{ proxy_pass http://{backend}; }} }}"
    )
}

/// The health result for `host`.
fn result<'a>(report: &'a Value, host: &str) -> &'a Value {
    (report["health"]["results"]
        .as_array()
        .expect("results")
        .iter())
    .find(|r| r["host"] == host)
    .unwrap_or_else(|| panic!("no check of {host}: {report:#}"))
}

#[test]
fn a_harmless_change_on_http2_listens_is_checked_over_http2_and_verified() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let (h2, pp) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let n = TestNginx::start(&sites(h2, pp, &good.host_port(), ""));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&sites(h2, pp, &good.host_port(), "add_header X-A 1;"));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["outcome"], "reloaded", "{run}");
    for host in ["h2.test", "pp.test"] {
        let r = result(&report, host);
        assert_eq!(
            (&r["status"], &r["http2"]),
            (&Value::from(200), &Value::Bool(true)),
            "{run}"
        );
    }
    assert!(
        result(&report, "pp.test")["proxy_protocol"] == true,
        "{run}"
    );
    // Both servers checked and verified: nothing left unverified.
    let coverage = &report["coverage"];
    assert_eq!(
        (&coverage["affected"], &coverage["verified"]),
        (&Value::from(2), &Value::from(2)),
        "{run}"
    );
    assert_eq!(
        coverage["not_verified"].as_array().map(Vec::len),
        Some(0),
        "{run}"
    );
    // The shadow sent the same HTTP/2 requests before the reload.
    assert_eq!(report["shadow"]["state"], "verified", "{run}");
    assert_eq!(
        h2c_get(h2, "h2.test", "/", false).expect("h2c GET"),
        (200, "good".into())
    );
    assert_eq!(
        h2c_get(pp, "pp.test", "/", true).expect("h2c GET"),
        (200, "good".into())
    );
}

#[test]
fn a_broken_backend_behind_an_http2_listen_is_refused_or_rolled_back() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad_gateway = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let closing = AcceptCloseBackend::start(SocketAddr::new(ip, 0));
    let (h2, pp) = (
        SocketAddr::new(ip, free_port(ip)),
        SocketAddr::new(ip, free_port(ip)),
    );
    let n = TestNginx::start(&sites(h2, pp, &good.host_port(), ""));
    let sr = SafeReload::new(&n);
    sr.init();

    // A backend answering 502: the shadow's HTTP/2 checks refuse it before the reload.
    n.write_http(&sites(h2, pp, &bad_gateway.addr.to_string(), ""));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "refused", "{run}");
    assert_eq!(
        h2c_get(h2, "h2.test", "/", false).expect("h2c GET"),
        (200, "good".into())
    );

    // One that accepts and closes, without the shadow: verification after the reload sees
    // nginx's 502 over HTTP/2 and rolls back.
    n.write_http(&sites(h2, pp, &closing.addr.to_string(), ""));
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    for host in ["h2.test", "pp.test"] {
        assert_eq!(result(&report, host)["status"], 502, "{run}");
    }
    assert_eq!(
        h2c_get(h2, "h2.test", "/", false).expect("h2c GET"),
        (200, "good".into())
    );
    assert_eq!(
        h2c_get(pp, "pp.test", "/", true).expect("h2c GET"),
        (200, "good".into())
    );
}
