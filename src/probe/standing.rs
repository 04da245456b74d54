//! Whose failure a failing probe is, once the change is known: the change's, or one that was
//! there before it. A verdict is about the change (see DESIGN.md, "Verdicts"), so a backend
//! that was already down refuses a change only when the change introduced that use of it: a
//! server the change affects reaches it in a way last-good did not (a new target, a server or
//! location newly routed to it, another directive, scheme, pool or failover setting for it).
//! A failing target that only unaffected servers use, or that every affected server uses as
//! last-good did, is a warning that says it was already down: clients got its errors before
//! the change, and refusing would block every change on the machine until it comes back.
//!
//! A target that is one of the candidate's own listens is nginx itself once the candidate
//! runs: nothing listens there before the reload, so a refused connect says nothing about it.
//!
//! Pure: probe results, the impact and both trees' [`Routes`] in, severities out. Without a
//! last-good to compare with every failure is the change's.

use std::collections::HashSet;

use serde::Serialize;

use super::routes::{Routes, Use};
use super::{Hint, ProbeResult, RequestResolver, Severity, Status};
use crate::impact::{Impact, ServerId};

/// Why a failing target is or is not held against the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The change introduced this use of the target (or there is no last-good to tell).
    Change,
    /// Last-good used the target the same way: it failed before the change.
    PreExisting,
    /// One of the candidate's own listens: nginx opens it at the reload.
    OwnListen,
    /// A `backup` server of a pool whose primary servers include one of the candidate's own
    /// listens: nginx sends it requests only when those fail, and the checks through them say
    /// whether they answer.
    BesideOwnListen,
    /// An upstream member no `*_pass` reaches, and last-good did not have it (or there is no
    /// last-good): nginx sends it no request, so no client gets its failure.
    Unused,
    /// Only `mirror` copies of requests go there: nginx ignores their answers.
    Mirror,
}

/// What the change makes of one failing result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub severity: Severity,
    pub cause: Cause,
    /// Why, for a result that is no longer a failure.
    pub hint: Option<Hint>,
}

/// Judge every failing result against the change: `new` is the candidate's routes, `old`
/// last-good's (`None` without one). One entry per result; `None` leaves it as it is.
pub fn judge(
    results: &[ProbeResult],
    impact: &Impact,
    new: &Routes,
    old: Option<&Routes>,
) -> Vec<Option<Standing>> {
    let affected = impact.affected_ids();
    let old = old.filter(|_| impact.baseline);
    results
        .iter()
        .map(|r| (r.severity == Severity::Failure).then(|| one(r, &affected, new, old))?)
        .collect()
}

/// [`judge`], written into the results (the hint first: it says why this is no refusal).
pub fn apply(results: &mut [ProbeResult], impact: &Impact, new: &Routes, old: Option<&Routes>) {
    // A member that accepts and never answers is a warning (a slow backend answers within
    // nginx's read timeout), but whether the change adds it is said: the shadow holds one
    // the change adds against it when its checks time out.
    let affected = impact.affected_ids();
    let last = old.filter(|_| impact.baseline);
    for r in results.iter_mut().filter(|r| r.status == Status::NoReply) {
        if let Some(s) = one(r, &affected, new, last) {
            r.cause = Some(s.cause);
        }
    }
    let judged = judge(results, impact, new, old);
    for (r, standing) in results.iter_mut().zip(judged) {
        let Some(s) = standing else { continue };
        r.severity = s.severity;
        r.cause = Some(s.cause);
        if let Some(h) = s.hint {
            r.hints.insert(0, h);
        }
    }
    beside_own_listens(results);
}

