//! A check verifies only what its answer came from, through the binary with a real nginx: a
//! server with no `server_name` that is not the default server of its listen is reached by a
//! request with no Host, not by its IP (which the default server takes).

mod support;

use std::net::SocketAddr;

use serde_json::Value;
use support::*;

/// The result of the check of `server` in `report`.
fn result_of<'a>(report: &'a Value, server: &str) -> &'a Value {
    (report["health"]["results"].as_array().into_iter().flatten())
        .find(|r| r["server"] == server)
        .unwrap_or_else(|| panic!("no check of {server}: {report}"))
}

/// A second server of no name on a listen whose default server is `a.test`: its check went
/// with `Host: <ip>`, landed on `a.test` (200) and called it verified while it answered 502.
/// nginx gives it the requests without a Host (its implicit `server_name ""`): the check goes
/// as one, so the shadow refuses the dead upstream and verification rolls it back.
#[test]
fn a_server_with_no_name_that_is_not_the_default_is_checked_without_a_host() {
    let ip = unique_loopback();
    let a = HttpBackend::start(SocketAddr::new(ip, 0), "a");
    let b = HttpBackend::start(SocketAddr::new(ip, 0), "b");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |to: &str| {
        format!(
            "server {{ listen {listen}; server_name a.test; location / {{ proxy_pass http://{}; }} }}\n\
             server {{ listen {listen}; location / {{ proxy_pass http://{to}; }} }}",
            a.host_port()
        )
    };
    let n = TestNginx::start(&http(&b.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    // What nginx routes where: the IP to the default server, no Host to the unnamed one.
    assert_eq!(
        http_get(listen, &ip.to_string(), "/").expect("GET"),
        (200, "a".into())
    );
    assert_eq!(http10_get(listen, "/").expect("GET"), (200, "b".into()));

    n.write_http(&http(&dead.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    assert_eq!(http10_get(listen, "/").expect("GET"), (200, "b".into()));

    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let report = run.json();
    let check = result_of(&report, &listen.to_string());
    assert_eq!(check["host"], "", "{run}");
    assert_eq!(check["status"], 502, "{run}");
    // Rolled back: the unnamed server passes to the live backend again.
    assert_eq!(http10_get(listen, "/").expect("GET"), (200, "b".into()));
    assert_eq!(
        http_get(listen, "a.test", "/").expect("GET"),
        (200, "a".into())
    );
}
