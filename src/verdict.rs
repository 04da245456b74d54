//! The verdict on a reload: what the change did, measured as the difference between the
//! checks run against the running configuration just before the signal (the [`Baseline`]) and
//! the same checks after it.
//!
//! Passed before and fails after: the change broke it, roll back (a 5xx after an answer
//! without one is such a failure: `health::erring_since`). Failed before and fails
//! after, the same way or another (502 before, 504 after): it was failing already, so it is
//! reported (before and after), never rolled back, and never blamed on the backend by guess.
//! A check that only ran out of `--health-timeout` before (a slow site, whose clients wait for
//! their answer) and that fails otherwise after (nginx's own 504) was made worse by the change.
//! The shadow nginx compares its answer with the running nginx's by the same function
//! ([`difference`]), so a change it lets through is not rolled back for those answers, and one
//! that would be rolled back is refused before the reload. A check the running configuration
//! could not answer (nginx refused the connection: nothing listened there yet) has no baseline,
//! so any failure of it is the change's. An upstream error in the log is the change's unless the
//! baseline logged the same one; one it did log is a warning (clients got an answer through
//! failover, before and after).
//!
//! A check fails only when its answer and the ones asked again after it all failed (see
//! `health::judge`); one that failed and then passed is intermittent, before the change or
//! after it: a warning that counts the failed answers on both sides ([`Intermittent`]), never a
//! rollback or an exit 4 alone.
//!
//! Pure: the baseline, the results and the reload's proof in, a decision out. The outcome and
//! the exit status after a reload are chosen here and nowhere else: [`Kept::outcome`] for a
//! change that stays, [`RollbackVerdict::outcome`] for one that was rolled back.

use serde::Serialize;

pub mod alerts;
mod coverage;
pub use alerts::Alert;
pub use coverage::{coverage, Affected, AsksCertificate, Coverage, LeftOut, NotVerified};

use crate::errorlog::UpstreamError;
use crate::exit::Exit;
use crate::health::{Check, CheckResult, HealthReport, Known};
use crate::reload::Proof;
use crate::report::Outcome;

/// What one check answered, enough to tell two failures apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    pub failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `HTTP 502`, `connect to 127.0.0.1:80: Connection refused (os error 111)`, ...
    pub answer: String,
    /// No answer within `--health-timeout` (see [`CheckResult::timed_out`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// What to do about it, when the answer shows why (see [`CheckResult::hint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// nginx refused the connection: nothing listened there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// Over TLS, the certificate did not name the Host (see [`CheckResult::wrong_name`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wrong_name: bool,
}

impl Seen {
    /// A result of the running configuration as a baseline: none when nginx refused the
    /// connection of a check made from the configuration (it is of a listen only the change
    /// adds). An explicit `--health` URL is the operator's, whichever configuration runs: a
    /// refused one is a failure it had before the change.
    pub fn before(r: &CheckResult) -> Option<Seen> {
        // A check another server answered before the change (a server, Host or listen the
        // change adds: a catch-all's `return 444` or refused handshake) has no baseline: that
        // server's failure is not this one's.
        (!r.check.fresh && (!r.refused || r.check.server.is_empty())).then(|| Seen::of(r))
    }

    pub fn of(r: &CheckResult) -> Seen {
        Seen {
            failed: r.failed,
            status: r.status,
            answer: r.reply(),
            timed_out: r.timed_out,
            hint: r.hint.clone(),
            refused: r.refused,
            wrong_name: r.wrong_name.is_some(),
        }
    }

    /// Two failures are the same when they carry the same status, or neither had one and
    /// both or neither ran out of `--health-timeout` (a slow answer turned into a closed
    /// connection is the change's).
    fn same_failure(&self, other: &Seen) -> bool {
        self.failed
            && other.failed
            && self.status == other.status
            && self.timed_out == other.timed_out
            && self.refused == other.refused
    }

    /// Failing before the change and after it, whichever way: the site failed for its clients
    /// before the change (one that answered 502 and now answers 504 was broken already). A check that only ran out of `--health-timeout` before is
    /// no such failure: a slow site answers its clients, so another failure after it is the
    /// change's.
    /// Refused before and refused after is failing as before; refused before and answered
    /// with a failure after is the change's (something listens there now, and fails).
    fn fails_as_before(&self, after: &Seen) -> bool {
        self.failed
            && after.failed
            && (!self.timed_out || after.timed_out)
            && (!self.refused || after.refused)
    }

    /// Slower than `--health-timeout` both times: the tool's limit, not a failure anyone saw.
    fn slow_both(&self, other: &Seen) -> bool {
        self.same_failure(other) && self.timed_out
    }
}

/// What a check's answer after the change says of the change, against its answer before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// It passes.
    Passes,
    /// No answer within `--health-timeout` before and after, the same way: the tool's limit,
    /// not a failure anyone saw (a warning, not verified).
    Slow,
    /// It failed before and fails after (the same way or another): not the change's.
    AsBefore,
    /// The change's: it fails, and it passed before, had no baseline, or was only slow
    /// before while nginx fails it now.
    Worse,
}

/// The one comparison of a check's answer before the change (`None`: no baseline) with its
/// answer after it, made by the verdict after the reload and by the shadow (the running
/// nginx's answer against the shadow's).
pub fn difference(before: Option<&Seen>, after: &Seen) -> Difference {
    match before {
        _ if !after.failed => Difference::Passes,
        // No answer in time with nothing to compare (a new site): it may be slow and healthy,
        // as a site slow before and after is; not verified, never a rollback or refusal.
        None if after.timed_out => Difference::Slow,
        Some(b) if b.slow_both(after) => Difference::Slow,
        Some(b) if b.fails_as_before(after) => Difference::AsBefore,
        _ => Difference::Worse,
    }
}

/// The running configuration's answer to one check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Before {
    Answered(Seen),
    /// nginx refused the connection: the running configuration does not listen there, so
    /// there is nothing to compare with (a new `listen`).
    Unanswerable,
}

/// How one check's answers went over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Answers that failed.
    pub failed: u32,
    /// Answers in all.
    pub of: u32,
    /// The first that failed (`HTTP 502`, the error), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
}

impl Tally {
    pub fn of(r: &CheckResult) -> Tally {
        Tally {
            failed: r.failures,
            of: r.attempts,
            first: r.first_failure.clone(),
        }
    }

    fn add(&mut self, other: Tally) {
        self.failed += other.failed;
        self.of += other.of;
        self.first = self.first.take().or(other.first);
    }

