//! The verification window: rounds of requests, each on a fresh connection, and the error log
//! read after every round. A round sends its requests concurrently, so a round costs about one
//! request's time however many checks it holds. The window ends at the first failure that is
//! news, or once enough good rounds passed with no new upstream error logged; it is an upper
//! bound, never a wait. What is news is the caller's to say ([`Known`]): a failure the running
//! configuration already had before the change does not end the window, so every other check
//! still runs. The baseline ([`baseline`]) is the same rounds of the same requests against the
//! running configuration, each made whatever the others answered.
//!
//! Each request has its own timeout, never cut by what is left of the window: a healthy but
//! slow backend is not turned into a failure by the clock.
//!
//! A failed answer is asked again before it counts (see `judge::settle`): the verification
//! after the reload, the baseline and the shadow (which sends its checks through [`verify`])
//! share that rule, so one bad answer of a flaky backend decides nowhere. The upstream errors
//! nginx logged for answers that failed before one passed go with that check
//! ([`CheckResult::intermittent_errors`]), not among the window's errors.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::judge::{self, judge, RETRIES};
use super::{h2c, tls, Answer, Check, Unchecked};
use crate::errorlog::{upstream_error, Cursors, UpstreamError, UpstreamErrorKind};
use crate::probe::netstat::Listeners;

/// How long and how hard to verify.
#[derive(Debug, Clone)]
pub struct HealthOptions {
    /// No round starts after this; one already started finishes.
    pub window: Duration,
    /// Good rounds (every check answered acceptably) needed to pass.
    pub rounds: usize,
    /// Per request: connect, TLS, send and read the status line.
    pub request_timeout: Duration,
    /// When set, any other status fails (`--expect-status`).
    pub expect_status: Option<Vec<u16>>,
    /// `--health-header` name and value pairs, sent with every request.
    pub headers: Vec<(String, String)>,
    /// Peers the probe found down and judged no refusal (a pool member with a live sibling,
    /// one address of a name), as the probe shows them (`127.0.0.1:8001`, `[::1]:80`,
    /// `unix:/run/app.sock`). nginx logs a connect error each time it tries one and then
    /// passes the request to the next peer: such a line is expected, not a failure. The
    /// request's own status still decides (all peers down is a 502).
    pub expected_down: Vec<String>,
    /// What the TLS 1.2 handshakes of this window got, by listen and name (see
    /// [`Tls12Memo`]); `None`: each TLS check asks its own.
    pub tls12_memo: Option<Tls12Memo>,
    /// What nginx ran before is not known (loaded outside safe-reload): a 500 or 503, which
    /// passes next to the same answer before the change, has nothing to pass next to, and
    /// fails as a new site's does (see `judge::fails_new`).
    pub unknown_before: bool,
}

/// One window's TLS 1.2 handshakes, by where they went and the name they sent: the answer
/// is the listen's and its server's, not the location's, so the checks of one server share
/// one handshake (and one `openssl s_client` where our client finds no suite in common)
/// where each round of each check asked its own. Within one window nginx's configuration
/// does not change; a window begins with an empty one ([`HealthOptions::for_window`]).
#[derive(Debug, Clone, Default)]
pub struct Tls12Memo(Arc<Mutex<HashMap<Tls12Key, Arc<OnceLock<Tls12>>>>>);

type Tls12Key = (SocketAddr, Option<PathBuf>, String, bool);

impl Tls12Memo {
    /// What `check`'s listen and name got, asked by `ask` the first time. Only one asks at
    /// a time per key; a handshake that said nothing (`Unasked`: its connection failed) is
    /// not kept, the next check asks again.
    fn get(&self, check: &Check, ask: impl FnOnce() -> Tls12) -> Tls12 {
        let key = (
            check.dial.unwrap_or(check.connect),
            check.unix.clone(),
            check.host.to_ascii_lowercase(),
            check.proxy_protocol,
        );
        let Ok(mut map) = self.0.lock() else {
            return ask();
        };
        let cell = map.entry(key.clone()).or_default().clone();
        drop(map);
        let got = cell.get_or_init(ask).clone();
        if got.unasked() {
            if let Ok(mut map) = self.0.lock() {
                map.remove(&key);
            }
        }
        got
    }
}

/// How much longer than `--health-timeout` a check that got no answer in time is given when
/// asked again, at most [`LONGEST_WAIT`].
const WAIT_LONGER: u32 = 4;

/// The longest a check is waited for when asked again (see [`WAIT_LONGER`]).
const LONGEST_WAIT: Duration = Duration::from_secs(15);

/// How long past a location's `*_read_timeout` a check asked again waits for nginx's 504.
const NGINX_MARGIN: Duration = Duration::from_secs(1);

/// The longest a check is waited for to see nginx give up on a backend at its
/// `*_read_timeout` (see [`HealthOptions::waiting_past_nginx`]).
const PAST_NGINX: Duration = Duration::from_secs(30);

impl HealthOptions {
    /// These options with the per-request timeout for a check asked again after it got no
    /// answer in time: four times as long, at most 15 s, never shorter.
    pub fn waiting_longer(&self) -> HealthOptions {
        HealthOptions {
            request_timeout: (self.request_timeout * WAIT_LONGER)
                .min(LONGEST_WAIT)
                .max(self.request_timeout),
            ..self.clone()
        }
    }

    /// [`HealthOptions::waiting_longer`] for `check`, and past its location's
    /// `*_read_timeout` when that ends after it (at most 30 s): a change that lowers the
    /// limit below a slow backend's time shows only as nginx's 504 at that limit, where the
    /// running nginx, with its own limit, waits for the answer.
    pub fn waiting_past_nginx(&self, check: &Check) -> HealthOptions {
        let mut longer = self.waiting_longer();
        if longer.request_timeout == self.request_timeout {
            return longer;
        }
        let past = check.read_timeout.map(|t| t + NGINX_MARGIN);
        if let Some(past) = past.filter(|p| *p > longer.request_timeout && *p <= PAST_NGINX) {
            longer.request_timeout = past;
        }
        longer
    }

    /// These options for one window of checks: with a TLS 1.2 memo of its own.
    pub fn for_window(&self) -> HealthOptions {
        HealthOptions {
            tls12_memo: Some(Tls12Memo::default()),
            ..self.clone()
        }
    }

    /// Whether `--expect-status` names `status`: what the operator said is fine.
    pub fn expects(&self, status: Option<u16>) -> bool {
        status.is_some_and(|s| self.expect_status.as_ref().is_some_and(|e| e.contains(&s)))
    }
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            window: Duration::from_secs(3),
            rounds: 3,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            expect_status: None,
            headers: Vec::new(),
            expected_down: Vec::new(),
            tls12_memo: None,
            unknown_before: false,
        }
    }
}

/// The default per-request timeout (`--health-timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The most requests in flight at once. Each holds two of a worker's connections (the client's
/// and the upstream's): 16 stays inside a small `worker_connections` (64) with room for the
/// clients nginx serves meanwhile, and still sends a 256-check round in 16 request times.
const CONCURRENCY: usize = 16;

/// One check's result over the window: its first failing answer, else its last one.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    #[serde(flatten)]
    pub check: Check,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there is no status (refused, timed out, TLS failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub answer: Answer,
    /// Requests made for this check, the ones asked again after a failed answer included.
    pub attempts: u32,
    /// Answers of those that failed. On a result that did not fail, the check failed and then
    /// passed when asked again: intermittent.
    #[serde(skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// The first answer that failed (`HTTP 502`, the error), when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// Upstream errors nginx logged for this check's request while it answered
    /// intermittently: the failed answers' own lines, not news.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub intermittent_errors: Vec<UpstreamError>,
    #[serde(rename = "elapsed_ms", serialize_with = "crate::report::ms")]
    pub elapsed: Duration,
    /// Whether this result alone fails verification.
    pub failed: bool,
    /// The connection to nginx was refused: nothing listens there (e.g. a `listen` the
    /// running configuration does not have).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// No answer within `--health-timeout`: the request's own limit, not proof that clients
    /// get none (a slow site answers them later).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// What to do about a failure whose cause the answer shows (see [`UNLINKED`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Over TLS: the certificate nginx sent does not name the Host (the SNI), and how. Alone
    /// it decides nothing (a self-signed certificate for every site); where the same check
    /// got a certificate that named it before the change, the answer fails
    /// ([`CheckResult::judge_against`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wrong_name: Option<String>,
    /// Over TLS, once the check was answered: whether a client offering TLS 1.2 alone still
    /// gets a handshake (see [`Tls12`]).
    #[serde(skip_serializing_if = "Tls12::unasked")]
    pub tls12: Tls12,
    /// Over TLS on a listen with `http2`, once the check was answered: what the same request
    /// got over HTTP/2 (see [`H2`]).
    #[serde(skip_serializing_if = "H2::unasked")]
    pub h2: H2,
    /// A 2xx whose body is known to be empty (see `empty_page`). Alone it decides nothing
    /// (an endpoint may answer so); where the same request got a page before the change, the
    /// answer fails ([`CheckResult::judge_against`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub empty: bool,
}

