//! Text rendering of a [`Report`]: what an operator reads at 3 a.m. Results (the outcome line,
//! tables, the diff of `diff`) go to stdout; steps, problems and hints to stderr.

use crate::conf::targets::{Context, Reference, Target};
use crate::diff::ConfigDiff;
use crate::health::HealthReport;
use crate::output::{escape_control, Printer, Tone};
use crate::report::{Outcome, Problem, Report, RollbackReport};
use crate::verdict::{AsksCertificate, Cause, Intermittent, RollbackVerdict, Verdict};

mod probes;
mod state;

/// Render a finished report: one JSON document with `--json`, otherwise text.
pub fn render(p: &Printer, report: &Report) {
    if p.json {
        p.json_doc(report);
        return;
    }
    if !report.rendered {
        render_details(p, report);
    }
    // After a failure the notes say where things are (e.g. where an edit is kept): shown
    // even with -q.
    let failed = !matches!(
        report.outcome,
        Outcome::Ok | Outcome::Reloaded | Outcome::Unchanged | Outcome::Recorded
    );
    for note in &report.notes {
        if failed {
            p.err(&escape_control(note));
        } else {
            p.progress(&escape_control(note));
        }
    }
    render_outcome(p, report);
    p.flush();
}

fn render_details(p: &Printer, report: &Report) {
    render_steps(p, report);
    render_problems(p, &report.problems);
    render_test_output(p, report);
    if let Some(pr) = &report.probe {
        probes::render_probe(p, pr, report.command == "probe");
    }
    probes::render_conflicts(p, &report.conflicts);
    if let Some(targets) = &report.targets {
        render_targets(p, targets);
    }
    // A reload shows its warnings before the prompt (`render_preview`); `check` has none.
    if report.command == "check" {
        for w in &report.warnings {
            p.err(&format!(
                "{} {}",
                p.paint(Tone::Warn, "warning:"),
                escape_control(w)
            ));
        }
    }
    if let Some(d) = &report.diff {
        match report.command.as_str() {
            "diff" => render_diff(p, d, true),
            "check" | "status" => render_diff(p, d, false),
            _ => {}
        }
    }
    if let Some(sh) = &report.shadow {
        render_shadow(p, sh);
    }
    if let Some(h) = &report.baseline {
        render_baseline(p, h);
    }
    if let Some(h) = &report.health {
        // Upstream errors the baseline logged too are shown as the verdict's warnings.
        let kept = matches!(report.verdict, Some(Verdict::Keep(_)));
        match &report.verdict {
            // The rejected candidate's failures are what the change broke, not the state
            // nginx is left in: the rollback's re-verification says that.
            Some(Verdict::RollBack { causes }) => render_broke(p, h, causes),
            _ => render_health(p, h, "verify", !kept),
        }
    }
    if let Some(v) = &report.verdict {
        render_verdict(p, v);
    }
    if let Some(rb) = &report.rollback {
        render_rollback(p, rb);
    }
    if let Some(history) = &report.history {
        state::render_history(p, history, report.last_good.as_deref());
    }
    if let Some(st) = &report.status {
        state::render_status(p, st);
    }
}

/// What is shown before the reload (and before the prompt): warnings and the diff.
pub fn render_preview(p: &Printer, report: &Report) {
    if p.json {
        return;
    }
    for w in &report.warnings {
        p.err(&format!(
            "{} {}",
            p.paint(Tone::Warn, "warning:"),
            escape_control(w)
        ));
    }
    if let Some(d) = &report.diff {
        render_diff(p, d, false);
    }
    if let Some(i) = &report.impact {
        p.err(&escape_control(&i.summary(IMPACT_SHOWN)));
    }
    // On screen before the reload starts (or the prompt asks about it).
    p.flush();
}

/// Affected servers named in the one-line impact summary; the JSON report lists all.
const IMPACT_SHOWN: usize = 5;

