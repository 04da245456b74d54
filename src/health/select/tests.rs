use super::*;
use crate::conf::{load, servers, LoadOptions};
use crate::impact::{self, Touched};

/// The servers of an `http {}` body, and an impact naming every one of them.
fn servers_of(http: &str) -> (tempfile::TempDir, Vec<Server>, Impact) {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = dir.path().join("nginx.conf");
    std::fs::write(&main, format!("events {{}}\nhttp {{\n{http}\n}}\n")).expect("write");
    let config = load(&main, &LoadOptions::default()).expect("loads");
    let servers = servers::extract(&config);
    let impact = Impact::everything(&impact::prints(&config, &servers));
    (dir, servers, impact)
}

fn plan(http: &str) -> Plan {
    let (dir, servers, impact) = servers_of(http);
    focused_checks(&servers, &impact, dir.path())
}

fn shown(plan: &Plan) -> Vec<String> {
    (plan.checks.iter())
        .map(|c| {
            format!(
                "{} {} {}{}",
                c.connect,
                c.host,
                c.path,
                if c.tls { " tls" } else { "" }
            )
        })
        .collect()
}

#[test]
fn every_name_location_and_listen_of_an_affected_server() {
    let p = plan(
        "server { listen 127.0.0.1:8080; listen [::1]:8443 ssl; server_name .a.test *.w.test ~^re ~^[^a-z0-9];\n\
         location /api/ { proxy_pass http://u; }\n location = /x { proxy_pass http://u; }\n\
         location ~ \\.php$ { fastcgi_pass unix:/run/php.sock; }\n\
         location ~ (?<x>a)b { proxy_pass http://u; }\n location ~ ^[^/] { proxy_pass http://u; }\n\
         location / { try_files $uri @app; }\n location @app { proxy_pass http://u; }\n\
         location @orphan { proxy_pass http://u; }\n}",
    );
    assert_eq!(
        shown(&p),
        [
            // One per listen before a second on either.
            "127.0.0.1:8080 a.test /api/",
            "[::1]:8443 a.test /api/ tls",
            "127.0.0.1:8080 a.test /x",
            "[::1]:8443 safe-reload-check.w.test /api/ tls",
            "127.0.0.1:8080 a.test /safe-reload-check.php",
            "[::1]:8443 re /api/ tls",
            "127.0.0.1:8080 a.test /safe-reload-check/ab",
            "127.0.0.1:8080 a.test /safe-reload-check",
            "127.0.0.1:8080 safe-reload-check.w.test /api/",
            "127.0.0.1:8080 re /api/",
        ]
    );
    let skipped: Vec<String> = (p.not_checked.iter())
        .map(|u| format!("{} | {}", u.what, u.why))
        .collect();
    assert_eq!(
        skipped,
        [
            "server_name ~^[^a-z0-9] | a regex server_name no Host is derived from",
            "location ~ ^[^/] | no matching path could be derived from the regex",
            "location @orphan | no try_files or error_page leads here",
        ]
    );
    assert_eq!(p.checked.len(), 1);
    assert_eq!(p.checked[0].server, "a.test");
}

#[test]
fn fallbacks_are_checked_only_where_a_request_makes_nginx_take_them() {
    let p = plan(
        "server { listen 127.0.0.1:8080; server_name a.test; root /nonexistent;\n\
         location /static/ { error_page 404 = @files; }\n location @files { proxy_pass http://f; }\n\
         location /dl/ { try_files $uri /protected/$uri; }\n\
         location /protected/ { internal; proxy_pass http://p; }\n\
         location / { proxy_pass http://u; proxy_intercept_errors on; \
         error_page 404 = @missing; error_page 502 = /sorry; }\n\
         location @missing { proxy_pass http://m; }\n location /sorry { proxy_pass http://s; }\n}",
    );
    let paths: Vec<(&str, &str)> = (p.checks.iter())
        .map(|c| (c.what.as_str(), c.path.as_str()))
        .collect();
    assert!(paths.contains(&("location @files", "/static/safe-reload-check")));
    assert!(paths.contains(&("location /protected/", "/dl/safe-reload-check")));
    let skipped: Vec<String> = (p.not_checked.iter())
        .map(|u| format!("{} | {}", u.what, u.why))
        .collect();
    assert!(skipped.iter().any(
        |s| s.starts_with("location / backend http://u | error_page 502 = /sorry (nginx.conf:")
    ));
    assert!(skipped.iter().any(|s| s.starts_with(
        "location @missing | reached only when the backend of location / answers 404"
    )));
}

