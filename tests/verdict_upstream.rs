//! Upstream errors in the verdict, through the binary with a real nginx and real backends: a
//! TLS handshake with a backend that fails after the change (nginx logs `SSL_do_handshake()
//! failed`, `upstream SSL certificate verify error` or `peer closed connection in SSL
//! handshake`, `while SSL handshaking to upstream`, and fails over or answers 502) is the
//! change's upstream error and rolls it back. Each checks the exit status and what nginx serves
//! afterwards.

mod support;

use std::net::SocketAddr;

use support::*;

/// A server proxying to `https://api`, whose peers are `peers`, with `extra` in its location;
/// and a plain HTTP server on `plain`: a backend that does not speak TLS.
fn tls_site(listen: SocketAddr, plain: SocketAddr, peers: &[String], extra: &str) -> String {
    let servers: String = peers.iter().map(|p| format!("server {p}; ")).collect();
    format!(
        "upstream api {{ {servers}}}\n\
         server {{ listen {listen}; server_name api.test; \
         location / {{ proxy_pass https://api; {extra} }} }}\n\
         server {{ listen {plain}; server_name plain.test; return 200 \"plain\"; }}"
    )
}

/// A second peer added to a TLS pool that speaks plain HTTP: nginx's handshake with it fails
/// (`SSL_do_handshake() failed ... wrong version number`) and nginx passes the request to the
/// good peer, so every client gets 200; only the log shows it. That line is an upstream error
/// the running configuration did not log: the change is rolled back (it was kept, exit 0), and
/// nginx passes to the good peer alone again.
#[test]
fn a_peer_whose_tls_handshake_fails_after_the_change_is_rolled_back_though_failover_hid_it() {
    let ip = unique_loopback();
    let good = AppServer::tls(SocketAddr::new(ip, free_port(ip)));
    let listen = SocketAddr::new(ip, free_port(ip));
    let plain = SocketAddr::new(ip, free_port(ip));
    let n = TestNginx::start(&tls_site(listen, plain, &[good.addr.to_string()], ""));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "api.test", "/").expect("GET"),
        (200, "tls".into())
    );
    let peers = [good.addr.to_string(), plain.to_string()];
    n.write_http(&tls_site(listen, plain, &peers, ""));
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let causes = run.json()["verdict"]["causes"].to_string();
    assert!(
        causes.contains("SSL_do_handshake() failed") && causes.contains("tls_handshake"),
        "{run}"
    );
    // Rolled back: the pool is the good peer alone, and every request is answered by it.
    let config = std::fs::read_to_string(&n.conf).expect("nginx.conf");
    assert!(!config.contains(&format!("server {plain};")), "{config}");
    for _ in 0..4 {
        assert_eq!(
            http_get(listen, "api.test", "/").expect("GET"),
            (200, "tls".into())
        );
    }
}

/// `proxy_ssl_verify on` with a CA that did not sign the backend's certificate: nginx answers
/// 502 and logs `upstream SSL certificate verify error ... while SSL handshaking to upstream`,
/// which the report lists among the upstream errors; the change is rolled back and the site
/// answers 200 again.
#[test]
fn a_backend_certificate_nginx_rejects_after_the_change_is_an_upstream_error() {
    let ip = unique_loopback();
    let good = AppServer::tls(SocketAddr::new(ip, free_port(ip)));
    let listen = SocketAddr::new(ip, free_port(ip));
    let plain = SocketAddr::new(ip, free_port(ip));
    let peers = [good.addr.to_string()];
    let n = TestNginx::start(&tls_site(listen, plain, &peers, ""));
    let sr = SafeReload::new(&n);
    sr.init();
    let ca = tempfile::tempdir().expect("tempdir");
    let (other_ca, _) = self_signed(ca.path(), "other-ca.test");
    let verify = format!(
        "proxy_ssl_verify on; proxy_ssl_trusted_certificate {};",
        other_ca.display()
    );
    n.write_http(&tls_site(listen, plain, &peers, &verify));
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    let errors = run.json()["health"]["upstream_errors"].to_string();
    assert!(
        errors.contains("while SSL handshaking to upstream") && errors.contains("tls_handshake"),
        "{run}"
    );
    assert_eq!(
        http_get(listen, "api.test", "/").expect("GET"),
        (200, "tls".into())
    );
}

/// A pool of a dead peer and a live one, and a client that asked `/x` before the change: the
/// running worker logged the dead peer's `connect() failed` under `/x` and skips the peer for
/// its `fail_timeout`, so the baseline's own requests to `/` log nothing. After a harmless
/// change the new worker tries the peer afresh under `/`: the same peer, the same failure,
/// whatever URI met it. It was taken for a new upstream error and rolled back (exit 3); it is a
/// warning now, the change stays, and clients still get the live peer's answer.
#[test]
fn an_upstream_error_of_the_same_peer_under_another_uri_is_the_same_standing_failure() {
    let ip = unique_loopback();
    let live = HttpBackend::start(SocketAddr::new(ip, 0), "live");
    let dead = SocketAddr::new(ip, free_port(ip));
    let listen = SocketAddr::new(ip, free_port(ip));
    let site = |extra: &str| {
        format!(
            "upstream pool {{ server {dead}; server {}; }}\n\
             server {{ listen {listen}; server_name pool.test; \
             location / {{ proxy_pass http://pool; {extra} }} }}",
            live.host_port()
        )
    };
    let n = TestNginx::start(&site(""));
    let sr = SafeReload::new(&n);
    sr.init();
    assert_eq!(
        http_get(listen, "pool.test", "/x").expect("GET"),
        (200, "live".into())
    );
    let logged = n.error_log_text();
    assert!(
        logged.contains(&format!("upstream: \"http://{dead}/x\"")),
        "{logged}"
    );
    n.write_http(&site("add_header X-Change 1;"));
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(0);
    let report = run.json();
    let known = report["verdict"]["known_errors"].to_string();
    assert!(known.contains(&format!("http://{dead}/")), "{run}");
    let config = std::fs::read_to_string(&n.conf).expect("nginx.conf");
    assert!(config.contains("X-Change"), "{config}");
    assert_eq!(
        http_get(listen, "pool.test", "/").expect("GET"),
        (200, "live".into())
    );
}
