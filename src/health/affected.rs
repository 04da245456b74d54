//! The servers a change affects as the coverage sees them, from the checks' [`Plan`]: each
//! server some request checks, with the URLs of its checks and what of it no request checks,
//! and each affected server no request checks at all. Which servers are affected is the
//! impact analysis's to say (`impact`); the plan holds only those.

use super::Plan;
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
