//! How alike two socket paths are, for "did you mean" hints: `/run/php-fpm.sock` and
//! `/var/run/php/php8.2-fpm.sock` name the same backend in different distributions' layouts.
//!
//! The score adds up three signs: the file names are close (edit distance), the names agree
//! once version numbers and punctuation are dropped (`php8.2-fpm` vs `php-fpm`), and the
//! socket sits in the same directory (after resolving `/var/run` -> `/run` style symlinks).

use std::path::{Path, PathBuf};

/// Scores at or above this are worth naming.
pub const THRESHOLD: f64 = 0.75;

/// Similarity of `wanted` (the path in the config) and `candidate` (a listening socket).
pub fn score(wanted: &Path, candidate: &Path) -> f64 {
    let a = file_name(wanted);
    let b = file_name(candidate);
    let mut score = strsim::normalized_damerau_levenshtein(&a, &b);
    let (ka, kb) = (letters(&a), letters(&b));
    if !ka.is_empty() && ka == kb {
        score += 0.5;
    } else if !ka.is_empty() && !kb.is_empty() && (ka.contains(&kb) || kb.contains(&ka)) {
        score += 0.25;
    }
    if same_dir(wanted, candidate) {
        score += 0.3;
    } else if shares_dir_name(wanted, candidate) {
        score += 0.15;
    }
    score
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

/// The name's letters only, without the usual `.sock`/`.socket` suffix.
fn letters(name: &str) -> String {
    let stem = name
        .strip_suffix(".socket")
        .or_else(|| name.strip_suffix(".sock"))
        .unwrap_or(name);
    stem.chars().filter(|c| c.is_ascii_alphabetic()).collect()
}

fn canonical_parent(p: &Path) -> Option<PathBuf> {
    let parent = p.parent()?;
    Some(std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf()))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (canonical_parent(a), canonical_parent(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// The directories share a meaningful name (`php` in `/run/php/` and `/var/run/php/`).
fn shares_dir_name(a: &Path, b: &Path) -> bool {
    let generic = ["", "/", "run", "var", "tmp", "usr", "local", "lib"];
    let names = |p: &Path| -> Vec<String> {
        p.parent()
            .map(|d| {
                d.iter()
                    .map(|c| c.to_string_lossy().to_string())
                    .filter(|c| !generic.contains(&c.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let nb = names(b);
    names(a).iter().any(|n| nb.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_fpm_layouts_are_similar() {
        let s = score(
            Path::new("/run/php-fpm.sock"),
            Path::new("/var/run/php/php8.2-fpm.sock"),
        );
        assert!(s >= THRESHOLD, "{s}");
    }

    #[test]
    fn unrelated_sockets_are_not() {
        let s = score(
            Path::new("/run/php-fpm.sock"),
            Path::new("/var/lib/docker/containerd.sock"),
        );
        assert!(s < THRESHOLD, "{s}");
    }
}