#[test]
fn a_wildcard_listen_is_reached_where_no_specific_listen_claims_the_port() {
    let p = plan(
        "server { listen 8080; server_name any.test; location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8080; server_name one.test; location / { proxy_pass http://u; } }",
    );
    assert_eq!(
        shown(&p),
        ["127.0.0.2:8080 any.test /", "127.0.0.1:8080 one.test /"]
    );
}

#[test]
fn ssl_on_proxy_protocol_and_plaintext_http2() {
    let p = plan(
        "server { listen 127.0.0.1:8443; ssl on; server_name t.test; location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8081 proxy_protocol; server_name p.test; location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8082 http2; server_name h.test; location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8083 http2 proxy_protocol; server_name hp.test; location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8444 ssl http2; server_name ht.test; location / { proxy_pass http://u; } }",
    );
    assert_eq!(
        shown(&p),
        [
            "127.0.0.1:8443 t.test / tls",
            "127.0.0.1:8081 p.test /",
            "127.0.0.1:8082 h.test /",
            "127.0.0.1:8083 hp.test /",
            "127.0.0.1:8444 ht.test / tls",
        ]
    );
    let flags: Vec<(bool, bool)> = (p.checks.iter())
        .map(|c| (c.proxy_protocol, c.http2))
        .collect();
    // Over TLS, ALPN lets HTTP/1.1 through: only the plaintext listens get prior knowledge.
    assert_eq!(
        flags,
        [
            (false, false),
            (true, false),
            (false, true),
            (true, true),
            (false, false)
        ]
    );
    assert_eq!(p.servers_not_checked(), 0, "{:?}", p.not_checked);
}

#[test]
fn auth_and_return_are_gates_of_the_location() {
    let p = plan(
        "server { listen 127.0.0.1:80; server_name g.test; auth_basic \"x\";\n\
         location / { proxy_pass http://u; }\n\
         location /open/ { auth_basic off; if ($http_x = \"\") { return 444; } proxy_pass http://u; } }",
    );
    assert_eq!(
        p.checks[0].gate,
        Gate {
            auth: true,
            returns: vec![],
            ..Gate::default()
        }
    );
    assert_eq!(
        p.checks[1].gate,
        Gate {
            auth: false,
            returns: vec![444],
            ..Gate::default()
        }
    );
}

#[test]
fn an_internal_auth_request_location_is_checked_through_the_locations_that_ask_it() {
    let p = plan(
        "server { listen 127.0.0.1:80; server_name a.test;\n\
         location = /auth { internal; proxy_pass http://auth; }\n\
         location / { auth_request /auth; proxy_pass http://app; }\n\
         location /files/ { auth_request /auth; root /srv; }\n\
         location /open/ { auth_request off; root /srv; }\n\
         location /gone/ { auth_request /nowhere; root /srv; }\n\
         location = /push { internal; proxy_pass http://push; } }",
    );
    let paths: Vec<(&str, Option<&str>)> = (p.checks.iter())
        .map(|c| (c.path.as_str(), c.upstream.as_deref()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/", Some("http://app")),
            ("/files/", Some("http://auth")),
            // The subrequest for /nowhere lands on `location /`, as nginx picks it.
            ("/gone/", Some("http://app"))
        ],
        "never /auth itself: nginx answers 404 to a request of an internal location"
    );
    // Behind `proxy_pass` a 401 is nginx's (the app was not reached); with only the
    // subrequest, it is the auth backend's own answer.
    let gated: Vec<bool> = p.checks.iter().map(|c| c.gate.auth).collect();
    assert_eq!(gated, [true, false, false]);
    let skipped: Vec<&str> = p.not_checked.iter().map(|u| u.what.as_str()).collect();
    assert_eq!(skipped, ["location = /push"], "no subrequest asks that one");
}