/// Render an error that stopped a command.
pub fn render_error(p: &Printer, report: &Report, e: &crate::Error) {
    if p.json {
        p.json_doc(report);
        return;
    }
    let head = p.paint(Tone::Bad, "error:");
    p.err(&format!("{head} {}", escape_control(&e.to_string())));
    // Notes said before the error still matter: e.g. where an edit was kept.
    for note in &report.notes {
        p.err(&escape_control(note));
    }
    p.flush();
}

/// Steps with timings under -v. Without it only a failed step that no other section explains
/// (the reload itself, a restore) is shown: the failing target or file:line says the rest.
fn render_steps(p: &Printer, report: &Report) {
    for st in &report.steps {
        let mark = if st.ok {
            p.paint(Tone::Good, "ok  ")
        } else {
            p.paint(Tone::Bad, "FAIL")
        };
        let ms = st.elapsed.as_secs_f64() * 1000.0;
        let detail = st
            .detail
            .as_deref()
            .map(|d| format!("  {}", escape_control(d)))
            .unwrap_or_default();
        let line = format!("{mark} {:<10} {ms:>8.1} ms{detail}", st.name);
        if !st.ok && matches!(st.name, "reload" | "restore") {
            p.progress(&line);
        } else {
            p.detail(&line);
        }
    }
}

/// nginx's own words, verbatim but escaped: with -v, or when nothing in them could be
/// placed at a file:line (so a failure is never silent).
fn render_test_output(p: &Printer, report: &Report) {
    let Some(t) = &report.test else {
        return;
    };
    let unplaced = !t.passed && t.messages.is_empty();
    if t.stderr.trim().is_empty() || !(unplaced || p.verbose) {
        return;
    }
    p.err("nginx -t said:");
    for line in t.stderr.lines() {
        p.err(&format!("  {}", escape_control(line)));
    }
}

fn render_problems(p: &Printer, problems: &[Problem]) {
    for pr in problems {
        let place = match (&pr.file, pr.line) {
            (Some(f), Some(l)) => format!("{}:{l}: ", f.display()),
            (Some(f), None) => format!("{}: ", f.display()),
            _ => String::new(),
        };
        let tone = match pr.level.as_str() {
            "warn" | "notice" | "info" => Tone::Warn,
            _ => Tone::Bad,
        };
        let level = p.paint(tone, &pr.level);
        let message = match (&pr.file, pr.line) {
            (Some(f), Some(l)) => {
                let suffix = format!(" in {}:{l}", f.display());
                pr.message.strip_suffix(&suffix).unwrap_or(&pr.message)
            }
            _ => &pr.message,
        };
        p.err(&format!(
            "{}{level}: {}",
            escape_control(&place),
            escape_control(message)
        ));
        if let Some(hint) = &pr.hint {
            p.err(&format!(
                "  {} {}",
                p.paint(Tone::Bold, "hint:"),
                escape_control(hint)
            ));
        }
    }
}

/// `file:line  directive (context, upstream, flags)`
pub fn reference_line(r: &Reference) -> String {
    let mut flags = Vec::new();
    if r.context == Context::Stream {
        flags.push("stream".to_string());
    }
    if r.udp {
        flags.push("udp".into());
    }
    if r.also_udp {
        flags.push("tcp and udp".into());
    }
    if let Some(u) = &r.upstream {
        flags.push(format!("upstream {u}"));
    }
    if r.backup {
        flags.push("backup".into());
    }
    if r.down {
        flags.push("down".into());
    }
    let extra = if flags.is_empty() {
        String::new()
    } else {
        format!(" ({})", flags.join(", "))
    };
    format!("{}:{}  {}{extra}", r.file.display(), r.line, r.directive)
}

fn render_targets(p: &Printer, targets: &[Target]) {
    let n = targets.len();
    p.progress(&format!(
        "{n} upstream target{}",
        if n == 1 { "" } else { "s" }
    ));
    for t in targets {
        p.out(&p.paint(Tone::Bold, &escape_control(&t.address.to_string())));
        for r in t.references.iter() {
            p.out(&format!("    {}", escape_control(&reference_line(r))));
        }
    }
}

