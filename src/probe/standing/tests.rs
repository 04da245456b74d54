use std::time::Duration;

use super::*;
use crate::conf::{load, servers, targets, Config, LoadOptions, TargetAddr};
use crate::impact;
use crate::probe::AddrResult;

/// One tree from the text of an `http {}` body.
struct Tree {
    config: Config,
    servers: Vec<crate::conf::Server>,
    targets: crate::conf::Targets,
    _dir: tempfile::TempDir,
}

fn tree(http: &str) -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, format!("events {{}}\nhttp {{\n{http}\n}}\n")).unwrap();
    let config = load(&path, &LoadOptions::default()).unwrap();
    let servers = servers::extract(&config);
    let targets = targets::extract(&config);
    Tree {
        config,
        servers,
        targets,
        _dir: dir,
    }
}

impl Tree {
    fn routes(&self) -> Routes {
        Routes::of(&self.config, &self.servers, &self.targets)
    }

    fn prints(&self) -> impact::Prints {
        impact::prints(&self.config, &self.servers)
    }

    /// A failing result for every target at `dead` (refused, a failure before any change is
    /// judged), the others answering.
    fn results(&self, dead: &[&str]) -> Vec<ProbeResult> {
        (self.targets.targets.iter())
            .map(|t| {
                let shown = t.address.to_string();
                let status = if dead.contains(&shown.as_str()) {
                    Status::Refused
                } else {
                    Status::Ok
                };
                ProbeResult {
                    target: t.address.clone(),
                    status,
                    errno: None,
                    elapsed: Duration::ZERO,
                    addresses: vec![AddrResult {
                        address: shown,
                        status,
                        errno: None,
                        elapsed: Duration::ZERO,
                        protocol: None,
                        reply: None,
                        speaks: None,
                    }],
                    references: t.references.clone(),
                    severity: if status == Status::Ok {
                        Severity::Ok
                    } else {
                        Severity::Failure
                    },
                    hints: Vec::new(),
                    resolver: None,
                    cause: None,
                    dead_upstream: None,
                }
            })
            .collect()
    }
}

/// Judge the candidate `new` against last-good `old` (none: no snapshot) with `dead` down.
fn judged(old: Option<&str>, new: &str, dead: &str) -> ProbeResult {
    let new = tree(new);
    let old = old.map(tree);
    let impact = match &old {
        Some(o) => impact::between(&o.prints(), &new.prints()),
        None => impact::Impact::everything(&new.prints()),
    };
    let mut results = new.results(&[dead]);
    let old_routes = old.as_ref().map(Tree::routes);
    apply(&mut results, &impact, &new.routes(), old_routes.as_ref());
    let want: TargetAddr = TargetAddr::Ip(dead.parse().unwrap());
    results.into_iter().find(|r| r.target == want).unwrap()
}

/// [`judged`], with `dead`'s probe ending as `status` instead of refused.
fn judged_as(old: Option<&str>, new: &str, dead: &str, status: Status) -> ProbeResult {
    let new = tree(new);
    let old = old.map(tree);
    let impact = match &old {
        Some(o) => impact::between(&o.prints(), &new.prints()),
        None => impact::Impact::everything(&new.prints()),
    };
    let mut results = new.results(&[dead]);
    let want: TargetAddr = TargetAddr::Ip(dead.parse().unwrap());
    for r in results.iter_mut().filter(|r| r.target == want) {
        r.status = status;
        for a in &mut r.addresses {
            a.status = status;
        }
    }
    let old_routes = old.as_ref().map(Tree::routes);
    apply(&mut results, &impact, &new.routes(), old_routes.as_ref());
    results.into_iter().find(|r| r.target == want).unwrap()
}

const DEAD: &str = "127.0.0.1:8099";

fn site(name: &str, extra: &str, location: &str, to: &str) -> String {
    format!(
        "server {{ listen 127.0.0.1:8080; server_name {name}; {extra} \
         location {location} {{ proxy_pass http://{to}; }} }}\n"
    )
}

fn sites(a_extra: &str, c_extra: &str) -> String {
    site("a.test", a_extra, "/", "127.0.0.1:8001") + &site("c.test", c_extra, "/", DEAD)
}

#[test]
fn a_dead_backend_only_unaffected_servers_use_is_a_warning_that_says_so() {
    let r = judged(Some(&sites("", "")), &sites("add_header X-Z 41;", ""), DEAD);
    assert_eq!(
        (r.severity, r.cause),
        (Severity::Warning, Some(Cause::PreExisting))
    );
    assert_eq!(
        r.hints[0].message,
        "127.0.0.1:8099 was already down before this change (refused); c.test answers 502 \
         today; this change does not touch it"
    );
}

#[test]
fn an_affected_server_using_it_as_before_keeps_it_a_warning() {
    let r = judged(Some(&sites("", "")), &sites("", "add_header X-Z 41;"), DEAD);
    assert_eq!(
        (r.severity, r.cause),
        (Severity::Warning, Some(Cause::PreExisting))
    );
    assert!(
        r.hints[0]
            .message
            .contains("leaves c.test's use of it as it was"),
        "{:?}",
        r.hints
    );
}

#[test]
fn pointing_an_affected_server_at_a_dead_target_is_the_change() {
    let old = site("a.test", "", "/", "127.0.0.1:8001");
    let new = site("a.test", "", "/", DEAD);
    let r = judged(Some(&old), &new, DEAD);
    assert_eq!(
        (r.severity, r.cause),
        (Severity::Failure, Some(Cause::Change))
    );
    assert!(r.hints.is_empty(), "{:?}", r.hints);
}