#[test]
fn the_default_route_is_checked_where_the_change_makes_a_server_the_default() {
    let (dir, servers, mut impact) = servers_of(
        "server { listen 127.0.0.1:8080; server_name new.test; location /app/ { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8080; server_name a.test; location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8081; server_name d.test; location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8081; server_name ~.; location / { proxy_pass http://u; } }",
    );
    for (listen, to) in [("127.0.0.1:8080", 0), ("127.0.0.1:8081", 2)] {
        impact.default_changes.push(crate::impact::DefaultChange {
            listen: listen.into(),
            from: "old.test (old.conf:1)".into(),
            to: "x".into(),
            to_id: ServerId::of(&servers[to]),
        });
    }
    let p = focused_checks(&servers, &impact, dir.path());
    assert_eq!(
        shown(&p),
        [
            "127.0.0.1:8080 safe-reload-check.invalid /app/",
            "127.0.0.1:8080 a.test /",
            "127.0.0.1:8081 d.test /",
            "127.0.0.1:8081 a /",
            "127.0.0.1:8080 new.test /app/",
        ]
    );
    assert_eq!(
        p.checks[0].what,
        "location /app/, default server of 127.0.0.1:8080"
    );
    // A regex name that takes every Host leaves no Host for the default route.
    let skipped: Vec<&str> = p.not_checked.iter().map(|u| u.what.as_str()).collect();
    assert_eq!(skipped, ["default route of 127.0.0.1:8081"]);
}

#[test]
fn thousands_of_affected_servers_are_bounded_spread_and_counted() {
    let many: String = (0..3000)
        .map(|i| format!("server {{ listen 127.0.0.1:80; server_name s{i}.test; location / {{ proxy_pass http://u; }} location /b/ {{ proxy_pass http://u; }} }}\n"))
        .collect();
    let p = plan(&many);
    assert_eq!(p.checks.len(), MAX_CHECKS);
    assert_eq!(p.checked.len(), MAX_CHECKS);
    assert_eq!(p.servers_not_checked(), 3000 - MAX_CHECKS);
    // The spread reaches across the whole configuration.
    assert_eq!(p.checks[0].host, "s0.test");
    assert!(
        p.checks.last().unwrap().host.starts_with("s29"),
        "{}",
        p.checks.last().unwrap().host
    );
    // A few servers: every check of each.
    let few: String = (0..3)
        .map(|i| format!("server {{ listen 127.0.0.1:80; server_name s{i}.test; location / {{ proxy_pass http://u; }} location /b/ {{ proxy_pass http://u; }} }}\n"))
        .collect();
    assert_eq!(plan(&few).checks.len(), 6);
}

/// 400 servers over three shared backends and one on a backend of its own, at a position
/// the even spread skips: over the bound, that server is still checked.
#[test]
fn over_the_bound_every_backend_gets_a_check_before_the_spread_fills_the_rest() {
    let many: String = (0..400)
        .map(|i| {
            let to = if i == 5 {
                "127.0.0.1:9104".to_string()
            } else {
                format!("127.0.0.1:{}", 9100 + i % 3)
            };
            format!("server {{ listen 127.0.0.1:80; server_name g{i}.test; location / {{ proxy_pass http://{to}; }} }}\n")
        })
        .collect();
    let p = plan(&many);
    assert_eq!(p.checks.len(), MAX_CHECKS);
    let hosts: Vec<&str> = p.checks.iter().map(|c| c.host.as_str()).collect();
    assert!(hosts.contains(&"g5.test"), "{hosts:?}");
    // The spread still reaches across the whole configuration.
    assert!(hosts.iter().any(|h| h.starts_with("g39")), "{hosts:?}");
}

