//! Protocol probes through the binary with a real nginx and real application servers: a change
//! that points a directive at a backend speaking another protocol (or one that accepts and
//! closes) is refused before the reload, the running workers stay, and a client looping
//! through the site the whole time sees nothing but 200. The healthy case of each protocol
//! passes: php-fpm, gunicorn, uWSGI, an HTTPS server and a gRPC server.

mod support;

use std::net::SocketAddr;

use support::*;

/// A site whose `/` goes to a healthy HTTP backend (answering `app`), with a baseline.
fn site() -> (ProxiedSite, HttpBackend) {
    let app = HttpBackend::start(SocketAddr::new(unique_loopback(), 0), "app");
    (ProxiedSite::start(&app.host_port()), app)
}

/// Add `location /new { DIRECTIVE; }` and apply it with `safe-reload -y` while a client loops
/// through the site: refused before the reload, untouched, every client request answered
/// 200 (see `ProxiedSite::refused_before_reload`). Returns the probe result of `target`, a
/// failure, and the run's text.
fn refused(directive: &str, target: SocketAddr) -> (serde_json::Value, String) {
    let (site, _app) = site();
    site.add_location(directive);
    let run = site.refused_before_reload("app");
    let result = probe_result(&run, target);
    assert_eq!(result["severity"], "failure", "{result}");
    (result, format!("{run}"))
}

