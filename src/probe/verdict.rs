//! From targets to results: which addresses to connect to (after resolving names), how the
//! per-address outcomes add up to one result per target, and what each result means (severity,
//! the worker-permission check, hints from diagnosis).
//!
//! Kept apart from `connect` so the probing engine knows nothing about nginx's rules for
//! `down`, `backup` and allowed failures; what a failure means (its severity) is `policy`'s.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::access::{Account, Denial};
use super::connect::{Endpoint, Outcome, Probe};
use super::netstat::Listeners;
use super::per_request::Answer;
use super::policy::FailsOver;
use super::{
    diagnose, handshake, mismatch, netstat, resolve, udp, AddrResult, Hint, ProbeOptions,
    ProbeResult, Severity, Status,
};
use crate::conf::{Target, TargetAddr};

/// What to do for one target.
pub enum Step {
    Skipped,
    Dynamic,
    Unresolvable(String),
    /// Indices into `Plan::probes`, and for a target datagrams reach too (a stream server
    /// that listens on TCP and `udp`) each address looked up as `Datagram` does.
    Probe(Vec<usize>, Vec<(AddrResult, Option<Hint>)>),
    /// A target only datagrams reach: each address looked up, nothing sent (see `udp`).
    Datagram(Vec<(AddrResult, Option<Hint>)>),
}

/// Every probe to run, and for each target which of them are its.
pub struct Plan {
    pub probes: Vec<Probe>,
    pub steps: Vec<Step>,
}

/// Resolve names and list the probes: each address of a target once per protocol its
/// directives speak (`handshake::for_target`), or once for a connect. Each distinct name is
/// resolved once. A name nginx resolves per request comes with its `request` answer (see
/// `per_request`) and is not asked of the system resolver.
pub fn plan(targets: &[Target], request: &[Option<Answer>], opts: &ProbeOptions) -> Plan {
    let timeout = opts.timeout;
    let answer = |i: usize| request.get(i).and_then(Option::as_ref);
    let names: Vec<(String, u16)> = (targets.iter().enumerate())
        .filter(|(i, t)| !t.is_down() && answer(*i).is_none())
        .filter_map(|(_, t)| match &t.address {
            TargetAddr::Host { name, port } => Some((name.clone(), *port)),
            _ => None,
        })
        .collect();
    let resolved = resolve::resolve_all(&names, timeout.max(Duration::from_secs(1)));
    let mut resolved = names.into_iter().zip(resolved);
    let mut probes = Vec::new();
    let mut steps = Vec::with_capacity(targets.len());
    let mut udp_bound = None;
    for (i, t) in targets.iter().enumerate() {
        if t.is_down() {
            steps.push(Step::Skipped);
            continue;
        }
        let new: Vec<Endpoint> = match (&t.address, answer(i)) {
            (TargetAddr::Dynamic(_), _) => {
                steps.push(Step::Dynamic);
                continue;
            }
            (_, Some(a)) => match a {
                Answer::Found(addrs) => addrs.iter().copied().map(Endpoint::Tcp).collect(),
                Answer::NoAnswer(_) => {
                    steps.push(Step::Dynamic);
                    continue;
                }
                Answer::NoSuchName | Answer::NoResolver => {
                    steps.push(Step::Unresolvable(a.why(t)));
                    continue;
                }
            },
            (TargetAddr::Ip(sa), None) => vec![Endpoint::Tcp(*sa)],
            (TargetAddr::Unix(p), None) => vec![Endpoint::Unix(opts.socket_path(p))],
            (TargetAddr::Host { .. }, None) => match resolved.next() {
                Some((_, Ok(addrs))) => addrs.into_iter().map(Endpoint::Tcp).collect(),
                Some((_, Err(e))) => {
                    steps.push(Step::Unresolvable(e));
                    continue;
                }
                None => {
                    steps.push(Step::Unresolvable("not resolved".into()));
                    continue;
                }
            },
        };
        // Datagrams reach it: whether anything receives them, looked up, nothing sent.
        let looked: Vec<_> = if t.receives_datagrams() {
            let bound = udp_bound.get_or_insert_with(netstat::udp_bound);
            new.iter().map(|e| udp::look_up(e, bound)).collect()
        } else {
            Vec::new()
        };
        if t.is_datagram_only() {
            steps.push(Step::Datagram(looked));
            continue;
        }
        let protocols = handshake::for_target(t, &opts.tls_names);
        let first = probes.len();
        for endpoint in new {
            if protocols.is_empty() {
                probes.push(Probe {
                    endpoint: endpoint.clone(),
                    protocol: None,
                });
            }
            for p in &protocols {
                probes.push(Probe {
                    endpoint: endpoint.clone(),
                    protocol: Some(p.clone()),
                });
            }
        }
        steps.push(Step::Probe((first..probes.len()).collect(), looked));
    }
    Plan { probes, steps }
}