/// A snippet every one of 320 servers includes changed, and one server's own block too: the
/// server with a line of its own changed (s5, which the even spread skips) is checked.
#[test]
fn over_the_bound_a_server_with_a_change_of_its_own_goes_before_the_broad_change() {
    let many: String = (0..320)
        .map(|i| format!("server {{ listen 127.0.0.1:80; server_name s{i}.test; location / {{ proxy_pass http://u; }} }}\n"))
        .collect();
    let (dir, servers, mut impact) = servers_of(&many);
    let reason = |file: &str, line: u32| crate::impact::Reason {
        what: "server block".into(),
        file: file.into(),
        line,
    };
    for a in impact.affected.iter_mut() {
        a.touched = Touched::Server;
        a.reasons = vec![reason("snippets/proxy.conf", 4)];
        if a.label == "s5.test" {
            a.reasons.push(reason("nginx.conf", 6));
        }
    }
    let p = focused_checks(&servers, &impact, dir.path());
    assert_eq!(p.checks.len(), MAX_CHECKS);
    let hosts: Vec<&str> = p.checks.iter().map(|c| c.host.as_str()).collect();
    assert!(hosts.contains(&"s5.test"), "{hosts:?}");
    assert!(
        hosts.iter().any(|h| h.starts_with("s31")),
        "still spread: {hosts:?}"
    );
}

#[test]
fn what_the_change_reaches_directly_is_checked_first_when_not_all_fits() {
    let many: String = (0..300)
        .map(|i| format!("server {{ listen 127.0.0.1:80; server_name s{i}.test; location / {{ proxy_pass http://u; }} location /b/ {{ proxy_pass http://u{i}; }} }}\n"))
        .collect();
    let (dir, servers, mut impact) = servers_of(&many);
    for a in impact.affected.iter_mut() {
        a.touched = match a.label.as_str() {
            "s299.test" => Touched::Locations(vec!["/b/".into()]),
            _ => Touched::Inherited,
        };
    }
    let p = focused_checks(&servers, &impact, dir.path());
    assert_eq!(p.checks.len(), MAX_CHECKS);
    assert_eq!(p.servers_not_checked(), 300 - MAX_CHECKS, "still said");
    // An even spread alone leaves the last server out; the one the change touched goes in,
    // with the location it touched as its one check.
    let mine: Vec<&str> = (p.checks.iter())
        .filter(|c| c.host == "s299.test")
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(mine, ["/b/"]);

    let locations: String = (0..300)
        .map(|i| format!("location /l{i}/ {{ proxy_pass http://u; }}\n"))
        .collect();
    let (dir, servers, mut impact) = servers_of(&format!(
        "server {{ listen 127.0.0.1:80; server_name one.test; {locations} }}"
    ));
    impact.affected[0].touched = Touched::Locations(vec!["/l299/".into()]);
    let p = focused_checks(&servers, &impact, dir.path());
    assert_eq!(p.checks.len(), MAX_CHECKS);
    assert_eq!(p.checks[0].path, "/l299/");
    assert_eq!(p.checks[1].path, "/l0/");
    assert_eq!(
        p.not_checked.len(),
        300 - MAX_CHECKS,
        "the others over the bound are said"
    );
}