fn render_diff(p: &Printer, d: &ConfigDiff, to_stdout: bool) {
    let emit = |line: &str| {
        if to_stdout {
            p.out(line)
        } else {
            p.progress(line)
        }
    };
    if d.is_empty() {
        emit("no diff: the files equal the last good configuration");
        return;
    }
    for f in d.files.iter().filter(|f| !f.only_unlinked()) {
        if !f.through.is_empty() {
            emit(&p.paint(
                Tone::Dim,
                &escape_control(&format!(
                    "{} (nginx reads it through {})",
                    f.path,
                    f.through.join(", ")
                )),
            ));
        }
        match &f.unified {
            Some(text) => {
                for line in text.lines() {
                    let tone = if line.starts_with("+++") || line.starts_with("---") {
                        Tone::Bold
                    } else if line.starts_with('+') {
                        Tone::Good
                    } else if line.starts_with('-') {
                        Tone::Bad
                    } else if line.starts_with("@@") {
                        Tone::Dim
                    } else {
                        Tone::Plain
                    };
                    emit(&p.paint(tone, &escape_control(line)));
                }
            }
            None => emit(&escape_control(&unchanged_content(f))),
        }
    }
    // Said after the links whose removal it is.
    for f in d.files.iter().filter(|f| f.only_unlinked()) {
        emit(&p.paint(
            Tone::Dim,
            &escape_control(&format!(
                "{}: no longer included (nginx read it through {}, removed)",
                f.path,
                f.unlinked.join(", ")
            )),
        ));
    }
    emit(&p.paint(Tone::Bold, &d.summary()));
}

/// A file whose content is the same on both sides: what changed about it, in words
/// (`sites-enabled: the link points at /srv/etc2/enabled, not /srv/etc/enabled`).
fn unchanged_content(f: &crate::diff::FileDiff) -> String {
    let shown = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map_or("nothing (no link)".to_string(), |p| p.display().to_string())
    };
    let mut what = Vec::new();
    if let Some((old, new)) = &f.link {
        what.push(format!(
            "the link points at {}, not {}",
            shown(new),
            shown(old)
        ));
    }
    if let Some((old, new)) = f.mode {
        what.push(format!("mode {new:04o}, not {old:04o}"));
    }
    if what.is_empty() {
        let change = match f.change {
            crate::diff::Change::Added => "added",
            crate::diff::Change::Removed => "removed",
            _ => "changed",
        };
        return format!("{}: {change}", f.path);
    }
    format!("{}: {}", f.path, what.join("; "))
}

/// The checks against the running configuration before the signal: with -v only, since the
/// verdict already says what each failure was before.
fn render_baseline(p: &Printer, h: &HealthReport) {
    for r in &h.results {
        let what = match (r.status, &r.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        };
        p.detail(&format!(
            "     baseline: GET {} (Host: {}) -> {}",
            escape_control(&r.check.url),
            escape_control(&r.check.host),
            escape_control(&what)
        ));
    }
    for u in &h.upstream_errors {
        p.detail(&format!(
            "     baseline: nginx logged an upstream error: {}",
            escape_control(&u.text)
        ));
    }
}

