//! What a probe result means for the run: the severity policy, as nginx's upstream code
//! behaves, so a change is refused only where nginx would answer 502.
//!
//! nginx's rules, from its source:
//!
//! - A failed `connect()` to a peer (refused, unreachable, permission denied, no such socket)
//!   makes `ngx_event_connect_peer` return `NGX_DECLINED`, and a connect timeout counts as
//!   `NGX_HTTP_UPSTREAM_FT_TIMEOUT`: either way `ngx_http_upstream_next` marks the peer failed
//!   (`max_fails`, `fail_timeout`) and tries the next one, under the default
//!   `proxy_next_upstream error timeout` (the same for the other `*_next_upstream`).
//! - The peers of an `upstream` block are its servers, each address of a server's name a peer
//!   of its own (`ngx_http_upstream_init_round_robin`); when every primary peer has failed,
//!   `ngx_http_upstream_get_round_robin_peer` moves on to the `backup` servers
//!   (`peers->next`). A `down` server is never chosen.
//! - A `*_pass` that names a host directly gets an implicit upstream whose peers are every
//!   address of the name ("implicitly defined upstream has no backup servers"), so `localhost`
//!   answering on `127.0.0.1` only is served: nginx logs an error for `[::1]` and moves on.
//! - A name nginx resolves at startup and cannot resolve stops nginx from starting
//!   ("host not found in upstream"): a failure whatever its siblings do.
//!
//! So a target that does not answer is a warning when every place that uses it has another
//! peer that does (a sibling in each of its upstream blocks, or another address of its name),
//! and a failure only when some request could find no peer at all.

use std::collections::HashMap;

use super::{Hint, ProbeOptions, ProbeResult, RequestResolver, Severity, Status};
use crate::conf::targets::{Context, Name};

/// An upstream block, as nginx names it: per context, names compare case-insensitively.
pub(super) type Pool = (Context, String);

/// A failing pool member nginx passes requests past: what the diagnosis of it may say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailsOver {
    /// The members of its pools that answered, as shown: where nginx sends the requests.
    pub live: Vec<String>,
    /// Every address of every member of its pools (`down` ones included), as probed.
    pub members: Vec<String>,
    /// Every live reference is a `backup` server: nginx uses it only when the primaries fail.
    pub backup: bool,
}

/// Set the severity of every result, and say why a failing pool member is only a warning.
/// Returns, per result, whether nginx fails over past it (see `FailsOver`).
pub fn apply(results: &mut [ProbeResult], opts: &ProbeOptions) -> Vec<Option<FailsOver>> {
    let answering = answering_members(results);
    let backups = backup_members(results);
    let members = pool_addresses(results);
    let mut out = Vec::with_capacity(results.len());
    for r in results.iter_mut() {
        let (severity, hint) = judge(r, opts, &answering, &backups);
        r.severity = severity;
        // First: it says why this is no refusal, before the diagnosis of the member itself.
        let fails_over = hint.is_some() && severity == Severity::Warning;
        if let Some(h) = hint.filter(|h| !r.hints.contains(h)) {
            r.hints.insert(0, h);
        }
        out.push(fails_over.then(|| {
            let pools = pools(r);
            let collect = |of: &HashMap<Pool, Vec<String>>| {
                let mut all: Vec<String> = Vec::new();
                for m in pools.iter().flat_map(|p| of.get(p).into_iter().flatten()) {
                    if !all.contains(m) {
                        all.push(m.clone());
                    }
                }
                all
            };
            FailsOver {
                live: collect(&answering),
                members: collect(&members),
                backup: is_backup(r),
            }
        }));
    }
    out
}

/// Every live reference of the target is a `backup` server.
pub(super) fn is_backup(r: &ProbeResult) -> bool {
    let mut live = r
        .references
        .iter()
        .filter(|x| !x.down && x.upstream.is_some());
    live.clone().next().is_some() && live.all(|x| x.backup)
}

/// For each upstream block, every address probed for its members (and the members as shown).
fn pool_addresses(results: &[ProbeResult]) -> HashMap<Pool, Vec<String>> {
    let mut out: HashMap<Pool, Vec<String>> = HashMap::new();
    for r in results {
        let pools = r.references.iter().filter_map(|x| {
            (x.upstream.as_ref()).map(|name| (x.context, name.to_ascii_lowercase()))
        });
        for pool in pools {
            let members = out.entry(pool).or_default();
            let shown = std::iter::once(r.target.to_string());
            for a in shown.chain(r.addresses.iter().map(|a| a.address.clone())) {
                if !members.contains(&a) {
                    members.push(a);
                }
            }
        }
    }
    out
}