#[test]
fn a_unix_listen_is_checked_over_its_socket_and_an_unreachable_server_says_why() {
    let p = plan(
        "server { listen unix:/run/site.sock; server_name ux.test; location / { proxy_pass http://u; } }\n\
         server { listen unix:/run/bare.sock; location / { proxy_pass http://u; } }\n\
         server { listen 192.0.2.7:80; server_name far.test; location / { proxy_pass http://u; } }",
    );
    let via: Vec<(String, &str)> = (p.checks.iter())
        .map(|c| (c.via(), c.host.as_str()))
        .collect();
    assert_eq!(
        via,
        [
            ("unix:/run/site.sock".to_string(), "ux.test"),
            ("unix:/run/bare.sock".to_string(), "localhost")
        ]
    );
    assert_eq!(p.checks[0].url, "http://ux.test/ (via unix:/run/site.sock)");
    // The reason is said in full where it is shown alone (the headline under -q).
    let whole = (p.not_checked.iter().find(|u| u.what == "server")).expect("far.test");
    assert_eq!(
        whole.why,
        "no request is made to it (listen 192.0.2.7:80: 192.0.2.7 is not an address of this machine)"
    );
}

#[test]
fn a_regex_location_is_checked_on_a_branch_no_earlier_regex_takes() {
    let p = plan(
        "server { listen 127.0.0.1:8080; server_name a.test;\n\
         location ~ /v1/ { proxy_pass http://v1; }\n\
         location ~ ^/api/(v1|v2)/ { proxy_pass http://api; }\n\
         location ~ ^/(x|y)/ { proxy_pass http://u; }\n location ~ ^/ { proxy_pass http://u; }\n}",
    );
    assert_eq!(
        shown(&p),
        [
            "127.0.0.1:8080 a.test /safe-reload-check/v1/",
            "127.0.0.1:8080 a.test /api/v2/",
            "127.0.0.1:8080 a.test /x/",
            "127.0.0.1:8080 a.test /",
        ]
    );
}

#[test]
fn a_regex_server_name_is_checked_on_a_host_nginx_gives_it() {
    let p = plan(
        "server { listen 127.0.0.1:8080; server_name ~^(?<tenant>[a-z]+)\\.shop\\.test$;\n\
         location / { proxy_pass http://u; } }\n\
         server { listen 127.0.0.1:8080; server_name a.x.test; location / { proxy_pass http://v; } }\n\
         server { listen 127.0.0.1:8080; server_name ~^(a|b)\\.x\\.test$ ~^www\\.; location / { proxy_pass http://w; } }",
    );
    assert_eq!(
        shown(&p),
        [
            "127.0.0.1:8080 a.shop.test /",
            "127.0.0.1:8080 a.x.test /",
            "127.0.0.1:8080 b.x.test /",
            "127.0.0.1:8080 www.safe-reload-check /",
        ]
    );
    assert!(p.not_checked.is_empty(), "{:?}", p.not_checked);
    // Where an exact name of another server takes every Host derived from it, none is sent.
    let p = plan(
        "server { listen 127.0.0.1:8080; server_name a.x.test; location / { proxy_pass http://v; } }\n\
         server { listen 127.0.0.1:8080; server_name ~^a\\.x\\.test$; location / { proxy_pass http://w; } }",
    );
    let skipped: Vec<String> = (p.not_checked.iter())
        .map(|u| format!("{} | {}", u.what, u.why))
        .collect();
    assert_eq!(
        skipped[0],
        "server_name ~^a\\.x\\.test$ | a.x.test, derived from it, is answered by another \
         server's name"
    );
    assert!(skipped
        .last()
        .is_some_and(|s| s.starts_with("server | no request is made to it")));
}