/// What a change that stays did not fix, and what it did not cause.
fn render_verdict(p: &Printer, v: &Verdict) {
    let Verdict::Keep(kept) = v else {
        return;
    };
    render_emerg(p, "reload", &kept.emerg);
    for a in &kept.alerts {
        p.err(&format!(
            "{} the reload took effect, but nginx logged [alert]: {}",
            p.paint(Tone::Warn, "warning:"),
            escape_control(&a.describe())
        ));
    }
    render_intermittent(p, "the change", &kept.intermittent);
    for c in &kept.still_failing {
        p.err(&format!(
            "{} {} (the change is not the cause)",
            p.paint(Tone::Bad, "already failing:"),
            escape_control(&c.describe())
        ));
        if let Some(hint) = &c.after.hint {
            p.err(&format!(
                "  {} {}",
                p.paint(Tone::Bold, "hint:"),
                escape_control(hint)
            ));
        }
    }
    for c in &kept.slow {
        p.err(&format!(
            "{} {}",
            p.paint(Tone::Warn, "warning:"),
            escape_control(&c.describe())
        ));
    }
    for u in &kept.known_errors {
        p.err(&format!(
            "{} nginx logged an upstream error (upstream: {}) that it logged before this change \
             too, while the checks were answered as before: {}",
            p.paint(Tone::Warn, "warning:"),
            escape_control(u.upstream.as_deref().unwrap_or("?")),
            escape_control(&u.text)
        ));
    }
}

/// Checks that failed and then passed when asked again: a flaky backend to look at.
fn render_intermittent(p: &Printer, after: &str, checks: &[Intermittent]) {
    for c in checks {
        let tail = c.hint.as_deref().unwrap_or(
            "each failure passed when asked again, so it decides nothing: look at the backend",
        );
        p.err(&format!(
            "{} intermittent: {}; {}",
            p.paint(Tone::Warn, "warning:"),
            escape_control(&c.describe(after)),
            escape_control(tail)
        ));
        if let Some(u) = c.logged.first() {
            let more = match c.logged.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            p.err(&format!(
                "  nginx logged: {}{more}",
                escape_control(&u.text)
            ));
        }
    }
}

/// `[emerg]` lines of a reload that took effect all the same: the operator should read them.
fn render_emerg(p: &Printer, which: &str, lines: &[String]) {
    for line in lines {
        p.err(&format!(
            "{} the {which} took effect (new workers run the configuration), but nginx logged \
             [emerg] while loading it: {}",
            p.paint(Tone::Warn, "warning:"),
            escape_control(line)
        ));
    }
}

fn render_health(p: &Printer, h: &HealthReport, label: &str, errors: bool) {
    for r in &h.results {
        let mut what = match (r.status, &r.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(e)) => e.clone(),
            (None, None) => "no answer".into(),
        };
        if r.intermittent() {
            what.push_str(&format!(
                " (intermittent: {} of {} answers failed)",
                r.failures, r.attempts
            ));
        }
        if r.answer == crate::health::Answer::NotReached {
            what.push_str(": answered by nginx itself, did not reach the backend");
            if let Some(u) = &r.check.upstream {
                what.push_str(&format!(" ({u} not verified)"));
            }
        }
        let mark = if r.failed {
            p.paint(Tone::Bad, "FAIL")
        } else {
            p.paint(Tone::Good, "ok  ")
        };
        // The Host header is worth a mention only where the URL does not already say it.
        let url = r.check.url.to_string();
        let host = if url.contains(&format!("//{}", r.check.host)) {
            String::new()
        } else {
            format!(" (Host: {})", r.check.host)
        };
        let line = format!(
            "{mark} {label}: GET {}{host} -> {}",
            escape_control(&url),
            escape_control(&what)
        );
        if r.failed {
            p.progress(&line);
        } else {
            p.detail(&line);
        }
    }
    for u in &h.not_checked {
        p.detail(&format!(
            "not checked: {} {} ({}): {}",
            escape_control(&u.server),
            escape_control(&u.what),
            escape_control(&u.at),
            escape_control(&u.why)
        ));
    }
    for u in h.upstream_errors.iter().filter(|_| errors) {
        let upstream = u.upstream.as_deref().unwrap_or("?");
        p.progress(&format!(
            "{} nginx logged an upstream error (upstream: {}): {}",
            p.paint(Tone::Bad, "FAIL"),
            escape_control(upstream),
            escape_control(&u.text)
        ));
    }
}

