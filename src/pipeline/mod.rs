//! Step order and failure policy: the only place that decides what a result means. Other
//! modules return data; this one orders the steps, turns results into an outcome and an exit
//! status, and hands the report to `output`.
//!
//! `env` finds the nginx to work on, `inspect` runs the read-only checks, `transaction` does
//! the reload and the rollback, `commands` holds the smaller commands.

pub mod alongside;
pub mod commands;
pub mod edit;
pub mod env;
pub mod inspect;
pub mod transaction;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::conf::Config;
use crate::diff::{self, ConfigDiff, FileSet};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::health::samples::AroundReload;
use crate::impact;
use crate::output::Printer;
use crate::probe::netstat;
use crate::probe::routes::Routes;
use crate::probe::standing;
use crate::reload;
use crate::report::{Outcome, Report};
use crate::settings::Settings;
use crate::signals;
use crate::store::{
    JournalRecord, Outcome as SnapOutcome, Phase as JournalPhase, Snapshot, SnapshotMeta, Store,
};

use env::Env;
use inspect::{Checks, Early, Inspection};
use transaction::{Prepared, Running, Transaction, Watch};

pub use commands::*;
pub use edit::edit;

/// Snapshot metadata for this run.
pub fn meta(outcome: SnapOutcome, changed_files: Vec<String>) -> SnapshotMeta {
    SnapshotMeta {
        outcome,
        user: crate::store::current_user(),
        command: crate::store::command_line(),
        note: None,
        changed_files,
    }
}

/// The master and its workers: the listening sockets nginx itself holds.
pub fn own_pids(master: &reload::Master) -> Vec<i32> {
    let mut pids = vec![master.pid];
    pids.extend(reload::workers(master).iter().map(|w| w.pid));
    pids
}

/// The master parses the whole configuration again before new workers exist: allow a few
/// times what `nginx -t` took, bounded by the configured reload timeout.
fn reload_deadline(s: &Settings, report: &Report) -> std::time::Duration {
    let test = report
        .steps
        .iter()
        .find(|st| st.name == "nginx -t")
        .map(|st| st.elapsed)
        .unwrap_or_default();
    (test * 4 + std::time::Duration::from_secs(5)).min(s.reload_timeout)
}

/// Open the state directory and take the lock; refuse while an interrupted run is unfinished.
pub fn open_locked(s: &Settings) -> Result<(Store, crate::store::LockGuard)> {
    let store = Store::open(&s.state_dir)?;
    let lock = store.lock(s.wait, None)?;
    if let Some(j) = store.journal()? {
        return Err(Error::Usage(format!(
            "an earlier run (pid {}, started {}) was interrupted during {}; run `safe-reload \
             status` to see it and `safe-reload recover` to finish it",
            j.pid,
            j.started,
            j.phase.name()
        )));
    }
    Ok((store, lock))
}

/// The candidate against last-good, if there is one.
pub fn diff_against(
    store: &Store,
    last_good: Option<&Snapshot>,
    config: &Config,
) -> Result<Option<ConfigDiff>> {
    let Some(good) = last_good else {
        return Ok(None);
    };
    diff_files(store, good, &config.conf_prefix, &config.files).map(Some)
}

/// Last-good's tree reduced: to what impact analysis compares, and (on a thread of its own,
/// since only a failing probe needs them and the baseline waits for the prints) to the
/// routes a failing probe is judged by.
pub(crate) struct OldTree {
    pub prints: impact::Prints,
    pub routes: PendingRoutes,
    /// Its servers: the checks it derived, for those the candidate no longer asks (see
    /// [`health::carried_checks`]).
    pub servers: std::sync::Arc<Vec<crate::conf::Server>>,
}

/// Last-good's routes being worked out.
pub(crate) struct PendingRoutes(std::thread::JoinHandle<Routes>);

impl PendingRoutes {
    /// Wait for them; `None` if their thread failed (every failure is then the change's).
    pub fn join(self) -> Option<Routes> {
        self.0.join().ok()
    }
}

impl OldTree {
    fn of(tree: Config) -> OldTree {
        let servers = std::sync::Arc::new(crate::conf::servers::extract(&tree));
        let prints = impact::prints(&tree, &servers);
        let kept = std::sync::Arc::clone(&servers);
        let routes = PendingRoutes(std::thread::spawn(move || {
            let targets = crate::conf::targets::extract(&tree);
            Routes::of(&tree, &servers, &targets)
        }));
        OldTree {
            prints,
            routes,
            servers: kept,
        }
    }
}

