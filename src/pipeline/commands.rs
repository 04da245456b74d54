//! The commands around the reload: read-only ones (`targets`, `probe`, `check`, `diff`,
//! `history`, `status`) and the ones that reuse the transaction (`init`, `rollback`,
//! `recover`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::conf::{self, LoadOptions};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::health::recent::Serving;
use crate::pipeline::alongside;
use crate::pipeline::env::{self, Env};
use crate::pipeline::inspect::{self, Checks, Early};
use crate::pipeline::transaction::{Running, Transaction, Watch};
use crate::pipeline::{
    diff_against, meta, open_locked, own_pids, record_inspection, refuse_config, reload_locked,
    Journal,
};
use crate::report::{Outcome, Problem, Report, StatusReport, KILLED_BEFORE_LOAD, KILLED_UNJUDGED};
use crate::settings::Settings;
use crate::signals;
use crate::store::{JournalRecord, Outcome as SnapOutcome, Phase as JournalPhase, Snapshot, Store};
use crate::verdict::Baseline;

/// `targets`: every upstream target with file:line. No nginx, no network.
pub fn targets(s: &Settings, report: &mut Report) -> Result<Exit> {
    let config = conf::load(&env::conf_path(s)?, &LoadOptions::default())?;
    let found = conf::targets::extract(&config);
    report.config = Some(config.main.clone());
    // Freeing a large tree (150,000 directives at 10,000 servers) takes as long as writing
    // a good part of the report: it is done beside the writing, not before it (or here, if
    // no thread can be had).
    let _ = std::thread::Builder::new().spawn(move || drop(config));
    report.problems = found.findings.iter().map(Problem::from).collect();
    report.targets = Some(found.targets);
    Ok(report.finish(Outcome::Ok, Exit::Ok))
}