/// What a handshake offering TLS 1.2 alone got, asked beside a TLS check that was answered:
/// the checks negotiate TLS 1.3 where nginx offers it, and `ssl_ciphers` applies to TLS 1.2
/// alone, so a cipher list that leaves the certificate's key no suite fails every TLS 1.2
/// client while the check passes. Alone it decides nothing (a listen may serve TLS 1.3 alone
/// on purpose); where the same check's TLS 1.2 handshake completed before the change, a
/// failed one fails the answer ([`CheckResult::judge_against`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tls12 {
    /// Not asked: no TLS, the check got no answer, or the handshake's connection failed.
    #[default]
    Unasked,
    /// A TLS 1.2 handshake completed.
    Completed,
    /// nginx does not offer TLS 1.2 there (`ssl_protocols`): its protocol_version alert.
    NotOffered,
    /// TLS 1.2 is offered and no handshake completes, OpenSSL's client's neither: why.
    Failed(String),
}

impl Tls12 {
    pub fn unasked(&self) -> bool {
        *self == Tls12::Unasked
    }
}

/// What the check's request got over HTTP/2, asked beside its HTTP/1.1 one on a TLS listen
/// with `http2` (ALPN `h2` alone): every browser speaks HTTP/2 there, and a change can fail
/// it alone (`http2_max_concurrent_streams 0` refuses every stream; HTTP/1.1 still answers).
/// Alone it decides nothing; where the same check got an answer over HTTP/2 before the
/// change, one that fails now fails the check ([`CheckResult::judge_against`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum H2 {
    /// Not asked: no TLS with `http2`, the check got no answer, or the connection failed.
    #[default]
    Unasked,
    /// nginx answered over HTTP/2 with this status.
    Answered(u16),
    /// nginx did not pick `h2` in the handshake.
    NotOffered,
    /// `h2` was picked and the request got no answer: why.
    Failed(String),
}