/// A protocol mismatch refused before the reload: status `wrong-protocol`, the protocol
/// probed and the one heard, and the hint's sentence.
fn mismatch(directive: &str, target: SocketAddr, probed: &str, heard: &str, hint: &str) {
    let (r, run) = refused(directive, target);
    assert_eq!(r["status"], "wrong-protocol", "{run}");
    assert_eq!(r["addresses"][0]["protocol"], probed, "{run}");
    if !heard.is_empty() {
        assert_eq!(r["addresses"][0]["speaks"], heard, "{run}");
    }
    let message = r["hints"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(message, hint, "{run}");
}

fn hints(result: &serde_json::Value) -> String {
    result["hints"].to_string()
}

fn addr() -> SocketAddr {
    let ip = unique_loopback();
    SocketAddr::new(ip, free_port(ip))
}

#[test]
fn a_backend_that_accepts_and_closes_is_refused_before_the_reload() {
    let closer = AcceptCloseBackend::start(addr());
    let (r, run) = refused(&format!("proxy_pass http://{}", closer.addr), closer.addr);
    assert_eq!(r["status"], "closed", "{run}");
    assert_eq!(r["addresses"][0]["protocol"], "http", "{run}");
    assert!(r["addresses"][0].get("speaks").is_none(), "{run}");
    assert!(
        hints(&r).contains("closed it without answering the HTTP probe"),
        "{run}"
    );
}

#[test]
fn fastcgi_pass_to_an_http_port_is_refused_with_the_proxy_pass_it_meant() {
    let app = AppServer::gunicorn(addr());
    let a = app.addr;
    let hint = format!("{a} speaks HTTP, not FastCGI: did you mean proxy_pass http://{a}?");
    mismatch(&format!("fastcgi_pass {a}"), a, "fastcgi", "http", &hint);
}

/// Python's `http.server` answers the FastCGI record with an HTML page and no status line;
/// the hint said "bytes FastCGI does not send" instead of naming HTTP.
#[test]
fn fastcgi_pass_to_an_http_server_answering_without_a_status_line_says_it_speaks_http() {
    let app = AppServer::python_http(addr());
    let a = app.addr;
    let hint = format!("{a} speaks HTTP, not FastCGI: did you mean proxy_pass http://{a}?");
    mismatch(&format!("fastcgi_pass {a}"), a, "fastcgi", "", &hint);
}

#[test]
fn proxy_pass_http_to_a_tls_port_is_refused() {
    let tls = AppServer::tls(addr());
    let a = tls.addr;
    let hint = format!("{a} speaks TLS, not HTTP: did you mean proxy_pass https://{a}?");
    mismatch(&format!("proxy_pass http://{a}"), a, "http", "tls", &hint);
}

#[test]
fn proxy_pass_https_to_plain_http_is_refused() {
    let app = AppServer::gunicorn(addr());
    let a = app.addr;
    let hint = format!(
        "{a} speaks HTTP, not TLS: did you mean proxy_pass http://{a} (the backend has no TLS)?"
    );
    mismatch(&format!("proxy_pass https://{a}"), a, "tls", "http", &hint);
}

#[test]
fn uwsgi_pass_to_an_http_port_is_refused() {
    let app = AppServer::gunicorn(addr());
    let a = app.addr;
    let hint = format!(
        "{a} speaks HTTP, not uwsgi: did you mean proxy_pass http://{a}, or start uWSGI with \
         --socket instead of --http-socket?"
    );
    mismatch(&format!("uwsgi_pass {a}"), a, "uwsgi", "http", &hint);
}

#[test]
fn grpc_pass_to_an_http1_port_is_refused() {
    let app = AppServer::gunicorn(addr());
    let a = app.addr;
    let hint = format!("{a} speaks HTTP/1, not HTTP/2: did you mean proxy_pass http://{a}?");
    mismatch(&format!("grpc_pass grpc://{a}"), a, "http2", "http", &hint);
}

/// `check` with the change: exit 0, and the target's probe passed in its protocol.
fn passes(directive: &str, target: SocketAddr, protocol: &str) {
    let (site, _app) = site();
    site.add_location(directive);
    let run = site.sr.run(&["check", "--json"]);
    run.expect(0);
    let result = probe_result(&run, target);
    assert_eq!(result["status"], "ok", "{run}");
    assert_eq!(result["addresses"][0]["protocol"], protocol, "{run}");
}

#[test]
fn php_fpm_answers_the_fastcgi_probe() {
    let fpm = AppServer::php_fpm(addr());
    passes(&format!("fastcgi_pass {}", fpm.addr), fpm.addr, "fastcgi");
}

#[test]
fn gunicorn_answers_the_http_probe_and_the_change_goes_live() {
    let app = AppServer::gunicorn(addr());
    passes(&format!("proxy_pass http://{}", app.addr), app.addr, "http");
    let (site, _app) = site();
    site.add_location(&format!("proxy_pass http://{}", app.addr));
    site.sr.run(&["-y"]).expect(0);
    let (status, body) = http_get(site.listen, "site.test", "/new").expect("GET /new");
    assert_eq!(status, 200);
    assert!(body.contains("wsgi"), "{body}");
}

#[test]
fn uwsgi_without_the_ping_plugin_answers_the_uwsgi_probe() {
    let app = AppServer::uwsgi(addr());
    passes(&format!("uwsgi_pass {}", app.addr), app.addr, "uwsgi");
}

#[test]
fn a_tls_backend_answers_the_https_probe() {
    let tls = AppServer::tls(addr());
    passes(&format!("proxy_pass https://{}", tls.addr), tls.addr, "tls");
}

#[test]
fn a_grpc_server_answers_the_http2_probe() {
    let grpc = AppServer::grpc(addr());
    passes(
        &format!("grpc_pass grpc://{}", grpc.addr),
        grpc.addr,
        "http2",
    );
    // The checks of the shadow and of verification after the reload are gRPC calls the server
    // answers itself: the location is verified, not refused or rolled back for a reset GET.
    let (site, _app) = site();
    site.add_location(&format!("grpc_pass grpc://{}", grpc.addr));
    let run = site.sr.run(&["-y", "--json"]);
    run.expect(0);
    let report = run.json();
    assert_eq!(report["shadow"]["state"], "verified", "{run}");
    let checked = report["health"]["results"].to_string();
    assert!(checked.contains("/new"), "{run}");
    site.serves("app");
}

#[test]
fn the_tls_probe_sends_the_sni_nginx_would() {
    let tls = AppServer::tls(addr());
    // nginx's default: no SNI to an upstream named by IP, nor without proxy_ssl_server_name.
    passes(&format!("proxy_pass https://{}", tls.addr), tls.addr, "tls");
    assert!(tls.log().contains("SNI None"), "{}", tls.log());
    passes(
        &format!(
            "proxy_ssl_server_name on; proxy_ssl_name backend.test; proxy_pass https://{}",
            tls.addr
        ),
        tls.addr,
        "tls",
    );
    assert!(tls.log().contains("SNI backend.test"), "{}", tls.log());
}

/// Silence past the probe timeout is not a refusal: nginx waits its read timeout (60 s), and a
/// slow healthy backend answers within it.
#[test]
fn a_slow_healthy_backend_is_a_warning_and_the_change_goes_live() {
    let slow = SlowBackend::start(addr(), "slow");
    let (site, _app) = site();
    site.add_location(&format!("proxy_pass http://{}", slow.addr));
    let run = site.sr.run(&["-y", "--json", "--probe-timeout", "200ms"]);
    run.expect(0);
    let result = probe_result(&run, slow.addr);
    assert_eq!(result["status"], "no-reply", "{run}");
    assert_eq!(result["severity"], "warning", "{run}");
    assert!(hints(&result).contains("sent no reply"), "{run}");
    assert_eq!(
        http_get(site.listen, "site.test", "/new").expect("GET /new"),
        (200, "slow".into())
    );
}

/// nginx with the stream module and `stream_body` in `stream {}`, recorded with `init`.
fn stream_site(stream_body: &str) -> (TestNginx, SafeReload) {
    let nginx = TestNginx::builder().stream(stream_body).start();
    let sr = SafeReload::new(&nginx);
    sr.init();
    (nginx, sr)
}

/// Change `stream {}` from `stream_body` to `change` and apply it with `safe-reload -y --json`.
fn change_stream(site: &(TestNginx, SafeReload), stream_body: &str, change: &str) -> Run {
    let before = site.0.render("");
    let after = before.replace(
        &format!("stream {{\n{stream_body}\n}}"),
        &format!("stream {{\n{change}\n}}"),
    );
    assert_ne!(before, after, "the stream block is rewritten");
    std::fs::write(&site.0.conf, after).expect("write nginx.conf");
    site.1.run(&["-y", "--json"])
}

/// A UDP port free on `ip` right now.
fn free_udp_port(ip: std::net::IpAddr) -> u16 {
    let s = std::net::UdpSocket::bind((ip, 0)).expect("bind UDP port 0");
    s.local_addr().expect("local addr").port()
}

/// One datagram to `to` and its answer.
fn udp_exchange(to: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let client = std::net::UdpSocket::bind((to.ip(), 0))?;
    client.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
    client.send_to(payload, to)?;
    let mut buf = [0u8; 2048];
    let (n, _) = client.recv_from(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// Regression (#7): the target of a stream server that listens on `udp` only (and the
/// servers of an upstream only such servers use) was probed over TCP and refused ("refused
/// (111) nothing listens") though a UDP server was bound there. Nothing is sent to it now:
/// the kernel's table of bound UDP sockets says it receives datagrams, the change goes live,
/// and nginx relays a datagram to the server and its answer back.
#[test]
fn a_udp_stream_upstream_is_not_probed_over_tcp_and_the_change_goes_live() {
    let ip = unique_loopback();
    let direct = UdpEcho::start(SocketAddr::new(ip, 0));
    let pooled = UdpEcho::start(SocketAddr::new(ip, 0));
    let (a, b) = (
        SocketAddr::new(ip, free_udp_port(ip)),
        SocketAddr::new(ip, free_udp_port(ip)),
    );
    let change = format!(
        "upstream dns {{ server {}; }}\n\
         server {{ listen {a} udp; proxy_pass {}; proxy_responses 1; }}\n\
         server {{ listen {b} udp; proxy_pass dns; proxy_responses 1; }}",
        pooled.addr, direct.addr
    );
    let site = stream_site("");
    let run = change_stream(&site, "", &change);
    run.expect(0);
    for target in [direct.addr, pooled.addr] {
        let r = probe_result(&run, target);
        assert_eq!(r["status"], "ok", "{target}: {run}");
        assert_eq!(r["severity"], "ok", "{target}: {run}");
        assert_eq!(
            r["addresses"][0]["reply"], "a UDP socket is bound",
            "{target}: {run}"
        );
    }
    assert_eq!(
        udp_exchange(a, b"direct").expect("through nginx"),
        b"echo:direct"
    );
    assert_eq!(
        udp_exchange(b, b"pooled").expect("through nginx"),
        b"echo:pooled"
    );
}

/// A UDP target nothing is bound to on this machine is refused before the reload, with a
/// hint that says so in UDP's terms (no TCP listener is offered as the fix), and nginx keeps
/// running what it ran.
#[test]
fn a_udp_stream_upstream_nothing_is_bound_to_is_refused_before_the_reload() {
    let ip = unique_loopback();
    let echo = UdpEcho::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_udp_port(ip));
    let dead = SocketAddr::new(ip, free_udp_port(ip));
    let before = format!(
        "server {{ listen {listen} udp; proxy_pass {}; proxy_responses 1; }}",
        echo.addr
    );
    let after = format!("server {{ listen {listen} udp; proxy_pass {dead}; proxy_responses 1; }}");
    let site = stream_site(&before);
    let workers = site.0.worker_pids();
    let run = change_stream(&site, &before, &after);
    run.expect(1);
    assert!(
        run.json()["reload"].is_null(),
        "nginx must not be signalled: {run}"
    );
    let r = probe_result(&run, dead);
    assert_eq!(r["status"], "not-bound", "{run}");
    assert_eq!(r["severity"], "failure", "{run}");
    let hints = hints(&r);
    assert!(
        hints.contains(&format!("nothing on this machine is bound to UDP {dead}")),
        "{run}"
    );
    assert!(
        !hints.contains("listens on"),
        "no TCP listener is a cue: {run}"
    );
    assert_eq!(
        udp_exchange(listen, b"old").expect("through nginx"),
        b"echo:old"
    );
    assert_eq!(site.0.worker_pids(), workers, "the same workers");
}

/// Regression (findings F2): the backend of a stream server that listens on TCP and on `udp`
/// on one port (`listen P; listen P udp;`, a DNS proxy) was probed by a TCP connect only, so a
/// backend with no UDP socket went live and every datagram got nothing. It is looked up in the
/// table of bound UDP sockets too: a change to a TCP-only backend is refused before the reload,
/// and nginx goes on relaying both over TCP and over UDP to the backend it had.
#[test]
fn a_tcp_and_udp_stream_server_to_a_tcp_only_backend_is_refused_before_the_reload() {
    let ip = unique_loopback();
    let good_tcp = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let good = good_tcp.addr.expect("a TCP backend");
    let _good_udp = UdpEcho::start(good);
    let tcp_only_tcp = HttpBackend::start(SocketAddr::new(ip, 0), "tcp-only");
    let tcp_only = tcp_only_tcp.addr.expect("a TCP backend");
    let listen = SocketAddr::new(ip, free_port(ip));
    let server = |to: SocketAddr| {
        format!(
            "server {{ listen {listen}; listen {listen} udp; proxy_pass {to}; \
             proxy_responses 1; proxy_timeout 2s; }}"
        )
    };
    let before = server(good);
    let site = stream_site(&before);
    let workers = site.0.worker_pids();
    let run = change_stream(&site, &before, &server(tcp_only));
    run.expect(1);
    assert!(
        run.json()["reload"].is_null(),
        "nginx must not be signalled: {run}"
    );
    let r = probe_result(&run, tcp_only);
    assert_eq!(r["status"], "not-bound", "{run}");
    assert_eq!(r["severity"], "failure", "{run}");
    let statuses: Vec<&str> = (r["addresses"].as_array().expect("addresses").iter())
        .filter_map(|a| a["status"].as_str())
        .collect();
    assert_eq!(
        statuses,
        ["ok", "not-bound"],
        "connected, and no UDP socket: {run}"
    );
    assert!(
        hints(&r).contains(&format!(
            "nothing on this machine is bound to UDP {}",
            tcp_only
        )),
        "{run}"
    );
    assert_eq!(
        r["references"][0]["also_udp"], true,
        "the reference says datagrams reach it too: {run}"
    );
    assert_eq!(site.0.worker_pids(), workers, "the same workers");
    assert_eq!(
        udp_exchange(listen, b"old").expect("a datagram through nginx"),
        b"echo:old"
    );
    assert_eq!(
        http_get(listen, "good", "/").expect("TCP through nginx").0,
        200
    );
}

/// The same server to a backend bound on TCP and on UDP goes live, and nginx relays both.
#[test]
fn a_tcp_and_udp_stream_server_to_a_backend_on_both_goes_live() {
    let ip = unique_loopback();
    let old_tcp = HttpBackend::start(SocketAddr::new(ip, 0), "old");
    let old = old_tcp.addr.expect("a TCP backend");
    let _old_udp = UdpEcho::start(old);
    let new_tcp = HttpBackend::start(SocketAddr::new(ip, 0), "new");
    let new = new_tcp.addr.expect("a TCP backend");
    let _new_udp = UdpEcho::start(new);
    let listen = SocketAddr::new(ip, free_port(ip));
    let server = |to: SocketAddr| {
        format!(
            "server {{ listen {listen}; listen {listen} udp; proxy_pass {to}; \
             proxy_responses 1; proxy_timeout 2s; }}"
        )
    };
    let before = server(old);
    let site = stream_site(&before);
    let run = change_stream(&site, &before, &server(new));
    run.expect(0);
    let r = probe_result(&run, new);
    assert_eq!(r["status"], "ok", "{run}");
    let replies: Vec<&str> = (r["addresses"].as_array().expect("addresses").iter())
        .filter_map(|a| a["reply"].as_str())
        .collect();
    assert_eq!(replies, ["a UDP socket is bound"], "{run}");
    assert_eq!(
        udp_exchange(listen, b"new").expect("a datagram through nginx"),
        b"echo:new"
    );
    let (status, body) = http_get(listen, "new", "/").expect("TCP through nginx");
    assert_eq!((status, body.as_str()), (200, "new"), "{run}");
}

/// A server that closes the connection on `OPTIONS *` (a strict server or WAF) but serves its
/// pages: the probe asks `HEAD /` next and passes it, and the change goes live and is served,
/// where it used to be refused as a backend that accepts and closes.
#[test]
fn a_backend_that_drops_options_star_but_serves_pages_passes_the_probe() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind(addr()).expect("bind");
    let at = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.starts_with("OPTIONS *") {
                    return;
                }
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let body = if line.starts_with("HEAD") {
                    ""
                } else {
                    "strict"
                };
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\n{body}"
                );
            });
        }
    });
    passes(&format!("proxy_pass http://{at}"), at, "http");
    let (site, _app) = site();
    site.add_location(&format!("proxy_pass http://{at}"));
    site.sr.run(&["-y"]).expect(0);
    let (status, body) = http_get(site.listen, "site.test", "/new").expect("GET /new");
    assert_eq!((status, body.as_str()), (200, "strict"));
}

