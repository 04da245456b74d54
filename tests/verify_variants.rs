//! A location that passes to another backend for another kind of request than a check's plain
//! GET, through the binary with a real nginx and real backends: a `map` (or an `if`) on a
//! cookie, a header or a query parameter is checked with a GET that carries it, so a change
//! that breaks that backend is refused; one on the method (a read/write split) or a
//! `limit_except POST` is said to be not verified, never "verified" by the GET.
//! Each checks what nginx serves afterwards.

mod support;

use std::net::SocketAddr;

use support::*;

/// nginx running `good` with it recorded as last-good, then `bad` written and reloaded (no
/// probe, so the shadow is what judges it): refused in the shadow, exit 1. The instance (keep
/// it: dropping it stops nginx), the tool and the run.
fn refused_in_the_shadow(good: &str, bad: &str) -> (TestNginx, SafeReload, Run) {
    let n = TestNginx::start(good);
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(bad);
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(1);
    assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
    (n, sr, run)
}

/// `GET /x` with one more header line.
fn get_with(listen: SocketAddr, header: &str) -> u16 {
    let req =
        format!("GET /x HTTP/1.1\r\nHost: site.test\r\n{header}\r\nConnection: close\r\n\r\n");
    exchange(listen, &req).expect("GET").0
}

/// A site whose `$pool` map (on `source`) sends one branch to the upstream `canary`; the
/// change points `canary` at a backend that answers 502.
struct Split {
    good: HttpBackend,
    bad: BadGatewayBackend,
    listen: SocketAddr,
    nginx: TestNginx,
}

impl Split {
    fn start(map: &str) -> Split {
        let ip = unique_loopback();
        let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
        let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
        let listen = SocketAddr::new(ip, free_port(ip));
        let nginx = TestNginx::start(&Split::http(
            map,
            listen,
            &good.host_port(),
            &good.host_port(),
        ));
        Split {
            good,
            bad,
            listen,
            nginx,
        }
    }

    fn http(map: &str, listen: SocketAddr, stable: &str, canary: &str) -> String {
        format!(
            "upstream stable {{ server {stable}; }}\nupstream canary {{ server {canary}; }}\n{map}\n\
             server {{ listen {listen}; server_name site.test;\n\
             location / {{ proxy_pass http://$pool; }} }}"
        )
    }

    fn break_canary(&self, map: &str) {
        let http = Split::http(
            map,
            self.listen,
            &self.good.host_port(),
            &self.bad.addr.to_string(),
        );
        self.nginx.write_http(&http);
    }
}

/// A cookie, a header and a query parameter that pick the canary: each is refused by the
/// shadow (it was "live and verified", every canary client 502), and production still
/// answers the canary's clients 200.
#[test]
fn a_map_on_a_cookie_header_or_query_parameter_is_checked_with_a_get_that_carries_it() {
    let cases = [
        (
            "map $cookie_canary $pool { default stable; 1 canary; }",
            "Cookie: canary=1",
            "/x",
        ),
        (
            "map $http_x_api_version $pool { default stable; 2 canary; }",
            "X-Api-Version: 2",
            "/x",
        ),
        (
            "map $arg_v $pool { default stable; 2 canary; }",
            "X-Unused: 1",
            "/x?v=2",
        ),
    ];
    for (map, header, path) in cases {
        let site = Split::start(map);
        let sr = SafeReload::new(&site.nginx);
        sr.init();
        site.break_canary(map);
        let run = sr.run(&["-y", "--json", "--no-probe"]);
        run.expect(1);
        assert_eq!(run.json()["shadow"]["state"], "refused", "{map}: {run}");
        assert!(run.stdout.contains("HTTP 502"), "{map}: {run}");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: site.test\r\n{header}\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            exchange(site.listen, &req).expect("GET").0,
            200,
            "{map}: the canary still answers"
        );
        assert_eq!(get_with(site.listen, "X-Plain: 1"), 200);
    }
}