/// A `rewrite` in an `if` on the request is checked by a request that meets it, on the
/// location it lands on; a negated condition is said to be unchecked, with why.
#[test]
fn a_rewrite_in_an_if_on_the_request_is_checked_with_what_meets_it() {
    let p = plan(
        "map $http_user_agent $is_bot { default 0; ~*googlebot 1; }\n\
         server { listen 127.0.0.1:8080; server_name a.test;\n\
         if ($is_bot) { rewrite ^ /prerender$uri last; }\n\
         location /x { if ($arg_v = 2) { rewrite ^ /v2$uri last; }\n\
         if ($arg_w != 1) { rewrite ^ /v2$uri last; }\n\
         proxy_pass http://u; }\n\
         location /v2/ { internal; proxy_pass http://v2; }\n\
         location /prerender/ { internal; proxy_pass http://pre; } }",
    );
    let checks: Vec<String> = (p.checks.iter())
        .map(|c| {
            format!(
                "{} {} {:?} | {}",
                c.path,
                c.upstream.as_deref().unwrap_or(""),
                c.headers,
                c.what
            )
        })
        .collect();
    assert!(
        checks
            .iter()
            .any(|c| c.starts_with("/x?v=2 http://v2 [] | location /x, rewritten to /v2/x")),
        "{checks:#?}"
    );
    assert!(
        checks.iter().any(
            |c| c.contains("http://pre [(\"User-Agent\", \"googlebot\")]")
                && c.ends_with("if ($is_bot), map $is_bot ($http_user_agent: googlebot)")
        ),
        "{checks:#?}"
    );
    let skipped: Vec<String> = (p.not_checked.iter())
        .map(|u| format!("{} | {}", u.what, u.why))
        .collect();
    assert!(
        !skipped.iter().any(|s| s.contains("internal")),
        "{skipped:#?}"
    );
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("if ($arg_w != 1) | a negated condition")),
        "{skipped:#?}"
    );
}

/// A method branch the location's `limit_except` denies to everyone never reaches the
/// backend: nothing to verify, so nothing is listed. One it lets some clients send is.
#[test]
fn a_method_branch_limit_except_denies_to_all_is_not_listed() {
    let listed = |limit: &str| -> Vec<String> {
        let p = plan(&format!(
            "map $request_method $w {{ default reader; POST writer; }}\n\
             server {{ listen 127.0.0.1:8080; server_name a.test;\n\
             location /w/ {{ limit_except GET {{ {limit} }} proxy_pass http://$w; }} }}"
        ));
        assert_eq!(shown(&p), ["127.0.0.1:8080 a.test /w/"]);
        (p.not_checked.iter()).map(|u| u.what.clone()).collect()
    };
    assert!(listed("deny all;").is_empty());
    assert_eq!(
        listed("allow 127.0.0.1; deny all;"),
        ["location /w/, map $w ($request_method: POST)"]
    );
}

/// Branches a plain GET does not take, each checked with what takes it or listed with why:
/// a map's `default` (a read/write split written `{ default writers; GET readers; }`, a
/// canary on `"" stable; default canary;`), a `set` inside an `if` on a cookie, a
/// `limit_except` with a backend of its own, and a backend only an `if` on something else
/// than the request passes to.
#[test]
fn branches_a_plain_get_does_not_take_are_checked_or_listed() {
    let p = plan(
        "map $request_method $rw { default http://w; GET http://r; HEAD http://r; }\n\
         map $http_x_canary $cpool { \"\" http://stable; default http://canary; }\n\
         server { listen 127.0.0.1:8080; server_name a.test;\n\
         location /rw/ { proxy_pass $rw; }\n\
         location /c/ { proxy_pass $cpool; }\n\
         location /s/ { set $be b1; if ($cookie_beta) { set $be b2; } proxy_pass http://$be; }\n\
         location /le/ { proxy_pass http://r; limit_except GET HEAD { proxy_pass http://w; } }\n\
         location @pre { set $prerender 0; if ($http_user_agent ~* bot) { set $prerender 1; }\n\
         if ($prerender = 1) { proxy_pass http://pre; } }\n\
         location / { try_files $uri @pre; } }",
    );
    let checks: Vec<String> = (p.checks.iter())
        .map(|c| format!("{} {:?}", c.path, c.headers))
        .collect();
    assert!(
        checks.contains(&"/c/ [(\"X-Canary\", \"safe-reload-check\")]".to_string()),
        "{checks:#?}"
    );
    assert!(
        checks.contains(&"/s/ [(\"Cookie\", \"beta=1\")]".to_string()),
        "{checks:#?}"
    );
    let skipped: Vec<String> = (p.not_checked.iter())
        .map(|u| format!("{} | {}", u.what, u.why))
        .collect();
    let has = |what: &str, why: &str| {
        skipped
            .iter()
            .any(|s| s.starts_with(what) && s.contains(why))
    };
    assert!(
        has(
            "location /rw/, map $rw ($request_method: POST, its default)",
            "only POST"
        ),
        "{skipped:#?}"
    );
    assert!(
        has(
            "location /le/, limit_except GET HEAD { http://w }",
            "another method than GET, HEAD"
        ),
        "{skipped:#?}"
    );
    assert!(
        has(
            "location @pre, if ($prerender = 1)",
            "no check is known to meet it"
        ),
        "{skipped:#?}"
    );
    // The prerender backend is not said to be verified by the plain request.
    assert!(
        !p.checks
            .iter()
            .any(|c| c.upstream.as_deref() == Some("http://pre")),
        "{checks:#?}"
    );
}

