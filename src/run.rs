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
use crate::{docs, pipeline};

/// Run the program with these arguments; returns the process exit status.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
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
    let printer = Printer::new(g.color, g.json, g.quiet > 0, g.verbose > 0);
    let command = cli.subcommand();
    let name = command_name(&command);
    let result = Settings::resolve(g).and_then(|settings| {
        let printer = Printer::new(settings.color, g.json, g.quiet > 0, g.verbose > 0);
        dispatch(&command, &settings, &printer)
    });
    match result {
        Ok(exit) => exit.code(),
        Err(e) => {
            let exit = e.exit();
            let mut report = Report::new(name);
            report.finish(Outcome::Error, exit);
            report.error = Some(e.to_string());
            if let Error::Config {
                file,
                line,
                message,
            } = &e
            {
                report.problems.push(crate::report::Problem {
                    level: "config".into(),
                    message: message.clone(),
                    file: Some(file.clone()),
                    line: Some(*line),
                    hint: None,
                });
            }
            crate::output::render_error(&printer, &report, &e);
            exit.code()
        }
    }
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

fn dispatch(command: &Command, s: &Settings, p: &Printer) -> crate::Result<Exit> {
    match command {
        Command::Man => {
            p.raw(&docs::man_page()?);
            Ok(Exit::Ok)
        }
        Command::Completions { shell } => {
            p.raw(&docs::completions(*shell));
            Ok(Exit::Ok)
        }
        Command::Targets => pipeline::targets(s, p),
        other => Err(Error::Usage(format!(
            "`{}` is not available in this build",
            command_name(other)
        ))),
    }
}