impl H2 {
    pub fn unasked(&self) -> bool {
        *self == H2::Unasked
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl CheckResult {
    /// What it answered: `HTTP 502`, or why there was no answer.
    pub fn reply(&self) -> String {
        match (self.status, &self.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        }
    }

    /// It failed and then passed when asked again: a flaky backend, which decides nothing
    /// alone.
    pub fn intermittent(&self) -> bool {
        !self.failed && self.failures > 0
    }

    /// Over TLS, nginx answered over a certificate that names the Host (whichever server
    /// answered, and whatever it answered).
    pub fn named(&self) -> bool {
        self.check.tls && self.status.is_some() && !self.refused && self.wrong_name.is_none()
    }

    /// A 2xx with a body: a page.
    pub fn paged(&self) -> bool {
        !self.failed && matches!(self.status, Some(200..=299)) && !self.empty
    }

    /// A TLS 1.2 handshake completed beside this check's answer.
    pub fn tls12_completed(&self) -> bool {
        self.tls12 == Tls12::Completed
    }

    /// An answer over HTTP/2 came beside this check's (one that passes or not).
    pub fn h2_answered(&self) -> bool {
        matches!(self.h2, H2::Answered(s) if s != 502 && s != 504)
    }

    /// Why the same request over HTTP/2 got no answer, when it got none: no answer at all,
    /// or a 502/504 where HTTP/1.1 passed.
    pub fn h2_failure(&self) -> Option<String> {
        match &self.h2 {
            H2::Failed(why) => Some(why.clone()),
            H2::Answered(s @ (502 | 504)) if !self.failed => Some(format!("HTTP {s}")),
            _ => None,
        }
    }

    /// Why a TLS 1.2 client gets no handshake where TLS 1.2 is offered, when it gets none.
    pub fn tls12_failure(&self) -> Option<&str> {
        match &self.tls12 {
            Tls12::Failed(why) => Some(why),
            _ => None,
        }
    }

    /// Judge one answer that passed on its own against what `known` says the same request got
    /// before the change: a 5xx where there was none, a 4xx where it was served, nginx's own
    /// 404 where the backend answered fail (see [`judge::worse_than`]), and are asked again as
    /// any failed answer is; a status `--expect-status` names is what the operator said is
    /// fine. Also failing, whatever nginx answered: a certificate that does not name its Host
    /// where the one before did (every browser refuses it), an empty 2xx where the request got
    /// a page (every page blank), and a failed TLS 1.2 handshake where one completed (every
    /// TLS 1.2 client refused).
    pub fn judge_against(&mut self, known: &dyn Known, opts: &HealthOptions) {
        if self.failed {
            return;
        }
        let expected = opts.expects(self.status);
        if !expected && judge::worse_than(known.passed_before(self), self.answer, self.status) {
            self.answer = Answer::Failed;
            self.failed = true;
            self.failures += 1;
        } else if known.named_before(self) && self.wrong_name.is_some() {
            self.fail_with(self.wrong_name.clone());
        } else if !expected && self.empty && known.paged_before(self) {
            let status = self.reply();
            let code = self.status.unwrap_or(200);
            let proxied = (self.check.upstream.as_deref())
                .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"));
            let cause = match proxied {
                true => {
                    "a `proxy_set_header` of the location's own replaces every one it \
                         inherited, Host too?"
                }
                false => {
                    "a `fastcgi_param` (`uwsgi_param`, `scgi_param`) of the location's \
                          own replaces every one it inherited, SCRIPT_FILENAME too?"
                }
            };
            self.fail_with(Some(format!(
                "{status} with an empty body, where the same request got a page before this \
                 change ({cause}); where an empty page is its answer, `--expect-status {code}` \
                 accepts it"
            )));
        } else if let Some(why) = self.tls12_failure().filter(|_| known.tls12_before(self)) {
            let why = format!(
                "TLS 1.2 handshake: {why} (every TLS 1.2 client is refused, where one got \
                 through before this change; over TLS 1.3 it answers {}: an `ssl_ciphers` \
                 with no suite for the certificate's key?)",
                self.reply()
            );
            self.fail_with(Some(why));
        } else if let Some(why) = self.h2_failure().filter(|_| known.h2_before(self)) {
            let why = format!(
                "over HTTP/2: {why} (every HTTP/2 client, every browser, gets that, where the \
                 same request was answered over HTTP/2 before this change; over HTTP/1.1 it \
                 answers {}: an `http2_*` setting?)",
                self.reply()
            );
            self.fail_with(Some(why));
        }
    }

    /// Failed with `error` for its answer: what clients get is not the status nginx sent.
    fn fail_with(&mut self, error: Option<String>) {
        self.error = error;
        self.status = None;
        self.answer = Answer::Failed;
        self.failed = true;
        self.failures += 1;
    }
}

/// Failures and upstream errors that are not news to the caller: they neither end the window
/// nor spoil a round. A failed check is not requested again in the same window.
pub trait Known {
    fn failure(&self, result: &CheckResult) -> bool;
    fn upstream_error(&self, error: &UpstreamError) -> bool;
    /// The status this check answered before the change, when that answer passed: an answer
    /// is judged against it ([`CheckResult::judge_against`]).
    fn passed_before(&self, _result: &CheckResult) -> Option<u16> {
        None
    }
    /// Whether this check passed before the change over a certificate that named its Host
    /// (see [`CheckResult::wrong_name`]).
    fn named_before(&self, _result: &CheckResult) -> bool {
        false
    }
    /// Whether a TLS 1.2 handshake completed beside this check before the change (see
    /// [`Tls12`]).
    fn tls12_before(&self, _result: &CheckResult) -> bool {
        false
    }
    /// Whether this check got a page (a 2xx with a body) before the change.
    fn paged_before(&self, _result: &CheckResult) -> bool {
        false
    }
    /// Whether this check got an answer over HTTP/2 before the change (see [`H2`]).
    fn h2_before(&self, _result: &CheckResult) -> bool {
        false
    }
}

/// Nothing is known: every failure and every upstream error ends the window.
pub struct NothingKnown;

impl Known for NothingKnown {
    fn failure(&self, _: &CheckResult) -> bool {
        false
    }
    fn upstream_error(&self, _: &UpstreamError) -> bool {
        false
    }
}

/// Everything the window found.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub passed: bool,
    /// One per check, in the order of the checks.
    pub results: Vec<CheckResult>,
    /// What no request checked (affected servers, locations, names), each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_checked: Vec<Unchecked>,
    /// Upstream errors nginx logged during the window, even when the client saw a success.
    pub upstream_errors: Vec<UpstreamError>,
    /// Connect errors to peers in `HealthOptions::expected_down`, after which nginx tried the
    /// next peer: shown, not failures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected_upstream_errors: Vec<UpstreamError>,
    /// Rounds run.
    pub rounds: usize,
    #[serde(rename = "elapsed_ms", serialize_with = "crate::report::ms")]
    pub elapsed: Duration,
}

impl HealthReport {
    /// Checks that nginx answered by itself: the upstreams behind them were not verified.
    pub fn not_reached(&self) -> impl Iterator<Item = &CheckResult> {
        self.results
            .iter()
            .filter(|r| r.answer == Answer::NotReached)
    }
}

/// Verify through nginx with nothing known: see [`verify_against`].
pub fn verify(checks: &[Check], logs: &mut Cursors, opts: &HealthOptions) -> HealthReport {
    verify_against(checks, logs, opts, &NothingKnown)
}

/// Verify through nginx. Ends after the round that saw a failure or a logged upstream error
/// that `known` does not know; a check that failed is not asked again. Passes with no failure
/// and no upstream error after `opts.rounds` good rounds, or after at least one when the
/// window closes first. With no checks, only the log decides.
pub fn verify_against(
    checks: &[Check],
    logs: &mut Cursors,
    opts: &HealthOptions,
    known: &dyn Known,
) -> HealthReport {
    let start = Instant::now();
    let opts = &opts.for_window();
    let mut results: Vec<Option<CheckResult>> = vec![None; checks.len()];
    let mut failed = vec![false; checks.len()];
    let (mut upstream_errors, mut expected) = (Vec::new(), Vec::new());
    let (mut good_rounds, mut rounds, mut news) = (0, 0, false);
    while !news
        && good_rounds < opts.rounds.max(1)
        && (rounds == 0 || start.elapsed() < opts.window)
    {
        rounds += 1;
        let todo: Vec<usize> = (0..checks.len()).filter(|&i| !failed[i]).collect();
        let mut answers = round(checks, &todo, opts, known);
        let seen = expected.len();
        let errors = split_expected(logs, &opts.expected_down, &mut expected);
        for (_, r) in answers.iter_mut() {
            answered_without_backend(r, &expected[seen..]);
        }
        let errors = set_apart(errors, answers.iter_mut().map(|(_, r)| r));
        let mut clean = true;
        for (i, r) in answers {
            if r.failed {
                failed[i] = true;
                clean = false;
                news |= !known.failure(&r);
            }
            keep(&mut results[i], r);
        }
        if errors.iter().any(|e| !known.upstream_error(e)) {
            news = true;
            clean = false;
        }
        upstream_errors.extend(errors);
        if clean {
            good_rounds += 1;
        }
        if checks.is_empty() {
            break;
        }
    }
    HealthReport {
        passed: !failed.contains(&true)
            && upstream_errors.is_empty()
            && (checks.is_empty() || good_rounds >= 1),
        results: results.into_iter().flatten().collect(),
        not_checked: Vec::new(),
        upstream_errors,
        expected_upstream_errors: expected,
        rounds,
        elapsed: start.elapsed(),
    }
}

/// A check that passed though nginx logged, for its own request, a connect error to the one
/// peer its `*_pass` names (an address, not a pool or a name of several): nothing behind it
/// answered, so nginx did, with an `error_page` that turns the 502 into a page (`error_page
/// 502 =200 /maintenance.html`). The peer was down before the change (the probe said so,
/// which is why the error is expected): the answer is nginx's own, and the location is not
/// verified, not "verified" for its clients' sorry page.
fn answered_without_backend(r: &mut CheckResult, expected: &[UpstreamError]) {
    if r.failed || r.answer != Answer::Passed {
        return;
    }
    let host = super::samples::pass_host;
    let Some(pass) = r.check.upstream.as_deref().map(host) else {
        return;
    };
    let literal = pass.parse::<SocketAddr>().is_ok();
    let own = expected.iter().find(|e| {
        logged_for(e, &r.check) && e.upstream.as_deref().map(host).as_deref() == Some(&pass)
    });
    if let (true, Some(e)) = (literal, own) {
        r.answer = Answer::NotReached;
        r.hint = Some(format!(
            "nginx answered it itself: its backend {pass} refused the connection (it was down \
             before this change too), and an error_page answered for it: {}",
            e.text
        ));
    }
}

/// The checks of `window` that got no answer within `--health-timeout`, where `known` does
/// not know them so, asked again at once with longer ([`HealthOptions::waiting_longer`]).
/// The restored configuration after a rollback is the one that answered before the change:
/// a check that is slow now (a backend near the limit, or still busy with the requests the
/// rejected change's checks left it) is not worse for that, when it answers in the longer
/// wait. That answer is judged as any other, and stands for the check as one asked again
/// does (see [`judge::settle`]): passed, the check is intermittent, not failed.
pub fn wait_longer(
    window: &mut HealthReport,
    logs: &mut Cursors,
    opts: &HealthOptions,
    known: &dyn Known,
) {
    let longer = opts.waiting_longer();
    if longer.request_timeout == opts.request_timeout {
        return;
    }
    let slow: Vec<usize> = (window.results.iter().enumerate())
        .filter(|(_, r)| r.failed && r.timed_out && !known.failure(r))
        .map(|(i, _)| i)
        .collect();
    if slow.is_empty() {
        return;
    }
    let started = Instant::now();
    let checks: Vec<Check> = (slow.iter())
        .map(|&i| window.results[i].check.clone())
        .collect();
    let todo: Vec<usize> = (0..checks.len()).collect();
    let answers = send(&checks, &todo, &longer);
    for (&i, answer) in slow.iter().zip(answers) {
        let Some(mut answer) = answer else { continue };
        answer.judge_against(known, opts);
        let first = window.results[i].clone();
        let settled = judge::settle(first, vec![answer]);
        window.results[i] = settled;
        let r = &mut window.results[i];
        if !r.failed {
            r.hint = Some(format!(
                "it answered when waited for {}: slower than --health-timeout, raise it if the \
                 site is only slow",
                humantime::format_duration(longer.request_timeout)
            ));
        }
    }
    let errors = split_expected(
        logs,
        &opts.expected_down,
        &mut window.expected_upstream_errors,
    );
    let errors = set_apart(errors, window.results.iter_mut());
    window.upstream_errors.extend(errors);
    window.passed = !window.results.iter().any(|r| r.failed) && window.upstream_errors.is_empty();
    window.elapsed += started.elapsed();
}

/// The baseline: the same rounds of the same requests against the running configuration,
/// every request made whatever the others answered, then the error log they wrote to. As many
/// rounds as verification makes, so a pool's round-robin reaches as many of its servers
/// before the change as after. The log lines of a request are written before nginx answers
/// it, so one read after the last answer holds them.
///
/// A check that failed is not asked again: its first failure is its baseline. No round starts
/// after the window, as in verification, so a hanging backend costs one request timeout (the
/// requests of a round run concurrently).
pub fn baseline(checks: &[Check], logs: &mut Cursors, opts: &HealthOptions) -> HealthReport {
    let start = Instant::now();
    let mut results: Vec<Option<CheckResult>> = vec![None; checks.len()];
    let mut failed = vec![false; checks.len()];
    let mut rounds = 0;
    while rounds < opts.rounds.max(1) && (rounds == 0 || start.elapsed() < opts.window) {
        let todo: Vec<usize> = (0..checks.len()).filter(|&i| !failed[i]).collect();
        if todo.is_empty() && rounds > 0 {
            break;
        }
        rounds += 1;
        for (i, r) in round(checks, &todo, opts, &NothingKnown) {
            failed[i] |= r.failed;
            keep(&mut results[i], r);
        }
    }
    let mut expected = Vec::new();
    let errors = split_expected(logs, &opts.expected_down, &mut expected);
    let mut results: Vec<CheckResult> = results.into_iter().flatten().collect();
    let upstream_errors = set_apart(errors, results.iter_mut());
    HealthReport {
        passed: !results.iter().any(|r| r.failed) && upstream_errors.is_empty(),
        results,
        not_checked: Vec::new(),
        upstream_errors,
        expected_upstream_errors: expected,
        rounds,
        elapsed: start.elapsed(),
    }
}

/// A baseline taken before the probe said which peers are down (it runs alongside the probe):
/// sort its upstream errors as [`baseline`] given those peers would have.
pub fn expect_down(window: &mut HealthReport, expected_down: &[String]) {
    let (expected, errors): (Vec<_>, Vec<_>) = std::mem::take(&mut window.upstream_errors)
        .into_iter()
        .partition(|e| is_expected(e, expected_down));
    window.upstream_errors = errors;
    window.expected_upstream_errors.extend(expected);
    window.passed = !window.results.iter().any(|r| r.failed) && window.upstream_errors.is_empty();
}

/// One check's result so far and a new one: the first failing (or not reaching the backend)
/// answer stays, else the latest; requests, failed answers and the intermittent failure's
/// log lines are counted over both.
fn keep(slot: &mut Option<CheckResult>, new: CheckResult) {
    let Some(old) = slot.take() else {
        *slot = Some(new);
        return;
    };
    let (attempts, failures) = (old.attempts + new.attempts, old.failures + new.failures);
    let first_failure = (old.first_failure.clone()).or_else(|| new.first_failure.clone());
    let mut errors = old.intermittent_errors.clone();
    errors.extend(new.intermittent_errors.iter().cloned());
    let stays = old.failed || old.answer == Answer::NotReached;
    let mut kept = if stays { old } else { new };
    kept.attempts = attempts;
    kept.failures = failures;
    kept.first_failure = first_failure;
    kept.intermittent_errors = errors;
    *slot = Some(kept);
}

/// The upstream errors of a round (or a baseline) less those logged for an intermittent
/// check's request (its Host and URI), which go with that check: its failed answers wrote
/// them, and a later answer passed.
fn set_apart<'a>(
    errors: Vec<UpstreamError>,
    results: impl Iterator<Item = &'a mut CheckResult>,
) -> Vec<UpstreamError> {
    let mut flaky: Vec<&mut CheckResult> = results.filter(|r| r.intermittent()).collect();
    let mut rest = Vec::new();
    for e in errors {
        match flaky.iter_mut().find(|r| logged_for(&e, &r.check)) {
            Some(r) => r.intermittent_errors.push(e),
            None => rest.push(e),
        }
    }
    rest
}

