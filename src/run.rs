//! From parsed flags to an exit status: resolve settings, dispatch the command, render its report
//! or its error. The steps themselves live in `pipeline`; printing lives in `output`.

use std::ffi::OsString;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::Error;
use crate::exit::Exit;
use crate::output::Printer;
use crate::report::{Outcome, Report};
use crate::settings::Settings;
use crate::{docs, output, pipeline, signals};

/// Run the program with these arguments; returns the process exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && args.iter().any(|a| a == "--json") => {
            // A script asked for JSON: it gets a document even for a usage error.
            let mut report = Report::new("");
            report.finish(Outcome::Error, Exit::Environment);
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            report.error = Some(first.trim_start_matches("error: ").to_string());
            Printer::new(crate::cli::ColorWhen::Never, true, false, false).json_doc(&report);
            return Exit::Environment.code();
        }
        Err(e) => {
            // clap prints help and version itself, to stdout, with status 0; usage errors get 2.
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Environment.code()
            } else {
                Exit::Ok.code()
            };
        }
    };
    let g = &cli.global;
    let command = cli.subcommand();
    let mut report = Report::new(command_name(&command));
    let mut printer = Printer::new(g.color, g.json, g.quiet > 0, g.verbose > 0);
    signals::install();
    let result = Settings::resolve(g).and_then(|settings| {
        printer = Printer::new(settings.color, g.json, g.quiet > 0, g.verbose > 0);
        dispatch(&command, &settings, &printer, &mut report)
    });
    let code = match result {
        Ok(None) => return Exit::Ok.code(),
        Ok(Some(exit)) => {
            output::render(&printer, &report);
            exit.code()
        }
        Err(e) => {
            let exit = e.exit();
            let outcome = match e {
                Error::Interrupted => Outcome::Interrupted,
                _ => Outcome::Error,
            };
            report.finish(outcome, exit);
            report.error = Some(e.to_string());
            report
                .problems
                .extend(crate::report::Problem::from_config_error(&e, "config"));
            output::render_error(&printer, &report, &e);
            exit.code()
        }
    };
    if let Some(path) = &g.report {
        // What happened to nginx stands whatever becomes of the file: the status is kept.
        if let Err(e) = output::write_report(path, &report) {
            printer.err(&format!("error: cannot write the report: {e}"));
            printer.flush();
        }
    }
    code
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Reload => "reload",
        Command::Check { .. } => "check",
        Command::Targets => "targets",
        Command::Probe => "probe",
        Command::Diff => "diff",
        Command::Edit { .. } => "edit",
        Command::Init => "init",
        Command::History => "history",
        Command::Rollback { .. } => "rollback",
        Command::Status => "status",
        Command::Recover => "recover",
        Command::Man => "man",
        Command::Completions { .. } => "completions",
    }
}

/// Run one command. `None` for commands that print their own output (man, completions).
fn dispatch(
    command: &Command,
    s: &Settings,
    p: &Printer,
    report: &mut Report,
) -> crate::Result<Option<Exit>> {
    let exit = match command {
        Command::Man => {
            p.raw(&docs::man_page()?);
            return Ok(None);
        }
        Command::Completions { shell } => {
            p.raw(&docs::completions(*shell));
            return Ok(None);
        }
        Command::Reload => {
            let _spin = p.spinner("testing, probing upstreams, reloading, verifying");
            pipeline::reload(s, p, report)?
        }
        Command::Check { untrusted } => {
            let _spin = p.spinner("testing and probing upstreams");
            pipeline::check(s, *untrusted, report)?
        }
        Command::Targets => pipeline::targets(s, report)?,
        Command::Probe => {
            let _spin = p.spinner("probing upstream targets");
            pipeline::probe(s, report)?
        }
        Command::Diff => pipeline::diff(s, report)?,
        Command::Edit { file } => pipeline::edit(s, p, file, report)?,
        Command::Init => pipeline::init(s, report)?,
        Command::History => pipeline::history(s, report)?,
        Command::Rollback { id } => {
            let _spin = p.spinner("restoring, testing, reloading, verifying");
            pipeline::rollback(s, p, id.as_deref(), report)?
        }
        Command::Status => pipeline::status(s, report)?,
        Command::Recover => {
            let _spin = p.spinner("recovering, reloading, verifying");
            pipeline::recover(s, p, report)?
        }
    };
    Ok(Some(exit))
}