/// An `if ($http_x_beta = on)` around its own `proxy_pass`: checked with that header.
#[test]
fn an_if_on_a_header_around_a_pass_is_checked_with_that_header() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let http = |beta: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ if ($http_x_beta = on) {{ proxy_pass http://{beta}; }}\n\
             proxy_pass http://{}; }} }}",
            good.host_port()
        )
    };
    let n = TestNginx::start(&http(&good.host_port()));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http(&bad.addr.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert!(run.stdout.contains("X-Beta: on"), "{run}");
    assert_eq!(get_with(listen, "X-Beta: on"), 200, "rolled back");
}

/// The coverage of `run`'s report, as text.
fn not_verified(run: &Run) -> String {
    run.json()["coverage"]["not_verified"].to_string()
}

/// A read/write split on `$request_method` (POST to `writer`), an `if ($request_method =
/// POST)` and a `limit_except POST { deny all; }`: no check sends POST (it could change data),
/// so a change to what only POST reaches is "not verified", naming why; the GET's 403 from
/// `limit_except` is nginx's own answer, not a pass. It was "live and verified" each time.
#[test]
fn what_only_other_methods_reach_is_not_verified_by_a_get() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let sites = [
        format!(
            "upstream reader {{ server {g}; }}\nupstream writer {{ server WRITER; }}\n\
             map $request_method $backend {{ default reader; POST writer; PUT writer; }}\n\
             server {{ listen {listen}; server_name site.test;\n\
             location / {{ proxy_pass http://$backend; }} }}"
        ),
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ if ($request_method = POST) {{ proxy_pass http://WRITER; }}\n\
             proxy_pass http://{g}; }} }}"
        ),
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location /api/ {{ limit_except POST {{ deny all; }} proxy_pass http://WRITER; }}\n\
             location / {{ proxy_pass http://{g}; }} }}"
        ),
    ];
    let whys = [
        "map $backend ($request_method: POST)",
        "if ($request_method = POST)",
        "limit_except POST",
    ];
    for (site, why) in sites.iter().zip(whys) {
        let n = TestNginx::start(&site.replace("WRITER", &g));
        let sr = SafeReload::new(&n);
        sr.init();
        n.write_http(&site.replace("WRITER", &bad.addr.to_string()));
        let run = sr.run(&["-y", "--json", "--no-probe"]);
        run.expect(0);
        assert!(!run.stdout.contains("live and verified"), "{why}: {run}");
        let nv = not_verified(&run);
        assert!(nv.contains(why) && nv.contains("only POST"), "{why}: {run}");
        // Live, and said so: GETs are served as before, POSTs get the broken backend.
        let path = if why.starts_with("limit_except") {
            "/api/x"
        } else {
            "/x"
        };
        assert_eq!(
            http_post(listen, "site.test", path).expect("POST").0,
            502,
            "{why}"
        );
        drop(n);
    }
}

/// A `rewrite` inside an `if` on the request, into an `internal` location on another backend:
/// `if ($arg_v = 2) { rewrite ^ /v2$uri last; }` in a location, and a server-level `if
/// ($is_bot) { rewrite ^ /prerender$uri last; }` on a `map $http_user_agent` (a prerender
/// layout). The change that points the internal location at a backend answering 502 is
/// refused by the shadow, with a check that meets the condition; with `--no-shadow` it is
/// rolled back. It went live, "not verified", and every such request got 502.
#[test]
fn a_rewrite_in_an_if_on_the_request_is_checked_with_a_request_that_meets_it() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let cases = [
        (
            format!(
                "server {{ listen {listen}; server_name site.test;\n\
                 location /x {{ if ($arg_v = 2) {{ rewrite ^ /v2$uri last; }}\n\
                 proxy_pass http://{g}; }}\n\
                 location /v2/ {{ internal; proxy_pass http://TARGET; }} }}"
            ),
            "GET /x?v=2 HTTP/1.1\r\nHost: site.test\r\n",
            "if ($arg_v = 2)",
        ),
        (
            format!(
                "map $http_user_agent $is_bot {{ default 0; ~*googlebot 1; }}\n\
                 server {{ listen {listen}; server_name site.test;\n\
                 if ($is_bot) {{ rewrite ^ /prerender$uri last; }}\n\
                 location / {{ proxy_pass http://{g}; }}\n\
                 location /prerender/ {{ internal; proxy_pass http://TARGET; }} }}"
            ),
            "GET /x HTTP/1.1\r\nHost: site.test\r\nUser-Agent: Googlebot/2.1\r\n",
            "if ($is_bot), map $is_bot ($http_user_agent: googlebot)",
        ),
    ];
    for (site, request, what) in cases {
        let get = || {
            let req = format!("{request}Connection: close\r\n\r\n");
            exchange(listen, &req).expect("GET").0
        };
        let n = TestNginx::start(&site.replace("TARGET", &g));
        let sr = SafeReload::new(&n);
        sr.init();
        // Healthy: the internal location is verified through the branch, not listed as
        // reached only by an X-Accel-Redirect.
        let run = sr.run(&["-y", "--json", "--no-probe", "--force"]);
        run.expect(0);
        assert!(!not_verified(&run).contains("internal"), "{what}: {run}");
        n.write_http(&site.replace("TARGET", &bad.addr.to_string()));
        let run = sr.run(&["-y", "--json", "--no-probe"]);
        run.expect(1);
        let report = run.json();
        assert_eq!(report["shadow"]["state"], "refused", "{what}: {run}");
        let check = (report["shadow"]["checks"].as_array().into_iter().flatten())
            .map(|c| &c["shadow"])
            .find(|c| c["what"].as_str().is_some_and(|w| w.ends_with(what)))
            .unwrap_or_else(|| panic!("no check of {what}: {run}"));
        assert_eq!(check["status"], 502, "{what}: {run}");
        assert_eq!(get(), 200, "{what}: refused, the branch still answers");

        let run = sr.run(&["-y", "--json", "--no-probe", "--no-shadow"]);
        run.expect(3);
        assert_eq!(get(), 200, "{what}: rolled back");
        drop(n);
    }
}

/// `limit_except GET { deny all; }` in front of a `map $request_method` whose POST branch goes
/// to another upstream: nginx answers every POST with 403 itself, so that branch reaches no
/// backend and is not listed as "not verified" on every change, forever.
#[test]
fn a_method_branch_that_limit_except_denies_to_all_is_not_listed_as_unverified() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let http = |header: &str| {
        format!(
            "upstream reader {{ server {g}; }}\nupstream writer {{ server {g}; }}\n\
             map $request_method $w {{ default reader; POST writer; }}\n\
             server {{ listen {listen}; server_name site.test;\n\
             location /w/ {{ limit_except GET {{ deny all; }} proxy_pass http://$w; }}\n\
             location / {{ add_header X-Rev {header}; proxy_pass http://{g}; }} }}"
        )
    };
    let n = TestNginx::start(&http("1"));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&http("2"));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let nv = not_verified(&run);
    assert!(!nv.contains("request_method"), "{run}");
    assert!(!nv.contains("location /w/"), "{run}");
    // What nginx serves: GET reaches the backend, POST is nginx's own 403.
    assert_eq!(http_get(listen, "site.test", "/w/x").expect("GET").0, 200);
    assert_eq!(http_post(listen, "site.test", "/w/x").expect("POST").0, 403);
}