/// Whether nginx logged `e` for this check's request: the same URI and Host header.
fn logged_for(e: &UpstreamError, check: &Check) -> bool {
    let uri = e.request.as_deref().and_then(|r| r.split(' ').nth(1));
    uri == Some(check.path.as_str())
        && e.host()
            .is_some_and(|h| h.eq_ignore_ascii_case(&host_header(check)))
}

/// The upstream errors logged since the last read, less the expected ones (connect errors to
/// peers the probe found down, see [`HealthOptions::expected_down`]), which go to `expected`.
fn split_expected(
    logs: &mut Cursors,
    expected_down: &[String],
    expected: &mut Vec<UpstreamError>,
) -> Vec<UpstreamError> {
    let mut errors = Vec::new();
    for e in logs.read_new().iter().filter_map(upstream_error) {
        if is_expected(&e, expected_down) {
            expected.push(e);
        } else {
            errors.push(e);
        }
    }
    errors
}

/// How [`HealthOptions::expected_down`] holds a URI `mirror` sends copies of requests to
/// (see [`crate::conf::mirror_uris`]): every error logged for such a subrequest is expected.
pub fn mirror_mark(uri: &str) -> String {
    format!("mirror {uri}")
}

/// An error to a peer known down of the kinds a probe failure foretells: a connect error
/// (refused, no socket, permission, connect timeout), or a hang-up (prematurely closed, reset)
/// from a peer the probe found accepting and closing. nginx tries the next peer after each.
/// A read timeout is not one: a peer that makes nginx wait was not what the probe found.
pub fn is_expected(e: &UpstreamError, expected_down: &[String]) -> bool {
    // A `mirror` copy's failure, of any kind: nginx ignores its answer.
    let mirror = e.subrequest().map(|uri| mirror_mark(&uri));
    if mirror.is_some_and(|m| expected_down.contains(&m)) {
        return true;
    }
    let connect = matches!(
        e.kind,
        UpstreamErrorKind::Refused
            | UpstreamErrorKind::NoSuchFile
            | UpstreamErrorKind::PermissionDenied
            | UpstreamErrorKind::PrematureClose
            | UpstreamErrorKind::Other
    ) || (e.kind == UpstreamErrorKind::TimedOut
        && e.text.contains("while connecting to upstream"));
    connect && e.peer().is_some_and(|peer| expected_down.contains(&peer))
}

/// One round: the checks at `todo` once each, then each whose answer failed [`RETRIES`] more
/// times, all of those at once (a retry costs one request's time, and no check that passed
/// waits for it); each check's answers settled into one result (see `judge::settle`), with its
/// index, in `todo`'s order. Each answer is judged against what `known` says the check got
/// before the change ([`CheckResult::judge_against`]).
fn round(
    checks: &[Check],
    todo: &[usize],
    opts: &HealthOptions,
    known: &dyn Known,
) -> Vec<(usize, CheckResult)> {
    let failed = |r: &Option<CheckResult>| r.as_ref().is_some_and(|r| r.failed);
    let judged = |mut r: CheckResult| {
        r.judge_against(known, opts);
        r
    };
    let sent = |todo: &[usize], opts: &HealthOptions| {
        send(checks, todo, opts).into_iter().map(|r| r.map(judged))
    };
    let first: Vec<Option<CheckResult>> = sent(todo, opts).collect();
    let again: Vec<usize> = (todo.iter().zip(&first))
        .filter(|(_, r)| failed(r))
        .flat_map(|(&i, _)| std::iter::repeat_n(i, RETRIES))
        .collect();
    let mut retried = sent(&again, opts);
    (todo.iter().copied())
        .zip(first)
        .filter_map(|(i, r)| {
            let more = if failed(&r) {
                retried.by_ref().take(RETRIES).flatten().collect()
            } else {
                Vec::new()
            };
            Some((i, judge::settle(r?, more)))
        })
        .collect()
}

/// One request for each check at `todo` (an index may repeat), `CONCURRENCY` at a time; the
/// results in `todo`'s order.
fn send(checks: &[Check], todo: &[usize], opts: &HealthOptions) -> Vec<Option<CheckResult>> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<CheckResult>>> = Mutex::new(vec![None; todo.len()]);
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENCY.min(todo.len()) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = todo.get(k) else { break };
                let r = request(&checks[i], opts);
                if let Ok(mut slots) = out.lock() {
                    slots[k] = Some(r);
                }
            });
        }
    });
    out.into_inner().unwrap_or_default()
}

/// One request and its judgement.
pub fn request(check: &Check, opts: &HealthOptions) -> CheckResult {
    request_from(check, opts, check.source)
}

/// [`request`] from the loopback address `source` when set (a TCP connection to a loopback
/// listen only): `ip_hash` and `hash $remote_addr` pools pick their server by the client's
/// address, so requests from one address all reach the same one.
pub fn request_from(check: &Check, opts: &HealthOptions, source: Option<IpAddr>) -> CheckResult {
    let start = Instant::now();
    let spread = check.spread_sources && check.unix.is_none() && check.connect.is_ipv4();
    let source = source.or_else(|| spread.then(spread_source));
    let timeout = opts.request_timeout.max(Duration::from_millis(1));
    let wrong_name = tls::WrongName::default();
    let got = get_status(check, timeout, &opts.headers, source, &wrong_name);
    // The Host made up for a default route (`safe-reload-check.invalid`) is no name a
    // certificate could carry: whichever it gets says nothing of the server's.
    let made_up_host = check.host == super::hosts::UNKNOWN_HOST;
    let wrong_name = match got {
        Ok(_) if !made_up_host => wrong_name.lock().ok().and_then(|mut w| w.take()),
        _ => None,
    };
    let empty = matches!(got, Ok((_, true)));
    let got = got.map(|(status, _)| status);
    let tls12 = match (&got, check.tls) {
        (Ok(_), true) => {
            let ask = || tls12_handshake(check, start + timeout, source);
            match &opts.tls12_memo {
                Some(memo) => memo.get(check, ask),
                None => ask(),
            }
        }
        _ => Tls12::Unasked,
    };
    let h2 = match (&got, check.tls && check.h2 && !check.http2) {
        (Ok(_), true) => h2_request(check, timeout, &opts.headers, source),
        _ => H2::Unasked,
    };
    let hint = matches!(got, Err(Failure::Unlinked(_))).then(|| UNLINKED.to_string());
    let (status, error, closed, refused, timed_out) = match got {
        Ok(s) => (Some(s), None, false, false, false),
        Err(Failure::Closed(why)) => (None, Some(why), true, false, false),
        Err(Failure::Refused(e)) => (None, Some(e), false, true, false),
        Err(Failure::TimedOut(e)) => (None, Some(e), false, false, true),
        Err(Failure::Unlinked(e) | Failure::Other(e)) => (None, Some(e), false, false, false),
    };
    let mut answer = judge(status, closed, &check.gate, opts.expect_status.as_deref());
    let unknown = opts.unknown_before && matches!(status, Some(500 | 503));
    if answer == Answer::Passed
        && opts.expect_status.is_none()
        && (judge::fails_new(check, status) || unknown)
    {
        answer = Answer::Failed;
    }
    CheckResult {
        check: check.clone(),
        status,
        error,
        answer,
        attempts: 1,
        failures: u32::from(answer == Answer::Failed),
        first_failure: None,
        intermittent_errors: Vec::new(),
        elapsed: start.elapsed(),
        failed: answer == Answer::Failed,
        refused,
        timed_out,
        hint,
        wrong_name,
        tls12,
        h2,
        empty,
    }
}

