//! The read-only half of the pipeline, shared by `check`, `probe` and the reload: extract
//! targets and servers, run `nginx -t`, probe upstreams and the listen preflight. `nginx -t`
//! runs on its own thread while the probes run, so a large config costs one `nginx -t`, not
//! `nginx -t` plus probes.

use std::time::Instant;

use crate::conf::targets::{self, Targets};
use crate::conf::{servers, Config, Server};
use crate::error::{Error, Result};
use crate::nginx::{self, Level, Nginx, TestOutcome};
use crate::preflight::{self, ListenConflict};
use crate::probe::{self, ProbeOptions, ProbeReport};
use crate::report::{Problem, Report};
use crate::settings::Settings;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    pub test: bool,
    pub probe: bool,
    pub preflight: bool,
}

/// What the read-only checks found.
#[derive(Debug)]
pub struct Inspection {
    pub config: Config,
    pub targets: Targets,
    pub servers: Vec<Server>,
    pub test: Option<TestOutcome>,
    pub probe: Option<ProbeReport>,
    pub conflicts: Vec<ListenConflict>,
}

/// Probe settings from flags and the configuration's `user`.
pub fn probe_options(
    s: &Settings,
    config: &Config,
    info: Option<&nginx::BuildInfo>,
) -> ProbeOptions {
    ProbeOptions {
        timeout: s.probe_timeout,
        worker_user: Some(match info {
            Some(info) => nginx::worker_user(config, info),
            None => nginx::worker_user(config, &nginx::BuildInfo::default()),
        }),
        allow_fail: s.allow_fail.clone(),
        ..ProbeOptions::default()
    }
}

/// Run the checks; record each as a step of the report.
pub fn inspect(
    nginx: Option<(&Nginx, &nginx::BuildInfo)>,
    s: &Settings,
    config: Config,
    own_pids: &[i32],
    checks: Checks,
    report: &mut Report,
) -> Result<Inspection> {
    let started = Instant::now();
    let targets = targets::extract(&config);
    let servers = servers::extract(&config);
    report.step(
        "parse",
        true,
        started.elapsed(),
        Some(format!("{} files", config.files.len())),
    );

    let popts = probe_options(s, &config, nginx.map(|n| n.1));
    // `nginx -t` binds and listens on every free address it names (it only ignores
    // EADDRINUSE), so the listening sockets are read before it starts; only the slow owner scan
    // runs beside it.
    let tables = checks
        .preflight
        .then(crate::probe::netstat::Listeners::tables);
    // Probes and the listen preflight only read (sockets, /proc): they run while nginx -t does.
    let (test, probe, preflight) = std::thread::scope(|scope| {
        let test = match (checks.test, nginx) {
            (true, Some((n, _))) => Some(scope.spawn(move || {
                let t = Instant::now();
                (n.test(), t.elapsed())
            })),
            _ => None,
        };
        let probe = checks.probe.then(|| probe::probe_all(&targets, &popts));
        let preflight = tables.map(|mut listeners| {
            let t = Instant::now();
            listeners.attach_owners();
            let found = preflight::listen_conflicts_in(&servers, own_pids, &listeners);
            (found, t.elapsed())
        });
        let test = test.map(|h| {
            h.join().unwrap_or_else(|_| {
                (
                    Err(Error::Internal("the nginx -t thread failed".into())),
                    Default::default(),
                )
            })
        });
        (test, probe, preflight)
    });
    let test = match test {
        Some((outcome, elapsed)) => {
            let outcome = outcome?;
            report.step("nginx -t", outcome.passed, elapsed, None);
            Some(outcome)
        }
        None => None,
    };
    if let Some(pr) = &probe {
        let n = pr.failures().count();
        let detail = format!("{} targets, {n} failing", pr.results.len());
        report.step("probe", n == 0, pr.elapsed, Some(detail));
    }
    let conflicts = match preflight {
        Some((c, elapsed)) => {
            report.step("preflight", c.is_empty(), elapsed, None);
            c
        }
        None => Vec::new(),
    };
    Ok(Inspection {
        config,
        targets,
        servers,
        test,
        probe,
        conflicts,
    })
}

impl Inspection {
    /// Whether anything found means "do not reload".
    pub fn refuses(&self) -> bool {
        self.test.as_ref().is_some_and(|t| !t.passed)
            || self
                .probe
                .as_ref()
                .is_some_and(|p| p.failures().next().is_some())
            || !self.conflicts.is_empty()
            || !self.targets.findings.is_empty()
    }

    /// Problems with file and line: nginx's own messages first, each with our hint where we
    /// have one for the same place, then our findings nginx did not mention.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut used = vec![false; self.targets.findings.len()];
        if let Some(t) = &self.test {
            for m in &t.messages {
                if matches!(m.level, Level::Notice | Level::Info) {
                    continue;
                }
                let hint = self.targets.findings.iter().enumerate().find_map(|(i, f)| {
                    let same = m.file.as_deref() == Some(&*f.file) && m.line == Some(f.line);
                    if same {
                        used[i] = true;
                    }
                    same.then(|| f.hint.clone()).flatten()
                });
                out.push(Problem {
                    level: m.level.as_str().to_string(),
                    message: m.text.clone(),
                    file: m.file.clone(),
                    line: m.line,
                    hint,
                });
            }
        }
        for (f, used) in self.targets.findings.iter().zip(used) {
            if !used {
                out.push(Problem::from(f));
            }
        }
        out
    }
}