/// Branches the plain GET does not take, through a real nginx: a cookie map whose `default`
/// is the canary (`"" stable; default canary;`) and a `set` inside `if ($cookie_beta)` are
/// checked with a cookie that takes them, so a change that breaks them is refused; a
/// read/write split whose writers are the map's `default`, and a backend only `if
/// ($prerender = 1)` passes to, are listed as not verified. Each was "live and verified".
#[test]
fn branches_a_plain_get_does_not_take_are_checked_or_said_to_be_unverified() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let refused = [
        (
            format!(
                "map $cookie_beta $pool {{ \"\" {g}; default TARGET; }}\n\
                 server {{ listen {listen}; server_name site.test;\n\
                 location / {{ proxy_pass http://$pool; }} }}"
            ),
            "Cookie: beta=safe-reload-check",
        ),
        (
            format!(
                "server {{ listen {listen}; server_name site.test;\n\
                 location / {{ set $be {g}; if ($cookie_beta) {{ set $be TARGET; }}\n\
                 proxy_pass http://$be; }} }}"
            ),
            "Cookie: beta=1",
        ),
    ];
    for (site, cookie) in &refused {
        let n = TestNginx::start(&site.replace("TARGET", &g));
        let sr = SafeReload::new(&n);
        sr.init();
        n.write_http(&site.replace("TARGET", &bad.addr.to_string()));
        let run = sr.run(&["-y", "--json", "--no-probe"]);
        run.expect(1);
        assert_eq!(run.json()["shadow"]["state"], "refused", "{cookie}: {run}");
        assert!(run.stdout.contains(cookie), "{cookie}: {run}");
        assert_eq!(
            get_with(listen, cookie),
            200,
            "{cookie}: refused, still served"
        );
        drop(n);
    }
    let unverified = [
        (
            format!(
                "map $request_method $rw {{ default http://TARGET; GET http://{g}; HEAD http://{g}; }}\n\
                 server {{ listen {listen}; server_name site.test;\n\
                 location / {{ proxy_pass $rw; }} }}"
            ),
            "map $rw ($request_method: POST, its default)",
            "POST / HTTP/1.1\r\nHost: site.test\r\nContent-Length: 0\r\n",
        ),
        (
            format!(
                "server {{ listen {listen}; server_name site.test;\n\
                 location / {{ proxy_pass http://{g}; }}\n\
                 location @pre {{ set $prerender 0;\n\
                 if ($http_user_agent ~* googlebot) {{ set $prerender 1; }}\n\
                 if ($prerender = 1) {{ proxy_pass http://TARGET; }} }}\n\
                 location /spa/ {{ try_files $uri @pre; }} }}"
            ),
            "if ($prerender = 1)",
            "GET /spa/x HTTP/1.1\r\nHost: site.test\r\nUser-Agent: Googlebot\r\n",
        ),
    ];
    for (site, why, request) in &unverified {
        let n = TestNginx::start(&site.replace("TARGET", &g));
        let sr = SafeReload::new(&n);
        sr.init();
        n.write_http(&site.replace("TARGET", &bad.addr.to_string()));
        let run = sr.run(&["-y", "--json", "--no-probe"]);
        run.expect(0);
        assert!(not_verified(&run).contains(why), "{why}: {run}");
        assert!(!run.stdout.contains("live and verified"), "{why}: {run}");
        // Live, and said to be unverified: that branch's clients get the broken backend.
        let req = format!("{request}Connection: close\r\n\r\n");
        assert_eq!(exchange(listen, &req).expect("request").0, 502, "{why}");
        drop(n);
    }
}

