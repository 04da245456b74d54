//! Finding the nginx a command works on: the binary, its build defaults (`nginx -V`), the main
//! configuration file and the prefix. Flags win; `nginx -V` fills in the rest.

use std::path::{Path, PathBuf};

use crate::conf::{self, Config, LoadOptions};
use crate::error::{Error, Result};
use crate::nginx::{self, BuildInfo, Nginx};
use crate::settings::Settings;

/// The nginx this run works on.
#[derive(Debug, Clone)]
pub struct Env {
    pub nginx: Nginx,
    pub info: BuildInfo,
    /// Where last-good is recorded: its `pid` directive is the running master's.
    pub state_dir: PathBuf,
}

impl Env {
    /// Find the binary and ask it for its defaults; flags override them.
    pub fn discover(s: &Settings) -> Result<Env> {
        let binary = nginx::find_binary(s.nginx.as_deref())?;
        let info = nginx::build_info(&binary)?;
        let conf = match &s.conf {
            Some(c) => c.clone(),
            None => info.conf_path.clone().ok_or_else(|| {
                Error::Usage(format!(
                    "{} -V names no --conf-path; pass -c/--conf FILE",
                    binary.display()
                ))
            })?,
        };
        let prefix = match (&s.prefix, &info.prefix) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => conf_dir(&conf),
        };
        let conf = absolute(&conf, &prefix);
        Ok(Env {
            nginx: Nginx {
                binary,
                conf,
                prefix,
                timeout: s.nginx_timeout,
            },
            info,
            state_dir: s.state_dir.clone(),
        })
    }

    /// Load the configuration this nginx would read.
    pub fn load(&self) -> Result<Config> {
        conf::load(&self.nginx.conf, &LoadOptions::default())
    }

    /// The pid file of the running master.
    pub fn pid_file(&self, config: &Config) -> PathBuf {
        nginx::pid_file(config, &self.nginx.prefix, &self.info)
    }

    /// The running master, checked to be this configuration's (see `reload::find_master`).
    ///
    /// The master wrote the pid file its own configuration names, and moves it only when a
    /// reload takes a candidate that names another: until then a changed `pid` names a file
    /// nobody wrote. So when the candidate's pid file names no running master, the running
    /// configuration's (last-good's `pid`) and the build default's are asked, each under the
    /// same checks; if neither finds this configuration's master, the candidate's answer stands.
    pub fn master(&self, config: &Config) -> Result<crate::reload::Master> {
        let pid_file = self.pid_file(config);
        let found = crate::reload::find_master(&pid_file, &self.nginx, &self.info);
        if !matches!(found, Err(Error::NotRunning { .. })) {
            return found;
        }
        let default = nginx::default_pid_file(&self.nginx.prefix, &self.info);
        let others = self.running_pid_file(config).into_iter().chain([default]);
        for other in others.filter(|p| *p != pid_file) {
            if let Ok(m) = crate::reload::find_master(&other, &self.nginx, &self.info) {
                return Ok(m);
            }
        }
        // No pid file, or an empty one, and this configuration's master runs all the same:
        // "not running, start it" would send the operator to a start that cannot bind.
        if let Err(Error::NotRunning { reason }) = &found {
            // The pid file is gone or empty (not one naming a process that is gone).
            let lost = std::fs::read_to_string(&pid_file).map_or(true, |t| t.trim().is_empty());
            let unnamed = lost
                .then(|| crate::reload::unnamed_master(&self.nginx, &self.info))
                .flatten();
            if let Some(pid) = unnamed {
                return Err(Error::PidFileLost {
                    pid_file,
                    pid,
                    why: reason.clone(),
                });
            }
        }
        found
    }

    /// The pid file last-good's `pid` directive names, when there is a last-good whose tree
    /// loads from the store (read only: no state directory is created for this).
    fn running_pid_file(&self, config: &Config) -> Option<PathBuf> {
        if !self.state_dir.join("last-good").exists() {
            return None;
        }
        let store = crate::store::Store::open(&self.state_dir).ok()?;
        let good = store.last_good().ok()??;
        let set = crate::diff::FileSet::from_snapshot(&store, &good).ok()?;
        let recorded = crate::diff::Recorded::new(&config.conf_prefix, &set);
        let old = conf::load_from(&config.main, &LoadOptions::default(), &recorded).ok()?;
        Some(self.pid_file(&old))
    }

    /// The error logs the configuration writes to.
    pub fn error_logs(&self, config: &Config) -> Vec<PathBuf> {
        nginx::error_logs(config, &self.nginx.prefix, &self.info)
    }

    /// What of the configuration the log-based checks cannot see (see `errorlog::sight`).
    pub fn log_sight(&self, config: &Config) -> crate::errorlog::Sight {
        crate::errorlog::sight(config, nginx::default_error_log(&self.info))
    }
}

/// The main configuration file for commands that need no nginx (`targets`): `-c`, else what
/// `nginx -V` says.
pub fn conf_path(s: &Settings) -> Result<PathBuf> {
    if let Some(c) = &s.conf {
        return Ok(c.clone());
    }
    let binary = nginx::find_binary(s.nginx.as_deref())?;
    let info = nginx::build_info(&binary)?;
    info.conf_path.ok_or_else(|| {
        Error::Usage(format!(
            "{} -V names no --conf-path; pass -c/--conf FILE",
            binary.display()
        ))
    })
}

fn conf_dir(conf: &Path) -> PathBuf {
    conf.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// nginx resolves a relative `-c` against the prefix.
fn absolute(conf: &Path, prefix: &Path) -> PathBuf {
    if conf.is_absolute() {
        conf.to_path_buf()
    } else if let Ok(cwd) = std::env::current_dir() {
        // A relative -c given on our command line means relative to where the user stands.
        let here = cwd.join(conf);
        if here.exists() {
            here
        } else {
            prefix.join(conf)
        }
    } else {
        prefix.join(conf)
    }
}