/// A stream server with `proxy_ssl on` re-encrypts to its backend: nginx speaks TLS to it as
/// to an `https://` one. Pointed at a plaintext backend, it is refused before the reload with
/// the mismatch named (every connection was reset after a connect-only probe passed it); at a
/// TLS backend the change goes live.
#[test]
fn a_stream_proxy_ssl_backend_gets_the_tls_probe() {
    let ip = unique_loopback();
    let plain = AppServer::gunicorn(SocketAddr::new(ip, free_port(ip)));
    let tls = AppServer::tls(SocketAddr::new(ip, free_port(ip)));
    let listen = SocketAddr::new(ip, free_port(ip));
    let to = |backend: SocketAddr| {
        format!("server {{ listen {listen}; proxy_ssl on; proxy_pass {backend}; }}")
    };
    let before = format!("server {{ listen {listen}; proxy_pass {}; }}", plain.addr);
    let site = stream_site(&before);
    let run = change_stream(&site, &before, &to(plain.addr));
    run.expect(1);
    assert!(
        run.json()["reload"].is_null(),
        "nginx must not be signalled: {run}"
    );
    let r = probe_result(&run, plain.addr);
    assert_eq!(r["severity"], "failure", "{run}");
    assert!(hints(&r).contains("speaks HTTP, not TLS"), "{run}");
    // Still the old server: a plain HTTP exchange through the stream listen.
    assert_eq!(
        http_get(listen, "x", "/")
            .expect("GET through the stream")
            .0
            / 100,
        2
    );

    let run = change_stream(&site, &before, &to(tls.addr));
    run.expect(0);
    let r = probe_result(&run, tls.addr);
    assert_eq!(
        (&r["status"], &r["addresses"][0]["protocol"]),
        (&"ok".into(), &"tls".into()),
        "{run}"
    );
}
