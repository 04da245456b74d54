//! Which derived checks a reload verifies. Every proxied location of every server is too many
//! on a large configuration: 10,000 servers make 20,000 checks, three rounds of which take far
//! longer than the verification window, so the reload would be rolled back for being large.
//! What a change can break is first of all the servers it touched, so those are checked in
//! full (up to a bound) and the rest by an even spread; the error log, read after every
//! round, still catches upstream errors of any request nginx serves meanwhile.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{derive_checks, Check};
use crate::conf::Server;

/// The most checks taken from servers defined in changed files.
pub const MAX_CHANGED: usize = 32;
/// The most checks taken, evenly spread, from the other servers.
pub const MAX_SPREAD: usize = 8;

/// Derived checks for a change to `changed` files (absolute paths): the servers in those files
/// first, then an even spread over the rest. With no changed file known every server counts as
/// unchanged.
pub fn focused_checks(servers: &[Server], changed: &[PathBuf]) -> Vec<Check> {
    let changed: HashSet<&PathBuf> = changed.iter().collect();
    let (touched, rest): (Vec<Server>, Vec<Server>) = servers
        .iter()
        .cloned()
        .partition(|s| changed.contains(&s.file));
    let mut out: Vec<Check> = derive_checks(&touched);
    out.truncate(MAX_CHANGED);
    let others = derive_checks(&rest);
    let step = others.len().div_ceil(MAX_SPREAD).max(1);
    for check in others.into_iter().step_by(step) {
        if !out.contains(&check) {
            out.push(check);
        }
    }
    out
}
