//! The read-only half of the pipeline, shared by `check`, `probe` and the reload: extract
//! targets and servers, run `nginx -t`, probe upstreams and the listen preflight. `nginx -t`
//! starts before the extraction and runs on its own thread through it and the probes, so a
//! large config costs one `nginx -t`, not `nginx -t` plus everything else. The shadow nginx
//! (see `shadow`) starts beside `nginx -t` too, on a thread of its own ([`start_shadow`]); the
//! candidate's checks are sent through it as soon as the impact says which servers changed,
//! and [`through_shadow`] records what it showed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::conf::servers::ListenAddr;
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
use crate::shadow::{self, Batch, Seen, Session, ShadowReport, ShadowState};

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
}

/// Probe settings from flags and the configuration's `user`, or the running master's identity
/// (`master`, its pid) when that is not root: nginx then ignores `user`.
pub fn probe_options(
    s: &Settings,
    config: &Config,
    info: Option<&nginx::BuildInfo>,
    master: Option<i32>,
) -> ProbeOptions {
    ProbeOptions {
        master_account: master.and_then(crate::probe::access::Account::of_process),
        workdir: nginx::worker_dir(config, master.and_then(nginx::master_cwd).as_deref()),
        timeout: s.probe_timeout,
        worker_user: Some(nginx::worker_user(
            config,
            info.unwrap_or(&Default::default()),
        )),
        worker_group: nginx::worker_group(config, info.unwrap_or(&Default::default())),
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
        }
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

/// Start the candidate in a shadow nginx beside `nginx -t`, on a thread of its own (`None`
/// with `s.no_shadow`). Only the walk for its listens runs on the calling thread. A shadow
/// that cannot start is a reason in its report, never a refusal: it says nothing about the
/// change. Dropping the session stops it.
pub fn start_shadow(
    s: &Settings,
    env: &Env,
    config: &Config,
    master: Option<i32>,
) -> Option<Session> {
    if s.no_shadow {
        return None;
    }
    let cwd = master.and_then(nginx::master_cwd);
    let source = shadow::Source::of(&shadow::Options {
        cwd: cwd.as_deref(),
        binary: &env.nginx.binary,
        prefix: &env.nginx.prefix,
        config,
        info: &env.info,
        state_dir: &s.state_dir,
    });
    Some(Session::start(source, s.nginx_timeout))
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

    let mut popts = probe_options(s, &config, info, own_pids.first().copied());
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
    // Each URL samples the pool the derived checks of its listen and Host pass to, when they
    // pass to one: a canary added there fails a share of the URL's answers too.
    let derived = health::focused_checks(servers, impact, root);
    let mut checks = s.health.clone();
    for c in &mut checks {
        let same: Vec<&health::Check> = (derived.checks.iter())
            .filter(|d| d.connect == c.connect && d.host.eq_ignore_ascii_case(&c.host))
            .collect();
        // The location the URL's path falls in, as nginx picks a prefix (the longest), where
        // a derived check stands for one: its pass, or none for a static one.
        let path = c.path.split('?').next().unwrap_or("");
        let prefix = |d: &&health::Check| {
            let rest = d.what.strip_prefix("location ")?;
            let p = rest.strip_prefix("^~ ").unwrap_or(rest);
            match p.strip_prefix("= ") {
                Some(exact) => (exact == path).then_some(usize::MAX),
                None if !p.starts_with('~') && !p.starts_with('@') && path.starts_with(p) => {
                    Some(p.len())
                }
                None => None,
            }
        };
        let located = same
            .iter()
            .filter_map(|d| Some((prefix(d)?, *d)))
            .max_by_key(|(n, _)| *n);
        c.samples_through = match located {
            Some((_, d)) => d.upstream.clone(),
            None => {
                let mut passes = same.iter().filter_map(|d| d.upstream.clone());
                let first = passes.next();
                first.filter(|f| passes.all(|p| p == *f))
            }
        };
    }
    Plan {
        checks,
        ..Plan::default()
    }
}

/// Last-good's checks the candidate no longer asks, added to `plan` (see
/// [`health::carried_checks`]); none where `--health` URLs replace the derived checks.
pub fn carry(
    s: &Settings,
    plan: &mut Plan,
    (old, new): (&[Server], &[Server]),
    impact: &Impact,
    root: &Path,
) {
    if s.health.is_empty() && !old.is_empty() {
        let carried = health::carried_checks((old, new), impact, &plan.checks, root);
        plan.checks.extend(carried);
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

/// The candidate's checks for the shadow: sent through it as soon as it serves, and the
/// ones that fail there asked of the running nginx (reading `running_logs`) once
/// [`Session::expect_down`] has said which peers the probe found down. `running`: the running
/// nginx's sockets, when `nginx -t` may still run, and its serving workers, whose lines in its
/// logs count (see `health::recent`).
///
/// `checks` are exactly the ones verification after the reload sends ([`candidate_checks`];
/// gRPC locations too: a plain GET nginx turns into gRPC is answered alike by both nginx
/// instances, and a failure the running nginx shares is not the change's), so the shadow
/// refuses what would otherwise be rolled back.
pub fn shadow_batch(
    s: &Settings,
    config: &Config,
    checks: Vec<health::Check>,
    running_logs: Vec<PathBuf>,
    running: Serving,
) -> Batch {
    Batch {
        checks,
        running_logs,
        opts: health_options(s, None),
        running,
        pools: crate::conf::pool_sizes(config),
        pool_limits: crate::conf::pool_limits(config),
        path_hashed: crate::conf::pools_hashed_on_path(config),
    }
}

/// What the shadow started beside `nginx -t` showed for the checks sent through it, into the
/// report; `None` when it is off. `true` when the shadow refuses the change: a check the
/// running nginx passes fails there. A shadow that did not start or cannot judge is noted
/// ("not verified in the shadow") and refuses nothing. The session stops the shadow on its
/// own thread once this has its result: the run does not wait for that. One the `impact`
/// has no use for (see `Impact::shadow_needed`) was dismissed when the impact was known, and
/// is reported `not_needed`.
pub fn through_shadow(
    s: &Settings,
    session: Option<&mut Session>,
    impact: &Impact,
    insp: &Inspection,
    report: &mut Report,
) -> Result<bool> {
    let Some(session) = session else {
        report.shadow = Some(ShadowReport::new(ShadowState::Off, None));
        return Ok(false);
    };
    if !impact.shadow_needed() {
        session.dismiss();
        let why = "no server is affected and nothing outside the servers changed".to_string();
        report.shadow = Some(ShadowReport::new(ShadowState::NotNeeded, Some(why)));
        return Ok(false);
    }
    let test_took = (report.steps.iter())
        .find(|st| st.name == "nginx -t")
        .map_or(Duration::ZERO, |st| st.elapsed);
    let within = (test_took * 2 + Duration::from_secs(5)).min(s.nginx_timeout);
    let (mut rep, began) = match session.seen(within) {
        Seen::NotStarted { why, began, took } => {
            let why = format!("the shadow nginx could not be started: {why}");
            report
                .notes
                .push(format!("not verified in the shadow: {why}"));
            report.step_from("shadow", true, began, took, Some("not started".into()));
            report.shadow = Some(ShadowReport::new(ShadowState::NotVerified, Some(why)));
            return Ok(false);
        }
        Seen::Ran { report, began } => (report, began),
    };
    if rep.ready.is_none() && crate::signals::interrupted() {
        return Err(Error::Interrupted);
    }
    if rep.ready.is_some() {
        // Only a request the change made worse is asked what it reads.
        for c in (rep.checks.iter_mut()).filter(|c| c.worse() && c.own_cause.is_none()) {
            // The backend's own answer: a status nginx logged no upstream error for, that it
            // did not give itself (`try_files ... =404`). And one the samples of a pool split
            // (some answers failed, others passed, every one sent the same values) is no
            // answer a value sent to the backend explains.
            let split = c
                .sampled
                .as_ref()
                .is_some_and(|s| s.shadow_failed < s.asked);
            let backend_answered = c.shadow.status.is_some()
                && c.upstream_errors.is_empty()
                && c.shadow.answer != crate::health::Answer::NotReached
                && !split;
            c.differs = shadow::differs(
                &insp.config,
                &insp.servers,
                &c.shadow.check,
                backend_answered,
            );
        }
        (rep.state, rep.reason) = shadow::judge(&rep.checks);
        if rep.state != ShadowState::Refused {
            if let Some(why) = silent_member(report.probe.as_ref(), &rep.checks) {
                (rep.state, rep.reason) = (ShadowState::Refused, Some(why));
            }
        }
        if rep.state != ShadowState::Refused {
            if let Some(why) = backup_only(report.probe.as_ref(), impact, &rep) {
                (rep.state, rep.reason) = (ShadowState::Refused, Some(why));
            }
        }
        report.warnings.extend(
            rep.checks
                .iter()
                .filter_map(shadow::ShadowCheck::intermittent),
        );
    }
    let detail = match rep.state {
        ShadowState::Verified => format!("{} checks", rep.checks.len()),
        ShadowState::Refused => "refused".into(),
        _ => "not verified".into(),
    };
    let ok = rep.state != ShadowState::Refused;
    report.step_from("shadow", ok, began, rep.elapsed, Some(detail));
    let refuses = rep.state == ShadowState::Refused;
    match (rep.state, &rep.reason) {
        (ShadowState::Refused, Some(why)) => {
            // The check that refuses, and its server: the one of that name listening where
            // the check went (two files may hold a server of the same name).
            let failed = (rep.checks.iter().find(|c| c.worse()))
                .or_else(|| rep.checks.iter().find(|c| c.failed()));
            let server = failed.and_then(|c| {
                let named = |sv: &&Server| sv.server_names.contains(&c.host);
                let connect = c.shadow.check.connect.to_string();
                let there = |sv: &&Server| sv.listens.iter().any(|l| l.addr.to_string() == connect);
                (insp.servers.iter().filter(named).find(there))
                    .or_else(|| insp.servers.iter().find(named))
            });
            report.problems.push(Problem {
                level: "error".into(),
                message: format!("{why}: the change is refused before the reload"),
                file: server.map(|sv| sv.file.to_path_buf()),
                line: server.map(|sv| sv.line),
                hint: Some(match failed {
                    Some(c) => {
                        let seen = "no client saw this: the request went to a throwaway nginx running the candidate on a loopback port";
                        match c.on_purpose() {
                            Some(how) => format!("{seen}; {how}"),
                            None => seen.into(),
                        }
                    }
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

/// Whether a listen of `servers` takes connections to `addr`, or to the unix socket `unix`:
/// the same address, a wildcard of its port, or a name of its port (resolved by nginx).
pub fn listened(servers: &[Server], addr: SocketAddr, unix: Option<&Path>) -> bool {
    let listens = servers
        .iter()
        .flat_map(|s| s.listens.iter().filter(|l| !l.udp));
    listens.into_iter().any(|l| match (&l.addr, unix) {
        (ListenAddr::Unix(path), Some(u)) => path == u,
        (_, Some(_)) | (ListenAddr::Unix(_), None) => false,
        (ListenAddr::Tcp(sa), None) => {
            *sa == addr || (sa.port() == addr.port() && sa.ip().is_unspecified())
        }
        (ListenAddr::Host { port, .. }, None) => *port == addr.port(),
    })
}

/// Refuse a `--health` URL no one can answer, before anything changes: neither the running
/// nginx (`held`, its listening sockets) nor the changed configuration (`servers`) listens on
/// its address, and a connection there is refused now. Every check it made would fail before
/// and after the change alike, so the change would go live with nothing verified and the run
/// would say a site is failing. A URL another program answers (a proxy in front of nginx) is
/// sent as given.
pub fn health_nobody_serves(s: &Settings, servers: &[Server], held: &Listeners) -> Result<()> {
    for check in &s.health {
        let addr = check.dial.unwrap_or(check.connect);
        let nginx = match &check.unix {
            Some(path) => held.accepts_unix(path),
            None => held.accepts(addr),
        };
        if nginx || listened(servers, addr, check.unix.as_deref()) {
            continue;
        }
        let refused = match &check.unix {
            Some(path) => std::os::unix::net::UnixStream::connect(path).err(),
            None => std::net::TcpStream::connect_timeout(&addr, s.probe_timeout).err(),
        };
        let refused = refused.filter(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            )
        });
        if let Some(e) = refused {
            return Err(Error::Usage(format!(
                "--health {}: nothing listens on {}: neither the running nginx nor the changed \
                 configuration listens there, and a connection is refused ({e}); nothing was \
                 changed. Give a URL on an address nginx listens on",
                health::redact(&check.url),
                check.via()
            )));
        }
    }
    Ok(())
}

/// The peers the probe found down without refusing the change (see
/// [`ProbeReport::expected_down`]) and the URIs `config`'s `mirror`s copy requests to: errors
/// logged for either reach no client, and are not the change's.
/// A pool member the change adds that accepts connections and never answers (the probe's
/// no-reply), behind a check the shadow found intermittent by timeouts: round robin sent the
/// requests asked again to its healthy siblings, so one failed answer looked like chance,
/// while nginx gives that member its share of every client's requests, and each waits its
/// read timeout. The reason that refuses the change, when one is.
fn silent_member(probe: Option<&ProbeReport>, checks: &[shadow::ShadowCheck]) -> Option<String> {
    let silent = (probe?.results.iter()).filter(|r| {
        r.status == probe::Status::NoReply && r.cause == Some(probe::standing::Cause::Change)
    });
    for r in silent {
        for pool in r.references.iter().filter_map(|x| x.upstream.as_deref()) {
            let timed_out = |c: &&shadow::ShadowCheck| {
                let first = c.shadow.intermittent()
                    && (c.shadow.first_failure.as_deref()).is_some_and(|f| f.contains("timed out"));
                (first || c.samples_timed_out.is_some())
                    && (c.shadow.check.upstream.as_deref()).is_some_and(|u| pass_names(u, pool))
            };
            if let Some(c) = checks.iter().find(timed_out) {
                let (none, of) = (c.samples_timed_out)
                    .unwrap_or((c.shadow.failures as usize, c.shadow.attempts as usize));
                return Some(format!(
                    "{}: GET {} through the shadow nginx: {none} of {of} answers got none in \
                     time, and {}, which this change adds to upstream {pool}, accepts \
                     connections and answered neither the probe nor those requests (the \
                     probe: no reply): nginx gives it its share of the requests, and those \
                     clients wait for it, up to its read timeout (60s by default)",
                    c.server(),
                    c.url,
                    r.target
                ));
            }
        }
    }
    None
}

/// A pool the change touched whose every primary server the shadow took out while its
/// checks ran (their answers failed as `proxy_next_upstream http_502 ...` counts failures,
/// which nginx logs no error for), so its `backup` servers answered: a blue/green switch to a
/// release that answers 502 showed every client the sorry page of the backup, and every
/// check passed. The reason that refuses the change, when one is.
fn backup_only(
    probe: Option<&ProbeReport>,
    impact: &crate::impact::Impact,
    rep: &shadow::ShadowReport,
) -> Option<String> {
    use std::collections::BTreeMap;
    if rep.disabled_peers.is_empty() {
        return None;
    }
    let mut pools: BTreeMap<&str, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for r in &probe?.results {
        for x in r.references.iter() {
            let Some(pool) = x.upstream.as_deref() else {
                continue;
            };
            if x.directive != crate::conf::targets::Name::SERVER || x.down {
                continue;
            }
            let (primaries, backups) = pools.entry(pool).or_default();
            let list = if x.backup { backups } else { primaries };
            let target = r.target.to_string();
            if !list.contains(&target) {
                list.push(target);
            }
        }
    }
    for (pool, (primaries, backups)) in pools {
        let all_out =
            !primaries.is_empty() && (primaries.iter()).all(|p| rep.disabled_peers.contains(p));
        let touched = (impact.affected.iter()).any(|a| {
            a.reasons
                .iter()
                .any(|r| r.what == format!("upstream {pool}"))
        });
        if backups.is_empty() || !all_out || !touched {
            continue;
        }
        let through = |c: &&shadow::ShadowCheck| {
            !c.failed() && (c.shadow.check.upstream.as_deref()).is_some_and(|u| pass_names(u, pool))
        };
        if let Some(c) = rep.checks.iter().find(through) {
            return Some(format!(
                "{}: GET {} through the shadow nginx answered {}, from upstream {pool}'s backup \
                 ({}): nginx took every primary server of it out ({}: \"upstream server \
                 temporarily disabled\", their answers failed as proxy_next_upstream counts \
                 failures), so the change sends all of {pool}'s clients to its backup",
                c.server(),
                c.url,
                c.shadow.reply(),
                backups.join(", "),
                primaries.join(", ")
            ));
        }
    }
    None
}

/// Whether a `*_pass` target (`http://pool_b`, `http://pool_b/api/`) names upstream `pool`.
fn pass_names(target: &str, pool: &str) -> bool {
    let rest = target.split_once("://").map_or(target, |(_, r)| r);
    rest.split('/').next() == Some(pool)
}

pub fn expected_down(report: &Report, config: &Config) -> Vec<String> {
    let mut out = (report.probe.as_ref()).map_or_else(Vec::new, ProbeReport::expected_down);
    out.extend(
        crate::conf::mirror_uris(config)
            .iter()
            .map(|u| health::mirror_mark(u)),
    );
    out
}
