//! The probe table and listen conflicts: for each target, what failed, where it is referenced,
//! and the likely fix, on one screen.

use crate::output::render::reference_line;
use crate::output::{escape_control, Printer, Tone};
use crate::preflight::ListenConflict;
use crate::probe::{ProbeReport, ProbeResult, Severity, Status};

/// With `all` (the `probe` command) every target is listed; otherwise only the ones that need
/// attention, so a reload's output stays short.
pub fn render_probe(p: &Printer, report: &ProbeReport, all: bool) {
    for r in &report.results {
        let attention = r.severity != Severity::Ok;
        if all {
            if attention {
                render_result(p, r, true);
            } else {
                p.out(&result_head(p, r));
            }
        } else if attention {
            render_result(p, r, false);
        }
    }
    let failures = report.failures().count();
    let warnings = report.warnings().count();
    let line = format!(
        "{} targets probed in {:.1} ms: {} failing, {} warnings",
        report.results.len(),
        report.elapsed.as_secs_f64() * 1000.0,
        failures,
        warnings
    );
    if all {
        p.progress(&line);
    } else {
        p.detail(&line);
    }
}

fn result_head(p: &Printer, r: &ProbeResult) -> String {
    let (tone, mark) = match r.severity {
        Severity::Ok => (Tone::Good, "ok  "),
        Severity::Warning => (Tone::Warn, "warn"),
        Severity::Failure => (Tone::Bad, "FAIL"),
        Severity::Allowed => (Tone::Warn, "allw"),
    };
    // A protocol failure has no errno; what the backend answered says more.
    let reply = || {
        let bad = r.addresses.iter().find(|a| a.status == r.status)?;
        Some(format!(
            "{} probe: {}",
            bad.protocol?.label(),
            bad.reply.as_deref().unwrap_or("no answer")
        ))
    };
    let status = match (&r.status, &r.errno) {
        (Status::Ok, _) => format!("ok ({:.1} ms)", r.elapsed.as_secs_f64() * 1000.0),
        (s, Some(e)) => format!("{} ({e})", s.as_str()),
        (s, None) => match reply() {
            Some(text) => format!("{} ({text})", s.as_str()),
            None => s.as_str().to_string(),
        },
    };
    format!(
        "{} {}  {}",
        p.paint(tone, mark),
        p.paint(Tone::Bold, &escape_control(&r.target.to_string())),
        escape_control(&status)
    )
}

fn render_result(p: &Printer, r: &ProbeResult, stdout: bool) {
    let emit = |line: &str| if stdout { p.out(line) } else { p.err(line) };
    emit(&result_head(p, r));
    if r.addresses.len() > 1 {
        for a in &r.addresses {
            let errno = (a.errno.as_deref().or(a.reply.as_deref()))
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            let protocol = a
                .protocol
                .map(|p| format!(" {} probe:", p.label()))
                .unwrap_or_default();
            emit(&format!(
                "      {}{protocol} {}{}",
                a.address,
                a.status.as_str(),
                escape_control(&errno)
            ));
        }
    }
    for reference in r.references.iter() {
        emit(&format!(
            "      at {}",
            escape_control(&reference_line(reference))
        ));
    }
    for h in &r.hints {
        emit(&format!(
            "      {} {}",
            p.paint(Tone::Bold, "hint:"),
            escape_control(&h.message)
        ));
        if let Some(s) = &h.suggestion {
            emit(&format!("            {}", escape_control(s)));
        }
    }
}

/// New `listen` addresses another program holds.
pub fn render_conflicts(p: &Printer, conflicts: &[ListenConflict]) {
    for c in conflicts {
        p.err(&format!(
            "{} {}",
            p.paint(Tone::Bad, "FAIL"),
            escape_control(&c.message())
        ));
    }
}
