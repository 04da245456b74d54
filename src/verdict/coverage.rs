//! What the checks covered: a server the change affects is verified only when it was checked
//! and every check of it passed, and nothing of it was left out (a regex or named location no
//! request reaches, a listen this machine cannot reach, a bound on requests per round). The
//! headline says "live and verified" only when every affected server is; otherwise it counts
//! them and names what was not verified. Pure: the affected servers and the results in.

use std::collections::HashMap;

use serde::Serialize;

use crate::health::HealthReport;

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
    /// Of those, the ones checked, with every check passed and nothing left out.
    pub verified: usize,
    /// What was not verified, server by server.
    pub not_verified: Vec<NotVerified>,
}

impl Coverage {
    /// Whether "verified" may be said of the whole change.
    pub fn complete(&self) -> bool {
        self.verified == self.affected && self.not_verified.is_empty()
    }

    /// `verified 12 of 14 affected servers; not verified: b.example ~ \.php$ (site.conf:9), ...`
    pub fn describe(&self, at_most: usize) -> String {
        let mut listed: Vec<String> = (self.not_verified.iter().take(at_most))
            .map(NotVerified::describe)
            .collect();
        if self.not_verified.len() > at_most {
            listed.push(format!("and {} more", self.not_verified.len() - at_most));
        }
        format!(
            "verified {} of {} affected server{}; not verified: {}",
            self.verified,
            self.affected,
            if self.affected == 1 { "" } else { "s" },
            listed.join(", ")
        )
    }
}

/// Coverage of `affected` by the verification window `after`.
pub fn coverage(affected: &[Affected], after: &HealthReport) -> Coverage {
    // Per URL: whether it was answered, and whether any answer failed.
    let mut seen: HashMap<&str, bool> = HashMap::new();
    for r in &after.results {
        *seen.entry(r.check.url.as_str()).or_insert(false) |= r.failed;
    }
    let mut out = Coverage {
        affected: affected.len(),
        ..Coverage::default()
    };
    for server in affected {
        let entry = |what: &str, at: &str, why: String| NotVerified {
            server: server.server.clone(),
            what: what.to_string(),
            at: at.to_string(),
            why,
        };
        let before = out.not_verified.len();
        if server.checks.is_empty() && server.left_out.iter().all(|l| l.what != "server") {
            let why = "no request checks it (no proxied location on a listen this machine reaches)";
            out.not_verified
                .push(entry("server", &server.at, why.into()));
        }
        for l in &server.left_out {
            out.not_verified.push(entry(&l.what, &l.at, l.why.clone()));
        }
        for url in &server.checks {
            let why = match seen.get(url.as_str()) {
                None => format!("{url} was not reached before the window closed"),
                Some(true) => format!("{url} failed"),
                Some(false) => continue,
            };
            out.not_verified.push(entry("server", &server.at, why));
        }
        if out.not_verified.len() == before {
            out.verified += 1;
        }
    }
    out
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
                    elapsed: Duration::ZERO,
                    failed: *failed,
                    refused: false,
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
        let c = coverage(&all, &after(&[("A", false), ("C", false)]));
        assert!(c.complete());
        assert_eq!((c.affected, c.verified), (2, 2));
    }

    #[test]
    fn what_was_not_verified_is_named() {
        let all = [
            server("a.test", &["A"], &[]),
            server("b.example", &["B"], &["~ \\.php$"]),
            server("c.test", &[], &[]),
            server("d.test", &["D"], &[]),
        ];
        let c = coverage(&all, &after(&[("A", false), ("B", false)]));
        assert!(!c.complete());
        assert_eq!((c.affected, c.verified), (4, 1));
        assert_eq!(
            c.describe(2),
            "verified 1 of 4 affected servers; not verified: b.example ~ \\.php$ \
             (site.conf:9), c.test (site.conf:1): no request checks it (no proxied location on \
             a listen this machine reaches), and 1 more"
        );
        assert!(c.not_verified[2].why.contains("D was not reached"));
    }
}
