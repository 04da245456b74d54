//! The read-only half of the pipeline, shared by `check`, `probe` and the reload: extract
//! targets and servers, run `nginx -t`, probe upstreams and the listen preflight. `nginx -t`
//! starts before the extraction and runs on its own thread through it and the probes, so a
//! large config costs one `nginx -t`, not `nginx -t` plus everything else. The shadow nginx
//! (see `shadow`) starts beside `nginx -t` too; [`through_shadow`] sends the candidate's checks
//! through it once the diff says which servers changed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::conf::targets::{self, Targets};
use crate::conf::{servers, Config, Server};
use crate::error::{Error, Result};
use crate::health::recent::Serving;
use crate::health::{self, HealthOptions, Plan};
use crate::impact::{self, Impact};
use crate::nginx::{self, Level, Nginx, TestOutcome};
use crate::pipeline::env::Env;
use crate::preflight::{self, ListenConflict};
use crate::probe::netstat::Listeners;
use crate::probe::{self, ProbeOptions, ProbeReport};
use crate::report::{Problem, Report};
use crate::settings::Settings;
use crate::shadow::{self, NotServing, Shadow, ShadowReport, ShadowState};

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
    /// The candidate reduced to what impact analysis compares.
    pub prints: impact::Prints,
    pub test: Option<TestOutcome>,
    pub probe: Option<ProbeReport>,
    pub conflicts: Vec<ListenConflict>,
    /// The shadow started beside `nginx -t`, or why it did not start; `None` when off.
    pub shadow: Option<std::result::Result<Shadow, String>>,
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
        per_request: crate::probe::per_request::PerRequest::of(config),
        failover: crate::probe::failover::Failover::of(config),
        ..ProbeOptions::default()
    }
}

/// `nginx -t` started as early as it may be: once the configuration is loaded and, for a
/// reload, the master is found (`nginx -t` creates a missing pid file, so it must not run when
/// nginx does not). On a large configuration it is the longest step, so the extraction,
/// probes, preflight and diff all run while it does. Dropping it waits for `nginx -t` to
/// finish (bounded by the nginx timeout), so no test outlives the run that started it.
pub struct Early {
    checks: Checks,
    test: Option<std::thread::JoinHandle<Tested>>,
    /// The listening sockets as they were before `nginx -t` started: it binds and listens on
    /// every free address it names (it only ignores EADDRINUSE), so a table read while it runs
    /// could show a new `listen` "held" by `nginx -t` itself.
    tables: Option<Listeners>,
    shadow: Option<std::result::Result<Shadow, String>>,
}

/// The test's outcome, when it started and how long it took.
type Tested = (Result<TestOutcome>, Instant, Duration);

impl Early {
    /// Read the socket tables if the preflight will run, then start `nginx -t` if it will.
    pub fn start(nginx: Option<&Nginx>, checks: Checks) -> Early {
        let tables = checks.preflight.then(Listeners::tables);
        let test = match (checks.test, nginx) {
            (true, Some(n)) => {
                let n = n.clone();
                Some(std::thread::spawn(move || {
                    let t = Instant::now();
                    (n.test(), t, t.elapsed())
                }))
            }
            _ => None,
        };
        Early {
            checks,
            test,
            tables,
            shadow: None,
        }
    }

    /// Start the candidate in a shadow nginx beside `nginx -t` (unless `s.no_shadow`). A shadow
    /// that cannot start is remembered as the reason, never a refusal: it says nothing about
    /// the change. Runs on the calling thread, whose end the shadow's death signal follows.
    pub fn with_shadow(mut self, s: &Settings, env: &Env, config: &Config) -> Early {
        if s.no_shadow {
            return self;
        }
        let started = Shadow::start(&shadow::Options {
            binary: &env.nginx.binary,
            prefix: &env.nginx.prefix,
            config,
            info: &env.info,
            state_dir: &s.state_dir,
        });
        self.shadow = Some(started.map_err(|e| e.to_string()));
        self
    }

    fn join(&mut self) -> Option<Tested> {
        let handle = self.test.take()?;
        Some(handle.join().unwrap_or_else(|_| {
            (
                Err(Error::Internal("the nginx -t thread failed".into())),
                Instant::now(),
                Duration::ZERO,
            )
        }))
    }
}

impl Drop for Early {
    fn drop(&mut self) {
        self.join();
    }
}

/// Run the checks `early` did not already start; record each as a step of the report.
pub fn inspect(
    info: Option<&nginx::BuildInfo>,
    s: &Settings,
    config: Config,
    own_pids: &[i32],
    early: Early,
    report: &mut Report,
) -> Result<Inspection> {
    let (insp, ()) = inspect_with(info, s, config, own_pids, early, report, |_| ())?;
    Ok(insp)
}