/// A failing `backup` server whose every pool has a primary that is one of the candidate's
/// own listens is a warning: that primary is nginx itself once the reload opens it, so the
/// pool was judged as if it had no live primary; the checks through it decide.
fn beside_own_listens(results: &mut [ProbeResult]) {
    use super::policy::{is_backup, uses, Pool};
    let own: HashSet<Pool> = (results.iter())
        .filter(|r| r.cause == Some(Cause::OwnListen))
        .flat_map(|r| r.references.iter().filter(|x| !x.down && !x.backup))
        .filter_map(|x| Some((x.context, x.upstream.as_deref()?.to_ascii_lowercase())))
        .collect();
    if own.is_empty() {
        return;
    }
    for r in results
        .iter_mut()
        .filter(|r| r.severity == Severity::Failure)
    {
        let (pools, direct) = uses(r);
        if direct || !is_backup(r) || !pools.iter().all(|p| own.contains(p)) {
            continue;
        }
        let names: Vec<&str> = pools.iter().map(|(_, n)| n.as_str()).collect();
        r.severity = Severity::Warning;
        r.cause = Some(Cause::BesideOwnListen);
        r.hints.insert(
            0,
            Hint::new(format!(
                "{} is a backup server and does not answer; upstream {} has a primary server \
                 that is nginx's own listen in this configuration, which nginx opens at the \
                 reload: the backup matters only when that fails, and the checks through it \
                 say whether it answers",
                r.target,
                names.join(", ")
            )),
        );
    }
}

fn one(
    r: &ProbeResult,
    affected: &HashSet<&ServerId>,
    new: &Routes,
    old: Option<&Routes>,
) -> Option<Standing> {
    if let Some(hint) = own_listen(r, new) {
        return Some(Standing {
            severity: Severity::Warning,
            cause: Cause::OwnListen,
            hint: Some(hint),
        });
    }
    let passes =
        || (r.references.iter()).filter(|x| x.directive != crate::conf::targets::Name::SERVER);
    if passes().next().is_some() && passes().all(|x| x.mirror) {
        return Some(Standing {
            severity: Severity::Warning,
            cause: Cause::Mirror,
            hint: Some(
                Hint::new(format!(
                    "only `mirror` copies of requests go to {} ({}): nginx ignores their \
                     answers, so no client gets its failure",
                    r.target,
                    r.status.as_str()
                ))
                .with_suggestion("start it, or turn the `mirror` off until it runs"),
            ),
        });
    }
    let change = Standing {
        severity: Severity::Failure,
        cause: Cause::Change,
        hint: None,
    };
    let unused = || Standing {
        severity: Severity::Warning,
        cause: Cause::Unused,
        hint: Some(
            Hint::new(format!(
                "no server sends requests to {} ({}): nginx never asks it, so no client gets \
                 its failure",
                r.target,
                r.status.as_str()
            ))
            .with_suggestion("start it before a `*_pass` names its upstream, or remove it"),
        ),
    };
    let member_only = |routes: &Routes| {
        routes.uses(&r.target).is_empty() && !routes.members(&r.target).is_empty()
    };
    let Some(old) = old else {
        return Some(if member_only(new) { unused() } else { change });
    };
    // nginx resolves these names when it starts, and does not start without them: the reload
    // fails whatever used the name before.
    if r.status == Status::Unresolvable && !matches!(r.resolver, Some(RequestResolver::Through(_)))
    {
        return None;
    }
    // The workers' account decides a unix socket's permission: a `user` the change set is
    // the change's whatever the socket did before.
    if r.status == Status::PermissionDenied && new.user != old.user {
        return Some(change);
    }
    // A block with no live server: only the uses through that block.
    let through = |u: &&Use| match &r.dead_upstream {
        Some(name) => u.pool == super::routes::pool_key(name),
        None => true,
    };
    let uses: Vec<Use> = new
        .uses(&r.target)
        .iter()
        .filter(through)
        .copied()
        .collect();
    let uses = &uses[..];
    if uses.is_empty() {
        // An upstream member no `*_pass` reaches: nginx never sends it a request.
        let members = new.members(&r.target);
        let before = !members.is_empty() && members.iter().all(|k| old.has(*k));
        return Some(match (before, members.is_empty()) {
            (true, _) => before_change(r, "no server sends requests to it", new, &[]),
            (false, false) => unused(),
            (false, true) => change,
        });
    }
    let is_affected = |u: &Use| {
        new.servers
            .get(u.server)
            .is_some_and(|id| affected.contains(id))
    };
    if uses.iter().any(|u| is_affected(u) && !old.has(u.key)) {
        return Some(change);
    }
    let touched: Vec<Use> = uses.iter().copied().filter(is_affected).collect();
    let answer = if r.status == Status::Timeout {
        504
    } else {
        502
    };
    let servers = labels(uses, new);
    let verb = if servers.1 { "answer" } else { "answers" };
    let today = format!("{} {verb} {answer} today", servers.0);
    Some(before_change(r, &today, new, &touched))
}