/// `probe`: the target table with probe results and hints; 1 when any target fails.
pub fn probe(s: &Settings, report: &mut Report) -> Result<Exit> {
    let config = match conf::load(&env::conf_path(s)?, &LoadOptions::default()) {
        Ok(c) => c,
        Err(e @ Error::Config { .. }) => return refuse_config(report, e),
        Err(e) => return Err(e),
    };
    let checks = Checks {
        test: false,
        probe: true,
        preflight: false,
    };
    // A running master that is not root runs its workers as itself: that is whose permission
    // a unix socket is judged by (found only when nginx and its pid file are).
    let master = Env::discover(s)
        .ok()
        .and_then(|env| env.master(&config).ok());
    let own: Vec<i32> = master.iter().map(|m| m.pid).collect();
    let early = Early::start(None, checks);
    let mut insp = inspect::inspect(None, s, config, &own, early, report)?;
    let refuses = record_inspection(report, &mut insp);
    if signals::interrupted() {
        // Ctrl-C during the checks: nothing changed, whatever the checks found.
        return Err(Error::Interrupted);
    }
    if refuses {
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    Ok(report.finish(Outcome::Ok, Exit::Ok))
}

/// `check`: parse, nginx -t, probes, preflight, diff; never reloads. With `untrusted`,
/// code-loading directives and includes outside the tree are refused before nginx runs,
/// nginx -t runs on a throwaway copy (see `sandbox`), and there is no listen preflight.
pub fn check(s: &Settings, untrusted: bool, report: &mut Report) -> Result<Exit> {
    let confined = if untrusted {
        match untrusted_policy(s, report)? {
            Ok(confined) => Some(confined),
            Err(exit) => return Ok(exit),
        }
    } else {
        None
    };
    // Every refusal of untrusted configuration comes before any nginx command runs.
    let sandbox = match &confined {
        Some((config, root)) => match crate::sandbox::Sandbox::prepare(config, root) {
            Ok(sb) => Some(sb),
            Err(e @ Error::Config { .. }) => return refuse_config(report, e),
            Err(e) => return Err(e),
        },
        None => None,
    };
    let env = Env::discover(s)?;
    // Who listens where on the machine that checks untrusted configuration (a developer's
    // workstation, a CI runner) says nothing about the machine it is for.
    let checks = Checks {
        test: confined.is_none(),
        probe: !s.no_probe,
        preflight: confined.is_none(),
    };
    if confined.is_some() {
        report.notes.push(
            "untrusted: the listens were not checked against what listens on this machine".into(),
        );
    }
    let config = match &confined {
        Some((config, _)) => config.clone(),
        None => match env.load() {
            Ok(c) => c,
            Err(e @ Error::Config { .. }) => return refuse_config(report, e),
            Err(e) => return Err(e),
        },
    };
    // An untrusted configuration's pid file is not read: it may name any file.
    let master = match confined {
        Some(_) => None,
        None => env.master(&config).ok(),
    };
    let own = master.as_ref().map(own_pids).unwrap_or_default();
    let early = Early::start(Some(&env.nginx), checks);
    // Never for untrusted configuration: running it is what `--untrusted` refuses.
    let mut shadow = confined
        .is_none()
        .then(|| inspect::start_shadow(s, &env, &config, master.as_ref().map(|m| m.pid)))
        .flatten();
    let mut insp = inspect::inspect(Some(&env.info), s, config, &own, early, report)?;
    if let Some(sandbox) = &sandbox {
        let t = Instant::now();
        let outcome = sandbox.test(
            &env.nginx.binary,
            &env.info.configure_args,
            env.nginx.timeout,
        )?;
        report.step(
            "nginx -t",
            outcome.passed,
            t.elapsed(),
            Some("throwaway prefix".into()),
        );
        insp.test = Some(outcome);
    }
    // The diff against last-good, and last-good's tree for the impact analysis and for
    // judging the probes against the change.
    let mut old = None;
    if s.state_dir.exists() {
        if let Ok(store) = Store::open(&s.state_dir) {
            if let Some(good) = store.last_good()? {
                let c = &insp.config;
                let (diff, tree) = crate::pipeline::diff_and_prints(
                    &store,
                    &good,
                    &c.main,
                    &c.conf_prefix,
                    &c.files,
                )?;
                old = Some(tree);
                report.diff = Some(diff);
            }
        }
    }
    let unchanged = report.diff.as_ref().is_some_and(|d| d.is_empty());
    let (old_prints, old_routes, old_servers) = match old.flatten() {
        Some(t) => (Some(t.prints), Some(t.routes), t.servers),
        None => (None, None, Default::default()),
    };
    let impact = crate::pipeline::impact_against(
        report,
        report.diff.is_some(),
        old_prints.as_ref(),
        &insp.prints,
        unchanged,
    );
    drop(old_prints);
    let old_routes = old_routes.and_then(crate::pipeline::PendingRoutes::join);
    crate::pipeline::judge_probes(report, &mut insp, Some(&impact), old_routes.as_ref());
    drop(old_routes);
    let mut refuses = record_inspection(report, &mut insp);
    refuses |= crate::pipeline::refuse_takeovers(report, &impact, &insp.config.conf_prefix);
    if signals::interrupted() {
        return Err(Error::Interrupted);
    }
    if !refuses {
        if let Some(shadow) = shadow.as_ref().filter(|_| impact.shadow_needed()) {
            let root = &insp.config.conf_prefix;
            let mut plan = inspect::candidate_checks(s, &insp.servers, &impact, root);
            inspect::carry(s, &mut plan, (&old_servers, &insp.servers), &impact, root);
            let checks = plan.checks;
            let logs = env.error_logs(&insp.config);
            // No master, no running configuration: none of the log's lines are its. `nginx -t`
            // has ended by now, so nothing binds the candidate's addresses: no socket filter.
            let serving = (master.as_ref()).map_or_else(Serving::default, alongside::serving);
            shadow.send(inspect::shadow_batch(
                s,
                &insp.config,
                checks,
                logs,
                serving,
            ));
            shadow.expect_down(inspect::expected_down(report, &insp.config));
        }
        refuses = inspect::through_shadow(s, shadow.as_mut(), &impact, &insp, report)?;
        if signals::interrupted() {
            return Err(Error::Interrupted);
        }
    }
    if refuses {
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    Ok(report.finish(Outcome::Ok, Exit::Ok))
}

/// `diff`: the candidate against last-good.
pub fn diff(s: &Settings, report: &mut Report) -> Result<Exit> {
    let config = conf::load(&env::conf_path(s)?, &LoadOptions::default())?;
    report.config = Some(config.main.clone());
    if !s.state_dir.exists() {
        report.notes.push(format!(
            "no state directory at {}: no last good configuration to compare with",
            s.state_dir.display()
        ));
        return Ok(report.finish(Outcome::Ok, Exit::Ok));
    }
    let store = Store::open(&s.state_dir)?;
    let good = store.last_good()?;
    if good.is_none() {
        report
            .notes
            .push("no last good configuration recorded yet (run `safe-reload init`)".into());
    }
    report.diff = diff_against(&store, good.as_ref(), &config)?;
    Ok(report.finish(Outcome::Ok, Exit::Ok))
}

/// `init`: record the current configuration as known-good, after nginx -t passes.
pub fn init(s: &Settings, report: &mut Report) -> Result<Exit> {
    let (store, _lock) = open_locked(s)?;
    let env = Env::discover(s)?;
    let checks = Checks {
        test: true,
        probe: false,
        preflight: false,
    };
    let config = match env.load() {
        Ok(c) => c,
        Err(e @ Error::Config { .. }) => return refuse_config(report, e),
        Err(e) => return Err(e),
    };
    let early = Early::start(Some(&env.nginx), checks);
    let mut insp = inspect::inspect(Some(&env.info), s, config, &[], early, report)?;
    record_inspection(report, &mut insp);
    if report.test.as_ref().is_some_and(|t| !t.passed) {
        report
            .notes
            .push("nginx -t fails: not recording this configuration as good".into());
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    let t = Instant::now();
    let snap = store.snapshot(
        &insp.config.conf_prefix,
        &insp.config.files,
        meta(SnapOutcome::Baseline, Vec::new()),
    )?;
    store.set_last_good(&snap)?;
    report.step("snapshot", true, t.elapsed(), Some(snap.id.clone()));
    report.snapshot = Some(snap.id.clone());
    report.notes.push(format!(
        "recorded {} files as the last good configuration ({})",
        snap.count(),
        snap.id
    ));
    Ok(report.finish(Outcome::Recorded, Exit::Ok))
}

/// `history`: snapshots, newest first.
pub fn history(s: &Settings, report: &mut Report) -> Result<Exit> {
    if !s.state_dir.exists() {
        report.history = Some(Vec::new());
        report
            .notes
            .push(format!("no state directory at {}", s.state_dir.display()));
        return Ok(report.finish(Outcome::Ok, Exit::Ok));
    }
    let store = Store::open(&s.state_dir)?;
    let good = store.last_good()?.map(|g| g.id);
    report.last_good = good;
    report.history = Some(store.list()?);
    Ok(report.finish(Outcome::Ok, Exit::Ok))
}

/// `status`: nginx running? config drifted from last-good? a run unfinished?
pub fn status(s: &Settings, report: &mut Report) -> Result<Exit> {
    let env = Env::discover(s)?;
    let mut st = StatusReport::default();
    let config = env.load();
    let mut master = None;
    // A tree that does not load (a dangling include, a half-done edit) names no pid file:
    // nginx is looked for where last-good's says, and at the build's default.
    let unloaded = match &config {
        Ok(_) => None,
        Err(_) => Some(bare_config(&env)?),
    };
    if let Some(config) = config.as_ref().ok().or(unloaded.as_ref()) {
        match env.master(config) {
            Ok(m) => {
                st.master_pid = Some(m.pid);
                master = Some(m);
            }
            Err(e) => st.not_running = Some(e.to_string()),
        }
    }
    if s.state_dir.exists() {
        let store = Store::open(&s.state_dir)?;
        st.run_in_progress = store.run_in_progress();
        // A journal while the lock is held is the running run's own (or the one `recover`
        // is finishing): not interrupted, and nothing to recover. Its phase is said with it.
        let journal = store.journal()?;
        match (&mut st.run_in_progress, journal) {
            (Some(run), Some(j)) => run.push_str(&format!(", now {}", j.phase.name())),
            (None, j) => st.interrupted = j,
            (Some(_), None) => {}
        }
        let good = store.last_good()?;
        st.last_good = good.as_ref().map(|g| g.id.clone());
        if let Ok(config) = &config {
            report.diff = diff_against(&store, good.as_ref(), config)?;
            let unchanged = report.diff.as_ref().is_some_and(|d| d.is_empty());
            // A run in progress reloads nginx itself: what nginx loaded is its doing.
            let busy = st.run_in_progress.is_some();
            match (unchanged, &master) {
                _ if busy => {}
                (true, Some(m)) => {
                    st.not_loaded = crate::pipeline::not_what_nginx_loaded(&store, m, config);
                }
                // The files differ: nginx may run them already, loaded by hand.
                (false, Some(m)) if good.is_some() => {
                    st.loaded_outside = crate::pipeline::loaded_outside(&store, m);
                }
                _ => {}
            }
            if let (Some(j), Some(m)) = (&st.interrupted, &master) {
                if let Some(at) = own_reload(j, m) {
                    // The interrupted run's own signal, not a reload outside safe-reload.
                    st.loaded_outside = None;
                    st.not_loaded = None;
                    st.interrupted_reload = Some(at);
                }
            }
        }
    }
    if let Err(e) = config {
        st.config_error = Some(e.to_string());
    }
    st.leftover_shadows = crate::shadow::leftovers(&s.state_dir);
    let healthy = st.master_pid.is_some()
        && st.interrupted.is_none()
        && st.config_error.is_none()
        && st.leftover_shadows.iter().all(|l| l.running.is_none());
    report.status = Some(st);
    Ok(report.finish(Outcome::Ok, if healthy { Exit::Ok } else { Exit::Refused }))
}

/// When nginx loaded the configuration it runs, if that was after the interrupted run `j` was
/// about to signal it: the run's own reload (or its rollback's), which `recover` verifies or
/// undoes. `None` when the run had not signalled nginx, or nginx loaded before the run began.
fn own_reload(j: &crate::store::JournalRecord, master: &crate::reload::Master) -> Option<String> {
    let (loaded, started) = loaded_and_started(j, master)?;
    // The journal's start is to the second; the workers' start to the tick.
    let began = started.checked_sub(std::time::Duration::from_secs(1))?;
    (j.phase.nginx_touched() && loaded >= began)
        .then(|| humantime::format_rfc3339_seconds(loaded).to_string())
}

/// When nginx loaded the configuration it runs, and when the run of journal `j` began (to
/// the second, as the journal writes it).
fn loaded_and_started(
    j: &crate::store::JournalRecord,
    master: &crate::reload::Master,
) -> Option<(std::time::SystemTime, std::time::SystemTime)> {
    let loaded = crate::reload::loaded_at(master)?;
    let started = humantime::parse_rfc3339(&j.started).ok()?;
    Some((loaded, started))
}

/// `rollback [ID]`: put a snapshot's files back, then the normal pipeline; if that refuses the
/// snapshot, the files from before the rollback are put back. The lock is held throughout and
/// the journal (phase `Restoring`, naming the files from before) covers the restore, so a run
/// killed halfway is undone by `recover`.
pub fn rollback(
    s: &Settings,
    p: &crate::output::Printer,
    id: Option<&str>,
    report: &mut Report,
) -> Result<Exit> {
    let (store, _lock) = open_locked(s)?;
    let env = Env::discover(s)?;
    let loaded = env.load();
    // Without an id: the files on disk back to the last good configuration when they differ
    // from it (an edit by hand, not reloaded or not yet good), else to the good one before it.
    // The files on disk against last-good, once: where `rollback` goes without an id, what a
    // rollback to last-good writes, and whether last-good already holds what it replaces.
    let good = store.last_good()?;
    let since_good = match (&good, &loaded) {
        (Some(good), Ok(now)) => Some(crate::pipeline::diff_files(
            &store,
            good,
            &now.conf_prefix,
            &now.files,
        )?),
        _ => None,
    };
    let edited = match (id, &good) {
        (None, Some(good)) => since_good
            .as_ref()
            .is_none_or(|d| !d.is_empty())
            .then(|| good.clone()),
        _ => None,
    };
    let target = match (id, edited) {
        (Some(id), _) => store.get(id)?,
        (None, Some(good)) => {
            report.notes.push(format!(
                "the files on disk differ from the last good configuration: rolling back to it \
                 ({})",
                good.id
            ));
            good
        }
        (None, None) => previous_good(&store)?.ok_or_else(|| {
            Error::Usage(
                "no earlier good snapshot to roll back to (see `safe-reload history`)".into(),
            )
        })?,
    };
    refuse_displaced(&store, &target)?;
    let (current, unloadable) = match loaded {
        Ok(current) => (current, None),
        Err(e @ (Error::Config { .. } | Error::MainConfig { .. })) => {
            (unloadable_tree(&store, &env, &target)?, Some(e))
        }
        Err(e) => return Err(e),
    };
    // The files this rollback would write must be replaceable, or it stops before the first.
    let good_now = since_good.filter(|_| unloadable.is_none());
    let touched = match (&good, &good_now) {
        (Some(g), Some(d)) if g.id == target.id => d.clone(),
        _ => crate::pipeline::diff_files(&store, &target, &current.conf_prefix, &current.files)?,
    };
    if crate::pipeline::refuse_obstacles(report, &current.conf_prefix, Some(&touched)) {
        return Ok(report.finish(Outcome::Refused, Exit::Refused));
    }
    let before = held_before(&store, &target, &touched, &current, good.zip(good_now))?;
    if let Some(e) = unloadable {
        report.notes.push(format!(
            "the configuration on disk does not load ({e}); the rollback replaces the files \
             that snapshot {} and the last good configuration read, and snapshot {} keeps what \
             they held",
            target.id, before.id
        ));
    }
    let mut rec = JournalRecord::new(
        crate::store::command_line(),
        Some(before.id.clone()),
        store.last_good()?.map(|g| g.id),
    );
    let paths: Vec<_> = current.paths().map(|p| p.to_path_buf()).collect();
    rec.phase = JournalPhase::Restoring;
    rec.files_before = paths.clone();
    store.journal_begin(&rec)?;
    let restored = store.restore_reading(
        &target,
        &current.conf_prefix,
        &paths,
        Some(&before),
        &env.nginx.conf,
        None,
    )?;
    if !restored.is_clean() {
        put_back(&store, &env, &before, Some(&target), &paths, report)?;
        return Err(Error::State {
            path: s.state_dir.clone(),
            message: format!(
                "restoring snapshot {} left files that do not match it; the files from before \
                 are back ({})",
                target.id, before.id
            ),
        });
    }
    report.notes.push(format!(
        "restored the files of snapshot {}; now testing and reloading them",
        target.id
    ));
    let forced = Settings {
        force: true,
        ..s.clone()
    };
    let exit = reload_locked(&forced, p, report, &store, Journal::Inherit);
    let touched = store.journal()?.is_some_and(|j| j.phase.nginx_touched());
    if touched || !matches!(exit, Ok(Exit::Refused) | Err(_)) {
        return exit;
    }
    put_back(&store, &env, &before, Some(&target), &paths, report)?;
    report.notes.push(format!(
        "snapshot {} was not reloaded; the files from before the rollback are back ({})",
        target.id, before.id
    ));
    exit
}

/// The files on disk a rollback replaces when the configuration there does not load (a file
/// broken by hand is when an operator reaches for `rollback`): what `target`'s includes and
/// last-good's read now, their globs matched on disk, a file neither holds listed whatever it
/// contains ([`Store::globbed_paths`]). A file only the broken tree names is not read by the
/// restored one, and stays where it is. The tree itself is left empty: a rollback needs only
/// the file set and its bytes.
fn unloadable_tree(store: &Store, env: &Env, target: &Snapshot) -> Result<conf::Config> {
    let mut config = bare_config(env)?;
    let main = config.main.clone();
    let mut paths = store.globbed_paths(target, &main);
    if let Some(good) = store.last_good()? {
        paths.extend(store.globbed_paths(&good, &main));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for path in std::iter::once(main.clone()).chain(paths) {
        // A dangling link a glob matches (`sites-enabled/new` made before its file) is what
        // keeps the tree from loading: it is recorded, as a link, and replaced with the rest.
        let dangling = !path.exists() && path.is_symlink();
        if !seen.insert(path.clone()) || !(path.is_file() || dangling) {
            continue;
        }
        if dangling {
            files.push(conf::ConfFile {
                path,
                bytes: Vec::new().into(),
                via: None,
            });
            continue;
        }
        match fs_err::read(&path) {
            Ok(bytes) => files.push(conf::ConfFile {
                path,
                bytes: bytes.into(),
                via: None,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    config.files = files;
    Ok(config)
}

/// The configuration's main file with nothing read from it: where to look for what a tree
/// that does not load would have said.
fn bare_config(env: &Env) -> Result<conf::Config> {
    let main = conf::load::as_opened(&std::path::absolute(&env.nginx.conf)?);
    let conf_prefix = (main.parent()).map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    Ok(conf::Config {
        main,
        conf_prefix,
        files: Vec::new(),
        tree: Vec::new(),
    })
}

/// A displaced snapshot holds only the versions a restore found on disk and no other snapshot
/// had (another writer's bytes): never a tested configuration, and not a whole one. Restoring
/// it would remove every file it lacks, so it is refused before anything changes.
fn refuse_displaced(store: &Store, target: &Snapshot) -> Result<()> {
    if target.meta.outcome != SnapOutcome::Displaced {
        return Ok(());
    }
    let inside = (target.files.iter()).map(|e| (target.config_root.join(&e.path), &e.hash));
    let outside = (target.external.iter()).map(|e| (e.path.clone(), &e.hash));
    let held: Vec<String> = inside
        .chain(outside)
        .map(|(path, hash)| {
            let object = store.object_path(hash);
            format!("{} (its bytes: {})", path.display(), object.display())
        })
        .collect();
    Err(Error::Usage(format!(
        "snapshot {} is not a configuration to roll back to: it holds another writer's version \
         of {}, saved by a restore before it replaced or removed it, and was never tested. Copy \
         what you need from it into the configuration, then run `safe-reload` to test and \
         reload that",
        target.id,
        held.join(", ")
    )))
}

/// The snapshot that holds the files on disk before a rollback writes over them: the target
/// itself when they already equal it (`touched` is empty), last-good when they equal that
/// (`since_good`: last-good and the files against it, when the tree on disk loaded),
/// and only otherwise a new `replaced` snapshot. A snapshot of bytes another one already holds
/// would fill `history` with copies and say something was displaced when nothing was.
fn held_before(
    store: &Store,
    target: &Snapshot,
    touched: &crate::diff::ConfigDiff,
    current: &crate::conf::Config,
    since_good: Option<(Snapshot, crate::diff::ConfigDiff)>,
) -> Result<Snapshot> {
    if touched.is_empty() {
        return Ok(target.clone());
    }
    if let Some((good, since)) = since_good {
        if since.is_empty() {
            return Ok(good);
        }
    }
    store.snapshot(
        &current.conf_prefix,
        &current.files,
        meta(SnapOutcome::Replaced, Vec::new()),
    )
}

/// Put `snap`'s files back while nginx still runs them, and close the journal record. The
/// files `snap` lacks go into `written` (the snapshot a refused rollback had put in place), or
/// into a displaced snapshot, named in the report's notes, when it does not hold them: a file
/// another writer dropped where a glob of either reads it is found whether or not it parses.
/// `before` is the file set read from disk before that rollback wrote anything: a file outside
/// the root that the restored tree no longer names (it moved it out) is written back all the
/// same.
fn put_back(
    store: &Store,
    env: &Env,
    snap: &Snapshot,
    written: Option<&Snapshot>,
    before: &[PathBuf],
    report: &mut Report,
) -> Result<()> {
    let mut paths = before.to_vec();
    // A file another writer added that a glob of either configuration picks up is found even
    // when it does not parse (and the tree on disk does not load): the globs are matched
    // through recorded bytes, as `finish_rollback` does.
    paths.extend(store.globbed_paths(snap, &env.nginx.conf));
    if let Some(written) = written {
        paths.extend(store.globbed_paths(written, &env.nginx.conf));
    }
    if let Ok(now) = env.load() {
        paths.extend(now.paths().map(Path::to_path_buf));
    }
    paths.sort();
    paths.dedup();
    let restored = store.restore_reading(
        snap,
        &snap.config_root,
        &paths,
        written,
        &env.nginx.conf,
        None,
    )?;
    if let Some(d) = &restored.displaced {
        report.notes.push(d.describe());
    }
    if !restored.is_clean() {
        return Err(Error::State {
            path: store.root().to_path_buf(),
            message: format!(
                "putting back snapshot {} left files that do not match it; the journal keeps \
                 this run: fix the files, then run `safe-reload recover`",
                snap.id
            ),
        });
    }
    store.journal_clear()
}

/// `recover`: finish a run that was interrupted, as its journal describes it. Before nginx was
/// signalled there is nothing to finish (a half-done `rollback ID` is undone). A run killed
/// while rolling back has its rollback finished: the journal's candidate is the rejected
/// snapshot, last-good is restored, reloaded and verified, and stays last-good. A run killed
/// once it began signalling nginx and before it judged the candidate (`signalled`, `reloaded`,
/// `verifying`) is rolled back the same way: nothing vouches for what nginx runs, the candidate is the
/// rejected snapshot that keeps the change, never a new one, and nothing is left pending. A
/// run killed after verifying has its candidate recorded. Otherwise nginx may run an unverified
/// configuration: the files on disk go through the normal pipeline (kept if they verify,
/// rolled back if not); files nginx -t or a probe refuses are rolled back like the rest. With
/// nginx not running, last-good's files are put back for nginx to read when it starts. The
/// journal, the interrupted run's pid and command included, stays until one of these finishes.
pub fn recover(s: &Settings, p: &crate::output::Printer, report: &mut Report) -> Result<Exit> {
    let store = Store::open(&s.state_dir)?;
    let _lock = store.lock(s.wait, None)?;
    report
        .notes
        .extend(crate::shadow::clean_leftovers(&s.state_dir));
    let Some(j) = store.journal()? else {
        report
            .notes
            .push("no interrupted run: nothing to recover".into());
        return Ok(report.finish(Outcome::Ok, Exit::Ok));
    };
    report.notes.push(format!(
        "an interrupted run (pid {}, `{}`) stopped during {}",
        j.pid,
        j.command,
        j.phase.name()
    ));
    if j.phase == JournalPhase::Restoring {
        let env = Env::discover(s)?;
        let before = store.get(j.candidate.as_deref().unwrap_or_default())?;
        put_back(&store, &env, &before, None, &j.files_before, report)?;
        report.notes.push(format!(
            "undid the interrupted rollback: the files nginx runs ({}) are back",
            before.id
        ));
        return Ok(report.finish(Outcome::Ok, Exit::Ok));
    }
    if !j.phase.nginx_touched() {
        // Its candidate was never loaded: not left "pending" in `history`.
        if let Some(id) = &j.candidate {
            if store
                .get(id)
                .is_ok_and(|c| c.meta.outcome == SnapOutcome::Pending)
            {
                store.set_outcome(
                    id,
                    SnapOutcome::Interrupted,
                    Some("its run was stopped before the reload: nginx was not touched".into()),
                )?;
            }
        }
        // An interrupted `edit` promised its file back unless the edit verified.
        if let Some(edit) = &j.edit {
            let note = crate::pipeline::edit::undo_interrupted(&store, edit)?;
            store.journal_clear()?;
            report.notes.push(note);
            return Ok(report.finish(Outcome::Ok, Exit::Ok));
        }
        store.journal_clear()?;
        report
            .notes
            .push("nginx was not touched; the files on disk are as the operator left them".into());
        return Ok(report.finish(Outcome::Ok, Exit::Ok));
    }
    // The record stays the interrupted run's (its pid and command) until this recover
    // finishes it.
    let forced = Settings {
        force: true,
        yes: true,
        ..s.clone()
    };
    let env = Env::discover(s)?;
    match j.phase {
        JournalPhase::RollingBack
        | JournalPhase::Restored
        | JournalPhase::Signalled
        | JournalPhase::Reloaded
        | JournalPhase::Verifying => return finish_rollback(&forced, &env, &store, &j, report),
        JournalPhase::Verified => return finish_verified(&store, &j, s.retention, report),
        JournalPhase::RolledBack => {
            store.journal_clear()?;
            report.notes.push(
                "the rollback had finished and was verified: the last good configuration is live"
                    .into(),
            );
            return Ok(report.finish(Outcome::Ok, Exit::Ok));
        }
        _ => {}
    }
    if nginx_down(&env).is_some() {
        // Nothing to signal and nothing running the unverified files: last-good's files go
        // back on disk for nginx to read when it starts.
        return finish_rollback(&forced, &env, &store, &j, report);
    }
    let exit = reload_locked(&forced, p, report, &store, Journal::Inherit)?;
    if exit != Exit::Refused {
        return Ok(exit);
    }
    report.notes.push(
        "the files on disk are refused, and nginx may be running them: going back to the last \
         good configuration"
            .into(),
    );
    finish_rollback(&forced, &env, &store, &j, report)
}

/// The interrupted run was rolling back, or killed before it judged its reloaded candidate:
/// finish (or make) that rollback, with the journal's candidate as
/// the rejected snapshot (files it added leave the tree and are kept in it) and the journal's
/// last-good as the target, through the transaction's own restore-reload-prove-verify path.
/// Nothing new is snapshotted and last-good stays what it was.
fn finish_rollback(
    s: &Settings,
    env: &Env,
    store: &Store,
    j: &JournalRecord,
    report: &mut Report,
) -> Result<Exit> {
    let state = |message: String| Error::State {
        path: s.state_dir.clone(),
        message,
    };
    let candidate = match &j.candidate {
        Some(id) => store.get(id)?,
        None => {
            return Err(state(
                "the journal of the interrupted rollback names no candidate".into(),
            ))
        }
    };
    let good = match &j.last_good {
        Some(id) => store.get(id)?,
        None => store.last_good()?.ok_or_else(|| {
            state(
                "no last good snapshot to recover to: fix the configuration by hand, then run \
                 `safe-reload recover` again"
                    .into(),
            )
        })?,
    };
    // The candidate's whole file set, not only what the half-restored tree still includes: a
    // file the change added may no longer be named by a main file already restored.
    let mut paths: Vec<PathBuf> = (candidate.files.iter())
        .map(|e| candidate.config_root.join(&e.path))
        .collect();
    // A file another writer added that a glob picks up is found even when it does not parse
    // (and the tree on disk does not load): the globs are matched through recorded bytes.
    paths.extend(store.globbed_paths(&candidate, &env.nginx.conf));
    paths.extend(store.globbed_paths(&good, &env.nginx.conf));
    if let Ok(now) = env.load() {
        paths.extend(now.paths().map(Path::to_path_buf));
    }
    paths.sort();
    paths.dedup();
    // Last-good's files first, so the master and the logs come from the configuration that is
    // to run (the tree on disk may not load halfway through a restore).
    let restored = store.restore_reading(
        &good,
        &candidate.config_root,
        &paths,
        Some(&candidate),
        &env.nginx.conf,
        good.created_time(),
    )?;
    if let Some(d) = &restored.displaced {
        report.notes.push(d.describe());
    }
    if !restored.is_clean() {
        report.notes.push(format!(
            "restoring the last good configuration ({}) left files that do not match it",
            good.id
        ));
        return Ok(report.finish(Outcome::RollbackFailed, Exit::MustAct));
    }
    let config = env.load()?;
    report.config = Some(config.main.clone());
    let master = match env.master(&config) {
        Ok(master) => master,
        Err(Error::NotRunning { reason }) => {
            return restored_while_down(store, &candidate, &good, &reason, report)
        }
        Err(e) => return Err(e),
    };
    let watch = Watch::of(env, &config);
    let servers = crate::conf::servers::extract(&config);
    drop(config);
    // nginx loaded what it runs before the run began (the journal's start is to the second,
    // the run began in it or after): the run's signal had not reached it.
    let before_load = j.phase == JournalPhase::Signalled
        && loaded_and_started(j, &master).is_some_and(|(loaded, began)| loaded < began);
    let why = match j.phase {
        JournalPhase::Signalled if before_load => format!(
            "{KILLED_BEFORE_LOAD} loaded snapshot {} (its workers are older than the run): \
             nginx never ran it, and last-good's files are put back and reloaded so that a \
             signal still on its way loads nothing untested",
            candidate.id
        ),
        JournalPhase::Signalled => format!(
            "{KILLED_UNJUDGED} it signalled nginx to load snapshot {}: nginx may run \
             it, and nothing vouches for it, so it is rolled back",
            candidate.id
        ),
        JournalPhase::Reloaded | JournalPhase::Verifying => format!(
            "{KILLED_UNJUDGED} it verified snapshot {}: nothing vouches for the change, \
             so it is rolled back",
            candidate.id
        ),
        _ => candidate.meta.note.clone().unwrap_or_else(|| {
            format!(
                "an interrupted run was rolling back snapshot {}",
                candidate.id
            )
        }),
    };
    report.snapshot = Some(candidate.id.clone());
    let tx = Transaction {
        s,
        env,
        store,
        master,
        candidate_paths: paths,
        candidate,
        last_good: Some(good),
        // Nothing to compare with: every server is checked.
        impact: crate::impact::Impact::of_servers(&servers),
        servers,
        watch,
        reload_deadline: s.reload_timeout.min(std::time::Duration::from_secs(30)),
        journal: Journal::Inherit,
        // No probe ran: every upstream error in the log counts.
        expected_down: Vec::new(),
        prepared: None,
        pools: None,
        // What ran before the kill is not known to be good: nothing to compare with.
        running: Running::Unverified,
    };
    let checks = tx.checks(&tx.servers).checks;
    let exit = tx.rollback(report, why, &Baseline::none(), &checks)?;
    // Nothing the change did reached nginx: last-good ran all along, and runs verified now.
    if before_load && exit == Exit::RolledBack {
        return Ok(report.finish(report.outcome, Exit::Ok));
    }
    Ok(exit)
}

/// Why nginx is not running, if it is not: the configuration on disk loads and its pid file
/// names no master.
fn nginx_down(env: &Env) -> Option<String> {
    let config = env.load().ok()?;
    match env.master(&config) {
        Err(Error::NotRunning { reason }) => Some(reason),
        _ => None,
    }
}

/// Last-good's files are back and nginx is not running: nothing to reload or verify. nginx
/// reads the restored files when it starts; the interrupted candidate is kept, rejected, and
/// the run is finished.
fn restored_while_down(
    store: &Store,
    candidate: &Snapshot,
    good: &Snapshot,
    reason: &str,
    report: &mut Report,
) -> Result<Exit> {
    let note = format!(
        "interrupted before it verified; nginx was not running when `recover` put back the last \
         good configuration ({})",
        good.id
    );
    store.set_outcome(&candidate.id, SnapOutcome::Rejected, Some(note))?;
    store.journal_clear()?;
    report.notes.push(format!(
        "nginx is not running ({reason}): the last good configuration's files ({}) are back on \
         disk, and nginx reads them when it starts; nothing was signalled or verified",
        good.id
    ));
    report.snapshot = Some(candidate.id.clone());
    Ok(report.finish(Outcome::NotRunning, Exit::MustAct))
}

/// The interrupted run had verified its candidate and was recording it: finish recording.
fn finish_verified(
    store: &Store,
    j: &JournalRecord,
    retention: usize,
    report: &mut Report,
) -> Result<Exit> {
    let Some(id) = &j.candidate else {
        store.journal_clear()?;
        return Ok(report.finish(Outcome::Ok, Exit::Ok));
    };
    let candidate = store.get(id)?;
    store.set_outcome(&candidate.id, SnapOutcome::Good, None)?;
    store.set_last_good(&candidate)?;
    store.prune(retention)?;
    store.journal_clear()?;
    report.notes.push(format!(
        "the interrupted run had verified snapshot {}: it is now recorded as last good",
        candidate.id
    ));
    report.snapshot = Some(candidate.id);
    Ok(report.finish(Outcome::Reloaded, Exit::Ok))
}

/// The good snapshot before the current last-good one.
fn previous_good(store: &Store) -> Result<Option<Snapshot>> {
    let Some(current) = store.last_good()? else {
        return Ok(store.list()?.into_iter().find(|s| s.meta.outcome.is_good()));
    };
    let good: Vec<Snapshot> = (store.list()?.into_iter())
        .filter(|snap| snap.meta.outcome.is_good() && snap.id < current.id)
        .collect();
    // Last-good recorded by a rollback holds an earlier snapshot's files: the one before is
    // the good one before that snapshot, not the one the rollback left (a second `rollback`
    // went back to the change the first had undone).
    let by_rollback = (current.meta.command.split_whitespace()).any(|w| w == "rollback");
    let from = match by_rollback {
        true => (good.iter())
            .find(|s| same_files(s, &current))
            .map_or(current.id.clone(), |s| s.id.clone()),
        false => current.id.clone(),
    };
    Ok(good
        .into_iter()
        .find(|s| s.id < from && !same_files(s, &current)))
}

/// Whether two snapshots hold the same files: paths, kinds, link targets and contents.
fn same_files(a: &Snapshot, b: &Snapshot) -> bool {
    let files = |s: &Snapshot| -> Vec<(PathBuf, Option<PathBuf>, String)> {
        let mut v: Vec<_> = (s.files.iter())
            .map(|e| (e.path.clone(), e.target.clone(), e.hash.clone()))
            .chain((s.external.iter()).map(|e| (e.path.clone(), e.target.clone(), e.hash.clone())))
            .collect();
        v.sort();
        v
    };
    files(a) == files(b)
}

/// Refuse what untrusted configuration may not contain. `Ok` holds the confined
/// configuration and its root (the main file's directory); `Err` the exit of a refusal.
fn untrusted_policy(
    s: &Settings,
    report: &mut Report,
) -> Result<std::result::Result<(conf::Config, std::path::PathBuf), Exit>> {
    let Some(conf) = &s.conf else {
        return Err(Error::Usage(
            "check --untrusted needs -c/--conf FILE: the main file of the repository to check"
                .into(),
        ));
    };
    let main = std::path::absolute(conf)?;
    let root = main.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let opts = LoadOptions {
        confine: Some(root.clone()),
        ..LoadOptions::default()
    };
    let config = match conf::load(&main, &opts) {
        Ok(c) => c,
        Err(e @ Error::Config { .. }) => return refuse_config(report, e).map(Err),
        Err(e) => return Err(e),
    };
    // Asked only for a `load_module` that may name an installed module (an absolute path out
    // of the repository); `nginx -V` reads no configuration, it prints how nginx was built.
    let installed = |d: &conf::Directive| {
        let p = std::path::Path::new(d.arg0());
        d.name == "load_module" && p.is_absolute() && !p.starts_with(&root)
    };
    let wants = config.walk().any(installed);
    let modules = (wants.then(|| crate::nginx::find_binary(s.nginx.as_deref())))
        .and_then(|b| b.ok())
        .and_then(|b| crate::nginx::build_info(&b).ok())
        .and_then(|info| {
            // nginx's default: `modules` under its prefix.
            (info.modules_path).or_else(|| info.prefix.map(|p| p.join("modules")))
        });
    let found = conf::untrusted::violations(&config, modules.as_deref());
    if found.is_empty() {
        return Ok(Ok((config, root)));
    }
    report.config = Some(config.main.clone());
    report.problems.extend(found.iter().map(Problem::from));
    Ok(Err(report.finish(Outcome::Refused, Exit::Refused)))
}