    /// `1 of 4 WHAT (HTTP 502)`: the first failure only when one failed.
    fn count(&self, what: &str) -> String {
        match &self.first {
            Some(first) if self.failed > 0 => {
                format!("{} of {}{what} ({first})", self.failed, self.of)
            }
            _ => format!("{} of {}{what}", self.failed, self.of),
        }
    }
}

/// The checks as the running configuration answered them before the signal, and the
/// upstream errors it logged meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// By the check's URL, which names everything that tells two checks apart.
    checks: Vec<(String, Before)>,
    /// How many of each check's answers failed, by URL.
    tallies: Vec<(String, Tally)>,
    errors: Vec<UpstreamError>,
    /// Whether the checks ran at all: the configuration nginx ran before the signal was
    /// one to compare with.
    taken: bool,
    /// What nginx ran before the signal is not known (loaded outside safe-reload, or an
    /// interrupted run's candidate): a check that gets no answer in time after the reload is
    /// held against the change too, not excused as a slow site's, and the rollback to
    /// last-good decides.
    unknown: bool,
    /// The URLs of the checks whose handshake got a certificate that named their Host, whichever
    /// server answered them (a name the change moves to another server keeps its clients'
    /// certificate to lose).
    named: Vec<String>,
    /// The URLs of the checks beside which a TLS 1.2 handshake completed (see
    /// [`crate::health::Tls12`]).
    tls12: Vec<String>,
    /// The checks that got an answer over HTTP/2 beside their own (see `health::H2`).
    h2: Vec<String>,
    /// The URLs of the checks that got a page: a 2xx with a body (see
    /// [`CheckResult::paged`]).
    paged: Vec<String>,
}

impl Baseline {
    /// From the baseline window: per check its first failure, else its first answer. A
    /// refused connection means the running configuration does not listen there.
    pub fn of(window: &HealthReport) -> Baseline {
        let mut checks: Vec<(String, Before)> = Vec::new();
        let mut tallies: Vec<(String, Tally)> = Vec::new();
        let mut at = std::collections::HashMap::new();
        for r in &window.results {
            match tallies.iter_mut().find(|(u, _)| *u == r.check.url) {
                Some((_, t)) => t.add(Tally::of(r)),
                None => tallies.push((r.check.url.clone(), Tally::of(r))),
            }
            let before = Seen::before(r).map_or(Before::Unanswerable, Before::Answered);
            match at.get(r.check.url.as_str()) {
                None => {
                    at.insert(r.check.url.as_str(), checks.len());
                    checks.push((r.check.url.clone(), before));
                }
                Some(&i) => {
                    let had_failed = matches!(&checks[i].1, Before::Answered(s) if s.failed);
                    if r.failed && !had_failed {
                        checks[i].1 = before;
                    }
                }
            }
        }
        // What an intermittent check logged is as much the running configuration's as the
        // rest: an upstream error after the change that it logged too is not news.
        let intermittent = (window.results.iter()).flat_map(|r| r.intermittent_errors.iter());
        // The URLs of the checks with an answer that did what `got` says.
        let urls = |got: fn(&CheckResult) -> bool| -> Vec<String> {
            let mut urls: Vec<String> = (window.results.iter())
                .filter(|r| got(r))
                .map(|r| r.check.url.clone())
                .collect();
            urls.dedup();
            urls
        };
        Baseline {
            named: urls(CheckResult::named),
            tls12: urls(CheckResult::tls12_completed),
            h2: urls(CheckResult::h2_answered),
            paged: urls(CheckResult::paged),
            checks,
            tallies,
            errors: (window.upstream_errors.iter().chain(intermittent))
                .cloned()
                .collect(),
            taken: true,
            unknown: false,
        }
    }

    /// No baseline: what nginx ran before the signal is nothing to compare with (`recover`:
    /// it may be an interrupted run's unverified candidate). Every failure is the change's,
    /// and a rollback verifies every check again.
    pub fn none() -> Baseline {
        Baseline::default()
    }

    /// No baseline because what nginx runs is not known (see [`Baseline::none`]): every
    /// failure after the reload is the change's, a timeout too.
    pub fn unknown() -> Baseline {
        Baseline {
            unknown: true,
            ..Baseline::default()
        }
    }

    /// How the check's answers went before the change, when it was answered.
    fn tally(&self, url: &str) -> Option<&Tally> {
        self.before(url)?;
        (self.tallies.iter()).find_map(|(u, t)| (u == url).then_some(t))
    }

    /// The status a check answered before the change, when that answer passed.
    fn passed(&self, url: &str) -> Option<u16> {
        self.before(url)
            .filter(|b| !b.failed)
            .and_then(|b| b.status)
    }

    fn before(&self, url: &str) -> Option<&Seen> {
        self.checks.iter().find_map(|(u, b)| match b {
            Before::Answered(seen) if u == url => Some(seen),
            _ => None,
        })
    }

    /// The checks a rollback (putting the running configuration back) verifies again, and the
    /// ones it drops: those nginx refused before the change, which belong to listens only the
    /// rejected configuration had (or, for a `--health` URL, to no listen of either). A check the baseline window closed before is kept.
    pub fn applicable(&self, checks: Vec<Check>) -> (Vec<Check>, Vec<Check>) {
        let unanswerable = |url: &str| {
            (self.checks.iter()).any(|(u, b)| {
                u == url
                    && matches!(
                        b,
                        Before::Unanswerable | Before::Answered(Seen { refused: true, .. })
                    )
            })
        };
        checks
            .into_iter()
            .partition(|c| !self.taken || !unanswerable(&c.url))
    }

    /// Whether the check got a certificate that named its Host before the change.
    fn named(&self, url: &str) -> bool {
        self.named.iter().any(|u| u == url)
    }

    /// Whether a TLS 1.2 handshake completed beside the check before the change.
    fn tls12(&self, url: &str) -> bool {
        self.tls12.iter().any(|u| u == url)
    }

    fn logged(&self, e: &UpstreamError) -> bool {
        self.errors.iter().any(|b| same_error(b, e))
    }
}

impl Known for Baseline {
    fn failure(&self, result: &CheckResult) -> bool {
        let before = self.before(&result.check.url);
        match difference(before, &Seen::of(result)) {
            // Not known to be slow when what ran before is not known (see `unknown`).
            Difference::Slow => !self.unknown,
            Difference::AsBefore => true,
            _ => false,
        }
    }

    fn upstream_error(&self, error: &UpstreamError) -> bool {
        self.logged(error)
    }

