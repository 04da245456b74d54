//! `safe-reload edit FILE`, like `visudo` and `crontab -e`: the operator edits a copy; the copy
//! is put in place only for the pipeline. If the pipeline refuses it or rolls it back, the file
//! is put back as it was and the edit is kept in the state directory, its path printed; on a
//! terminal the operator can edit again, see the diff, or drop it. A file another writer
//! changed while the editor was open is not written over: the run stops there (exit 1), their
//! version stays and the edit is kept aside.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::report::{Outcome, Report};
use crate::settings::{split_command, Settings};
use crate::store::{self, Store};

/// The editor to run: `$VISUAL`, `$EDITOR`, then `editor`, then `vi`.
fn editor() -> Result<Vec<String>> {
    for var in ["VISUAL", "EDITOR"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return split_command(&v);
            }
        }
    }
    let fallback = if which("editor") { "editor" } else { "vi" };
    Ok(vec![fallback.to_string()])
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

fn run_editor(copy: &Path) -> Result<()> {
    let mut argv = editor()?;
    argv.push(copy.display().to_string());
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|e| Error::Command {
            command: argv.join(" "),
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    if !status.success() {
        return Err(Error::Command {
            command: argv.join(" "),
            status: status.to_string(),
            stderr: "the editor failed; nothing was changed".into(),
        });
    }
    Ok(())
}

/// Original content and permissions of the file being edited.
struct Original {
    /// The path as the operator named it (a symlink stays one).
    path: PathBuf,
    /// Where writes go: the file behind the symlinks, so the link is kept.
    real: PathBuf,
    bytes: Option<Vec<u8>>,
    attrs: store::Attrs,
}

/// The file a write to `path` should replace: `path` itself, or for a symlink the file it
/// leads to (which may not exist yet), its directories resolved.
fn write_target(path: &Path) -> Result<PathBuf> {
    let mut cur = path.to_path_buf();
    // Bounded like the kernel's own limit on nested links (ELOOP).
    for _ in 0..40 {
        match std::fs::symlink_metadata(&cur) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs_err::read_link(&cur)?;
                let dir = cur.parent().map(Path::to_path_buf).unwrap_or_default();
                cur = dir.join(target);
            }
            _ => return Ok(store::resolve_parent(&cur).unwrap_or(cur)),
        }
    }
    Err(Error::Usage(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

impl Original {
    fn read(path: &Path) -> Result<Original> {
        use std::os::unix::fs::MetadataExt;
        let real = write_target(path)?;
        match fs_err::metadata(&real) {
            Ok(meta) => Ok(Original {
                path: path.to_path_buf(),
                bytes: Some(fs_err::read(&real)?),
                real,
                attrs: store::Attrs {
                    mode: meta.mode() & 0o7777,
                    owner: Some((meta.uid(), meta.gid())),
                },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Original {
                path: path.to_path_buf(),
                real,
                bytes: None,
                attrs: store::Attrs {
                    mode: 0o644,
                    owner: None,
                },
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// What the journal keeps of this file for `recover`: its bytes (stored as an object), mode
    /// and owner, and the edit's hash.
    fn record(&self, store: &Store, edited: &[u8], kept: &Path) -> Result<store::EditRecord> {
        let original = match &self.bytes {
            Some(b) => Some(store.keep_bytes(b)?),
            None => None,
        };
        Ok(store::EditRecord {
            path: self.path.clone(),
            real: self.real.clone(),
            original,
            edited: blake3::hash(edited).to_hex().to_string(),
            mode: self.attrs.mode,
            owner: self.attrs.owner,
            kept: kept.to_path_buf(),
        })
    }

    /// How the file on disk differs from what the editor was given, if it does: another
    /// writer (config management, certbot, a second operator) may have written it, or pointed
    /// the link elsewhere, while the editor was open.
    fn overtaken(&self) -> Result<Option<&'static str>> {
        if write_target(&self.path)? != self.real {
            return Ok(Some("its link now leads to another file"));
        }
        let now = match fs_err::read(&self.real) {
            Ok(now) => Some(now),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        Ok(match (now.as_deref(), self.bytes.as_deref()) {
            (now, before) if now == before => None,
            (None, Some(_)) => Some("it was removed"),
            (Some(_), None) => Some("it was created"),
            _ => Some("its content changed"),
        })
    }

    /// Writes `bytes` through the link (if any), atomically in the real file's directory.
    fn write(&self, bytes: &[u8]) -> Result<()> {
        store::write_atomic(&self.real, bytes, self.attrs)
    }

    /// Put the file back as it was before the edit, unless someone else changed it since we
    /// wrote the edit: their version is left in place (the edit is kept aside either way).
    fn put_back(&self, edited: &[u8]) -> Result<PutBack> {
        match std::fs::read(&self.real) {
            Ok(now) if now != edited && Some(now.as_slice()) != self.bytes.as_deref() => {
                return Ok(PutBack::LeftOtherVersion)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.bytes.is_some() => {
                return Ok(PutBack::LeftOtherVersion)
            }
            _ => {}
        }
        match &self.bytes {
            Some(b) => self.write(b)?,
            None => match fs_err::remove_file(&self.real) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            },
        }
        Ok(PutBack::Done)
    }
}

/// What putting the original back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PutBack {
    Done,
    /// The file held neither the edit nor the original: another writer's version, kept.
    LeftOtherVersion,
}

/// Refuses a file a write by rename would damage (a hard link, a mount point) or cannot reach
/// (a read-only directory), before the editor opens.
fn check_writable(s: &Settings, original: &Original, report: &mut Report) -> Option<Exit> {
    let root = crate::pipeline::env::conf_path(s)
        .ok()
        .and_then(|c| c.parent().map(Path::to_path_buf))
        .or_else(|| original.real.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let found = store::obstacles(&root, std::slice::from_ref(&original.real));
    if found.is_empty() {
        return None;
    }
    for o in &found {
        report.problems.push(crate::report::Problem {
            level: "error".into(),
            message: o.describe(),
            file: Some(o.path().to_path_buf()),
            line: None,
            hint: None,
        });
    }
    report.notes.push(format!(
        "{} was not opened for editing: nothing changed",
        original.path.display()
    ));
    Some(report.finish(Outcome::Refused, Exit::Refused))
}

/// A file nginx does not read is not the configuration: the pipeline would test and reload
/// nothing of it. A usage error before the editor opens, nothing written. A path that does
/// not exist is created only where an include would read it.
fn refuse_unread(s: &Settings, original: &Original) -> Result<()> {
    use crate::conf::reads::{reads, Reads};
    // Without nginx the pipeline fails on its own, with its own message.
    let Ok(env) = crate::pipeline::env::Env::discover(s) else {
        return Ok(());
    };
    let main = &env.nginx.conf;
    let path = original.path.display();
    match reads(main, &original.path) {
        Reads::Yes | Reads::OnceCreated | Reads::Unknown(_) => Ok(()),
        Reads::No if original.bytes.is_some() => Err(Error::Usage(format!(
            "{path} is not read by the configuration nginx loads ({} and its includes): \
             `edit` tests and reloads the configuration; nothing was opened or written",
            main.display()
        ))),
        Reads::No => Err(Error::Usage(format!(
            "{path} does not exist, and no include of {} would read it: nothing was created \
             (check the path, or add the include first)",
            main.display()
        ))),
    }
}

/// What the operator wants after a failed attempt.
enum Next {
    EditAgain,
    Stop,
}

fn ask_next(p: &Printer, original: &Original, edit: &[u8]) -> Next {
    loop {
        let answer = p.ask(
            "What now? (e)dit again, (d)iff against the file, (q)uit and keep the edit aside: ",
        );
        match answer.trim() {
            "e" | "E" => return Next::EditAgain,
            "d" | "D" => {
                let old = String::from_utf8_lossy(original.bytes.as_deref().unwrap_or_default());
                let new = String::from_utf8_lossy(edit);
                let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref());
                let name = original.path.display().to_string();
                p.err(&crate::output::escape_control(
                    &diff.unified_diff().header(&name, &name).to_string(),
                ));
            }
            _ => return Next::Stop,
        }
    }
}

/// `edit FILE`.
pub fn edit(s: &Settings, p: &Printer, file: &Path, report: &mut Report) -> Result<Exit> {
    let path = std::path::absolute(file)?;
    let original = Original::read(&path)?;
    refuse_unread(s, &original)?;
    if let Some(exit) = check_writable(s, &original, report) {
        return Ok(exit);
    }
    let store = Store::open(&s.state_dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "edit".into());
    let copy = store.save_edit(&name, original.bytes.as_deref().unwrap_or_default())?;
    loop {
        let edited = match run_editor(&copy).and_then(|()| Ok(fs_err::read(&copy)?)) {
            Ok(edited) => edited,
            Err(e) => return Err(keep_or_drop(&copy, &original, report, e)),
        };
        // A new file left empty is as unchanged as an old one left as it was.
        if edited.as_slice() == original.bytes.as_deref().unwrap_or_default() {
            report.notes.push(match original.bytes {
                Some(_) => format!("{} is unchanged; nothing to do", path.display()),
                None => format!("{} was not created: the edit is empty", path.display()),
            });
            let _ = fs_err::remove_file(&copy);
            return Ok(report.finish(Outcome::Unchanged, Exit::Ok));
        }
        let exit = attempt(s, p, &original, &edited, &copy, report)?;
        if exit == Exit::Ok {
            if original.bytes.is_none() {
                report.notes.push(format!(
                    "created {}: a new file, which the configuration's include reads",
                    path.display()
                ));
            }
            let _ = fs_err::remove_file(&copy);
            return Ok(exit);
        }
        // visudo's loop, on a terminal only: a script gets the exit status and the kept path.
        // Nor when the file holds another writer's version now: an edit of what it held
        // before would be written over theirs.
        if !p.interactive() || p.json || original.overtaken()?.is_some() {
            return Ok(exit);
        }
        crate::output::render(p, report);
        report.rendered = true;
        match ask_next(p, &original, &edited) {
            Next::EditAgain => continue,
            Next::Stop => return Ok(exit),
        }
    }
}

/// Put the edit in place and run the pipeline on it; on anything but success the file is put
/// back as it was and the edit stays in `copy`.
fn attempt(
    s: &Settings,
    p: &Printer,
    original: &Original,
    edited: &[u8],
    copy: &Path,
    report: &mut Report,
) -> Result<Exit> {
    // The lock covers writing the file, the pipeline and putting the file back, not the
    // editor session; a run left unfinished by someone else is refused here, before the file
    // changes.
    let (store, _lock) = crate::pipeline::open_locked(s)?;
    // As late as it can be, right before the edit is written: the edit was made on what the
    // file held when the editor opened, and writing it now would lose the other writer's.
    if let Some(how) = original.overtaken()? {
        return Ok(refuse_overtaken(original, how, copy, report));
    }
    // The journal names the file and its bytes from before before the edit is written, so a
    // run killed before nginx is signalled is undone by `recover` as this function would.
    let mut rec = store::JournalRecord::new(
        store::command_line(),
        None,
        store.last_good()?.map(|g| g.id),
    );
    rec.edit = Some(original.record(&store, edited, copy)?);
    store.journal_begin(&rec)?;
    if let Err(e) = original.write(edited) {
        store.journal_clear()?;
        return Err(e);
    }
    let mut run = Report::new("edit");
    let result = {
        let _spin = p.spinner("testing, probing upstreams, reloading, verifying");
        crate::pipeline::reload_locked(s, p, &mut run, &store, crate::pipeline::Journal::Edit)
    };
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            let put = original.put_back(edited)?;
            close_untouched(&store)?;
            report.notes.push(kept_note(original, copy, put));
            return Err(e);
        }
    };
    *report = run;
    if exit == Exit::Ok {
        return Ok(exit);
    }
    if exit == Exit::MustAct {
        // The rollback could not restore a verified state: leave the files as the rollback
        // left them for the operator, and do not add a write of our own.
        report
            .notes
            .push(format!("your edit is kept in {}", copy.display()));
    } else {
        let put = original.put_back(edited)?;
        report.notes.push(kept_note(original, copy, put));
    }
    close_untouched(&store)?;
    Ok(exit)
}

/// Another writer changed the file while the editor was open: their version stays, the edit
/// is kept aside, nothing is written and nginx is not signalled.
fn refuse_overtaken(original: &Original, how: &str, copy: &Path, report: &mut Report) -> Exit {
    let through = if original.real != original.path {
        format!(" (the file behind the link, {})", original.real.display())
    } else {
        String::new()
    };
    report.problems.push(crate::report::Problem {
        level: "error".into(),
        message: format!(
            "changed on disk while the editor was open ({how}); the edit was not written over it"
        ),
        file: Some(original.path.clone()),
        line: None,
        hint: None,
    });
    report.notes.push(format!(
        "{}{through} was changed by someone else while it was being edited and is left as \
         they wrote it; nothing was written and nginx was not signalled. Your edit is kept in \
         {}: compare it with the file and run edit again",
        original.path.display(),
        copy.display()
    ));
    report.finish(Outcome::Refused, Exit::Refused)
}

/// The pipeline left the record to `edit` (nginx was not signalled) and the file is back:
/// the run is over. A record of a run that signalled nginx stays for `recover`.
fn close_untouched(store: &Store) -> Result<()> {
    if store.journal()?.is_some_and(|j| !j.phase.nginx_touched()) {
        store.journal_clear()?;
    }
    Ok(())
}

/// Put the file an interrupted `edit` run wrote back as it was before the edit, unless another
/// writer changed it since (as [`Original::put_back`]); for `recover`, before nginx was
/// signalled. Returns the note to report.
pub fn undo_interrupted(store: &Store, edit: &store::EditRecord) -> Result<String> {
    let now = match std::fs::read(&edit.real) {
        Ok(now) => Some(now),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let now_hash = now.as_deref().map(|b| blake3::hash(b).to_hex().to_string());
    let put = if now_hash.as_deref() == Some(edit.edited.as_str()) || now_hash == edit.original {
        match &edit.original {
            Some(hash) => store::write_atomic(
                &edit.real,
                &store.read_object(hash)?,
                store::Attrs {
                    mode: edit.mode,
                    owner: edit.owner,
                },
            )?,
            None => match fs_err::remove_file(&edit.real) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            },
        }
        PutBack::Done
    } else {
        PutBack::LeftOtherVersion
    };
    Ok(match put {
        PutBack::Done => format!(
            "undid the interrupted edit (nginx was not touched): {} is as it was before the \
             edit; the edit is kept in {}",
            edit.path.display(),
            edit.kept.display()
        ),
        PutBack::LeftOtherVersion => format!(
            "the interrupted edit was not put back: {} was changed by someone else since and is \
             left as they wrote it; the edit is kept in {}",
            edit.path.display(),
            edit.kept.display()
        ),
    })
}

fn kept_note(original: &Original, copy: &Path, put: PutBack) -> String {
    match put {
        PutBack::Done if original.bytes.is_none() => format!(
            "{} was not created (it did not exist before the edit); your edit is kept in {}",
            original.path.display(),
            copy.display()
        ),
        PutBack::Done => format!(
            "{} is as it was before the edit; your edit is kept in {}",
            original.path.display(),
            copy.display()
        ),
        PutBack::LeftOtherVersion => format!(
            "{} was changed by someone else during the run and is left as they wrote it; \
             your edit is kept in {}",
            original.path.display(),
            copy.display()
        ),
    }
}

/// The editor failed: drop a copy that holds nothing new, keep (and name) one that does.
fn keep_or_drop(copy: &Path, original: &Original, report: &mut Report, e: Error) -> Error {
    let now = fs_err::read(copy).ok();
    if now.as_deref() == Some(original.bytes.as_deref().unwrap_or_default()) {
        let _ = fs_err::remove_file(copy);
    } else {
        report.notes.push(format!(
            "{} was not changed; what the editor wrote is kept in {}",
            original.path.display(),
            copy.display()
        ));
    }
    e
}
