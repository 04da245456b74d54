//! `safe-reload edit FILE`, like `visudo` and `crontab -e`: the operator edits a copy; the copy
//! is put in place only for the pipeline. If the pipeline refuses it or rolls it back, the file
//! is put back as it was and the edit is kept in the state directory, its path printed; on a
//! terminal the operator can edit again, see the diff, or drop it.

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
    path: PathBuf,
    bytes: Option<Vec<u8>>,
    attrs: store::Attrs,
}

impl Original {
    fn read(path: &Path) -> Result<Original> {
        use std::os::unix::fs::MetadataExt;
        match fs_err::metadata(path) {
            Ok(meta) => Ok(Original {
                path: path.to_path_buf(),
                bytes: Some(fs_err::read(path)?),
                attrs: store::Attrs {
                    mode: meta.mode() & 0o7777,
                    owner: Some((meta.uid(), meta.gid())),
                },
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Original {
                path: path.to_path_buf(),
                bytes: None,
                attrs: store::Attrs {
                    mode: 0o644,
                    owner: None,
                },
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Put the file back as it was before the edit.
    fn put_back(&self) -> Result<()> {
        match &self.bytes {
            Some(b) => store::write_atomic(&self.path, b, self.attrs),
            None => match fs_err::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
        }
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
        if Some(edited.as_slice()) == original.bytes.as_deref() {
            report
                .notes
                .push(format!("{} is unchanged; nothing to do", path.display()));
            let _ = fs_err::remove_file(&copy);
            return Ok(report.finish(Outcome::Unchanged, Exit::Ok));
        }
        let exit = attempt(s, p, &original, &edited, &copy, report)?;
        if exit == Exit::Ok {
            let _ = fs_err::remove_file(&copy);
            return Ok(exit);
        }
        // visudo's loop, on a terminal only: a script gets the exit status and the kept path.
        if !p.interactive() || p.json {
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
    store::write_atomic(&original.path, edited, original.attrs)?;
    let mut run = Report::new("edit");
    let result = {
        let _spin = p.spinner("testing, probing upstreams, reloading, verifying");
        crate::pipeline::reload_locked(s, p, &mut run, &store, crate::pipeline::Journal::Begin)
    };
    let exit = match result {
        Ok(exit) => exit,
        Err(e) => {
            original.put_back()?;
            report.notes.push(kept_note(original, copy));
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
        original.put_back()?;
        report.notes.push(kept_note(original, copy));
    }
    Ok(exit)
}

fn kept_note(original: &Original, copy: &Path) -> String {
    format!(
        "{} is as it was before the edit; your edit is kept in {}",
        original.path.display(),
        copy.display()
    )
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