/// One result per target from the connect outcomes; severity is set later by `judge`.
pub fn assemble(targets: &[Target], plan: &Plan, outcomes: &[Outcome]) -> Vec<ProbeResult> {
    targets
        .iter()
        .zip(&plan.steps)
        .map(|(t, step)| {
            let mut r = ProbeResult {
                target: t.address.clone(),
                status: Status::Ok,
                errno: None,
                elapsed: Duration::ZERO,
                addresses: Vec::new(),
                references: t.references.clone(),
                severity: Severity::Ok,
                hints: Vec::new(),
                resolver: None,
                cause: None,
                dead_upstream: None,
            };
            match step {
                Step::Skipped => r.status = Status::Skipped,
                Step::Dynamic => r.status = Status::Dynamic,
                Step::Unresolvable(e) => {
                    r.status = Status::Unresolvable;
                    r.errno = Some(e.clone());
                }
                Step::Probe(ix, looked) => {
                    r.addresses = ix
                        .iter()
                        .filter_map(|&i| Some(addr_result(plan.probes.get(i)?, outcomes.get(i)?)))
                        .collect();
                    r.elapsed = r
                        .addresses
                        .iter()
                        .map(|a| a.elapsed)
                        .max()
                        .unwrap_or_default();
                    add_looked_up(&mut r, looked);
                }
                Step::Datagram(looked) => add_looked_up(&mut r, looked),
            }
            r
        })
        .collect()
}

/// The UDP table's answer for each address (`udp::look_up`) beside whatever was connected
/// to, and the result's status from all of them.
fn add_looked_up(r: &mut ProbeResult, looked: &[(AddrResult, Option<Hint>)]) {
    for (a, hint) in looked {
        r.addresses.push(a.clone());
        if let Some(h) = hint.as_ref().filter(|h| !r.hints.contains(h)) {
            r.hints.push(h.clone());
        }
    }
    worst_address(r);
    // Some address was looked up and not sent to: the result says so.
    if r.status == Status::Ok && r.addresses.iter().any(|a| a.status == Status::NotProbed) {
        r.status = Status::NotProbed;
    }
}

/// The result shows its worst address: a refusal before a warning.
fn worst_address(r: &mut ProbeResult) {
    let bad = (r.addresses.iter())
        .find(|a| a.status.is_failure() && !mismatch::is_soft(a.status))
        .or_else(|| r.addresses.iter().find(|a| a.status.is_failure()));
    if let Some(bad) = bad {
        r.status = bad.status;
        r.errno = bad.errno.clone();
    }
}

fn addr_result(probe: &Probe, outcome: &Outcome) -> AddrResult {
    let reply = outcome.exchange.as_ref().map(|(_, r)| r);
    AddrResult {
        address: match &probe.endpoint {
            Endpoint::Tcp(sa) => sa.to_string(),
            Endpoint::Unix(p) => format!("unix:{}", p.display()),
        },
        status: outcome.status,
        errno: outcome.errno.clone(),
        elapsed: outcome.elapsed,
        protocol: probe.protocol.as_ref().map(handshake::Protocol::kind),
        reply: reply.and_then(handshake::Reply::summary),
        speaks: reply.and_then(handshake::Reply::speaks),
    }
}

/// The account nginx's workers run as, when the check applies.
pub fn worker_account(opts: &ProbeOptions) -> Option<Account> {
    if let Some(account) = &opts.master_account {
        return Some(account.clone());
    }
    Account::lookup(opts.worker_user.as_deref()?, opts.worker_group.as_deref())
}

/// Worker-permission check, hints and severity for every result.
pub fn judge(results: &mut [ProbeResult], opts: &ProbeOptions) {
    mark_dead_pools(results);
    let account = worker_account(opts);
    if let Some(account) = &account {
        let unprivileged = opts.master_account.is_some();
        for r in results.iter_mut() {
            check_worker_access(r, account, unprivileged, opts);
        }
    }
    // Severity first: what the diagnosis suggests depends on whether nginx fails over.
    let roles = super::policy::apply(results, opts);
    if results.iter().any(|r| r.status.is_failure()) {
        let listeners = Listeners::snapshot();
        let index = diagnose::TcpIndex::new(&listeners);
        let speaking = answering_by_protocol(results);
        for (r, role) in results.iter_mut().zip(&roles) {
            // A block with no live server: nothing was connected to, so nothing to diagnose.
            if !r.status.is_failure() || r.status == Status::NoLiveUpstreams {
                continue;
            }
            // A member nginx fails over past is pointed only at a listener that answered in
            // its protocol and is not in its pool already: anything else would break what
            // works now.
            let candidates: Option<HashSet<String>> = role.as_ref().map(|role| {
                let kinds: Vec<_> = r.addresses.iter().map(|a| a.protocol).collect();
                (speaking.iter())
                    .filter(|(kind, address)| {
                        kinds.contains(kind) && !role.members.contains(address)
                    })
                    .map(|(_, address)| address.clone())
                    .collect()
            });
            let allowed = candidates
                .as_ref()
                .map_or(diagnose::Candidates::Any, diagnose::Candidates::Only);
            add_hints(r, &listeners, &index, opts, allowed, role.as_ref());
        }
    }
}