/// The check's request over HTTP/2 on its TLS listen, within `timeout` of now (see [`H2`]):
/// a handshake offering ALPN `h2` alone, then the request as one stream.
fn h2_request(
    check: &Check,
    timeout: Duration,
    headers: &[(String, String)],
    source: Option<IpAddr>,
) -> H2 {
    let deadline = Instant::now() + timeout;
    let Some((mut stream, name)) = side_connection(check, timeout, source) else {
        return H2::Unasked;
    };
    let Ok(config) = tls::client_config(tls::WrongName::default()) else {
        return H2::Unasked;
    };
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let Ok(mut conn) = rustls::ClientConnection::new(std::sync::Arc::new(config), name) else {
        return H2::Unasked;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut stream).is_err() {
            // Our client may offer less than nginx's OpenSSL: nothing to say of HTTP/2.
            return H2::Unasked;
        }
    }
    if conn.alpn_protocol() != Some(b"h2") {
        return H2::NotOffered;
    }
    let req = h2c::request(&host_header(check), &check.path, &fields(check, headers));
    let mut tls = rustls::StreamOwned::new(conn, stream);
    match h2c::exchange(&mut tls, &req, deadline) {
        Ok(h2c::End::Status(status)) => H2::Answered(status),
        Ok(h2c::End::NoAnswer(why)) => H2::Failed(why),
        Err(h2c::Fault::Io(what, e)) => H2::Failed(io_text(what, &e, timeout)),
        Err(h2c::Fault::Protocol(why)) => H2::Failed(why),
    }
}

/// The next of the loopback addresses a rate-limited location's checks come from, one per
/// request (127.0.K.2 to 127.0.K.251; the samples of a pool use 127.0.K.1): a limit keyed on
/// the client's address counts each of them apart, as it counts clients.
fn spread_source() -> IpAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (k, host) = ((n / 250) % 250, n % 250 + 2);
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, k as u8, host as u8))
}

/// The result of a request that was not sent because nothing of the running nginx listens at
/// its address (`why`): what a refused connection records.
pub fn not_listening(check: &Check, why: String, opts: &HealthOptions) -> CheckResult {
    let answer = judge(None, false, &check.gate, opts.expect_status.as_deref());
    CheckResult {
        check: check.clone(),
        status: None,
        error: Some(why),
        answer,
        attempts: 0,
        failures: 0,
        first_failure: None,
        intermittent_errors: Vec::new(),
        elapsed: Duration::ZERO,
        failed: answer == Answer::Failed,
        refused: true,
        timed_out: false,
        hint: None,
        wrong_name: None,
        tls12: Tls12::Unasked,
        h2: H2::Unasked,
        empty: false,
    }
}

/// A connection of its own to `check`'s TLS listen for a request beside the check's (a TLS
/// 1.2 handshake, the same request over HTTP/2), within `left`, its PROXY header sent, and the
/// name its handshake sends (the Host, or the address with no Host). `None` when any of that
/// fails: such a request then says nothing.
fn side_connection(
    check: &Check,
    left: Duration,
    source: Option<IpAddr>,
) -> Option<(Stream, rustls::pki_types::ServerName<'static>)> {
    let (mut stream, proxy) = open(check, left, source).ok()?;
    stream.timeouts(left).ok()?;
    if check.proxy_protocol {
        proxy
            .and_then(|header| stream.write_all(header.as_bytes()))
            .ok()?;
    }
    let name = match check.host.is_empty() {
        true => rustls::pki_types::ServerName::IpAddress(check.connect.ip().into()),
        false => tls::server_name(&check.host).ok()?,
    };
    Some((stream, name))
}

/// A handshake offering TLS 1.2 alone to `check`'s listen, with its SNI, by `deadline` (see
/// [`Tls12`]). A failure our client meets for want of something in common is asked of
/// OpenSSL's client too, which offers what nginx's OpenSSL supports (CBC suites, RSA key
/// exchange), before it counts.
fn tls12_handshake(check: &Check, deadline: Instant, source: Option<IpAddr>) -> Tls12 {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Tls12::Unasked;
    }
    let Some((mut stream, name)) = side_connection(check, left, source) else {
        return Tls12::Unasked;
    };
    let Ok(config) = tls::client_config_tls12() else {
        return Tls12::Unasked;
    };
    let Ok(mut conn) = rustls::ClientConnection::new(config, name) else {
        return Tls12::Unasked;
    };
    let why = loop {
        if !conn.is_handshaking() {
            return Tls12::Completed;
        }
        if let Err(e) = conn.complete_io(&mut stream) {
            break e;
        }
    };
    let text = why.to_string();
    if text.contains("ProtocolVersion") || text.contains("protocol version") {
        return Tls12::NotOffered;
    }
    if !not_negotiated(&text) || !openssl_reaches(check) {
        // The connection failed, not the negotiation: nothing to say of TLS 1.2.
        return Tls12::Unasked;
    }
    match s_client(check, &["-tls1_2"], "", deadline) {
        Ok(Some(out)) if tls::first_pem_certificate(&String::from_utf8_lossy(&out)).is_some() => {
            Tls12::Completed
        }
        Ok(Some(_)) => Tls12::Failed(text),
        _ => Tls12::Unasked,
    }
}

enum Failure {
    /// Closed before a byte of answer (over HTTP/2: before the response's headers), what
    /// nginx's `return 444` does; why, in words.
    Closed(String),
    /// nginx refused the connection itself: nothing listens there.
    Refused(String),
    /// A `listen unix:` whose socket file is gone while a socket bound to that path still
    /// listens: someone deleted the file, nginx holds the socket, and nothing can connect.
    Unlinked(String),
    /// The request's own timeout passed first.
    TimedOut(String),
    Other(String),
}

/// What to do about a `listen unix:` whose socket file was deleted while nginx holds it: the
/// failure is nginx's, before any change and after it, and no reload mends it.
pub const UNLINKED: &str = "the socket file was deleted while nginx still holds the listening \
     socket; a reload keeps the socket as it is and never recreates the file: restart nginx (a \
     restart, not a reload) to recreate it";

/// `path` as a request line carries it: a space, a control character or a byte outside ASCII
/// (`location "/a b/"`) percent-encoded, as a browser sends it; nginx decodes it back before
/// it matches a location. Sent raw, a space ends the request target and nginx answers 400.
fn request_target(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b' ' | 0..=0x1f | 0x7f.. => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// What [`io_text`] says of a timeout.
const TIMED_OUT: &str = ": timed out after ";

/// An I/O error as a [`Failure`]: a timeout is one of its own.
fn io_failure(what: &str, e: &std::io::Error, timeout: Duration) -> Failure {
    let text = io_text(what, e, timeout);
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Failure::TimedOut(text),
        _ => Failure::Other(text),
    }
}

/// The most of a response read: the status line is all we need, the rest is drained only so
/// the connection closes cleanly.
const MAX_RESPONSE: u64 = 256 * 1024;

/// An I/O error as the operator should read it: a timeout says so and for how long, not
/// "Resource temporarily unavailable (os error 11)".
fn io_text(what: &str, e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("{what}{TIMED_OUT}{}", humantime::format_duration(timeout))
        }
        // rustls appends a link to its manual ("...close_notify: https://docs.rs/..."): the
        // operator needs what happened, not where the library explains it.
        _ => {
            let text = e.to_string();
            let text = text.split(": https://docs.rs/").next().unwrap_or(&text);
            format!("{what}: {text}")
        }
    }
}

