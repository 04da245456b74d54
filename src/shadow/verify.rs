//! The candidate's checks through the shadow, and what they mean.
//!
//! Each check goes to the shadow's stand-in for the address it names, with the same Host and
//! SNI, and the shadow's error log is read after it, exactly as verification reads the real
//! one after a reload. A check that fails there is then asked of the running nginx once: if it
//! fails there too the failure is older than the change and refuses nothing; if it passes
//! (or the running nginx does not listen there yet: a new listen has no baseline) the change
//! broke it. [`judge`] makes that decision from the results alone.
//!
//! Only the answer decides. An upstream error the shadow logs while the client still got a
//! good answer is nginx failing over, and the shadow, a fresh nginx, tries every peer again
//! where the running one may have marked a failing peer down long ago and logs nothing: such a
//! line is reported and left to verification after the reload, which reads the running
//! configuration's log over a longer window.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::conf::Remapped;
use super::Shadow;
use crate::errorlog::{Cursors, UpstreamError};
use crate::health::{self, Check, CheckResult, HealthOptions};

/// One check through the shadow.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowCheck {
    pub url: String,
    pub host: String,
    /// Where it was sent in the shadow.
    pub via: String,
    /// The shadow's answer.
    pub shadow: CheckResult,
    /// Upstream errors the shadow logged for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream_errors: Vec<UpstreamError>,
    /// The running nginx's answer to the same request, asked only when the shadow's failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<CheckResult>,
}

impl ShadowCheck {
    /// The shadow's answer fails (502, 504, no answer, a status `--expect-status` excludes).
    pub fn failed(&self) -> bool {
        self.shadow.failed
    }

    /// The running nginx answers this fine, or does not listen there at all: the shadow's
    /// failure is the change's.
    fn broken_by_change(&self) -> bool {
        self.failed() && self.running.as_ref().is_none_or(|r| !r.failed || r.refused)
    }

    /// The server the check stands for and where it is written, `server *.example.test
    /// (location / at sites.conf:12)`: its name as the configuration has it, not the Host
    /// made up for a wildcard or regex name. A `--health` URL has no server: its Host.
    pub fn server(&self) -> String {
        let c = &self.shadow.check;
        let name = if c.server.is_empty() {
            &self.host
        } else {
            &c.server
        };
        match (c.what.as_str(), c.at.as_str()) {
            (_, "") => format!("server {name}"),
            ("" | "server", at) => format!("server {name} ({at})"),
            (what, at) => format!("server {name} ({what} at {at})"),
        }
    }

    /// "HTTP 502" or the error, and the first upstream error logged.
    pub fn answer(&self) -> String {
        let mut what = answer(&self.shadow);
        if let Some(u) = self.upstream_errors.first() {
            what.push_str(&format!(", and logged: {}", short_log(&u.text)));
        }
        what
    }
}

fn answer(r: &CheckResult) -> String {
    match (r.status, &r.error) {
        (Some(code), _) => format!("HTTP {code}"),
        (None, Some(e)) => e.clone(),
        (None, None) => "no answer".into(),
    }
}

/// A log line without its timestamp and pid prefix.
fn short_log(line: &str) -> String {
    match crate::errorlog::split_level(line) {
        Some((_, text)) => text.to_string(),
        None => line.to_string(),
    }
}

/// What the shadow showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowState {
    /// Every check sent through it passed.
    Verified,
    /// A check the running nginx passes fails in it: the change is refused before the reload.
    Refused,
    /// It could not say (it did not start, no check applied, or the configuration depends on
    /// what differs in the shadow); verification after the reload decides.
    NotVerified,
    /// Turned off (`--no-shadow`, `no-shadow = true`, `check --untrusted`).
    Off,
}

/// The shadow's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub state: ShadowState,
    /// Why it refused or could not verify, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_pid: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listens: Vec<Remapped>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ShadowCheck>,
    /// Checks with no stand-in in the shadow (an address no `listen` names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Copying, rewriting and spawning it (on the main thread, while `nginx -t` runs).
    #[serde(rename = "spawn_ms", serialize_with = "crate::report::ms")]
    pub spawn: Duration,
    /// From its start until it served (its master parsed the candidate and a worker accepts).
    #[serde(
        rename = "ready_ms",
        serialize_with = "crate::report::ms_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ready: Option<Duration>,
    /// From the start of the shadow to its checks' end.
    #[serde(rename = "elapsed_ms", serialize_with = "crate::report::ms")]
    pub elapsed: Duration,
}

