//! What one answer means. Shared by the verification window and the verdict, so a baseline run
//! and an after run judge a status by the same rule.
//!
//! A 502 or 504 is nginx saying the backend failed; no answer at all is a failure of nginx or
//! of what is in front of it. A status nginx produced without reaching an upstream (401/403
//! from `auth_basic`, `auth_request` or `deny`, a `return`, the connection closed by
//! `return 444`) is neither: it says nothing about the backend, so it is reported as "did not
//! reach the backend" and never counts as a pass for that backend.

use serde::Serialize;

use super::Gate;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_nginx_makes_itself_did_not_reach_the_backend() {
        let open = Gate::default();
        let auth = Gate {
            auth: true,
            returns: vec![],
        };
        let close = Gate {
            auth: false,
            returns: vec![444],
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
}
