//! Probes for every upstream target (a connect, then an exchange in the protocol of the
//! directive that names it), and the diagnosis of each failure from what listens on this
//! machine right now.
//!
//! This is where a change that would answer `502 Bad Gateway` is caught before nginx is
//! reloaded: a backend on another port or address, a socket path that moved, a stale socket,
//! a socket nginx's worker user may not open. `probe_all` returns data only; `output` prints it
//! and `pipeline` decides what a failure means. Probes only ever connect to the addresses the
//! configuration names.

pub mod access;
pub mod connect;
pub mod diagnose;
pub mod dns;
pub mod failover;
pub mod handshake;
mod mismatch;
pub mod netstat;
pub mod per_request;
mod policy;
pub mod resolve;
pub mod routes;
pub mod similar;
pub mod standing;
mod udp;
mod verdict;

use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use crate::conf::targets::Finding;
use crate::conf::{Reference, TargetAddr, Targets};

pub use verdict::worker_account;

/// How to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Longest wait for one connect (`--probe-timeout`).
    pub timeout: Duration,
    /// Most connects in flight at once (open sockets), also bounded by the open-file limit.
    pub concurrency: usize,
    /// nginx's worker user (the `user` directive, or `nobody` when nginx starts as root);
    /// `None` skips the worker-permission check on unix sockets.
    pub worker_user: Option<String>,
    /// The group of the `user` directive; `None` means a group named like the user, as nginx.
    pub worker_group: Option<String>,
    /// The running master's identity when it is not root: nginx then ignores `user` and the
    /// workers run as the master (see [`access::Account::of_process`]). Judged before
    /// `worker_user` when set.
    pub master_account: Option<access::Account>,
    /// Targets allowed to fail, written as the target is shown (`127.0.0.1:8000`,
    /// `unix:/run/app.sock`, `app.internal:8000`): reported, but not failures.
    pub allow_fail: Vec<String>,
    /// The `*_pass` lines nginx evaluates per request and their `resolver`s: names only they
    /// use are asked of that resolver, not the system's (`PerRequest::of` the configuration).
    pub per_request: per_request::PerRequest,
    /// The `*_pass` lines under a `*_next_upstream` that leaves some failure out: no failover
    /// there (`Failover::of` the configuration).
    pub failover: failover::Failover,
    /// The directory nginx's workers run in ([`crate::nginx::worker_dir`]): a relative unix
    /// socket path is theirs to resolve, not ours. `None`: our own working directory.
    pub workdir: Option<std::path::PathBuf>,
    /// The SNI settings at each TLS `*_pass` (`proxy_ssl_server_name`, `proxy_ssl_name`);
    /// empty means nginx's defaults: no SNI.
    pub tls_names: crate::conf::sni::TlsNames,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: Duration::from_secs(1),
            concurrency: 512,
            worker_user: None,
            worker_group: None,
            master_account: None,
            allow_fail: Vec::new(),
            per_request: per_request::PerRequest::default(),
            failover: failover::Failover::default(),
            workdir: None,
            tls_names: Default::default(),
        }
    }
}