    fn passed_before(&self, result: &CheckResult) -> Option<u16> {
        (!result.check.made_up_in_new)
            .then(|| self.passed(&result.check.url))
            .flatten()
    }

    fn named_before(&self, result: &CheckResult) -> bool {
        self.named(&result.check.url)
    }

    fn tls12_before(&self, result: &CheckResult) -> bool {
        self.tls12(&result.check.url)
    }

    fn h2_before(&self, result: &CheckResult) -> bool {
        self.h2.contains(&result.check.url)
    }

    fn paged_before(&self, result: &CheckResult) -> bool {
        !result.check.new_backend && self.paged.contains(&result.check.url)
    }
}

/// What a rollback's re-verification does not count against the restored configuration:
/// a check that failed before the change (it may fail any way now: the change is gone), and
/// upstream errors the baseline logged or the rejected change did (its old workers finish
/// their requests while the restored ones start).
pub struct AfterRollback<'a> {
    pub baseline: &'a Baseline,
    pub candidate: Option<&'a HealthReport>,
}

impl Known for AfterRollback<'_> {
    fn failure(&self, result: &CheckResult) -> bool {
        self.baseline
            .before(&result.check.url)
            .is_some_and(|b| b.failed)
    }

    fn passed_before(&self, result: &CheckResult) -> Option<u16> {
        self.baseline.passed(&result.check.url)
    }

    fn named_before(&self, result: &CheckResult) -> bool {
        self.baseline.named(&result.check.url)
    }

    fn tls12_before(&self, result: &CheckResult) -> bool {
        self.baseline.tls12(&result.check.url)
    }

    fn h2_before(&self, result: &CheckResult) -> bool {
        self.baseline.h2_before(result)
    }

    fn paged_before(&self, result: &CheckResult) -> bool {
        self.baseline.paged_before(result)
    }

    fn upstream_error(&self, error: &UpstreamError) -> bool {
        self.baseline.logged(error)
            || self
                .candidate
                .is_some_and(|c| c.upstream_errors.iter().any(|k| same_error(k, error)))
    }
}

/// The same upstream failure: the same kind, towards the same peer (its address, whatever
/// URI the request had: a peer that refuses `/a` refuses `/b`), from the same server. The
/// client, time and request differ from line to line.
pub fn same_error(a: &UpstreamError, b: &UpstreamError) -> bool {
    let peer = |e: &UpstreamError| e.peer().or_else(|| e.upstream.clone());
    a.kind == b.kind && peer(a) == peer(b) && a.server == b.server
}

/// One check, before the change and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compared {
    pub url: String,
    pub host: String,
    /// `None`: no baseline (nothing listened there before the change, or no baseline was
    /// taken at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Seen>,
    pub after: Seen,
    /// Whether a baseline was taken (see [`Baseline::none`]).
    #[serde(skip)]
    pub baseline_taken: bool,
}

impl Compared {
    /// No answer within `--health-timeout`, and none before the change either, or nothing
    /// asked before it: a slow site's, as far as anyone can tell.
    pub fn only_slow(&self) -> bool {
        match &self.before {
            Some(b) => b.slow_both(&self.after),
            None => self.after.timed_out,
        }
    }

    /// What happened to this check, in words: `URL answered HTTP 502 before this change and
    /// still does`.
    pub fn describe(&self) -> String {
        let url = &self.url;
        let (after, before) = (&self.after, self.before.as_ref());
        match before {
            None if !self.baseline_taken && after.timed_out => format!(
                "{url} did not answer within --health-timeout ({}); raise --health-timeout if \
                 the site is only slow",
                after.answer
            ),
            None if !self.baseline_taken => format!("{url} answered {}", after.answer),
            None => format!(
                "{url} answered {} (nothing answered there before this change)",
                after.answer
            ),
            Some(b) if b.slow_both(after) => format!(
                "{url} did not answer within --health-timeout before this change nor after it \
                 ({}): not verified; raise --health-timeout if the site is only slow",
                after.answer
            ),
            Some(b) if b.same_failure(after) && b.status.is_some() => {
                format!(
                    "{url} answered {} before this change and still does",
                    b.answer
                )
            }
            Some(b) if b.same_failure(after) && b.answer == after.answer => format!(
                "{url} got no answer before this change and still does not ({})",
                after.answer
            ),
            Some(b) if b.same_failure(after) => format!(
                "{url} got no answer before this change ({}) and still does not ({})",
                b.answer, after.answer
            ),
            Some(b) if b.fails_as_before(after) => format!(
                "{url} failed before this change ({}) and still fails ({})",
                b.answer, after.answer
            ),
            Some(b) if b.refused => format!(
                "{url} answered {}{} (nothing answered there before this change: {})",
                after.answer,
                slower(after),
                b.answer
            ),
            Some(b) if b.timed_out => format!(
                "{url} did not answer within --health-timeout before this change ({}: slow, \
                 its clients wait for the answer) and answered {} after it{}",
                b.answer,
                after.answer,
                slower(after)
            ),
            Some(b) => format!(
                "{url} answered {} before this change and {} after it{}",
                b.answer,
                after.answer,
                slower(after)
            ),
        }
    }
}

/// A check that failed and then passed when asked again, before the change or after it: a
/// flaky backend. A warning with the counts of both sides; it neither rolls back nor exits 4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Intermittent {
    pub url: String,
    pub host: String,
    /// `None`: no baseline (see [`Compared::before`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Tally>,
    pub after: Tally,
    /// Upstream errors nginx logged for the answers that failed after.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logged: Vec<UpstreamError>,
    #[serde(skip)]
    pub baseline_taken: bool,
    /// What the answers that passed say (a check that answered only when waited for longer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Intermittent {
    /// `URL: 1 of 4 answers failed (HTTP 502) after the change; 0 of 3 before`, where `after`
    /// says what the answers came after.
    pub fn describe(&self, after: &str) -> String {
        let before = match &self.before {
            Some(b) => format!("; {} before", b.count("")),
            None if self.baseline_taken => "; nothing answered there before".into(),
            None => String::new(),
        };
        format!(
            "{}: {} after {after}{before}",
            self.url,
            self.after.count(" answers failed")
        )
    }
}