/// The checks and upstream errors of a candidate that was rolled back: each failure as what
/// the change broke, with what the same check answered before it; passes under -v.
fn render_broke(p: &Printer, h: &HealthReport, causes: &[Cause]) {
    let passed = HealthReport {
        results: (h.results.iter()).filter(|r| !r.failed).cloned().collect(),
        upstream_errors: Vec::new(),
        ..h.clone()
    };
    render_health(p, &passed, "verify", false);
    let head = p.paint(Tone::Bad, "the change broke:");
    let already = p.paint(Tone::Warn, "already failing:");
    for r in h.results.iter().filter(|r| r.failed) {
        let cause = causes.iter().find_map(|c| match c {
            Cause::Check(c) if c.url == r.check.url => Some(c),
            _ => None,
        });
        // A check that failed before the change as after it is no part of what it broke.
        let Some(cause) = cause else {
            p.progress(&format!(
                "{already} GET {} -> {} (it failed before this change too)",
                escape_control(&r.check.url),
                escape_control(&r.reply()),
            ));
            continue;
        };
        let before = match &cause.before {
            Some(b) => format!(" ({} before this change)", b.answer),
            None => String::new(),
        };
        p.progress(&format!(
            "{head} GET {} -> {}{}",
            escape_control(&r.check.url),
            escape_control(&r.reply()),
            escape_control(&before)
        ));
    }
    let new_errors = (h.upstream_errors.iter()).filter(|u| {
        (causes.iter()).any(|c| matches!(c, Cause::UpstreamError(e) if verdict_same(e, u)))
    });
    for u in new_errors {
        p.progress(&format!(
            "{head} nginx logged an upstream error (upstream: {}): {}",
            escape_control(u.upstream.as_deref().unwrap_or("?")),
            escape_control(&u.text)
        ));
    }
}

fn verdict_same(a: &crate::errorlog::UpstreamError, b: &crate::errorlog::UpstreamError) -> bool {
    a.text == b.text || crate::verdict::same_error(a, b)
}

/// Each check through the shadow: failures always, passes under -v.
fn render_shadow(p: &Printer, sh: &crate::shadow::ShadowReport) {
    for c in &sh.checks {
        let failed = c.failed();
        let mark = if failed {
            p.paint(Tone::Bad, "FAIL")
        } else if !c.upstream_errors.is_empty() || c.shadow.intermittent() {
            p.paint(Tone::Warn, "warn")
        } else {
            p.paint(Tone::Good, "ok  ")
        };
        let running = match &c.running {
            Some(r) => match (r.status, &r.error) {
                (Some(code), _) => format!("; the running nginx: HTTP {code}"),
                (None, Some(e)) => format!("; the running nginx: {e}"),
                (None, None) => String::new(),
            },
            None => String::new(),
        };
        let line = format!(
            "{mark} shadow: GET {} (Host: {}, shadow at {}) -> {}{}",
            escape_control(&c.url),
            escape_control(&c.host),
            c.via,
            escape_control(&c.answer()),
            escape_control(&running)
        );
        if failed {
            p.progress(&line);
        } else {
            p.detail(&line);
        }
    }
}