impl ProbeOptions {
    /// The socket file nginx's workers connect to for the unix path `path` as written.
    pub fn socket_path(&self, path: &std::path::Path) -> std::path::PathBuf {
        match &self.workdir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Refused,
    Timeout,
    NoSuchSocket,
    NotASocket,
    PermissionDenied,
    Unresolvable,
    /// Built from variables: not probed.
    Dynamic,
    /// Every reference is `down`: nginx never connects, so neither do we.
    Skipped,
    /// Any other failure (unreachable network, full unix accept queue, ...): see `errno`.
    Error,
    /// Accepted the connection, then closed it without answering the protocol probe: nginx
    /// answers 502 ("upstream prematurely closed connection").
    Closed,
    /// Answered in another protocol than the directive's (see `speaks`), or in bytes no
    /// protocol sends: nginx answers 502.
    WrongProtocol,
    /// Accepted, but sent no reply within the probe timeout: slow, or waiting for more bytes
    /// of another protocol. A warning, not a refusal: nginx waits its read timeout (60 s by
    /// default), and a slow healthy backend answers within it.
    NoReply,
    /// A TLS server refused our ClientHello with an alert. A warning: our offer is not nginx's
    /// OpenSSL's, so its handshake may still succeed.
    TlsAlert,
    /// A target only datagrams reach, on this machine, with no UDP socket bound to it: nginx's
    /// datagrams get an ICMP port unreachable (see `udp`).
    NotBound,
    /// A target only datagrams reach, elsewhere: nothing is sent to find out (see `udp`). A
    /// warning, as a dynamic target is.
    NotProbed,
    /// The first member of an upstream block a `*_pass` reaches whose every server is
    /// `down`: nginx connects to none and answers every request 502 ("no live upstreams").
    NoLiveUpstreams,
}

impl Status {
    /// Did the probe reach the backend (or need not)?
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Status::Ok | Status::Dynamic | Status::Skipped | Status::NotProbed
        )
    }

    /// The word shown to the operator and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Refused => "refused",
            Status::Timeout => "timeout",
            Status::NoSuchSocket => "no-such-socket",
            Status::NotASocket => "not-a-socket",
            Status::PermissionDenied => "permission-denied",
            Status::Unresolvable => "unresolvable",
            Status::Dynamic => "dynamic",
            Status::Skipped => "skipped",
            Status::Error => "error",
            Status::Closed => "closed",
            Status::WrongProtocol => "wrong-protocol",
            Status::NoReply => "no-reply",
            Status::TlsAlert => "tls-alert",
            Status::NotBound => "not-bound",
            Status::NotProbed => "not-probed",
            Status::NoLiveUpstreams => "no-live-upstreams",
        }
    }
}

/// What a result means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Ok,
    /// Worth reading, not a reason to refuse: a pool member that fails while another member
    /// of its upstream answers (`backup` ones included), a dynamic target, a host name of
    /// which only some addresses answer (see `policy`).
    Warning,
    /// nginx would answer 502 for requests to this target.
    Failure,
    /// Failed, but listed as allowed to fail.
    Allowed,
}

/// A likely cause and fix, in the operator's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hint {
    /// What was seen: "nothing listens on 127.0.0.1:8000; gunicorn (pid 12) listens on ...".
    pub message: String,
    /// What to change, when there is a likely change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
}

impl Hint {
    /// A hint without a suggestion.
    pub fn new(message: impl Into<String>) -> Hint {
        Hint {
            message: message.into(),
            suggestion: None,
        }
    }

    /// Add what to change.
    pub fn with_suggestion(mut self, suggestion: impl Into<String>) -> Hint {
        self.suggestion = Some(suggestion.into());
        self
    }

    /// A configuration finding (such as a `proxy_pass` without `http://`) as a hint, with its
    /// file:line in front.
    pub fn from_finding(finding: &Finding) -> Hint {
        Hint {
            message: format!(
                "{}:{}: {}",
                finding.file.display(),
                finding.line,
                finding.message
            ),
            suggestion: finding.hint.clone(),
        }
    }
}

/// One resolved address of a target and what its probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrResult {
    /// `127.0.0.1:8000` or `unix:/run/app.sock`.
    pub address: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// The protocol probed after the connect (`http`, `tls`, `http2`, `fast-cgi`, `uwsgi`,
    /// `memcached`); absent for a connect-only probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<handshake::Kind>,
    /// What the backend answered, in a few words (`HTTP/1.1 200 OK`, `ServerHello`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The protocol the backend answered in, when it is not the one probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaks: Option<handshake::Kind>,
}

/// One target's probe result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub target: TargetAddr,
    /// `ok` when every address answered, else the first failure.
    pub status: Status,
    /// The errno text of the first failure: `111: Connection refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    /// Time until the slowest address finished.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// One entry per resolved address (empty when not probed).
    pub addresses: Vec<AddrResult>,
    /// Every file:line that names the target (the target's own list, shared).
    pub references: std::sync::Arc<[Reference]>,
    pub severity: Severity,
    pub hints: Vec<Hint>,
    /// For a name nginx resolves per request only: the `resolver` it asks, or none in scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolver: Option<RequestResolver>,
    /// For a failing target judged against a change (`standing`): whether the change caused
    /// it; absent where no change is judged (`probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<standing::Cause>,
    /// For `NoLiveUpstreams`: the upstream block with no live server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_upstream: Option<std::sync::Arc<str>>,
}