/// The checks of `after` that did not fail there and answered intermittently before the
/// change or after it.
fn intermittent(before: &Baseline, after: &HealthReport) -> Vec<Intermittent> {
    (after.results.iter().filter(|r| !r.failed))
        .filter_map(|r| {
            let url = &r.check.url;
            let earlier = before.tally(url).cloned();
            let flaky_before = before.before(url).is_some_and(|b| !b.failed)
                && earlier.as_ref().is_some_and(|t| t.failed > 0);
            (r.intermittent() || flaky_before).then(|| Intermittent {
                url: url.clone(),
                host: r.check.host.clone(),
                before: earlier,
                after: Tally::of(r),
                logged: r.intermittent_errors.clone(),
                baseline_taken: before.taken,
                hint: r.hint.clone(),
            })
        })
        .collect()
}

/// After an answer that ran out of `--health-timeout`: the limit is the tool's.
fn slower(after: &Seen) -> &'static str {
    if after.timed_out {
        " (slower than --health-timeout: raise it if the site is only slow)"
    } else {
        ""
    }
}

/// Something the change made worse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// The reload did not take effect.
    NotLive { reason: String },
    /// A check that passed before and fails now, or has no baseline and fails.
    Check(Compared),
    /// An upstream error the running configuration did not log.
    UpstreamError(UpstreamError),
}

impl Cause {
    pub fn describe(&self) -> String {
        match self {
            Cause::NotLive { reason } => format!("the reload did not take effect: {reason}"),
            Cause::Check(c) => c.describe(),
            Cause::UpstreamError(e) => format!(
                "nginx logged an upstream error the running configuration did not: {}",
                e.text
            ),
        }
    }
}

/// A change that stays live: nothing checked is worse than before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// Checks that failed before the change and fail now (the same way or another).
    pub still_failing: Vec<Compared>,
    /// Checks that got no answer within `--health-timeout` before the change and after it:
    /// not verified, and no proof that clients get no answer (a slow site answers them
    /// later), so no reason to call an operator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slow: Vec<Compared>,
    /// Upstream errors the baseline logged too (clients got an answer through failover):
    /// warnings, each once.
    pub known_errors: Vec<UpstreamError>,
    /// `[emerg]` lines nginx logged while loading the change, which it loaded all the same
    /// (new workers run it): something the configuration asks that nginx could not do, for
    /// the operator to read; a warning, not a failed reload.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub emerg: Vec<String>,
    /// `[alert]` lines the new workers (or the master) logged after the reload, each with the
    /// directive it names: warnings (see `alerts`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<Alert>,
    /// Checks that failed and then passed when asked again, before the change or after it:
    /// warnings with the counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intermittent: Vec<Intermittent>,
}

impl Kept {
    /// Exit 0 when every check is as good as before (one that was slower than
    /// `--health-timeout` before and after is a warning); 4 when a site failed before the
    /// change and still does (502, 504, no answer): nothing to roll back, but an operator must
    /// act.
    pub fn outcome(&self) -> (Outcome, Exit) {
        if self.still_failing.is_empty() {
            (Outcome::Reloaded, Exit::Ok)
        } else {
            (Outcome::AlreadyFailing, Exit::MustAct)
        }
    }
}

/// The decision after the reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Verdict {
    Keep(Kept),
    /// The change made something worse (never empty).
    RollBack {
        causes: Vec<Cause>,
    },
}

impl Verdict {
    /// Why the change is rolled back, in one line; `None` when it stays.
    pub fn reason(&self) -> Option<String> {
        let Verdict::RollBack { causes } = self else {
            return None;
        };
        let first = causes.first().map(Cause::describe).unwrap_or_default();
        Some(match causes.first() {
            Some(Cause::NotLive { .. }) => first,
            _ => format!("verification through nginx failed: {first}"),
        })
    }
}

/// What the reload did, judged against the baseline.
pub fn after_reload(before: &Baseline, after: Option<&HealthReport>, proof: &Proof) -> Verdict {
    if !proof.took_effect {
        let reason = proof
            .reason
            .clone()
            .unwrap_or_else(|| "no new workers".into());
        return Verdict::RollBack {
            causes: vec![Cause::NotLive { reason }],
        };
    }
    let Some(after) = after else {
        return Verdict::Keep(Kept {
            emerg: proof.emerg.clone(),
            ..Kept::default()
        });
    };
    let (compared, known_errors, new_errors) = compare(before, after, &[]);
    let mut causes = Vec::new();
    let mut kept = Kept {
        known_errors,
        emerg: proof.emerg.clone(),
        intermittent: intermittent(before, after),
        ..Kept::default()
    };
    for c in compared {
        // Served alike before and after, a 2xx or 3xx that only `--expect-status` does not
        // list (`--expect-status 410` for an endpoint retired on purpose): the site answers
        // as it did, nothing an operator must act on; its server is not verified.
        let status = c.before.as_ref().and_then(|b| b.status);
        if status == c.after.status && matches!(status, Some(200..=399)) {
            continue;
        }
        match difference(c.before.as_ref(), &c.after) {
            Difference::Slow if before.unknown => causes.push(Cause::Check(c)),
            Difference::Slow => kept.slow.push(c),
            Difference::AsBefore => kept.still_failing.push(c),
            Difference::Passes | Difference::Worse => causes.push(Cause::Check(c)),
        }
    }
    causes.extend(new_errors.into_iter().map(Cause::UpstreamError));
    if causes.is_empty() {
        Verdict::Keep(kept)
    } else {
        Verdict::RollBack { causes }
    }
}

/// The failed checks of `after`, each with its baseline; the upstream errors of `after` split
/// into those the baseline (or `also_known`) logged, once each, and the others.
fn compare(
    before: &Baseline,
    after: &HealthReport,
    also_known: &[UpstreamError],
) -> (Vec<Compared>, Vec<UpstreamError>, Vec<UpstreamError>) {
    let compared = (after.results.iter().filter(|r| r.failed))
        .map(|r| Compared {
            url: r.check.url.clone(),
            host: r.check.host.clone(),
            before: before.before(&r.check.url).cloned(),
            after: Seen::of(r),
            baseline_taken: before.taken,
        })
        .collect();
    let (mut known, mut new) = (Vec::<UpstreamError>::new(), Vec::<UpstreamError>::new());
    for e in &after.upstream_errors {
        let list = if before.logged(e) || also_known.iter().any(|k| same_error(k, e)) {
            &mut known
        } else {
            &mut new
        };
        if !list.iter().any(|k| same_error(k, e)) {
            list.push(e.clone());
        }
    }
    (compared, known, new)
}