/// `GET` on a fresh connection, `Connection: close` (over HTTP/2 with prior knowledge on a
/// plaintext `http2` listen: one stream, then GOAWAY); the response status.
fn get_status(
    check: &Check,
    timeout: Duration,
    headers: &[(String, String)],
    source: Option<IpAddr>,
    wrong_name: &tls::WrongName,
) -> Result<(u16, bool), Failure> {
    let deadline = Instant::now() + timeout;
    let other = Failure::Other;
    let (mut stream, proxy) = open(check, timeout, source).map_err(|e| {
        let what = format!("connect to {}", check.via());
        // Refused as well as not found: while `nginx -t` runs beside the checks it binds the
        // missing path for a moment, and a connect then meets its socket, not the one the
        // running nginx listens on.
        let unlinked = |path: &std::path::Path| {
            matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                && Listeners::tables().accepts_unix(path)
        };
        match &check.unix {
            Some(path) if unlinked(path) => Failure::Unlinked(format!(
                "{what}: the socket file is gone, but a socket bound to that path still \
                 listens: its file was deleted"
            )),
            // No socket file, or nobody listening on it: nothing listens there, as a refused
            // TCP connection says.
            _ if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                Failure::Refused(io_text(&what, &e, timeout))
            }
            _ => io_failure(&what, &e, timeout),
        }
    })?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream.timeouts(left).map_err(|e| other(e.to_string()))?;
    if check.proxy_protocol {
        let header = proxy.map_err(|e| other(format!("PROXY header: {e}")))?;
        stream
            .write_all(header.as_bytes())
            .map_err(|e| io_failure("send", &e, timeout))?;
    }
    if check.http2 {
        let req = h2c::request(&host_header(check), &check.path, &fields(check, headers));
        let Stream::Tcp(tcp) = &stream else {
            return Err(other(
                "plaintext HTTP/2 over a unix socket: requests with prior knowledge are sent \
                 over TCP only"
                    .into(),
            ));
        };
        return match h2c::exchange(&mut &*tcp, &req, deadline) {
            Ok(h2c::End::Status(status)) => Ok((status, false)),
            Ok(h2c::End::NoAnswer(why)) => Err(Failure::Closed(why)),
            Err(h2c::Fault::Io(what, e)) => Err(io_failure(what, &e, timeout)),
            Err(h2c::Fault::Protocol(why)) => Err(other(why)),
        };
    }
    let req = request_bytes(check, headers);
    let response = if check.tls {
        let config = tls::client_config(wrong_name.clone()).map_err(|e| other(e.to_string()))?;
        // With no Host to send there is no name for SNI either: the address stands for it.
        let name = match check.host.is_empty() {
            true => rustls::pki_types::ServerName::IpAddress(check.connect.ip().into()),
            false => tls::server_name(&check.host).map_err(other)?,
        };
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| other(e.to_string()))?;
        match exchange(
            rustls::StreamOwned::new(conn, stream),
            &req,
            timeout,
            deadline,
        ) {
            // Our TLS stack offers less than OpenSSL's (no secp521r1, no RSA key exchange):
            // settings nginx and every OpenSSL client agree on are asked through OpenSSL's
            // own client before the handshake counts as a failure.
            Err(Failure::Other(why)) if not_negotiated(&why) && openssl_reaches(check) => {
                let answer = openssl_exchange(check, &req, deadline).map_err(|_| other(why))?;
                // Its certificate, which our client never saw, is checked as ours would be.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let sent = openssl_certificate(check, deadline);
                let wrong = sent.and_then(|der| {
                    let name = tls::server_name(&check.host).ok()?;
                    tls::problem(&der, &name, now)
                });
                if let (Some(w), Ok(mut slot)) = (wrong, wrong_name.lock()) {
                    *slot = Some(w);
                }
                Ok(answer)
            }
            result => result,
        }
    } else {
        exchange(stream, &req, timeout, deadline)
    }?;
    if response.is_empty() {
        return Err(Failure::Closed(
            "the connection closed without an answer".into(),
        ));
    }
    let status = parse_status(&response).map_err(other)?;
    if let Some(location) = self_redirect(check, status, &response) {
        return Err(other(format!(
            "HTTP {status} to {location}, the URL requested: a redirect loop for every client"
        )));
    }
    if let Some(why) = dead_redirect(check, status, &response, timeout) {
        return Err(other(format!("HTTP {status} {why}")));
    }
    Ok((status, empty_page(status, &response)))
}

/// A 2xx answer (not a 204) whose whole body is known to be empty: `Content-Length: 0`, or
/// a chunked body whose first chunk is the last. A body cut short or still coming counts as
/// none of that.
fn empty_page(status: u16, response: &[u8]) -> bool {
    if !(200..=299).contains(&status) || status == 204 {
        return false;
    }
    let Some(head) = head_of(response) else {
        return false;
    };
    let body = &response[head.len() + 4..];
    match (
        field(head, "content-length"),
        field(head, "transfer-encoding"),
    ) {
        (Some(n), _) => n == "0",
        (None, Some(te)) if te.to_ascii_lowercase().contains("chunked") => {
            body.starts_with(b"0\r\n") || body.starts_with(b"0;")
        }
        _ => false,
    }
}

/// A redirect no client can follow: to the host `_` (a catch-all's `server_name _` written
/// out as `$server_name`), or to another port it names of the same site's address where
/// nothing listens (`return 301 https://$host:4443$request_uri` before any `listen 4443
/// ssl`). The port is tried only where the check went to nginx itself (not to the shadow's
/// stand-in, whose listens are elsewhere).
fn dead_redirect(check: &Check, status: u16, response: &[u8], timeout: Duration) -> Option<String> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = location_of(response)?;
    let (scheme, rest) = location.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !authority.starts_with('[') => (h, p.parse::<u16>().ok()),
        _ => (authority, None),
    };
    if host == "_" {
        return Some(format!(
            "to {location}: `_` is no host name (a catch-all's `server_name _`, sent as \
             $server_name): no client can follow it"
        ));
    }
    // Only a port the Location names: a redirect to the scheme's own port may be a load
    // balancer's, in front of this machine.
    let port = port.filter(|_| matches!(scheme.as_str(), "http" | "https"))?;
    let same = port == check.connect.port() && (scheme == "https") == check.tls;
    if check.dial.is_some()
        || check.unix.is_some()
        || same
        || !host.eq_ignore_ascii_case(&check.host)
    {
        return None;
    }
    let to = SocketAddr::new(check.connect.ip(), port);
    let wait = timeout.min(Duration::from_secs(1));
    match TcpStream::connect_timeout(&to, wait) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(format!(
            "to {location}, where nothing listens ({to} refused the connection): no client \
             can follow it"
        )),
        _ => None,
    }
}

/// The `Location` header of a response.
fn location_of(response: &[u8]) -> Option<String> {
    field(head_of(response)?, "location")
}

/// The header of a response: its bytes before the blank line, once that has come.
fn head_of(response: &[u8]) -> Option<&[u8]> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(&response[..end])
}

/// The value of the header field `name` (case-insensitive) in `head`, trimmed: the first
/// such line after the status line.
fn field(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().skip(1).find_map(|l| {
        let (n, value) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

/// The `Location` of a redirect (301, 302, 303, 307, 308) back to the very URL `check`
/// asked (the same scheme, Host and path with query; a port only when the Location names
/// another): a browser follows it until it gives up. An app with a canonical Host that is
/// sent another one (`proxy_set_header Host $proxy_host`) answers every request so.
fn self_redirect(check: &Check, status: u16, response: &[u8]) -> Option<String> {
    if !matches!(status, 301 | 302 | 303 | 307 | 308) || check.host.is_empty() {
        return None;
    }
    let location = location_of(response)?;
    let scheme = if check.tls { "https" } else { "http" };
    let (to_scheme, authority, path) = match location.split_once("://") {
        Some((sc, rest)) => {
            let slash = rest.find('/').unwrap_or(rest.len());
            let path = if slash == rest.len() {
                "/"
            } else {
                &rest[slash..]
            };
            (
                sc.to_ascii_lowercase(),
                rest[..slash].to_string(),
                path.to_string(),
            )
        }
        None if location.starts_with('/') && !location.starts_with("//") => {
            (scheme.to_string(), check.host.clone(), location.clone())
        }
        None => return None,
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.to_string(), p.parse::<u16>().ok())
        }
        _ => (authority.clone(), None),
    };
    let same_port = port.is_none_or(|p| p == check.connect.port() || check.unix.is_some());
    (to_scheme == scheme
        && host.eq_ignore_ascii_case(&check.host)
        && same_port
        && (path == check.path || path == request_target(&check.path)))
    .then_some(location)
}

/// A connection to nginx: TCP, or the unix socket of a `listen unix:`.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl h2c::Timed for rustls::StreamOwned<rustls::ClientConnection, Stream> {
    fn read_timeout(&mut self, left: Duration) -> std::io::Result<()> {
        self.sock.timeouts(left)
    }
}

