//! What one answer means. Shared by the verification window and the verdict, so a baseline run
//! and an after run judge a status by the same rule.
//!
//! A 502 or 504 is nginx saying the backend failed; no answer at all is a failure of nginx or
//! of what is in front of it. A status nginx produced without reaching an upstream (401/403
//! from `auth_basic`, `auth_request` or `deny`, a `return`, the connection closed by
//! `return 444`) is neither: it says nothing about the backend, so it is reported as "did not
//! reach the backend" and never counts as a pass for that backend.
//!
//! One failed answer is not a failed check: a flaky backend (a 502 or a closed connection on
//! one request in three, one slow answer) would otherwise decide a verdict by chance, rolling
//! back a harmless change or calling an operator. A check whose answer fails is asked
//! [`RETRIES`] more times, and fails only when every answer did ([`settle`]). The baseline,
//! the shadow and the verification after the reload all send their rounds through this rule.
//!
//! Any other 5xx (500, 503) is not a failure on its own: an application may answer 500 to a
//! path it has no page for, `limit_req` answers 503. Next to what the same request got before
//! the change it is ([`erring_since`]): a location that answered 200, 401 or 403 and now
//! answers 500 (nginx's answer when an `auth_request` subrequest fails) fails for every client;
//! so does one that was served (2xx, 3xx) and now gets a 4xx other than an access rule's, or
//! nginx's own 404 where the backend answered 200 ([`worse_than`]).

use serde::Serialize;

use super::{CheckResult, Gate};

/// How many more times a check whose answer failed is asked in the same round, all at once:
/// a retry costs one request's time, not one per retry.
pub const RETRIES: usize = 2;

/// One answer, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The backend answered acceptably.
    Passed,
    /// The answer fails verification.
    Failed,
    /// nginx answered by itself: the backend behind this location was not reached.
    NotReached,
}

impl Answer {
    /// As shown next to the check.
    pub fn describe(self) -> &'static str {
        match self {
            Answer::Passed => "ok",
            Answer::Failed => "failed",
            Answer::NotReached => "did not reach the backend",
        }
    }
}

/// Whether a status (or no status) fails verification: none, 502, 504, or one outside
/// `--expect-status` when given.
pub fn is_failure(status: Option<u16>, expect: Option<&[u16]>) -> bool {
    match status {
        None | Some(502) | Some(504) => true,
        Some(s) => expect.is_some_and(|allowed| !allowed.contains(&s)),
    }
}

/// Whether an answer that passed on its own fails next to the one the same request got
/// before the change (`before`, an answer that passed): a 5xx where there was none, or a 4xx
/// where the request was served (2xx, 3xx): a `SCRIPT_FILENAME` that now names no file
/// (php-fpm's 404 for every page), a `Host` the backend now refuses (400). Not a 401, 403,
/// 407 or 429: credentials, access rules and rate limits are what a change adds on purpose.
pub fn erring_since(before: Option<u16>, after: Option<u16>) -> bool {
    let server_error = |status: Option<u16>| matches!(status, Some(500..=599));
    let on_purpose = matches!(after, Some(401 | 403 | 407 | 429));
    let client_error = matches!(after, Some(400..=499)) && !on_purpose;
    // A WebSocket handshake that was switched (101) and is now answered otherwise (426, a
    // 200 page): its clients' connections no longer upgrade.
    let unswitched = before == Some(101) && after != Some(101);
    (server_error(after) && before.is_some() && !server_error(before))
        || (client_error && matches!(before, Some(200..=399)))
        || unswitched
}

/// Whether nginx's own answer (`answer` not reaching the backend) fails next to a 2xx the
/// same request got before the change: a 404 or 410 where the backend served it (a `root`
/// typo in front of `try_files ... =404`). Its other answers (a redirect, a 401, a `return
/// 503` maintenance page) are what a change sets on purpose.
pub fn lost_since(before: Option<u16>, after: Option<u16>) -> bool {
    matches!(after, Some(404 | 410)) && matches!(before, Some(200..=299))
}

/// Whether `answer` (with `after`) fails next to `before`, the status the same request got
/// before the change when that passed: [`erring_since`] for an answer that passed,
/// [`lost_since`] for one nginx gave itself.
pub fn worse_than(before: Option<u16>, answer: Answer, after: Option<u16>) -> bool {
    match answer {
        Answer::Passed => erring_since(before, after),
        Answer::NotReached => lost_since(before, after),
        Answer::Failed => false,
    }
}

/// Whether a request no server of last-good answered as this one (a new server, a name or
/// listen new to it: [`Check::fresh`]) fails with `status`, though a 500 or 503 would pass
/// next to the same answer before the change: with nothing before it to compare, a site the
/// change adds that answers every client with a server error is not live (nginx's 500 of an
/// empty `proxy_pass http://$var`, an app answering 503), nor one whose backend refuses the
/// Host it now gets (a `server_name` renamed in front of an app with an allowed-hosts list:
/// Django's 400 "Invalid HTTP_HOST header", a 421 Misdirected Request). The 502 and 504 fail
/// everywhere.
pub fn fails_new(check: &super::Check, status: Option<u16>) -> bool {
    check.fresh && matches!(status, Some(400 | 421 | 500 | 503))
}

/// Judge one answer at a location. `closed` is a connection closed without a byte of answer
/// (what `return 444` does).
pub fn judge(status: Option<u16>, closed: bool, gate: &Gate, expect: Option<&[u16]>) -> Answer {
    let by_nginx = match status {
        Some(401) | Some(403) if gate.auth => true,
        Some(s) => gate.returns.contains(&s) && s != 502 && s != 504,
        None => closed && gate.returns.contains(&444),
    };
    if by_nginx {
        return Answer::NotReached;
    }
    if is_failure(status, expect) {
        Answer::Failed
    } else {
        Answer::Passed
    }
}