/// How far a rollback got, as the transaction saw it.
#[derive(Debug, Clone, Copy)]
pub enum Restored<'a> {
    /// There is no last good snapshot.
    NoLastGood,
    /// The restored files do not match the snapshot; nginx was not reloaded again.
    FilesDiffer,
    /// Restored, tested, signalled: the proof and what the re-verification found.
    Reloaded {
        proof: &'a Proof,
        health: Option<&'a HealthReport>,
    },
}

/// The decision after a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RollbackVerdict {
    /// The restored configuration is live and back to its baseline; checks that failed
    /// before the change still fail the same way. `emerg`: lines nginx logged while loading
    /// it, which it loaded all the same (see [`Kept::emerg`]).
    Back {
        still_failing: Vec<Compared>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        emerg: Vec<String>,
        /// Checks of the restored configuration that answered intermittently (see
        /// [`Kept::intermittent`]).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        intermittent: Vec<Intermittent>,
    },
    NoLastGood,
    FilesDiffer,
    /// Reloading the restored configuration did not take effect.
    NotLive {
        reason: String,
    },
    /// The restored configuration fails checks that passed in the baseline, or logs upstream
    /// errors neither the baseline nor the rejected change logged.
    Worse {
        causes: Vec<Cause>,
    },
}

/// Where a rollback left things. `candidate` is what the rejected change's window found:
/// its upstream errors can still be logged by its old workers finishing their requests.
pub fn after_rollback(
    before: &Baseline,
    candidate: Option<&HealthReport>,
    restored: Restored,
) -> RollbackVerdict {
    let (proof, health) = match restored {
        Restored::NoLastGood => return RollbackVerdict::NoLastGood,
        Restored::FilesDiffer => return RollbackVerdict::FilesDiffer,
        Restored::Reloaded { proof, health } => (proof, health),
    };
    if !proof.took_effect {
        let reason = proof
            .reason
            .clone()
            .unwrap_or_else(|| "no new workers".into());
        return RollbackVerdict::NotLive { reason };
    }
    let emerg = proof.emerg.clone();
    let Some(health) = health else {
        return RollbackVerdict::Back {
            still_failing: Vec::new(),
            emerg,
            intermittent: Vec::new(),
        };
    };
    let candidate_errors = candidate.map_or(&[][..], |c| &c.upstream_errors[..]);
    let (compared, _, new_errors) = compare(before, health, candidate_errors);
    let mut causes = Vec::new();
    let mut still_failing = Vec::new();
    // What nginx ran before the change is not known (loaded outside safe-reload): a check
    // the change's configuration got no answer to in time, and the restored one neither, is
    // a slow site's as far as anyone can tell, not a rollback that made things worse.
    // And one the restored configuration fails as the change's did (the same 502, the same
    // 500): the change was held to account for it, and last-good shows it was not the cause.
    let slow_under_change = |c: &Compared| {
        before.unknown
            && candidate.is_some_and(|h| {
                (h.results.iter()).any(|r| {
                    let same =
                        (r.timed_out && c.after.timed_out) || Seen::of(r).same_failure(&c.after);
                    r.check.url == c.url && r.failed && same
                })
            })
    };
    // No baseline at all (`recover` after a kill: what ran before the change was never
    // asked): a check the restored configuration gets no answer to in time is as slow as
    // a new site's, not verified, never a rollback that made things worse.
    for c in compared {
        match &c.before {
            Some(b) if b.failed => still_failing.push(c),
            None if slow_under_change(&c) || (!c.baseline_taken && c.only_slow()) => {
                still_failing.push(c)
            }
            _ => causes.push(Cause::Check(c)),
        }
    }
    causes.extend(new_errors.into_iter().map(Cause::UpstreamError));
    if causes.is_empty() {
        RollbackVerdict::Back {
            still_failing,
            emerg,
            intermittent: intermittent(before, health),
        }
    } else {
        RollbackVerdict::Worse { causes }
    }
}

impl RollbackVerdict {
    /// Exit 3 when the restored configuration is back to its baseline; 4 (an operator must
    /// act) when it could not be restored, reloaded, or is worse than before the change.
    pub fn outcome(&self) -> (Outcome, Exit) {
        match self {
            RollbackVerdict::Back { .. } => (Outcome::RolledBack, Exit::RolledBack),
            _ => (Outcome::RollbackFailed, Exit::MustAct),
        }
    }

    /// Where things stand, in words an operator can act on; `good` is the restored snapshot.
    pub fn state(&self, good: Option<&str>) -> String {
        let good = good.unwrap_or("?");
        match self {
            RollbackVerdict::Back { still_failing, .. } if still_failing.is_empty() => {
                format!("the last good configuration ({good}) is live and verified")
            }
            // Only slower than --health-timeout, before and after or with nothing asked
            // before: the tool's limit, nothing an operator saw fail.
            RollbackVerdict::Back { still_failing, .. }
                if still_failing.iter().all(Compared::only_slow) =>
            {
                format!(
                    "the last good configuration ({good}) is live and back to how it was \
                     before this change; not verified: {}",
                    list(still_failing.iter().map(Compared::describe))
                )
            }
            RollbackVerdict::Back { still_failing, .. } => format!(
                "the last good configuration ({good}) is live and back to how it was before \
                 this change; {}: an operator must look at it, the change was not the cause",
                list(still_failing.iter().map(Compared::describe))
            ),
            RollbackVerdict::NoLastGood => {
                "there is no known-good snapshot to go back to: the failing configuration is on \
                 disk and may be live. Fix it, or restore a snapshot with `safe-reload rollback ID`"
                    .into()
            }
            RollbackVerdict::FilesDiffer => {
                "the restored files do not match the last-good snapshot (see restore); nginx was \
                 not reloaded again"
                    .into()
            }
            RollbackVerdict::NotLive { reason } => format!(
                "reloading the last good configuration failed: the reload did not take effect: \
                 {reason}"
            ),
            RollbackVerdict::Worse { causes } => format!(
                "the last good configuration ({good}) is live but worse than before this \
                 change: {}",
                list(causes.iter().map(Cause::describe))
            ),
        }
    }
}

