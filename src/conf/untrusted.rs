//! The policy for configuration from an untrusted source (`check --untrusted`, git hooks that
//! check other people's commits). Running `nginx -t` on such a configuration has been a
//! code-execution hole for other tools: `load_module` loads a shared object, and Lua, Perl and
//! njs directives run code while the configuration is read. These are refused before any
//! `nginx -t` runs; includes outside the repository are refused by the loader (`confine`).
//!
//! One `load_module` is not the pusher's code: a module the nginx that runs the check has
//! installed in its own modules directory (`nginx -V`'s `--modules-path`, where Debian puts
//! `ngx_stream_module.so`, which `stream {}` needs). A path that resolves there, through no
//! link out of it, is allowed; anything else is refused.

use std::path::Path;

use crate::conf::targets::Finding;
use crate::conf::Config;

/// Why a directive is refused, or `None` when it is allowed.
fn forbidden(name: &str) -> Option<&'static str> {
    if name == "load_module" {
        Some("loads a shared object into nginx")
    } else if name.contains("_by_lua") || name.starts_with("lua_") {
        Some("runs Lua code")
    } else if name == "perl" || name.starts_with("perl_") {
        Some("runs Perl code")
    } else if name.starts_with("js_") {
        Some("runs JavaScript (njs) code")
    } else {
        None
    }
}

/// Whether `module` (a `load_module` argument) is a file of the installed `modules` directory.
fn installed(module: &str, modules: Option<&Path>) -> bool {
    let Some(dir) = modules.and_then(|m| std::fs::canonicalize(m).ok()) else {
        return false;
    };
    let path = Path::new(module);
    path.is_absolute()
        && std::fs::canonicalize(path).is_ok_and(|real| real.parent() == Some(dir.as_path()))
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Every refused directive, with file and line. `modules` is the installed nginx's modules
/// directory, whose modules `load_module` may load.
pub fn violations(config: &Config, modules: Option<&Path>) -> Vec<Finding> {
    config
        .walk()
        .filter(|d| !(d.name == "load_module" && installed(d.arg0(), modules)))
        .filter_map(|d| {
            forbidden(&d.name).map(|why| Finding {
                file: d.file.clone(),
                line: d.line,
                message: format!("\"{}\" {why}: refused for untrusted configuration", d.name),
                hint: Some(match d.name.as_str() {
                    "load_module" => format!(
                        "review it by hand; only a module of the installed nginx's modules \
                         directory ({}) is loaded for untrusted configuration, named by its \
                         absolute path",
                        modules.map_or("none known".into(), |m| m.display().to_string())
                    ),
                    _ => "review this change by hand; untrusted mode never runs nginx on \
                          code-loading directives"
                        .into(),
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_loading_directives_are_forbidden() {
        for name in [
            "load_module",
            "content_by_lua_block",
            "access_by_lua_file",
            "lua_package_path",
            "perl",
            "perl_modules",
            "js_import",
            "js_content",
        ] {
            assert!(forbidden(name).is_some(), "{name}");
        }
        for name in ["proxy_pass", "include", "map", "server"] {
            assert!(forbidden(name).is_none(), "{name}");
        }
    }

    #[test]
    fn only_a_module_of_the_installed_modules_directory_is_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let modules = dir.path().join("modules");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&modules).expect("mkdir");
        std::fs::create_dir_all(&repo).expect("mkdir");
        std::fs::write(modules.join("ngx_stream_module.so"), b"").expect("write");
        std::fs::write(repo.join("evil.so"), b"").expect("write");
        std::os::unix::fs::symlink(repo.join("evil.so"), modules.join("link.so")).expect("link");
        let m = Some(modules.as_path());
        let at = |name: &str| modules.join(name).display().to_string();
        assert!(installed(&at("ngx_stream_module.so"), m));
        assert!(!installed(&at("link.so"), m), "a link out of the directory");
        assert!(!installed(&at("../repo/evil.so"), m));
        assert!(!installed(&repo.join("evil.so").display().to_string(), m));
        assert!(!installed("modules/ngx_stream_module.so", m), "relative");
        assert!(!installed(&at("missing.so"), m));
        assert!(!installed(&at("ngx_stream_module.so"), None));
    }
}
