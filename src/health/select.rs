//! Which derived checks a reload verifies. Every proxied location of every server is too many
//! on a large configuration: 10,000 servers make 20,000 checks, three rounds of which take far
//! longer than the verification window, so the reload would be rolled back for being large.
//! What a change can break is first of all the servers it touched, so those are checked in
//! full (up to a bound) and the rest by an even spread; the error log, read after every
//! round, still catches upstream errors of any request nginx serves meanwhile.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{candidates, Check};
use crate::conf::Server;

/// The most checks taken from servers defined in changed files.
pub const MAX_CHANGED: usize = 32;
/// The most checks taken, evenly spread, from the other servers.
pub const MAX_SPREAD: usize = 8;

/// Derived checks for a change to `changed` files (absolute paths): the servers in those files
/// first, then an even spread over the rest. With no changed file known every server counts as
/// unchanged.
pub fn focused_checks(servers: &[Server], changed: &[PathBuf]) -> Vec<Check> {
    let changed: HashSet<&Path> = changed.iter().map(PathBuf::as_path).collect();
    let (touched, rest): (Vec<&Server>, Vec<&Server>) =
        servers.iter().partition(|s| changed.contains(&*s.file));
    let mut out: Vec<Check> = (candidates(touched).iter().take(MAX_CHANGED))
        .map(|c| c.check())
        .collect();
    let others = candidates(rest);
    let step = others.len().div_ceil(MAX_SPREAD).max(1);
    for check in others.iter().step_by(step).map(|c| c.check()) {
        if !out.contains(&check) {
            out.push(check);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::targets::Context;
    use crate::conf::{Listen, ListenAddr, Location};

    fn server(i: usize, file: &str) -> Server {
        let listen = Listen {
            addr: ListenAddr::Tcp("127.0.0.1:80".parse().unwrap()),
            ssl: false,
            udp: false,
            ipv6only: false,
            default_server: false,
            file: PathBuf::from(file).into(),
            line: 1,
        };
        let location = |path: &str| Location {
            modifier: None,
            path: path.into(),
            pass: "proxy_pass",
            file: PathBuf::from(file).into(),
            line: 2,
        };
        Server {
            context: Context::Http,
            file: PathBuf::from(file).into(),
            line: 1,
            listens: vec![listen],
            server_names: vec![format!("s{i}.test")],
            locations: vec![location("/"), location("/api/")],
        }
    }

    #[test]
    fn changed_servers_in_full_then_a_bounded_spread_of_the_rest() {
        let mut servers: Vec<Server> = (0..1000).map(|i| server(i, "/c/old.conf")).collect();
        servers.push(server(5000, "/c/new.conf"));
        let checks = focused_checks(&servers, &[PathBuf::from("/c/new.conf")]);
        let hosts: Vec<&str> = checks.iter().map(|c| c.host.as_str()).collect();
        assert_eq!(&hosts[..2], ["s5000.test", "s5000.test"]);
        assert_eq!(checks.len(), 2 + MAX_SPREAD);
        // The spread reaches across the whole configuration, not just its first servers.
        assert_eq!(hosts[2], "s0.test");
        assert!(hosts.last().unwrap().starts_with("s8"));
    }

    #[test]
    fn many_changed_servers_are_bounded_and_a_small_config_is_checked_in_full() {
        let servers: Vec<Server> = (0..100).map(|i| server(i, "/c/a.conf")).collect();
        let checks = focused_checks(&servers, &[PathBuf::from("/c/a.conf")]);
        assert_eq!(checks.len(), MAX_CHANGED);
        let few: Vec<Server> = (0..3).map(|i| server(i, "/c/a.conf")).collect();
        assert_eq!(focused_checks(&few, &[]).len(), 6);
    }
}