/// Items joined with `; `.
fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errorlog::{Level, UpstreamErrorKind};
    use std::time::Duration;

    /// A check made from the configuration (of server `site.test`), and its result.
    fn result(url: &str, status: Option<u16>, refused: bool) -> CheckResult {
        let mut check = Check::plain(
            url.into(),
            "127.0.0.1:80".parse().unwrap(),
            "site.test".into(),
            "/".into(),
            false,
        );
        check.server = "site.test".into();
        let failed = crate::health::is_failure(status, None);
        CheckResult {
            check,
            answer: if failed {
                crate::health::Answer::Failed
            } else {
                crate::health::Answer::Passed
            },
            attempts: 1,
            failures: u32::from(crate::health::is_failure(status, None)),
            first_failure: None,
            intermittent_errors: Vec::new(),
            status,
            error: status
                .is_none()
                .then(|| "connect: Connection refused".to_string()),
            elapsed: Duration::ZERO,
            failed: crate::health::is_failure(status, None),
            refused,
            timed_out: false,
            hint: None,
            wrong_name: None,
            tls12: Default::default(),
            h2: Default::default(),
            empty: false,
        }
    }

    fn timed_out(url: &str) -> CheckResult {
        CheckResult {
            error: Some("read: timed out after 2s".into()),
            timed_out: true,
            ..result(url, None, false)
        }
    }

    fn window(results: Vec<CheckResult>, errors: Vec<UpstreamError>) -> HealthReport {
        HealthReport {
            passed: false,
            results,
            not_checked: Vec::new(),
            upstream_errors: errors,
            expected_upstream_errors: Vec::new(),
            rounds: 1,
            elapsed: Duration::ZERO,
        }
    }

    fn error(upstream: &str) -> UpstreamError {
        UpstreamError {
            level: Level::Error,
            kind: UpstreamErrorKind::Refused,
            upstream: Some(upstream.into()),
            server: Some("site.test".into()),
            request: Some("GET / HTTP/1.1".into()),
            text: format!("connect() failed (111: Connection refused), upstream: \"{upstream}\""),
        }
    }

    fn live() -> Proof {
        Proof {
            took_effect: true,
            master: 1,
            old_workers: vec![2],
            new_workers: vec![3],
            emerg: Vec::new(),
            alerts: Vec::new(),
            elapsed: Duration::ZERO,
            reason: None,
            untouched: false,
        }
    }

    const A: &str = "http://a.test/";
    const B: &str = "http://b.test/";

    #[test]
    fn passed_before_and_fails_after_is_caused_and_rolls_back() {
        let before = Baseline::of(&window(vec![result(A, Some(200), false)], vec![]));
        let after = window(vec![result(A, Some(502), false)], vec![]);
        let v = after_reload(&before, Some(&after), &live());
        let Verdict::RollBack { causes } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].describe(),
            "http://a.test/ answered HTTP 200 before this change and HTTP 502 after it"
        );
        assert!(v
            .reason()
            .unwrap()
            .starts_with("verification through nginx failed"));
    }

    #[test]
    fn failing_the_same_way_before_and_after_is_kept_and_exits_4_without_blame() {
        let before = Baseline::of(&window(
            vec![result(A, Some(200), false), result(B, Some(502), false)],
            vec![],
        ));
        let after = window(
            vec![result(A, Some(200), false), result(B, Some(502), false)],
            vec![],
        );
        let v = after_reload(&before, Some(&after), &live());
        let Verdict::Keep(kept) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(kept.outcome(), (Outcome::AlreadyFailing, Exit::MustAct));
        let said = kept.still_failing[0].describe();
        assert_eq!(
            said,
            "http://b.test/ answered HTTP 502 before this change and still does"
        );
        assert!(!said.contains("backend is failing"));
        assert!(v.reason().is_none());
        // The window goes on past a failure the baseline already had.
        assert!(before.failure(&result(B, Some(502), false)));
        assert!(!before.failure(&result(A, Some(502), false)));
    }

    #[test]
    fn slower_than_the_timeout_before_and_after_is_a_warning_not_a_page() {
        let before = Baseline::of(&window(vec![timed_out(A), result(B, None, false)], vec![]));
        let after = window(vec![timed_out(A), result(B, None, false)], vec![]);
        let Verdict::Keep(kept) = after_reload(&before, Some(&after), &live()) else {
            panic!()
        };
        assert_eq!(kept.slow.len(), 1);
        assert!(kept.slow[0].describe().contains("raise --health-timeout"));
        // B closed without an answer before and after: that one is still an operator's.
        assert_eq!(kept.still_failing.len(), 1);
        let only_slow = Baseline::of(&window(vec![timed_out(A)], vec![]));
        let after = window(vec![timed_out(A)], vec![]);
        let Verdict::Keep(kept) = after_reload(&only_slow, Some(&after), &live()) else {
            panic!()
        };
        assert_eq!(kept.outcome(), (Outcome::Reloaded, Exit::Ok));
        // Answered before, too slow after: the change's, and the reason names the limit.
        let answered = Baseline::of(&window(vec![result(A, Some(200), false)], vec![]));
        let v = after_reload(&answered, Some(&after), &live());
        assert!(v.reason().unwrap().contains("slower than --health-timeout"));
        // Slow before, no answer at all after: another failure, the change's.
        let after = window(vec![result(A, None, false)], vec![]);
        assert!(matches!(
            after_reload(&only_slow, Some(&after), &live()),
            Verdict::RollBack { .. }
        ));
    }

    #[test]
    fn only_slow_before_and_failed_by_nginx_after_is_the_change_and_says_so() {
        let slow = Seen::of(&timed_out(A));
        let b504 = Seen::of(&result(A, Some(504), false));
        assert_eq!(difference(Some(&slow), &b504), Difference::Worse);
        assert_eq!(difference(Some(&slow), &slow), Difference::Slow);
        assert_eq!(difference(Some(&b504), &slow), Difference::AsBefore);
        assert_eq!(difference(None, &b504), Difference::Worse);
        let ok = Seen::of(&result(A, Some(200), false));
        assert_eq!(difference(Some(&b504), &ok), Difference::Passes);
        let before = Baseline::of(&window(vec![timed_out(A)], vec![]));
        let after = window(vec![result(A, Some(504), false)], vec![]);
        let v = after_reload(&before, Some(&after), &live());
        let Verdict::RollBack { causes } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(
            causes[0].describe(),
            "http://a.test/ did not answer within --health-timeout before this change (read: \
             timed out after 2s: slow, its clients wait for the answer) and answered HTTP 504 \
             after it"
        );
        assert!(!before.failure(&after.results[0]));
    }

    #[test]
    fn failing_another_way_than_before_is_still_the_old_failure_not_a_rollback() {
        let before = Baseline::of(&window(vec![result(B, Some(502), false)], vec![]));
        for after in [Some(504), None] {
            let after = window(vec![result(B, after, false)], vec![]);
            let v = after_reload(&before, Some(&after), &live());
            let Verdict::Keep(kept) = &v else {
                panic!("{v:?}")
            };
            assert_eq!(kept.outcome(), (Outcome::AlreadyFailing, Exit::MustAct));
            let said = kept.still_failing[0].describe();
            assert!(
                said.starts_with(
                    "http://b.test/ failed before this change (HTTP 502) and still fails"
                ),
                "{said}"
            );
            // The window goes on past it, as past the same failure.
            assert!(before.failure(&after.results[0]));
        }
    }

    /// An explicit `--health` URL (no server of the configuration behind it) and its result.
    fn explicit(url: &str, status: Option<u16>, refused: bool) -> CheckResult {
        let mut r = result(url, status, refused);
        r.check.server.clear();
        r
    }

    /// Regression: an explicit `--health` URL refused before the change counted as a listen
    /// only the change adds (no baseline), so refused after it rolled the change back and
    /// blamed it. Refused before and after is failing already (exit 4, kept); refused before
    /// and failing otherwise after (something listens there now) is still the change's.
    #[test]
    fn an_explicit_url_refused_before_and_after_is_already_failing() {
        let before = Baseline::of(&window(vec![explicit(A, None, true)], vec![]));
        let v = after_reload(
            &before,
            Some(&window(vec![explicit(A, None, true)], vec![])),
            &live(),
        );
        let Verdict::Keep(kept) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(kept.outcome(), (Outcome::AlreadyFailing, Exit::MustAct));
        assert_eq!(
            kept.still_failing[0].describe(),
            format!("{A} got no answer before this change and still does not (connect: Connection refused)")
        );
        // Once something listens there and fails, the change did it.
        let after = window(vec![explicit(A, Some(502), false)], vec![]);
        let Verdict::RollBack { causes } = after_reload(&before, Some(&after), &live()) else {
            panic!()
        };
        assert!(
            causes[0].describe().starts_with(&format!(
                "{A} answered HTTP 502 (nothing answered there before this change: connect: Connection refused)"
            )),
            "{}",
            causes[0].describe()
        );
        // Refused only after the change: the change's.
        let passed = Baseline::of(&window(vec![explicit(A, Some(200), false)], vec![]));
        let after = window(vec![explicit(A, None, true)], vec![]);
        assert!(matches!(
            after_reload(&passed, Some(&after), &live()),
            Verdict::RollBack { .. }
        ));
        // A rollback does not verify it again: it was refused before, and will be.
        let check = explicit(A, None, true).check;
        assert_eq!(before.applicable(vec![check]).1.len(), 1);
    }

    #[test]
    fn a_check_with_no_baseline_that_fails_is_the_change() {
        let before = Baseline::of(&window(vec![result(A, None, true)], vec![]));
        let after = window(vec![result(A, None, true)], vec![]);
        let v = after_reload(&before, Some(&after), &live());
        let Verdict::RollBack { causes } = v else {
            panic!()
        };
        assert!(causes[0]
            .describe()
            .contains("nothing answered there before"));
        // And a rollback does not verify it again: the restored configuration has no such listen.
        let check = |url: &str| {
            Check::plain(
                url.into(),
                "127.0.0.1:80".parse().unwrap(),
                "a.test".into(),
                "/".into(),
                false,
            )
        };
        let (kept, dropped) = before.applicable(vec![check(A), check(B)]);
        // A was refused before: dropped. B was never made (the window closed): kept.
        assert_eq!((kept.len(), dropped.len()), (1, 1));
        assert_eq!((kept[0].url.as_str(), dropped[0].url.as_str()), (B, A));
    }

    #[test]
    fn upstream_errors_the_baseline_logged_too_are_warnings_new_ones_are_caused() {
        let before = Baseline::of(&window(
            vec![result(A, Some(200), false)],
            vec![error("http://[::1]:8000/")],
        ));
        let after = window(
            vec![result(A, Some(200), false)],
            vec![error("http://[::1]:8000/"), error("http://[::1]:8000/")],
        );
        let v = after_reload(&before, Some(&after), &live());
        let Verdict::Keep(kept) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(kept.known_errors.len(), 1, "each once");
        assert_eq!(kept.outcome(), (Outcome::Reloaded, Exit::Ok));

        let after = window(
            vec![result(A, Some(200), false)],
            vec![error("http://127.0.0.1:9/")],
        );
        let v = after_reload(&before, Some(&after), &live());
        assert!(
            matches!(&v, Verdict::RollBack { causes } if matches!(causes[0], Cause::UpstreamError(_)))
        );
    }

    #[test]
    fn an_upstream_error_of_the_same_peer_is_the_same_failure_whatever_the_uri() {
        let before = Baseline::of(&window(
            vec![result(A, Some(200), false)],
            vec![error("http://127.0.0.1:8000/a")],
        ));
        let after = window(
            vec![result(A, Some(200), false)],
            vec![error("http://127.0.0.1:8000/b?q=1")],
        );
        let v = after_reload(&before, Some(&after), &live());
        let Verdict::Keep(kept) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(kept.known_errors.len(), 1, "{v:?}");
        let unix = |uri: &str| error(&format!("fastcgi://unix:/run/php.sock:{uri}"));
        assert!(same_error(&unix("/a.php"), &unix("/b.php")));
        assert!(!same_error(
            &error("http://127.0.0.1:8000/a"),
            &error("http://127.0.0.1:8001/a")
        ));
    }

    #[test]
    fn with_no_baseline_taken_every_failure_is_the_change_and_a_rollback_checks_everything() {
        let none = Baseline::none();
        let after = window(
            vec![result(B, Some(502), false)],
            vec![error("http://x:1/")],
        );
        let v = after_reload(&none, Some(&after), &live());
        let Verdict::RollBack { causes } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[0].describe(), "http://b.test/ answered HTTP 502");
        let check = Check::plain(
            B.into(),
            "127.0.0.1:80".parse().unwrap(),
            "b.test".into(),
            "/".into(),
            false,
        );
        assert_eq!(none.applicable(vec![check]).0.len(), 1);
        let proof = live();
        let restored = Restored::Reloaded {
            proof: &proof,
            health: Some(&after),
        };
        assert_eq!(
            after_rollback(&none, None, restored).outcome().1,
            Exit::MustAct
        );
    }

    /// A result that failed `failures` of `of` answers and then passed.
    fn flaky(url: &str, failures: u32, of: u32) -> CheckResult {
        CheckResult {
            attempts: of,
            failures,
            first_failure: (failures > 0).then(|| "HTTP 502".to_string()),
            ..result(url, Some(200), false)
        }
    }

    #[test]
    fn an_intermittent_check_is_a_warning_with_counts_never_a_rollback_or_exit_4() {
        // Passed before, failed once and then passed after: kept, exit 0.
        let before = Baseline::of(&window(vec![flaky(A, 0, 3)], vec![]));
        let after = window(vec![flaky(A, 1, 5)], vec![]);
        let Verdict::Keep(kept) = after_reload(&before, Some(&after), &live()) else {
            panic!()
        };
        assert_eq!(kept.outcome(), (Outcome::Reloaded, Exit::Ok));
        assert_eq!(
            kept.intermittent[0].describe("the change"),
            "http://a.test/: 1 of 5 answers failed (HTTP 502) after the change; 0 of 3 before"
        );
        // Flaky before, clean after: still worth a warning.
        let before = Baseline::of(&window(vec![flaky(A, 1, 5)], vec![]));
        let after = window(vec![flaky(A, 0, 3)], vec![]);
        let Verdict::Keep(kept) = after_reload(&before, Some(&after), &live()) else {
            panic!()
        };
        assert_eq!(
            kept.intermittent[0].describe("the change"),
            "http://a.test/: 0 of 3 answers failed after the change; 1 of 5 (HTTP 502) before"
        );
        // Flaky before, every answer failing after: the change broke it.
        let after = window(vec![result(A, Some(502), false)], vec![]);
        assert!(matches!(
            after_reload(&before, Some(&after), &live()),
            Verdict::RollBack { .. }
        ));
        // Failing before, flaky after: nothing is still failing, nothing is rolled back.
        let before = Baseline::of(&window(vec![result(A, Some(502), false)], vec![]));
        let after = window(vec![flaky(A, 1, 5)], vec![]);
        let Verdict::Keep(kept) = after_reload(&before, Some(&after), &live()) else {
            panic!()
        };
        assert_eq!(kept.outcome(), (Outcome::Reloaded, Exit::Ok));
        assert_eq!(kept.intermittent.len(), 1);
        // After a rollback, the same rule.
        let before = Baseline::of(&window(vec![flaky(A, 0, 3)], vec![]));
        let proof = live();
        let restored = Restored::Reloaded {
            proof: &proof,
            health: Some(&after),
        };
        let v = after_rollback(&before, None, restored);
        assert_eq!(v.outcome(), (Outcome::RolledBack, Exit::RolledBack));
        assert!(
            matches!(&v, RollbackVerdict::Back { intermittent, .. } if intermittent.len() == 1)
        );
    }

    #[test]
    fn emerg_lines_of_a_reload_that_took_effect_are_kept_as_a_warning() {
        let proof = Proof {
            emerg: vec!["[emerg] 7#7: unlink() \"/run/site.sock\" failed (2: No such file)".into()],
            ..live()
        };
        let before = Baseline::of(&window(vec![result(A, Some(200), false)], vec![]));
        let after = window(vec![result(A, Some(200), false)], vec![]);
        let Verdict::Keep(kept) = after_reload(&before, Some(&after), &proof) else {
            panic!()
        };
        assert_eq!(kept.emerg, proof.emerg);
        assert_eq!(kept.outcome(), (Outcome::Reloaded, Exit::Ok));
        let restored = Restored::Reloaded {
            proof: &proof,
            health: Some(&after),
        };
        let v = after_rollback(&before, None, restored);
        assert_eq!(v.outcome(), (Outcome::RolledBack, Exit::RolledBack));
        assert!(matches!(&v, RollbackVerdict::Back { emerg, .. } if *emerg == proof.emerg));
    }

    #[test]
    fn a_reload_that_did_not_take_effect_rolls_back() {
        let proof = Proof {
            took_effect: false,
            reason: Some("bind() failed".into()),
            ..live()
        };
        let v = after_reload(&Baseline::default(), None, &proof);
        assert_eq!(
            v.reason().unwrap(),
            "the reload did not take effect: bind() failed"
        );
    }

    #[test]
    fn rollback_back_to_baseline_exits_3_and_worse_exits_4_naming_the_check() {
        let before = Baseline::of(&window(
            vec![result(A, Some(200), false), result(B, Some(502), false)],
            vec![],
        ));
        let restored = window(
            vec![result(A, Some(200), false), result(B, Some(502), false)],
            vec![],
        );
        let proof = live();
        let health = Some(&restored);
        let v = after_rollback(
            &before,
            None,
            Restored::Reloaded {
                proof: &proof,
                health,
            },
        );
        assert_eq!(v.outcome(), (Outcome::RolledBack, Exit::RolledBack));
        assert!(v
            .state(Some("s1"))
            .contains("b.test/ answered HTTP 502 before"));

        let worse = window(vec![result(A, Some(504), false)], vec![]);
        let v = after_rollback(
            &before,
            None,
            Restored::Reloaded {
                proof: &proof,
                health: Some(&worse),
            },
        );
        assert_eq!(v.outcome(), (Outcome::RollbackFailed, Exit::MustAct));
        assert!(v
            .state(Some("s1"))
            .contains("http://a.test/ answered HTTP 200 before this change and HTTP 504 after it"));
    }

    #[test]
    fn rollback_errors_the_rejected_change_logged_are_not_held_against_the_restored_config() {
        let before = Baseline::of(&window(vec![result(A, Some(200), false)], vec![]));
        let candidate = window(vec![], vec![error("http://127.0.0.1:9/")]);
        let restored = window(
            vec![result(A, Some(200), false)],
            vec![error("http://127.0.0.1:9/")],
        );
        let proof = live();
        let restored = Restored::Reloaded {
            proof: &proof,
            health: Some(&restored),
        };
        let v = after_rollback(&before, Some(&candidate), restored);
        assert_eq!(v.outcome().1, Exit::RolledBack);
        let v = after_rollback(&before, None, restored);
        assert_eq!(v.outcome().1, Exit::MustAct);
    }

    #[test]
    fn a_rollback_that_could_not_restore_or_reload_exits_4() {
        let before = Baseline::default();
        for r in [Restored::NoLastGood, Restored::FilesDiffer] {
            assert_eq!(after_rollback(&before, None, r).outcome().1, Exit::MustAct);
        }
        let proof = Proof {
            took_effect: false,
            ..live()
        };
        let v = after_rollback(
            &before,
            None,
            Restored::Reloaded {
                proof: &proof,
                health: None,
            },
        );
        assert_eq!(v.outcome(), (Outcome::RollbackFailed, Exit::MustAct));
    }
}