/// Did at least one address of the target answer (every protocol probed there)?
fn answers(r: &ProbeResult) -> bool {
    r.status == Status::Ok || !super::mismatch::answering_addresses(r).is_empty()
}

/// For each upstream block, the members that answered (as shown), `backup` ones included.
fn answering_members(results: &[ProbeResult]) -> HashMap<Pool, Vec<String>> {
    let mut out: HashMap<Pool, Vec<String>> = HashMap::new();
    for r in results.iter().filter(|r| answers(r)) {
        for pool in pools(r) {
            let members = out.entry(pool).or_default();
            let shown = r.target.to_string();
            if !members.contains(&shown) {
                members.push(shown);
            }
        }
    }
    out
}

/// Each pool's `backup` servers (not `down`), as shown: a hint that names the servers taking
/// a dead member's requests says which of them take them only when every primary fails.
fn backup_members(results: &[ProbeResult]) -> std::collections::HashSet<(Pool, String)> {
    let mut out = std::collections::HashSet::new();
    for r in results {
        for x in r.references.iter().filter(|x| x.backup && !x.down) {
            if let Some(name) = &x.upstream {
                let pool = (x.context, name.to_ascii_lowercase());
                out.insert((pool, r.target.to_string()));
            }
        }
    }
    out
}

/// The upstream blocks the target is a live (not `down`) member of, and whether some live
/// reference uses it directly (a `*_pass` naming it: no sibling to fail over to).
pub(super) fn uses(r: &ProbeResult) -> (Vec<Pool>, bool) {
    let mut direct = false;
    let mut out = Vec::new();
    for reference in r.references.iter().filter(|x| !x.down) {
        match &reference.upstream {
            Some(name) => {
                let pool = (reference.context, name.to_ascii_lowercase());
                if !out.contains(&pool) {
                    out.push(pool);
                }
            }
            None => direct = true,
        }
    }
    (out, direct)
}

fn pools(r: &ProbeResult) -> Vec<Pool> {
    uses(r).0
}

fn is_allowed(r: &ProbeResult, opts: &ProbeOptions) -> bool {
    let norm = |s: &str| s.trim().trim_start_matches("unix:").to_string();
    let target = norm(&r.target.to_string());
    opts.allow_fail.iter().any(|a| {
        let a = norm(a);
        a == target || r.addresses.iter().any(|x| norm(&x.address) == a)
    })
}

/// A `*_pass` using the failing target whose `*_next_upstream` does not send this kind of
/// failure on to the next peer (see `failover`): requests nginx sends to it get 502.
fn no_failover(r: &ProbeResult, opts: &ProbeOptions) -> Option<Hint> {
    let timeout = r.status == Status::Timeout;
    let pass = r.references.iter().find(|x| {
        let next = opts.failover.at(&x.file, x.line);
        !x.down
            && Name::of_pass(&x.directive).is_some()
            && !(if timeout { next.timeout } else { next.error })
    })?;
    let setting = pass.directive.trim_end_matches("_pass").to_string() + "_next_upstream";
    let kind = if timeout { "timeout" } else { "error" };
    if opts.failover.at(&pass.file, pass.line).one_try {
        return Some(
            Hint::new(format!(
                "{}:{}: {setting}_tries 1 is in scope, so nginx tries one server per request \
                 and does not pass one that fails on {} to the next: it answers 502 (about \
                 once per fail_timeout)",
                pass.file.display(),
                pass.line,
                r.target
            ))
            .with_suggestion(format!(
                "start it, mark it `down`, or allow more than one try ({setting}_tries)"
            )),
        );
    }
    Some(
        Hint::new(format!(
            "{}:{}: {} is in scope without `{kind}`, so nginx does not pass a request that \
             fails on {} to the next server: it answers 502 (about once per fail_timeout)",
            pass.file.display(),
            pass.line,
            setting,
            r.target
        ))
        .with_suggestion(format!(
            "start it, mark it `down`, or add `{kind}` to {setting}"
        )),
    )
}

