//! The policy for configuration from an untrusted source (`check --untrusted`, git hooks that
//! check other people's commits). Running `nginx -t` on such a configuration has been a
//! code-execution hole for other tools: `load_module` loads a shared object, and Lua, Perl and
//! njs directives run code while the configuration is read. These are refused before any
//! `nginx -t` runs; includes outside the repository are refused by the loader (`confine`).

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

/// Every refused directive, with file and line.
pub fn violations(config: &Config) -> Vec<Finding> {
    config
        .walk()
        .filter_map(|d| {
            forbidden(&d.name).map(|why| Finding {
                file: d.file.clone(),
                line: d.line,
                message: format!("\"{}\" {why}: refused for untrusted configuration", d.name),
                hint: Some(
                    "review this change by hand; untrusted mode never runs nginx on code-loading directives"
                        .into(),
                ),
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
}