/// A server-level `if` that the checks' own request would meet: `map $http_user_agent
/// $not_browser { default 1; ~*mozilla 0; }` with `if ($not_browser) { rewrite ^
/// /prerender$uri last; }`. The plain check (User-Agent `safe-reload/...`) was rewritten to
/// the prerender backend, and its 200 was called the browsers' backend's: a change that broke
/// every browser went live. The checks now send a User-Agent that keeps them from the `if`
/// (`mozilla`), and the prerender branch gets its own check with the plain one.
#[test]
fn checks_avoid_a_server_level_if_their_own_request_would_meet() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let site = |browsers: &str, bots: &str| {
        format!(
            "map $http_user_agent $not_browser {{ default 1; \"~*mozilla\" 0; }}\n\
             server {{ listen {listen}; server_name bot.test;\n\
             if ($not_browser) {{ rewrite ^ /prerender$uri last; }}\n\
             location / {{ proxy_pass http://{browsers}; }}\n\
             location /prerender/ {{ internal; proxy_pass http://{bots}; }} }}"
        )
    };
    let browser = "GET /x HTTP/1.1\r\nHost: bot.test\r\nUser-Agent: Mozilla/5.0\r\n\
                   Connection: close\r\n\r\n";
    let bot = "GET /x HTTP/1.1\r\nHost: bot.test\r\nUser-Agent: curl\r\nConnection: close\r\n\r\n";
    let b = bad.addr.to_string();
    for (broken, request) in [(site(&b, &g), browser), (site(&g, &b), bot)] {
        let n = TestNginx::start(&site(&g, &g));
        let sr = SafeReload::new(&n);
        sr.init();
        n.write_http(&broken);
        let run = sr.run(&["-y", "--json", "--no-probe"]);
        run.expect(1);
        assert_eq!(run.json()["shadow"]["state"], "refused", "{run}");
        assert_eq!(
            exchange(listen, request).expect("GET").0,
            200,
            "refused: {run}"
        );
        drop(n);
    }
}