/// A primary member that accepts and closes: nginx has sent the request when the peer hangs
/// up, so it passes a GET on to the next server, but answers a POST, LOCK or PATCH 502 unless
/// `*_next_upstream` has `non_idempotent` (`ngx_http_upstream_next`), each time it tries the
/// member again (once per fail_timeout once max_fails is reached). A refused connect sends
/// nothing, so any method is passed on: that is a warning. A `backup` member matters only
/// when the primaries fail.
fn sent_then_closed(r: &ProbeResult, opts: &ProbeOptions, siblings: &[String]) -> Option<Hint> {
    if r.status != Status::Closed || is_backup(r) {
        return None;
    }
    let pass = r.references.iter().find(|x| {
        !x.down
            && !x.backup
            && x.context == crate::conf::targets::Context::Http
            && Name::of_pass(&x.directive).is_some()
            && !opts.failover.at(&x.file, x.line).non_idempotent
    })?;
    let setting = pass.directive.trim_end_matches("_pass").to_string() + "_next_upstream";
    Some(
        Hint::new(format!(
            "{} accepts connections and closes them without answering: nginx passes a GET it \
             sent there on to {}, but answers a POST (or PATCH) it has already sent 502, since \
             {setting} at {}:{} does not have `non_idempotent`",
            r.target,
            siblings.join("; "),
            pass.file.display(),
            pass.line,
        ))
        .with_suggestion(format!(
            "point it at the backend that answers, mark it `down`, or add `non_idempotent` to \
             {setting}"
        )),
    )
}