/// The resolver nginx asks for a name it resolves per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestResolver {
    Through(std::sync::Arc<per_request::Resolver>),
    /// No `resolver` in scope: nginx answers 502 ("no resolver defined to resolve ...").
    Missing,
}

impl Serialize for RequestResolver {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestResolver::Through(r) => s.collect_str(r),
            RequestResolver::Missing => s.serialize_str("none"),
        }
    }
}

/// Every target's result, in the order of `Targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    pub results: Vec<ProbeResult>,
    /// Wall time of the whole run.
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
}

impl ProbeReport {
    /// Results that make `probe` and `check` fail.
    pub fn failures(&self) -> impl Iterator<Item = &ProbeResult> {
        self.results
            .iter()
            .filter(|r| r.severity == Severity::Failure)
    }

    /// Results worth reading that are not failures.
    pub fn warnings(&self) -> impl Iterator<Item = &ProbeResult> {
        self.results
            .iter()
            .filter(|r| r.severity == Severity::Warning)
    }

    /// Every address that failed in a result that is no refusal (a pool member with a live
    /// sibling, one address of a name, an allowed failure, a backend down before the change):
    /// nginx logs connect errors for these and moves on to the next peer. Not nginx's own
    /// listens: nginx opens those at the reload, so an error connecting there is news.
    pub fn expected_down(&self) -> Vec<String> {
        let accepted = |r: &&ProbeResult| {
            matches!(r.severity, Severity::Warning | Severity::Allowed)
                && r.cause != Some(standing::Cause::OwnListen)
        };
        let mut out: Vec<String> = (self.results.iter().filter(accepted))
            .flat_map(|r| r.addresses.iter().filter(|a| a.status.is_failure()))
            .map(|a| a.address.clone())
            .collect();
        // A relative unix path is probed where the workers open it, and nginx logs it as
        // written (`connect() to unix:run/app.sock failed`): both names are the same peer.
        for r in self.results.iter().filter(accepted) {
            if matches!(r.target, TargetAddr::Unix(ref p) if p.is_relative())
                && r.addresses.iter().any(|a| a.status.is_failure())
            {
                out.push(r.target.to_string());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// True when nothing failed (warnings and allowed failures do not count).
    pub fn is_ok(&self) -> bool {
        self.failures().next().is_none()
    }
}

fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Probe every target; diagnose every failure. Total time is about one `timeout` (plus name
/// resolution) however many targets there are.
pub fn probe_all(targets: &Targets, opts: &ProbeOptions) -> ProbeReport {
    let started = Instant::now();
    let split = per_request::split_by_resolver(&targets.targets, &opts.per_request);
    let targets = split.as_deref().unwrap_or(&targets.targets);
    let resolvers = per_request::resolvers(targets, &opts.per_request);
    let answers = per_request::answers(targets, &resolvers, opts.timeout);
    let plan = verdict::plan(targets, &answers, opts);
    let outcomes = connect::probe_endpoints(&plan.probes, opts.timeout, opts.concurrency);
    let mut results = verdict::assemble(targets, &plan, &outcomes);
    per_request::annotate(&mut results, &resolvers, &answers);
    verdict::judge(&mut results, opts);
    ProbeReport {
        results,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_becomes_a_hint_with_its_place() {
        let finding = Finding {
            file: std::path::Path::new("/etc/nginx/sites-enabled/app").into(),
            line: 12,
            message: "proxy_pass 127.0.0.1:8000 has no scheme".into(),
            hint: Some("write proxy_pass http://127.0.0.1:8000;".into()),
        };
        let hint = Hint::from_finding(&finding);
        assert_eq!(
            hint.message,
            "/etc/nginx/sites-enabled/app:12: proxy_pass 127.0.0.1:8000 has no scheme"
        );
        assert_eq!(hint.suggestion, finding.hint);
    }
}