/// The warning for a target that failed before the change; `touched` are the uses by affected
/// servers (all as last-good had them).
fn before_change(r: &ProbeResult, today: &str, new: &Routes, touched: &[Use]) -> Standing {
    let tail = if touched.is_empty() {
        "this change does not touch it".to_string()
    } else {
        let (names, _) = labels(touched, new);
        format!(
            "this change leaves {names}'s use of it as it was: the checks after the reload say \
             what clients get"
        )
    };
    Standing {
        severity: Severity::Warning,
        cause: Cause::PreExisting,
        hint: Some(match &r.dead_upstream {
            Some(name) => Hint::new(format!(
                "every server of upstream {name} was marked `down` before this change too; \
                     {today}; {tail}"
            ))
            .with_suggestion("take `down` off a server that answers, or pass to another upstream"),
            None => Hint::new(format!(
                "{} was already down before this change ({}); {today}; {tail}",
                r.target,
                r.status.as_str()
            ))
            .with_suggestion("start it, or point its servers at a backend that answers"),
        }),
    }
}

/// The servers of `uses`, at most three named: "c.test, d.test and 2 more"; and whether
/// that is more than one.
fn labels(uses: &[Use], routes: &Routes) -> (String, bool) {
    let mut names: Vec<String> = Vec::new();
    for u in uses {
        if let Some(id) = routes.servers.get(u.server) {
            let name = id.to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let many = names.len() > 1;
    let text = match names.len() {
        0 => "no server".to_string(),
        1 => names[0].clone(),
        n if n <= 3 => format!("{} and {}", names[..n - 1].join(", "), names[n - 1]),
        n => format!("{} and {} more", names[..3].join(", "), n - 3),
    };
    (text, many)
}

/// Nothing listens where the candidate itself listens: every address that failed to connect
/// is one of the candidate's listens (a reply in another protocol says something about what
/// answers there, so only refused connects and missing sockets count).
fn own_listen(r: &ProbeResult, routes: &Routes) -> Option<Hint> {
    // `nginx -t`, which runs beside the probe, binds the candidate's free listens for a
    // moment: a connection made then is accepted and reset as it exits (closed).
    let not_open = |s: Status| matches!(s, Status::Refused | Status::NoSuchSocket | Status::Closed);
    if !not_open(r.status) {
        return None;
    }
    let failed: Vec<_> = r
        .addresses
        .iter()
        .filter(|a| a.status.is_failure())
        .collect();
    if failed.is_empty() || failed.iter().any(|a| !not_open(a.status)) {
        return None;
    }
    let listens: Option<Vec<_>> = failed
        .iter()
        .map(|a| routes.listen_for(&a.address))
        .collect();
    let first = listens?.into_iter().next()?;
    Some(Hint::new(format!(
        "{} is nginx's own listen in this configuration ({}:{}), which nginx opens at the \
         reload: the checks of the servers proxying to it (through the shadow nginx when it \
         runs, and after the reload) say whether it answers",
        r.target,
        first.file.display(),
        first.line
    )))
}

#[cfg(test)]
mod tests;
