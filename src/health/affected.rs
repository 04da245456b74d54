//! The servers a change affects as the checks see them, for the headline's coverage: each
//! with the checks made for it and what of it no check covers. Affected are the servers
//! defined in the changed files; when no server is, which ones the change reaches is not
//! known, so every server counts.

use std::path::{Path, PathBuf};

use super::{candidates, Check, MAX_CHANGED};
use crate::conf::targets::Context;
use crate::conf::Server;
use crate::verdict::{Affected, LeftOut};

/// The affected servers among `servers` for a change to `changed` files, against the
/// `checks` chosen for the run.
pub fn affected(
    servers: &[Server],
    changed: &[PathBuf],
    checks: &[Check],
    root: &Path,
) -> Vec<Affected> {
    let touched: Vec<&Server> = servers
        .iter()
        .filter(|s| changed.iter().any(|c| **c == *s.file))
        .collect();
    let affected = if touched.is_empty() {
        servers.iter().collect()
    } else {
        touched
    };
    affected.into_iter().map(|s| one(s, checks, root)).collect()
}

fn one(server: &Server, checks: &[Check], root: &Path) -> Affected {
    let at = |file: &Path, line: u32| {
        format!(
            "{}:{line}",
            file.strip_prefix(root).unwrap_or(file).display()
        )
    };
    let label = (server.server_names.iter().find(|n| !n.is_empty()).cloned())
        .or_else(|| server.listens.first().map(|l| l.addr.to_string()))
        .unwrap_or_else(|| "server".into());
    let mut out = Affected {
        server: label,
        at: at(&server.file, server.line),
        checks: Vec::new(),
        left_out: Vec::new(),
    };
    if server.context == Context::Stream {
        out.left_out.push(LeftOut {
            what: "server".into(),
            at: out.at.clone(),
            why: "a stream server: no request is made to it".into(),
        });
        return out;
    }
    for loc in &server.locations {
        let regex = matches!(loc.modifier.as_deref(), Some("~") | Some("~*"));
        let why = if regex {
            "a regex location: no path is known to reach it"
        } else if loc.path.starts_with('@') {
            "a named location: no request reaches it directly"
        } else {
            continue;
        };
        let what = match &loc.modifier {
            Some(m) => format!("{m} {}", loc.path),
            None => loc.path.clone(),
        };
        out.left_out.push(LeftOut {
            what,
            at: at(&loc.file, loc.line),
            why: why.into(),
        });
    }
    for c in candidates(std::iter::once(server)) {
        let check = c.check();
        if checks.contains(&check) {
            out.checks.push(check.url);
        } else {
            out.left_out.push(LeftOut {
                what: check.path.clone(),
                at: out.at.clone(),
                why: format!("over the bound of {MAX_CHANGED} checks for a change"),
            });
        }
    }
    out
}