/// One result's severity, and the hint that explains a warning for a pool member.
fn judge(
    r: &ProbeResult,
    opts: &ProbeOptions,
    answering: &HashMap<Pool, Vec<String>>,
    backups: &std::collections::HashSet<(Pool, String)>,
) -> (Severity, Option<Hint>) {
    match r.status {
        Status::Ok | Status::Skipped => return (Severity::Ok, None),
        Status::Dynamic | Status::NotProbed => return (Severity::Warning, None),
        _ => {}
    }
    if is_allowed(r, opts) {
        return (Severity::Allowed, None);
    }
    // A silent backend or a TLS alert: see `mismatch::is_soft`.
    if super::mismatch::is_soft(r.status) {
        return (Severity::Warning, None);
    }
    // Another address of the same name answers: nginx's peers for the name include it, if it
    // tries the next peer for this failure (its `*_next_upstream` names it).
    if answers(r) {
        return match no_failover(r, opts) {
            Some(hint) => (Severity::Failure, Some(hint)),
            None => (Severity::Warning, None),
        };
    }
    // A name nginx resolves per request through its `resolver`, which says it does not
    // exist: nginx answers 502 until it does, which a deploy may be about to change (a service
    // registering). With no resolver in scope nginx can never resolve it: a failure.
    if r.status == Status::Unresolvable {
        return match r.resolver {
            Some(RequestResolver::Through(_)) => (Severity::Warning, None),
            // nginx resolves the others when it starts and does not start without them.
            _ => (Severity::Failure, None),
        };
    }
    let (pools, direct) = uses(r);
    let live: Vec<(&Pool, &Vec<String>)> = pools
        .iter()
        .filter_map(|p| answering.get(p).map(|m| (p, m)))
        .collect();
    if direct || pools.is_empty() || live.len() < pools.len() {
        return (Severity::Failure, None);
    }
    if let Some(hint) = no_failover(r, opts) {
        return (Severity::Failure, Some(hint));
    }
    let siblings: Vec<String> = live
        .iter()
        .map(|(pool, members)| {
            let shown: Vec<String> = (members.iter())
                .map(|m| match backups.contains(&((*pool).clone(), m.clone())) {
                    true => format!("{m} as its backup"),
                    false => m.clone(),
                })
                .collect();
            format!("upstream {} ({})", pool.1, shown.join(", "))
        })
        .collect();
    if let Some(hint) = sent_then_closed(r, opts, &siblings) {
        return (Severity::Failure, Some(hint));
    }
    // A connect that times out costs the request the whole `*_connect_timeout` first.
    let wait = if r.status == Status::Timeout {
        ", after waiting proxy_connect_timeout (60s by default) for it"
    } else {
        ""
    };
    let hint = if is_backup(r) {
        Hint::new(format!(
            "{} is a backup server and does not answer; other servers of {} do: it matters \
             only when the primary servers fail",
            r.target,
            siblings.join("; ")
        ))
    } else {
        Hint::new(format!(
            "{} does not answer, but other servers of {} do: nginx marks it failed for \
             fail_timeout and passes each request to the next server{wait}",
            r.target,
            siblings.join("; ")
        ))
    }
    .with_suggestion("start it, or mark it `down` in the upstream block while it is away");
    (Severity::Warning, Some(hint))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::conf::{Reference, TargetAddr};
    use crate::probe::AddrResult;

    fn reference(upstream: Option<&str>, backup: bool, down: bool) -> Reference {
        Reference {
            file: Arc::from(Path::new("/etc/nginx/nginx.conf")),
            line: 3,
            directive: Name::SERVER,
            context: Context::Http,
            upstream: upstream.map(Arc::from),
            backup,
            down,
            scheme: None,
            per_request: false,
            udp: false,
            also_udp: false,
            mirror: false,
            websocket: false,
            ssl: false,
        }
    }

    fn result(port: u16, status: Status, refs: Vec<Reference>) -> ProbeResult {
        let address = format!("127.0.0.1:{port}");
        ProbeResult {
            target: TargetAddr::Ip(address.parse().unwrap()),
            status,
            errno: None,
            elapsed: Duration::ZERO,
            addresses: vec![AddrResult {
                address,
                status,
                errno: None,
                elapsed: Duration::ZERO,
                protocol: None,
                reply: None,
                speaks: None,
            }],
            references: refs.into(),
            severity: Severity::Ok,
            hints: Vec::new(),
            resolver: None,
            cause: None,
            dead_upstream: None,
        }
    }

    fn severities(mut results: Vec<ProbeResult>) -> Vec<Severity> {
        apply(&mut results, &ProbeOptions::default());
        results.iter().map(|r| r.severity).collect()
    }

    #[test]
    fn a_dead_member_with_a_live_sibling_is_a_warning_naming_the_sibling() {
        let mut results = vec![
            result(
                1,
                Status::Refused,
                vec![reference(Some("app"), false, false)],
            ),
            result(2, Status::Ok, vec![reference(Some("APP"), false, false)]),
        ];
        apply(&mut results, &ProbeOptions::default());
        assert_eq!(results[0].severity, Severity::Warning);
        let hint = &results[0].hints[0].message;
        assert!(hint.contains("upstream app (127.0.0.1:2)"), "{hint}");
    }

    /// r16 y F4: a backup that answers was named among the servers that take a dead
    /// primary's requests; it takes them only when every primary fails.
    #[test]
    fn the_servers_named_for_a_dead_member_say_which_is_a_backup() {
        let mut results = vec![
            result(2, Status::Ok, vec![reference(Some("app"), false, false)]),
            result(
                1,
                Status::Refused,
                vec![reference(Some("app"), false, false)],
            ),
            result(4, Status::Ok, vec![reference(Some("app"), true, false)]),
        ];
        apply(&mut results, &ProbeOptions::default());
        let hint = &results[1].hints[0].message;
        assert!(
            hint.contains("upstream app (127.0.0.1:2, 127.0.0.1:4 as its backup)"),
            "{hint}"
        );
    }

    #[test]
    fn a_pool_where_nothing_answers_fails_backups_included() {
        let s = severities(vec![
            result(
                1,
                Status::Refused,
                vec![reference(Some("app"), false, false)],
            ),
            result(
                2,
                Status::Timeout,
                vec![reference(Some("app"), true, false)],
            ),
        ]);
        assert_eq!(s, [Severity::Failure, Severity::Failure]);
    }

    #[test]
    fn a_live_backup_covers_a_dead_primary_and_a_dead_backup() {
        let s = severities(vec![
            result(
                1,
                Status::Refused,
                vec![reference(Some("app"), false, false)],
            ),
            result(2, Status::Ok, vec![reference(Some("app"), true, false)]),
            result(
                3,
                Status::Refused,
                vec![reference(Some("app"), true, false)],
            ),
        ]);
        assert_eq!(s, [Severity::Warning, Severity::Ok, Severity::Warning]);
    }

    #[test]
    fn a_member_failed_over_knows_its_live_siblings_and_whether_it_is_a_backup() {
        let mut results = vec![
            result(1, Status::Ok, vec![reference(Some("app"), false, false)]),
            result(
                2,
                Status::Refused,
                vec![reference(Some("app"), true, false)],
            ),
            result(3, Status::Refused, vec![reference(None, false, false)]),
        ];
        let roles = apply(&mut results, &ProbeOptions::default());
        assert_eq!(roles[0], None);
        assert_eq!(
            roles[1],
            Some(FailsOver {
                live: vec!["127.0.0.1:1".into()],
                members: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
                backup: true,
            })
        );
        assert!(results[1].hints[0].message.contains("is a backup server"));
        // A refusal: nothing to fail over to.
        assert_eq!(roles[2], None);
    }

    #[test]
    fn a_down_member_does_not_count_as_answering() {
        let s = severities(vec![
            result(
                1,
                Status::Refused,
                vec![reference(Some("app"), false, false)],
            ),
            result(2, Status::Ok, vec![reference(Some("app"), false, true)]),
        ]);
        assert_eq!(s[0], Severity::Failure);
    }

    #[test]
    fn a_member_also_used_directly_or_in_a_dead_pool_fails() {
        let direct = severities(vec![
            result(
                1,
                Status::Refused,
                vec![
                    reference(Some("app"), false, false),
                    reference(None, false, false),
                ],
            ),
            result(2, Status::Ok, vec![reference(Some("app"), false, false)]),
        ]);
        assert_eq!(direct[0], Severity::Failure);
        let other_pool = severities(vec![
            result(
                1,
                Status::Refused,
                vec![
                    reference(Some("app"), false, false),
                    reference(Some("solo"), false, false),
                ],
            ),
            result(2, Status::Ok, vec![reference(Some("app"), false, false)]),
        ]);
        assert_eq!(other_pool[0], Severity::Failure);
    }

    #[test]
    fn the_same_name_in_stream_is_another_pool() {
        let mut stream = reference(Some("app"), false, false);
        stream.context = Context::Stream;
        let s = severities(vec![
            result(1, Status::Refused, vec![stream]),
            result(2, Status::Ok, vec![reference(Some("app"), false, false)]),
        ]);
        assert_eq!(s[0], Severity::Failure);
    }

    #[test]
    fn one_address_of_a_name_answering_is_a_warning() {
        let mut r = result(1, Status::Refused, vec![reference(None, false, false)]);
        r.addresses.push(AddrResult {
            address: "[::1]:1".into(),
            status: Status::Ok,
            errno: None,
            elapsed: Duration::ZERO,
            protocol: None,
            reply: None,
            speaks: None,
        });
        assert_eq!(severities(vec![r]), [Severity::Warning]);
    }

    #[test]
    fn without_failover_for_the_failure_a_dead_member_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        std::fs::write(
            &path,
            "http {\n upstream app { server 127.0.0.1:1; server 127.0.0.1:2; }\n\
             server { location / { proxy_next_upstream timeout; proxy_pass http://app; } }\n}\n",
        )
        .unwrap();
        let c = crate::conf::load(&path, &crate::conf::LoadOptions::default()).unwrap();
        let opts = ProbeOptions {
            failover: crate::probe::failover::Failover::of(&c),
            ..ProbeOptions::default()
        };
        let pass = |mut r: Reference| {
            r.file = Arc::from(path.as_path());
            r.directive = Name::of_pass("proxy_pass").unwrap();
            r
        };
        let mut results = vec![
            result(
                1,
                Status::Refused,
                vec![reference(Some("app"), false, false)],
            ),
            result(2, Status::Ok, vec![reference(Some("app"), false, false)]),
        ];
        for r in &mut results {
            let mut refs = r.references.to_vec();
            let mut p = pass(refs[0].clone());
            p.line = 3;
            refs.push(p);
            r.references = refs.into();
        }
        let mut timeout = results.clone();
        apply(&mut results, &opts);
        assert_eq!(results[0].severity, Severity::Failure);
        let hint = &results[0].hints[0].message;
        assert!(
            hint.contains("proxy_next_upstream is in scope without `error`"),
            "{hint}"
        );
        // A timeout is passed on under `proxy_next_upstream timeout`.
        timeout[0].status = Status::Timeout;
        apply(&mut timeout, &opts);
        assert_eq!(timeout[0].severity, Severity::Warning);
    }

    #[test]
    fn one_address_passing_one_protocol_and_failing_another_is_a_failure() {
        let mut r = result(
            1,
            Status::WrongProtocol,
            vec![reference(None, false, false)],
        );
        r.addresses.push(AddrResult {
            address: "127.0.0.1:1".into(),
            status: Status::Ok,
            errno: None,
            elapsed: Duration::ZERO,
            protocol: Some(crate::probe::handshake::Kind::Http),
            reply: None,
            speaks: None,
        });
        assert_eq!(severities(vec![r]), [Severity::Failure]);
    }

    #[test]
    fn a_silent_backend_and_a_tls_alert_only_warn() {
        let direct = || vec![reference(None, false, false)];
        let silent = result(1, Status::NoReply, direct());
        let alert = result(2, Status::TlsAlert, direct());
        let closed = result(3, Status::Closed, direct());
        assert_eq!(
            severities(vec![silent, alert, closed]),
            [Severity::Warning, Severity::Warning, Severity::Failure]
        );
    }
}
