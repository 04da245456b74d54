//! The candidate's checks through the shadow, and what they mean.
//!
//! Each check goes to the shadow's stand-in for the address it names, with the same Host and
//! SNI, all of them at once as a round of verification sends them, and the shadow's error log
//! is read after them, exactly as verification reads the real one after a reload. The checks
//! that fail there are then asked of the running nginx together, and the two answers are
//! compared by the verdict's own function (`verdict::difference`), so the shadow
//! refuses exactly what verification after the reload would roll back: if it fails there too
//! the failure is older than the change and refuses nothing; if it passes there, the running
//! nginx does not listen there yet (a new listen has no baseline), or it was only slower than
//! `--health-timeout` there (its clients get their answer) while the shadow fails it (its own
//! 504), the change broke it. [`judge`] makes that decision from the results alone.
//!
//! An upstream error the shadow logs behind a good answer is judged as verification after
//! the reload judges it: the running nginx is asked the same request, as many rounds as the
//! baseline makes, and an error it does not log too is the change's (the new workers of a
//! reload start as fresh as the shadow, so they would log it, and the change would be rolled
//! back for it). One it logs too is nginx failing over, before the change and after.
//!
//! A 5xx the shadow answers where the running nginx answers without one (a 500 from an
//! `auth_request` whose backend fails) is a failure of the change, by the rule verification
//! after the reload judges it by (`health::erring_since`).
//!
//! A failure of a request that reads what differs in the shadow (`$server_port`,
//! `$server_addr`: see `differs`) is left to verification after the reload; that is decided
//! for each failing request, never for the whole configuration.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::conf::Remapped;
use super::differs::Differs;
use super::Shadow;
use crate::errorlog::{self, Cursors, Level, LogLine, UpstreamError};
use crate::health::recent::{self, Serving};
#[cfg(test)]
use crate::health::samples::varied;
use crate::health::samples::{
    self, logged_for, path_may_vary, pool_of, MAX_RUNNING_SAMPLES, POOL_SAMPLES, SAMPLES,
};
use crate::health::{self, Check, CheckResult, HealthOptions};
use crate::verdict::{self, Difference, Seen};

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
    /// The running nginx's answer to the same request, asked only when the shadow's failed
    /// or the shadow logged an upstream error for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<CheckResult>,
    /// Upstream errors the running nginx logged for the same request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub running_errors: Vec<UpstreamError>,
    /// What this request reads that differs in the shadow: a failure is then left to
    /// verification after the reload (set by the caller, see `differs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differs: Option<Differs>,
    /// The check asked again of both nginxes ([`sample`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampled: Option<Sampled>,
    /// How many of the shadow's samples got no answer within `--health-timeout`, of how
    /// many (slow, not failed: a member that accepts and never answers shows only so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_timed_out: Option<(usize, usize)>,
    /// With no nginx running here (`check` on a CI runner), the failed check's upstream errors
    /// were all connect errors to peers the probe found down before the change too: those
    /// peers. Nothing answers the same request for comparison, and the probe already said the
    /// change leaves them as they were: not the change's (see [`ask_running`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_before: Option<String>,
    /// A line at `error` or worse the shadow logged while its checks ran that is no upstream
    /// error (`cannot load certificate key ... Permission denied while SSL handshaking`):
    /// given to a failed answer with no HTTP status, which otherwise says only what the client
    /// saw (`received fatal alert: InternalError`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nginx_logged: Option<String>,
    /// What the shadow logged for this request that names its failure's cause, which no
    /// value that differs in the shadow explains (see [`OWN_CAUSES`]): its failure is the
    /// change's, whatever the request reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_cause: Option<String>,
}