/// An upstream block whose every `server` is `down`, reached by a `*_pass`: nginx picks no
/// peer and answers 502 ("no live upstreams") without connecting anywhere, which no connect
/// shows. The block's first member not probed for that reason (and not carrying another
/// block's) carries the failure, once per block. A member that another block uses live is
/// probed, and is left as its probe says.
fn mark_dead_pools(results: &mut [ProbeResult]) {
    use crate::conf::targets::{dead_upstreams, Name};
    use std::collections::HashMap;
    use std::sync::Arc;
    let dead = dead_upstreams(results.iter().flat_map(|r| r.references.iter()));
    if dead.is_empty() {
        return;
    }
    // Per dead block: its name, whether a `*_pass` reaches it, and its members by place.
    type Members<'a> = Vec<(&'a Path, u32, usize)>;
    let mut blocks: HashMap<_, (&Arc<str>, bool, Members)> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        for re in r.references.iter() {
            let Some(name) = re.upstream.as_ref() else {
                continue;
            };
            let key = (re.context, name.to_ascii_lowercase());
            if !dead.contains(&key) {
                continue;
            }
            let (_, reached, members) = blocks.entry(key).or_insert((name, false, Vec::new()));
            if re.directive == Name::SERVER {
                members.push((&re.file, re.line, i));
            } else {
                *reached = true;
            }
        }
    }
    let mut dead: Vec<(Members, Arc<str>)> = (blocks.into_values())
        .filter(|(_, reached, _)| *reached)
        .map(|(name, _, mut members)| {
            members.sort();
            (members, name.clone())
        })
        .collect();
    dead.sort();
    let mut marks: Vec<(usize, Arc<str>, Hint)> = Vec::new();
    for (members, name) in dead {
        let free = members.iter().find(|&&(_, _, i)| {
            results[i].status == Status::Skipped && !marks.iter().any(|m| m.0 == i)
        });
        let Some(&(file, line, i)) = free else {
            continue;
        };
        let hint = Hint::new(format!(
            "every server of upstream {name} ({}:{line}) is marked `down`: nginx answers each \
             request passed to it 502 (\"no live upstreams\") without connecting anywhere",
            file.display()
        ))
        .with_suggestion("take `down` off a server that answers, or pass to another upstream");
        marks.push((i, name, hint));
    }
    for (i, name, hint) in marks {
        let r = &mut results[i];
        r.status = Status::NoLiveUpstreams;
        r.dead_upstream = Some(name);
        r.hints.push(hint);
    }
}