/// The "if, then a named location" idiom: `error_page 418 = @canary; if ($http_x_canary = 1)
/// { return 418; }`. nginx's own `return` sends every request with `X-Canary: 1` to
/// `@canary`: that location is checked with the header, so a change that breaks it is refused.
/// It was listed as reached only by a backend's 418, and a 502 there went live.
#[test]
fn a_named_location_an_if_returns_into_is_checked_with_what_meets_the_if() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let site = |canary: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             location / {{ error_page 418 = @canary; if ($http_x_canary = 1) {{ return 418; }}\n\
             proxy_pass http://{g}; }}\n\
             location @canary {{ proxy_pass http://{canary}; }} }}"
        )
    };
    let (_n, _sr, run) = refused_in_the_shadow(&site(&g), &site(&bad.addr.to_string()));
    assert!(run.stdout.contains("X-Canary: 1"), "{run}");
    assert_eq!(
        get_with(listen, "X-Canary: 1"),
        200,
        "refused: the canary still answers"
    );
}

/// A `geo` (or `split_clients`) that gives public clients another backend than loopback's:
/// checks come from loopback and take only loopback's branch, so a change to the public one
/// is listed as not verified, never "live and verified". (nginx is told the client's address
/// by `X-Forwarded-For`, as behind a load balancer: a header, nothing connects to it.)
#[test]
fn a_branch_by_the_clients_address_is_said_to_be_unverified() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let site = |public: &str| {
        format!(
            "geo $gpool {{ default {public}; 127.0.0.0/8 {g}; }}\n\
             server {{ listen {listen}; server_name site.test;\n\
             set_real_ip_from 127.0.0.0/8; real_ip_header X-Forwarded-For;\n\
             location / {{ proxy_pass http://$gpool; }} }}"
        )
    };
    let n = TestNginx::start(&site(&g));
    let sr = SafeReload::new(&n);
    sr.init();
    n.write_http(&site(&bad.addr.to_string()));
    let run = sr.run(&["-y", "--json", "--no-probe"]);
    run.expect(0);
    let nv = not_verified(&run);
    assert!(
        nv.contains("geo $gpool") && nv.contains("client's address"),
        "{run}"
    );
    assert_eq!(get_with(listen, "X-Plain: 1"), 200, "loopback's branch");
    assert_eq!(
        get_with(listen, "X-Forwarded-For: 203.0.113.5"),
        502,
        "the public branch, as said"
    );
}