/// A check asked again of the shadow and then of the running nginx (see [`sample`]).
#[derive(Debug, Clone, Serialize)]
pub struct Sampled {
    pub asked: usize,
    pub running_asked: usize,
    pub shadow_failed: usize,
    pub running_failed: usize,
    /// The first failed answer through the shadow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

impl Sampled {
    /// The change made the request fail now and then where the running nginx never fails it:
    /// a server added to a pool that answers 502 itself or never answers (nginx passes on a
    /// backend's own 502 and does not retry it), not a flaky backend both share.
    pub fn worse(&self) -> bool {
        samples::more_often(
            (self.shadow_failed, self.asked),
            (self.running_failed, self.running_asked),
        )
    }
}

/// One request through the shadow reaches one server of a pool, and an answer that failed
/// and then passed may be a pool's, not a flaky backend's. So a check that answered
/// intermittently, and one check for each pool of more than one server (`pools`, see
/// `conf::pool_sizes`) that answered, is asked again through the shadow: [`SAMPLES`] times or
/// twice the sum of the pool's weights, up to [`MAX_SAMPLES`] (its one worker's weighted round
/// robin gives each request the next server). When some of those fail, the running nginx is
/// asked four times as often. Failed answers through the shadow (two or more) where the
/// running nginx failed none, or clearly fewer (see `samples::more_often`), are the change's
/// ([`Sampled::worse`]): a pool member it added (or gave a higher weight)
/// that fails every request it gets (a 502 of its own, which nginx passes on, or no answer)
/// fails that share of every client's. A backend both nginxes share that fails now and then
/// shows on both sides, and stays a warning. The running nginx is asked only after the
/// shadow, so a backend that fails every third request it gets shows that on both.
pub fn sample(
    shadow: &Shadow,
    checks: &mut [ShadowCheck],
    opts: &HealthOptions,
    pools: &std::collections::HashMap<String, usize>,
    limits: &std::collections::HashMap<String, usize>,
    path_hashed: &HashSet<String>,
    running_logs: &[PathBuf],
) {
    // The shadow's and the running nginx's handshakes go to different places: one memo.
    let opts = &opts.for_window();
    let mut sampled_pools = HashSet::new();
    for c in checks.iter_mut() {
        if c.worse() || c.failed() {
            continue;
        }
        let check = &c.shadow.check;
        let pass = check
            .upstream
            .as_deref()
            .or(check.samples_through.as_deref());
        let pool = pass.and_then(|u| pool_of(u, pools));
        let limit = (pool.and_then(|(name, _)| limits.get(name))).map_or(SAMPLES, |l| *l);
        // A pool named by a variable (`proxy_pass http://$tier_pool`, a `map` value): which
        // pool, and how big, is not known here, so it is sampled as a pool of a few.
        let dynamic = (c.shadow.check.upstream.as_deref())
            .filter(|u| pool.is_none() && u.contains('$'))
            .map(|u| u.to_ascii_lowercase());
        let n = match (pool, dynamic) {
            (Some((name, size)), _) if sampled_pools.insert(name.to_string()) => {
                samples::for_pool(size)
            }
            (None, Some(pass)) if sampled_pools.insert(pass.clone()) => POOL_SAMPLES,
            _ if c.shadow.intermittent() => SAMPLES,
            _ => continue,
        };
        let Some(routed) = shadow.ports().route_check(&c.shadow.check) else {
            continue;
        };
        let on_path = pool.is_some_and(|(name, _)| path_hashed.contains(name))
            && path_may_vary(&c.shadow.check);
        let mut shadow_log = Cursors::open(&[shadow.error_log()]);
        let through_shadow = samples::ask(&routed, n, limit, on_path, opts);
        let (shadow_why, logged) =
            samples::failures(&through_shadow, &mut shadow_log, &c.shadow, on_path);
        let shadow_failed = shadow_why.iter().flatten().count();
        let timed_out = through_shadow.iter().filter(|r| r.timed_out).count();
        c.samples_timed_out = (timed_out > 0).then_some((timed_out, through_shadow.len()));
        // A hang-up nginx logged for a sample is the check's upstream error, as one logged
        // for its first request is: the running nginx is asked whether it logs it too (a
        // member that fails once is then skipped for `fail_timeout`, so one sample may be
        // all that reaches it).
        for e in logged {
            c.add_error(e);
        }
        if shadow_failed == 0 && !c.shadow.intermittent() {
            continue;
        }
        // Four times as many of the running nginx: a backend both share that fails one
        // request in five fails some of these too, where a server only the change has never
        // shows.
        let mut running_log = Cursors::open(running_logs);
        let through_running = samples::ask(
            &c.shadow.check.to_running(),
            (4 * n).min(MAX_RUNNING_SAMPLES),
            limit,
            on_path,
            opts,
        );
        if through_running.iter().any(|r| r.refused) {
            // Nothing of the running nginx listens there: no answer to compare with.
            continue;
        }
        let (running_why, _) =
            samples::failures(&through_running, &mut running_log, &c.shadow, on_path);
        c.sampled = Some(Sampled {
            asked: n,
            running_asked: through_running.len(),
            shadow_failed,
            running_failed: running_why.iter().flatten().count(),
            first_failure: shadow_why.into_iter().flatten().next(),
        });
    }
}

impl ShadowCheck {
    /// Count `e` among the check's upstream errors, once.
    fn add_error(&mut self, e: UpstreamError) {
        if !self
            .upstream_errors
            .iter()
            .any(|k| verdict::same_error(k, &e))
        {
            self.upstream_errors.push(e);
        }
    }
}

impl ShadowCheck {
    /// The shadow's answer fails (502, 504, no answer, a status `--expect-status` excludes).
    pub fn failed(&self) -> bool {
        self.shadow.failed
    }

