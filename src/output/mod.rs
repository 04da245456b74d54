//! The one place that prints. A [`Printer`] owns stdout and stderr: results go to stdout,
//! progress and diagnostics to stderr, colors only on a TTY and never with `NO_COLOR` unless
//! `--color always`. With `--json` stdout carries exactly one JSON document. Text from nginx, the
//! configuration or the user is escaped so control characters cannot drive the terminal.
//!
//! Text goes through one buffered writer per stream, behind one lock, with the color decision
//! (a TTY check) made once: `targets` on 1,000 servers prints about 10,000 lines, and a write
//! plus a terminal query per line cost more than building them. The buffers are flushed when
//! the other stream is written (so the two keep their order on one terminal), before a prompt
//! or a spinner, around a spinner's redraws, and at the end of the report.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anstyle::{AnsiColor, Style};

mod render;

pub use render::{render, render_error, render_preview};

use crate::cli::ColorWhen;

/// How a line is styled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
    Dim,
    Bold,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Tone::Plain => Style::new(),
            Tone::Good => AnsiColor::Green.on_default(),
            Tone::Warn => AnsiColor::Yellow.on_default(),
            Tone::Bad => AnsiColor::Red.on_default().bold(),
            Tone::Dim => Style::new().dimmed(),
            Tone::Bold => Style::new().bold(),
        }
    }
}

/// Owner of all output.
#[derive(Debug, Clone)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
    pub verbose: bool,
    stderr_tty: bool,
    /// The spinner on screen, if any: every line and prompt is written around it.
    spinner: Arc<Mutex<Option<indicatif::ProgressBar>>>,
    streams: Arc<Mutex<Streams>>,
}

/// A buffered stream that strips styles where colors are off (decided once, at creation).
type Sink = anstream::AutoStream<Box<dyn Write + Send>>;

/// Buffer size: a 1,000-server `targets` table, or its 2 MB JSON document, is a few dozen
/// writes, not thousands.
const BUFFER: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Out,
    Err,
}

/// stdout and stderr, buffered, and which of them was written last.
struct Streams {
    out: Sink,
    err: Sink,
    last: Option<Which>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streams")
    }
}

impl Streams {
    fn new() -> Streams {
        let out_choice = anstream::AutoStream::choice(&std::io::stdout());
        let err_choice = anstream::AutoStream::choice(&std::io::stderr());
        let out: Box<dyn Write + Send> =
            Box::new(std::io::BufWriter::with_capacity(BUFFER, std::io::stdout()));
        let err: Box<dyn Write + Send> =
            Box::new(std::io::BufWriter::with_capacity(BUFFER, std::io::stderr()));
        Streams {
            out: anstream::AutoStream::new(out, out_choice),
            err: anstream::AutoStream::new(err, err_choice),
            last: None,
        }
    }

    /// One line on `which`; the other stream's buffer goes out first. Errors (a closed pipe)
    /// leave nothing to tell.
    fn line(&mut self, which: Which, text: &str) {
        if self.last != Some(which) {
            self.flush();
            self.last = Some(which);
        }
        let sink = match which {
            Which::Out => &mut self.out,
            Which::Err => &mut self.err,
        };
        let _ = writeln!(sink, "{text}");
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
        let _ = self.err.flush();
    }
}

/// A spinner on stderr while it lives; see [`Printer::spinner`].
#[must_use = "the spinner disappears when the guard is dropped"]
pub struct Spinner {
    bar: Option<indicatif::ProgressBar>,
    slot: Arc<Mutex<Option<indicatif::ProgressBar>>>,
}

impl Spinner {
    /// Change what the spinner says ("probing 12 targets", "verifying for 2s").
    pub fn set_message(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(escape_control(text));
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Ok(mut slot) = self.slot.lock() {
                *slot = None;
            }
        }
    }
}

impl Printer {
    /// Set up output for this process: the color choice applies to both streams.
    pub fn new(color: ColorWhen, json: bool, quiet: bool, verbose: bool) -> Printer {
        let choice = match color {
            ColorWhen::Always => anstream::ColorChoice::Always,
            ColorWhen::Never => anstream::ColorChoice::Never,
            ColorWhen::Auto => anstream::ColorChoice::Auto,
        };
        choice.write_global();
        Printer {
            json,
            quiet,
            verbose,
            stderr_tty: std::io::stderr().is_terminal(),
            spinner: Arc::new(Mutex::new(None)),
            streams: Arc::new(Mutex::new(Streams::new())),
        }
    }

    /// Write out everything buffered: at the end of a report, before a child or a prompt
    /// could write to the same terminal.
    pub fn flush(&self) {
        if let Ok(mut s) = self.streams.lock() {
            s.flush();
        }
    }