fn render_rollback(p: &Printer, rb: &RollbackReport) {
    p.err(&format!(
        "{} {}",
        p.paint(Tone::Bad, "rejected:"),
        escape_control(&rb.reason)
    ));
    p.err(&format!(
        "  the rejected configuration is kept as snapshot {}",
        rb.rejected
    ));
    if let Some(r) = &rb.restore {
        for path in &r.restored {
            p.progress(&format!("  restored {}", path.display()));
        }
        for l in &r.relinked {
            let was = l
                .was
                .as_ref()
                .map(|w| format!(" (it pointed at {})", w.display()))
                .unwrap_or_default();
            if l.to_directory {
                p.err(&format!(
                    "  made {} a directory again, as the snapshot has it{was}",
                    escape_control(&l.path.display().to_string()),
                ));
                continue;
            }
            p.err(&format!(
                "  pointed the link {} back at {}{was}",
                escape_control(&l.path.display().to_string()),
                escape_control(&l.target.display().to_string())
            ));
        }
        for path in &r.removed {
            let displaced = r.displaced.as_ref().filter(|d| d.paths.contains(path));
            let held = match displaced {
                Some(d) => format!("another writer's file; kept as snapshot {}", d.snapshot),
                None => "added by the change; kept in the rejected snapshot".to_string(),
            };
            p.progress(&format!("  moved out {} ({held})", path.display()));
        }
        for path in &r.left {
            p.progress(&format!(
                "  left {} as it is (the restored configuration does not read it)",
                path.display()
            ));
        }
        for f in r.failed.iter().chain(&r.mismatches) {
            p.err(&format!(
                "  {} {}: {}",
                p.paint(Tone::Bad, "FAILED"),
                f.path.display(),
                escape_control(&f.reason)
            ));
        }
    }
    for url in &rb.dropped {
        p.progress(&format!(
            "  not re-verified: {} (only the rejected configuration listened there)",
            escape_control(url)
        ));
    }
    if let Some(h) = &rb.health {
        // Back to the baseline: what still fails failed before the change the same way.
        let still: Vec<&crate::verdict::Compared> = match &rb.verdict {
            Some(RollbackVerdict::Back { still_failing, .. }) => still_failing.iter().collect(),
            _ => Vec::new(),
        };
        let slow = |url: &str| still.iter().any(|c| c.url == url && c.only_slow());
        let (old, rest): (Vec<_>, Vec<_>) = (h.results.iter().cloned())
            .partition(|r| r.failed && still.iter().any(|c| c.url == r.check.url));
        let rest = HealthReport {
            results: rest,
            ..h.clone()
        };
        render_health(p, &rest, "re-verify", true);
        for r in old {
            let (label, why) = match slow(&r.check.url) {
                true => ("not verified", "slower than --health-timeout"),
                false => ("still failing", "as before this change"),
            };
            p.progress(&format!(
                "{} re-verify: GET {} -> {} ({why})",
                p.paint(Tone::Warn, label),
                escape_control(&r.check.url),
                escape_control(&r.reply())
            ));
        }
    }
    if let Some(RollbackVerdict::Back {
        emerg,
        intermittent,
        ..
    }) = &rb.verdict
    {
        render_emerg(p, "rollback's reload", emerg);
        render_intermittent(p, "the rollback", intermittent);
    }
    let tone = if rb.state.contains("live and verified") {
        Tone::Good
    } else {
        Tone::Bad
    };
    p.err(&format!(
        "{} {}",
        p.paint(tone, "rollback:"),
        escape_control(&rb.state)
    ));
}

/// The most not-verified items the headline names; the JSON report has them all.
const HEADLINE_ITEMS: usize = 5;

/// The headline of a change that made nothing worse while a site fails as it did before.
fn already_failing(report: &Report) -> String {
    let first = match &report.verdict {
        Some(Verdict::Keep(kept)) => kept.still_failing.first().map(|c| c.describe()),
        _ => None,
    };
    format!(
        "reloaded, but an operator must act: {}; the change is not the cause, nothing was \
         rolled back",
        first.unwrap_or_else(|| "a check failed before this change and still does".into())
    )
}

/// The first check that was slower than `--health-timeout` before the change and after it.
fn slow(report: &Report) -> Option<&str> {
    match &report.verdict {
        Some(Verdict::Keep(kept)) => kept.slow.first().map(|c| c.url.as_str()),
        _ => None,
    }
}

/// What the headline of a change that stays adds to it: `[emerg]` lines nginx logged while
/// loading it, checks that answered intermittently.
fn warned(report: &Report) -> Vec<String> {
    let Some(Verdict::Keep(kept)) = &report.verdict else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !kept.emerg.is_empty() {
        out.push("nginx logged [emerg] while loading it".to_string());
    }
    match kept.intermittent.len() {
        0 => {}
        1 => out.push("1 check answered intermittently".to_string()),
        n => out.push(format!("{n} checks answered intermittently")),
    }
    out
}