/// The candidate as parsed, before the probes and `nginx -t` are done.
pub struct Parsed<'a> {
    pub config: &'a Config,
    pub servers: &'a [Server],
    pub prints: &'a impact::Prints,
}

/// [`inspect`], calling `alongside` as soon as the candidate is parsed, while the probes and
/// `nginx -t` still run: what it starts there costs no wall time of its own.
pub fn inspect_with<T>(
    info: Option<&nginx::BuildInfo>,
    s: &Settings,
    config: Config,
    own_pids: &[i32],
    mut early: Early,
    report: &mut Report,
    alongside: impl FnOnce(Parsed) -> T,
) -> Result<(Inspection, T)> {
    let started = Instant::now();
    let targets = targets::extract(&config);
    let servers = servers::extract(&config);
    let prints = impact::prints(&config, &servers);
    report.step(
        "parse",
        true,
        started.elapsed(),
        Some(format!("{} files", config.files.len())),
    );

    let mut popts = probe_options(s, &config, info);
    // Only a TLS `*_pass` needs the SNI settings: no second walk for a plain configuration.
    if (targets.targets.iter())
        .flat_map(|t| t.references.iter())
        .any(|r| matches!(r.scheme.as_deref(), Some("https" | "grpcs" | "suwsgi")))
    {
        popts.tls_names = crate::conf::sni::tls_names(&config);
    }
    // Probes and the listen preflight only read (sockets, /proc): they run while nginx -t does.
    let probe_began = Instant::now();
    let (probe, preflight, beside) = std::thread::scope(|scope| {
        let probe =
            (early.checks.probe).then(|| scope.spawn(|| probe::probe_all(&targets, &popts)));
        let beside = alongside(Parsed {
            config: &config,
            servers: &servers,
            prints: &prints,
        });
        let preflight = early.tables.take().map(|mut listeners| {
            let t = Instant::now();
            listeners.attach_owners();
            let found = preflight::listen_conflicts_in(&servers, own_pids, &listeners);
            (found, t, t.elapsed())
        });
        let probe = probe.map(|h| h.join()).transpose();
        (probe, preflight, beside)
    });
    let probe = probe.map_err(|_| Error::Internal("the probe thread failed".into()))?;
    let test = match early.join() {
        Some((outcome, began, elapsed)) => {
            let outcome = outcome?;
            report.step_from("nginx -t", outcome.passed, began, elapsed, None);
            Some(outcome)
        }
        None => None,
    };
    if let Some(pr) = &probe {
        let n = pr.failures().count();
        let detail = format!("{} targets, {n} failing", pr.results.len());
        report.step_from("probe", n == 0, probe_began, pr.elapsed, Some(detail));
    }
    let conflicts = match preflight {
        Some((c, began, elapsed)) => {
            report.step_from("preflight", c.is_empty(), began, elapsed, None);
            c
        }
        None => Vec::new(),
    };
    let insp = Inspection {
        config,
        targets,
        servers,
        prints,
        test,
        probe,
        conflicts,
        shadow: early.shadow.take(),
    };
    Ok((insp, beside))
}

/// The candidate's checks: the `--health` URLs, else the requests for every server `impact`
/// says the change affects, with what of those servers no request checks (see
/// [`health::focused_checks`]; `root` is the config root places are shown against). The
/// shadow sends these before the reload, the baseline before the signal, verification after
/// it: the same checks for all three.
pub fn candidate_checks(s: &Settings, servers: &[Server], impact: &Impact, root: &Path) -> Plan {
    if s.health.is_empty() {
        return health::focused_checks(servers, impact, root);
    }
    Plan {
        checks: s.health.clone(),
        ..Plan::default()
    }
}

/// How checks are sent: the same window, per-request timeout, headers, accepted statuses and
/// expected failovers (peers the probe found down without refusing) as verification.
pub fn health_options(s: &Settings, probe: Option<&ProbeReport>) -> HealthOptions {
    HealthOptions {
        window: s.health_window,
        expect_status: (!s.expect_status.is_empty()).then(|| s.expect_status.clone()),
        expected_down: probe.map_or_else(Vec::new, ProbeReport::expected_down),
        request_timeout: s.health_timeout,
        headers: s.health_headers.clone(),
        ..HealthOptions::default()
    }
}