    fn line(&self, which: Which, text: &str) {
        self.around_spinner(|| {
            if let Ok(mut s) = self.streams.lock() {
                s.line(which, text);
            }
        });
    }

    /// A spinner with `text` on stderr until the guard is dropped, for the waits an operator
    /// would otherwise stare at (probes, the health window). Only on a terminal, never with
    /// `--json` or `-q`: elsewhere the guard does nothing. Lines printed meanwhile and prompts
    /// are written around it.
    pub fn spinner(&self, text: &str) -> Spinner {
        let on = self.stderr_tty && !self.json && !self.quiet;
        self.flush();
        let mut slot = self.spinner.lock().ok();
        let busy = slot.as_ref().is_some_and(|s| s.is_some());
        let bar = (on && !busy).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(escape_control(text));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        if let (Some(slot), Some(bar)) = (slot.as_mut(), &bar) {
            **slot = Some(bar.clone());
        }
        Spinner {
            bar,
            slot: self.spinner.clone(),
        }
    }

    /// Run `f` with the spinner (if any) off the screen; what `f` wrote is flushed before the
    /// spinner draws again.
    fn around_spinner<R>(&self, f: impl FnOnce() -> R) -> R {
        let bar = self.spinner.lock().ok().and_then(|s| s.clone());
        match bar {
            Some(bar) => bar.suspend(|| {
                let r = f();
                self.flush();
                r
            }),
            None => f(),
        }
    }

    /// Whether stderr is a terminal (for prompts and spinners).
    pub fn interactive(&self) -> bool {
        self.stderr_tty && std::io::stdin().is_terminal()
    }

    /// Paint text for the stream it goes to; anstream strips it where colors are off.
    pub fn paint(&self, tone: Tone, text: &str) -> String {
        let style = tone.style();
        format!("{style}{text}{style:#}")
    }

    /// A result line on stdout (suppressed in JSON mode: the document is the result).
    pub fn out(&self, text: &str) {
        if !self.json {
            self.line(Which::Out, text);
        }
    }

    /// A diagnostic on stderr, shown even with -q.
    pub fn err(&self, text: &str) {
        self.line(Which::Err, text);
    }

    /// Progress on stderr; hidden with -q and in JSON mode.
    pub fn progress(&self, text: &str) {
        if !self.quiet && !self.json {
            self.err(text);
        }
    }

    /// Detail only with -v.
    pub fn detail(&self, text: &str) {
        if self.verbose && !self.json {
            self.err(text);
        }
    }

    /// The JSON document on stdout, written as it is serialized: a 10,000-server report lists
    /// every reference of every target, and building it as one string first would double the
    /// run's peak memory. Our report types always serialize, so the error branch is for the
    /// impossible; an I/O error (a closed pipe) leaves nothing to tell.
    pub fn json_doc<T: serde::Serialize>(&self, value: &T) {
        self.flush();
        let mut out = std::io::BufWriter::with_capacity(BUFFER, std::io::stdout().lock());
        match serde_json::to_writer_pretty(&mut out, value) {
            Ok(()) => {
                let _ = writeln!(out);
            }
            Err(e) if e.is_io() => {}
            Err(e) => {
                let _ = writeln!(
                    out,
                    "\n{{\"outcome\":\"error\",\"error\":{}}}",
                    serde_json::Value::String(format!("cannot render the report: {e}"))
                );
            }
        }
        let _ = out.flush();
    }

    /// Raw bytes to stdout (man page, completions).
    pub fn raw(&self, bytes: &[u8]) {
        self.flush();
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
    }

    /// Ask a yes/no question on the terminal; `false` on anything but yes.
    pub fn confirm(&self, question: &str) -> bool {
        let answer = self.ask(&format!("{question} [y/N] "));
        matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    }

    /// Print `question` on stderr and read one line from stdin (empty on end of input).
    pub fn ask(&self, question: &str) -> String {
        self.around_spinner(|| {
            let Ok(mut s) = self.streams.lock() else {
                return String::new();
            };
            s.flush();
            let _ = write!(s.err, "{question}");
            s.flush();
            s.last = Some(Which::Err);
            drop(s);
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            answer
        })
    }
}

/// `--report FILE`: the document `--json` prints, written to `path` as well, whatever went to
/// the terminal, so a script can show the text to a person and still read the outcome (the git
/// hooks tell the two meanings of exit 4 apart this way).
pub fn write_report<T: serde::Serialize>(path: &std::path::Path, value: &T) -> crate::Result<()> {
    let mut out = std::io::BufWriter::new(fs_err::File::create(path)?);
    serde_json::to_writer_pretty(&mut out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Escape control characters (except newline and tab) so child output and config text cannot
/// drive the terminal.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_control("a\x1b[31mb\nc\u{7}"),
            "a\\u{1b}[31mb\nc\\u{7}"
        );
    }
}
