//! The listen preflight follows `ipv6only`, as nginx binds: `listen [::]:PORT;` sets
//! `IPV6_V6ONLY` (nginx's default `ipv6only=on`), so another program on the IPv4 side of the
//! port is no clash and the reload goes through; `ipv6only=off` takes the IPv4 port too and is
//! refused, with one line per `listen`. Each test runs in a private network namespace, so the
//! `[::]` wildcard binds loopback only.

mod support;

use std::net::{Ipv6Addr, SocketAddr, TcpListener};

use support::*;

/// nginx serving one site, and a listener of this test process (another program, to nginx)
/// on 127.0.0.1 at a port free on IPv6 too.
fn setup() -> (TestNginx, SafeReload, TcpListener, u16) {
    let other = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = other.local_addr().unwrap().port();
    let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    v6.set_only_v6(true).unwrap();
    let any6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    v6.bind(&any6.into()).expect("the port is free on [::]");
    drop(v6);
    let ip = unique_loopback();
    let site = SocketAddr::new(ip, free_port(ip));
    let nginx = TestNginx::start(&format!("server {{ listen {site}; return 200 \"site\"; }}"));
    let sr = SafeReload::new(&nginx);
    sr.init();
    (nginx, sr, other, port)
}

fn v6_site(port: u16, flags: &str) -> String {
    format!("server {{ listen [::]:{port}{flags}; return 200 \"v6\"; }}")
}

#[test]
fn an_ipv6_wildcard_listen_does_not_clash_with_an_ipv4_listener() {
    if !in_private_network("an_ipv6_wildcard_listen_does_not_clash_with_an_ipv4_listener") {
        return;
    }
    let (nginx, sr, _other, port) = setup();
    nginx.write_http(&v6_site(port, ""));
    let run = sr.run(&["-y", "--json"]);
    run.expect(0);
    assert_eq!(run.outcome(), "reloaded", "{run}");
    let conflicts = run.json()["conflicts"].as_array().map_or(0, Vec::len);
    assert_eq!(conflicts, 0, "{run}");
    let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port);
    assert_eq!(http_get(v6, "x", "/").unwrap(), (200, "v6".into()));
}

#[test]
fn an_ipv6_wildcard_with_ipv6only_off_clashes_once() {
    if !in_private_network("an_ipv6_wildcard_with_ipv6only_off_clashes_once") {
        return;
    }
    let (nginx, sr, _other, port) = setup();
    // A second IPv4 socket in the way: still one line for the one listen.
    let _second = TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2");
    let workers = nginx.ready_workers();
    nginx.write_http(&v6_site(port, " ipv6only=off"));
    let run = sr.run(&["check"]);
    run.expect(1);
    let lines = run.stderr.matches("cannot listen").count();
    assert_eq!(lines, 1, "one line for the one listen:\n{run}");
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}"))
            || run.stderr.contains(&format!("127.0.0.2:{port}")),
        "names the IPv4 socket in the way:\n{run}"
    );
    let run = sr.run(&["-y", "--json"]);
    run.expect(1);
    assert_eq!(nginx.ready_workers(), workers, "nginx untouched");
}