/// Send the candidate's checks through the shadow started beside `nginx -t`, then stop it.
/// `true` when the shadow refuses the change: a check the running nginx passes fails there.
/// A shadow that did not start or cannot judge is noted ("not verified in the shadow") and
/// refuses nothing. `running` is the real nginx: its error logs, read while a failed check is
/// asked of it, and its workers, whose lines there count.
pub fn through_shadow(
    s: &Settings,
    insp: &mut Inspection,
    impact: &Impact,
    running: (&[PathBuf], &Serving),
    report: &mut Report,
) -> Result<bool> {
    let Some(started) = insp.shadow.take() else {
        report.shadow = Some(ShadowReport::new(ShadowState::Off, None));
        return Ok(false);
    };
    let t = Instant::now();
    let mut shadow = match started {
        Ok(shadow) => shadow,
        Err(why) => {
            let why = format!("the shadow nginx could not be started: {why}");
            report
                .notes
                .push(format!("not verified in the shadow: {why}"));
            report.step("shadow", true, t.elapsed(), Some("not started".into()));
            report.shadow = Some(ShadowReport::new(ShadowState::NotVerified, Some(why)));
            return Ok(false);
        }
    };
    let test_took = (report.steps.iter())
        .find(|st| st.name == "nginx -t")
        .map_or(Duration::ZERO, |st| st.elapsed);
    let within = (test_took * 2 + Duration::from_secs(5)).min(s.nginx_timeout);
    let mut rep = ShadowReport::new(ShadowState::NotVerified, None);
    rep.master_pid = Some(shadow.master_pid());
    rep.listens = shadow.ports().rows();
    match shadow.wait_ready(within) {
        Err(NotServing::WorkersDied(line)) => {
            // The reload would start the same workers: they would die alike, and the old
            // ones would leave with no one accepting in their place.
            rep.state = ShadowState::Refused;
            rep.reason = Some(format!(
                "the candidate's worker processes die at startup in the shadow nginx: {line}"
            ));
        }
        Err(NotServing::Other(why)) => {
            if crate::signals::interrupted() {
                return Err(Error::Interrupted);
            }
            rep.reason = Some(format!("the shadow nginx did not start: {why}"));
        }
        Ok(()) => {
            crate::store::test_pause("shadow-running");
            let root = &insp.config.conf_prefix;
            // Exactly the checks verification after the reload sends (gRPC locations too: a
            // plain GET nginx turns into gRPC is answered alike by both nginx instances, and a
            // failure the running nginx shares is not the change's), so the shadow refuses
            // what would otherwise be rolled back.
            let checks = candidate_checks(s, &insp.servers, impact, root).checks;
            let opts = health_options(s, report.probe.as_ref());
            let (mut results, skipped) = shadow::run_checks(&shadow, &checks, &opts);
            // `nginx -t` has ended by now, so nothing binds the candidate's addresses: no
            // socket filter.
            let (logs, serving) = running;
            let serving = Serving {
                held: None,
                workers: serving.workers.clone(),
            };
            shadow::ask_running(&shadow, &mut results, (logs, serving), &opts);
            // Only a request the change made worse is asked what it reads.
            for c in results.iter_mut().filter(|c| c.worse()) {
                let backend_answered = c.shadow.status.is_some() && c.upstream_errors.is_empty();
                c.differs = shadow::differs(
                    &insp.config,
                    &insp.servers,
                    &c.shadow.check,
                    backend_answered,
                );
            }
            let (state, reason) = shadow::judge(&results);
            report
                .warnings
                .extend(results.iter().filter_map(shadow::ShadowCheck::intermittent));
            (rep.state, rep.reason, rep.checks, rep.skipped) = (state, reason, results, skipped);
        }
    }
    rep.elapsed = shadow.age();
    (rep.spawn, rep.ready) = (shadow.spawn_took, shadow.ready_after);
    let stopping = shadow.stop();
    let detail = match rep.state {
        ShadowState::Verified => format!(
            "{} checks, stopped in {} ms",
            rep.checks.len(),
            stopping.as_millis()
        ),
        ShadowState::Refused => "refused".into(),
        _ => "not verified".into(),
    };
    report.step(
        "shadow",
        rep.state != ShadowState::Refused,
        t.elapsed(),
        Some(detail),
    );
    let refuses = rep.state == ShadowState::Refused;
    match (rep.state, &rep.reason) {
        (ShadowState::Refused, Some(why)) => {
            let failed = rep.checks.iter().find(|c| c.failed());
            let server = failed.and_then(|c| {
                insp.servers
                    .iter()
                    .find(|sv| sv.server_names.contains(&c.host))
            });
            report.problems.push(Problem {
                level: "error".into(),
                message: format!("{why}: the change is refused before the reload"),
                file: server.map(|sv| sv.file.to_path_buf()),
                line: server.map(|sv| sv.line),
                hint: Some(match failed {
                    Some(_) => "no client saw this: the request went to a throwaway nginx running the candidate on a loopback port".into(),
                    None => "no client saw this: the candidate ran in a throwaway nginx on loopback ports".into(),
                }),
            });
        }
        (ShadowState::NotVerified, Some(why)) => {
            report
                .notes
                .push(format!("not verified in the shadow: {why}"));
        }
        (_, Some(why)) => report.notes.push(format!("shadow: {why}")),
        _ => {}
    }
    report.shadow = Some(rep);
    Ok(refuses)
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