    /// Whether the running nginx is asked the same request (see [`ask_running`]): the
    /// shadow's answer failed, was a 4xx or 5xx, came with an upstream error, or a
    /// WebSocket handshake was not switched (a 200 where the running nginx may answer 101).
    pub fn asks_running(&self) -> bool {
        let error = matches!(self.shadow.status, Some(400..=599));
        let unswitched = self.shadow.check.handshakes() && self.shadow.status != Some(101);
        self.failed()
            || error
            || unswitched
            || !self.upstream_errors.is_empty()
            || self.shadow.wrong_name.is_some()
            || self.shadow.tls12_failure().is_some()
            || self.shadow.h2_failure().is_some()
            || self.shadow.empty
    }

    /// The shadow's answer against the running nginx's, as the verdict after the reload
    /// would compare them.
    fn difference(&self) -> Difference {
        let before = self.running.as_ref().and_then(Seen::before);
        verdict::difference(before.as_ref(), &Seen::of(&self.shadow))
    }

    /// The running nginx answers this fine, does not listen there at all, or is only slow
    /// there: the shadow's failure is the change's.
    fn broken_by_change(&self) -> bool {
        self.difference() == Difference::Worse && self.down_before.is_none()
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

    /// The first upstream error the shadow logged for this request that the running nginx did
    /// not log for it: what verification after the reload would roll the change back for.
    fn new_error(&self) -> Option<&UpstreamError> {
        (self.upstream_errors.iter())
            .find(|e| !(self.running_errors.iter()).any(|r| verdict::same_error(r, e)))
    }

    /// Whether the change made this request worse: its answer, an upstream error, or answers
    /// that fail now and then where the running nginx's never do ([`Sampled::worse`]).
    pub fn worse(&self) -> bool {
        self.broken_by_change()
            || (!self.failed() && self.new_error().is_some())
            || self.sampled.as_ref().is_some_and(Sampled::worse)
    }

    /// What the change made worse, in words: `server S: GET URL through the shadow nginx
    /// answered ...`.
    fn worse_how(&self) -> String {
        let what = format!(
            "{}: GET {} through the shadow nginx answered",
            self.server(),
            self.url
        );
        if let Some(s) = self
            .sampled
            .as_ref()
            .filter(|s| s.worse() && !self.failed())
        {
            return format!(
                "{}: GET {} through the shadow nginx failed {} of {} answers ({}), the running \
                 nginx {} of {}: the change makes a share of these requests fail, or more of \
                 them (a server of its pool that fails the requests it gets)",
                self.server(),
                self.url,
                s.shadow_failed,
                s.asked,
                s.first_failure
                    .as_deref()
                    .or(self.shadow.first_failure.as_deref())
                    .unwrap_or("?"),
                match s.running_failed {
                    0 => "none".to_string(),
                    k => k.to_string(),
                },
                s.running_asked
            );
        }
        match self.new_error().filter(|_| !self.failed()) {
            Some(e) => format!(
                "{what} {}, and {}",
                self.shadow.reply(),
                verdict::Cause::UpstreamError(e.clone()).describe()
            ),
            None => {
                let running = match &self.running {
                    Some(r) if r.refused => {
                        " (the running nginx does not listen there yet)".to_string()
                    }
                    Some(r) if r.timed_out => format!(
                        " (the running nginx did not answer within --health-timeout: {}; slow, \
                         its clients wait for the answer)",
                        r.reply()
                    ),
                    Some(r) => format!(" (the running nginx answers {})", r.reply()),
                    None => String::new(),
                };
                let cause = (self.own_cause.as_ref()).map_or(String::new(), |c| format!("; {c}"));
                format!("{what} {}{running}{cause}", self.answer())
            }
        }
    }

    /// For a refusal by a status the backend chose (`404` on `/api/` where the running nginx's
    /// backend served it): how to make that answer live on purpose. nginx's own statuses and
    /// failures (502, 504, no answer) have no such way out.
    pub fn on_purpose(&self) -> Option<String> {
        let now = self
            .shadow
            .status
            .filter(|s| (400..=599).contains(s) && ![502, 504].contains(s))?;
        let before = self.running.as_ref().and_then(|r| r.status)?;
        let reached = self.shadow.answer != health::Answer::NotReached;
        (reached && (200..400).contains(&before)).then(|| {
            format!(
                "if HTTP {now} is what {} answers now on purpose, name a URL the site serves \
                 with --health, or list every status that counts as success with \
                 --expect-status (--expect-status {before} --expect-status {now})",
                self.shadow.check.path
            )
        })
    }

    /// The shadow's answer failed and then passed when asked again, in words: a warning, not
    /// a refusal (one failed answer decides nothing, see `health::judge`).
    pub fn intermittent(&self) -> Option<String> {
        let r = &self.shadow;
        (r.intermittent() && !self.worse()).then(|| {
            format!(
                "{}: GET {} through the shadow nginx: {} of {} answers failed ({}), then it \
                 answered {}: intermittent, not a refusal",
                self.server(),
                self.url,
                r.failures,
                r.attempts,
                r.first_failure.as_deref().unwrap_or("?"),
                r.reply()
            )
        })
    }

    /// "HTTP 502" or the error, and the first upstream error logged.
    pub fn answer(&self) -> String {
        let mut what = self.shadow.reply();
        let logged = (self.upstream_errors.first().map(|u| &u.text)).or(self.nginx_logged.as_ref());
        if let Some(line) = logged {
            what.push_str(&format!(", and logged: {}", short_log(line)));
        }
        what
    }
}

/// The peers of `upstream server temporarily disabled` lines in the shadow's error log
/// (`upstream: "http://127.0.0.1:8305/"` → `127.0.0.1:8305`), each once.
pub fn disabled_peers(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read(log).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&text).lines() {
        if !line.contains("upstream server temporarily disabled") {
            continue;
        }
        let upstream = line
            .split_once(", upstream: \"")
            .and_then(|(_, rest)| rest.split('"').next());
        if let Some(peer) = upstream.and_then(crate::errorlog::peer_of) {
            if !out.contains(&peer) {
                out.push(peer);
            }
        }
    }
    out
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
    /// The change gives it nothing to show (no server affected or removed, nothing outside
    /// the servers changed: a comment, say): stopped as soon as the impact said so.
    NotNeeded,
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
    /// The peers the shadow took out of their pool while its checks ran (`upstream server
    /// temporarily disabled`, logged at `warn`): their answers failed as
    /// `proxy_next_upstream` counts failures (`http_502`, ...), which nginx logs no error for
    /// when it passes the request on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disabled_peers: Vec<String>,
    /// Copying, rewriting and spawning it (on its own thread, while `nginx -t` runs).
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
            disabled_peers: Vec::new(),
            spawn: Duration::ZERO,
            ready: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// Send `checks` through the running shadow, concurrently, and read its error log after them:
/// a check's upstream errors are the lines logged for its Host and path (see [`waves`]). A
/// check with no stand-in in the shadow is skipped: its URL is in the second list.
pub fn run_checks(
    shadow: &Shadow,
    checks: &[Check],
    opts: &HealthOptions,
) -> (Vec<ShadowCheck>, Vec<String>) {
    let one = HealthOptions {
        rounds: 1,
        ..opts.clone()
    };
    let mut logs = Cursors::open(&[shadow.error_log()]);
    let mut every_line = Cursors::open(&[shadow.error_log()]);
    let (mut routed, mut skipped) = (Vec::new(), Vec::new());
    for check in checks {
        match shadow.ports().route_check(check) {
            Some(r) => routed.push((check, r)),
            None => skipped.push(check.url.clone()),
        }
    }
    let mut out: Vec<Option<ShadowCheck>> = vec![None; routed.len()];
    for wave in waves(routed.iter().map(|(c, _)| *c)) {
        let sent: Vec<Check> = wave.iter().map(|&i| routed[i].1.clone()).collect();
        let h = health::verify(&sent, &mut logs, &one);
        let mut errors = h.upstream_errors;
        for (&i, mut result) in wave.iter().zip(h.results) {
            let check = routed[i].0;
            let (own, rest): (Vec<_>, Vec<_>) =
                errors.into_iter().partition(|e| logged_for(e, check));
            errors = rest;
            result.check = check.clone();
            out[i] = Some(ShadowCheck {
                url: check.url.clone(),
                host: check.host.clone(),
                via: routed[i].1.via(),
                shadow: result,
                upstream_errors: own,
                running: None,
                running_errors: Vec::new(),
                differs: None,
                sampled: None,
                samples_timed_out: None,
                down_before: None,
                nginx_logged: None,
                own_cause: None,
            });
        }
        // A line that names no check of the wave (no Host or request in it) could be any
        // one's: each of them gets it, as a sequential run would have given it to one.
        for &i in &wave {
            if let Some(sc) = out[i].as_mut() {
                sc.upstream_errors.extend(errors.iter().cloned());
            }
        }
    }
    let mut out: Vec<ShadowCheck> = out.into_iter().flatten().collect();
    let severe = |l: &LogLine| {
        matches!(
            l.level,
            Some(Level::Emerg | Level::Alert | Level::Crit | Level::Error)
        ) && errorlog::upstream_error(l).is_none()
    };
    // Only a TLS line is told with a failed handshake: a 404's `open() failed` of another
    // check is not its cause.
    let tls = |l: &LogLine| l.text.contains("SSL") || l.text.contains("certificate");
    let lines = every_line.read_new();
    let logged = lines.iter().find(|l| severe(l) && tls(l));
    for sc in out.iter_mut() {
        if sc.shadow.failed && sc.shadow.status.is_none() && sc.shadow.check.tls {
            sc.nginx_logged = logged.map(|l| l.text.clone());
        }
        let check = &sc.shadow.check;
        let for_it = |l: &&LogLine| {
            (l.logged_for())
                .is_some_and(|(h, p)| h.eq_ignore_ascii_case(&check.host) && p == check.path)
        };
        sc.own_cause = (lines.iter().filter(for_it)).find_map(|l| own_cause(&l.text));
    }
    (out, skipped)
}

/// What nginx logs for a request whose failure no value that differs in the shadow
/// (`$server_addr`, `$server_port`) explains: php-fpm found no script at the
/// `SCRIPT_FILENAME` nginx sent (its 404 "File not found."), or nginx sent the request
/// round its own locations until it gave up with its own 500.
const OWN_CAUSES: [(&str, &str); 2] = [
    (
        "Primary script unknown",
        "php-fpm logged \"Primary script unknown\": no script at the SCRIPT_FILENAME nginx sent",
    ),
    (
        "rewrite or internal redirection cycle",
        "nginx logged \"rewrite or internal redirection cycle\": its own 500, the backend was \
         never asked",
    ),
];

/// The cause a shadow log line names of its request's failure (see [`OWN_CAUSES`]).
fn own_cause(text: &str) -> Option<String> {
    (OWN_CAUSES.iter())
        .find(|(phrase, _)| text.contains(phrase))
        .map(|(_, said)| said.to_string())
}

/// The checks in rounds that can be sent at once: within one, no two share a Host and path,
/// so each line of the shadow's log names the one check it was written for. Nearly always a
/// single round; indexes into `checks`, in order.
fn waves<'a>(checks: impl Iterator<Item = &'a Check>) -> Vec<Vec<usize>> {
    let mut keys: Vec<HashSet<(String, &str)>> = Vec::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, c) in checks.enumerate() {
        let key = (c.host.to_ascii_lowercase(), c.path.as_str());
        match keys.iter().position(|k| !k.contains(&key)) {
            Some(w) => {
                keys[w].insert(key);
                waves[w].push(i);
            }
            None => {
                keys.push(HashSet::from([key]));
                waves.push(vec![i]);
            }
        }
    }
    waves
}