/// A rewrite in `if ($request_method = POST)` behind `limit_except GET { deny all; }`: POST
/// never reaches the `if` (nginx answers it 403), so nothing is listed for it.
#[test]
fn a_method_rewrite_limit_except_denies_is_not_listed() {
    let p = plan(
        "server { listen 127.0.0.1:8080; server_name a.test;\n\
         location / { limit_except GET { deny all; }\n\
         if ($request_method = POST) { rewrite ^ /post$uri last; } proxy_pass http://u; }\n\
         location /post/ { internal; proxy_pass http://w; } }",
    );
    let skipped: Vec<String> = (p.not_checked.iter())
        .map(|u| format!("{} | {}", u.what, u.why))
        .collect();
    assert!(
        !skipped.iter().any(|s| s.contains("request_method")),
        "{skipped:#?}"
    );
}

/// Headers the checks send to keep out of a server-level `if` that returns: a literal value
/// only, never a variable's name.
#[test]
fn checks_send_the_header_a_server_level_return_asks_for_when_it_is_known() {
    let headers = |cond: &str| -> Vec<(String, String)> {
        let p = plan(&format!(
            "server {{ listen 127.0.0.1:8080; server_name a.test;\n\
             if ({cond}) {{ return 301 https://$host$request_uri; }}\n\
             location / {{ proxy_pass http://u; }} }}"
        ));
        p.checks[0].headers.clone()
    };
    assert_eq!(
        headers("$http_x_forwarded_proto != \"https\""),
        [("X-Forwarded-Proto".to_string(), "https".to_string())]
    );
    assert!(headers("$http_x_api_key != $expected").is_empty());
    assert!(headers("$http_x_forwarded_proto = http").is_empty());
}

/// `split_clients` and `geo` whose values name upstream blocks: listed as not verified.
#[test]
fn a_split_on_the_clients_address_is_checked_per_share_and_a_geo_is_listed() {
    let p = plan(
        "upstream app2 { server 127.0.0.1:8002; }\nupstream canaryp { server 127.0.0.1:8005; }\n\
         split_clients \"${remote_addr}\" $split_pool { 50% canaryp; * app2; }\n\
         geo $geo_be { default app2; 10.0.0.0/8 canaryp; }\n\
         server { listen 127.0.0.1:8080; server_name c.test;\n\
         location / { proxy_pass http://$split_pool; }\n\
         location /geo { proxy_pass http://$geo_be; } }",
    );
    let skipped: Vec<String> = (p.not_checked.iter()).map(|u| u.what.clone()).collect();
    assert_eq!(skipped, ["location /geo, geo $geo_be"], "{skipped:#?}");
    // Each share from an address the hash puts in it.
    let shares: Vec<String> = (p.checks.iter())
        .filter(|c| c.source.is_some())
        .map(|c| c.what.clone())
        .collect();
    assert_eq!(
        shares,
        [
            "location /, split_clients $split_pool (canaryp)",
            "location /, split_clients $split_pool (app2)"
        ]
    );
}

