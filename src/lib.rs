//! safe-reload: reload nginx without breaking the site.
//!
//! The map: `cli` (flags), `conf` (nginx configuration model), `nginx` (the only place that runs
//! nginx), `probe` (connect probes and diagnosis), `preflight` (what `nginx -t` misses),
//! `store` (snapshots, last-good, journal, lock), `diff`, `reload` (signal and proof),
//! `health` (requests through nginx and the error-log window), `pipeline` (step order and
//! rollback policy: the only place that decides), `report` (what a run found) and `output`
//! (the only place that prints); `sandbox` copies untrusted configuration for `nginx -t`;
//! `status_line` reads HTTP status lines and `http2` writes and reads HTTP/2 frames, for the
//! probes and verification alike; `fds` keeps descriptors the caller leaked from every child.

pub mod cli;
pub mod conf;
pub mod diff;
pub mod docs;
pub mod error;
pub mod errorlog;
pub mod exit;
pub mod fds;
pub mod health;
pub mod http2;
pub mod impact;
pub mod nginx;
pub mod output;
pub mod pipeline;
pub mod preflight;
pub mod probe;
pub mod reload;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod settings;
pub mod shadow;
pub mod signals;
pub mod status_line;
pub mod store;
pub mod verdict;

pub use error::{Error, Result};
pub use exit::Exit;