/// Ask the running nginx each request that failed through the shadow, answered a 5xx there or
/// logged an upstream error there (connect errors to `opts.expected_down` peers set apart
/// first, as verification sets them apart), exactly as the baseline before a reload asks it:
/// the same rounds, so a pool's round-robin reaches as many of its peers, and the log's recent
/// past, where a worker that skips a failing peer for its `fail_timeout` logged it last (the
/// lines of `running`'s serving workers count, see `health::recent::Serving`). The requests go
/// together and `running_logs` are read back once for all of them. A 5xx through the shadow
/// where the running nginx answers without one is asked of the shadow again, judged against
/// that answer, as verification after the reload would judge it.
pub fn ask_running(
    shadow: &Shadow,
    checks: &mut [ShadowCheck],
    (running_logs, running): (&[PathBuf], Serving),
    opts: &HealthOptions,
) {
    let nothing_runs = running.workers.is_empty();
    for c in checks.iter_mut() {
        let (expected, rest): (Vec<_>, Vec<_>) = (c.upstream_errors.drain(..))
            .partition(|e| health::is_expected(e, &opts.expected_down));
        c.upstream_errors = rest;
        if nothing_runs && c.failed() && c.upstream_errors.is_empty() && !expected.is_empty() {
            let mut peers: Vec<String> = (expected.iter())
                .map(|e| e.peer().or_else(|| e.upstream.clone()).unwrap_or_default())
                .collect();
            peers.sort();
            peers.dedup();
            c.down_before = Some(peers.join(", "));
        }
    }
    let asked: Vec<usize> = (0..checks.len())
        .filter(|&i| checks[i].asks_running())
        .collect();
    if asked.is_empty() {
        return;
    }
    let requests: Vec<Check> = asked
        .iter()
        .map(|&i| checks[i].shadow.check.clone())
        .collect();
    // `take` asks each as the running configuration is asked (`Check::to_running`).
    let r = recent::take(&requests, running_logs, opts, running).finish(&opts.expected_down);
    let one = HealthOptions {
        rounds: 1,
        ..opts.clone()
    };
    for (&i, result) in asked.iter().zip(r.results) {
        // Ctrl-C before the reload: nothing is reloaded, so nothing more is waited for.
        if crate::signals::interrupted() {
            break;
        }
        let sc = &mut checks[i];
        sc.running = Some(result);
        // The recent past is the log's, not one request's: every check asked reads all of it.
        sc.running_errors = r.upstream_errors.clone();
        if sc.shadow.timed_out {
            wait_longer(shadow, sc, opts);
        }
        // Another server's answer (a new server's Host went to the default one) is no
        // baseline for this one's.
        let passed = (sc.running.as_ref()).filter(|r| !r.failed && !r.refused && !r.check.fresh);
        // A path made up for a location the change adds was another location's before.
        let before = passed
            .filter(|_| !sc.shadow.check.made_up_in_new)
            .and_then(|r| r.status);
        let running = sc.running.as_ref();
        let known = RunningAnswered {
            passed: before,
            // A certificate that named the Host where the shadow's does not loses every
            // browser, whichever server sent it (a name the change moves to another server).
            named: running.is_some_and(CheckResult::named),
            tls12: running.is_some_and(CheckResult::tls12_completed),
            h2: running.is_some_and(CheckResult::h2_answered),
            paged: passed.is_some_and(|r| r.paged() && !sc.shadow.check.new_backend),
        };
        // Judged as verification after the reload would judge it: one that would fail is
        // asked again, through the shadow alone.
        let mut judged = sc.shadow.clone();
        judged.judge_against(&known, opts);
        if sc.failed() || !judged.failed {
            continue;
        }
        let Some(routed) = shadow.ports().route_check(&sc.shadow.check) else {
            continue;
        };
        let mut logs = Cursors::open(&[shadow.error_log()]);
        let again = health::verify_against(std::slice::from_ref(&routed), &mut logs, &one, &known);
        if let Some(mut result) = again.results.into_iter().next() {
            result.check = sc.shadow.check.clone();
            sc.shadow = result;
            sc.upstream_errors.extend(again.upstream_errors);
        }
    }
}