#[test]
fn a_new_location_or_server_routed_to_an_old_dead_target_is_the_change() {
    let old = sites("", "");
    // Another location of the same server.
    let second = format!("location /v2/ {{ proxy_pass http://{DEAD}; }}");
    let new = sites("", &second);
    let r = judged(Some(&old), &new, DEAD);
    assert_eq!(
        (r.severity, r.cause),
        (Severity::Failure, Some(Cause::Change))
    );
    // The same location under another path.
    let moved = site("a.test", "", "/", "127.0.0.1:8001") + &site("c.test", "", "/api/", DEAD);
    assert_eq!(judged(Some(&old), &moved, DEAD).severity, Severity::Failure);
    // Another server (a new one) routed to it.
    let more = old.clone() + &site("d.test", "", "/", DEAD);
    assert_eq!(judged(Some(&old), &more, DEAD).severity, Severity::Failure);
}

#[test]
fn another_scheme_directive_or_failover_for_it_is_the_change() {
    let old = sites("", "");
    let tls = old.replace(&format!("http://{DEAD}"), &format!("https://{DEAD}"));
    assert_eq!(judged(Some(&old), &tls, DEAD).severity, Severity::Failure);
    let grpc = old.replace(
        &format!("proxy_pass http://{DEAD}"),
        &format!("grpc_pass grpc://{DEAD}"),
    );
    assert_eq!(judged(Some(&old), &grpc, DEAD).severity, Severity::Failure);
    let next = sites("", "proxy_next_upstream timeout;");
    assert_eq!(judged(Some(&old), &next, DEAD).severity, Severity::Failure);
}

#[test]
fn a_changed_pool_around_a_dead_member_is_the_change() {
    let pool =
        |members: &str| format!("upstream app {{ {members} }}\n") + &site("c.test", "", "/", "app");
    let old = pool(&format!("server {DEAD}; server 127.0.0.1:8002 down;"));
    // Unchanged pool, change elsewhere in the server: as before.
    let same = old.replace("server_name c.test;", "server_name c.test; add_header X 1;");
    assert_eq!(
        judged(Some(&old), &same, DEAD).cause,
        Some(Cause::PreExisting)
    );
    // The pool itself changed: the change's.
    let changed = pool(&format!(
        "server {DEAD}; server 127.0.0.1:8002 down; keepalive 4;"
    ));
    assert_eq!(
        judged(Some(&old), &changed, DEAD).severity,
        Severity::Failure
    );
}

#[test]
fn without_last_good_every_failure_is_the_changes() {
    let r = judged(None, &sites("", ""), DEAD);
    assert_eq!(
        (r.severity, r.cause),
        (Severity::Failure, Some(Cause::Change))
    );
}

#[test]
fn an_unused_upstream_member_is_a_warning_whether_or_not_last_good_had_it() {
    let unused = format!("upstream old {{ server {DEAD}; }}\n");
    let old = unused.clone() + &site("a.test", "", "/", "127.0.0.1:8001");
    let new = unused.clone() + &site("a.test", "add_header X 1;", "/", "127.0.0.1:8001");
    let r = judged(Some(&old), &new, DEAD);
    assert_eq!(
        (r.severity, r.cause),
        (Severity::Warning, Some(Cause::PreExisting))
    );
    assert!(r.hints[0]
        .message
        .contains("no server sends requests to it"));
    // Added by the change, or with no last-good to compare with: still nothing reaches it.
    let fresh = site("a.test", "", "/", "127.0.0.1:8001");
    for r in [judged(Some(&fresh), &new, DEAD), judged(None, &new, DEAD)] {
        assert_eq!(
            (r.severity, r.cause),
            (Severity::Warning, Some(Cause::Unused))
        );
        assert!(r.hints[0].message.contains("no server sends requests to"));
    }
}

#[test]
fn a_target_that_is_one_of_the_candidates_listens_is_nginx_itself() {
    let internal = "server { listen 127.0.0.1:8099; server_name internal.test; \
                    location / { proxy_pass http://127.0.0.1:8001; } }\n";
    let front = site("front.test", "", "/", DEAD);
    for old in [None, Some(site("a.test", "", "/", "127.0.0.1:8001"))] {
        let r = judged(old.as_deref(), &format!("{internal}{front}"), DEAD);
        assert_eq!(
            (r.severity, r.cause),
            (Severity::Warning, Some(Cause::OwnListen))
        );
        assert!(
            r.hints[0]
                .message
                .contains("nginx's own listen in this configuration"),
            "{:?}",
            r.hints
        );
    }
    // `nginx -t` beside the probe holds the listen for a moment: the connection is reset.
    let closed = judged_as(None, &format!("{internal}{front}"), DEAD, Status::Closed);
    assert_eq!(closed.cause, Some(Cause::OwnListen), "{:?}", closed.hints);
    // A wildcard listen on the port takes the connection too.
    let wildcard = internal.replace("127.0.0.1:8099", "8099");
    let r = judged(None, &format!("{wildcard}{front}"), DEAD);
    assert_eq!(r.cause, Some(Cause::OwnListen));
    // Another port is not nginx.
    let other = internal.replace("127.0.0.1:8099", "127.0.0.1:8098");
    assert_eq!(
        judged(None, &format!("{other}{front}"), DEAD).cause,
        Some(Cause::Change)
    );
}

#[test]
fn only_failures_are_judged() {
    let new = tree(&sites("add_header X 1;", ""));
    let old = tree(&sites("", ""));
    let impact = impact::between(&old.prints(), &new.prints());
    let mut results = new.results(&[DEAD]);
    for r in &mut results {
        if r.status != Status::Ok {
            r.severity = Severity::Allowed;
        }
    }
    let judged = judge(&results, &impact, &new.routes(), Some(&old.routes()));
    assert!(judged.iter().all(Option::is_none), "{judged:?}");
}