#[test]
fn a_websocket_location_gets_the_handshake_unless_the_listen_speaks_only_http2() {
    let ws = "location /ws/ { proxy_pass http://u; proxy_http_version 1.1; \
              proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade; }";
    let p = plan(&format!(
        "server {{ listen 127.0.0.1:8443 ssl http2; server_name t.test; {ws} }}\n\
         server {{ listen 127.0.0.1:8082 http2; server_name h.test; {ws} }}\n\
         server {{ listen 127.0.0.1:8080; server_name p.test; {ws} }}"
    ));
    let upgrades: Vec<(&str, bool)> = (p.checks.iter())
        .map(|c| {
            let up = c
                .headers
                .iter()
                .any(|(n, v)| n == "Upgrade" && v == "websocket");
            (c.host.as_str(), up)
        })
        .collect();
    // Over TLS, ALPN lets HTTP/1.1 (and its Upgrade) through; plaintext http2 is HTTP/2 only.
    assert_eq!(
        upgrades,
        [("t.test", true), ("h.test", false), ("p.test", true)]
    );
}

#[test]
fn a_branch_with_its_own_pass_names_that_backend_as_its_upstream() {
    let p = plan(
        "server { listen 127.0.0.1:80; server_name c.test;\n\
         location / { if ($http_x_canary = 1) { proxy_pass http://canary; } proxy_pass http://stable; } }",
    );
    let ups: Vec<String> = (p.checks.iter())
        .map(|c| format!("{:?} {:?}", c.headers, c.upstream))
        .collect();
    assert_eq!(
        ups,
        [
            "[] Some(\"http://stable\")",
            "[(\"X-Canary\", \"1\")] Some(\"http://canary\")"
        ]
    );
}

#[test]
fn a_name_another_server_defined_first_has_is_not_checked_as_this_ones() {
    let p = plan(
        "server { listen 127.0.0.1:80; server_name shop.test; location / { proxy_pass http://a; } }\n\
         server { listen 127.0.0.1:80; server_name shop.test; location / { proxy_pass http://b; } }",
    );
    // Only the first server's check: the second's request would reach the first.
    assert_eq!(
        (p.checks.iter())
            .map(|c| c.upstream.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["http://a"]
    );
    let skipped: Vec<String> = (p.not_checked.iter()).map(|u| u.what.clone()).collect();
    assert!(
        skipped
            .iter()
            .any(|w| w == "server_name shop.test on 127.0.0.1:80"),
        "{skipped:?}"
    );
}

#[test]
fn a_checks_read_timeout_is_its_modules_as_nginx_inherits_it() {
    let p = plan(
        "proxy_read_timeout 20s; fastcgi_read_timeout 1m;\n\
         server { listen 127.0.0.1:8080; server_name a.test; proxy_read_timeout 5s;\n\
         location /api/ { proxy_pass http://u; }\n\
         location /slow/ { proxy_read_timeout 1m30s; proxy_pass http://u; }\n\
         location ~ \\.php$ { fastcgi_pass unix:/run/php.sock; }\n\
         location /g/ { grpc_pass grpc://127.0.0.1:9000; }\n}",
    );
    let timeouts: Vec<(String, Option<u64>)> = (p.checks.iter())
        .map(|c| (c.path.clone(), c.read_timeout.map(|t| t.as_secs())))
        .collect();
    assert_eq!(
        timeouts,
        [
            ("/api/".to_string(), Some(5)),
            ("/slow/".to_string(), Some(90)),
            ("/safe-reload-check.php".to_string(), Some(60)),
            ("/g/".to_string(), None),
        ]
    );
}
