//! The servers a change affects as the coverage sees them, from the checks' [`Plan`]: each
//! server some request checks, with the URLs of its checks and what of it no request checks,
//! and each affected server no request checks at all. Which servers are affected is the
//! impact analysis's to say (`impact`); the plan holds only those. With `--health` URLs, which
//! replace the derived checks, a server is checked by the URLs that name one of its hosts, and
//! one no URL names is not verified: a URL for another site says nothing of it.

use std::collections::HashSet;

use super::{Check, Plan};
use crate::verdict::{Affected, LeftOut};

/// The affected servers of `plan`, checked ones first.
pub fn affected(plan: &Plan) -> Vec<Affected> {
    let left_out = |u: &super::Unchecked| LeftOut {
        what: u.what.clone(),
        at: u.at.clone(),
        why: u.why.clone(),
    };
    let checked = plan.checked.iter().map(|c| Affected {
        server: c.server.clone(),
        at: c.at.clone(),
        checks: c.checks.clone(),
        left_out: c.left_out.iter().map(left_out).collect(),
    });
    // A server with no check at all has one "server" entry saying why; the entries of its
    // locations and names before it explain that one, and are listed with the plan.
    let unchecked = (plan.not_checked.iter().filter(|u| u.what == "server")).map(|u| Affected {
        server: u.server.clone(),
        at: u.at.clone(),
        checks: Vec::new(),
        left_out: vec![left_out(u)],
    });
    checked.chain(unchecked).collect()
}

/// The affected servers of `derived` (the checks the configuration would get) as the
/// operator's `health` checks cover them: each server by the URLs whose Host is one its derived
/// checks use.
pub fn affected_by(derived: &Plan, health: &[Check]) -> Vec<Affected> {
    let mut all = affected(derived);
    for a in all.iter_mut().filter(|a| !a.checks.is_empty()) {
        let hosts: HashSet<&str> = (derived.checks.iter())
            .filter(|c| c.server == a.server)
            .map(|c| c.host.as_str())
            .collect();
        a.checks = (health.iter())
            .filter(|c| hosts.contains(c.host.as_str()))
            .map(|c| c.url.clone())
            .collect();
        if a.checks.is_empty() {
            a.left_out.push(LeftOut {
                what: "server".into(),
                at: a.at.clone(),
                why: "no --health URL names it (--health replaces the checks derived from the \
                      configuration)"
                    .into(),
            });
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Covered, Unchecked};

    fn unchecked(server: &str, what: &str) -> Unchecked {
        Unchecked {
            server: server.into(),
            what: what.into(),
            at: "site.conf:9".into(),
            why: "why".into(),
        }
    }

    #[test]
    fn checked_servers_keep_their_checks_and_what_they_left_out() {
        let regex = unchecked("a.test", "location ~ (a)b");
        let plan = Plan {
            checks: Vec::new(),
            checked: vec![Covered {
                server: "a.test".into(),
                at: "site.conf:1".into(),
                checks: vec!["http://a.test/".into()],
                left_out: vec![regex.clone()],
            }],
            not_checked: vec![regex, unchecked("b.test", "server")],
        };
        let all = affected(&plan);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].checks, ["http://a.test/"]);
        assert_eq!(all[0].left_out[0].what, "location ~ (a)b");
        assert_eq!((all[1].server.as_str(), all[1].checks.len()), ("b.test", 0));
        assert_eq!(all[1].left_out[0].what, "server");
    }
}