/// A check the shadow did not answer within `--health-timeout`, asked of both nginxes again,
/// at once, with a longer timeout (past the location's `*_read_timeout`, see
/// [`HealthOptions::waiting_past_nginx`]): which of them answers, and what, tells a slow site (both
/// answer, alike) from a change that makes nginx give up first (the shadow's 504 where the
/// running nginx answers 200). Both answers replace the first ones.
fn wait_longer(shadow: &Shadow, sc: &mut ShadowCheck, opts: &HealthOptions) {
    let longer = opts.waiting_past_nginx(&sc.shadow.check);
    if longer.request_timeout == opts.request_timeout {
        return;
    }
    let Some(routed) = shadow.ports().route_check(&sc.shadow.check) else {
        return;
    };
    let check = sc.shadow.check.clone();
    let mut log = Cursors::open(&[shadow.error_log()]);
    let (through_shadow, through_running) = std::thread::scope(|scope| {
        let s = scope.spawn(|| health::request(&routed, &longer));
        let r = scope.spawn(|| health::request(&check.to_running(), &longer));
        (s.join().ok(), r.join().ok())
    });
    if let (Some(mut s), Some(mut r)) = (through_shadow, through_running) {
        // What nginx logged for it (an `upstream timed out` behind its 504): its own answer,
        // not the backend's.
        let lines = log.read_new();
        let own = (lines.iter()).filter_map(errorlog::upstream_error);
        for e in own.filter(|e| logged_for(e, &check)) {
            sc.add_error(e);
        }
        (s.check, r.check) = (check.clone(), check);
        sc.shadow = s;
        sc.running = Some(r);
    }
}