/// The candidate's files against last-good, and last-good's tree reduced (see [`OldTree`]):
/// parsed from the snapshot's objects (never from the files on disk, which hold the
/// candidate), and dropped as soon as it is reduced. `None` when the snapshot does not load as
/// a configuration (the run then counts every server as affected).
pub(crate) fn diff_and_prints(
    store: &Store,
    good: &Snapshot,
    main: &Path,
    root: &Path,
    files: &[crate::conf::ConfFile],
) -> Result<(ConfigDiff, Option<OldTree>)> {
    let scanned = crate::store::scan(root, files)?;
    let old = FileSet::from_snapshot_against(store, good, &scanned)?;
    let diff = diff::diff(&old, &FileSet::from_scanned(scanned));
    let recorded = diff::Recorded::new(root, &old);
    let tree = crate::conf::load_from(main, &crate::conf::LoadOptions::default(), &recorded).ok();
    Ok((diff, tree.map(OldTree::of)))
}

/// Judge the probe results against the change (see `probe::standing`): a backend that was
/// down before it, or one of the candidate's own listens, refuses nothing. `impact` is `None`
/// when it could not be worked out, `old` without a last-good: every failure is then the
/// change's. The probe step says what is left failing.
pub(crate) fn judge_probes(
    report: &mut Report,
    insp: &mut Inspection,
    impact: Option<&impact::Impact>,
    old: Option<&Routes>,
) {
    let Some(probe) = insp.probe.as_mut() else {
        return;
    };
    // A member that never answers is a warning, whose cause is still said (see
    // `standing::apply`).
    let silent = (probe.results.iter()).any(|r| r.status == crate::probe::Status::NoReply);
    if probe.is_ok() && !silent {
        return;
    }
    let new = Routes::of(&insp.config, &insp.servers, &insp.targets);
    let nothing = impact::Impact::default();
    standing::apply(&mut probe.results, impact.unwrap_or(&nothing), &new, old);
    let n = probe.failures().count();
    if let Some(step) = report.steps.iter_mut().find(|st| st.name == "probe") {
        step.ok = n == 0;
        step.detail = Some(format!("{} targets, {n} failing", probe.results.len()));
    }
}

/// The candidate's files against a snapshot; only changed files' objects are read.
pub(crate) fn diff_files(
    store: &Store,
    good: &Snapshot,
    root: &std::path::Path,
    files: &[crate::conf::ConfFile],
) -> Result<ConfigDiff> {
    let scanned = crate::store::scan(root, files)?;
    let old = FileSet::from_snapshot_against(store, good, &scanned)?;
    Ok(diff::diff(&old, &FileSet::from_scanned(scanned)))
}

/// `safe-reload` / `safe-reload reload`: the whole pipeline.
pub fn reload(s: &Settings, p: &Printer, report: &mut Report) -> Result<Exit> {
    let (store, _lock) = open_locked(s)?;
    let result = reload_locked(s, p, report, &store, Journal::Begin);
    if result.is_err() {
        // A run that failed before it signalled nginx (a state directory full at its
        // journal's first write) leaves no journal of its own: there is nothing to recover,
        // and one left behind would stop every later run until `recover` said so.
        let ours = |j: &crate::store::JournalRecord| {
            j.pid == std::process::id() && !j.phase.nginx_touched()
        };
        if store.journal().ok().flatten().is_some_and(|j| ours(&j)) {
            let _ = store.journal_clear();
        }
    }
    result
}

/// Who owns the journal for a pipeline run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// A fresh run: it records its own intent before the candidate snapshot.
    Begin,
    /// A caller holding the lock already recorded the run (`recover`, `rollback ID`); its
    /// phase stands until nginx is signalled, so a kill before that is recovered as the
    /// caller's phase says, and a refusal leaves the record to the caller.
    Inherit,
    /// `edit` recorded the run (naming the file its edit went into) before writing the edit;
    /// the pipeline records the candidate and every phase as its own run does, but a refusal
    /// leaves the record to `edit`, which clears it once the file is put back.
    Edit,
}