/// A check's answer in one round, from its first answer and, when that failed, the ones asked
/// again: it fails only when every one did; else the first that passed stands for the round,
/// with the failed ones counted (intermittent, see [`CheckResult::intermittent`]).
pub fn settle(first: CheckResult, again: Vec<CheckResult>) -> CheckResult {
    if !first.failed {
        return first;
    }
    let attempts = first.attempts + again.iter().map(|r| r.attempts).sum::<u32>();
    let failures = first.failures + again.iter().map(|r| r.failures).sum::<u32>();
    let elapsed = first.elapsed + again.iter().map(|r| r.elapsed).max().unwrap_or_default();
    let first_failure = Some(first.reply());
    let mut settled = (again.into_iter()).find(|r| !r.failed).unwrap_or(first);
    settled.attempts = attempts;
    settled.failures = failures;
    settled.first_failure = first_failure;
    settled.elapsed = elapsed;
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Check;
    use std::time::Duration;

    fn answered(status: Option<u16>) -> CheckResult {
        let check = Check::plain(
            "http://b.test/".into(),
            "127.0.0.1:80".parse().expect("address"),
            "b.test".into(),
            "/".into(),
            false,
        );
        let answer = judge(status, false, &Gate::default(), None);
        CheckResult {
            check,
            status,
            error: status.is_none().then(|| "read: timed out after 2s".into()),
            answer,
            attempts: 1,
            failures: u32::from(answer == Answer::Failed),
            first_failure: None,
            intermittent_errors: Vec::new(),
            elapsed: Duration::from_millis(10),
            failed: answer == Answer::Failed,
            refused: false,
            timed_out: status.is_none(),
            hint: None,
            wrong_name: None,
            tls12: Default::default(),
            h2: Default::default(),
            empty: false,
        }
    }

    #[test]
    fn a_check_fails_only_when_every_answer_asked_again_failed_too() {
        let passed = settle(answered(Some(200)), Vec::new());
        assert!(!passed.failed && !passed.intermittent() && passed.attempts == 1);
        let flaky = settle(
            answered(Some(502)),
            vec![answered(Some(502)), answered(Some(200))],
        );
        assert_eq!((flaky.failed, flaky.status), (false, Some(200)));
        assert_eq!((flaky.failures, flaky.attempts), (2, 3));
        assert_eq!(flaky.first_failure.as_deref(), Some("HTTP 502"));
        assert!(flaky.intermittent());
        let slow_once = settle(answered(None), vec![answered(Some(200)); RETRIES]);
        assert!(slow_once.intermittent());
        assert_eq!(
            slow_once.first_failure.as_deref(),
            Some("read: timed out after 2s")
        );
        let broken = settle(answered(Some(502)), vec![answered(Some(502)); RETRIES]);
        assert!(broken.failed && !broken.intermittent());
        assert_eq!((broken.failures, broken.attempts), (3, 3));
        assert_eq!(broken.status, Some(502));
    }

    #[test]
    fn statuses_nginx_makes_itself_did_not_reach_the_backend() {
        let open = Gate::default();
        let auth = Gate {
            auth: true,
            returns: vec![],
            ..Gate::default()
        };
        let close = Gate {
            auth: false,
            returns: vec![444],
            ..Gate::default()
        };
        assert_eq!(judge(Some(200), false, &open, None), Answer::Passed);
        assert_eq!(judge(Some(404), false, &open, None), Answer::Passed);
        assert_eq!(judge(Some(502), false, &open, None), Answer::Failed);
        assert_eq!(judge(Some(502), false, &close, None), Answer::Failed);
        assert_eq!(judge(None, true, &open, None), Answer::Failed);
        assert_eq!(judge(Some(401), false, &open, None), Answer::Passed);
        assert_eq!(judge(Some(401), false, &auth, None), Answer::NotReached);
        assert_eq!(judge(Some(403), false, &auth, None), Answer::NotReached);
        assert_eq!(judge(None, true, &close, None), Answer::NotReached);
        assert_eq!(judge(None, false, &close, None), Answer::Failed);
        assert_eq!(judge(Some(200), false, &open, Some(&[204])), Answer::Failed);
        assert!(is_failure(Some(504), None) && !is_failure(Some(500), None));
    }

    #[test]
    fn a_5xx_after_an_answer_without_one_is_the_change() {
        assert!(erring_since(Some(200), Some(500)));
        assert!(erring_since(Some(401), Some(500)));
        assert!(erring_since(Some(403), Some(503)));
        assert!(!erring_since(Some(500), Some(500)), "the site's own 500");
        assert!(
            erring_since(Some(200), Some(404)),
            "php-fpm's 404 for every page"
        );
        assert!(
            erring_since(Some(302), Some(400)),
            "a Host the backend refuses"
        );
        assert!(!erring_since(Some(200), Some(401)) && !erring_since(Some(200), Some(429)));
        assert!(!erring_since(Some(404), Some(404)), "the backend's own 404");
        assert!(erring_since(Some(101), Some(200)) && erring_since(Some(101), Some(426)));
        assert!(!erring_since(Some(101), Some(101)));
        assert!(lost_since(Some(200), Some(404)) && !lost_since(Some(404), Some(404)));
        assert!(!lost_since(Some(200), Some(503)), "a maintenance page");
        assert!(!worse_than(Some(200), Answer::NotReached, Some(401)));
        assert!(!erring_since(Some(503), Some(500)));
        assert!(
            !erring_since(None, Some(500)),
            "no answer before is no baseline"
        );
    }
}