/// A change that stays with `[alert]` lines after its reload: "reloaded with 1 alert: TEXT
/// (DIRECTIVE, FILE:LINE); ..." in place of "reloaded: ...".
fn with_alerts(report: &Report, tone: Tone, text: String) -> (Tone, String) {
    let alerts = match &report.verdict {
        Some(Verdict::Keep(kept)) if !kept.alerts.is_empty() => &kept.alerts,
        _ => return (tone, text),
    };
    let Some(rest) = text.strip_prefix("reloaded: ") else {
        return (tone, text);
    };
    let n = alerts.len();
    let more = match n {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let s = if n == 1 { "" } else { "s" };
    let tone = if tone == Tone::Good { Tone::Warn } else { tone };
    let first = escape_control(&alerts[0].describe());
    (
        tone,
        format!("reloaded with {n} alert{s}: {first}{more}; {rest}"),
    )
}

/// The headline of a rollback back to its baseline: "verified" only when no check of the
/// restored configuration still fails as it did before the change.
fn rolled_back(report: &Report) -> String {
    // `recover` rolls back what a killed run left unverified: nothing failed.
    // A run killed once it had judged the change, while it rolled back, had verified it and
    // found it failing: its own reason is the rollback's.
    let killed_unjudged = (report.rollback.as_ref()).is_none_or(|rb| rb.of_unjudged_kill());
    let before_load = (report.rollback.as_ref()).is_some_and(|rb| rb.of_kill_before_load());
    let head = match report.command.as_str() {
        "recover" if before_load => {
            "rolled back: the run was killed before nginx loaded its change, which nginx never \
             ran; last-good's files are back on disk (the change is kept as its snapshot), and \
             the previous configuration is live"
        }
        "recover" if killed_unjudged => {
            "rolled back: the run that reloaded the change was killed before it verified it; \
             the previous configuration is live"
        }
        "recover" => {
            "rolled back: the change had failed after the reload, and the run was killed while \
             it rolled back; that rollback is finished and the previous configuration is live"
        }
        _ => "rolled back: the change failed after the reload; the previous configuration is live",
    };
    let still = match report.rollback.as_ref().and_then(|rb| rb.verdict.as_ref()) {
        Some(RollbackVerdict::Back { still_failing, .. }) => &still_failing[..],
        _ => &[],
    };
    match still {
        [] => format!("{head} and verified"),
        [first, rest @ ..] => {
            let more = match rest.len() {
                0 => String::new(),
                n => format!(" (and {n} more)"),
            };
            format!(
                "{head} and back to how it was before the change, not verified: {}{more}",
                first.describe()
            )
        }
    }
}

/// Where `ssl_verify_client on` answered the checks: a warning where the change made sites
/// served before it ask every client for a certificate, a note where they asked already.
fn asks_certificate(p: &Printer, asks: &AsksCertificate) -> String {
    let list = |servers: &[String]| match servers {
        [] => String::new(),
        [one] => escape_control(one),
        [rest @ .., last] => escape_control(&format!("{} and {last}", rest.join(", "))),
    };
    let at = escape_control(&asks.at);
    match &asks.served_before[..] {
        [] => format!(
            "{} {} {} every client for a certificate (ssl_verify_client on, {at}) and the \
             checks have none: what is behind it was not verified",
            p.paint(Tone::Bold, "note:"),
            list(&asks.servers),
            if asks.servers.len() == 1 {
                "asks"
            } else {
                "ask"
            },
        ),
        served => format!(
            "{} this change makes nginx ask every client of {} for a certificate \
             (ssl_verify_client on, {at}): {} served before it and answer HTTP 400 now, \
             as they do every client without one. Meant for fewer sites? Set it in their \
             server blocks",
            p.paint(Tone::Warn, "warning:"),
            list(served),
            if served.len() == 1 {
                "it was"
            } else {
                "they were"
            },
        ),
    }
}

/// Commands whose job is a reload; the others only look.
fn reloads(command: &str) -> bool {
    matches!(command, "reload" | "edit" | "rollback" | "recover")
}

fn render_outcome(p: &Printer, report: &Report) {
    for u in report.coverage.iter().flat_map(|c| &c.unread_logs) {
        p.err(&format!(
            "{} the log-based checks could not run: {}. nginx fails over past a failing pool \
             member without a word to the client, and only the error log shows it: upstream \
             errors were not checked, only the answers to the checks",
            p.paint(Tone::Warn, "warning:"),
            escape_control(&u.describe())
        ));
    }
    for asks in report.coverage.iter().flat_map(|c| &c.client_certificates) {
        p.err(&asks_certificate(p, asks));
    }
    for hint in report.coverage.iter().flat_map(|c| &c.hints) {
        p.err(&format!(
            "{} {}",
            p.paint(Tone::Bold, "hint:"),
            escape_control(hint)
        ));
    }
    // The headline names what was not verified; why, for the locations it names (a server's
    // entry says it there).
    if report.outcome == Outcome::Reloaded {
        let mut said: Vec<String> = Vec::new();
        let located =
            (report.coverage.iter().flat_map(|c| &c.not_verified)).filter(|n| n.what != "server");
        for n in located {
            let line = format!("not verified: {}: {}", n.describe(), n.why);
            if !said.contains(&line) && said.len() < HEADLINE_ITEMS {
                p.err(&escape_control(&line));
                said.push(line);
            }
        }
    }
    let (tone, text) = match report.outcome {
        Outcome::Ok => return,
        Outcome::Reloaded => match (report.coverage.as_ref().filter(|c| !c.complete()), slow(report)) {
            (Some(c), _) => (Tone::Warn, format!("reloaded: live; {}", c.describe(HEADLINE_ITEMS))),
            (None, Some(url)) => (Tone::Warn, format!("reloaded: live; not verified: {url} got no answer within --health-timeout, before this change and after it")),
            (None, None) => (Tone::Good, "reloaded: the new configuration is live and verified".to_string()),
        },
        Outcome::Unchanged => (Tone::Good, "unchanged: nothing to reload".into()),
        Outcome::Refused if !reloads(&report.command) => (Tone::Bad, format!("{}: problems found (nothing was reloaded)", report.command)),
        Outcome::Refused => (Tone::Bad, "refused: nginx was not reloaded; the running configuration is untouched".into()),
        Outcome::RolledBack => (Tone::Warn, rolled_back(report)),
        Outcome::RollbackFailed => (Tone::Bad, "ROLLBACK FAILED: an operator must act now (see above)".into()),
        Outcome::AlreadyFailing => (Tone::Bad, already_failing(report)),
        Outcome::Recorded => (Tone::Good, "recorded: this configuration is the known-good baseline".into()),
        Outcome::Cancelled => (Tone::Warn, "cancelled: nothing changed".into()),
        Outcome::NotRunning => (Tone::Bad, "nginx is not running: the last good configuration is back on disk; start nginx to serve it".into()),
        Outcome::Interrupted => (Tone::Warn, "interrupted: nothing changed".into()),
        Outcome::Error => return,
    };
    let (tone, text) = with_alerts(report, tone, text);
    // Only a change that stays has a verdict to keep these warnings in.
    let warned = warned(report);
    let (tone, text) = if warned.is_empty() {
        (tone, text)
    } else {
        let tone = if tone == Tone::Good { Tone::Warn } else { tone };
        (
            tone,
            format!("{text}; {} (see the warnings above)", warned.join("; ")),
        )
    };
    let snap = report
        .snapshot
        .as_deref()
        .map(|s| match report.outcome {
            Outcome::RolledBack | Outcome::RollbackFailed => {
                format!(" (your change is kept as snapshot {s})")
            }
            _ => format!(" (snapshot {s})"),
        })
        .unwrap_or_default();
    p.out(&format!("{}{snap}", p.paint(tone, &text)));
}
