//! The exit status table, in one place. DESIGN.md, the README and the man page repeat it;
//! `tests/cli_exit_codes.rs` says which test reaches each code through the binary.

/// Process exit status of `safe-reload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Reloaded and verified; or `check`/`probe` found nothing wrong.
    Ok,
    /// Refused before reload (`nginx -t`, a probe or a preflight check failed): the running
    /// nginx is untouched.
    Refused,
    /// Usage, environment or internal error (no nginx binary, lock held, unreadable file).
    Environment,
    /// Reloaded, the change broke a check that passed before it (or the reload did not take
    /// effect), rolled back: the previous config is live and back to its baseline.
    RolledBack,
    /// An operator must act now: the rollback failed or the restored configuration fails
    /// checks it passed before the change; or a site failed before the change and still does
    /// (nothing was rolled back: the change is not the cause).
    MustAct,
    /// Interrupted before anything changed.
    Interrupted,
}

impl Exit {
    /// The numeric status the process exits with.
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Refused => 1,
            Exit::Environment => 2,
            Exit::RolledBack => 3,
            Exit::MustAct => 4,
            Exit::Interrupted => 130,
        }
    }

    /// Every status with its meaning, for the man page and `--help`.
    pub const TABLE: [(i32, &'static str); 6] = [
        (0, "reloaded and verified; or check/probe found nothing wrong"),
        (
            1,
            "refused before reload (nginx -t, a probe or a preflight check failed): the running nginx is untouched",
        ),
        (
            2,
            "usage, environment or internal error (no nginx binary, lock held, unreadable file)",
        ),
        (
            3,
            "reloaded, the change broke a check that passed before it, rolled back: the previous config is live and back to its baseline",
        ),
        (
            4,
            "an operator must act now: the rollback failed, or the restored config fails checks it passed before the change; or a site failed before the change and still does (502, 504, no answer; nothing rolled back); a site slower than --health-timeout before and after the change is a warning, exit 0",
        ),
        (130, "interrupted before anything changed"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_codes() {
        let all = [
            Exit::Ok,
            Exit::Refused,
            Exit::Environment,
            Exit::RolledBack,
            Exit::MustAct,
            Exit::Interrupted,
        ];
        for (e, (code, _)) in all.iter().zip(Exit::TABLE.iter()) {
            assert_eq!(e.code(), *code);
        }
    }
}