impl ShadowReport {
    /// A report with no checks run.
    pub fn new(state: ShadowState, reason: Option<String>) -> ShadowReport {
        ShadowReport {
            state,
            reason,
            master_pid: None,
            listens: Vec::new(),
            checks: Vec::new(),
            skipped: Vec::new(),
            spawn: Duration::ZERO,
            ready: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// Send `checks` through the running shadow; for each one that fails, ask the running nginx
/// (reading `running_logs` meanwhile) the same.
pub fn run_checks(
    shadow: &Shadow,
    checks: &[Check],
    running_logs: &[PathBuf],
    opts: &HealthOptions,
) -> (Vec<ShadowCheck>, Vec<String>) {
    let one = HealthOptions {
        rounds: 1,
        ..opts.clone()
    };
    let mut logs = Cursors::open(&[shadow.error_log()]);
    let (mut out, mut skipped) = (Vec::new(), Vec::new());
    for check in checks {
        let Some(routed) = shadow.ports().route_check(check) else {
            skipped.push(check.url.clone());
            continue;
        };
        let via = routed.via();
        let h = health::verify(std::slice::from_ref(&routed), &mut logs, &one);
        let Some(mut result) = h.results.into_iter().next() else {
            skipped.push(check.url.clone());
            continue;
        };
        result.check = check.clone();
        let mut sc = ShadowCheck {
            url: check.url.clone(),
            host: check.host.clone(),
            via,
            shadow: result,
            upstream_errors: h.upstream_errors,
            running: None,
        };
        if sc.failed() {
            let mut theirs = Cursors::open(running_logs);
            let r = health::verify(std::slice::from_ref(check), &mut theirs, &one);
            sc.running = r.results.into_iter().next();
        }
        out.push(sc);
    }
    (out, skipped)
}

/// The decision. `differs`, when set, names what the configuration reads that is not the same
/// in the shadow (`$server_port`): a failure then cannot be blamed on the change.
pub fn judge(checks: &[ShadowCheck], differs: Option<&str>) -> (ShadowState, Option<String>) {
    if let Some(c) = checks.iter().find(|c| c.broken_by_change()) {
        let running = match &c.running {
            Some(r) if r.refused => " (the running nginx does not listen there yet)".to_string(),
            Some(r) => format!(" (the running nginx answers {})", answer(r)),
            None => String::new(),
        };
        let what = format!(
            "{}: GET {} through the shadow nginx answered {}{running}",
            c.server(),
            c.url,
            c.answer()
        );
        return match differs {
            Some(var) => (
                ShadowState::NotVerified,
                Some(format!(
                    "{what}; the configuration reads {var}, which differs in the shadow, so this \
                     is left to verification after the reload"
                )),
            ),
            None => (ShadowState::Refused, Some(what)),
        };
    }
    let passed = checks.iter().filter(|c| !c.failed()).count();
    let older = checks.len() - passed;
    let logged = checks
        .iter()
        .filter(|c| !c.failed() && !c.upstream_errors.is_empty())
        .count();
    if logged > 0 && older == 0 {
        return (
            ShadowState::Verified,
            Some(format!(
                "{logged} checks answered well while the shadow logged upstream errors (nginx \
                 failing over): verification after the reload judges those"
            )),
        );
    }
    match (passed, older) {
        (0, 0) => (
            ShadowState::NotVerified,
            Some("no check applies (no proxied location on a local listen, no --health URL)".into()),
        ),
        (0, _) => (
            ShadowState::NotVerified,
            Some(format!(
                "every check fails in the running nginx too ({older}): the failures are not the change's"
            )),
        ),
        (_, 0) => (ShadowState::Verified, None),
        (_, _) => (
            ShadowState::Verified,
            Some(format!(
                "{older} checks fail in the running nginx too: not the change's"
            )),
        ),
    }
}

/// The first variable the configuration reads whose value differs in the shadow.
pub fn differing_variable(files: &[crate::conf::ConfFile]) -> Option<&'static str> {
    const DIFFERS: [(&str, &[&[u8]]); 2] = [
        ("$server_port", &[b"$server_port", b"${server_port}"]),
        ("$server_addr", &[b"$server_addr", b"${server_addr}"]),
    ];
    DIFFERS.iter().find_map(|(name, spellings)| {
        files
            .iter()
            .any(|f| {
                spellings
                    .iter()
                    .any(|s| f.bytes.windows(s.len()).any(|w| w == *s))
            })
            .then_some(*name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: Option<u16>, error: Option<&str>) -> CheckResult {
        let failed = status.is_none_or(|s| s == 502 || s == 504);
        CheckResult {
            check: Check::plain(
                "http://site.test/".into(),
                "127.0.0.1:80".parse().expect("address"),
                "site.test".into(),
                "/".into(),
                false,
            ),
            status,
            error: error.map(String::from),
            answer: if failed {
                health::Answer::Failed
            } else {
                health::Answer::Passed
            },
            attempts: 1,
            elapsed: Duration::ZERO,
            failed,
            refused: error.is_some_and(|e| e.contains("refused")),
            timed_out: false,
        }
    }

    fn check(shadow: CheckResult, running: Option<CheckResult>) -> ShadowCheck {
        ShadowCheck {
            url: "http://site.test/".into(),
            host: "site.test".into(),
            via: "127.0.0.1:5000".into(),
            shadow,
            upstream_errors: Vec::new(),
            running,
        }
    }

    #[test]
    fn a_failure_the_running_nginx_does_not_have_refuses() {
        let c = check(result(Some(502), None), Some(result(Some(200), None)));
        let (state, why) = judge(&[c], None);
        assert_eq!(state, ShadowState::Refused);
        let why = why.unwrap();
        assert!(
            why.contains("site.test") && why.contains("HTTP 502"),
            "{why}"
        );
        assert!(why.contains("running nginx answers HTTP 200"), "{why}");
    }

    #[test]
    fn a_refusal_names_the_server_as_written_and_its_line_not_the_made_up_host() {
        let mut shadow = result(Some(502), None);
        shadow.check.server = "*.example.test".into();
        shadow.check.what = "location /".into();
        shadow.check.at = "sites/a.conf:12".into();
        let mut c = check(shadow, Some(result(Some(200), None)));
        c.host = "x.example.test".into();
        let why = judge(&[c], None).1.unwrap();
        assert!(
            why.starts_with("server *.example.test (location / at sites/a.conf:12): GET "),
            "{why}"
        );
    }

    #[test]
    fn a_new_listen_has_no_baseline_so_its_failure_is_the_change() {
        let refused = result(
            None,
            Some("connect to 127.0.0.1:80: Connection refused (os error 111)"),
        );
        let c = check(result(Some(502), None), Some(refused));
        assert_eq!(judge(&[c], None).0, ShadowState::Refused);
    }

    #[test]
    fn an_older_failure_refuses_nothing() {
        let ok = check(result(Some(200), None), None);
        let old = check(result(Some(502), None), Some(result(Some(502), None)));
        let (state, why) = judge(&[ok, old.clone()], None);
        assert_eq!(state, ShadowState::Verified);
        assert!(why.unwrap().contains("not the change's"));
        assert_eq!(judge(&[old], None).0, ShadowState::NotVerified);
    }

    #[test]
    fn what_differs_in_the_shadow_makes_a_failure_unverified_not_refused() {
        let c = check(result(Some(502), None), Some(result(Some(200), None)));
        let (state, why) = judge(&[c], Some("$server_port"));
        assert_eq!(state, ShadowState::NotVerified);
        assert!(why.unwrap().contains("$server_port"));
    }

    #[test]
    fn an_upstream_error_behind_a_good_answer_is_failover_not_a_refusal() {
        let mut c = check(result(Some(200), None), None);
        c.upstream_errors.push(UpstreamError {
            level: crate::errorlog::Level::Error,
            kind: crate::errorlog::UpstreamErrorKind::Refused,
            upstream: Some("http://[::1]:8000/".into()),
            server: None,
            request: None,
            text: "connect() failed (111: Connection refused)".into(),
        });
        let (state, why) = judge(&[c], None);
        assert_eq!(state, ShadowState::Verified);
        assert!(why.unwrap().contains("failing over"));
    }

    #[test]
    fn no_checks_verify_nothing() {
        assert_eq!(judge(&[], None).0, ShadowState::NotVerified);
    }

    #[test]
    fn variables_that_differ_are_found_in_any_file() {
        let f = |t: &str| crate::conf::ConfFile {
            path: "/c".into(),
            bytes: std::sync::Arc::from(t.as_bytes()),
        };
        assert_eq!(differing_variable(&[f("proxy_pass http://a;")]), None);
        assert_eq!(
            differing_variable(&[f("x"), f("map ${server_port} $b {}")]),
            Some("$server_port")
        );
    }
}
