//! Step order and failure policy: the only place that decides what a result means. Other
//! modules return data; this one orders the steps, turns results into an outcome and an exit
//! status, and hands the report to `output`.

use crate::conf::{self, LoadOptions};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::{self, Printer};
use crate::report::{Outcome, Problem, Report};
use crate::settings::Settings;

/// `safe-reload targets`: every upstream target with file:line. No nginx, no network.
pub fn targets(s: &Settings, p: &Printer) -> Result<Exit> {
    let conf_path = s
        .conf
        .clone()
        .ok_or_else(|| Error::Usage("pass -c/--conf FILE".into()))?;
    let config = conf::load(&conf_path, &LoadOptions::default())?;
    let found = conf::targets::extract(&config);
    let mut report = Report::new("targets");
    report.config = Some(config.main.clone());
    report.problems = found.findings.iter().map(Problem::from).collect();
    report.targets = Some(found.targets);
    let exit = report.finish(Outcome::Ok, Exit::Ok);
    output::render(p, &report);
    Ok(exit)
}