/// A map of a request map's value (`map $http_x_canary $c1 { default 0; 1 1; }` then `map
/// $c1 $pool { 0 stable; 1 canary; }`): read as one map of the header, so the canary gets its
/// check with `X-Canary: 1`, and a change that breaks it is refused. It was "live and
/// verified".
#[test]
fn a_map_of_a_request_maps_value_is_checked_with_what_takes_it() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let site = |canary: &str| {
        format!(
            "map $http_x_canary $c1 {{ default 0; 1 1; }}\n\
             map $c1 $pool {{ 0 {g}; 1 {canary}; }}\n\
             server {{ listen {listen}; server_name site.test;\n\
             location / {{ proxy_pass http://$pool; }} }}"
        )
    };
    let (_n, _sr, run) = refused_in_the_shadow(&site(&g), &site(&bad.addr.to_string()));
    assert!(run.stdout.contains("X-Canary: 1"), "{run}");
    assert_eq!(
        get_with(listen, "X-Canary: 1"),
        200,
        "refused: the canary still answers"
    );
}

/// `if ($http_cookie ~* "beta=1") { rewrite ^ /beta$uri last; }`: a regex with no special
/// character looks for its text, which a `Cookie: beta=1` holds; the beta branch is checked
/// with it, and a change that breaks it is refused. It was "no value is derived from the
/// regex", and a 502 went live.
#[test]
fn a_regex_that_is_plain_text_is_met_by_that_text() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let site = |beta: &str| {
        format!(
            "server {{ listen {listen}; server_name site.test;\n\
             if ($http_cookie ~* \"beta=1\") {{ rewrite ^ /beta$uri last; }}\n\
             location / {{ proxy_pass http://{g}; }}\n\
             location /beta/ {{ internal; proxy_pass http://{beta}; }} }}"
        )
    };
    let (_n, _sr, _run) = refused_in_the_shadow(&site(&g), &site(&bad.addr.to_string()));
    assert_eq!(
        get_with(listen, "Cookie: beta=1"),
        200,
        "refused: beta still answers"
    );
}

/// `GET path` for site.test from the loopback address `from`: the status and body.
fn get_from(from: std::net::IpAddr, listen: SocketAddr, path: &str) -> (u16, String) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::new(from, 0).into()).expect("bind");
    (socket.connect_timeout(&listen.into(), std::time::Duration::from_secs(5))).expect("connect");
    let mut s = std::net::TcpStream::from(socket);
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let req = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut s, req.as_bytes()).expect("send");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).expect("read");
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// `split_clients "${remote_addr}x" $pool { 30% canary; * stable; }`: each share is checked
/// from a loopback address that nginx's MurmurHash2 puts in it, so a change that breaks the
/// canary share (30% of clients get 502) is refused. It was listed as not verified and went
/// live. nginx itself puts the address the check came from in the canary share.
#[test]
fn each_share_of_a_split_on_the_clients_address_is_checked_from_an_address_in_it() {
    let ip = unique_loopback();
    let good = HttpBackend::start(SocketAddr::new(ip, 0), "good");
    let bad = BadGatewayBackend::start(SocketAddr::new(ip, 0));
    let listen = SocketAddr::new(ip, free_port(ip));
    let g = good.host_port();
    let site = |canary: &str| {
        format!(
            "upstream canary {{ server {canary}; }}\nupstream stable {{ server {g}; }}\n\
             split_clients \"${{remote_addr}}x\" $pool {{ 30% canary; * stable; }}\n\
             server {{ listen {listen}; server_name site.test;\n\
             location = /which {{ return 200 \"$pool\"; }}\n\
             location / {{ proxy_pass http://$pool; }} }}"
        )
    };
    let (_n, sr, run) = refused_in_the_shadow(&site(&g), &site(&bad.addr.to_string()));
    assert!(run.stdout.contains("split_clients $pool (canary)"), "{run}");
    let from = (run.stdout.split(", from ").nth(1))
        .and_then(|t| t.split([')', ',']).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the canary check's address: {run}"));
    assert_eq!(get_from(from, listen, "/which"), (200, "canary".into()));
    assert_eq!(
        get_from(from, listen, "/x"),
        (200, "good".into()),
        "refused"
    );

    let run = sr.run(&["-y", "--no-probe", "--no-shadow"]);
    run.expect(3);
    assert_eq!(
        get_from(from, listen, "/x"),
        (200, "good".into()),
        "rolled back"
    );
}