/// The pipeline with the lock already held by the caller.
pub fn reload_locked(
    s: &Settings,
    p: &Printer,
    report: &mut Report,
    store: &Store,
    journal: Journal,
) -> Result<Exit> {
    let env = Env::discover(s)?;
    let config = match env.load() {
        Ok(c) => c,
        Err(e @ Error::Config { .. }) => return refuse_config(report, e),
        Err(e) => return Err(e),
    };
    report.config = Some(config.main.clone());
    let master = env.master(&config)?;
    if let Some(held) = (!s.health.is_empty()).then(|| netstat::held_by(&own_pids(&master))) {
        let servers = crate::conf::servers::extract(&config);
        held.map_or(Ok(()), |h| inspect::health_nobody_serves(s, &servers, &h))?;
    }
    // Only now that nginx is known to run: `nginx -t` creates a missing pid file.
    let early = Early::start(
        Some(&env.nginx),
        Checks {
            test: true,
            probe: !s.no_probe,
            preflight: true,
        },
    );
    // Stopped on its own thread once its checks are done, and reaped at the latest when this
    // function returns: the reload does not wait for it.
    let mut shadow = inspect::start_shadow(s, &env, &config, Some(master.pid));
    let own = own_pids(&master);
    let asks = !s.yes && p.interactive();
    // A run `recover` continues may have left nginx running its unverified candidate: that is
    // no baseline to judge the change by. (A fresh run has no journal record yet.)
    let running = match store.journal()? {
        Some(j) if j.phase.nginx_touched() => Running::Unverified,
        _ => Running::Baseline,
    };
    // The diff only reads (the store and the bytes already loaded): it runs while nginx -t does.
    // The diff's own handles on the file bytes go with its thread, not with this function.
    // So does reading last-good's tree for the impact analysis.
    let (root, files) = (config.conf_prefix.clone(), config.files.clone());
    let main = config.main.clone();
    let (insp, (good_and_diff, ahead)) = std::thread::scope(|scope| {
        let diffing = scope.spawn(move || -> Result<_> {
            let began = Instant::now();
            let good = store.last_good()?;
            let (diff, old_tree) = match &good {
                Some(g) => {
                    let (d, t) = diff_and_prints(store, g, &main, &root, &files)?;
                    (Some(d), t)
                }
                None => (None, None),
            };
            Ok((good, diff, old_tree, (began, began.elapsed())))
        });
        // As soon as both trees are reduced (last-good's on the diff thread, the candidate's
        // here), the impact says what to check, and the baseline starts while nginx -t and
        // the probes still run.
        let ahead = |parsed: inspect::Parsed| {
            let joined = diffing
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("the diff thread failed".into())));
            let (good, diff, old_tree, diffed) = match joined {
                Ok(j) => j,
                Err(e) => return (Err(e), None),
            };
            let loaded = old_tree.is_some();
            let (old_prints, old_routes, old_servers) = match old_tree {
                Some(t) => (Some(t.prints), Some(t.routes), t.servers),
                None => (None, None, Default::default()),
            };
            let began = Instant::now();
            let ahead = {
                let unchanged = diff.as_ref().is_some_and(|d| d.is_empty());
                // Files equal to last-good that nginx has not loaded (a certificate renewed
                // in place) are reloaded: the shadow shows what they serve first.
                let stale = (unchanged && !s.force)
                    .then(|| not_what_nginx_loaded(store, &master, parsed.config))
                    .flatten();
                let reloads = !unchanged || s.force || stale.is_some();
                let mut impact = impact_of(old_prints.as_ref(), parsed.prints, unchanged);
                if stale.is_some() {
                    mark_renewed(&mut impact, &master, parsed.config, parsed.servers);
                }
                // Last-good's tree is not needed past the impact.
                drop(old_prints);
                let root = &parsed.config.conf_prefix;
                let mut plan = inspect::candidate_checks(s, parsed.servers, &impact, root);
                inspect::carry(s, &mut plan, (&old_servers, parsed.servers), &impact, root);
                drop(old_servers);
                // Nothing to compare with, or nothing to reload: no baseline to take. An
                // operator may take minutes to answer the prompt: the baseline is then taken
                // after the answer, right before the signal.
                let wanted = running == Running::Baseline && reloads && !asks;
                // Read before the baseline starts, from nginx's own processes only: `nginx -t`
                // meanwhile binds the candidate's free addresses. With no check to send, there
                // is nothing to read them for.
                let shadows = shadow.is_some() && impact.shadow_needed();
                let sends = !plan.checks.is_empty() && (wanted || shadows);
                let running = crate::health::recent::Serving {
                    held: sends.then(|| netstat::held_by(&own)).flatten(),
                    workers: reload::serving(&master),
                };
                // The shadow's checks go now, while nginx -t runs; a change that will not be
                // reloaded sends none, and one the shadow can show nothing of stops it at once.
                match &shadow {
                    Some(shadow) if !impact.shadow_needed() => shadow.dismiss(),
                    Some(shadow) if reloads => shadow.send(inspect::shadow_batch(
                        s,
                        parsed.config,
                        plan.checks.clone(),
                        env.error_logs(parsed.config),
                        running.clone(),
                    )),
                    _ => {}
                }
                let baseline = wanted.then(|| {
                    alongside::Pending::start(
                        plan.checks.clone(),
                        env.error_logs(parsed.config),
                        inspect::health_options(s, None),
                        running,
                    )
                });
                alongside::Ahead {
                    impact,
                    plan,
                    baseline,
                    stale,
                    took: (began, began.elapsed()),
                }
            };
            (Ok((good, diff, old_routes, diffed, loaded)), Some(ahead))
        };
        inspect::inspect_with(Some(&env.info), s, config, &own, early, report, ahead)
    })?;
    let mut insp = insp;
    let (good_and_diff, old_routes) = match good_and_diff {
        Ok((good, diff, routes, diffed, loaded)) => (Ok((good, diff, diffed, loaded)), routes),
        Err(e) => (Err(e), None),
    };
    let old_routes = old_routes.and_then(PendingRoutes::join);
    let impact = ahead.as_ref().map(|a| &a.impact);
    judge_probes(report, &mut insp, impact, old_routes.as_ref());
    drop(old_routes);
    let refuses = record_inspection(report, &mut insp);
    // nginx may run these very files already, loaded by hand: said whatever the verdict, so a
    // refusal does not read as if the site were still on last-good.
    let differs = matches!(&good_and_diff, Ok((Some(_), Some(diff), ..)) if !diff.is_empty());
    let outside_warned = differs
        && loaded_outside(store, &master)
            .inspect(|why| report.warnings.push(outside_warning(why)))
            .is_some();
    if let Some(shadow) = &shadow {
        shadow.expect_down(inspect::expected_down(report, &insp.config));
    }
    if signals::interrupted() {
        // Ctrl-C during the checks: nothing changed, whatever the checks found.
        return Err(Error::Interrupted);
    }
    if refuses {
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    let (last_good, diff, (diffed, diff_took), loaded) = good_and_diff?;
    let Some(ahead) = ahead else {
        return Err(Error::Internal("the impact analysis did not run".into()));
    };
    // Both ran beside nginx -t; what the impact analysis costs is the two together.
    let detail = match (&last_good, loaded) {
        (None, _) => "no last-good to compare with",
        (Some(_), false) => "last-good's tree does not load",
        (Some(_), true) => "the files, and last-good's tree parsed for the impact",
    };
    report.step_from("diff", true, diffed, diff_took, Some(detail.into()));
    let (began, took) = ahead.took;
    let detail = format!(
        "{} of {} servers affected, {} checks",
        ahead.impact.affected.len(),
        ahead.impact.total,
        ahead.plan.checks.len()
    );
    report.step_from("impact", true, began, took, Some(detail));
    if refuse_obstacles(report, &insp.config.conf_prefix, diff.as_ref()) {
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    let unchanged = diff.as_ref().is_some_and(|d| d.is_empty());
    report.diff = diff;
    let alongside::Ahead {
        impact,
        plan,
        baseline,
        stale,
        ..
    } = ahead;
    record_impact(report, last_good.is_some(), &impact);
    if refuse_takeovers(report, &impact, &insp.config.conf_prefix) {
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    if unchanged && !s.force && stale.is_none() {
        report.notes.push("nothing changed since the last good configuration; not reloading (--force reloads anyway)".into());
        return Ok(report.finish(Outcome::Unchanged, Exit::Ok));
    }
    if let Some(why) = stale {
        report.notes.push(format!(
            "the files equal the last good configuration, but {why}: they are checked as a \
             change and reloaded if they pass"
        ));
    }
    let shadow_refuses = inspect::through_shadow(s, shadow.as_mut(), &impact, &insp, report)?;
    if signals::interrupted() {
        return Err(Error::Interrupted);
    }
    if shadow_refuses {
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    if last_good.is_none() {
        report.warnings.push(
            "no known-good snapshot yet: if this reload fails there is nothing to roll back to \
             (run `safe-reload init` on a working configuration first)"
                .into(),
        );
    }
    crate::output::render_preview(p, report);
    if asks && !p.confirm("Reload nginx with this configuration?") {
        report.notes.push("cancelled: nothing changed".into());
        return Ok(report.finish(Outcome::Cancelled, Exit::Refused));
    }
    if signals::interrupted() {
        return Err(Error::Interrupted);
    }
    let expected_down = inspect::expected_down(report, &insp.config);
    let baseline = baseline.and_then(alongside::Pending::join).map(|taken| {
        report.step_from("baseline", true, taken.began, taken.elapsed, None);
        taken.finish(&expected_down)
    });
    // Read after the baseline: a reload outside safe-reload that landed before it finished
    // made it answer for whatever nginx loaded then, perhaps these very files.
    let outside_loaded = outside_warned
        || (last_good.is_some() && !unchanged)
            .then(|| loaded_outside(store, &master))
            .flatten()
            .inspect(|why| report.warnings.push(outside_warning(why)))
            .is_some();
    let baseline = baseline.filter(|_| !outside_loaded);
    // From here on the run needs the files (for the snapshot), the servers (for health
    // checks) and what `Watch` takes; the directive tree and the targets are dropped.
    let watch = Watch::of(&env, &insp.config);
    // Where the shadow asked no pool again (off, not started), or could not judge what it
    // asked (its checks read `$server_port`), verification does.
    let sampled = (report.shadow.as_ref())
        .is_some_and(|r| r.ready.is_some() && r.state == crate::shadow::ShadowState::Verified);
    let pools = (!sampled)
        .then(|| AroundReload::of(&insp.config, impact.upstreams_changed(), watch.workers))
        .flatten();
    let candidate_paths: Vec<PathBuf> = insp.config.paths().map(Path::to_path_buf).collect();
    let Inspection {
        config:
            Config {
                conf_prefix,
                files,
                tree,
                ..
            },
        servers,
        targets,
        ..
    } = insp;
    drop((tree, targets));
    let t = Instant::now();
    if journal == Journal::Begin {
        store.journal_begin(&JournalRecord::new(
            crate::store::command_line(),
            None,
            last_good.as_ref().map(|g| g.id.clone()),
        ))?;
    }
    let candidate = store
        .snapshot(
            &conf_prefix,
            &files,
            meta(SnapOutcome::Pending, changed_files(report)),
        )
        .inspect_err(|_| {
            // Nothing changed and nginx was not touched: no run to recover (best effort; a
            // removal works on a full disk).
            if journal == Journal::Begin {
                let _ = store.journal_clear();
            }
        })?;
    drop(files);
    if journal != Journal::Inherit {
        store.journal_update(|r| {
            r.candidate = Some(candidate.id.clone());
            r.phase = JournalPhase::Snapshotted;
        })?;
    }
    report.step("snapshot", true, t.elapsed(), Some(candidate.id.clone()));
    report.snapshot = Some(candidate.id.clone());
    let tx = Transaction {
        s,
        env: &env,
        store,
        master,
        candidate_paths,
        candidate,
        last_good,
        servers,
        impact,
        watch,
        reload_deadline: reload_deadline(s, report),
        journal,
        // What nginx loaded outside safe-reload answers for nothing: no baseline is taken
        // right before the signal either.
        running: if outside_loaded {
            Running::Unverified
        } else {
            running
        },
        expected_down,
        prepared: Some(Prepared { plan, baseline }),
        pools,
    };
    tx.run(report)
}

/// A file a rollback would have to put back but could not replace (hard link, mount point,
/// read-only directory) refuses the run now, while nothing has changed; returns whether one
/// did. Without a last-good there is no rollback, so nothing to check.
/// nginx loaded its configuration after last-good was recorded, or last loaded again by a
/// rollback: someone ran `nginx -s reload` or restarted it outside safe-reload, perhaps with
/// other files in place then, so what it serves says nothing about last-good. Why, or `None`.
pub(crate) fn loaded_outside(store: &Store, master: &reload::Master) -> Option<String> {
    outside_since(store, reload::loaded_at(master)?)
}

/// [`loaded_outside`] for a configuration nginx loaded at `loaded`.
fn outside_since(store: &Store, loaded: std::time::SystemTime) -> Option<String> {
    let at = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    // A reload of ours starts its workers before the verification that records last-good.
    let since = store.good_since()?;
    (loaded > since).then(|| {
        format!(
            "nginx loaded its configuration at {}, after the last good configuration was \
             recorded ({}): it was reloaded or restarted outside safe-reload, and what it runs \
             is not known",
            at(loaded),
            at(since)
        )
    })
}

fn outside_warning(why: &str) -> String {
    format!(
        "{why}: what it answers now is no baseline for the last good configuration, so any \
         check that fails after this reload is held against the change and rolls it back to \
         last-good (`safe-reload rollback` puts last-good back now)"
    )
}

/// Why the files on disk, though they equal last-good, may not be what nginx runs: nginx
/// loaded its configuration after last-good was recorded (someone ran `nginx -s reload` or
/// restarted it outside safe-reload, perhaps with other files in place then), or a file it
/// reads only when it loads one changed since (a certificate or key renewed in place: nginx
/// serves the old one until it reloads). `None` when neither: nothing to reload.
pub(crate) fn not_what_nginx_loaded(
    store: &Store,
    master: &reload::Master,
    config: &crate::conf::Config,
) -> Option<String> {
    let loaded = reload::loaded_at(master)?;
    if let Some(why) = outside_since(store, loaded) {
        return Some(why);
    }
    let at = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let changed = renewed_since(config, loaded).into_iter().next()?;
    Some(format!(
        "{} changed at {}, after nginx loaded its configuration ({}); nginx reads it only \
         when it loads one",
        changed.0.display(),
        at(changed.1),
        at(loaded)
    ))
}

/// The files nginx reads only when it loads a configuration (see
/// [`crate::conf::load_time_files`]) written since `loaded`, with when.
fn renewed_since(
    config: &crate::conf::Config,
    loaded: std::time::SystemTime,
) -> Vec<(PathBuf, std::time::SystemTime)> {
    (crate::conf::load_time_files(config).into_iter())
        .filter_map(|path| {
            // The change time, not the modification time: `cp -p` and `rsync -a` keep the
            // old mtime of a renewed certificate, and no copy keeps the ctime. Both the link
            // (certbot's `live/` re-pointed into `archive/`) and the file behind it count.
            let changed = |m: std::fs::Metadata| {
                use std::os::unix::fs::MetadataExt;
                let (s, ns) = (
                    u64::try_from(m.ctime()).ok()?,
                    u32::try_from(m.ctime_nsec()).ok()?,
                );
                Some(std::time::UNIX_EPOCH + std::time::Duration::new(s, ns))
            };
            let own = std::fs::symlink_metadata(&path).ok().and_then(changed);
            let behind = std::fs::metadata(&path).ok().and_then(changed);
            let written = own.max(behind)?;
            (written > loaded).then_some((path, written))
        })
        .collect()
}

/// The files renewed on disk since nginx loaded its configuration (see [`renewed_since`]),
/// as a reason of their own for each server that reads one: those servers are checked first,
/// over TLS first, where the whole unchanged configuration is verified (a renewal that wrote
/// another site's certificate shows at the site that reads it, not in a spread of all).
pub(crate) fn mark_renewed(
    impact: &mut impact::Impact,
    master: &reload::Master,
    config: &crate::conf::Config,
    servers: &[crate::conf::Server],
) {
    let Some(loaded) = reload::loaded_at(master) else {
        return;
    };
    let renewed: Vec<PathBuf> = (renewed_since(config, loaded).into_iter())
        .map(|(p, _)| p)
        .collect();
    if renewed.is_empty() {
        return;
    }
    let root = &config.conf_prefix;
    // The `ssl_*` file directives of a block that name a renewed file.
    let reading = |dirs: &[crate::conf::Directive]| -> Vec<impact::Reason> {
        (dirs.iter())
            .filter(|d| d.name.starts_with("ssl_") && renewed.contains(&root.join(d.arg0())))
            .map(|d| impact::Reason {
                what: format!(
                    "{} {} (renewed on disk since nginx loaded it)",
                    d.name,
                    d.arg0()
                ),
                file: d
                    .file
                    .strip_prefix(root)
                    .unwrap_or(&d.file)
                    .display()
                    .to_string(),
                line: d.line,
            })
            .collect()
    };
    let mut servers = servers.iter();
    for top in (config.tree.iter()).filter(|d| matches!(d.name.as_str(), "http" | "stream")) {
        let inherited = reading(top.children());
        let blocks = (top.children().iter()).filter(|d| d.name == "server" && d.block.is_some());
        for block in blocks {
            let Some(server) = servers.next() else {
                return;
            };
            let mut why = reading(block.children());
            if why.is_empty() {
                why = inherited.clone();
            }
            let id = impact::ServerId::of(server);
            if let Some(a) = impact.affected.iter_mut().find(|a| a.id == id) {
                a.reasons.splice(0..0, why);
            }
        }
    }
}

pub(crate) fn refuse_obstacles(
    report: &mut Report,
    root: &Path,
    diff: Option<&ConfigDiff>,
) -> bool {
    let Some(diff) = diff else {
        return false;
    };
    // A diff path is relative inside the root and absolute outside it: `join` keeps the latter.
    let touched: Vec<PathBuf> = diff.files.iter().map(|f| root.join(&f.path)).collect();
    let found = crate::store::obstacles(root, &touched);
    for o in &found {
        report.problems.push(crate::report::Problem {
            level: "error".into(),
            message: o.describe(),
            file: Some(o.path().to_path_buf()),
            line: None,
            hint: None,
        });
    }
    !found.is_empty()
}

fn changed_files(report: &Report) -> Vec<String> {
    report.diff.as_ref().map(|d| d.paths()).unwrap_or_default()
}

/// Which servers the candidate affects, recorded in the report (see [`impact_of`] and
/// [`record_impact`]).
pub(crate) fn impact_against(
    report: &mut Report,
    had_good: bool,
    old: Option<&impact::Prints>,
    new: &impact::Prints,
    unchanged: bool,
) -> impact::Impact {
    let impact = impact_of(old, new, unchanged);
    record_impact(report, had_good, &impact);
    impact
}

/// Which servers the candidate affects: against last-good's prints (`old`), else every
/// server. An unchanged configuration (reloaded with --force) is verified in full: nothing
/// differs, so no difference can say which servers to check.
pub(crate) fn impact_of(
    old: Option<&impact::Prints>,
    new: &impact::Prints,
    unchanged: bool,
) -> impact::Impact {
    match old {
        Some(_) if unchanged => impact::Impact::unchanged(new),
        Some(old) => impact::between(old, new),
        None => impact::Impact::everything(new),
    }
}

/// A change that takes a `server_name` from the server that answered it (see
/// [`impact::Takeover`]) into the report as a problem at the taking server: whether there is
/// one, which refuses the change. nginx loads it, warning, and serves that name's clients
/// from another server's backend.
pub(crate) fn refuse_takeovers(report: &mut Report, impact: &impact::Impact, root: &Path) -> bool {
    // Every server of its addresses gone at once, nothing listening there any more: an
    // include that now matches nothing (`sites-enabled/*.cnf`), not a site retired.
    if let Some(gone) = impact.emptied() {
        let first = &impact.removed[0];
        report.problems.push(crate::report::Problem {
            level: "config".into(),
            message: format!(
                "this change removes all {} servers of {}, and no server listens there any \
                 more ({} at {}:{} among them): every client's connection would be refused",
                impact.removed.len(),
                gone.join(", "),
                first.label,
                first.file,
                first.line
            ),
            file: None,
            line: None,
            hint: Some(
                "an include that no longer matches its files? (`safe-reload diff` shows the \
                 line); to retire them on purpose, remove them over more than one change"
                    .into(),
            ),
        });
        return true;
    }
    for t in &impact.takeovers {
        report.problems.push(crate::report::Problem {
            level: "config".into(),
            message: t.to_string(),
            file: Some(root.join(&t.to_file)),
            line: Some(t.to_line),
            hint: Some(match &t.by_order {
                None => format!(
                    "remove {} from the server that should not answer it",
                    t.name
                ),
                Some(_) => "narrow the name of the server that should not answer it (regexes \
                            are tried in the order nginx reads the files: a renamed site file \
                            moves its place)"
                    .into(),
            }),
        });
    }
    let mut typos = false;
    for d in &impact.names_dropped {
        let (Some(message), Some((typo, at))) = (d.typo_problem(), &d.typo) else {
            continue;
        };
        let (file, line) = at.rsplit_once(':').unwrap_or((at, "0"));
        report.problems.push(crate::report::Problem {
            level: "config".into(),
            message,
            file: Some(root.join(file)),
            line: line.parse().ok(),
            hint: Some(format!(
                "write {} back; to rename it on purpose, add {typo} beside it in one change \
                 and remove {} in the next",
                d.name, d.name
            )),
        });
        typos = true;
    }
    for z in &impact.zones_rekeyed {
        report.problems.push(crate::report::Problem {
            level: "config".into(),
            message: z.message(),
            file: Some(root.join(&z.file)),
            line: Some(z.line),
            hint: Some(format!(
                "give the zone another name (or size) along with the new {}, or restart nginx \
                 instead of reloading it: a restart starts with new zones",
                match z.directive.ends_with("_cache_path") {
                    true => "path",
                    false => "key",
                }
            )),
        });
    }
    !impact.takeovers.is_empty() || typos || !impact.zones_rekeyed.is_empty()
}

/// The impact into the report, with a warning when a last-good exists (`had_good`) but does
/// not load.
pub(crate) fn record_impact(report: &mut Report, had_good: bool, impact: &impact::Impact) {
    if had_good && !impact.baseline {
        report.warnings.push(
            "the last-good snapshot does not load as a configuration: every server counts as \
             affected"
                .into(),
        );
    }
    for d in impact.names_dropped.iter().filter(|d| d.typo.is_none()) {
        report.warnings.push(d.to_string());
    }
    // A file that sorts first, or one renamed, moves the default server without a word of
    // `default_server`: every client by IP or with an unknown Host gets another site.
    for c in &impact.default_changes {
        report.warnings.push(format!(
            "{c}: requests by IP, with no Host, or with a Host no server_name names now get \
             {}; if that is not meant, mark the site that is with `listen {} default_server`",
            c.to.split(" (").next().unwrap_or(&c.to),
            c.listen
        ));
    }
    report
        .warnings
        .extend(impact.listens_dropped.iter().cloned());
    if let Some(line) = report.diff.as_ref().and_then(php_value_changed) {
        report.warnings.push(format!(
            "this change edits a `fastcgi_param` php-fpm keeps ({}): a php-fpm worker that gets \
             PHP_VALUE or PHP_ADMIN_VALUE keeps it for every later request, whoever sends it, so \
             the checks' requests (the shadow nginx's too) leave the new value in the workers \
             that answer them, and neither a refusal nor a rollback of nginx takes it out: if \
             this change does not stay, restart php-fpm",
            line.trim()
        ));
    }
    for c in &impact.socket_changes {
        if c.what.iter().any(|w| w == "now proxy_protocol") {
            report.warnings.push(format!(
                "listen {} now expects the PROXY protocol for every server on it (one \
                 server's listen says proxy_protocol, and nginx applies it to the address): \
                 clients that connect directly, not through a load balancer that sends it, \
                 get no answer",
                c.listen
            ));
        }
        if c.what.iter().any(|w| w == "no longer proxy_protocol") {
            report.warnings.push(format!(
                "listen {} no longer expects the PROXY protocol: a load balancer in front that \
                 still sends it gets HTTP 400 (or, over TLS, no handshake) for every client; \
                 the checks connect directly, as the new configuration expects, so only \
                 direct clients were verified",
                c.listen
            ));
        }
    }
    report.impact = Some(impact.clone());
}

/// The first line the diff adds or removes that sets `PHP_VALUE` or `PHP_ADMIN_VALUE` with a
/// `fastcgi_param`, without its `+` or `-`.
fn php_value_changed(diff: &ConfigDiff) -> Option<String> {
    let sticky = |l: &str| {
        let l = l.to_ascii_lowercase();
        l.contains("fastcgi_param") && (l.contains("php_value") || l.contains("php_admin_value"))
    };
    (diff.files.iter())
        .filter_map(|f| f.unified.as_deref())
        .flat_map(str::lines)
        .filter(|l| !l.starts_with("+++") && !l.starts_with("---"))
        .filter_map(|l| l.strip_prefix('+').or_else(|| l.strip_prefix('-')))
        .find(|l| sticky(l))
        .map(str::to_string)
}

/// A configuration that does not even load: refused, with file and line.
pub fn refuse_config(report: &mut Report, e: Error) -> Result<Exit> {
    match crate::report::Problem::from_config_error(&e, "emerg") {
        Some(problem) => {
            report.problems.push(problem);
            Ok(report.finish(Outcome::Refused, Exit::Refused))
        }
        None => Err(e),
    }
}

/// Copy what the read-only checks found into the report.
/// The results move into the report (the run needs only the configuration and servers
/// afterwards); returns whether they refuse the candidate.
pub fn record_inspection(report: &mut Report, insp: &mut Inspection) -> bool {
    let refuses = insp.refuses();
    report.config = Some(insp.config.main.clone());
    report.problems.extend(insp.problems());
    report.test = insp.test.take();
    report.probe = insp.probe.take();
    report.conflicts = std::mem::take(&mut insp.conflicts);
    refuses
}