/// Every address whose probe passed, with the protocol it was probed in.
fn answering_by_protocol(results: &[ProbeResult]) -> Vec<(Option<handshake::Kind>, String)> {
    let mut out = Vec::new();
    for a in results.iter().flat_map(|r| &r.addresses) {
        let entry = (a.protocol, a.address.clone());
        if a.status == Status::Ok && !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

/// `unprivileged`: the account is the running master's, not root, so `user` does not apply.
fn check_worker_access(
    r: &mut ProbeResult,
    account: &Account,
    unprivileged: bool,
    opts: &ProbeOptions,
) {
    let TargetAddr::Unix(path) = &r.target else {
        return;
    };
    let path = &opts.socket_path(path);
    // Whatever we heard as root, the worker may not even connect.
    if !matches!(
        r.status,
        Status::Ok
            | Status::Refused
            | Status::PermissionDenied
            | Status::Closed
            | Status::WrongProtocol
            | Status::NoReply
            | Status::TlsAlert
    ) {
        return;
    }
    let Some(denial) = account.denial(path) else {
        return;
    };
    r.hints
        .push(denial_hint(path, account, &denial, unprivileged));
    // We connected as root; the worker would not get that far.
    if !matches!(r.status, Status::Refused | Status::PermissionDenied) {
        r.status = Status::PermissionDenied;
        r.errno = Some("13: Permission denied".into());
        for a in &mut r.addresses {
            a.status = Status::PermissionDenied;
        }
    }
}

/// What stops `who` from opening `socket`: the directory without search permission, or the
/// socket file's mode and owner.
fn denial_text(socket: &Path, who: &str, d: &Denial) -> String {
    let owner = format!("mode {:04o} owner {}:{}", d.mode, d.owner, d.group);
    if d.is_dir {
        format!(
            "{who} cannot reach {}: the directory {} ({owner}) gives it no search permission",
            socket.display(),
            d.path.display()
        )
    } else {
        format!("{who} cannot open {}: {owner}", socket.display())
    }
}

fn denial_hint(socket: &Path, account: &Account, d: &Denial, unprivileged: bool) -> Hint {
    let user = &account.user;
    // The group the workers run with decides as much as the user (`user NAME GROUP;`).
    let group = crate::probe::access::group_name(account.gid);
    let text = denial_text(
        socket,
        &format!("nginx's worker user `{user}` (group `{group}`)"),
        d,
    );
    let hint = Hint::new(format!(
        "{text}, so nginx answers 502 with (13: Permission denied)"
    ));
    if d.is_dir {
        hint.with_suggestion(format!(
            "give `{user}` search (x) permission on {}, or put the socket elsewhere",
            d.path.display()
        ))
    } else if unprivileged {
        hint.with_suggestion(format!(
            "let the backend create the socket writable for `{user}` (php-fpm: listen.owner, \
             listen.group, listen.mode = 0660), or start nginx as a user that may open it: \
             its master runs as `{user}`, not root, so the `user` directive is ignored"
        ))
    } else {
        hint.with_suggestion(format!(
            "let the backend create the socket writable for `{user}` (php-fpm: listen.owner, \
             listen.group, listen.mode = 0660), or run nginx's workers as a user that may \
             open it (the `user` directive)"
        ))
    }
}

/// Permission denied to us (not running as root): say which path stops us.
fn own_denial(path: &Path) -> Option<Hint> {
    // SAFETY: geteuid has no preconditions.
    let me = super::access::user_name(unsafe { libc::geteuid() });
    let denial = Account::lookup(&me, None)?.denial(path)?;
    Some(
        Hint::new(denial_text(
            path,
            &format!("the probing user `{me}`"),
            &denial,
        ))
        .with_suggestion("run the probe as root or as nginx's worker user"),
    )
}

fn add_hints(
    r: &mut ProbeResult,
    listeners: &Listeners,
    index: &diagnose::TcpIndex,
    opts: &ProbeOptions,
    allowed: diagnose::Candidates,
    role: Option<&FailsOver>,
) {
    let timeout = opts.timeout;
    let mut hints = Vec::new();
    match &r.target {
        TargetAddr::Unix(path) => {
            let path = &opts.socket_path(path);
            let expects = r.addresses.iter().find_map(|a| a.protocol);
            hints.extend(diagnose::unix(
                path,
                r.status,
                r.errno.as_deref(),
                listeners,
                allowed,
                expects,
            ));
            if r.status == Status::PermissionDenied && r.hints.is_empty() {
                hints.extend(own_denial(path));
            }
        }
        TargetAddr::Ip(_) | TargetAddr::Host { .. } => {
            // A datagram target's failure says so itself: what listens on TCP is no cue.
            let connected = r.addresses.iter().filter(|a| a.status != Status::NotBound);
            for a in connected.filter(|a| a.status.is_failure()) {
                if let Ok(sa) = a.address.parse() {
                    hints.extend(diagnose::tcp(sa, a.status, index, allowed));
                }
            }
            if r.status == Status::Timeout && hints.is_empty() {
                hints.push(Hint::new(format!(
                    "no answer within {}: a firewall drops the connection, or the host is down",
                    humantime::format_duration(timeout)
                )));
            }
        }
        TargetAddr::Dynamic(_) => {}
    }
    hints.extend(mismatch::hints(r, timeout, role.map(|f| f.live.as_slice())));
    if r.status == Status::Unresolvable && r.resolver.is_none() {
        hints.push(
            Hint::new("the system resolver does not know this name")
                .with_suggestion("check the name, /etc/hosts or DNS; nginx resolves it when it starts and fails to start without it"),
        );
    }
    let answered = mismatch::answering_addresses(r);
    if !answered.is_empty() {
        hints.push(Hint::new(format!(
            "{} has several addresses and only {} answered: nginx logs an error for each \
             failing one and tries the next",
            r.target,
            answered.join(", ")
        )));
    }
    for h in hints {
        if !r.hints.contains(&h) {
            r.hints.push(h);
        }
    }
}