/// What the running nginx answered a check, when that passed: the shadow's answers to it are
/// judged against it, as the baseline's stand for verification after the reload.
struct RunningAnswered {
    /// Its status, where it passed and is a baseline for this check.
    passed: Option<u16>,
    /// Over a certificate that named the Host.
    named: bool,
    /// With a TLS 1.2 handshake that completed beside it.
    tls12: bool,
    /// With an answer over HTTP/2 beside it.
    h2: bool,
    /// A page: a 2xx with a body.
    paged: bool,
}

impl health::Known for RunningAnswered {
    fn failure(&self, _: &CheckResult) -> bool {
        false
    }

    fn upstream_error(&self, _: &UpstreamError) -> bool {
        false
    }

    fn passed_before(&self, _: &CheckResult) -> Option<u16> {
        self.passed
    }

    fn named_before(&self, _: &CheckResult) -> bool {
        self.named
    }

    fn tls12_before(&self, _: &CheckResult) -> bool {
        self.tls12
    }

    fn h2_before(&self, _: &CheckResult) -> bool {
        self.h2
    }

    fn paged_before(&self, _: &CheckResult) -> bool {
        self.paged
    }
}

/// The decision. A request the change made worse refuses it, unless that request reads what
/// differs in the shadow ([`ShadowCheck::differs`]): then only verification after the reload
/// can tell, and another request's failure still refuses.
pub fn judge(checks: &[ShadowCheck]) -> (ShadowState, Option<String>) {
    let mut worse = checks.iter().filter(|c| c.worse());
    if let Some(c) = worse.clone().find(|c| c.differs.is_none()) {
        return (ShadowState::Refused, Some(c.worse_how()));
    }
    if let Some(c) = worse.next() {
        let differs = c
            .differs
            .as_ref()
            .map(Differs::describe)
            .unwrap_or_default();
        return (
            ShadowState::NotVerified,
            Some(format!(
                "{}; {differs}, which differs in the shadow, so this is left to verification \
                 after the reload",
                c.worse_how()
            )),
        );
    }
    if let Some(c) = checks.iter().find(|c| c.down_before.is_some()) {
        return (
            ShadowState::NotVerified,
            Some(format!(
                "{}: GET {} through the shadow nginx answered {}, from {}, which the probe \
                 found down before this change too; no nginx runs here to answer the same \
                 request, so that failure is not held against the change",
                c.server(),
                c.url,
                c.shadow.reply(),
                c.down_before.as_deref().unwrap_or("?")
            )),
        );
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
                "{logged} checks answered well while the shadow logged upstream errors the \
                 running nginx logs too (nginx failing over)"
            )),
        );
    }
    let reached = (checks.iter())
        .filter(|c| !c.failed() && c.shadow.answer != health::Answer::NotReached)
        .count();
    if passed > 0 && reached == 0 && older == 0 {
        return (
            ShadowState::NotVerified,
            Some(format!(
                "nginx answered every check itself ({}: {}), without reaching a backend",
                checks[0].url,
                checks[0].shadow.reply()
            )),
        );
    }
    match (passed, older) {
        (0, 0) => (
            ShadowState::NotVerified,
            Some(
                "no check applies (no proxied location on a local listen, no --health URL on a \
                 listen of the changed configuration)"
                    .into(),
            ),
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
            failures: u32::from(failed),
            first_failure: None,
            intermittent_errors: Vec::new(),
            elapsed: Duration::ZERO,
            failed,
            refused: error.is_some_and(|e| e.contains("refused")),
            timed_out: false,
            hint: None,
            wrong_name: None,
            tls12: Default::default(),
            h2: Default::default(),
            empty: false,
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
            running_errors: Vec::new(),
            differs: None,
            sampled: None,
            samples_timed_out: None,
            down_before: None,
            nginx_logged: None,
            own_cause: None,
        }
    }

    #[test]
    fn a_failure_the_running_nginx_does_not_have_refuses() {
        let c = check(result(Some(502), None), Some(result(Some(200), None)));
        let (state, why) = judge(&[c]);
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
        let why = judge(&[c]).1.unwrap();
        assert!(
            why.starts_with("server *.example.test (location / at sites/a.conf:12): GET "),
            "{why}"
        );
    }

    #[test]
    fn a_504_where_the_running_nginx_was_only_slow_refuses_as_the_verdict_would_roll_back() {
        let slow = CheckResult {
            error: Some("read: timed out after 2s".into()),
            timed_out: true,
            ..result(None, Some("read: timed out after 2s"))
        };
        let c = check(result(Some(504), None), Some(slow.clone()));
        let (state, why) = judge(std::slice::from_ref(&c));
        assert_eq!(state, ShadowState::Refused);
        let why = why.unwrap();
        assert!(
            why.ends_with(
                "answered HTTP 504 (the running nginx did not answer within --health-timeout: \
                 read: timed out after 2s; slow, its clients wait for the answer)"
            ),
            "{why}"
        );
        // Slow in both: the tool's limit, a warning after the reload, no refusal here.
        let both = CheckResult {
            timed_out: true,
            ..result(None, Some("read: timed out after 2s"))
        };
        assert_ne!(judge(&[check(both, Some(slow))]).0, ShadowState::Refused);
    }

    #[test]
    fn a_new_listen_has_no_baseline_so_its_failure_is_the_change() {
        let refused = result(
            None,
            Some("connect to 127.0.0.1:80: Connection refused (os error 111)"),
        );
        let c = check(result(Some(502), None), Some(refused));
        assert_eq!(judge(&[c]).0, ShadowState::Refused);
    }

    #[test]
    fn an_older_failure_refuses_nothing() {
        let ok = check(result(Some(200), None), None);
        let old = check(result(Some(502), None), Some(result(Some(502), None)));
        let (state, why) = judge(&[ok, old.clone()]);
        assert_eq!(state, ShadowState::Verified);
        assert!(why.unwrap().contains("not the change's"));
        assert_eq!(judge(&[old]).0, ShadowState::NotVerified);
    }

    #[test]
    fn what_differs_in_the_shadow_makes_a_failure_unverified_not_refused() {
        let mut c = check(result(Some(502), None), Some(result(Some(200), None)));
        c.differs = Some(Differs {
            variable: "$server_port".into(),
            at: "pools.conf:3".into(),
            route: true,
        });
        let (state, why) = judge(std::slice::from_ref(&c));
        assert_eq!(state, ShadowState::NotVerified);
        assert!(why
            .unwrap()
            .contains("its route reads $server_port (pools.conf:3)"));
        // Another request's failure, which reads nothing that differs, still refuses.
        let mut other = check(result(Some(502), None), Some(result(Some(200), None)));
        other.host = "other.test".into();
        let (state, why) = judge(&[c, other]);
        assert_eq!(state, ShadowState::Refused);
        assert!(why.unwrap().contains("other.test"));
    }

    #[test]
    fn an_upstream_error_behind_a_good_answer_refuses_unless_the_running_nginx_logs_it_too() {
        let mut c = check(result(Some(200), None), Some(result(Some(200), None)));
        let error = UpstreamError {
            level: crate::errorlog::Level::Error,
            kind: crate::errorlog::UpstreamErrorKind::Refused,
            upstream: Some("http://[::1]:8000/".into()),
            server: Some("site.test".into()),
            request: None,
            text: "connect() failed (111: Connection refused)".into(),
        };
        c.upstream_errors.push(error.clone());
        // What verification after the reload would roll back for, in its words.
        let (state, why) = judge(std::slice::from_ref(&c));
        assert_eq!(state, ShadowState::Refused);
        let why = why.unwrap();
        assert!(
            why.contains("answered HTTP 200, and nginx logged an upstream error the running configuration did not"),
            "{why}"
        );
        // Failover the running nginx shows too: before and after alike.
        c.running_errors.push(error);
        let (state, why) = judge(&[c]);
        assert_eq!(state, ShadowState::Verified);
        assert!(why.unwrap().contains("failing over"));
    }

    #[test]
    fn a_shadow_answer_that_failed_and_then_passed_refuses_nothing_and_says_so() {
        let mut shadow = result(Some(200), None);
        (shadow.failures, shadow.attempts) = (1, 3);
        shadow.first_failure = Some("HTTP 502".into());
        let c = check(shadow, None);
        assert_eq!(judge(std::slice::from_ref(&c)).0, ShadowState::Verified);
        let said = c.intermittent().expect("a warning");
        assert!(
            said.ends_with(
                "through the shadow nginx: 1 of 3 answers failed (HTTP 502), then it answered \
                 HTTP 200: intermittent, not a refusal"
            ),
            "{said}"
        );
        assert!(check(result(Some(200), None), None)
            .intermittent()
            .is_none());
    }

    #[test]
    fn checks_sharing_a_host_and_path_go_in_separate_waves() {
        let at = |host: &str, path: &str, port: u16| {
            Check::plain(
                format!("http://{host}{path}"),
                std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                host.into(),
                path.into(),
                false,
            )
        };
        let checks = [
            at("a.test", "/", 80),
            at("b.test", "/", 80),
            at("A.test", "/", 8080),
            at("a.test", "/api/", 80),
            at("a.test", "/", 8081),
        ];
        assert_eq!(waves(checks.iter()), [vec![0, 1, 3], vec![2], vec![4]]);
    }

    #[test]
    fn no_checks_verify_nothing() {
        assert_eq!(judge(&[]).0, ShadowState::NotVerified);
    }

    #[test]
    fn a_pool_hashed_on_the_path_gets_samples_of_their_own_path_under_the_location() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = dir.path().join("nginx.conf");
        let http =
            "upstream a { hash $host$uri consistent; server 127.0.0.1:1; server 127.0.0.1:2; }\n\
                    upstream b { hash $request_uri; server 127.0.0.1:1; server 127.0.0.1:2; }\n\
                    upstream c { hash $URI$args; server 127.0.0.1:1; server 127.0.0.1:2; }\n\
                    upstream d { hash ${document_uri}; server 127.0.0.1:1; server 127.0.0.1:2; }";
        std::fs::write(&main, format!("events {{}}\nhttp {{\n{http}\n}}\n")).expect("write");
        let config = crate::conf::load(&main, &crate::conf::LoadOptions::default()).expect("loads");
        let mut hashed: Vec<String> = crate::conf::pools_hashed_on_path(&config)
            .into_iter()
            .collect();
        hashed.sort();
        assert_eq!(hashed, ["a", "d"]);

        let mut c = result(Some(200), None).check;
        let path = |c: &Check, on_path| varied(c, 3, on_path).path;
        c.what = "location /api/".into();
        c.path = "/api/".into();
        assert!(path_may_vary(&c));
        assert_eq!(path(&c, true), "/api/safe-reload-sample-3");
        assert_eq!(path(&c, false), "/api/?safe-reload-sample=3");
        c.path = "/api/users?x=1".into();
        assert_eq!(path(&c, true), "/api/users-safe-reload-sample-3?x=1");
        for exact in ["location = /", "location ~ \\.php$", "location @app", ""] {
            c.what = exact.into();
            c.at = String::new();
            assert!(!path_may_vary(&c), "{exact}");
        }
        c.what = "location ^~ /static/".into();
        assert!(path_may_vary(&c));
    }
}
