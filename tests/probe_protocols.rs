//! Protocol probes through the binary with a real nginx and real application servers: a change
//! that points a directive at a backend speaking another protocol (or one that accepts and
//! closes) is refused before the reload, the running workers stay, and a client looping
//! through the site the whole time sees nothing but 200. The healthy case of each protocol
//! passes: php-fpm, gunicorn, uWSGI, an HTTPS server and a gRPC server.

mod support;

use std::net::SocketAddr;

use support::*;

/// A running site (`/` proxied to a healthy HTTP backend) with a baseline, and a change that
/// adds `location /new { DIRECTIVE; }`.
struct Site {
    nginx: TestNginx,
    sr: SafeReload,
    listen: SocketAddr,
    _app: HttpBackend,
}

impl Site {
    fn start() -> Site {
        let ip = unique_loopback();
        let app = HttpBackend::start(SocketAddr::new(ip, 0), "app");
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&Site::body(listen, &app, None));
        let sr = SafeReload::new(&nginx);
        sr.init();
        Site {
            nginx,
            sr,
            listen,
            _app: app,
        }
    }

    fn body(listen: SocketAddr, app: &HttpBackend, new: Option<&str>) -> String {
        let extra = new
            .map(|d| format!("location /new {{ {d}; }}"))
            .unwrap_or_default();
        format!(
            "server {{ listen {listen}; server_name site.test; \
             location / {{ proxy_pass http://{}; }} {extra} }}",
            app.host_port()
        )
    }

    fn change(&self, directive: &str) {
        self.nginx
            .write_http(&Site::body(self.listen, &self._app, Some(directive)));
    }
}

/// Apply `directive` with `safe-reload -y` while a client loops through the site: refused
/// before the reload (exit 1), same workers, every client request answered 200. Returns the
/// probe result of `target` and the run's text.
fn refused(directive: &str, target: SocketAddr) -> (serde_json::Value, String) {
    let site = Site::start();
    let workers = site.nginx.ready_workers();
    let clients = ClientLoop::start(site.listen, "site.test", "/");
    site.change(directive);
    let run = site.sr.run(&["-y", "--json"]);
    let answers = clients.finish();
    run.expect(1);
    assert_eq!(run.outcome(), "refused", "{run}");
    assert_eq!(
        site.nginx.ready_workers(),
        workers,
        "nginx was not reloaded"
    );
    assert!(!answers.is_empty(), "the client loop made no request");
    let bad: Vec<_> = answers.iter().filter(|a| **a != Ok(200)).collect();
    assert!(
        bad.is_empty(),
        "{} of {} client requests were not 200: {bad:?}",
        bad.len(),
        answers.len()
    );
    assert_eq!(
        http_get(site.listen, "site.test", "/").expect("GET"),
        (200, "app".into())
    );
    let report = run.json();
    let result = report["probe"]["results"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["target"] == target.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no probe result for {target}:\n{run}"));
    assert_eq!(result["severity"], "failure", "{result}");
    (result, format!("{run}"))
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
    let (r, run) = refused(&format!("fastcgi_pass {}", app.addr), app.addr);
    assert_eq!(r["status"], "wrong-protocol", "{run}");
    assert_eq!(r["addresses"][0]["protocol"], "fastcgi", "{run}");
    assert_eq!(r["addresses"][0]["speaks"], "http", "{run}");
    let h = hints(&r);
    assert!(h.contains("speaks HTTP"), "{run}");
    assert!(h.contains("not FastCGI"), "{run}");
    assert!(
        h.contains(&format!("did you mean `proxy_pass http://{}`?", app.addr)),
        "{run}"
    );
}

#[test]
fn proxy_pass_http_to_a_tls_port_is_refused() {
    let tls = AppServer::tls(addr());
    let (r, run) = refused(&format!("proxy_pass http://{}", tls.addr), tls.addr);
    assert_eq!(r["status"], "wrong-protocol", "{run}");
    assert_eq!(r["addresses"][0]["speaks"], "tls", "{run}");
    assert!(
        hints(&r).contains(&format!("proxy_pass https://{}", tls.addr)),
        "{run}"
    );
}

#[test]
fn proxy_pass_https_to_plain_http_is_refused() {
    let app = AppServer::gunicorn(addr());
    let (r, run) = refused(&format!("proxy_pass https://{}", app.addr), app.addr);
    assert_eq!(r["status"], "wrong-protocol", "{run}");
    assert_eq!(r["addresses"][0]["protocol"], "tls", "{run}");
    assert_eq!(r["addresses"][0]["speaks"], "http", "{run}");
    assert!(hints(&r).contains("the backend has no TLS"), "{run}");
}

#[test]
fn uwsgi_pass_to_an_http_port_is_refused() {
    let app = AppServer::gunicorn(addr());
    let (r, run) = refused(&format!("uwsgi_pass {}", app.addr), app.addr);
    assert_eq!(r["status"], "wrong-protocol", "{run}");
    assert_eq!(r["addresses"][0]["protocol"], "uwsgi", "{run}");
    assert!(
        hints(&r).contains("--socket instead of --http-socket"),
        "{run}"
    );
}

/// `check` with the change: exit 0, and the target's probe passed in its protocol.
fn passes(directive: &str, target: SocketAddr, protocol: &str) {
    let site = Site::start();
    site.change(directive);
    let run = site.sr.run(&["check", "--json"]);
    run.expect(0);
    let report = run.json();
    let result = report["probe"]["results"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["target"] == target.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no probe result for {target}:\n{run}"));
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
    let site = Site::start();
    site.change(&format!("proxy_pass http://{}", app.addr));
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
    let site = Site::start();
    site.change(&format!("proxy_pass http://{}", slow.addr));
    let run = site.sr.run(&["-y", "--json", "--probe-timeout", "200ms"]);
    run.expect(0);
    let report = run.json();
    let result = report["probe"]["results"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["target"] == slow.addr.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no probe result:\n{run}"));
    assert_eq!(result["status"], "no-reply", "{run}");
    assert_eq!(result["severity"], "warning", "{run}");
    assert!(hints(&result).contains("sent no reply"), "{run}");
    assert_eq!(
        http_get(site.listen, "site.test", "/new").expect("GET /new"),
        (200, "slow".into())
    );
}
