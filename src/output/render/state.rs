//! `history` and `status`: the snapshots an operator can go back to, and where things stand
//! (nginx running, last-good, an unfinished run).

use crate::output::{escape_control, Printer};
use crate::report::StatusReport;
use crate::store::{Outcome, Snapshot};

/// Snapshots newest first, the last good one starred. One that went live while a site failed
/// as it did before it says so under its line: it is a rollback target, but not a verified one.
pub fn render_history(p: &Printer, history: &[Snapshot], last_good: Option<&str>) {
    if history.is_empty() {
        p.out("no snapshots yet");
        return;
    }
    for s in history {
        let mark = if Some(s.id.as_str()) == last_good {
            "*"
        } else {
            " "
        };
        let changed = if s.meta.changed_files.is_empty() {
            String::new()
        } else {
            format!("  {}", s.meta.changed_files.join(", "))
        };
        let files = match s.count() {
            1 => "1 file ".to_string(),
            n => format!("{n} files"),
        };
        p.out(&escape_control(&format!(
            "{mark} {}  {:<9} {:<10} {files}{changed}",
            s.id,
            s.meta.outcome.as_str(),
            s.meta.user,
        )));
        if s.meta.outcome == Outcome::AlreadyFailing {
            let why = s
                .meta
                .note
                .as_deref()
                .unwrap_or("a check failed before it and still does");
            p.out(&escape_control(&format!("    already failing: {why}")));
        }
    }
    if last_good.is_some() {
        p.progress("* = last good");
    }
}

/// Where things stand.
pub fn render_status(p: &Printer, st: &StatusReport) {
    match (st.master_pid, &st.not_running) {
        (Some(pid), _) => p.out(&format!("nginx: running (master pid {pid})")),
        // A run's "(nothing was changed)" is no news in a status that changes nothing.
        (None, Some(why)) => match why
            .strip_suffix(" (nothing was changed)")
            .unwrap_or(why)
            .strip_prefix("nginx is not running: ")
        {
            Some(why) => p.out(&format!("nginx: not running: {}", escape_control(why))),
            // Running, and not this configuration's master as far as a pid file says (a
            // master of another prefix, a pid file deleted): not "not running".
            None => p.out(&format!(
                "nginx: not signalled: {}",
                escape_control(why.strip_suffix(" (nothing was changed)").unwrap_or(why))
            )),
        },
        (None, None) => p.out("nginx: unknown"),
    }
    match &st.last_good {
        Some(id) => p.out(&format!("last good: {id}")),
        None => p.out("last good: none recorded (run `safe-reload init`)"),
    }
    if let Some(run) = &st.run_in_progress {
        p.out(&format!(
            "a run is in progress: {}; what follows may change when it ends",
            escape_control(run)
        ));
    }
    if let Some(e) = &st.config_error {
        p.out(&format!("config: does not load: {}", escape_control(e)));
    }
    if let Some(why) = &st.not_loaded {
        p.out(&format!(
            "config: the files equal the last good configuration, but {}: the next run reloads",
            escape_control(why)
        ));
    }
    if let Some(why) = &st.loaded_outside {
        p.out(&format!(
            "config: the files differ from the last good configuration, and {}: nginx may run \
             them already (`safe-reload rollback` puts last-good back)",
            escape_control(why)
        ));
    }
    if let Some(j) = &st.interrupted {
        let reloaded = match &st.interrupted_reload {
            Some(at) => format!(
                " after it signalled nginx, which loaded its configuration at {at}: nginx may \
                 run the run's unverified candidate"
            ),
            None => String::new(),
        };
        p.out(&format!(
            "interrupted run: pid {} started {} stopped during {}{reloaded}; run \
             `safe-reload recover`",
            j.pid,
            j.started,
            j.phase.name()
        ));
    }
    for l in &st.leftover_shadows {
        let what = match l.running {
            Some(pid) => format!("its nginx master (pid {pid}) still runs"),
            None => "its nginx has stopped".into(),
        };
        p.out(&format!(
            "leftover shadow: run pid {} was killed; {what}; {} remains; run `safe-reload recover`",
            l.owner,
            l.dir.display()
        ));
    }
}
