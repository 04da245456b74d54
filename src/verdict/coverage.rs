//! What the checks covered: a server the change affects is verified only when it was checked
//! and every check of it passed, and nothing of it was left out (a regex or named location no
//! request reaches, a listen this machine cannot reach, a bound on requests per round). A check
//! nginx answered by itself (the 401 of `auth_basic`, a `return`) passed nothing: the backend
//! behind that location was not reached, so it is named as not verified, with how to reach it.
//! Nor is one answered over a certificate that does not name its Host: browsers refuse it.
//! The headline says "live and verified" only when every affected server is; otherwise it
//! counts the servers whose checks all passed, those no request checked, and names what was
//! not verified. An affected server whose requests nginx logs only where safe-reload cannot
//! read upstream errors (syslog, a level above `error`: see `errorlog::sight`) is verified by
//! its answers alone, and the log it could not read is named as not checked. Pure: the
//! affected servers, the results and the blind logs in.

use std::collections::HashMap;

use serde::Serialize;

use crate::errorlog::{Blind, Unread};
use crate::health::{Answer, CheckResult, HealthReport};

/// An affected server as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affected {
    /// `b.example` (its first name, or its listen when it has none).
    pub server: String,
    /// Where the block is: `site.conf:9`.
    pub at: String,
    /// The URLs of the checks made for it.
    pub checks: Vec<String>,
    /// What of it no check covers.
    pub left_out: Vec<LeftOut>,
}

/// A part of an affected server no request checks, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    /// `~ \.php$`, `@app`, `server` (the whole server).
    pub what: String,
    pub at: String,
    pub why: String,
}

impl LeftOut {
    /// A check the bound on requests per round left out, not something no request reaches.
    pub fn over_the_bound(&self) -> bool {
        self.why == crate::health::over_the_bound()
    }
}

/// Something affected that is not verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotVerified {
    pub server: String,
    pub what: String,
    pub at: String,
    pub why: String,
}

impl NotVerified {
    /// `b.example ~ \.php$ (site.conf:9)`.
    pub fn describe(&self) -> String {
        match self.what.as_str() {
            "server" => format!("{} ({}): {}", self.server, self.at, self.why),
            what => format!("{} {what} ({})", self.server, self.at),
        }
    }
}

/// How much of the change the checks verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Servers the change affects.
    pub affected: usize,
    /// Of those, the ones checked with every check passed and nothing left out but checks
    /// over the bound (those are listed in `not_verified`: at the bound each server may get one
    /// check of several, and its passing is still said).
    pub verified: usize,
    /// Of those, the ones no request checked at all.
    pub not_checked: usize,
    /// What was not verified, server by server.
    pub not_verified: Vec<NotVerified>,
    /// How to verify what was not: `pass --health http://USER:PASS@e.test/adm/ ...`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
    /// The error logs of affected servers that show no upstream error safe-reload can read:
    /// what failover hid from the checks there (a pool member that now fails) was not
    /// checked, and the servers count as verified by their answers alone.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread_logs: Vec<Unread>,
    /// Where nginx asked the checks for a client certificate they do not have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_certificates: Vec<AsksCertificate>,
}

/// An `ssl_verify_client on` that answered checks with nginx's 400: what is behind it was not
/// verified, and where the same checks were served before the change, every client without
/// a certificate lost those sites with it (the line meant for one site, put in a snippet
/// every TLS server includes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AsksCertificate {
    /// Where it is written: `snippets/ssl.conf:4`.
    pub at: String,
    /// The servers whose checks it answered.
    pub servers: Vec<String>,
    /// Of those, the ones whose same checks were served before the change.
    pub served_before: Vec<String>,
}

impl Coverage {
    /// Whether "verified" may be said of the whole change.
    pub fn complete(&self) -> bool {
        self.verified == self.affected
            && self.not_verified.is_empty()
            && self.unread_logs.is_empty()
    }

