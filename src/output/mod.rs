//! The one place that prints. A [`Printer`] owns stdout and stderr: results go to stdout,
//! progress and diagnostics to stderr, colors only on a TTY and never with `NO_COLOR` unless
//! `--color always`. With `--json` stdout carries exactly one JSON document. Text from nginx, the
//! configuration or the user is escaped so control characters cannot drive the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};

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
            let mut out = anstream::stdout();
            let _ = writeln!(out, "{text}");
        }
    }

    /// A diagnostic on stderr, shown even with -q.
    pub fn err(&self, text: &str) {
        let mut err = anstream::stderr();
        let _ = writeln!(err, "{text}");
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

    /// The JSON document on stdout.
    pub fn json_doc<T: serde::Serialize>(&self, value: &T) {
        let mut out = std::io::stdout().lock();
        match serde_json::to_string_pretty(value) {
            Ok(text) => {
                let _ = writeln!(out, "{text}");
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{{\"outcome\":\"error\",\"error\":{}}}",
                    serde_json::Value::String(format!("cannot render the report: {e}"))
                );
            }
        }
    }

    /// Raw bytes to stdout (man page, completions).
    pub fn raw(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
    }

    /// Ask a yes/no question on the terminal; `false` on anything but yes.
    pub fn confirm(&self, question: &str) -> bool {
        let mut err = anstream::stderr();
        let _ = write!(err, "{question} [y/N] ");
        let _ = err.flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    }
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