impl Stream {
    fn timeouts(&self, left: Duration) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s
                .set_read_timeout(Some(left))
                .and_then(|_| s.set_write_timeout(Some(left))),
            Stream::Unix(s) => s
                .set_read_timeout(Some(left))
                .and_then(|_| s.set_write_timeout(Some(left))),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// Connect within `timeout`, and the PROXY protocol header for this connection. A unix
/// socket has no addresses to tell nginx: its header says `UNKNOWN`, which nginx accepts.
fn open(
    check: &Check,
    timeout: Duration,
    source: Option<IpAddr>,
) -> std::io::Result<(Stream, std::io::Result<String>)> {
    match &check.unix {
        Some(path) => {
            // A full accept queue blocks a plain unix connect: bound it like a TCP one.
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            socket.connect_timeout(&socket2::SockAddr::unix(path)?, timeout)?;
            let stream = UnixStream::from(std::os::fd::OwnedFd::from(socket));
            Ok((Stream::Unix(stream), Ok("PROXY UNKNOWN\r\n".to_string())))
        }
        None => {
            // The shadow's stand-in when it has one; the PROXY header names the listen the
            // request is for either way.
            let to = check.dial.unwrap_or(check.connect);
            let tcp = match source.filter(|s| s.is_loopback() && to.ip().is_loopback()) {
                Some(from) if from.is_ipv4() == to.is_ipv4() => {
                    let socket = socket2::Socket::new(
                        socket2::Domain::for_address(to),
                        socket2::Type::STREAM,
                        None,
                    )?;
                    socket.bind(&SocketAddr::new(from, 0).into())?;
                    socket.connect_timeout(&to.into(), timeout)?;
                    TcpStream::from(socket)
                }
                _ => TcpStream::connect_timeout(&to, timeout)?,
            };
            let header = proxy_header(&tcp, check.connect);
            Ok((Stream::Tcp(tcp), header))
        }
    }
}

/// The Host header value: the port only when it is not the scheme's (none over a unix socket,
/// none at all for a check that sends no Host).
fn host_header(check: &Check) -> String {
    match (check.tls, check.connect.port()) {
        _ if check.unix.is_some() || check.host.is_empty() => check.host.clone(),
        (false, 80) | (true, 443) => check.host.clone(),
        (_, port) => format!("{}:{port}", check.host),
    }
}

/// The fields every request carries after its Host, in order. Credentials go only here,
/// never into anything shown.
fn fields(check: &Check, headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "User-Agent".to_string(),
            format!("safe-reload/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("Accept".to_string(), "*/*".to_string()),
    ];
    if let Some(auth) = &check.auth {
        out.push((
            "Authorization".to_string(),
            format!("Basic {}", base64(auth.expose().as_bytes())),
        ));
    }
    // The operator's fields replace the defaults of the same name (one User-Agent, not two),
    // and a check's own (the header that takes its branch) replaces both.
    out.retain(|(n, _)| !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n)));
    out.extend(headers.iter().cloned());
    for (name, value) in &check.headers {
        out.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        out.push((name.clone(), value.clone()));
    }
    out
}

/// The HTTP/1.1 request's bytes; HTTP/1.0 with no Host for a check with no Host to send (the
/// request nginx gives to the server whose `server_name` is `""`, a server's implicit name
/// when it has none: HTTP/1.1 requires a Host).
fn request_bytes(check: &Check, headers: &[(String, String)]) -> String {
    let method = if check.grpc { "POST" } else { "GET" };
    let path = request_target(&check.path);
    let mut req = match check.host.is_empty() {
        true => format!("{method} {path} HTTP/1.0\r\n"),
        false => format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            host_header(check)
        ),
    };
    for (name, value) in fields(check, headers) {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if check.grpc {
        // One empty gRPC message: no compression flag, zero length.
        req.push_str("Content-Type: application/grpc\r\nTE: trailers\r\nContent-Length: 5\r\n");
    }
    // A WebSocket handshake asks for the upgrade, and for a close when it is not granted:
    // nginx then ends any other answer with the connection.
    let upgrade = (check.headers.iter()).any(|(n, _)| n.eq_ignore_ascii_case("upgrade"));
    match upgrade {
        true => req.push_str("Connection: Upgrade, close\r\n\r\n"),
        false => req.push_str("Connection: close\r\n\r\n"),
    }
    if check.grpc {
        req.push_str("\0\0\0\0\0");
    }
    req
}

/// PROXY protocol v1 from this connection's own address to `dst`, the listen the request is
/// for (the shadow's stand-in is dialled, production's address is named): nginx reads it
/// before anything else on a `proxy_protocol` listen.
fn proxy_header(tcp: &TcpStream, dst: SocketAddr) -> std::io::Result<String> {
    let src = tcp.local_addr()?;
    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    Ok(format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    ))
}

/// Standard base64 with padding, for the Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn exchange(
    mut stream: impl Read + Write,
    req: &str,
    timeout: Duration,
    deadline: Instant,
) -> Result<Vec<u8>, Failure> {
    stream
        .write_all(req.as_bytes())
        .and_then(|_| stream.flush())
        .map_err(|e| io_failure("send", &e, timeout))?;
    let mut buf = Vec::new();
    let read = read_answer(&mut stream, &mut buf, deadline);
    // A status line already read is enough evidence even if the body was cut short.
    match read {
        // Over TLS, nginx's `return 444` closes the connection without a close_notify: our
        // TLS client reads that as an unexpected end, and it is the same close.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
            ) && buf.is_empty() =>
        {
            Err(Failure::Closed(
                "the connection closed without an answer".into(),
            ))
        }
        Err(e) if !buf.contains(&b'\n') => Err(io_failure("read", &e, timeout)),
        _ => Ok(buf),
    }
}

/// Read the answer until the peer closes, up to [`MAX_RESPONSE`]; a `101 Switching Protocols`
/// only to the end of its header, as the connection then stays open. A body still coming at
/// `deadline` (a Server-Sent-Events stream, a long poll that sends as it goes) ends the read
/// there: its status line and header are the answer. Each read waits at most the time the
/// stream's read timeout allows, so a body that trickles in stops soon after `deadline` too.
fn read_answer(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut chunk = [0u8; 8192];
    while (buf.len() as u64) < MAX_RESPONSE {
        if Instant::now() >= deadline {
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            return Err(ErrorKind::TimedOut.into());
        }
        let n = match stream.read(&mut chunk) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            read => read?,
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let switched = buf.starts_with(b"HTTP/1.1 101") || buf.starts_with(b"HTTP/1.0 101");
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
        if switched && head_end.is_some() {
            break;
        }
        // An event stream has no end to wait for: its header is the answer.
        if head_end.is_some_and(|end| event_stream(&buf[..end])) {
            break;
        }
    }
    Ok(())
}

/// Whether a response header says `Content-Type: text/event-stream`.
fn event_stream(head: &[u8]) -> bool {
    field(head, "content-type")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("text/event-stream"))
}

/// A TLS handshake our client could not complete for want of something in common: an alert
/// from nginx (no shared group or cipher suite), or a choice of its our client does not
/// support.
fn not_negotiated(why: &str) -> bool {
    why.contains("received fatal alert") || why.contains("peer is incompatible")
}

/// Whether `openssl s_client` can be asked at `check`'s listen: a PROXY header goes through
/// a relay, which speaks TCP only.
fn openssl_reaches(check: &Check) -> bool {
    !(check.proxy_protocol && check.unix.is_some())
}

/// The request through `openssl s_client`, which offers what nginx's OpenSSL supports; its
/// raw answer. An error when OpenSSL is not installed, its handshake fails too, or `deadline`
/// passes (it is then killed).
fn openssl_exchange(check: &Check, req: &str, deadline: Instant) -> Result<Vec<u8>, String> {
    match s_client(check, &["-quiet", "-ign_eof"], req, deadline)? {
        Some(buf) if buf.starts_with(b"HTTP/") => Ok(buf),
        Some(_) => Err("openssl s_client: no HTTP answer".into()),
        None => Err("openssl s_client: no answer in time".into()),
    }
}

/// The certificate nginx sends `check` as `openssl s_client` gets it (DER), when it completes
/// a handshake by `deadline`: the one a check through [`openssl_exchange`] was answered over.
fn openssl_certificate(check: &Check, deadline: Instant) -> Option<Vec<u8>> {
    let out = s_client(check, &[], "", deadline).ok()??;
    tls::first_pem_certificate(&String::from_utf8_lossy(&out))
}

/// `openssl s_client` to `check`'s listen with `args`, `input` on its stdin; what it wrote
/// to stdout, or `None` when `deadline` passed first (it is then killed).
fn s_client(
    check: &Check,
    args: &[&str],
    input: &str,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, String> {
    let mut cmd = std::process::Command::new("openssl");
    cmd.arg("s_client").args(args);
    // `s_client` cannot send a PROXY header: on a `proxy_protocol` listen it goes through a
    // relay that does.
    let relay = match check.proxy_protocol {
        true => Some(proxy_relay(check, deadline).map_err(|e| format!("PROXY relay: {e}"))?),
        false => None,
    };
    match (&check.unix, &relay) {
        (_, Some((at, _))) => cmd.arg("-connect").arg(at.to_string()),
        (Some(path), None) => cmd.arg("-unix").arg(path),
        (None, None) => cmd
            .arg("-connect")
            .arg(check.dial.unwrap_or(check.connect).to_string()),
    };
    let name = check.host.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
        cmd.arg("-noservername");
    } else {
        cmd.args(["-servername", name]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("openssl s_client: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("openssl s_client: no stdin")?;
    let mut stdout = child.stdout.take().ok_or("openssl s_client: no stdout")?;
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout).take(MAX_RESPONSE).read_to_end(&mut buf);
        buf
    });
    let finished = loop {
        match child.try_wait() {
            Ok(Some(_)) => break true,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
        }
    };
    let buf = reader.join().unwrap_or_default();
    if let Some((_, relay)) = relay {
        // It ends when either side closes, and at `deadline` at the latest.
        let _ = relay.join();
    }
    Ok(finished.then_some(buf))
}

/// A relay on a loopback port of this process for one connection to `check`'s `proxy_protocol`
/// listen: it connects there (to the shadow's stand-in when dialled), sends the PROXY header
/// the check sends, and copies both ways until either side closes or `deadline` passes.
fn proxy_relay(
    check: &Check,
    deadline: Instant,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0))?;
    listener.set_nonblocking(true)?;
    let at = listener.local_addr()?;
    let (to, named) = (check.dial.unwrap_or(check.connect), check.connect);
    let relay = std::thread::spawn(move || {
        let _ = relay_one(&listener, to, named, deadline);
    });
    Ok((at, relay))
}

fn relay_one(
    listener: &TcpListener,
    to: SocketAddr,
    named: SocketAddr,
    deadline: Instant,
) -> std::io::Result<()> {
    let client = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    };
    client.set_nonblocking(false)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut server = TcpStream::connect_timeout(&to, left())?;
    server.write_all(proxy_header(&server, named)?.as_bytes())?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(left()))?;
        s.set_write_timeout(Some(left()))?;
    }
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let _ = std::io::copy(&mut from_server, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_server.shutdown(Shutdown::Both);
    let _ = up.join();
    Ok(())
}

fn parse_status(response: &[u8]) -> Result<u16, String> {
    match crate::status_line::read(response) {
        crate::status_line::Read::Line(line) => Ok(line.code),
        _ => {
            let end = response.iter().position(|&b| b == b'\n');
            let line = String::from_utf8_lossy(&response[..end.unwrap_or(response.len())]);
            // nginx's SETTINGS frame, the first an HTTP/2 server sends: a plaintext
            // `http2` listen (nginx 1.22) speaks nothing else.
            if response.len() >= 9 && response[3] == 4 && response[5..9] == [0, 0, 0, 0] {
                return Err(
                    "an HTTP/2 frame, not an HTTP/1.1 response: a plaintext listen \
                            with `http2` speaks only HTTP/2, and HTTP/1.1 clients get no \
                            answer"
                        .into(),
                );
            }
            Err(format!("not an HTTP response: {:?}", line.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errorlog::{peer_of, LogLine};

    #[test]
    fn a_windows_checks_of_one_listen_and_name_share_one_tls12_handshake() {
        let check = |host: &str, path: &str, port: u16| {
            Check::plain(
                format!("https://{host}{path}"),
                SocketAddr::from(([127, 0, 0, 1], port)),
                host.into(),
                path.into(),
                true,
            )
        };
        let memo = Tls12Memo::default();
        let asked = AtomicUsize::new(0);
        let ask = |got: Tls12| {
            || {
                asked.fetch_add(1, Ordering::SeqCst);
                got
            }
        };
        for path in ["/", "/api/", "/static/"] {
            let got = memo.get(&check("a.test", path, 443), ask(Tls12::Completed));
            assert_eq!(got, Tls12::Completed);
        }
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one handshake for a.test:443"
        );
        // Another name, another listen: their own.
        memo.get(&check("B.test", "/", 443), ask(Tls12::NotOffered));
        memo.get(&check("b.test", "/x", 443), ask(Tls12::Completed));
        memo.get(&check("a.test", "/", 8443), ask(Tls12::Completed));
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        // A handshake whose connection failed says nothing: the next check asks again.
        memo.get(&check("c.test", "/", 443), ask(Tls12::Unasked));
        let got = memo.get(&check("c.test", "/", 443), ask(Tls12::Completed));
        assert_eq!((got, asked.load(Ordering::SeqCst)), (Tls12::Completed, 5));
        // A new window asks afresh.
        let fresh = HealthOptions::default().for_window();
        let memo = fresh.tls12_memo.expect("a memo of its own");
        memo.get(&check("a.test", "/", 443), ask(Tls12::Completed));
        assert_eq!(asked.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn a_redirect_to_the_url_asked_is_a_loop_and_one_elsewhere_is_not() {
        let check = |tls| {
            Check::plain(
                "http://blog.test/a?b=1".into(),
                "127.0.0.1:8080".parse().expect("address"),
                "blog.test".into(),
                "/a?b=1".into(),
                tls,
            )
        };
        let answer = |status: u16, location: &str| {
            format!("HTTP/1.1 {status} Moved\r\nServer: x\r\nLocation: {location}\r\n\r\n")
        };
        let loops = |tls, status, location: &str| {
            self_redirect(&check(tls), status, answer(status, location).as_bytes()).is_some()
        };
        assert!(loops(false, 301, "http://blog.test/a?b=1"));
        assert!(loops(false, 302, "http://BLOG.test:8080/a?b=1"));
        assert!(loops(false, 307, "/a?b=1"));
        assert!(loops(true, 308, "https://blog.test/a?b=1"));
        assert!(!loops(false, 301, "https://blog.test/a?b=1"), "to https");
        assert!(
            !loops(false, 301, "http://blog.test/a/?b=1"),
            "another path"
        );
        assert!(
            !loops(false, 301, "http://www.blog.test/a?b=1"),
            "another host"
        );
        assert!(
            !loops(false, 301, "http://blog.test:9090/a?b=1"),
            "another port"
        );
        assert!(
            !loops(false, 200, "http://blog.test/a?b=1"),
            "not a redirect"
        );
    }

    #[test]
    fn a_path_is_sent_percent_encoded_where_a_request_line_needs_it() {
        assert_eq!(request_target("/a b/"), "/a%20b/");
        assert_eq!(request_target("/caf\u{e9}/?q=1"), "/caf%C3%A9/?q=1");
        assert_eq!(request_target("/x%20y/"), "/x%20y/");
    }

    #[test]
    fn an_io_error_is_said_without_the_librarys_manual_link() {
        let e = std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: \
             https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
        );
        assert_eq!(
            io_text("read", &e, Duration::from_secs(2)),
            "read: peer closed connection without sending TLS close_notify"
        );
    }

    fn logged(text: &str) -> UpstreamError {
        let line = LogLine {
            path: "/var/log/nginx/error.log".into(),
            level: Some(crate::errorlog::Level::Error),
            text: text.into(),
        };
        upstream_error(&line).expect("an upstream error")
    }

    #[test]
    fn peers_are_read_from_the_upstream_field() {
        assert_eq!(
            peer_of("http://127.0.0.1:8000/api").as_deref(),
            Some("127.0.0.1:8000")
        );
        assert_eq!(peer_of("http://[::1]:80/").as_deref(), Some("[::1]:80"));
        assert_eq!(
            peer_of("fastcgi://unix:/run/php.sock:").as_deref(),
            Some("unix:/run/php.sock")
        );
    }

    #[test]
    fn only_connect_errors_to_known_down_peers_are_expected() {
        let down = vec!["127.0.0.1:8001".to_string()];
        let refused = logged("connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8001/\", host: \"a\"");
        assert!(is_expected(&refused, &down));
        let other = logged("connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8002/\", host: \"a\"");
        assert!(!is_expected(&other, &down));
        let read = logged("upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8001/\", host: \"a\"");
        assert!(!is_expected(&read, &down));
        let closed = logged("upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:8001/\", host: \"a\"");
        assert!(is_expected(&closed, &down));
    }

    #[test]
    fn basic_credentials_and_proxy_headers_are_bytes_as_specified() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        let mut check = super::super::parse_url("http://u:p@127.0.0.1:8080/x", &[]).unwrap();
        check.host = "a.test".into();
        let req = request_bytes(&check, &[("X-A".into(), "1".into())]);
        assert!(
            req.starts_with("GET /x HTTP/1.1\r\nHost: a.test:8080\r\n"),
            "{req}"
        );
        assert!(
            req.contains("Authorization: Basic dTpw\r\nX-A: 1\r\n"),
            "{req}"
        );
        assert!(!check.url.contains(":p@"), "{}", check.url);
        // The operator's User-Agent replaces the default: one field, theirs.
        let ua = [("user-agent".to_string(), "probe/1".to_string())];
        let req = request_bytes(&check, &ua);
        assert_eq!(
            req.to_ascii_lowercase().matches("user-agent:").count(),
            1,
            "{req}"
        );
        assert!(req.contains("user-agent: probe/1\r\n"), "{req}");
        // A check's own field (the one that takes its branch) replaces the operator's.
        check.headers = vec![("User-Agent".into(), "mozilla".into())];
        let req = request_bytes(&check, &ua);
        assert_eq!(
            req.to_ascii_lowercase().matches("user-agent:").count(),
            1,
            "{req}"
        );
        assert!(req.contains("User-Agent: mozilla\r\n"), "{req}");
        check.headers.clear();
        // Sent to a stand-in (the shadow), the request is still the one for 8080.
        check.dial = Some("127.0.0.1:39999".parse().unwrap());
        let req = request_bytes(&check, &[]);
        assert!(req.contains("Host: a.test:8080\r\n"), "{req}");
        // A gRPC location gets a gRPC call: one empty message to the location's path.
        check.grpc = true;
        let req = request_bytes(&check, &[]);
        assert!(req.starts_with("POST /x HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Content-Type: application/grpc\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\n\0\0\0\0\0"), "{req}");
    }

    #[test]
    fn a_timeout_is_called_a_timeout() {
        let e = std::io::Error::from(ErrorKind::WouldBlock);
        assert_eq!(
            io_text("read", &e, Duration::from_secs(2)),
            "read: timed out after 2s"
        );
    }
}