    /// `verified 12 of 14 affected servers; 2 not verified, 1 of them not checked: b.example
    /// ~ \.php$ (site.conf:9), ...`, the checks the bound left out, and the logs that could
    /// not be read: `; not checked: upstream
    /// errors in the error log (error_log syslog:... (nginx.conf:5): sent to syslog, not a
    /// file)`.
    pub fn describe(&self, at_most: usize) -> String {
        let (s, their) = if self.affected == 1 {
            ("", "its")
        } else {
            ("s", "their")
        };
        let mut out = format!(
            "verified {} of {} affected server{s}",
            self.verified, self.affected
        );
        if !self.unread_logs.is_empty() {
            out.push_str(&format!(" by the answers to {their} checks alone"));
        }
        // One entry per request; several of one server's names read the same here.
        let listed = |entries: Vec<&NotVerified>| {
            let mut listed: Vec<String> = Vec::new();
            for d in entries.into_iter().map(NotVerified::describe) {
                if !listed.contains(&d) {
                    listed.push(d);
                }
            }
            let more = listed.len().saturating_sub(at_most);
            listed.truncate(at_most);
            if more > 0 {
                listed.push(format!("and {more} more"));
            }
            listed.join(", ")
        };
        // Checks the bound left out apart: a server whose other checks passed still counts.
        let (bound, other): (Vec<&NotVerified>, Vec<&NotVerified>) =
            (self.not_verified.iter()).partition(|n| n.why == crate::health::over_the_bound());
        let unverified = self.affected.saturating_sub(self.verified);
        if unverified > 0 || !other.is_empty() {
            // Counted where there is more than one to count.
            let counted = unverified > 0 && self.affected > 1;
            match counted {
                false => out.push_str("; not verified"),
                true => out.push_str(&format!("; {unverified} not verified")),
            }
            if self.not_checked > 0 && counted {
                out.push_str(&format!(", {} of them not checked", self.not_checked));
            }
            if !other.is_empty() {
                out.push_str(&format!(": {}", listed(other)));
            }
        }
        if !bound.is_empty() {
            out.push_str(&format!(
                "; left out by the bound on requests per round: {}",
                listed(bound)
            ));
        }
        if !self.unread_logs.is_empty() {
            out.push_str(&format!(
                "; not checked: upstream errors in the error log ({})",
                self.unread_logs
                    .iter()
                    .map(Unread::describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        out
    }
}

impl Coverage {
    /// Adds where `ssl_verify_client on` answered the checks of `after`, and which of them
    /// were served before the change (`before`).
    pub fn with_certificates(mut self, after: &HealthReport, before: &super::Baseline) -> Coverage {
        for r in &after.results {
            let Some(at) = crate::health::Gate::wants_certificate(r) else {
                continue;
            };
            let i = match (self.client_certificates.iter()).position(|c| c.at == at) {
                Some(i) => i,
                None => {
                    self.client_certificates.push(AsksCertificate {
                        at: at.to_string(),
                        servers: Vec::new(),
                        served_before: Vec::new(),
                    });
                    self.client_certificates.len() - 1
                }
            };
            let asks = &mut self.client_certificates[i];
            let server = &r.check.server;
            if !asks.servers.contains(server) {
                asks.servers.push(server.clone());
            }
            let served =
                (before.passed(&r.check.url)).is_some_and(|s| !matches!(s, 400 | 495 | 496));
            if served && !asks.served_before.contains(server) {
                asks.served_before.push(server.clone());
            }
        }
        self
    }
}

/// Coverage of `affected` by the verification window `after`; `blind` are the servers whose
/// logs show no upstream error (see `errorlog::sight`).
pub fn coverage(affected: &[Affected], after: &HealthReport, blind: &[Blind]) -> Coverage {
    // Per URL: the result that spoils it (a failure, else an answer nginx made itself), or
    // none when every answer passed.
    let mut seen: HashMap<&str, Option<&CheckResult>> = HashMap::new();
    for r in &after.results {
        // A certificate that does not name the Host: browsers refuse what the backend said.
        let spoils = r.failed || r.answer == Answer::NotReached || r.wrong_name.is_some();
        let slot = seen.entry(r.check.url.as_str()).or_insert(None);
        if spoils && slot.is_none_or(|s| !s.failed) {
            *slot = Some(r);
        }
    }
    let mut out = Coverage {
        affected: affected.len(),
        ..Coverage::default()
    };
    for server in affected {
        if server.checks.is_empty() {
            out.not_checked += 1;
        }
        let entry = |what: &str, at: &str, why: String| NotVerified {
            server: server.server.clone(),
            what: what.to_string(),
            at: at.to_string(),
            why,
        };
        if server.checks.is_empty() && server.left_out.iter().all(|l| l.what != "server") {
            let why = "no request checks it (no proxied location on a listen this machine reaches)";
            out.not_verified
                .push(entry("server", &server.at, why.into()));
        }
        let mut spoiled = false;
        for l in &server.left_out {
            spoiled |= !l.over_the_bound();
            out.not_verified.push(entry(&l.what, &l.at, l.why.clone()));
        }
        let before = out.not_verified.len();
        // A check that reached a backend and passed: then nginx's own answer where nothing is
        // behind it (the plain side's `if ($scheme = http) { return 301 ...; }`) leaves nothing
        // unverified.
        let reached = (server.checks.iter()).any(|u| matches!(seen.get(u.as_str()), Some(None)));
        for url in &server.checks {
            let why = match seen.get(url.as_str()) {
                None => format!("{url} was not reached before the window closed"),
                Some(Some(r)) if r.timed_out => {
                    format!("{url} got no answer within --health-timeout")
                }
                Some(Some(r)) if r.failed => format!("{url} failed"),
                Some(Some(r)) if r.wrong_name.is_some() => {
                    format!("{url}: {}", r.wrong_name.as_deref().unwrap_or_default())
                }
                Some(Some(r)) if reached && r.check.upstream.is_none() => continue,
                Some(Some(r)) => {
                    let (what, at) = (r.check.what.as_str(), r.check.at.as_str());
                    let entry = match what.is_empty() {
                        true => entry("server", &server.at, not_reached(r)),
                        false => entry(what, at, not_reached(r)),
                    };
                    if !out.not_verified.contains(&entry) {
                        out.not_verified.push(entry);
                    }
                    if let Some(hint) = hint(r) {
                        if !out.hints.contains(&hint) {
                            out.hints.push(hint);
                        }
                    }
                    continue;
                }
                Some(None) => continue,
            };
            out.not_verified.push(entry("server", &server.at, why));
        }
        if !server.checks.is_empty() && !spoiled && out.not_verified.len() == before {
            out.verified += 1;
        }
        let logs = blind.iter().filter(|b| b.server == server.at);
        for u in logs.flat_map(|b| &b.logs) {
            if !out.unread_logs.contains(u) {
                out.unread_logs.push(u.clone());
            }
        }
    }
    out
}

/// Why a check nginx answered by itself verified nothing behind it.
fn not_reached(r: &CheckResult) -> String {
    let answer = match r.status {
        Some(code) => format!("answered HTTP {code}"),
        None => "closed the connection".to_string(),
    };
    let upstream = (r.check.upstream.as_deref())
        .map(|u| format!(": {u} was not verified"))
        .unwrap_or_default();
    if let Some(at) = crate::health::Gate::wants_certificate(r) {
        return format!(
            "{} {answer} by nginx itself, which asks every client for a certificate \
             (ssl_verify_client on, {at}) and the checks have none{upstream}",
            r.check.url
        );
    }
    format!(
        "{} {answer} by nginx itself, without reaching the backend{upstream}",
        r.check.url
    )
}

/// How to get past what answered instead of the backend: credentials for `auth_basic` and
/// the like (a `return` cannot be got past, so it gets none).
fn hint(r: &CheckResult) -> Option<String> {
    // A `--health` URL cannot name a unix socket: no hint to give there.
    if r.check.gate.auth && r.status == Some(403) {
        // `deny` (or an auth service) refuses this client whatever it sends.
        return Some(format!(
            "{} {} refuses this client (HTTP 403: `allow`/`deny`, or what `auth_request` \
             asks): credentials do not get a check past it",
            r.check.server, r.check.what
        ));
    }
    let gated = r.check.gate.auth && r.status == Some(401) && r.check.unix.is_none();
    gated.then(|| {
        let scheme = if r.check.tls { "https" } else { "http" };
        let port = match (r.check.tls, r.check.connect.port()) {
            (false, 80) | (true, 443) => String::new(),
            (_, port) => format!(":{port}"),
        };
        format!(
            "{} {} is behind authentication: to check the backend, pass --health \
             {scheme}://USER:PASS@{}{port}{} (and --resolve {}:{}:{} if the name does not \
             resolve here)",
            r.check.server,
            r.check.what,
            r.check.host,
            r.check.path,
            r.check.host,
            r.check.connect.port(),
            r.check.connect.ip()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Answer, Check, CheckResult};
    use std::time::Duration;

    fn server(name: &str, checks: &[&str], left_out: &[&str]) -> Affected {
        Affected {
            server: name.into(),
            at: "site.conf:1".into(),
            checks: checks.iter().map(|c| c.to_string()).collect(),
            left_out: (left_out.iter())
                .map(|w| LeftOut {
                    what: w.to_string(),
                    at: "site.conf:9".into(),
                    why: "a regex location no path is known to reach".into(),
                })
                .collect(),
        }
    }

    fn after(results: &[(&str, bool)]) -> HealthReport {
        HealthReport {
            passed: false,
            results: (results.iter())
                .map(|(url, failed)| CheckResult {
                    check: Check::plain(
                        url.to_string(),
                        "127.0.0.1:80".parse().expect("address"),
                        "h".into(),
                        "/".into(),
                        false,
                    ),
                    status: Some(if *failed { 502 } else { 200 }),
                    error: None,
                    answer: if *failed {
                        Answer::Failed
                    } else {
                        Answer::Passed
                    },
                    attempts: 1,
                    failures: u32::from(*failed),
                    first_failure: None,
                    intermittent_errors: Vec::new(),
                    elapsed: Duration::ZERO,
                    failed: *failed,
                    refused: false,
                    timed_out: false,
                    hint: None,
                    wrong_name: None,
                    tls12: Default::default(),
                    h2: Default::default(),
                    empty: false,
                })
                .collect(),
            not_checked: Vec::new(),
            upstream_errors: Vec::new(),
            expected_upstream_errors: Vec::new(),
            rounds: 1,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn verified_only_when_every_affected_server_was_checked_and_passed() {
        let all = [server("a.test", &["A"], &[]), server("c.test", &["C"], &[])];
        let c = coverage(&all, &after(&[("A", false), ("C", false)]), &[]);
        assert!(c.complete());
        assert_eq!((c.affected, c.verified), (2, 2));
    }

    #[test]
    fn a_server_whose_log_cannot_be_read_is_verified_by_its_answers_alone_and_says_so() {
        let all = [server("a.test", &["A"], &[]), server("c.test", &["C"], &[])];
        let unread = Unread {
            directive: "error_log syslog:server=127.0.0.1:5140".into(),
            at: "nginx.conf:5".into(),
            why: "sent to syslog, not a file".into(),
        };
        let blind = [Blind {
            server: "site.conf:1".into(),
            logs: vec![unread.clone()],
        }];
        let c = coverage(&all, &after(&[("A", false), ("C", false)]), &blind);
        assert!(!c.complete());
        assert_eq!((c.verified, c.unread_logs.len()), (2, 1), "each log once");
        assert_eq!(
            c.describe(5),
            "verified 2 of 2 affected servers by the answers to their checks alone; not \
             checked: upstream errors in the error log (error_log \
             syslog:server=127.0.0.1:5140 (nginx.conf:5): sent to syslog, not a file)"
        );
        let elsewhere = [Blind {
            server: "other.conf:3".into(),
            logs: vec![unread],
        }];
        let c = coverage(&all, &after(&[("A", false), ("C", false)]), &elsewhere);
        assert!(
            c.complete(),
            "an unaffected server's log is not this change's"
        );
    }

    #[test]
    fn what_was_not_verified_is_named() {
        let all = [
            server("a.test", &["A"], &[]),
            server("b.example", &["B"], &["~ \\.php$"]),
            server("c.test", &[], &[]),
            server("d.test", &["D"], &[]),
        ];
        let c = coverage(&all, &after(&[("A", false), ("B", false)]), &[]);
        assert!(!c.complete());
        assert_eq!((c.affected, c.verified), (4, 1));
        assert_eq!(
            c.describe(2),
            "verified 1 of 4 affected servers; 3 not verified, 1 of them not checked: b.example \
             ~ \\.php$ (site.conf:9), c.test (site.conf:1): no request checks it (no proxied \
             location on a listen this machine reaches), and 1 more"
        );
        assert!(c.not_verified[2].why.contains("D was not reached"));
    }

    #[test]
    fn entries_that_read_the_same_are_said_once() {
        let entry = |server: &str| NotVerified {
            server: server.into(),
            what: "return 308 https://a.test$request_uri".into(),
            at: "redirects:4".into(),
            why: "nginx answers it itself".into(),
        };
        let c = Coverage {
            affected: 2,
            not_verified: vec![entry("a.test"), entry("a.test"), entry("b.test")],
            ..Coverage::default()
        };
        assert_eq!(
            c.describe(1),
            "verified 0 of 2 affected servers; 2 not verified: a.test return 308 \
             https://a.test$request_uri (redirects:4), and 1 more"
        );
    }

    #[test]
    fn servers_whose_checks_all_passed_count_as_verified_at_the_bound() {
        let mut at_the_bound = server("a.test", &["A"], &[]);
        at_the_bound.left_out.push(LeftOut {
            what: "GET http://a.test/api/".into(),
            at: "site.conf:3".into(),
            why: crate::health::over_the_bound(),
        });
        let mut over = server("b.test", &[], &[]);
        over.left_out.push(LeftOut {
            what: "server".into(),
            at: "site.conf:5".into(),
            why: crate::health::over_the_bound(),
        });
        let c = coverage(&[at_the_bound, over], &after(&[("A", false)]), &[]);
        assert!(!c.complete());
        assert_eq!((c.affected, c.verified, c.not_checked), (2, 1, 1));
        assert!(
            c.describe(0).starts_with(
                "verified 1 of 2 affected servers; 1 not verified, 1 of them not \
                              checked; left out by the bound on requests per round: "
            ),
            "{}",
            c.describe(0)
        );
    }

    #[test]
    fn an_answer_nginx_made_itself_verifies_nothing_and_says_how_to_get_past_it() {
        let mut report = after(&[("A", false)]);
        let r = &mut report.results[0];
        r.status = Some(401);
        r.answer = Answer::NotReached;
        r.check.server = "e.test".into();
        r.check.what = "location /adm/".into();
        r.check.at = "sites/e:3".into();
        r.check.host = "e.test".into();
        r.check.path = "/adm/".into();
        r.check.upstream = Some("http://127.0.0.1:8502".into());
        r.check.gate.auth = true;
        let c = coverage(&[server("e.test", &["A"], &[])], &report, &[]);
        assert!(!c.complete());
        assert_eq!(c.verified, 0);
        assert_eq!(
            c.describe(5),
            "verified 0 of 1 affected server; not verified: e.test location /adm/ (sites/e:3)"
        );
        assert!(c.not_verified[0]
            .why
            .contains("http://127.0.0.1:8502 was not verified"));
        assert_eq!(c.hints.len(), 1);
        assert!(
            c.hints[0].contains("--health http://USER:PASS@e.test/adm/"),
            "{}",
            c.hints[0]
        );
        // `allow 10.0.0.0/8; deny all;`: no credentials get past a 403.
        let mut denied = report.clone();
        denied.results[0].status = Some(403);
        let c = coverage(&[server("e.test", &["A"], &[])], &denied, &[]);
        assert!(!c.hints[0].contains("USER:PASS"), "{}", c.hints[0]);
        assert!(c.hints[0].contains("refuses this client"), "{}", c.hints[0]);
    }
}
